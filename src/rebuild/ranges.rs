//! A rebuild's key space and who copies which part of it, in the staging
//! PostgreSQL (`projector.rebuilds`, `projector.rebuild_ranges`, from
//! `migrations/V3__rebuilds.sql`). The first worker of a rebuild splits the
//! mirror's `__id`s into ranges at sampled quantiles; every worker then
//! claims a free range (`FOR UPDATE SKIP LOCKED`, so two never take the
//! same one), holds it with a lease it renews at each checkpoint, and
//! records the last id it wrote after each durable page. A worker killed
//! mid-range loses its lease when it expires; whoever claims the range next
//! resumes after `last_id`.

use std::time::Duration;

use tokio_postgres::Client;

use super::RebuildError;
use crate::sink::postgres::quote_table;

/// A rebuild as first registered.
#[derive(Clone, Debug)]
pub struct Plan<'a> {
    pub rebuild_id: &'a str,
    pub read_model: &'a str,
    pub topic: &'a str,
    pub sink: &'a str,
    pub mirror: &'a str,
    pub target: &'a str,
    pub ranges: usize,
}

/// One claimed range: `[lo, hi)`, resumed after `last_id`.
#[derive(Clone, Debug, PartialEq)]
pub struct Range {
    pub range_no: i32,
    pub lo: Option<String>,
    pub hi: Option<String>,
    pub last_id: Option<String>,
}

/// What claiming found.
#[derive(Debug, PartialEq)]
pub enum Claim {
    Range(Range),
    /// Every free range is leased by a live worker: wait and try again.
    Busy,
    /// Every range is done.
    Finished,
}

fn pg(what: &str, rebuild: &str, e: tokio_postgres::Error) -> RebuildError {
    RebuildError::Postgres { rebuild: rebuild.into(), message: format!("{what}: {e}") }
}

/// Registers the rebuild and splits its key space, once: a second worker
/// (or a restart) finds it registered and leaves it as it is. Returns the
/// mirror's row count at registration.
pub async fn register(client: &mut Client, plan: &Plan<'_>) -> Result<u64, RebuildError> {
    let id = plan.rebuild_id;
    let tx = client.transaction().await.map_err(|e| pg("starting a transaction", id, e))?;
    // Serialises registration of one rebuild across processes.
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('projector.rebuild:' || $1))", &[&id])
        .await
        .map_err(|e| pg("locking the rebuild", id, e))?;
    if let Some(row) = tx
        .query_opt("SELECT total_rows, mirror, target FROM projector.rebuilds WHERE rebuild_id = $1", &[&id])
        .await
        .map_err(|e| pg("reading the rebuild", id, e))?
    {
        let (mirror, target): (String, String) = (row.get(1), row.get(2));
        if mirror != plan.mirror || target != plan.target {
            return Err(RebuildError::Mismatch {
                rebuild: id.into(),
                detail: format!("it copies {mirror} into {target}, not {} into {}", plan.mirror, plan.target),
            });
        }
        return u64::try_from(row.get::<_, i64>(0)).map_err(|_| pg_count(id));
    }
    let table = quote_table(plan.mirror);
    let total: i64 = tx
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .map_err(|e| pg(&format!("counting {}", plan.mirror), id, e))?
        .get(0);
    let n = plan.ranges.max(1);
    let fractions: Vec<f64> = (1..n).map(|i| i as f64 / n as f64).collect();
    let mut bounds: Vec<String> = if fractions.is_empty() || total == 0 {
        vec![]
    } else {
        tx.query_one(
            &format!("SELECT percentile_disc($1::float8[]) WITHIN GROUP (ORDER BY __id) FROM {table}"),
            &[&fractions],
        )
        .await
        .map_err(|e| pg(&format!("sampling the ids of {}", plan.mirror), id, e))?
        .get::<_, Option<Vec<String>>>(0)
        .unwrap_or_default()
    };
    bounds.dedup();
    tx.execute(
        "INSERT INTO projector.rebuilds (rebuild_id, read_model, topic, sink, mirror, target, total_rows) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[&id, &plan.read_model, &plan.topic, &plan.sink, &plan.mirror, &plan.target, &total],
    )
    .await
    .map_err(|e| pg("registering the rebuild", id, e))?;
    let mut lo: Option<String> = None;
    for (i, hi) in bounds.iter().map(Some).chain(std::iter::once(None)).enumerate() {
        let range_no = i32::try_from(i).map_err(|_| pg_count(id))?;
        tx.execute(
            "INSERT INTO projector.rebuild_ranges (rebuild_id, range_no, lo, hi) VALUES ($1, $2, $3, $4)",
            &[&id, &range_no, &lo, &hi],
        )
        .await
        .map_err(|e| pg("storing the ranges", id, e))?;
        lo = hi.cloned();
    }
    tx.commit().await.map_err(|e| pg("registering the rebuild", id, e))?;
    u64::try_from(total).map_err(|_| pg_count(id))
}

fn pg_count(id: &str) -> RebuildError {
    RebuildError::Postgres { rebuild: id.into(), message: "a count out of range".into() }
}

/// Claims a range no live worker holds, for `lease`.
pub async fn claim(client: &Client, rebuild_id: &str, worker: &str, lease: Duration) -> Result<Claim, RebuildError> {
    let secs = lease.as_secs_f64();
    let row = client
        .query_opt(
            // A scalar subquery runs once; as a joined FROM item it may be
            // rescanned, and each SKIP LOCKED rescan claims another range.
            "UPDATE projector.rebuild_ranges SET owner = $2, lease_until = now() + $3 * interval '1 second'
             WHERE rebuild_id = $1 AND range_no = (
                 SELECT range_no FROM projector.rebuild_ranges
                 WHERE rebuild_id = $1 AND NOT done AND (lease_until IS NULL OR lease_until < now() OR owner = $2)
                 ORDER BY range_no LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING range_no, lo, hi, last_id",
            &[&rebuild_id, &worker, &secs],
        )
        .await
        .map_err(|e| pg("claiming a range", rebuild_id, e))?;
    if let Some(r) = row {
        return Ok(Claim::Range(Range { range_no: r.get(0), lo: r.get(1), hi: r.get(2), last_id: r.get(3) }));
    }
    let open: i64 = client
        .query_one("SELECT count(*) FROM projector.rebuild_ranges WHERE rebuild_id = $1 AND NOT done", &[&rebuild_id])
        .await
        .map_err(|e| pg("reading the ranges", rebuild_id, e))?
        .get(0);
    Ok(if open == 0 { Claim::Finished } else { Claim::Busy })
}

/// Records a durable page (`rows` more, the last id `last_id`; `done` when
/// the range is exhausted) and renews the lease. `false` when the lease was
/// lost (expired and taken over): the caller stops copying this range.
pub async fn checkpoint(
    client: &Client,
    rebuild_id: &str,
    worker: &str,
    range: &Range,
    rows: i64,
    done: bool,
    lease: Duration,
) -> Result<bool, RebuildError> {
    let n = client
        .execute(
            "UPDATE projector.rebuild_ranges SET last_id = coalesce($4, last_id), rows = rows + $5, done = $6,
                    lease_until = now() + $7 * interval '1 second'
             WHERE rebuild_id = $1 AND range_no = $2 AND owner = $3 AND NOT done",
            &[&rebuild_id, &range.range_no, &worker, &range.last_id, &rows, &done, &lease.as_secs_f64()],
        )
        .await
        .map_err(|e| pg("checkpointing", rebuild_id, e))?;
    Ok(n == 1)
}

/// Rows copied so far by every worker, and whether every range is done.
pub async fn totals(client: &Client, rebuild_id: &str) -> Result<(u64, bool), RebuildError> {
    let row = client
        .query_one(
            "SELECT coalesce(sum(rows), 0)::int8, bool_and(done) FROM projector.rebuild_ranges WHERE rebuild_id = $1",
            &[&rebuild_id],
        )
        .await
        .map_err(|e| pg("reading progress", rebuild_id, e))?;
    Ok((u64::try_from(row.get::<_, i64>(0)).unwrap_or(0), row.get::<_, Option<bool>>(1).unwrap_or(false)))
}

/// Marks the rebuild finished once every range is done.
pub async fn finish(client: &Client, rebuild_id: &str) -> Result<(), RebuildError> {
    client
        .execute(
            "UPDATE projector.rebuilds SET finished_at = coalesce(finished_at, now()) WHERE rebuild_id = $1",
            &[&rebuild_id],
        )
        .await
        .map_err(|e| pg("finishing", rebuild_id, e))?;
    Ok(())
}
