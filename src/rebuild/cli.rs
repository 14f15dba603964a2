//! `projector rebuild`: one worker of a rebuild from the command line. Until
//! versioned targets exist it takes the physical target explicitly
//! (`--target`); start it in several processes with the same `--rebuild-id`
//! to split the work, and again after a crash to resume. With `--parity` it
//! checks the target against the mirror once the copy is done and fails on
//! any difference.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{Rebuild, RebuildError, connect, parity::parity};
use crate::mapping::ReadModel;
use crate::ops::Health;
use crate::pipeline::ErrorTolerance;
use crate::pipeline::dead_letter::DeadLetters;
use crate::sink::Sink;
use crate::sink::elasticsearch::Elasticsearch;
use crate::sink::postgres::Postgres;
use crate::source::mirror::{Mirror, whole_mirror};

/// Where the rows come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RowSource {
    /// The staging PostgreSQL mirror of the table.
    Mirror,
}

/// The sinks a rebuild can fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RebuildSink {
    Elasticsearch,
    Postgres,
}

#[derive(clap::Args, Debug)]
pub struct RebuildArgs {
    /// The read-model file whose table is rebuilt.
    pub read_model: PathBuf,
    #[arg(long, value_enum)]
    pub sink: RebuildSink,
    /// The topic of the table to rebuild.
    #[arg(long)]
    pub table: String,
    #[arg(long, value_enum, default_value_t = RowSource::Mirror)]
    pub from: RowSource,
    /// The physical target to fill: an index or table name.
    #[arg(long)]
    pub target: String,
    /// Names the rebuild; workers with the same id share its ranges.
    #[arg(long)]
    pub rebuild_id: String,
    /// This worker's name as range owner. Default: host and process id.
    #[arg(long)]
    pub worker: Option<String>,
    #[arg(long, default_value_t = 8)]
    pub ranges: usize,
    #[arg(long, default_value_t = 1000)]
    pub page_rows: i64,
    /// How long a range stays claimed without a checkpoint.
    #[arg(long, default_value_t = 30)]
    pub lease_seconds: u64,
    #[arg(long, env = "PROJECTOR_REBUILD_MAX_ROWS_PER_SECOND")]
    pub max_rows_per_second: Option<u64>,
    /// Check the target against the mirror when the copy is done.
    #[arg(long)]
    pub parity: bool,
    #[arg(long, env = "PROJECTOR_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    #[arg(long, env = "PROJECTOR_ELASTICSEARCH_URL", default_value = "http://127.0.0.1:9200")]
    pub elasticsearch_url: String,
    #[arg(
        long,
        env = "PROJECTOR_POSTGRES_URL",
        default_value = "host=127.0.0.1 port=5432 user=postgres dbname=projector"
    )]
    pub postgres_url: String,
    /// Dead-letter topic. Default: `projector.<read_model>.dlq`.
    #[arg(long, env = "PROJECTOR_DLQ_TOPIC")]
    pub dlq_topic: Option<String>,
    #[arg(long, env = "PROJECTOR_ERRORS_TOLERANCE", value_enum, default_value_t = ErrorTolerance::None)]
    pub errors_tolerance: ErrorTolerance,
}

/// Why the command failed before or around the rebuild itself.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    ReadModel(#[from] crate::mapping::ReadModelError),
    #[error(transparent)]
    Rebuild(#[from] RebuildError),
    #[error("{0}")]
    Setup(String),
}

/// Runs one worker, then parity if asked.
pub async fn run(args: RebuildArgs) -> Result<(), CommandError> {
    let model = Arc::new(ReadModel::load(&args.read_model)?);
    let table = model.table(&args.table).ok_or_else(|| {
        CommandError::Setup(format!("{}: no table for topic {}; check --table", args.read_model.display(), args.table))
    })?;
    let mirror = whole_mirror(table).map_err(RebuildError::from)?.to_string();
    match args.sink {
        RebuildSink::Postgres => {
            let sink = Arc::new(Postgres::new(&args.postgres_url, model.clone()));
            worker(&args, model, mirror, sink).await
        }
        RebuildSink::Elasticsearch => {
            let sink = Elasticsearch::new(&args.elasticsearch_url).map_err(|e| CommandError::Setup(e.to_string()))?;
            worker(&args, model, mirror, Arc::new(sink)).await
        }
    }
}

async fn worker<S: Sink>(
    args: &RebuildArgs,
    model: Arc<ReadModel>,
    mirror: String,
    sink: Arc<S>,
) -> Result<(), CommandError> {
    let dlq = args.dlq_topic.clone().unwrap_or_else(|| format!("projector.{}.dlq", model.name));
    let dead_letters =
        DeadLetters::new(&args.brokers, &dlq, &model.name).map_err(|e| CommandError::Setup(e.to_string()))?;
    let rebuild = Rebuild {
        sink: sink.clone(),
        model,
        topic: args.table.clone(),
        mirror: mirror.clone(),
        target: args.target.clone(),
        rebuild_id: args.rebuild_id.clone(),
        worker: args.worker.clone().unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id())),
        postgres_url: args.postgres_url.clone(),
        ranges: args.ranges,
        page_rows: args.page_rows,
        lease: Duration::from_secs(args.lease_seconds.max(1)),
        max_rows_per_second: args.max_rows_per_second,
        dead_letters,
        health: Health::default(),
        tolerance: args.errors_tolerance,
    };
    let copied = rebuild.copy().await?;
    println!("rebuild {}: copied {} of {} rows into {}", args.rebuild_id, copied.rows, copied.total, args.target);
    if args.parity {
        let client = connect(&args.postgres_url, &args.rebuild_id).await?;
        let mirror = Mirror::open(&client, &mirror).await.map_err(RebuildError::from)?;
        let report = parity(&client, &mirror, &*sink, &args.target, args.page_rows).await?;
        println!("parity: {report}");
        if !report.passed() {
            return Err(RebuildError::Parity { rebuild: args.rebuild_id.clone(), summary: report.to_string() }.into());
        }
    }
    Ok(())
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "projector".into())
}
