//! The version catalog: every logical target a sink writes (an
//! Elasticsearch alias, a PostgreSQL or BigQuery table name, the names
//! readers use) is held by one or more versions, each a physical target of
//! its own (`<alias>_vN`, `<table>_vN`). Readers see exactly one version,
//! the *current* one. A rebuild fills a *building* version beside it; the
//! swap makes it current and the old current *previous*, still written for
//! a rollback until `gc` drops it. The pipeline writes every version it
//! finds here, so none falls behind.
//!
//! The catalog lives in the staging PostgreSQL (`projector.targets`, from
//! `migrations/V2__targets.sql`), the same for every instance and kept
//! across restarts. Every transition is one transaction that first takes a
//! lock on its logical target, and partial unique indexes allow one version
//! per state, so two instances racing a swap cannot make two currents.

use tokio::sync::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row};

mod migrations {
    refinery::embed_migrations!("migrations");
}

/// A logical target of one sink of one read model.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TargetName {
    pub read_model: String,
    pub sink: String,
    pub logical: String,
}

impl std::fmt::Display for TargetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} target {}", self.read_model, self.sink, self.logical)
    }
}

/// Where a version stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Readers see it.
    Current,
    /// Being filled by a rebuild; written live, not read yet.
    Building,
    /// Was current before the last swap; written live for a rollback until gc.
    Previous,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Current => "current",
            State::Building => "building",
            State::Previous => "previous",
        }
    }

    fn parse(s: &str) -> Option<State> {
        match s {
            "current" => Some(State::Current),
            "building" => Some(State::Building),
            "previous" => Some(State::Previous),
            _ => None,
        }
    }
}

/// One version of a logical target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub version: i32,
    /// The index or table that holds it.
    pub physical: String,
    pub state: State,
    /// When it was created and last changed state, in ms since the epoch.
    pub created_ms: i64,
    pub swapped_ms: Option<i64>,
}

impl Version {
    /// The newest transition of this version, in ms.
    pub fn epoch(&self) -> i64 {
        self.created_ms.max(self.swapped_ms.unwrap_or(0))
    }
}

/// A catalog failure.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("version catalog in PostgreSQL ({url}): {what}: {message}; is the staging PostgreSQL (--postgres-url) up?")]
    Unavailable { url: String, what: String, message: String },
    #[error("{target}: {message}")]
    Refused { target: TargetName, message: String },
}

const COLUMNS: &str = "version, physical, state, (extract(epoch FROM created_at) * 1000)::bigint, (extract(epoch FROM swapped_at) * 1000)::bigint";

/// The catalog, over one connection to the staging PostgreSQL.
pub struct Catalog {
    url: String,
    client: Mutex<Option<Client>>,
}

impl Catalog {
    /// Connects and brings `projector`'s bookkeeping tables up to date.
    pub async fn connect(url: &str) -> Result<Catalog, CatalogError> {
        let catalog = Catalog { url: url.to_string(), client: Mutex::new(None) };
        let mut guard = catalog.client.lock().await;
        let client = catalog.client(&mut guard).await?;
        migrations::migrations::runner()
            .run_async(client)
            .await
            .map_err(|e| catalog.unavailable("applying migrations/", &e))?;
        drop(guard);
        Ok(catalog)
    }

    fn unavailable(&self, what: &str, e: &dyn std::fmt::Display) -> CatalogError {
        CatalogError::Unavailable { url: redact(&self.url), what: what.to_string(), message: e.to_string() }
    }

    fn pg(&self, what: &str, e: &tokio_postgres::Error) -> CatalogError {
        let message = match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        };
        CatalogError::Unavailable { url: redact(&self.url), what: what.to_string(), message }
    }

    async fn client<'g>(&self, guard: &'g mut Option<Client>) -> Result<&'g mut Client, CatalogError> {
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            let (client, connection) =
                tokio_postgres::connect(&self.url, NoTls).await.map_err(|e| self.pg("connecting", &e))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "version catalog connection closed");
                }
            });
            *guard = Some(client);
        }
        guard.as_mut().ok_or_else(|| self.unavailable("connecting", &"no connection"))
    }

    /// Every version of `target`, oldest first.
    pub async fn versions(&self, target: &TargetName) -> Result<Vec<Version>, CatalogError> {
        let mut guard = self.client.lock().await;
        let client = self.client(&mut guard).await?;
        let sql = format!("SELECT {COLUMNS} FROM projector.targets WHERE {WHERE} ORDER BY version");
        let rows = client
            .query(&sql, &[&target.read_model, &target.sink, &target.logical])
            .await
            .map_err(|e| self.pg(&format!("reading the versions of {target}"), &e))?;
        rows.iter().map(|r| version(r).map_err(|m| refused(target, &m))).collect()
    }

    /// The version readers see, if the target has one yet.
    pub async fn current(&self, target: &TargetName) -> Result<Option<Version>, CatalogError> {
        Ok(self.versions(target).await?.into_iter().find(|v| v.state == State::Current))
    }

    /// Records `physical` as version 1, current, unless the target already
    /// has a current version; returns the current version either way (the
    /// first instance to start wins).
    pub async fn first(&self, target: &TargetName, physical: &str) -> Result<Version, CatalogError> {
        self.transition(target, "recording version 1", |versions| {
            if versions.iter().any(|v| v.state == State::Current) {
                return Ok(vec![]);
            }
            Ok(vec![Step::Insert(next_version(versions), physical.to_string(), State::Current)])
        })
        .await?;
        self.find(target, State::Current).await
    }

    /// Begins version N+1 (N the newest), empty and building, held by
    /// `physical(N+1)`. Refused while another version is building, or while
    /// a previous one waits for rollback or gc (three would be written).
    pub async fn begin_version(
        &self,
        target: &TargetName,
        physical: impl Fn(i32) -> String,
    ) -> Result<Version, CatalogError> {
        self.transition(target, "beginning a version", |versions| {
            if let Some(b) = versions.iter().find(|v| v.state == State::Building) {
                return Err(format!("version {} is already building", b.version));
            }
            if let Some(p) = versions.iter().find(|v| v.state == State::Previous) {
                return Err(format!(
                    "version {} is still kept for rollback; run `projector gc` (or `projector rollback`) first",
                    p.version
                ));
            }
            let next = next_version(versions);
            Ok(vec![Step::Insert(next, physical(next), State::Building)])
        })
        .await?;
        self.find(target, State::Building).await
    }

    /// Makes the building version current and the current one previous.
    /// Returns (new current, new previous). The sink points readers after.
    pub async fn swap(&self, target: &TargetName) -> Result<(Version, Option<Version>), CatalogError> {
        self.transition(target, "swapping", |versions| {
            let Some(building) = versions.iter().find(|v| v.state == State::Building) else {
                return Err("no version is building; nothing to swap".into());
            };
            if versions.iter().any(|v| v.state == State::Previous) {
                return Err("a previous version is still kept; run `projector gc` first".into());
            }
            let mut steps: Vec<Step> = versions
                .iter()
                .filter(|v| v.state == State::Current)
                .map(|v| Step::Set(v.version, State::Previous))
                .collect();
            steps.push(Step::Set(building.version, State::Current));
            Ok(steps)
        })
        .await?;
        Ok((self.find(target, State::Current).await?, self.find(target, State::Previous).await.ok()))
    }

    /// Makes the previous version current again and the current one
    /// previous, so a second rollback returns. Returns (current, previous).
    pub async fn rollback(&self, target: &TargetName) -> Result<(Version, Version), CatalogError> {
        self.transition(target, "rolling back", |versions| {
            let (Some(current), Some(previous)) = (
                versions.iter().find(|v| v.state == State::Current),
                versions.iter().find(|v| v.state == State::Previous),
            ) else {
                return Err("no previous version to roll back to".into());
            };
            if versions.iter().any(|v| v.state == State::Building) {
                return Err("a version is building; roll back after it is swapped".into());
            }
            // Through the free `building` state: the one-per-state indexes
            // hold after every statement, not only at commit.
            Ok(vec![
                Step::Set(previous.version, State::Building),
                Step::Set(current.version, State::Previous),
                Step::Set(previous.version, State::Current),
            ])
        })
        .await?;
        Ok((self.find(target, State::Current).await?, self.find(target, State::Previous).await?))
    }

    /// Removes the previous version from the catalog and returns it, so its
    /// physical target can be dropped (writers stop at their next refresh).
    pub async fn gc(&self, target: &TargetName) -> Result<Option<Version>, CatalogError> {
        let mut dropped = None;
        self.transition(target, "dropping the previous version", |versions| {
            dropped = versions.iter().find(|v| v.state == State::Previous).cloned();
            Ok(dropped.iter().map(|v| Step::Delete(v.version)).collect())
        })
        .await?;
        Ok(dropped)
    }

    /// Notes that `member` has seen the catalog up to `epoch` (ms).
    pub async fn seen(&self, read_model: &str, sink: &str, member: &str, epoch: i64) -> Result<(), CatalogError> {
        let mut guard = self.client.lock().await;
        let client = self.client(&mut guard).await?;
        client
            .execute(
                "INSERT INTO projector.members (read_model, sink, member, epoch) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (read_model, sink, member) DO UPDATE SET seen_at = now(), epoch = EXCLUDED.epoch",
                &[&read_model, &sink, &member, &epoch],
            )
            .await
            .map_err(|e| self.pg("recording what this instance has seen", &e))?;
        Ok(())
    }

    /// Forgets `member`: a cleanly stopped instance, which a rebuild must
    /// not wait for (a killed one is taken for gone a minute after its last refresh).
    pub async fn leave(&self, read_model: &str, sink: &str, member: &str) -> Result<(), CatalogError> {
        let mut guard = self.client.lock().await;
        let client = self.client(&mut guard).await?;
        client
            .execute(
                "DELETE FROM projector.members WHERE read_model = $1 AND sink = $2 AND member = $3",
                &[&read_model, &sink, &member],
            )
            .await
            .map_err(|e| self.pg("removing this instance from the members", &e))?;
        Ok(())
    }

    /// The catalog's clock, in ms: to compare with what members have seen.
    pub async fn now_ms(&self) -> Result<i64, CatalogError> {
        let mut guard = self.client.lock().await;
        let client = self.client(&mut guard).await?;
        let row = client
            .query_one("SELECT (extract(epoch FROM now()) * 1000)::bigint", &[])
            .await
            .map_err(|e| self.pg("reading the clock", &e))?;
        Ok(row.get(0))
    }

    /// The members of `sink` that refreshed within `live` but not since
    /// `since_ms`: the instances that may still write what changed then.
    pub async fn members_behind(
        &self,
        read_model: &str,
        sink: &str,
        since_ms: i64,
        live: std::time::Duration,
    ) -> Result<Vec<String>, CatalogError> {
        let mut guard = self.client.lock().await;
        let client = self.client(&mut guard).await?;
        let live_s = live.as_secs_f64();
        let rows = client
            .query(
                "SELECT member FROM projector.members WHERE read_model = $1 AND sink = $2
                 AND seen_at > now() - make_interval(secs => $3) AND (extract(epoch FROM seen_at) * 1000)::bigint < $4",
                &[&read_model, &sink, &live_s, &since_ms],
            )
            .await
            .map_err(|e| self.pg("reading the members", &e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn find(&self, target: &TargetName, state: State) -> Result<Version, CatalogError> {
        self.versions(target)
            .await?
            .into_iter()
            .find(|v| v.state == state)
            .ok_or_else(|| refused(target, &format!("no {} version", state.as_str())))
    }

    /// Runs one transition in a transaction holding `target`'s lock:
    /// `decide` reads the locked versions and returns the steps, or why not.
    async fn transition(
        &self,
        target: &TargetName,
        what: &str,
        decide: impl FnOnce(&[Version]) -> Result<Vec<Step>, String>,
    ) -> Result<(), CatalogError> {
        let mut guard = self.client.lock().await;
        let client = self.client(&mut guard).await?;
        let failed = |e: tokio_postgres::Error| self.pg(&format!("{what} {target}"), &e);
        let tx = client.transaction().await.map_err(failed)?;
        let key = format!("{}\u{1f}{}\u{1f}{}", target.read_model, target.sink, target.logical);
        tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&key]).await.map_err(failed)?;
        let sql = format!("SELECT {COLUMNS} FROM projector.targets WHERE {WHERE} ORDER BY version FOR UPDATE");
        let keys: [&(dyn ToSql + Sync); 3] = [&target.read_model, &target.sink, &target.logical];
        let rows = tx.query(&sql, &keys).await.map_err(failed)?;
        let versions =
            rows.iter().map(|r| version(r).map_err(|m| refused(target, &m))).collect::<Result<Vec<_>, _>>()?;
        for step in decide(&versions).map_err(|m| refused(target, &m))? {
            let (sql, version, extra): (String, i32, Vec<String>) = match step {
                Step::Insert(v, physical, state) => (
                    "INSERT INTO projector.targets (read_model, sink, logical, version, physical, state) VALUES ($1, $2, $3, $4, $5, $6)".into(),
                    v,
                    vec![physical, state.as_str().into()],
                ),
                Step::Set(v, state) => (
                    format!("UPDATE projector.targets SET state = $5, swapped_at = clock_timestamp() WHERE {WHERE} AND version = $4"),
                    v,
                    vec![state.as_str().into()],
                ),
                Step::Delete(v) => (format!("DELETE FROM projector.targets WHERE {WHERE} AND version = $4"), v, vec![]),
            };
            let mut params: Vec<&(dyn ToSql + Sync)> = keys.to_vec();
            params.push(&version);
            params.extend(extra.iter().map(|e| e as &(dyn ToSql + Sync)));
            tx.execute(&sql, &params).await.map_err(failed)?;
        }
        tx.commit().await.map_err(failed)
    }
}

/// One change a transition makes to one version.
enum Step {
    Insert(i32, String, State),
    Set(i32, State),
    Delete(i32),
}

const WHERE: &str = "read_model = $1 AND sink = $2 AND logical = $3";

fn next_version(versions: &[Version]) -> i32 {
    versions.iter().map(|v| v.version).max().unwrap_or(0).saturating_add(1)
}

fn version(r: &Row) -> Result<Version, String> {
    let state: String = r.get(2);
    Ok(Version {
        version: r.get(0),
        physical: r.get(1),
        state: State::parse(&state).ok_or_else(|| format!("unknown state {state:?} in projector.targets"))?,
        created_ms: r.get(3),
        swapped_ms: r.get(4),
    })
}

fn refused(target: &TargetName, message: &str) -> CatalogError {
    CatalogError::Refused { target: target.clone(), message: message.to_string() }
}

/// Hides a password in a connection string for messages.
pub fn redact(url: &str) -> String {
    url.split_whitespace()
        .map(|kv| if kv.starts_with("password=") { "password=…" } else { kv })
        .collect::<Vec<_>>()
        .join(" ")
}
