// One market: its live price and change, a live 1-minute candle chart with the user's targets drawn
// on it, the user's alerts on it, and "create alert here".

import { useCallback, useEffect, useMemo, useState } from 'react';
import { CandleChart } from '../components/CandleChart';
import { Icon } from '../components/Icon';
import {
  Change,
  ErrorBox,
  Loading,
  Price,
  StatusBadge,
  describeAlert,
  formatMoney,
  marketName,
  quoteCurrency,
} from '../components/common';
import { Link, useApp, useErrorText } from '../context';
import { useI18n } from '../i18n';
import { formatPrice } from '../lib/decimal';
import { useFirings, useLivePrice, useWatchMarkets } from '../live';
import type { AlertView, Candle, MarketView } from '../types';

export function MarketPage({ code }: { code: string }) {
  const { api } = useApp();
  const i18n = useI18n();
  const { t } = i18n;
  const errorText = useErrorText();
  const [market, setMarket] = useState<MarketView | null>(null);
  const [candles, setCandles] = useState<Candle[]>([]);
  const [alerts, setAlerts] = useState<AlertView[]>([]);
  const [error, setError] = useState<string | null>(null);
  useWatchMarkets(useMemo(() => [code], [code]));
  const live = useLivePrice(code);

  const loadAlerts = useCallback(() => {
    api
      .alerts()
      .then((page) =>
        setAlerts(
          page.alerts.filter((alert) =>
            alert.condition.kind === 'scheduled' ? alert.condition.markets.includes(code) : alert.condition.market === code,
          ),
        ),
      )
      .catch(() => setAlerts([]));
  }, [api, code]);

  const load = useCallback(() => {
    setError(null);
    api.market(code).then(setMarket).catch((caught) => setError(errorText(caught)));
    api.candles(code, 120).then((series) => setCandles(series.candles)).catch(() => setCandles([]));
    loadAlerts();
  }, [api, code, errorText, loadAlerts]);
  useEffect(load, [load]);
  useFirings(loadAlerts);

  const lines = useMemo(
    () =>
      alerts
        .filter((alert) => alert.status === 'active' && alert.condition.kind === 'target_price')
        .map((alert) => ({
          price: alert.condition.kind === 'target_price' ? alert.condition.target : '0',
          title: t('condition.target_price'),
        })),
    [alerts, t],
  );

  if (error) return <main id="main" className="page"><ErrorBox message={error} onRetry={load} /></main>;
  if (!market) return <main id="main" className="page"><Loading /></main>;

  const price = live?.price ?? market.quote?.price;
  const change = live?.change_percent ?? market.quote?.change_percent;
  const tradedAt = live?.traded_at ?? market.quote?.traded_at;

  return (
    <main id="main" className="page">
      <nav className="breadcrumb">
        <Link to="/">← {t('market.back')}</Link>
      </nav>
      <header className="market-header">
        <div>
          <h1>
            {marketName(market, i18n)} <span className="market-code">{market.market}</span>
          </h1>
          <div className="quote-line" aria-live="polite">
            {price ? (
              <>
                <Price value={price} flash className="big" testId="live-price" />
                <span className="currency">{quoteCurrency(market.market)}</span>
                {change && <Change percent={change} className="big-change" />}
              </>
            ) : (
              <span className="muted">{t('markets.noQuote')}</span>
            )}
          </div>
          {tradedAt && <div className="muted small">{t('market.lastTrade', { time: i18n.time(tradedAt) })}</div>}
          {market.quote?.volume_24h && (
            <div className="muted small">
              {t('market.volume')} {formatPrice(market.quote.volume_24h)}
            </div>
          )}
        </div>
        <Link to={`/alerts/new?market=${encodeURIComponent(market.market)}`} className="button primary">
          <Icon name="bell" size={18} /> {t('market.createAlert')}
        </Link>
      </header>

      <section className="card chart-card" aria-labelledby="chart-title">
        <h2 id="chart-title">{t('market.chart')}</h2>
        <CandleChart
          candles={candles}
          live={live}
          lines={lines}
          timeZone={i18n.timeZone}
          locale={i18n.locale}
          label={`${market.market} ${t('market.chart')}`}
        />
        {candles.length === 0 && !live && <p className="empty">{t('market.noCandles')}</p>}
      </section>

      {alerts.length > 0 && (
        <section className="card" aria-labelledby="market-alerts">
          <h2 id="market-alerts">{t('market.yourAlerts')}</h2>
          <ul className="plain-list">
            {alerts.map((alert) => (
              <li key={alert.alert_id} className="row spread">
                <Link to={`/alerts/${alert.alert_id}`}>{describeAlert(alert, i18n)}</Link>
                <span className="row">
                  {alert.firings && alert.firings.count > 0 && alert.firings.last_price && (
                    <span className="muted small">
                      {t('alerts.fired', { count: alert.firings.count })} ·{' '}
                      {formatMoney(alert.firings.last_price, market.market, i18n.locale)}
                    </span>
                  )}
                  <StatusBadge status={alert.status} />
                </span>
              </li>
            ))}
          </ul>
        </section>
      )}
    </main>
  );
}
