// The account and its preferences: language (the UI follows it, and the SMS), time zone, quiet hours,
// the daily SMS cap; sign out. Saved with the version it was built on; a 409 reloads them.

import { useEffect, useState, type FormEvent } from 'react';
import { ApiError } from '../api';
import { ErrorBox, Field } from '../components/common';
import { useApp, useErrorText } from '../context';
import { useI18n } from '../i18n';
import type { Locale, Me } from '../types';

function timeZones(current: string): string[] {
  const all = (Intl as unknown as { supportedValuesOf?: (key: string) => string[] }).supportedValuesOf?.('timeZone') ?? [];
  return [...new Set(['Asia/Seoul', 'UTC', current, ...all])];
}

interface Draft {
  locale: Locale;
  timeZone: string;
  quiet: boolean;
  quietStart: string;
  quietEnd: string;
  cap: string;
}

function draftOf(me: Me): Draft {
  return {
    locale: me.preferences.locale,
    timeZone: me.preferences.time_zone,
    quiet: Boolean(me.preferences.quiet_hours),
    quietStart: me.preferences.quiet_hours?.start.slice(0, 5) ?? '23:00',
    quietEnd: me.preferences.quiet_hours?.end.slice(0, 5) ?? '07:00',
    cap: me.preferences.daily_sms_cap ? String(me.preferences.daily_sms_cap) : '',
  };
}

export function Settings() {
  const { api, me, setMe, signOut, notify } = useApp();
  const i18n = useI18n();
  const { t } = i18n;
  const errorText = useErrorText();
  const [draft, setDraft] = useState<Draft | null>(me ? draftOf(me) : null);
  const [capError, setCapError] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [saving, setSaving] = useState(false);

  useEffect(() => {
    if (me && !draft) setDraft(draftOf(me));
  }, [me, draft]);

  if (!me || !draft) return <main id="main" className="page" />;

  const save = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    const cap = draft.cap.trim();
    if (cap && !(/^\d+$/.test(cap) && Number(cap) >= 1 && Number(cap) <= 1000)) {
      setCapError(t('settings.dailyCapInvalid'));
      document.getElementById('settings-cap')?.focus();
      return;
    }
    setCapError(null);
    setSaving(true);
    try {
      const updated = await api.putPreferences(me.version, {
        locale: draft.locale,
        time_zone: draft.timeZone,
        quiet_hours: draft.quiet ? { start: draft.quietStart, end: draft.quietEnd } : null,
        daily_sms_cap: cap ? Number(cap) : null,
      });
      setMe(updated);
      setDraft(draftOf(updated));
      notify(i18n.t('settings.saved'), 'success');
    } catch (caught) {
      setError(errorText(caught));
      if (caught instanceof ApiError && caught.code === 'version_conflict') {
        const fresh = await api.me();
        setMe(fresh);
        setDraft(draftOf(fresh));
      }
    } finally {
      setSaving(false);
    }
  };

  return (
    <main id="main" className="page narrow">
      <h1 className="page-title">{t('settings.title')}</h1>
      <section className="card">
        <h2>{t('settings.account')}</h2>
        <dl className="facts">
          <dt>{t('settings.phone')}</dt>
          <dd>{me.phone_masked ?? '—'}</dd>
          {me.registered_at && (
            <>
              <dt />
              <dd className="muted small">{t('settings.since', { time: i18n.dateTime(me.registered_at) })}</dd>
            </>
          )}
        </dl>
      </section>
      <form className="card form" onSubmit={save} noValidate>
        <fieldset className="field">
          <legend>{t('settings.language')}</legend>
          <div className="segmented" role="radiogroup">
            {(['ko', 'en'] as const).map((locale) => (
              <label key={locale} className={draft.locale === locale ? 'selected' : ''}>
                <input type="radio" name="locale" checked={draft.locale === locale} onChange={() => setDraft({ ...draft, locale })} />
                {locale === 'ko' ? '한국어' : 'English'}
              </label>
            ))}
          </div>
        </fieldset>
        <Field label={t('settings.timeZone')} htmlFor="settings-zone">
          <select id="settings-zone" value={draft.timeZone} onChange={(event) => setDraft({ ...draft, timeZone: event.target.value })}>
            {timeZones(draft.timeZone).map((zone) => (
              <option key={zone} value={zone}>
                {zone}
              </option>
            ))}
          </select>
        </Field>
        <fieldset className="field">
          <legend>{t('settings.quietHours')}</legend>
          <label className="switch">
            <input type="checkbox" checked={draft.quiet} onChange={(event) => setDraft({ ...draft, quiet: event.target.checked })} />
            <span>{t('settings.quietHoursHelp')}</span>
          </label>
          {draft.quiet && (
            <div className="two-columns">
              <Field label={t('settings.quietFrom')} htmlFor="quiet-start">
                <input id="quiet-start" type="time" value={draft.quietStart} onChange={(event) => setDraft({ ...draft, quietStart: event.target.value })} />
              </Field>
              <Field label={t('settings.quietTo')} htmlFor="quiet-end">
                <input id="quiet-end" type="time" value={draft.quietEnd} onChange={(event) => setDraft({ ...draft, quietEnd: event.target.value })} />
              </Field>
            </div>
          )}
        </fieldset>
        <Field label={t('settings.dailyCap')} htmlFor="settings-cap" error={capError ?? undefined} hint={t('settings.dailyCapHint')}>
          <input id="settings-cap" inputMode="numeric" value={draft.cap} onChange={(event) => setDraft({ ...draft, cap: event.target.value })} />
        </Field>
        {error && <ErrorBox message={error} />}
        <div className="row end">
          <button type="submit" className="button primary" disabled={saving}>
            {t('settings.save')}
          </button>
        </div>
      </form>
      <section className="card">
        <div className="row spread">
          <div>
            <h2>{t('settings.signOut')}</h2>
            <p className="muted small">{t('settings.signOutHelp')}</p>
          </div>
          <button type="button" className="button danger" onClick={() => void signOut()}>
            {t('settings.signOut')}
          </button>
        </div>
      </section>
    </main>
  );
}
