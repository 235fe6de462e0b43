// Create or edit an alert: target price (with the current price, which side of the target it is on,
// and a warning when the target is already passed), change rate, or a scheduled report; once or
// repeating with a cooldown; an optional expiry. An edit sends the version it was built on: a 409
// reloads the alert and says so.

import { useEffect, useMemo, useState, type FormEvent } from 'react';
import { ApiError, newId } from '../api';
import { ErrorBox, Field, Loading, formatMoney, marketName } from '../components/common';
import { navigate, useApp, useErrorText } from '../context';
import { useI18n } from '../i18n';
import {
  emptyForm,
  formFromAlert,
  validateAlertForm,
  type AlertForm,
  type AlertKind,
  type FormErrors,
} from '../lib/alertForm';
import { alreadyPassed, distancePercent, formatPercent, isPositiveDecimal, moveByBasisPoints, sideOf } from '../lib/decimal';
import { useLivePrice, useWatchMarkets } from '../live';
import { WEEKDAYS, type AlertView, type Basis, type Direction, type MarketView } from '../types';

const KINDS: AlertKind[] = ['target_price', 'change_rate', 'scheduled'];
const BASES: Basis[] = ['daily', '5m', '1h', '24h'];
const DIRECTIONS: Direction[] = ['up', 'down', 'either'];
const PRESETS = [-500, -100, -10, 10, 100, 500];

function timeZones(current: string): string[] {
  const all = (Intl as unknown as { supportedValuesOf?: (key: string) => string[] }).supportedValuesOf?.('timeZone') ?? [];
  const zones = new Set(['Asia/Seoul', 'UTC', ...all]);
  zones.add(current);
  return [...zones];
}

export function AlertEditor({ alertId, initialMarket }: { alertId?: string; initialMarket?: string }) {
  const { api, me, notify } = useApp();
  const i18n = useI18n();
  const { t } = i18n;
  const errorText = useErrorText();
  const defaultZone = me?.preferences.time_zone ?? 'Asia/Seoul';
  const [markets, setMarkets] = useState<MarketView[]>([]);
  const [existing, setExisting] = useState<AlertView | null>(null);
  const [form, setForm] = useState<AlertForm | null>(alertId ? null : emptyForm(initialMarket ?? 'KRW-BTC', defaultZone));
  const [errors, setErrors] = useState<FormErrors>({});
  const [error, setError] = useState<string | null>(null);
  const [saving, setSaving] = useState(false);
  // One id per form: a retried create (lost answer) returns the same alert instead of a second one.
  const [createId] = useState(newId);

  useEffect(() => {
    api.markets().then((answer) => setMarkets(answer.markets)).catch(() => setMarkets([]));
  }, [api]);

  const loadExisting = async () => {
    if (!alertId) return;
    try {
      const alert = await api.alert(alertId);
      setExisting(alert);
      setForm(formFromAlert(alert, defaultZone));
    } catch (caught) {
      setError(errorText(caught));
    }
  };
  useEffect(() => {
    void loadExisting();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [alertId]);

  const watched = useMemo(() => (form?.kind === 'scheduled' ? [] : form ? [form.market] : []), [form?.kind, form?.market]);
  useWatchMarkets(watched);
  const live = useLivePrice(form?.market ?? '');
  const snapshot = markets.find((market) => market.market === form?.market)?.quote?.price;
  const currentPrice = live?.price ?? snapshot;
  const krwMarkets = useMemo(
    () =>
      [...markets].sort(
        (left, right) => Number(!left.quote) - Number(!right.quote) || left.market.localeCompare(right.market),
      ),
    [markets],
  );

  if (error && !form) return <main id="main" className="page"><ErrorBox message={error} /></main>;
  if (!form) return <main id="main" className="page"><Loading /></main>;

  const update = (changes: Partial<AlertForm>) => {
    setForm({ ...form, ...changes });
    const cleared = { ...errors };
    for (const key of Object.keys(changes)) delete cleared[key as keyof AlertForm];
    setErrors(cleared);
  };
  const fieldError = (field: keyof AlertForm) => (errors[field] ? t(errors[field]!) : undefined);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    const validated = validateAlertForm(form, new Date());
    setErrors(validated.errors);
    if (!validated.definition) {
      const first = Object.keys(validated.errors)[0];
      if (first) document.getElementById(`alert-${first}`)?.focus();
      return;
    }
    setSaving(true);
    try {
      if (existing) {
        await api.updateAlert(existing.alert_id, existing.version, validated.definition);
        notify(t('form.saved'), 'success');
        navigate('/alerts');
      } else {
        await api.createAlert({ ...validated.definition, alert_id: createId });
        notify(t('form.created'), 'success');
        navigate('/alerts');
      }
    } catch (caught) {
      if (caught instanceof ApiError && caught.code === 'version_conflict') {
        await loadExisting();
      }
      setError(errorText(caught));
      setSaving(false);
    }
  };

  const target = form.target.trim().replace(/,/g, '');
  const targetValid = isPositiveDecimal(target);
  const side = currentPrice && targetValid ? sideOf(currentPrice, target) : null;
  const passed = side ? alreadyPassed(form.direction, side) : false;

  return (
    <main id="main" className="page narrow">
      <h1 className="page-title">{existing ? t('form.editTitle') : t('form.createTitle')}</h1>
      <form className="card form" onSubmit={submit} noValidate aria-describedby={error ? 'form-error' : undefined}>
        <fieldset className="field">
          <legend>{t('form.kind')}</legend>
          <div className="segmented" role="radiogroup" aria-label={t('form.kind')}>
            {KINDS.map((kind) => (
              <label key={kind} className={form.kind === kind ? 'selected' : ''}>
                <input
                  type="radio"
                  name="kind"
                  value={kind}
                  checked={form.kind === kind}
                  onChange={() => update({ kind })}
                />
                {t(`condition.${kind}`)}
              </label>
            ))}
          </div>
        </fieldset>

        {form.kind !== 'scheduled' && (
          <Field label={t('form.market')} htmlFor="alert-market" error={fieldError('market')}>
            <select id="alert-market" value={form.market} onChange={(event) => update({ market: event.target.value })}>
              {krwMarkets.length === 0 && <option value={form.market}>{form.market}</option>}
              {krwMarkets.map((market) => (
                <option key={market.market} value={market.market}>
                  {market.market} · {marketName(market, i18n)}
                </option>
              ))}
            </select>
          </Field>
        )}

        {form.kind === 'target_price' && (
          <>
            <fieldset className="field">
              <legend>{t('form.direction')}</legend>
              <div className="segmented" role="radiogroup">
                {DIRECTIONS.map((direction) => (
                  <label key={direction} className={form.direction === direction ? 'selected' : ''}>
                    <input
                      type="radio"
                      name="direction"
                      value={direction}
                      checked={form.direction === direction}
                      onChange={() => update({ direction })}
                    />
                    {t(`direction.${direction}`)}
                  </label>
                ))}
              </div>
            </fieldset>
            <Field
              label={t('form.target')}
              htmlFor="alert-target"
              error={fieldError('target')}
              hint={currentPrice ? <span data-testid="current-price" data-value={currentPrice}>{t('form.currentPrice', { price: formatMoney(currentPrice, form.market, i18n.locale) })}</span> : undefined}
            >
              <input
                id="alert-target"
                inputMode="decimal"
                autoComplete="off"
                value={form.target}
                placeholder={currentPrice ?? ''}
                onChange={(event) => update({ target: event.target.value })}
                aria-invalid={errors.target ? true : undefined}
                aria-describedby="alert-target-side"
              />
            </Field>
            {currentPrice && (
              <div className="presets" role="group" aria-label={t('form.presets')}>
                {PRESETS.map((basisPoints) => (
                  <button
                    key={basisPoints}
                    type="button"
                    className="chip"
                    onClick={() => update({ target: moveByBasisPoints(currentPrice, basisPoints), direction: basisPoints > 0 ? 'up' : 'down' })}
                  >
                    {formatPercent(String(basisPoints / 100))}
                  </button>
                ))}
              </div>
            )}
            <div id="alert-target-side" aria-live="polite">
              {side && currentPrice && (
                <div className={`side-indicator side-${side}`} data-testid="target-side" data-side={side}>
                  <SideGauge side={side} />
                  <span>
                    {t(`form.side.${side}`)}{' '}
                    {t('form.targetDistance', { distance: formatPercent(distancePercent(currentPrice, target)) })}
                  </span>
                </div>
              )}
              {passed && (
                <div className="warning" role="alert" data-testid="passed-warning">
                  ⚠ {t('form.passedWarning', { target: formatMoney(target, form.market, i18n.locale) })}
                </div>
              )}
              {!currentPrice && targetValid && <div className="warning">{t('form.noPriceWarning')}</div>}
            </div>
          </>
        )}

        {form.kind === 'change_rate' && (
          <>
            <fieldset className="field">
              <legend>{t('form.basis')}</legend>
              <div className="segmented" role="radiogroup">
                {BASES.map((basis) => (
                  <label key={basis} className={form.basis === basis ? 'selected' : ''}>
                    <input type="radio" name="basis" value={basis} checked={form.basis === basis} onChange={() => update({ basis })} />
                    {t(`basis.${basis}`)}
                  </label>
                ))}
              </div>
            </fieldset>
            <fieldset className="field">
              <legend>{t('form.changeDirection')}</legend>
              <div className="segmented" role="radiogroup">
                {DIRECTIONS.map((direction) => (
                  <label key={direction} className={form.direction === direction ? 'selected' : ''}>
                    <input
                      type="radio"
                      name="change-direction"
                      value={direction}
                      checked={form.direction === direction}
                      onChange={() => update({ direction })}
                    />
                    {t(`changeDirection.${direction}`)}
                  </label>
                ))}
              </div>
            </fieldset>
            <Field label={t('form.threshold')} htmlFor="alert-threshold" error={fieldError('threshold')}>
              <input
                id="alert-threshold"
                inputMode="decimal"
                value={form.threshold}
                onChange={(event) => update({ threshold: event.target.value })}
                aria-invalid={errors.threshold ? true : undefined}
              />
            </Field>
          </>
        )}

        {form.kind === 'scheduled' && (
          <>
            <Field label={t('form.markets')} htmlFor="alert-markets" error={fieldError('markets')}>
              <select
                id="alert-markets"
                multiple
                size={6}
                value={form.markets}
                onChange={(event) => update({ markets: [...event.target.selectedOptions].map((option) => option.value) })}
              >
                {krwMarkets.map((market) => (
                  <option key={market.market} value={market.market}>
                    {market.market} · {marketName(market, i18n)}
                  </option>
                ))}
              </select>
            </Field>
            <fieldset className={`field ${errors.weekdays ? 'has-error' : ''}`}>
              <legend>{t('form.weekdays')}</legend>
              <div className="weekdays">
                {WEEKDAYS.map((day) => (
                  <label key={day} className={`chip ${form.weekdays.includes(day) ? 'selected' : ''}`}>
                    <input
                      type="checkbox"
                      id={day === 'mon' ? 'alert-weekdays' : undefined}
                      checked={form.weekdays.includes(day)}
                      onChange={(event) =>
                        update({
                          weekdays: event.target.checked
                            ? WEEKDAYS.filter((each) => each === day || form.weekdays.includes(each))
                            : form.weekdays.filter((each) => each !== day),
                        })
                      }
                    />
                    {t(`weekday.${day}`)}
                  </label>
                ))}
              </div>
              {errors.weekdays && <div className="field-error" role="alert">{t(errors.weekdays)}</div>}
            </fieldset>
            <Field label={t('form.dates')} htmlFor="alert-dates" error={fieldError('dates')} hint={t('form.datesHint')}>
              <input id="alert-dates" value={form.dates} placeholder="2026-12-24" onChange={(event) => update({ dates: event.target.value })} />
            </Field>
            <div className="two-columns">
              <Field label={t('form.time')} htmlFor="alert-timeOfDay" error={fieldError('timeOfDay')}>
                <input id="alert-timeOfDay" type="time" value={form.timeOfDay} onChange={(event) => update({ timeOfDay: event.target.value })} />
              </Field>
              <Field label={t('form.timeZone')} htmlFor="alert-timeZone" error={fieldError('timeZone')}>
                <select id="alert-timeZone" value={form.timeZone} onChange={(event) => update({ timeZone: event.target.value })}>
                  {timeZones(form.timeZone).map((zone) => (
                    <option key={zone} value={zone}>
                      {zone}
                    </option>
                  ))}
                </select>
              </Field>
            </div>
          </>
        )}

        <fieldset className="field">
          <legend>{t('form.repeat')}</legend>
          <div className="radio-list">
            <label>
              <input type="radio" name="repeat" checked={form.repeatMode === 'once'} onChange={() => update({ repeatMode: 'once' })} />
              {t('form.once')}
            </label>
            <label>
              <input type="radio" name="repeat" checked={form.repeatMode === 'repeat'} onChange={() => update({ repeatMode: 'repeat' })} />
              {t('form.repeatMode')}
            </label>
          </div>
        </fieldset>
        {form.repeatMode === 'repeat' && (
          <Field label={t('form.cooldown')} htmlFor="alert-cooldownMinutes" error={fieldError('cooldownMinutes')}>
            <input
              id="alert-cooldownMinutes"
              inputMode="numeric"
              value={form.cooldownMinutes}
              onChange={(event) => update({ cooldownMinutes: event.target.value })}
            />
          </Field>
        )}
        <Field label={t('form.expiresAt')} htmlFor="alert-expiresAt" error={fieldError('expiresAt')} hint={t('form.expiresHint')}>
          <input id="alert-expiresAt" type="datetime-local" value={form.expiresAt} onChange={(event) => update({ expiresAt: event.target.value })} />
        </Field>

        {existing && existing.repeat.mode === 'once' && (existing.firings?.count ?? 0) > 0 && (
          <p className="hint">{t('form.editRearms')}</p>
        )}
        {error && (
          <div id="form-error">
            <ErrorBox message={error} />
          </div>
        )}
        <div className="row end">
          <button type="button" className="button ghost" onClick={() => window.history.back()}>
            {t('form.cancel')}
          </button>
          <button type="submit" className="button primary" disabled={saving}>
            {saving ? t('form.saving') : existing ? t('form.save') : t('form.create')}
          </button>
        </div>
      </form>
    </main>
  );
}

/** Where the price is against the target, as a picture: ● is the price, | the target. */
function SideGauge({ side }: { side: 'below' | 'at' | 'above' }) {
  const position = side === 'below' ? '25%' : side === 'above' ? '75%' : '50%';
  return (
    <span className="gauge" aria-hidden="true">
      <span className="gauge-target" />
      <span className="gauge-price" style={{ left: position }} />
    </span>
  );
}
