import { describe, expect, it } from 'vitest';
import { emptyForm, formFromAlert, validateAlertForm, type AlertForm } from './alertForm';
import type { AlertView } from '../types';

const now = new Date('2026-11-22T00:00:00Z');

function form(changes: Partial<AlertForm>): AlertForm {
  return { ...emptyForm('KRW-BTC', 'Asia/Seoul'), ...changes };
}

describe('alert form', () => {
  it('builds a target-price alert, dropping grouping commas', () => {
    const result = validateAlertForm(form({ target: '96,000,000', direction: 'either' }), now);
    expect(result.errors).toEqual({});
    expect(result.definition).toEqual({
      condition: { kind: 'target_price', market: 'KRW-BTC', target: '96000000', direction: 'either' },
      repeat: { mode: 'once' },
    });
  });

  it('refuses a missing, zero or malformed target', () => {
    expect(validateAlertForm(form({ target: '' }), now).errors.target).toBe('error.targetRequired');
    for (const target of ['0', '-5', '1e8', 'abc']) {
      expect(validateAlertForm(form({ target }), now).errors.target, target).toBe('error.targetInvalid');
    }
  });

  it('checks change-rate thresholds like the API', () => {
    const base = { kind: 'change_rate' as const, basis: '5m' as const };
    expect(validateAlertForm(form({ ...base, threshold: '3.5' }), now).definition?.condition).toEqual({
      kind: 'change_rate', market: 'KRW-BTC', basis: '5m', direction: 'up', threshold: '3.5',
    });
    expect(validateAlertForm(form({ ...base, threshold: '0' }), now).errors.threshold).toBe('error.thresholdInvalid');
    expect(validateAlertForm(form({ ...base, threshold: '150' }), now).errors).toEqual({});
    expect(validateAlertForm(form({ ...base, threshold: '150', direction: 'down' }), now).errors.threshold).toBe('error.thresholdFall');
    expect(validateAlertForm(form({ ...base, threshold: '10001' }), now).errors.threshold).toBe('error.thresholdTooLarge');
  });

  it('builds scheduled alerts and requires days, a time and markets', () => {
    const scheduled = form({
      kind: 'scheduled', markets: ['KRW-BTC', 'KRW-ETH'], weekdays: ['mon', 'fri'],
      dates: '2026-12-24, 2026-12-31', timeOfDay: '08:30', timeZone: 'Asia/Seoul',
    });
    expect(validateAlertForm(scheduled, now).definition?.condition).toEqual({
      kind: 'scheduled', markets: ['KRW-BTC', 'KRW-ETH'], weekdays: ['mon', 'fri'],
      dates: ['2026-12-24', '2026-12-31'], time_of_day: '08:30', time_zone: 'Asia/Seoul',
    });
    const errors = validateAlertForm(
      { ...scheduled, markets: [], weekdays: [], dates: '', timeOfDay: '24:00' }, now).errors;
    expect(errors).toEqual({
      markets: 'error.marketsRequired', weekdays: 'error.daysRequired', timeOfDay: 'error.timeInvalid',
    });
    expect(validateAlertForm({ ...scheduled, dates: '2026-02-30' }, now).errors.dates).toBe('error.datesInvalid');
    const eleven = Array.from({ length: 11 }, (_, index) => `KRW-M${index}`);
    expect(validateAlertForm({ ...scheduled, markets: eleven }, now).errors.markets).toBe('error.marketsTooMany');
  });

  it('turns repeat and expiry into the API fields', () => {
    const result = validateAlertForm(
      form({ target: '1', repeatMode: 'repeat', cooldownMinutes: '15', expiresAt: '2030-01-01T09:00' }), now);
    expect(result.definition?.repeat).toEqual({ mode: 'repeat', cooldown_seconds: 900 });
    expect(result.definition?.expires_at).toBe(new Date('2030-01-01T09:00').toISOString());
    for (const cooldownMinutes of ['0', '43201', '1.5', '']) {
      expect(validateAlertForm(form({ target: '1', repeatMode: 'repeat', cooldownMinutes }), now).errors.cooldownMinutes)
        .toBe('error.cooldownRange');
    }
    expect(validateAlertForm(form({ target: '1', expiresAt: '2020-01-01T00:00' }), now).errors.expiresAt).toBe('error.expiryPast');
  });

  it('round-trips an existing alert through the form', () => {
    const alert: AlertView = {
      alert_id: 'a1', status: 'active', exchange: 'upbit', version: 3, home_site: 'onprem',
      created_at: '2026-11-01T00:00:00Z', updated_at: '2026-11-01T00:00:00Z',
      condition: { kind: 'scheduled', markets: ['KRW-ETH'], weekdays: ['sat'], dates: [],
        time_of_day: '21:05:00', time_zone: 'Europe/Paris' },
      repeat: { mode: 'repeat', cooldown_seconds: 3600 },
    };
    const edited = formFromAlert(alert, 'Asia/Seoul');
    expect(edited).toMatchObject({ kind: 'scheduled', timeOfDay: '21:05', timeZone: 'Europe/Paris',
      repeatMode: 'repeat', cooldownMinutes: '60', markets: ['KRW-ETH'] });
    expect(validateAlertForm(edited, now).definition?.condition).toMatchObject({ time_of_day: '21:05' });
  });
});
