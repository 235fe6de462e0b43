// Small pieces shared by the screens: prices and changes (exact strings, coloured by sign), market
// names in the user's language, alert summaries, status badges, loading and error states.

import { useEffect, useRef, useState, type ReactNode } from 'react';
import { formatPercent, formatPrice, signOf, compareDecimals } from '../lib/decimal';
import { useI18n, type I18n } from '../i18n';
import type { AlertView, MarketView, SmsStatus } from '../types';

/** A price, grouped; briefly highlighted up or down when it changes. */
export function Price({
  value,
  flash = false,
  className = '',
  testId,
}: {
  value: string;
  flash?: boolean;
  className?: string;
  testId?: string;
}) {
  const previous = useRef(value);
  const [direction, setDirection] = useState<'' | 'tick-up' | 'tick-down'>('');
  useEffect(() => {
    if (!flash || previous.current === value) return;
    setDirection(compareDecimals(value, previous.current) > 0 ? 'tick-up' : 'tick-down');
    previous.current = value;
    const timer = window.setTimeout(() => setDirection(''), 700);
    return () => window.clearTimeout(timer);
  }, [value, flash]);
  return (
    <span className={`price ${direction} ${className}`} data-testid={testId} data-value={value}>
      {formatPrice(value)}
    </span>
  );
}

export function Change({ percent, className = '' }: { percent: string; className?: string }) {
  const sign = signOf(percent);
  const tone = sign > 0 ? 'rise' : sign < 0 ? 'fall' : 'flat';
  return <span className={`change ${tone} ${className}`}>{formatPercent(percent)}</span>;
}

export function marketName(market: Pick<MarketView, 'korean_name' | 'english_name'>, i18n: I18n): string {
  return i18n.locale === 'ko' ? market.korean_name : market.english_name;
}

/** The quote currency of a market code, for unit labels ("KRW-BTC" → "KRW"). */
export function quoteCurrency(market: string): string {
  return market.split('-')[0] ?? '';
}

/** A price with its currency the way the language writes it ("95,000,000원", "95,000,000 KRW"). */
export function formatMoney(value: string, market: string, locale: 'ko' | 'en'): string {
  const currency = quoteCurrency(market);
  return currency === 'KRW' && locale === 'ko' ? `${formatPrice(value)}원` : `${formatPrice(value)} ${currency}`;
}

/** One line saying what an alert waits for. */
export function describeAlert(alert: AlertView, i18n: I18n): string {
  const { t } = i18n;
  const condition = alert.condition;
  switch (condition.kind) {
    case 'target_price': {
      const key = { up: 'condition.targetUp', down: 'condition.targetDown', either: 'condition.targetEither' }[
        condition.direction
      ];
      return t(key, { market: condition.market, target: formatMoney(condition.target, condition.market, i18n.locale) });
    }
    case 'change_rate': {
      const key = { up: 'condition.changeUp', down: 'condition.changeDown', either: 'condition.changeEither' }[
        condition.direction
      ];
      return t(key, { market: condition.market, threshold: condition.threshold, basis: t(`basis.${condition.basis}`) });
    }
    case 'scheduled': {
      const days = [
        ...condition.weekdays.map((day) => t(`weekday.${day}`)),
        ...condition.dates,
      ].join(i18n.locale === 'ko' ? '·' : ', ');
      return t('condition.scheduledAt', {
        markets: condition.markets.join(', '),
        time: condition.time_of_day.slice(0, 5),
        zone: condition.time_zone,
        days,
      });
    }
  }
}

export function describeRepeat(alert: AlertView, i18n: I18n): string {
  return alert.repeat.mode === 'repeat'
    ? i18n.t('alerts.repeatEvery', { cooldown: i18n.duration(alert.repeat.cooldown_seconds) })
    : i18n.t('alerts.once');
}

export function StatusBadge({ status }: { status: string }) {
  const { t } = useI18n();
  return <span className={`badge status-${status}`}>{t(`alerts.status.${status}`)}</span>;
}

export function SmsBadge({ status }: { status: SmsStatus }) {
  const { t } = useI18n();
  return <span className={`badge sms-${status}`}>{t(`sms.${status}`)}</span>;
}

export function Loading() {
  const { t } = useI18n();
  return (
    <div className="loading" role="status" aria-live="polite">
      <span className="spinner" aria-hidden="true" />
      {t('common.loading')}
    </div>
  );
}

export function ErrorBox({ message, onRetry }: { message: string; onRetry?: () => void }) {
  const { t } = useI18n();
  return (
    <div className="error-box" role="alert">
      <span>{message}</span>
      {onRetry && (
        <button type="button" className="button small" onClick={onRetry}>
          {t('common.retry')}
        </button>
      )}
    </div>
  );
}

export function Field({
  label,
  htmlFor,
  error,
  hint,
  children,
}: {
  label: string;
  htmlFor: string;
  error?: string;
  hint?: ReactNode;
  children: ReactNode;
}) {
  return (
    <div className={`field ${error ? 'has-error' : ''}`}>
      <label htmlFor={htmlFor}>{label}</label>
      {children}
      {hint && !error && (
        <div className="hint" id={`${htmlFor}-hint`}>
          {hint}
        </div>
      )}
      {error && (
        <div className="field-error" id={`${htmlFor}-error`} role="alert">
          {error}
        </div>
      )}
    </div>
  );
}

/** Why an SMS was not sent, in words (an unknown reason shows as the API's word). */
export function skipReasonText(reason: string, i18n: I18n): string {
  const key = `skip.${reason}`;
  const text = i18n.t(key);
  return text === key ? reason.replace(/_/g, ' ') : text;
}
