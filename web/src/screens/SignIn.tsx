// Phone sign-in: request a code by SMS, enter it. Korean local forms are accepted (and shown as the
// number we will text); a 429 shows how long to wait (Retry-After) and disables the button until then.

import { useEffect, useRef, useState, type FormEvent } from 'react';
import { ApiError, createApi, type Session } from '../api';
import { Icon } from '../components/Icon';
import { useErrorText } from '../context';
import { useI18n } from '../i18n';
import { cleanCode, displayPhone, parsePhone } from '../lib/phone';
import type { Locale } from '../types';

interface Props {
  onSignedIn: (session: Session) => void;
  onLocale: (locale: Locale) => void;
}

function useCountdown(until: number | null): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (until === null) return;
    const timer = window.setInterval(() => setNow(Date.now()), 1000);
    return () => window.clearInterval(timer);
  }, [until]);
  return until === null ? 0 : Math.max(0, Math.ceil((until - now) / 1000));
}

export function SignIn({ onSignedIn, onLocale }: Props) {
  const i18n = useI18n();
  const { t, duration, locale } = i18n;
  const errorText = useErrorText();
  const api = createApi(null);
  const [phoneInput, setPhoneInput] = useState('');
  const [phone, setPhone] = useState<string | null>(null);
  const [code, setCode] = useState('');
  const [codeLength, setCodeLength] = useState(6);
  const [expiresAt, setExpiresAt] = useState<number | null>(null);
  const [blockedUntil, setBlockedUntil] = useState<number | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [phoneError, setPhoneError] = useState<string | null>(null);
  const codeInput = useRef<HTMLInputElement>(null);
  const expiresIn = useCountdown(expiresAt);
  const blockedFor = useCountdown(blockedUntil);

  useEffect(() => {
    if (phone) codeInput.current?.focus();
  }, [phone]);

  const failed = (caught: unknown) => {
    if (caught instanceof ApiError && caught.code === 'rate_limited') {
      const seconds = caught.retryAfterSeconds ?? Number(caught.details.retry_after_seconds ?? 60);
      setBlockedUntil(Date.now() + seconds * 1000);
      setError(t('error.rate_limited'));
      return;
    }
    if (caught instanceof ApiError && caught.code === 'sign_in_code_invalid' && typeof caught.details.attempts_left === 'number') {
      setError(`${errorText(caught)} ${t('signIn.attemptsLeft', { count: caught.details.attempts_left })}`);
      return;
    }
    if (caught instanceof ApiError && caught.code === 'invalid_phone_number') {
      setPhoneError(errorText(caught));
      setPhone(null);
      return;
    }
    setError(errorText(caught));
  };

  const requestCode = async (event?: FormEvent) => {
    event?.preventDefault();
    setError(null);
    setPhoneError(null);
    const parsed = parsePhone(phoneInput);
    if (!parsed) {
      setPhoneError(t('error.invalid_phone_number'));
      return;
    }
    setBusy(true);
    try {
      const requested = await api.requestCode(parsed, locale);
      setPhone(parsed);
      setCode('');
      setCodeLength(requested.code_length);
      setExpiresAt(new Date(requested.expires_at).getTime());
      setBlockedUntil(null);
    } catch (caught) {
      failed(caught);
    } finally {
      setBusy(false);
    }
  };

  const verify = async (event: FormEvent) => {
    event.preventDefault();
    if (!phone || code.length !== codeLength) return;
    setError(null);
    setBusy(true);
    try {
      const session = await api.createSession(phone, code);
      onSignedIn({ token: session.token, expiresAt: session.expires_at, userId: session.user_id });
    } catch (caught) {
      failed(caught);
      if (caught instanceof ApiError && caught.code === 'sign_in_code_burnt') setExpiresAt(null);
      setCode('');
      setBusy(false);
    }
  };

  const blocked = blockedFor > 0;
  const expired = expiresAt !== null && expiresIn === 0;

  return (
    <main className="sign-in" id="main">
      <div className="sign-in-card">
        <div className="brand-large">
          <Icon name="bell" size={44} />
        </div>
        <h1>{t('app.name')}</h1>
        <p className="tagline">{t('app.tagline')}</p>

        <div className="language-switch" role="group" aria-label={t('signIn.language')}>
          {(['ko', 'en'] as const).map((option) => (
            <button
              key={option}
              type="button"
              className={`chip ${locale === option ? 'selected' : ''}`}
              aria-pressed={locale === option}
              onClick={() => onLocale(option)}
            >
              {option === 'ko' ? '한국어' : 'English'}
            </button>
          ))}
        </div>

        {!phone ? (
          <form onSubmit={requestCode} noValidate>
            <h2>{t('signIn.title')}</h2>
            <div className={`field ${phoneError ? 'has-error' : ''}`}>
              <label htmlFor="phone">{t('signIn.phone')}</label>
              <input
                id="phone"
                name="phone"
                type="tel"
                inputMode="tel"
                autoComplete="tel"
                placeholder="010-1234-5678"
                value={phoneInput}
                onChange={(event) => setPhoneInput(event.target.value)}
                aria-invalid={phoneError ? true : undefined}
                aria-describedby={phoneError ? 'phone-error' : 'phone-hint'}
                autoFocus
              />
              {phoneError ? (
                <div className="field-error" id="phone-error" role="alert">
                  {phoneError}
                </div>
              ) : (
                <div className="hint" id="phone-hint">
                  {t('signIn.phoneHint')}
                </div>
              )}
            </div>
            <button type="submit" className="button primary wide" disabled={busy || blocked}>
              {busy ? t('signIn.sending') : t('signIn.sendCode')}
            </button>
          </form>
        ) : (
          <form onSubmit={verify} noValidate>
            <p className="sent-to">{t('signIn.codeSent', { phone: displayPhone(phone), length: codeLength })}</p>
            <div className="field">
              <label htmlFor="code">{t('signIn.code')}</label>
              <input
                id="code"
                ref={codeInput}
                name="code"
                className="code-input"
                inputMode="numeric"
                autoComplete="one-time-code"
                pattern="[0-9]*"
                maxLength={codeLength}
                value={code}
                onChange={(event) => setCode(cleanCode(event.target.value, codeLength))}
                aria-describedby="code-expiry"
              />
              <div className="hint" id="code-expiry" aria-live="polite">
                {expired ? t('signIn.expired') : expiresAt ? t('signIn.expiresIn', { time: formatClock(expiresIn) }) : ''}
              </div>
            </div>
            <button type="submit" className="button primary wide" disabled={busy || blocked || code.length !== codeLength}>
              {busy ? t('signIn.verifying') : t('signIn.verify')}
            </button>
            <div className="row spread">
              <button type="button" className="link-button" onClick={() => { setPhone(null); setError(null); }}>
                {t('signIn.changeNumber')}
              </button>
              <button type="button" className="link-button" disabled={busy || blocked} onClick={() => void requestCode()}>
                {t('signIn.resend')}
              </button>
            </div>
          </form>
        )}

        {(error || blocked) && (
          <div className="error-box" role="alert">
            {error}
            {blocked && <> {t('signIn.waitFor', { time: duration(blockedFor) })}</>}
          </div>
        )}
        <p className="fine-print">{t('signIn.noApp')}</p>
      </div>
    </main>
  );
}

function formatClock(seconds: number): string {
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, '0')}`;
}
