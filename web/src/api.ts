// The API client: JSON in and out, errors as `ApiError` carrying the API's stable `code`, the
// `Retry-After` of a 429, and the session token (kept in localStorage so a reload stays signed in).

import type {
  AlertDefinition,
  AlertView,
  Candle,
  CodeRequested,
  Firing,
  Locale,
  MarketView,
  Me,
  Notification,
  Preferences,
  SessionCreated,
} from './types';

/** An error answer of the API (`{code, message, details}`), or `network` when none came. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: Record<string, unknown>;
  /** Seconds from `Retry-After` (429). */
  readonly retryAfterSeconds: number | null;

  constructor(
    status: number,
    code: string,
    message: string,
    details: Record<string, unknown> = {},
    retryAfterSeconds: number | null = null,
  ) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

const TOKEN_KEY = 'coinalarm.session';

export interface Session {
  token: string;
  expiresAt: string;
  userId: string;
}

export function loadSession(): Session | null {
  try {
    const session = JSON.parse(localStorage.getItem(TOKEN_KEY) ?? 'null') as Session | null;
    if (session && new Date(session.expiresAt).getTime() > Date.now()) return session;
  } catch {
    // A damaged entry is no session.
  }
  localStorage.removeItem(TOKEN_KEY);
  return null;
}

export function storeSession(session: Session | null): void {
  if (session) localStorage.setItem(TOKEN_KEY, JSON.stringify(session));
  else localStorage.removeItem(TOKEN_KEY);
}

/** Called when the API says the session is gone (expired, revoked at either site). */
let onUnauthenticated: () => void = () => {};
export function setUnauthenticatedHandler(handler: () => void): void {
  onUnauthenticated = handler;
}

interface RequestOptions {
  body?: unknown;
  ifMatch?: number;
  token?: string | null;
  signal?: AbortSignal;
}

export interface Answer<T> {
  data: T;
  etag: number | null;
}

async function request<T>(method: string, path: string, options: RequestOptions = {}): Promise<Answer<T>> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  if (options.ifMatch !== undefined) headers['if-match'] = `"${options.ifMatch}"`;
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      signal: options.signal,
    });
  } catch (error) {
    if ((error as Error).name === 'AbortError') throw error;
    throw new ApiError(0, 'network', (error as Error).message);
  }
  const text = await response.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = (body ?? {}) as { code?: string; message?: string; details?: Record<string, unknown> };
    const retryAfter = Number(response.headers.get('retry-after'));
    const apiError = new ApiError(
      response.status,
      error.code ?? `http_${response.status}`,
      error.message ?? response.statusText,
      error.details ?? {},
      Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : null,
    );
    if (response.status === 401 && apiError.code === 'unauthenticated' && options.token) {
      onUnauthenticated();
    }
    throw apiError;
  }
  const etagText = response.headers.get('etag')?.replace(/^W\//, '').replace(/"/g, '');
  const etag = etagText && /^\d+$/.test(etagText) ? Number(etagText) : null;
  return { data: body as T, etag };
}

/** Every call of the API the client makes; `token` is the signed-in session's. */
export function createApi(token: string | null) {
  const call = <T>(method: string, path: string, options: Omit<RequestOptions, 'token'> = {}) =>
    request<T>(method, path, { ...options, token }).then((answer) => answer.data);
  return {
    requestCode: (phone: string, locale: Locale) =>
      call<CodeRequested>('POST', '/v1/auth/codes', { body: { phone, locale } }),
    createSession: (phone: string, code: string) =>
      call<SessionCreated>('POST', '/v1/auth/session', { body: { phone, code } }),
    deleteSession: () => call<null>('DELETE', '/v1/auth/session'),

    markets: (signal?: AbortSignal) => call<{ markets: MarketView[] }>('GET', '/v1/markets', { signal }),
    movers: (limit = 5) =>
      call<{ risers: MarketView[]; fallers: MarketView[] }>('GET', `/v1/markets/movers?limit=${limit}`),
    market: (code: string) => call<MarketView>('GET', `/v1/markets/${encodeURIComponent(code)}`),
    candles: (code: string, limit = 120) =>
      call<{ market: string; candles: Candle[] }>(
        'GET',
        `/v1/markets/${encodeURIComponent(code)}/candles?limit=${limit}`,
      ),

    alerts: (params: { status?: string; cursor?: string } = {}) => {
      const query = new URLSearchParams({ limit: '50' });
      if (params.status) query.set('status', params.status);
      if (params.cursor) query.set('cursor', params.cursor);
      return call<{ alerts: AlertView[]; next_cursor?: string | null }>('GET', `/v1/alerts?${query}`);
    },
    alert: (id: string) => call<AlertView>('GET', `/v1/alerts/${encodeURIComponent(id)}`),
    createAlert: (definition: AlertDefinition & { alert_id: string }) =>
      call<AlertView>('POST', '/v1/alerts', { body: definition }),
    updateAlert: (id: string, version: number, definition: AlertDefinition) =>
      call<AlertView>('PUT', `/v1/alerts/${encodeURIComponent(id)}`, { body: definition, ifMatch: version }),
    pauseAlert: (id: string, version: number) =>
      call<AlertView>('POST', `/v1/alerts/${encodeURIComponent(id)}/pause`, { ifMatch: version }),
    resumeAlert: (id: string, version: number) =>
      call<AlertView>('POST', `/v1/alerts/${encodeURIComponent(id)}/resume`, { ifMatch: version }),
    deleteAlert: (id: string, version: number) =>
      call<null>('DELETE', `/v1/alerts/${encodeURIComponent(id)}`, { ifMatch: version }),
    history: (id: string, cursor?: string) =>
      call<{ firings: Firing[]; next_cursor?: string | null }>(
        'GET',
        `/v1/alerts/${encodeURIComponent(id)}/history?limit=20${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
      ),
    notifications: (cursor?: string) =>
      call<{ notifications: Notification[]; next_cursor?: string | null }>(
        'GET',
        `/v1/notifications?limit=30${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
      ),

    me: () => call<Me>('GET', '/v1/me'),
    putPreferences: (version: number, preferences: Preferences) =>
      call<Me>('PUT', '/v1/me/preferences', { body: preferences, ifMatch: version }),
  };
}

export type Api = ReturnType<typeof createApi>;

/** A fresh UUID for a create: retrying the same create (a lost answer) cannot make two alerts. */
export function newId(): string {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
