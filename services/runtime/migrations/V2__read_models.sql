-- Read models projected from the streams by the projector (services/projector), read by the API.
--
-- Every table here is derived: dropping it and replaying the streams gives it back. Names are never
-- schema-qualified, so the same migration builds a second copy in another schema for a rebuild
-- (`SET search_path TO <schema>`). Money, prices, rates and volumes are NUMERIC, never float.
-- Each projection writes its rows and its `projection_checkpoints` row in one transaction.

-- ---------------------------------------------------------------------------------------------------
-- Aggregate commands (users, alerts), one row per event as it reached this site's aggregate stream.
--
-- Kept so that an aggregate's current row can be recomputed from all its events whatever order they
-- arrived in, with the cross-site merge rule of DESIGN.md §4: when both sites wrote the same version
-- during a partition, the later event time wins, then the greater site name ('onprem' > 'cloud'). The
-- losers keep their row with `superseded_by` set: that is the cross-site conflict trace shows.
CREATE TABLE aggregate_events (
    aggregate       TEXT        NOT NULL CHECK (aggregate IN ('user', 'alert')),
    aggregate_id    TEXT        NOT NULL,
    version         BIGINT      NOT NULL CHECK (version >= 1),
    message_id      TEXT        NOT NULL,
    event_type      TEXT        NOT NULL,
    origin_site     TEXT        NOT NULL,
    event_time      TIMESTAMPTZ NOT NULL,
    -- Position in this site's aggregate stream (USERS / ALERTS).
    stream_sequence BIGINT      NOT NULL,
    -- Where the event was first stored: the origin stream it was published to and its sequence there
    -- (from the `Nats-Stream-Source` header the aggregate adds). The home origin's sequence is what
    -- `Nats-Expected-Last-Subject-Sequence` compares against.
    origin_stream   TEXT,
    origin_sequence BIGINT,
    -- The envelope as published, for alerts (re-decoded, upcasters included, on every recompute).
    -- NULL for users: `user.registered` carries the clear phone number, which read models never hold.
    body            JSONB,
    -- Message id of the command that won this version of the aggregate; NULL for winners.
    superseded_by   TEXT,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate, aggregate_id, message_id)
);

CREATE INDEX aggregate_events_by_version ON aggregate_events (aggregate, aggregate_id, version);

-- Cross-site conflicts: one row per losing command, next to the command that won.
CREATE VIEW aggregate_conflicts AS
SELECT loser.aggregate,
       loser.aggregate_id,
       loser.version,
       winner.message_id  AS winner_message_id,
       winner.event_type  AS winner_event_type,
       winner.origin_site AS winner_site,
       winner.event_time  AS winner_time,
       loser.message_id   AS loser_message_id,
       loser.event_type   AS loser_event_type,
       loser.origin_site  AS loser_site,
       loser.event_time   AS loser_time,
       loser.recorded_at  AS detected_at
FROM aggregate_events loser
JOIN aggregate_events winner
  ON winner.aggregate = loser.aggregate
 AND winner.aggregate_id = loser.aggregate_id
 AND winner.message_id = loser.superseded_by;

-- ---------------------------------------------------------------------------------------------------
-- Users and their preferences. No clear phone number: the API finds a user by the keyed phone hash
-- it computes from the number being signed in, and shows the masked form.
CREATE TABLE users (
    user_id            TEXT        PRIMARY KEY,
    -- NULL until `user.registered` has arrived (a preferences change can overtake it across sites).
    phone_hash         TEXT,
    phone_masked       TEXT,
    home_site          TEXT,
    registered_at      TIMESTAMPTZ,
    locale             TEXT        NOT NULL DEFAULT 'ko' CHECK (locale IN ('ko', 'en')),
    time_zone          TEXT        NOT NULL DEFAULT 'Asia/Seoul',
    quiet_hours_start  TIME,
    quiet_hours_end    TIME,
    -- NULL: the deployment's default cap.
    daily_sms_cap      INTEGER     CHECK (daily_sms_cap > 0),
    -- Merge key of the preferences shown: (version, time, site) of the winning command.
    preferences_version BIGINT     NOT NULL DEFAULT 0,
    preferences_time   TIMESTAMPTZ,
    preferences_site   TEXT,
    -- Highest aggregate version seen.
    version            BIGINT      NOT NULL DEFAULT 0,
    -- Last sequence of `users.<id>` in the home site's origin stream (for optimistic concurrency).
    subject_sequence   BIGINT,
    -- Last position of this user's events in the local USERS aggregate.
    stream_sequence    BIGINT      NOT NULL,
    -- Commands that lost a cross-site conflict.
    conflicts          INTEGER     NOT NULL DEFAULT 0,
    updated_at         TIMESTAMPTZ NOT NULL,
    CHECK ((quiet_hours_start IS NULL) = (quiet_hours_end IS NULL))
);

-- Sign-in looks users up by phone hash. Not unique: two sites may each register the same number during
-- a partition (two user ids); the API picks the earliest registration.
CREATE INDEX users_by_phone_hash ON users (phone_hash, registered_at, user_id);

-- ---------------------------------------------------------------------------------------------------
-- Alerts: current state, recomputed from `aggregate_events` by the merge rule.
CREATE TABLE alerts (
    alert_id          TEXT        PRIMARY KEY,
    user_id           TEXT        NOT NULL,
    home_site         TEXT        NOT NULL,
    kind              TEXT        NOT NULL CHECK (kind IN ('target_price', 'change_rate', 'scheduled')),
    exchange          TEXT        NOT NULL,
    -- One market for price and change-rate alerts, 1 to 10 for scheduled ones.
    markets           TEXT[]      NOT NULL,
    -- The condition exactly as in the event (`spec.condition`, tagged by `kind`).
    condition         JSONB       NOT NULL,
    -- Typed copies of the condition's main parameters, NULL where the kind has none.
    target_price      NUMERIC,
    direction         TEXT        CHECK (direction IN ('up', 'down', 'either')),
    change_basis      TEXT,
    change_threshold  NUMERIC,
    repeat_mode       TEXT        NOT NULL CHECK (repeat_mode IN ('once', 'repeat')),
    cooldown_seconds  INTEGER     CHECK (cooldown_seconds > 0),
    expires_at        TIMESTAMPTZ,
    -- `expired` is not stored: it depends on the clock; see the `alerts_current` view.
    status            TEXT        NOT NULL CHECK (status IN ('active', 'paused', 'deleted')),
    -- Aggregate version of the state shown (the `version` the next command must build on).
    version           BIGINT      NOT NULL CHECK (version >= 1),
    -- Last sequence of `alerts.<id>` in the home site's origin stream: the value a command sends as
    -- `Nats-Expected-Last-Subject-Sequence`, and what a read can wait for after a write.
    subject_sequence  BIGINT,
    -- Last position of this alert's events in the local ALERTS aggregate.
    stream_sequence   BIGINT      NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    deleted_at        TIMESTAMPTZ,
    -- Commands that lost a cross-site conflict (details in `aggregate_conflicts`).
    conflicts         INTEGER     NOT NULL DEFAULT 0,
    -- Message id of the last command applied.
    last_message_id   TEXT        NOT NULL
);

-- A user's alerts, newest first, and the per-user alert cap (count of non-deleted ones).
CREATE INDEX alerts_by_user ON alerts (user_id, created_at DESC, alert_id);

-- ---------------------------------------------------------------------------------------------------
-- Triggers (alert firings).
CREATE TABLE triggers (
    trigger_id      TEXT        PRIMARY KEY,
    alert_id        TEXT        NOT NULL,
    user_id         TEXT        NOT NULL,
    alert_version   BIGINT      NOT NULL,
    home_site       TEXT        NOT NULL,
    kind            TEXT        NOT NULL,
    -- Arming generation (price and change-rate alerts) or scheduled occurrence.
    generation      BIGINT,
    occurrence      TIMESTAMPTZ,
    exchange        TEXT        NOT NULL,
    -- The first observed market and its price (the only one for price and change-rate alerts);
    -- every market is in `trigger_prices`.
    market          TEXT,
    price           NUMERIC,
    change_percent  NUMERIC,
    -- The tick that caused it (message id, and its position in the firing site's TICKS aggregate).
    tick_id         TEXT,
    tick_stream     TEXT,
    tick_sequence   BIGINT,
    tick_site       TEXT,
    -- When the matcher decided.
    fired_at        TIMESTAMPTZ NOT NULL,
    -- Site whose copy reached this aggregate first (both matchers compute the same trigger).
    origin_site     TEXT        NOT NULL,
    correlation_id  TEXT        NOT NULL,
    stream_sequence BIGINT      NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX triggers_by_alert ON triggers (alert_id, fired_at DESC, trigger_id);
CREATE INDEX triggers_by_user ON triggers (user_id, fired_at DESC, trigger_id);

CREATE TABLE trigger_prices (
    trigger_id      TEXT        NOT NULL,
    position        INTEGER     NOT NULL,
    market          TEXT        NOT NULL,
    price           NUMERIC     NOT NULL,
    change_percent  NUMERIC,
    tick_id         TEXT,
    tick_stream     TEXT,
    tick_sequence   BIGINT,
    tick_site       TEXT,
    PRIMARY KEY (trigger_id, position)
);

-- Per alert: how often and when it last fired (recomputed from `triggers`).
CREATE TABLE alert_trigger_stats (
    alert_id              TEXT        PRIMARY KEY,
    trigger_count         BIGINT      NOT NULL,
    last_trigger_id       TEXT        NOT NULL,
    last_triggered_at     TIMESTAMPTZ NOT NULL,
    last_price            NUMERIC,
    last_alert_version    BIGINT      NOT NULL
);

-- ---------------------------------------------------------------------------------------------------
-- SMS dispatches, their status timeline, and triggers deliberately not sent.
CREATE TABLE dispatches (
    dispatch_id         TEXT        PRIMARY KEY,
    -- NULL until `dispatch.requested` arrives (an outcome can overtake it across sites).
    purpose             TEXT        CHECK (purpose IN ('alert', 'sign_in')),
    user_id             TEXT,
    -- Sign-in dispatches have no user yet, only the phone hash.
    phone_hash          TEXT,
    phone_masked        TEXT,
    priority            TEXT        CHECK (priority IN ('sign_in', 'alert', 'scheduled')),
    owning_site         TEXT,
    -- The SMS text of alert dispatches; never a sign-in code (those are sealed and not kept).
    body_text           TEXT,
    requested_at        TIMESTAMPTZ,
    expires_at          TIMESTAMPTZ,
    correlation_id      TEXT,
    -- Current status: the most advanced entry of the timeline (see `dispatch_timeline.rank`).
    status              TEXT        NOT NULL,
    status_at           TIMESTAMPTZ NOT NULL,
    status_site         TEXT        NOT NULL,
    attempts            INTEGER     NOT NULL DEFAULT 0,
    -- Provider acceptances; more than one means the SMS went out twice (e.g. both sites sent it).
    sent_count          INTEGER     NOT NULL DEFAULT 0,
    provider            TEXT,
    provider_message_id TEXT,
    last_error_code     TEXT,
    last_error_message  TEXT,
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A user's notification history, newest first, paginated by (requested_at, dispatch_id).
CREATE INDEX dispatches_by_user ON dispatches (user_id, requested_at DESC, dispatch_id);

CREATE TABLE dispatch_triggers (
    dispatch_id TEXT NOT NULL,
    trigger_id  TEXT NOT NULL,
    PRIMARY KEY (dispatch_id, trigger_id)
);

CREATE INDEX dispatch_triggers_by_trigger ON dispatch_triggers (trigger_id);

CREATE TABLE dispatch_timeline (
    message_id          TEXT        PRIMARY KEY,
    dispatch_id         TEXT        NOT NULL,
    status              TEXT        NOT NULL CHECK (status IN (
                            'requested', 'claimed', 'sent', 'failed', 'delivered', 'undelivered',
                            'dead_lettered')),
    -- Orders the statuses of one dispatch: later attempts above earlier ones, within an attempt
    -- claimed < failed < sent, and the final words (dead_lettered < undelivered < delivered) above all.
    rank                BIGINT      NOT NULL,
    attempt             INTEGER,
    site                TEXT        NOT NULL,
    at                  TIMESTAMPTZ NOT NULL,
    provider            TEXT,
    provider_message_id TEXT,
    error_code          TEXT,
    error_message       TEXT,
    retryable           BOOLEAN,
    -- Provider status word, dead-letter reason, retry time: what does not fit a column.
    detail              JSONB,
    correlation_id      TEXT        NOT NULL,
    stream_sequence     BIGINT      NOT NULL,
    recorded_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX dispatch_timeline_by_dispatch ON dispatch_timeline (dispatch_id, at, message_id);

CREATE TABLE dispatch_skips (
    trigger_id      TEXT        PRIMARY KEY,
    alert_id        TEXT        NOT NULL,
    user_id         TEXT        NOT NULL,
    -- quiet_hours, user_cap, stale, coalesced, alert_deleted, alert_paused, unknown_user
    reason_code     TEXT        NOT NULL,
    -- The reason as in the event (cap, age, target dispatch).
    reason          JSONB       NOT NULL,
    coalesced_into  TEXT,
    skipped_at      TIMESTAMPTZ NOT NULL,
    origin_site     TEXT        NOT NULL,
    correlation_id  TEXT        NOT NULL,
    stream_sequence BIGINT      NOT NULL
);

CREATE INDEX dispatch_skips_by_user ON dispatch_skips (user_id, skipped_at DESC, trigger_id);
CREATE INDEX dispatch_skips_by_alert ON dispatch_skips (alert_id);

-- ---------------------------------------------------------------------------------------------------
-- Markets: the latest trade per market (by trade time, then exchange sequence).
CREATE TABLE markets (
    exchange             TEXT        NOT NULL,
    market               TEXT        NOT NULL,
    korean_name          TEXT,
    english_name         TEXT,
    trade_price          NUMERIC     NOT NULL,
    -- Change since the exchange's daily reference, as a fraction (0.0123 = +1.23 %).
    change_rate          NUMERIC     NOT NULL,
    change_price         NUMERIC     NOT NULL,
    acc_trade_volume_24h NUMERIC,
    trade_at             TIMESTAMPTZ NOT NULL,
    sequential_id        BIGINT      NOT NULL,
    tick_id              TEXT        NOT NULL,
    stream_sequence      BIGINT      NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (exchange, market)
);

-- Top risers and fallers.
CREATE INDEX markets_by_change_rate ON markets (exchange, change_rate);

-- One-minute candles from the ticks. Open and close are the first and last trades by trade time (then
-- exchange sequence), whatever order ticks are projected in; high and low are extremes, so re-applying
-- a tick changes none of them. Volume and tick count are sums.
CREATE TABLE candles_1m (
    exchange            TEXT        NOT NULL,
    market              TEXT        NOT NULL,
    -- Start of the minute, UTC.
    minute              TIMESTAMPTZ NOT NULL,
    open                NUMERIC     NOT NULL,
    high                NUMERIC     NOT NULL,
    low                 NUMERIC     NOT NULL,
    close               NUMERIC     NOT NULL,
    -- Sum of the trades' volumes where the exchange reported them.
    volume              NUMERIC     NOT NULL,
    ticks               BIGINT      NOT NULL,
    open_at             TIMESTAMPTZ NOT NULL,
    open_sequential_id  BIGINT      NOT NULL,
    close_at            TIMESTAMPTZ NOT NULL,
    close_sequential_id BIGINT      NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (exchange, market, minute)
);

-- ---------------------------------------------------------------------------------------------------
-- Dead letters (`coinalarm dlq list`).
CREATE TABLE dead_letters (
    -- dlq:<stream>:<stream_sequence>:<consumer>
    message_id          TEXT        PRIMARY KEY,
    stream              TEXT        NOT NULL,
    consumer            TEXT        NOT NULL,
    stream_sequence     BIGINT      NOT NULL,
    subject             TEXT        NOT NULL,
    -- The parked message's own `Nats-Msg-Id` and event type headers, when it had them.
    original_message_id TEXT,
    event_type          TEXT,
    reason_code         TEXT        NOT NULL,
    reason              TEXT        NOT NULL,
    deliveries          BIGINT      NOT NULL,
    parked_at           TIMESTAMPTZ NOT NULL,
    origin_site         TEXT        NOT NULL,
    headers             JSONB       NOT NULL,
    payload_encoding    TEXT        NOT NULL CHECK (payload_encoding IN ('utf8', 'base64')),
    payload             TEXT        NOT NULL,
    -- Position in this site's DEADLETTER aggregate, to fetch the original for a re-drive.
    deadletter_sequence BIGINT      NOT NULL,
    recorded_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX dead_letters_recent ON dead_letters (parked_at DESC, message_id);
CREATE INDEX dead_letters_by_source ON dead_letters (stream, consumer, parked_at DESC);

-- ---------------------------------------------------------------------------------------------------
-- Views for the API's reads.

-- Alerts with their clock-dependent status and firing summary.
CREATE VIEW alerts_current AS
SELECT a.*,
       CASE WHEN a.status = 'active' AND a.expires_at IS NOT NULL AND a.expires_at <= now()
            THEN 'expired' ELSE a.status END AS effective_status,
       COALESCE(s.trigger_count, 0) AS trigger_count,
       s.last_trigger_id,
       s.last_triggered_at,
       s.last_price,
       s.last_alert_version
FROM alerts a
LEFT JOIN alert_trigger_stats s ON s.alert_id = a.alert_id;

-- An alert's history: each firing with what happened to its SMS (a dispatch status, or why none was
-- sent). A trigger coalesced into a dispatch shows that dispatch.
CREATE VIEW alert_history AS
SELECT t.alert_id,
       t.user_id,
       t.trigger_id,
       t.fired_at,
       t.kind,
       t.market,
       t.price,
       t.change_percent,
       t.alert_version,
       d.dispatch_id,
       d.status        AS sms_status,
       d.status_at     AS sms_status_at,
       d.last_error_code AS sms_error_code,
       d.sent_count    AS sms_sent_count,
       s.reason_code   AS skip_reason,
       s.reason        AS skip_detail
FROM triggers t
LEFT JOIN dispatch_triggers dt ON dt.trigger_id = t.trigger_id
LEFT JOIN dispatches d ON d.dispatch_id = dt.dispatch_id
LEFT JOIN dispatch_skips s ON s.trigger_id = t.trigger_id;

-- A user's notifications, newest first: every alert SMS, and every firing that was deliberately not
-- sent (coalesced ones excluded: their SMS is listed). Page by (at, id) with the user_id filter; both
-- branches use their `(user_id, time DESC, id)` index.
CREATE VIEW notification_history AS
SELECT d.user_id,
       'sms'::TEXT         AS entry,
       d.dispatch_id       AS id,
       d.requested_at      AS at,
       d.status,
       d.status_at,
       d.body_text,
       d.phone_masked,
       d.sent_count,
       d.last_error_code   AS error_code,
       NULL::TEXT          AS skip_reason,
       d.dispatch_id,
       NULL::TEXT          AS trigger_id
FROM dispatches d
WHERE d.purpose = 'alert'
UNION ALL
SELECT s.user_id,
       'skipped'::TEXT     AS entry,
       s.trigger_id        AS id,
       s.skipped_at        AS at,
       'skipped'::TEXT     AS status,
       s.skipped_at        AS status_at,
       NULL::TEXT          AS body_text,
       NULL::TEXT          AS phone_masked,
       0                   AS sent_count,
       NULL::TEXT          AS error_code,
       s.reason_code       AS skip_reason,
       NULL::TEXT          AS dispatch_id,
       s.trigger_id
FROM dispatch_skips s
WHERE s.reason_code <> 'coalesced';
