-- Rebuild jobs (src/rebuild/): one row per rebuild of a physical target from
-- a mirror table, and its key space split into ranges that workers lease.
-- A worker holds a range while `lease_until` is in the future and renews it;
-- `last_id` is the last mirror `__id` durably written to the target, so a
-- killed worker's successor resumes after it, not from `lo`.
CREATE SCHEMA IF NOT EXISTS projector;

CREATE TABLE IF NOT EXISTS projector.rebuilds (
    rebuild_id  text        NOT NULL PRIMARY KEY,
    read_model  text        NOT NULL,
    topic       text        NOT NULL,
    sink        text        NOT NULL,
    mirror      text        NOT NULL,
    target      text        NOT NULL,
    total_rows  bigint      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

-- `lo` NULL is below every id, `hi` NULL above every id; a range is [lo, hi).
CREATE TABLE IF NOT EXISTS projector.rebuild_ranges (
    rebuild_id  text        NOT NULL REFERENCES projector.rebuilds (rebuild_id) ON DELETE CASCADE,
    range_no    integer     NOT NULL,
    lo          text,
    hi          text,
    owner       text,
    lease_until timestamptz,
    last_id     text,
    rows        bigint      NOT NULL DEFAULT 0,
    done        boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (rebuild_id, range_no)
);
