// The alert form: what the user edits (strings, as typed), its validation (the API's rules, checked
// before sending so every mistake is shown next to its field at once), and the request body it becomes.

import { compareDecimals, isPositiveDecimal } from './decimal';
import type {
  AlertDefinition,
  AlertView,
  Basis,
  ConditionInput,
  Direction,
  Weekday,
} from '../types';

export type AlertKind = 'target_price' | 'change_rate' | 'scheduled';

export interface AlertForm {
  kind: AlertKind;
  market: string;
  target: string;
  direction: Direction;
  basis: Basis;
  threshold: string;
  markets: string[];
  weekdays: Weekday[];
  /** Calendar dates, comma separated (YYYY-MM-DD). */
  dates: string;
  /** HH:MM */
  timeOfDay: string;
  timeZone: string;
  repeatMode: 'once' | 'repeat';
  /** Whole minutes, as typed. */
  cooldownMinutes: string;
  /** `<input type="datetime-local">` value (the browser's zone); empty for no expiry. */
  expiresAt: string;
}

/** Field → message key of the i18n dictionary. */
export type FormErrors = Partial<Record<keyof AlertForm, string>>;

export const MIN_COOLDOWN_MINUTES = 1;
export const MAX_COOLDOWN_MINUTES = 30 * 24 * 60;
export const MAX_SCHEDULED_MARKETS = 10;

export function emptyForm(market: string, timeZone: string): AlertForm {
  return {
    kind: 'target_price',
    market,
    target: '',
    direction: 'up',
    basis: 'daily',
    threshold: '5',
    markets: [market],
    weekdays: ['mon', 'tue', 'wed', 'thu', 'fri'],
    dates: '',
    timeOfDay: '09:00',
    timeZone,
    repeatMode: 'once',
    cooldownMinutes: '60',
    expiresAt: '',
  };
}

/** The form showing an existing alert, for editing. */
export function formFromAlert(alert: AlertView, fallbackTimeZone: string): AlertForm {
  const condition = alert.condition;
  const firstMarket = condition.kind === 'scheduled' ? condition.markets[0] ?? '' : condition.market;
  const form = emptyForm(firstMarket, fallbackTimeZone);
  form.kind = condition.kind;
  if (condition.kind === 'target_price') {
    form.target = condition.target;
    form.direction = condition.direction;
  } else if (condition.kind === 'change_rate') {
    form.basis = condition.basis;
    form.direction = condition.direction;
    form.threshold = condition.threshold;
  } else {
    form.markets = [...condition.markets];
    form.weekdays = [...condition.weekdays];
    form.dates = condition.dates.join(', ');
    form.timeOfDay = condition.time_of_day.slice(0, 5);
    form.timeZone = condition.time_zone;
  }
  if (alert.repeat.mode === 'repeat') {
    form.repeatMode = 'repeat';
    form.cooldownMinutes = String(Math.round(alert.repeat.cooldown_seconds / 60));
  }
  form.expiresAt = alert.expires_at ? toLocalInput(new Date(alert.expires_at)) : '';
  return form;
}

/** A Date as `<input type="datetime-local">` wants it, in the browser's zone. */
export function toLocalInput(date: Date): string {
  const pad = (value: number) => String(value).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(
    date.getHours(),
  )}:${pad(date.getMinutes())}`;
}

function parseDates(text: string): string[] {
  return text
    .split(/[,\s]+/)
    .map((date) => date.trim())
    .filter((date) => date.length > 0);
}

function validDate(text: string): boolean {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(text)) return false;
  const date = new Date(`${text}T00:00:00Z`);
  return !Number.isNaN(date.getTime()) && date.toISOString().startsWith(text);
}

export interface Validated {
  errors: FormErrors;
  /** Present when there are no errors. */
  definition?: AlertDefinition;
}

/**
 * Checks the form as the API would, and builds the definition. `now` decides whether an expiry is in
 * the future.
 */
export function validateAlertForm(form: AlertForm, now: Date): Validated {
  const errors: FormErrors = {};
  let condition: ConditionInput | undefined;
  switch (form.kind) {
    case 'target_price': {
      const target = form.target.trim().replace(/,/g, '');
      if (!form.market) errors.market = 'error.marketRequired';
      if (target === '') errors.target = 'error.targetRequired';
      else if (!isPositiveDecimal(target)) errors.target = 'error.targetInvalid';
      condition = { kind: 'target_price', market: form.market, target, direction: form.direction };
      break;
    }
    case 'change_rate': {
      const threshold = form.threshold.trim();
      if (!form.market) errors.market = 'error.marketRequired';
      if (!isPositiveDecimal(threshold)) errors.threshold = 'error.thresholdInvalid';
      else if (compareDecimals(threshold, '10000') > 0) errors.threshold = 'error.thresholdTooLarge';
      else if (form.direction !== 'up' && compareDecimals(threshold, '100') > 0) {
        errors.threshold = 'error.thresholdFall';
      }
      condition = {
        kind: 'change_rate',
        market: form.market,
        basis: form.basis,
        direction: form.direction,
        threshold,
      };
      break;
    }
    case 'scheduled': {
      const dates = parseDates(form.dates);
      if (form.markets.length === 0) errors.markets = 'error.marketsRequired';
      else if (form.markets.length > MAX_SCHEDULED_MARKETS) errors.markets = 'error.marketsTooMany';
      if (form.weekdays.length === 0 && dates.length === 0) errors.weekdays = 'error.daysRequired';
      if (dates.some((date) => !validDate(date))) errors.dates = 'error.datesInvalid';
      if (!/^([01]\d|2[0-3]):[0-5]\d$/.test(form.timeOfDay)) errors.timeOfDay = 'error.timeInvalid';
      if (!form.timeZone) errors.timeZone = 'error.timeZoneRequired';
      condition = {
        kind: 'scheduled',
        markets: form.markets,
        weekdays: form.weekdays,
        dates,
        time_of_day: form.timeOfDay,
        time_zone: form.timeZone,
      };
      break;
    }
  }
  let cooldownSeconds = 0;
  if (form.repeatMode === 'repeat') {
    const minutes = form.cooldownMinutes.trim();
    const value = /^\d+$/.test(minutes) ? Number(minutes) : NaN;
    if (!(value >= MIN_COOLDOWN_MINUTES && value <= MAX_COOLDOWN_MINUTES)) {
      errors.cooldownMinutes = 'error.cooldownRange';
    }
    cooldownSeconds = value * 60;
  }
  let expiresAt: string | undefined;
  if (form.expiresAt) {
    const expiry = new Date(form.expiresAt);
    if (Number.isNaN(expiry.getTime())) errors.expiresAt = 'error.expiryInvalid';
    else if (expiry.getTime() <= now.getTime()) errors.expiresAt = 'error.expiryPast';
    else expiresAt = expiry.toISOString();
  }
  if (Object.keys(errors).length > 0 || !condition) {
    return { errors };
  }
  const definition: AlertDefinition = {
    condition,
    repeat:
      form.repeatMode === 'repeat'
        ? { mode: 'repeat', cooldown_seconds: cooldownSeconds }
        : { mode: 'once' },
  };
  if (expiresAt) definition.expires_at = expiresAt;
  return { errors, definition };
}
