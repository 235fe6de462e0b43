-- Where each projection stands in each stream. A projection writes its rows and advances its
-- checkpoint in one transaction, and skips events at or below the stored sequence, so redelivery
-- after a crash never applies an event twice (exactly-once effects on at-least-once delivery).
CREATE TABLE projection_checkpoints (
    projection    TEXT        NOT NULL,
    stream        TEXT        NOT NULL,
    -- JetStream stream sequence of the last event applied; sequences start at 1.
    last_sequence BIGINT      NOT NULL CHECK (last_sequence >= 0),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, stream)
);
