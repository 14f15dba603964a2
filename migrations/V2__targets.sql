-- The version catalog: which physical targets (an Elasticsearch index, a
-- PostgreSQL or BigQuery table) hold each version of a read model's logical
-- target (the alias or table name readers use), and which one readers see.
-- Shared by every instance of the read model; transitions take a row lock.
CREATE TABLE IF NOT EXISTS projector.targets (
    read_model  text        NOT NULL,
    sink        text        NOT NULL,
    logical     text        NOT NULL,
    version     integer     NOT NULL CHECK (version > 0),
    physical    text        NOT NULL,
    state       text        NOT NULL CHECK (state IN ('current', 'building', 'previous')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    swapped_at  timestamptz,
    PRIMARY KEY (read_model, sink, logical, version)
);

-- At most one version in each state per logical target.
CREATE UNIQUE INDEX IF NOT EXISTS targets_one_current
    ON projector.targets (read_model, sink, logical) WHERE state = 'current';
CREATE UNIQUE INDEX IF NOT EXISTS targets_one_building
    ON projector.targets (read_model, sink, logical) WHERE state = 'building';
CREATE UNIQUE INDEX IF NOT EXISTS targets_one_previous
    ON projector.targets (read_model, sink, logical) WHERE state = 'previous';

-- What each running instance (member) has seen of the catalog: `epoch` is
-- the newest transition (created_at or swapped_at, in ms) it has read, so a
-- rebuild can wait until every live member writes the new version.
CREATE TABLE IF NOT EXISTS projector.members (
    read_model  text        NOT NULL,
    sink        text        NOT NULL,
    member      text        NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now(),
    epoch       bigint      NOT NULL,
    PRIMARY KEY (read_model, sink, member)
);
