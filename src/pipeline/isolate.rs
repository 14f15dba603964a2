//! One target's share of a batch, written once for every sink: type and
//! add its new fields, write it, and when the sink refuses the whole call
//! for its data, split it in halves until each bad write stands alone. Only
//! those come back failed with a data kind (to be dead-lettered); the rest
//! are written. Clean input never takes the split path, which
//! `projector_sink_isolations_total` counts.

use std::future::Future;
use std::pin::Pin;

use super::fields::KnownFields;
use super::retype;
use crate::mapping::TableMapping;
use crate::sink::{ErrorKind, Outcome, Retype, Sink, SinkError, Write};
use crate::source::PartitionOffset;

/// What one target's call needs besides its writes.
pub struct TargetCall<'a, S: Sink> {
    pub sink: &'a S,
    pub fields: &'a KnownFields,
    pub table: &'a TableMapping,
    pub target: &'a str,
    pub progress: &'a [PartitionOffset],
}

type Written<'a> = Pin<Box<dyn Future<Output = Result<Vec<Outcome>, SinkError>> + Send + 'a>>;

impl<'a, S: Sink> TargetCall<'a, S> {
    /// Writes `writes`, isolating the bad rows of a refused call. An error
    /// is a failure of the sink, not of the data: retry the whole share.
    pub fn write_isolating(&'a self, writes: &'a [Write]) -> Written<'a> {
        Box::pin(async move {
            match self.write_once(writes).await {
                Err(e) if e.kind.is_data() && writes.len() > 1 => {
                    metrics::counter!("projector_sink_isolations_total", "sink" => self.sink.name()).increment(1);
                    tracing::warn!(sink = self.sink.name(), target = self.target, error = %e, writes = writes.len(), "call refused for its data; splitting it to isolate the bad rows");
                    let (left, right) = writes.split_at(writes.len() / 2);
                    let mut outcomes = self.write_isolating(left).await?;
                    outcomes.extend(self.write_isolating(right).await?);
                    Ok(outcomes)
                }
                Err(e) if e.kind.is_data() => Ok(vec![Outcome::Failed(e)]),
                other => other,
            }
        })
    }

    async fn write_once(&self, writes: &[Write]) -> Result<Vec<Outcome>, SinkError> {
        let retypes = self.fields.add_new(self.sink, self.table, self.target, writes).await?;
        if !retypes.is_empty() {
            return self.write_around(writes, &retypes).await;
        }
        let outcomes = self.sink.write(self.target, writes, self.progress).await?;
        if outcomes.len() != writes.len() {
            return Err(SinkError::new(
                self.sink.name(),
                ErrorKind::Unavailable,
                format!(
                    "{}: returned {} outcomes for {} writes; this is a bug in the sink, please report it",
                    self.target,
                    outcomes.len(),
                    writes.len()
                ),
            ));
        }
        Ok(outcomes)
    }

    /// Writes what the target can take when some fields changed type in a
    /// way it cannot follow in place: `on_type_change` decides the rest.
    async fn write_around(&self, writes: &[Write], retypes: &[Retype]) -> Result<Vec<Outcome>, SinkError> {
        let refused = retype::follow_policy(self.sink.name(), self.table, self.target, retypes, writes)?;
        let fine: Vec<Write> =
            writes.iter().zip(&refused).filter(|(_, r)| r.is_none()).map(|(w, _)| w.clone()).collect();
        let mut written =
            if fine.is_empty() { Vec::new() } else { self.sink.write(self.target, &fine, self.progress).await? }
                .into_iter();
        Ok(refused
            .into_iter()
            .map(|r| match r {
                Some(e) => Outcome::Failed(e),
                None => written.next().unwrap_or(Outcome::Failed(SinkError::new(
                    self.sink.name(),
                    ErrorKind::Unavailable,
                    format!("{}: returned too few outcomes; this is a bug in the sink, please report it", self.target),
                ))),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Op;
    use crate::pipeline::testing::{self, Scripted};

    /// Refuses, as a whole, every call that holds a write whose id starts with "bad".
    fn picky() -> Scripted {
        Scripted::new(|_, writes| {
            if writes.iter().any(|w| w.doc.id.starts_with("bad")) {
                return Err(SinkError::new(testing::NAME, ErrorKind::BadData, "value out of range"));
            }
            Ok(vec![Outcome::Applied; writes.len()])
        })
    }

    fn writes(ids: &[&str]) -> Vec<Write> {
        ids.iter().map(|id| testing::write(id, "01", Op::Create, 0)).collect()
    }

    fn call_with<'a>(sink: &'a Scripted, fields: &'a KnownFields, table: &'a TableMapping) -> TargetCall<'a, Scripted> {
        TargetCall { sink, fields, table, target: "t", progress: &[] }
    }

    #[tokio::test]
    async fn a_refused_call_is_split_until_only_the_bad_writes_fail() {
        let model = testing::model();
        let (sink, fields) = (picky(), KnownFields::default());
        let call = call_with(&sink, &fields, &model.tables[0]);
        let out = call.write_isolating(&writes(&["1", "2", "bad3", "4", "5", "bad6", "7"])).await.unwrap();
        let failed: Vec<usize> =
            out.iter().enumerate().filter(|(_, o)| matches!(o, Outcome::Failed(_))).map(|(i, _)| i).collect();
        assert_eq!(failed, vec![2, 5], "{out:?}");
        assert!(
            out.iter()
                .all(|o| matches!(o, Outcome::Applied | Outcome::Failed(SinkError { kind: ErrorKind::BadData, .. })))
        );
    }

    #[tokio::test]
    async fn a_clean_call_is_written_once_and_a_sink_failure_is_not_split() {
        let model = testing::model();
        let (sink, fields) = (picky(), KnownFields::default());
        let call = call_with(&sink, &fields, &model.tables[0]);
        assert_eq!(call.write_isolating(&writes(&["1", "2", "3"])).await.unwrap(), vec![Outcome::Applied; 3]);
        assert_eq!(sink.call_sizes(), vec![3]);
    }
}
