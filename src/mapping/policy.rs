//! What a read model does when the source changes a column under it
//! (`on_type_change`, `on_drop` at the top of the read-model file): the
//! choice is the file's, the carrying out is the pipeline's and the sinks'.

use std::path::Path;
use std::sync::Arc;

/// A column whose type changed at the source in a way a sink cannot
/// follow in place (a narrower type, another kind of value, a new
/// Elasticsearch field type).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnTypeChange {
    /// Rebuild the target with the new type while the old one keeps serving.
    #[default]
    Rebuild,
    /// Send the writes that carry the new type to the dead-letter queue.
    DeadLetter,
    /// Hold the partition, reported not ready, until the target is fixed.
    Stop,
}

/// A column the source dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnDrop {
    /// The column and its stored values stay; later writes leave it as stored.
    #[default]
    Keep,
    /// Later writes set it null.
    Null,
    /// The column is removed from the target as far as the sink can: a
    /// PostgreSQL or BigQuery column is dropped from every version table;
    /// Elasticsearch documents stop carrying the field, while the index
    /// mapping keeps it until a rebuild. Each sink logs what it dropped.
    Drop,
}

impl OnTypeChange {
    pub fn parse(s: &str) -> Result<OnTypeChange, String> {
        match s.trim() {
            "rebuild" => Ok(OnTypeChange::Rebuild),
            "dead_letter" => Ok(OnTypeChange::DeadLetter),
            "stop" => Ok(OnTypeChange::Stop),
            other => {
                Err(format!("on_type_change {other:?} is not a policy; use rebuild (the default), dead_letter or stop"))
            }
        }
    }
}

impl OnDrop {
    pub fn parse(s: &str) -> Result<OnDrop, String> {
        match s.trim() {
            "keep" => Ok(OnDrop::Keep),
            "null" => Ok(OnDrop::Null),
            "drop" => Ok(OnDrop::Drop),
            other => Err(format!("on_drop {other:?} is not a policy; use keep (the default), null or drop")),
        }
    }
}

/// The read model's policies, carried by each of its tables, with the file
/// they come from (messages name the command to run on it).
#[derive(Clone, Debug)]
pub struct SchemaPolicy {
    pub on_type_change: OnTypeChange,
    pub on_drop: OnDrop,
    pub file: Arc<Path>,
}

impl Default for SchemaPolicy {
    fn default() -> SchemaPolicy {
        SchemaPolicy {
            on_type_change: OnTypeChange::default(),
            on_drop: OnDrop::default(),
            file: Arc::from(Path::new("")),
        }
    }
}
