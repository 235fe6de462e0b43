// Every SMS the user was sent (or deliberately not sent), newest first, with its text and outcome.

import { useCallback, useEffect, useState } from 'react';
import { ErrorBox, Loading, SmsBadge, skipReasonText } from '../components/common';
import { useApp, useErrorText } from '../context';
import { useI18n } from '../i18n';
import { useFirings } from '../live';
import type { Notification } from '../types';

export function Notifications() {
  const { api, notify } = useApp();
  const i18n = useI18n();
  const { t } = i18n;
  const errorText = useErrorText();
  const [items, setItems] = useState<Notification[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);

  const load = useCallback(() => {
    setError(null);
    api
      .notifications()
      .then((page) => {
        setItems(page.notifications);
        setCursor(page.next_cursor ?? null);
      })
      .catch((caught) => setError(errorText(caught)));
  }, [api, errorText]);
  useEffect(load, [load]);
  // A firing's SMS shows up a moment after the firing itself.
  useFirings(() => window.setTimeout(load, 1500));
  const pending = items?.some((item) => item.status === 'queued');
  useEffect(() => {
    if (!pending) return;
    const timer = window.setTimeout(load, 3000);
    return () => window.clearTimeout(timer);
  }, [pending, items, load]);

  const loadMore = () => {
    if (!cursor) return;
    api
      .notifications(cursor)
      .then((page) => {
        setItems([...(items ?? []), ...page.notifications]);
        setCursor(page.next_cursor ?? null);
      })
      .catch((caught) => notify(errorText(caught), 'error'));
  };

  return (
    <main id="main" className="page">
      <h1 className="page-title">{t('notifications.title')}</h1>
      {error && <ErrorBox message={error} onRetry={load} />}
      {!items && !error && <Loading />}
      {items && items.length === 0 && <p className="empty card">{t('notifications.empty')}</p>}
      <ol className="sms-list">
        {items?.map((item) => (
          <li key={`${item.entry}:${item.id}`} className="card sms" data-testid="notification">
            <div className="row spread">
              <time dateTime={item.at} className="muted small">
                {i18n.dateTime(item.at)}
              </time>
              <SmsBadge status={item.status} />
            </div>
            {item.text && <p className="sms-bubble">{item.text}</p>}
            <div className="muted small">
              {item.phone_masked && t('notifications.to', { phone: item.phone_masked })}
              {item.skip_reason && <> · {skipReasonText(item.skip_reason, i18n)}</>}
              {item.error_code && <> · {item.error_code}</>}
              {item.sent_count > 1 && <> · {t('notifications.sentTwice', { count: item.sent_count })}</>}
            </div>
          </li>
        ))}
      </ol>
      {cursor && (
        <button type="button" className="button ghost wide" onClick={loadMore}>
          {t('notifications.loadMore')}
        </button>
      )}
    </main>
  );
}
