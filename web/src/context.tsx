// What every screen needs: the API bound to the session, the signed-in user, notices (toasts), and a
// small router over the History API (a handful of screens do not need a routing library).

import { createContext, useCallback, useContext, useEffect, useState, type MouseEvent, type ReactNode } from 'react';
import { ApiError, type Api } from './api';
import { useI18n } from './i18n';
import type { Me } from './types';

export type NoticeKind = 'info' | 'success' | 'error';
export interface Notice {
  id: number;
  kind: NoticeKind;
  text: string;
}

export interface AppContextValue {
  api: Api;
  me: Me | null;
  setMe: (me: Me) => void;
  signOut: () => Promise<void>;
  notify: (text: string, kind?: NoticeKind) => void;
}

export const AppContext = createContext<AppContextValue | null>(null);

export function useApp(): AppContextValue {
  const app = useContext(AppContext);
  if (!app) throw new Error('useApp outside AppContext');
  return app;
}

/** The message for an API error, in the user's language, from its stable code. */
export function useErrorText(): (error: unknown) => string {
  const { t, duration } = useI18n();
  return useCallback(
    (error: unknown) => {
      if (error instanceof ApiError) {
        if (error.code === 'rate_limited') {
          const seconds = error.retryAfterSeconds ?? Number(error.details.retry_after_seconds ?? 0);
          return seconds > 0
            ? `${t('error.rate_limited')} ${t('signIn.waitFor', { time: duration(seconds) })}`
            : t('error.rate_limited');
        }
        const key = `error.${error.code}`;
        const text = t(key, { message: error.message });
        return text === key ? t('error.generic', { message: error.message }) : text;
      }
      return t('error.generic', { message: (error as Error)?.message ?? String(error) });
    },
    [t, duration],
  );
}

// --- routing ---

export interface Route {
  path: string;
  query: URLSearchParams;
}

function currentRoute(): Route {
  return { path: window.location.pathname, query: new URLSearchParams(window.location.search) };
}

const routeListeners = new Set<() => void>();
window.addEventListener('popstate', () => routeListeners.forEach((listener) => listener()));

export function navigate(to: string, options: { replace?: boolean } = {}): void {
  if (options.replace) window.history.replaceState(null, '', to);
  else window.history.pushState(null, '', to);
  window.scrollTo(0, 0);
  routeListeners.forEach((listener) => listener());
}

export function useRoute(): Route {
  const [route, setRoute] = useState(currentRoute);
  useEffect(() => {
    const listener = () => setRoute(currentRoute());
    routeListeners.add(listener);
    return () => {
      routeListeners.delete(listener);
    };
  }, []);
  return route;
}

/** An `<a>` that navigates in the app (and still opens in a new tab with a modifier key). */
export function Link({
  to,
  children,
  className,
  ...rest
}: { to: string; children: ReactNode; className?: string } & Omit<
  React.AnchorHTMLAttributes<HTMLAnchorElement>,
  'href'
>) {
  const onClick = (event: MouseEvent<HTMLAnchorElement>) => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) {
      return;
    }
    event.preventDefault();
    navigate(to);
  };
  return (
    <a href={to} className={className} onClick={onClick} {...rest}>
      {children}
    </a>
  );
}
