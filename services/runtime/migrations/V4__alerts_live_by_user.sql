-- The API's per-user alert cap counts a user's live alerts on every create (up to the cap). Through
-- `alerts_by_user` that count fetched each row from the heap to test its status (2.4 ms for 400
-- alerts under load); this partial index answers it from the index alone (0.2 ms).
CREATE INDEX alerts_live_by_user ON alerts (user_id) WHERE status <> 'deleted';
