// The live stream (`GET /v1/stream`, server-sent events): one EventSource for the whole app, carrying
// the prices of every market some mounted screen watches and the signed-in user's own firings.
// Screens say which markets they watch (`useLivePrices`); the connection is reopened when that set
// changes, and EventSource reconnects by itself after a network drop.

import {
  createContext,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from 'react';
import type { LiveFiring, LivePrice } from './types';

export type LiveStatus = 'idle' | 'connecting' | 'open' | 'reconnecting';

class PriceStore {
  private prices = new Map<string, LivePrice>();
  private listeners = new Set<() => void>();

  get(market: string): LivePrice | undefined {
    return this.prices.get(market);
  }

  set(price: LivePrice): void {
    this.prices.set(price.market, price);
    for (const listener of this.listeners) listener();
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };
}

interface LiveContextValue {
  store: PriceStore;
  status: LiveStatus;
  watch: (markets: string[]) => () => void;
  onFiring: (listener: (firing: LiveFiring) => void) => () => void;
}

const LiveContext = createContext<LiveContextValue | null>(null);

export function LiveProvider({ token, children }: { token: string | null; children: ReactNode }) {
  const store = useMemo(() => new PriceStore(), []);
  const [status, setStatus] = useState<LiveStatus>('idle');
  const counts = useRef(new Map<string, number>());
  const [marketsKey, setMarketsKey] = useState('');
  const firingListeners = useRef(new Set<(firing: LiveFiring) => void>());
  const pending = useRef<number | null>(null);

  const recompute = useCallback(() => {
    // Batches the registrations of one render into one reconnect.
    if (pending.current !== null) return;
    pending.current = window.setTimeout(() => {
      pending.current = null;
      const key = [...counts.current.entries()]
        .filter(([, count]) => count > 0)
        .map(([market]) => market)
        .sort()
        .slice(0, 50)
        .join(',');
      setMarketsKey(key);
    }, 30);
  }, []);

  const watch = useCallback(
    (markets: string[]) => {
      for (const market of markets) counts.current.set(market, (counts.current.get(market) ?? 0) + 1);
      recompute();
      return () => {
        for (const market of markets) counts.current.set(market, (counts.current.get(market) ?? 1) - 1);
        recompute();
      };
    },
    [recompute],
  );

  const onFiring = useCallback((listener: (firing: LiveFiring) => void) => {
    firingListeners.current.add(listener);
    return () => firingListeners.current.delete(listener);
  }, []);

  useEffect(() => {
    if (!marketsKey && !token) {
      setStatus('idle');
      return;
    }
    const query = new URLSearchParams();
    if (marketsKey) query.set('markets', marketsKey);
    if (token) query.set('access_token', token);
    const source = new EventSource(`/v1/stream?${query}`);
    setStatus('connecting');
    source.onopen = () => setStatus('open');
    source.onerror = () => setStatus(source.readyState === EventSource.CLOSED ? 'idle' : 'reconnecting');
    source.addEventListener('price', (event) => {
      try {
        store.set(JSON.parse((event as MessageEvent<string>).data) as LivePrice);
      } catch {
        // A malformed event is skipped; the next tick replaces it.
      }
    });
    source.addEventListener('firing', (event) => {
      try {
        const firing = JSON.parse((event as MessageEvent<string>).data) as LiveFiring;
        for (const listener of firingListeners.current) listener(firing);
      } catch {
        // As above.
      }
    });
    return () => source.close();
  }, [marketsKey, token, store]);

  const value = useMemo(() => ({ store, status, watch, onFiring }), [store, status, watch, onFiring]);
  return <LiveContext.Provider value={value}>{children}</LiveContext.Provider>;
}

function useLive(): LiveContextValue {
  const live = useContext(LiveContext);
  if (!live) throw new Error('useLive outside LiveProvider');
  return live;
}

/** Watches `markets` while mounted. */
export function useWatchMarkets(markets: string[]): void {
  const { watch } = useLive();
  const key = markets.join(',');
  useEffect(() => watch(key ? key.split(',') : []), [key, watch]);
}

/** The latest live price of `market` (re-renders on each tick of that market only). */
export function useLivePrice(market: string): LivePrice | undefined {
  const { store } = useLive();
  return useSyncExternalStore(store.subscribe, () => store.get(market));
}

export function useLiveStatus(): LiveStatus {
  return useLive().status;
}

/** Calls `listener` for each of the user's firings while mounted. */
export function useFirings(listener: (firing: LiveFiring) => void): void {
  const { onFiring } = useLive();
  const latest = useRef(listener);
  latest.current = listener;
  useEffect(() => onFiring((firing) => latest.current(firing)), [onFiring]);
}
