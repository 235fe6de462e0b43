// The markets list: live prices (SSE) of the markets with trades, today's movers, and a search over
// every market of the exchange by code, Korean or English name.

import { useCallback, useEffect, useMemo, useState } from 'react';
import { Change, ErrorBox, Loading, Price, marketName } from '../components/common';
import { Link, navigate, useApp, useErrorText } from '../context';
import { useI18n } from '../i18n';
import { useLivePrice, useWatchMarkets } from '../live';
import type { MarketView } from '../types';

const PAGE = 40;

export function Markets() {
  const { api } = useApp();
  const i18n = useI18n();
  const { t } = i18n;
  const errorText = useErrorText();
  const [markets, setMarkets] = useState<MarketView[] | null>(null);
  const [movers, setMovers] = useState<{ risers: MarketView[]; fallers: MarketView[] } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [query, setQuery] = useState('');
  const [quote, setQuote] = useState('KRW');
  const [shown, setShown] = useState(PAGE);

  const load = useCallback(() => {
    setError(null);
    api.markets().then((answer) => setMarkets(answer.markets)).catch((caught) => setError(errorText(caught)));
    api.movers(5).then(setMovers).catch(() => setMovers(null));
  }, [api, errorText]);
  useEffect(load, [load]);

  const filtered = useMemo(() => {
    if (!markets) return [];
    const needle = query.trim().toLowerCase();
    return markets
      .filter((market) => !quote || market.market.startsWith(`${quote}-`))
      .filter(
        (market) =>
          !needle ||
          market.market.toLowerCase().includes(needle) ||
          market.korean_name.toLowerCase().includes(needle) ||
          market.english_name.toLowerCase().includes(needle),
      )
      // Markets with trades first (they move), then by code.
      .sort((left, right) => Number(!left.quote) - Number(!right.quote) || left.market.localeCompare(right.market));
  }, [markets, query, quote]);

  const visible = filtered.slice(0, shown);
  const liveMarkets = useMemo(
    () => visible.filter((market) => market.quote).map((market) => market.market).slice(0, 50),
    [visible],
  );
  useWatchMarkets(liveMarkets);

  return (
    <main id="main" className="page">
      <h1 className="page-title">{t('markets.title')}</h1>
      {movers && (movers.risers.length > 0 || movers.fallers.length > 0) && (
        <section className="movers" aria-label={`${t('markets.risers')} / ${t('markets.fallers')}`}>
          <MoverList title={t('markets.risers')} markets={movers.risers} />
          <MoverList title={t('markets.fallers')} markets={movers.fallers} />
        </section>
      )}

      <section className="card" aria-labelledby="all-markets">
        <div className="card-header">
          <h2 id="all-markets">{t('markets.all')}</h2>
          <div className="filters">
            <label className="visually-hidden" htmlFor="market-search">
              {t('markets.search')}
            </label>
            <input
              id="market-search"
              type="search"
              placeholder={t('markets.searchPlaceholder')}
              value={query}
              onChange={(event) => {
                setQuery(event.target.value);
                setShown(PAGE);
              }}
            />
            <div className="segmented" role="group" aria-label={t('markets.quoteFilter')}>
              {['KRW', 'BTC', 'USDT'].map((currency) => (
                <button
                  key={currency}
                  type="button"
                  aria-pressed={quote === currency}
                  className={quote === currency ? 'selected' : ''}
                  onClick={() => {
                    setQuote(currency);
                    setShown(PAGE);
                  }}
                >
                  {currency}
                </button>
              ))}
            </div>
          </div>
        </div>
        {error && <ErrorBox message={error} onRetry={load} />}
        {!markets && !error && <Loading />}
        {markets && filtered.length === 0 && <p className="empty">{t('markets.noMatch', { query })}</p>}
        {visible.length > 0 && (
          <table className="market-table">
            <thead>
              <tr>
                <th scope="col">{t('markets.market')}</th>
                <th scope="col" className="numeric">
                  {t('markets.price')}
                </th>
                <th scope="col" className="numeric">
                  {t('markets.change')}
                </th>
              </tr>
            </thead>
            <tbody>
              {visible.map((market) => (
                <MarketRow key={market.market} market={market} name={marketName(market, i18n)} />
              ))}
            </tbody>
          </table>
        )}
        {filtered.length > shown && (
          <button type="button" className="button ghost wide" onClick={() => setShown(shown + PAGE)}>
            {t('markets.showMore')} ({filtered.length - shown})
          </button>
        )}
      </section>
    </main>
  );
}

function MarketRow({ market, name }: { market: MarketView; name: string }) {
  const { t } = useI18n();
  const live = useLivePrice(market.market);
  const price = live?.price ?? market.quote?.price;
  const change = live?.change_percent ?? market.quote?.change_percent;
  const href = `/markets/${market.market}`;
  return (
    <tr className="clickable" onClick={() => navigate(href)} data-market={market.market}>
      <th scope="row">
        <Link to={href} className="market-link" onClick={(event) => event.stopPropagation()}>
          <span className="market-name">{name}</span>
          <span className="market-code">{market.market}</span>
        </Link>
      </th>
      <td className="numeric">
        {price ? <Price value={price} flash /> : <span className="muted">{t('markets.noQuote')}</span>}
      </td>
      <td className="numeric">{change ? <Change percent={change} /> : '–'}</td>
    </tr>
  );
}

function MoverList({ title, markets }: { title: string; markets: MarketView[] }) {
  const i18n = useI18n();
  return (
    <div className="card mover-card">
      <h2>{title}</h2>
      <ol>
        {markets.map((market) => (
          <li key={market.market}>
            <Link to={`/markets/${market.market}`} className="mover">
              <span className="market-name">{marketName(market, i18n)}</span>
              {market.quote && <Change percent={market.quote.change_percent} />}
            </Link>
          </li>
        ))}
      </ol>
    </div>
  );
}
