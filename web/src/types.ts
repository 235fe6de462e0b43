// The API's shapes (services/api/src/routes/*.rs, `/openapi.json`). Decimals are strings.

export type Locale = 'ko' | 'en';
export type Direction = 'up' | 'down' | 'either';
export type Basis = 'daily' | '5m' | '1h' | '24h';
export type Weekday = 'mon' | 'tue' | 'wed' | 'thu' | 'fri' | 'sat' | 'sun';
export const WEEKDAYS: Weekday[] = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];
export type PriceSide = 'below' | 'at' | 'above';

export interface ErrorBody {
  code: string;
  message: string;
  details?: Record<string, unknown>;
}

export interface CodeRequested {
  request_id: string;
  expires_at: string;
  code_length: number;
}

export interface SessionCreated {
  token: string;
  token_type: string;
  expires_at: string;
  user_id: string;
  new_user: boolean;
}

export interface Quote {
  price: string;
  change_percent: string;
  change_price: string;
  volume_24h?: string | null;
  traded_at: string;
}

export interface MarketView {
  market: string;
  korean_name: string;
  english_name: string;
  quote?: Quote | null;
}

export interface Candle {
  minute: string;
  open: string;
  high: string;
  low: string;
  close: string;
  volume: string;
  trades: number;
}

export interface LivePrice {
  market: string;
  price: string;
  change_percent: string;
  traded_at: string;
}

export interface FiredPrice {
  market: string;
  price: string;
  change_percent?: string | null;
}

export interface LiveFiring {
  alert_id: string;
  trigger_id: string;
  kind: string;
  prices: FiredPrice[];
  fired_at: string;
}

export type ConditionInput =
  | { kind: 'target_price'; market: string; target: string; direction: Direction }
  | { kind: 'change_rate'; market: string; basis: Basis; direction: Direction; threshold: string }
  | {
      kind: 'scheduled';
      markets: string[];
      weekdays: Weekday[];
      dates: string[];
      time_of_day: string;
      time_zone?: string;
    };

export type ConditionView =
  | {
      kind: 'target_price';
      market: string;
      target: string;
      direction: Direction;
      side_at_creation: PriceSide;
      reference_price?: string;
    }
  | { kind: 'change_rate'; market: string; basis: Basis; direction: Direction; threshold: string }
  | {
      kind: 'scheduled';
      markets: string[];
      weekdays: Weekday[];
      dates: string[];
      time_of_day: string;
      time_zone: string;
    };

export type Repeat = { mode: 'once' } | { mode: 'repeat'; cooldown_seconds: number };

export interface AlertDefinition {
  condition: ConditionInput;
  repeat: Repeat;
  expires_at?: string;
}

export interface AlertView {
  alert_id: string;
  status: 'active' | 'paused' | 'expired' | string;
  exchange: string;
  condition: ConditionView;
  repeat: Repeat;
  expires_at?: string | null;
  version: number;
  home_site: string;
  created_at: string;
  updated_at: string;
  firings?: { count: number; last_fired_at?: string | null; last_price?: string | null } | null;
}

export type SmsStatus = 'queued' | 'sent' | 'delivered' | 'failed' | 'skipped';

export interface Firing {
  trigger_id: string;
  fired_at: string;
  alert_version: number;
  prices: FiredPrice[];
  sms?: {
    status: SmsStatus;
    pipeline_status: string;
    status_at?: string | null;
    dispatch_id?: string | null;
    error_code?: string | null;
    error_message?: string | null;
    skip_reason?: string | null;
    sent_count: number;
  } | null;
}

export interface Notification {
  entry: 'sms' | 'skipped' | string;
  id: string;
  at: string;
  status: SmsStatus;
  pipeline_status: string;
  status_at?: string | null;
  text?: string | null;
  phone_masked?: string | null;
  error_code?: string | null;
  skip_reason?: string | null;
  sent_count: number;
}

export interface Preferences {
  locale: Locale;
  time_zone: string;
  quiet_hours?: { start: string; end: string } | null;
  daily_sms_cap?: number | null;
}

export interface Me {
  user_id: string;
  phone_masked?: string | null;
  home_site: string;
  registered_at?: string | null;
  preferences: Preferences;
  version: number;
}
