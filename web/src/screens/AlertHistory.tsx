// One alert and its history: every firing with its prices and what happened to its SMS (queued,
// sent, delivered, failed with the provider's code, or deliberately not sent and why). Refreshes on a
// live firing of this alert, and while an SMS is still on its way.

import { useCallback, useEffect, useState } from 'react';
import { ErrorBox, Loading, SmsBadge, StatusBadge, describeAlert, describeRepeat, formatMoney, skipReasonText } from '../components/common';
import { Icon } from '../components/Icon';
import { Link, useApp, useErrorText } from '../context';
import { useI18n } from '../i18n';
import { formatPercent } from '../lib/decimal';
import { useFirings } from '../live';
import type { AlertView, Firing } from '../types';

export function AlertHistory({ alertId }: { alertId: string }) {
  const { api, notify } = useApp();
  const i18n = useI18n();
  const { t } = i18n;
  const errorText = useErrorText();
  const [alert, setAlert] = useState<AlertView | null>(null);
  const [firings, setFirings] = useState<Firing[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);

  const load = useCallback(() => {
    setError(null);
    Promise.all([api.alert(alertId), api.history(alertId)])
      .then(([loaded, page]) => {
        setAlert(loaded);
        setFirings(page.firings);
        setCursor(page.next_cursor ?? null);
      })
      .catch((caught) => setError(errorText(caught)));
  }, [api, alertId, errorText]);
  useEffect(load, [load]);
  useFirings((firing) => {
    if (firing.alert_id === alertId) load();
  });

  // An SMS still queued or just sent: its outcome arrives within seconds; look again until it has.
  const pending = firings?.some((firing) => !firing.sms || firing.sms.status === 'queued');
  useEffect(() => {
    if (!pending) return;
    const timer = window.setTimeout(load, 3000);
    return () => window.clearTimeout(timer);
  }, [pending, firings, load]);

  const loadMore = () => {
    if (!cursor) return;
    api
      .history(alertId, cursor)
      .then((page) => {
        setFirings([...(firings ?? []), ...page.firings]);
        setCursor(page.next_cursor ?? null);
      })
      .catch((caught) => notify(errorText(caught), 'error'));
  };

  if (error) return <main id="main" className="page"><ErrorBox message={error} onRetry={load} /></main>;
  if (!alert || !firings) return <main id="main" className="page"><Loading /></main>;

  return (
    <main id="main" className="page">
      <nav className="breadcrumb">
        <Link to="/alerts">← {t('alerts.title')}</Link>
      </nav>
      <section className="card">
        <div className="row spread">
          <span className="kind-label">{t(`condition.${alert.condition.kind}`)}</span>
          <StatusBadge status={alert.status} />
        </div>
        <h1 className="alert-title">{describeAlert(alert, i18n)}</h1>
        <div className="muted small">{describeRepeat(alert, i18n)}</div>
        <div className="actions">
          <Link to={`/alerts/${alert.alert_id}/edit`} className="button small">
            {t('alerts.edit')}
          </Link>
          {alert.condition.kind !== 'scheduled' && (
            <Link to={`/markets/${alert.condition.market}`} className="button small">
              <Icon name="chart" size={16} /> {alert.condition.market}
            </Link>
          )}
        </div>
      </section>

      <section className="card" aria-labelledby="history-title">
        <h2 id="history-title">{t('history.title')}</h2>
        {firings.length === 0 ? (
          <p className="empty">{t('history.empty')}</p>
        ) : (
          <ol className="timeline">
            {firings.map((firing) => (
              <li key={firing.trigger_id} className="timeline-item" data-testid="firing">
                <div className="row spread">
                  <time dateTime={firing.fired_at}>{i18n.dateTime(firing.fired_at)}</time>
                  {firing.sms ? <SmsBadge status={firing.sms.status} /> : <span className="badge sms-queued">{t('sms.queued')}</span>}
                </div>
                <div className="firing-prices">
                  {firing.prices.map((price) => (
                    <span key={price.market} className="firing-price">
                      <span className="market-code">{price.market}</span> <strong>{formatMoney(price.price, price.market, i18n.locale)}</strong>
                      {price.change_percent && <span className="muted"> ({formatPercent(price.change_percent)})</span>}
                    </span>
                  ))}
                </div>
                {firing.sms && (
                  <div className="muted small">
                    {firing.sms.status_at && <>{i18n.dateTime(firing.sms.status_at)} · </>}
                    {firing.sms.skip_reason && skipReasonText(firing.sms.skip_reason, i18n)}
                    {firing.sms.error_code && <>{firing.sms.error_code} {firing.sms.error_message ?? ''}</>}
                    {firing.sms.sent_count > 1 && <> · {t('notifications.sentTwice', { count: firing.sms.sent_count })}</>}
                    <span className="version"> {t('history.version', { version: firing.alert_version })}</span>
                  </div>
                )}
              </li>
            ))}
          </ol>
        )}
        {cursor && (
          <button type="button" className="button ghost wide" onClick={loadMore}>
            {t('history.loadMore')}
          </button>
        )}
      </section>
    </main>
  );
}
