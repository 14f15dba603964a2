//! The parity check before a swap: does the rebuilt target hold exactly
//! what its source (the mirror) holds? Page by page over the mirror's ids,
//! each id's stored source position (and tombstone flag: a deleted row is
//! compared as a tombstone) is compared with what the target stores for it
//! ([`Sink::positions`]), then the target's row count with the mirror's, to
//! catch ids the mirror does not have. A target ahead of the mirror (a live
//! write newer than the mirror's row) differs too. While the live stream
//! moves both sides, [`recheck`] compares only the ids that differed (and
//! the counts) again, which settles fast where a whole pass would always
//! meet the latest writes in flight.

use std::fmt;

use tokio_postgres::Client;

use super::RebuildError;
use crate::sink::{Sink, StoredPosition};
use crate::source::mirror::Mirror;

/// How many differences a report lists.
pub const LISTED: usize = 20;

/// How many differing ids a report keeps to check again; past that a whole
/// pass runs again instead.
pub const RECHECKED: usize = 10_000;

/// One id whose position differs.
#[derive(Clone, Debug, PartialEq)]
pub struct Difference {
    pub id: String,
    pub mirror: Option<StoredPosition>,
    pub target: Option<StoredPosition>,
}

/// What parity found.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ParityReport {
    pub mirror_rows: u64,
    pub target_rows: u64,
    /// Ids compared whose positions differ (missing in the target included).
    pub differing: u64,
    /// The first [`LISTED`] of them.
    pub differences: Vec<Difference>,
    /// The ids that differed, up to [`RECHECKED`]: what [`recheck`] reads again.
    pub differing_ids: Vec<String>,
    /// What `mirror_rows` counted: the mirror, or (a table that is not
    /// mirrored) the current version.
    pub against: Against,
}

/// The side a rebuilt version is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Against {
    #[default]
    Mirror,
    CurrentVersion,
}

impl Against {
    fn as_str(self) -> &'static str {
        match self {
            Against::Mirror => "mirror",
            Against::CurrentVersion => "current version",
        }
    }
}

impl ParityReport {
    /// Whether the target may be swapped in.
    pub fn passed(&self) -> bool {
        self.differing == 0 && self.mirror_rows == self.target_rows
    }
}

fn show(p: &Option<StoredPosition>) -> String {
    match p {
        None => "absent".into(),
        Some(p) if p.deleted => format!("{} (deleted)", p.position),
        Some(p) => p.position.clone(),
    }
}

impl fmt::Display for ParityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let against = self.against.as_str();
        write!(f, "{against} {} rows, target {} rows", self.mirror_rows, self.target_rows)?;
        if self.against == Against::Mirror {
            write!(f, ", {} ids differ", self.differing)?;
        }
        for d in &self.differences {
            write!(f, "\n  {:?}: mirror {}, target {}", d.id, show(&d.mirror), show(&d.target))?;
        }
        Ok(())
    }
}

/// Compares `target` (of `sink`) with `mirror`, `page_rows` ids at a time.
pub async fn parity<S: Sink>(
    client: &Client,
    mirror: &Mirror,
    sink: &S,
    target: &str,
    page_rows: i64,
) -> Result<ParityReport, RebuildError> {
    let mut report = ParityReport::default();
    let mut after: Option<String> = None;
    loop {
        let page = mirror.page(client, None, None, after.as_deref(), page_rows).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        let ids: Vec<&str> = page.iter().map(|r| r.id.as_str()).collect();
        let stored = sink
            .positions(target, &ids)
            .await
            .map_err(|source| RebuildError::Sink { rebuild: format!("parity of {target}"), source })?;
        for (row, stored) in page.iter().zip(stored) {
            report.mirror_rows += 1;
            let expected = StoredPosition { position: row.position.clone(), deleted: row.deleted };
            if stored.as_ref() != Some(&expected) {
                report.note(&row.id, Some(expected), stored);
            }
        }
    }
    report.target_rows = sink
        .count(target)
        .await
        .map_err(|source| RebuildError::Sink { rebuild: format!("parity of {target}"), source })?;
    Ok(report)
}

impl ParityReport {
    fn note(&mut self, id: &str, mirror: Option<StoredPosition>, target: Option<StoredPosition>) {
        self.differing += 1;
        if self.differences.len() < LISTED {
            self.differences.push(Difference { id: id.to_string(), mirror, target });
        }
        if self.differing_ids.len() < RECHECKED {
            self.differing_ids.push(id.to_string());
        }
    }

    /// Whether [`recheck`] can settle it: every differing id is kept.
    pub fn recheckable(&self) -> bool {
        self.differing as usize == self.differing_ids.len()
    }
}

/// Compares again only the ids `earlier` found differing, and both row
/// counts: the ids still differing make the new report.
pub async fn recheck<S: Sink>(
    client: &Client,
    mirror: &Mirror,
    sink: &S,
    target: &str,
    earlier: &ParityReport,
) -> Result<ParityReport, RebuildError> {
    let failed = |source| RebuildError::Sink { rebuild: format!("parity of {target}"), source };
    let mut report = ParityReport::default();
    for chunk in earlier.differing_ids.chunks(500) {
        let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let stored = sink.positions(target, &ids).await.map_err(failed)?;
        for (id, stored) in chunk.iter().zip(stored) {
            let row = mirror.page(client, Some(id), None, None, 1).await?.into_iter().find(|r| &r.id == id);
            let expected = row.map(|r| StoredPosition { position: r.position, deleted: r.deleted });
            if stored != expected {
                report.note(id, expected, stored);
            }
        }
    }
    report.mirror_rows = mirror.count(client).await?;
    report.target_rows = sink.count(target).await.map_err(failed)?;
    Ok(report)
}
