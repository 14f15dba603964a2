-- projector's own bookkeeping in the staging PostgreSQL: how far each read
-- model's PostgreSQL sink has written, per source partition. Updated in the
-- same transaction as the rows it covers.
CREATE SCHEMA IF NOT EXISTS projector;

CREATE TABLE IF NOT EXISTS projector.progress (
    read_model  text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (read_model, topic, partition)
);
