// The app shell: session (sign-in screen until there is one), the user's language and time zone,
// navigation, the live connection, notices, and which screen a path shows.

import { Suspense, lazy, useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { createApi, loadSession, setUnauthenticatedHandler, storeSession, type Session } from './api';
import { Loading, formatMoney } from './components/common';
import { Icon } from './components/Icon';
import { AppContext, Link, navigate, useApp, useRoute, type Notice, type NoticeKind } from './context';
import { I18nContext, guessLocale, makeI18n, translate, useI18n } from './i18n';
import { LiveProvider, useFirings, useLiveStatus } from './live';
import { AlertEditor } from './screens/AlertEditor';
import { AlertHistory } from './screens/AlertHistory';
import { Alerts } from './screens/Alerts';
import { Markets } from './screens/Markets';
import { Notifications } from './screens/Notifications';
import { Settings } from './screens/Settings';
import { SignIn } from './screens/SignIn';
import type { Locale, Me } from './types';

// The chart library is most of the code: loaded with the first market page, not at sign-in.
const MarketPage = lazy(() => import('./screens/MarketPage').then((module) => ({ default: module.MarketPage })));

export function App() {
  const [session, setSession] = useState<Session | null>(loadSession);
  const [me, setMe] = useState<Me | null>(null);
  const [guessedLocale, setGuessedLocale] = useState<Locale>(guessLocale);
  const [notices, setNotices] = useState<Notice[]>([]);
  const nextNotice = useRef(1);
  const api = useMemo(() => createApi(session?.token ?? null), [session]);
  const locale = me?.preferences.locale ?? guessedLocale;
  const timeZone = me?.preferences.time_zone ?? 'Asia/Seoul';
  const i18n = useMemo(() => makeI18n(locale, timeZone), [locale, timeZone]);

  const notify = useCallback((text: string, kind: NoticeKind = 'info') => {
    const id = nextNotice.current++;
    setNotices((current) => [...current.slice(-3), { id, kind, text }]);
    window.setTimeout(() => setNotices((current) => current.filter((notice) => notice.id !== id)), kind === 'error' ? 8000 : 5000);
  }, []);

  const endSession = useCallback(() => {
    storeSession(null);
    setSession(null);
    setMe(null);
  }, []);

  useEffect(() => {
    setUnauthenticatedHandler(() => {
      endSession();
      notify(translate(locale, 'error.unauthenticated'), 'error');
    });
  }, [endSession, notify, locale]);

  useEffect(() => {
    document.documentElement.lang = locale;
    document.documentElement.dataset.locale = locale;
    localStorage.setItem('coinalarm.locale', locale);
  }, [locale]);

  // The user (preferences decide language and time zone). Right after registering, the read model
  // may lag a moment: try again a few times.
  useEffect(() => {
    if (!session) return;
    let cancelled = false;
    let attempt = 0;
    const load = () => {
      api
        .me()
        .then((loaded) => !cancelled && setMe(loaded))
        .catch(() => {
          attempt += 1;
          if (!cancelled && attempt < 5) window.setTimeout(load, 1000 * attempt);
        });
    };
    load();
    return () => {
      cancelled = true;
    };
  }, [api, session]);

  const signOut = useCallback(async () => {
    try {
      await api.deleteSession();
    } catch {
      // Signed out here regardless; the token expires by itself.
    }
    endSession();
    navigate('/', { replace: true });
  }, [api, endSession]);

  const context = useMemo(() => ({ api, me, setMe, signOut, notify }), [api, me, signOut, notify]);

  return (
    <I18nContext.Provider value={i18n}>
      <AppContext.Provider value={context}>
        {session ? (
          <LiveProvider token={session.token}>
            <Shell />
            <FiringNotices />
          </LiveProvider>
        ) : (
          <SignIn
            onLocale={(chosen) => setGuessedLocale(chosen)}
            onSignedIn={(created) => {
              storeSession(created);
              setSession(created);
            }}
          />
        )}
        <Notices notices={notices} onClose={(id) => setNotices(notices.filter((notice) => notice.id !== id))} />
      </AppContext.Provider>
    </I18nContext.Provider>
  );
}

function Shell() {
  const { t } = useI18n();
  const route = useRoute();
  const status = useLiveStatus();
  const items = [
    { to: '/', label: t('nav.markets'), icon: 'chart' as const, active: route.path === '/' || route.path.startsWith('/markets') },
    { to: '/alerts', label: t('nav.alerts'), icon: 'bell' as const, active: route.path.startsWith('/alerts') },
    { to: '/notifications', label: t('nav.notifications'), icon: 'message' as const, active: route.path.startsWith('/notifications') },
    { to: '/settings', label: t('nav.settings'), icon: 'settings' as const, active: route.path.startsWith('/settings') },
  ];
  return (
    <>
      <a href="#main" className="skip-link">
        Skip to content
      </a>
      <header className="top-bar">
        <Link to="/" className="brand">
          <Icon name="bell" size={22} /> {t('app.name')}
        </Link>
        <nav className="nav" aria-label={t('nav.main')}>
          {items.map((item) => (
            <Link key={item.to} to={item.to} className={item.active ? 'active' : ''} aria-current={item.active ? 'page' : undefined}>
              <span className="nav-icon">
                <Icon name={item.icon} />
              </span>
              <span className="nav-label">{item.label}</span>
            </Link>
          ))}
        </nav>
        <span className={`live-dot live-${status}`} role="status" title={t(`live.${status === 'open' ? 'connected' : status === 'reconnecting' ? 'offline' : 'connecting'}`)}>
          <span className="dot" aria-hidden="true" />
          <span className="live-label">{t(`live.${status === 'open' ? 'connected' : status === 'reconnecting' ? 'offline' : 'connecting'}`)}</span>
        </span>
      </header>
      <Screen path={route.path} query={route.query} />
    </>
  );
}

function Screen({ path, query }: { path: string; query: URLSearchParams }) {
  const { t } = useI18n();
  const segments = path.split('/').filter(Boolean).map(decodeURIComponent);
  const [first, second, third] = segments;
  if (!first) return <Markets />;
  if (first === 'markets' && second) {
    return (
      <Suspense fallback={<main id="main" className="page"><Loading /></main>}>
        <MarketPage key={second} code={second} />
      </Suspense>
    );
  }
  if (first === 'alerts' && !second) return <Alerts />;
  if (first === 'alerts' && second === 'new') return <AlertEditor key={`new:${query.get('market')}`} initialMarket={query.get('market') ?? undefined} />;
  if (first === 'alerts' && second && third === 'edit') return <AlertEditor key={`edit:${second}`} alertId={second} />;
  if (first === 'alerts' && second) return <AlertHistory key={second} alertId={second} />;
  if (first === 'notifications') return <Notifications />;
  if (first === 'settings') return <Settings />;
  return (
    <main id="main" className="page">
      <p className="empty card">{t('common.notFound')}</p>
    </main>
  );
}

/** A notice for each of the user's firings, wherever they are in the app. */
function FiringNotices() {
  const { notify } = useApp();
  const i18n = useI18n();
  useFirings((firing) => {
    const first = firing.prices[0];
    notify(
      `${i18n.t('firing.toast', { market: first?.market ?? '', price: first ? formatMoney(first.price, first.market, i18n.locale) : '' })}`,
      'success',
    );
  });
  return null;
}

function Notices({ notices, onClose }: { notices: Notice[]; onClose: (id: number) => void }) {
  const { t } = useI18n();
  return (
    <div className="notices" aria-live="polite" aria-atomic="false">
      {notices.map((notice) => (
        <div key={notice.id} className={`notice notice-${notice.kind}`} role={notice.kind === 'error' ? 'alert' : 'status'}>
          <span>{notice.text}</span>
          <button type="button" className="close" aria-label={t('common.close')} onClick={() => onClose(notice.id)}>
            ×
          </button>
        </div>
      ))}
    </div>
  );
}
