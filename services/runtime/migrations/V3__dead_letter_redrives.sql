-- Re-drives of dead letters by `coinalarm dlq redrive` (docs/decisions/0011-dead-letter-redrive.md).
--
-- Not a read model: an operator's action is not in any stream, so this table is never rebuilt or
-- swapped by `coinalarm projections rebuild`. One row per original message re-driven at this site,
-- whichever of its dead letters asked (several consumers may each have parked the same message, and
-- one re-publication reaches them all): the primary key is what makes a second re-drive a no-op.
CREATE TABLE dead_letter_redrives (
    -- The site that re-drove it (the site whose consumer parked it) and the original message's
    -- position in that site's aggregate stream.
    site               TEXT        NOT NULL,
    stream             TEXT        NOT NULL,
    stream_sequence    BIGINT      NOT NULL,
    -- The dead letter that was asked to be re-driven (`dead_letters.message_id`) and its consumer.
    dead_letter_id     TEXT        NOT NULL,
    consumer           TEXT        NOT NULL,
    -- `Nats-Msg-Id` of the re-publication: deterministic, so a retry within the stream's duplicate
    -- window is stored once.
    redrive_message_id TEXT        NOT NULL,
    -- Origin subject it was published to.
    subject            TEXT        NOT NULL,
    requested_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Where the re-publication was stored; NULL until the stream acknowledged it.
    published_stream   TEXT,
    published_sequence BIGINT,
    published_at       TIMESTAMPTZ,
    PRIMARY KEY (site, stream, stream_sequence)
);

CREATE INDEX dead_letter_redrives_by_dead_letter ON dead_letter_redrives (dead_letter_id);
