// The user's alerts: filter by status, pause/resume/edit/delete, firings at a glance. Every command
// sends the version the list showed (If-Match); a 409 means it changed elsewhere: the list reloads and
// says so. A live firing refreshes the list.

import { useCallback, useEffect, useState } from 'react';
import { ApiError } from '../api';
import { ErrorBox, Loading, StatusBadge, describeAlert, describeRepeat, formatMoney } from '../components/common';
import { Icon } from '../components/Icon';
import { Link, navigate, useApp, useErrorText } from '../context';
import { useI18n } from '../i18n';
import { useFirings } from '../live';
import type { AlertView } from '../types';

const FILTERS = ['', 'active', 'paused', 'expired'] as const;

export function Alerts() {
  const { api, notify } = useApp();
  const i18n = useI18n();
  const { t } = i18n;
  const errorText = useErrorText();
  const [filter, setFilter] = useState<(typeof FILTERS)[number]>('');
  const [alerts, setAlerts] = useState<AlertView[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState<string | null>(null);

  const load = useCallback(() => {
    setError(null);
    api
      .alerts({ status: filter || undefined })
      .then((page) => {
        setAlerts(page.alerts);
        setCursor(page.next_cursor ?? null);
      })
      .catch((caught) => setError(errorText(caught)));
  }, [api, filter, errorText]);
  useEffect(load, [load]);
  useFirings(load);

  const loadMore = () => {
    if (!cursor) return;
    api
      .alerts({ status: filter || undefined, cursor })
      .then((page) => {
        setAlerts([...(alerts ?? []), ...page.alerts]);
        setCursor(page.next_cursor ?? null);
      })
      .catch((caught) => notify(errorText(caught), 'error'));
  };

  const command = async (alert: AlertView, action: 'pause' | 'resume' | 'delete') => {
    if (action === 'delete' && !window.confirm(t('alerts.confirmDelete'))) return;
    setBusy(alert.alert_id);
    // Optimistic: the list shows the outcome at once and is put back if the API refuses.
    const before = alerts;
    if (action === 'delete') setAlerts((alerts ?? []).filter((each) => each.alert_id !== alert.alert_id));
    else setAlerts((alerts ?? []).map((each) => (each.alert_id === alert.alert_id ? { ...each, status: action === 'pause' ? 'paused' : 'active' } : each)));
    try {
      if (action === 'pause') {
        const updated = await api.pauseAlert(alert.alert_id, alert.version);
        replace(updated);
        notify(t('alerts.paused'), 'success');
      } else if (action === 'resume') {
        const updated = await api.resumeAlert(alert.alert_id, alert.version);
        replace(updated);
        notify(t('alerts.resumed'), 'success');
      } else {
        await api.deleteAlert(alert.alert_id, alert.version);
        notify(t('alerts.deleted'), 'success');
      }
    } catch (caught) {
      setAlerts(before);
      notify(errorText(caught), 'error');
      if (caught instanceof ApiError && (caught.code === 'version_conflict' || caught.code === 'alert_not_found')) load();
    } finally {
      setBusy(null);
    }
  };

  const replace = (updated: AlertView) =>
    setAlerts((current) =>
      (current ?? []).map((each) =>
        each.alert_id === updated.alert_id ? { ...updated, firings: updated.firings ?? each.firings } : each,
      ),
    );

  return (
    <main id="main" className="page">
      <div className="row spread">
        <h1 className="page-title">{t('alerts.title')}</h1>
        <Link to="/alerts/new" className="button primary">
          + {t('alerts.new')}
        </Link>
      </div>
      <div className="segmented filter-bar" role="group" aria-label={t('alerts.title')}>
        {FILTERS.map((value) => (
          <button key={value || 'all'} type="button" aria-pressed={filter === value} className={filter === value ? 'selected' : ''} onClick={() => setFilter(value)}>
            {t(`alerts.filter.${value || 'all'}`)}
          </button>
        ))}
      </div>
      {error && <ErrorBox message={error} onRetry={load} />}
      {!alerts && !error && <Loading />}
      {alerts && alerts.length === 0 && <p className="empty card">{t('alerts.empty')}</p>}
      <ul className="alert-list">
        {alerts?.map((alert) => (
          <li key={alert.alert_id} className={`card alert-card status-${alert.status}`} data-alert-id={alert.alert_id}>
            <div className="row spread">
              <span className="kind-label">{t(`condition.${alert.condition.kind}`)}</span>
              <StatusBadge status={alert.status} />
            </div>
            <Link to={`/alerts/${alert.alert_id}`} className="alert-title">
              {describeAlert(alert, i18n)}
            </Link>
            <div className="muted small">
              {describeRepeat(alert, i18n)}
              {alert.expires_at && <> · {t('alerts.expires', { time: i18n.dateTime(alert.expires_at) })}</>}
            </div>
            <div className="small firing-summary" data-testid="firing-summary">
              {alert.firings && alert.firings.count > 0 ? (
                <>
                  <Icon name="bell" size={14} /> {t('alerts.fired', { count: alert.firings.count })}
                  {alert.firings.last_fired_at && alert.firings.last_price && (
                    <>
                      {' '}
                      ·{' '}
                      {t('alerts.lastFired', {
                        time: i18n.dateTime(alert.firings.last_fired_at),
                        price: formatMoney(
                          alert.firings.last_price,
                          alert.condition.kind === 'scheduled' ? alert.condition.markets[0] ?? '' : alert.condition.market,
                          i18n.locale,
                        ),
                      })}
                    </>
                  )}
                </>
              ) : (
                <span className="muted">{t('alerts.neverFired')}</span>
              )}
            </div>
            <div className="actions">
              {alert.status === 'paused' ? (
                <button type="button" className="button small" disabled={busy === alert.alert_id} onClick={() => void command(alert, 'resume')}>
                  {t('alerts.resume')}
                </button>
              ) : (
                <button type="button" className="button small" disabled={busy === alert.alert_id || alert.status === 'expired'} onClick={() => void command(alert, 'pause')}>
                  {t('alerts.pause')}
                </button>
              )}
              <button type="button" className="button small" onClick={() => navigate(`/alerts/${alert.alert_id}/edit`)}>
                {t('alerts.edit')}
              </button>
              <button type="button" className="button small" onClick={() => navigate(`/alerts/${alert.alert_id}`)}>
                {t('alerts.history')}
              </button>
              <button type="button" className="button small danger" disabled={busy === alert.alert_id} onClick={() => void command(alert, 'delete')}>
                {t('alerts.delete')}
              </button>
            </div>
          </li>
        ))}
      </ul>
      {cursor && (
        <button type="button" className="button ghost wide" onClick={loadMore}>
          {t('alerts.loadMore')}
        </button>
      )}
    </main>
  );
}
