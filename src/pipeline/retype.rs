//! A field retyped at the source that its target cannot take in place
//! ([`Retype`], from [`crate::sink::Sink::add_fields`]): the read model's
//! `on_type_change` decides what happens to the writes that carry the new
//! type. `dead_letter` refuses just those (each dead letter names the
//! column, both types and the command to run); `stop` holds the share, so
//! the partition waits and health reports the reason, until the target is
//! rebuilt by hand; `rebuild` holds it too, and the writer asks the running
//! service to rebuild the target ([`crate::pipeline::versions::Versions::request_rebuild`]).
//! Both holds are [`ErrorKind::NeedsRebuild`].

use crate::mapping::{OnTypeChange, TableMapping};
use crate::sink::{ErrorKind, Retype, SinkError, Write};

/// For each write, whether it carries a type its target cannot take (the
/// error to dead-letter it with); or the error that holds the whole share.
pub fn follow_policy(
    sink: &'static str,
    table: &TableMapping,
    target: &str,
    retypes: &[Retype],
    writes: &[Write],
) -> Result<Vec<Option<SinkError>>, SinkError> {
    let command = table.rebuild_command(sink);
    let what = describe(sink, target, retypes);
    match table.policy.on_type_change {
        OnTypeChange::Stop => Err(SinkError::new(
            sink,
            ErrorKind::NeedsRebuild,
            format!("{what}; on_type_change: stop holds {} until it is rebuilt: run `{command}`", table.topic),
        )),
        OnTypeChange::Rebuild => Err(SinkError::new(
            sink,
            ErrorKind::NeedsRebuild,
            format!(
                "{what}; on_type_change: rebuild: projector rebuilds the target as a new version and swaps it in (by hand: `{command}`); the writes of {} wait until then",
                table.topic
            ),
        )),
        OnTypeChange::DeadLetter => Ok(writes
            .iter()
            .map(|w| {
                let carried: Vec<&Retype> = retypes.iter().filter(|r| carries(table, w, r)).collect();
                (!carried.is_empty()).then(|| {
                    let carried: Vec<Retype> = carried.into_iter().cloned().collect();
                    SinkError::new(
                        sink,
                        ErrorKind::RefusedRow,
                        format!(
                            "{}; on_type_change: dead_letter: run `{command}` to rebuild it with the new type, then replay the dead letters",
                            describe(sink, target, &carried)
                        ),
                    )
                })
            })
            .collect()),
    }
}

/// Whether `w` carries the new type of `r`'s field.
fn carries(table: &TableMapping, w: &Write, r: &Retype) -> bool {
    table.output_type(&r.field, w.doc.source_types.as_deref()).is_some_and(|ft| ft == r.source)
}

fn describe(sink: &str, target: &str, retypes: &[Retype]) -> String {
    let each: Vec<String> = retypes
        .iter()
        .map(|r| {
            format!(
                "column {:?} changed type at the source: {} target {target} has {}, the new type needs {} ({})",
                r.field, sink, r.from, r.to, r.why
            )
        })
        .collect();
    each.join("; ")
}
