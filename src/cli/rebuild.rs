//! `projector rebuild`: rebuilds each selected table's target, in each
//! selected sink, as a new version and swaps it in
//! ([`projector::rebuild::version`]). The same command started in several
//! processes shares the work; started again after a crash it resumes. It
//! prints what it did and how to roll back.
//!
//! An expert mode (`--target` with `--rebuild-id`, hidden) only fills a
//! named physical target, with no version, parity unless `--parity`, and no
//! swap: what the engine's own tests drive.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use projector::mapping::ReadModel;
use projector::ops::Health;
use projector::pipeline::ErrorTolerance;
use projector::pipeline::dead_letter::DeadLetters;
use projector::rebuild::parity::parity;
use projector::rebuild::version::{Rebuilt, VersionRebuild};
use projector::rebuild::{Rebuild, RebuildError, RebuildSink, RowSource, defaults};
use projector::sink::Sink;
use projector::sink::catalog::Catalog;
use projector::source::mirror::{Mirror, whole_mirror};

use super::{DecodeArgs, SinkArgs};

#[derive(clap::Args)]
pub struct RebuildArgs {
    /// The read-model file whose tables are rebuilt.
    read_model: PathBuf,
    /// Only this sink (default: every sink the read model writes).
    #[arg(long, value_enum)]
    sink: Option<RebuildSink>,
    /// Only the table of this topic (default: every table of the sink).
    #[arg(long)]
    table: Option<String>,
    #[arg(long, value_enum, default_value_t = RowSource::Mirror)]
    from: RowSource,
    /// This worker's name as range owner. Default: host and process id.
    #[arg(long)]
    worker: Option<String>,
    /// Ranges the key space is split into, for workers to share.
    #[arg(long, default_value_t = defaults::RANGES)]
    ranges: usize,
    #[arg(long, default_value_t = defaults::PAGE_ROWS)]
    page_rows: i64,
    /// How long a range stays claimed without a checkpoint.
    #[arg(long, default_value_t = defaults::LEASE.as_secs())]
    lease_seconds: u64,
    #[arg(long, env = "PROJECTOR_REBUILD_MAX_ROWS_PER_SECOND")]
    max_rows_per_second: Option<u64>,
    /// How long to wait for running instances to start writing the new version.
    #[arg(long, default_value_t = defaults::MEMBERS_TIMEOUT.as_secs())]
    members_timeout_seconds: u64,
    /// How long parity checks differences again (the live stream moves
    /// both sides) before it fails and leaves the version unswapped.
    #[arg(long, default_value_t = defaults::PARITY_TIMEOUT.as_secs())]
    parity_timeout_seconds: u64,
    #[arg(long, env = "PROJECTOR_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Dead-letter topic. Default: `projector.<read_model>.dlq`.
    #[arg(long, env = "PROJECTOR_DLQ_TOPIC")]
    dlq_topic: Option<String>,
    #[arg(long, env = "PROJECTOR_ERRORS_TOLERANCE", value_enum, default_value_t = ErrorTolerance::None)]
    errors_tolerance: ErrorTolerance,
    #[command(flatten)]
    sinks: SinkArgs,
    /// With --from kafka: how the topic's records are read.
    #[command(flatten)]
    decoding: DecodeArgs,
    /// Expert: fill this physical target only (no version, no swap).
    #[arg(long, hide = true, requires = "rebuild_id")]
    target: Option<String>,
    /// Expert, with --target: the rebuild's id.
    #[arg(long, hide = true, requires = "target")]
    rebuild_id: Option<String>,
    /// Expert, with --target: check parity once after the copy.
    #[arg(long, hide = true)]
    parity: bool,
}

/// Runs the command.
pub async fn run(args: RebuildArgs) -> anyhow::Result<()> {
    let model = Arc::new(ReadModel::load(&args.read_model)?);
    let wanted = |s: RebuildSink| args.sink.is_none_or(|w| w == s);
    let mut done = 0;
    if wanted(RebuildSink::Elasticsearch) && model.tables.iter().any(|t| t.elasticsearch.is_some()) {
        done += each_table(&args, &model, Arc::new(args.sinks.elasticsearch()?)).await?;
    }
    if wanted(RebuildSink::Postgres) && model.tables.iter().any(|t| t.postgres.is_some()) {
        done += each_table(&args, &model, Arc::new(args.sinks.postgres(&model))).await?;
    }
    if wanted(RebuildSink::Bigquery) && model.tables.iter().any(|t| t.bigquery.is_some()) {
        done += each_table(&args, &model, Arc::new(args.sinks.bigquery(&model)?)).await?;
    }
    if done == 0 {
        anyhow::bail!(
            "{}: no target matches --sink {} --table {}; see `projector versions {}`",
            model.file.display(),
            args.sink.map_or("(any)", RebuildSink::as_str),
            args.table.as_deref().unwrap_or("(any)"),
            model.file.display()
        );
    }
    Ok(())
}

/// Rebuilds the selected tables of one sink, one after the other.
async fn each_table<S: Sink>(args: &RebuildArgs, model: &Arc<ReadModel>, sink: Arc<S>) -> anyhow::Result<usize> {
    let tables: Vec<_> = model
        .tables
        .iter()
        .filter(|t| sink.target(t).is_some() && args.table.as_deref().is_none_or(|topic| topic == t.topic))
        .collect();
    if tables.is_empty() {
        return Ok(0);
    }
    sink.prepare(model).await?;
    let dlq = args.dlq_topic.clone().unwrap_or_else(|| format!("projector.{}.dlq", model.name));
    let dead_letters = DeadLetters::new(&args.brokers, &dlq, &model.name)?;
    let worker = args.worker.clone().unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    if let (Some(target), Some(id)) = (&args.target, &args.rebuild_id) {
        if args.sink.is_none() || args.table.is_none() {
            anyhow::bail!("--target names one physical target: give --sink and --table too");
        }
        let table = tables[0];
        let mirror = whole_mirror(table).map_err(RebuildError::from)?.to_string();
        let copy = Rebuild {
            sink: sink.clone(),
            model: model.clone(),
            topic: table.topic.clone(),
            mirror: mirror.clone(),
            target: target.clone(),
            rebuild_id: id.clone(),
            worker,
            postgres_url: args.sinks.postgres_url.clone(),
            ranges: args.ranges,
            page_rows: args.page_rows,
            lease: Duration::from_secs(args.lease_seconds.max(1)),
            max_rows_per_second: args.max_rows_per_second,
            dead_letters,
            health: Health::default(),
            tolerance: args.errors_tolerance,
        };
        return named_target(args, copy, &*sink).await.map(|()| 1);
    }
    let catalog = Arc::new(
        Catalog::connect(&args.sinks.postgres_url)
            .await
            .context("opening the version catalog in the staging PostgreSQL (--postgres-url)")?,
    );
    let decode = match args.from {
        RowSource::Kafka => args.decoding.options(model, &args.brokers).await?,
        RowSource::Mirror => Default::default(),
    };
    for table in &tables {
        let rebuild = VersionRebuild {
            sink: sink.clone(),
            model: model.clone(),
            catalog: catalog.clone(),
            topic: table.topic.clone(),
            from: args.from,
            brokers: args.brokers.clone(),
            decode: decode.clone(),
            worker: worker.clone(),
            postgres_url: args.sinks.postgres_url.clone(),
            ranges: args.ranges,
            page_rows: args.page_rows,
            lease: Duration::from_secs(args.lease_seconds.max(1)),
            max_rows_per_second: args.max_rows_per_second,
            dead_letters: dead_letters.clone(),
            health: Health::default(),
            tolerance: args.errors_tolerance,
            members_timeout: Duration::from_secs(args.members_timeout_seconds),
            parity_timeout: Duration::from_secs(args.parity_timeout_seconds),
        };
        let rebuilt = rebuild.run().await?;
        report(model, &table.topic, &rebuilt);
    }
    Ok(tables.len())
}

/// Prints what one rebuild did and how to undo it.
fn report(model: &ReadModel, topic: &str, r: &Rebuilt) {
    let sink = &r.target.sink;
    println!(
        "{sink} {} (topic {topic}): copied {} of {} rows into v{} ({}) in this process (rebuild {})",
        r.target.logical, r.copied.rows, r.copied.total, r.version.version, r.version.physical, r.rebuild_id
    );
    println!("{sink} {}: parity passed: {}", r.target.logical, r.parity);
    let previous = r.previous.as_ref().map_or("none".to_string(), |p| format!("v{} ({})", p.version, p.physical));
    if r.swapped_here {
        println!(
            "{sink} {}: swapped: readers now see v{}; previous {previous} is kept for rollback (written by every instance whose file it still matches)",
            r.target.logical, r.version.version
        );
    } else {
        println!(
            "{sink} {}: already swapped by another worker of this rebuild: readers see v{}; previous {previous}",
            r.target.logical, r.version.version
        );
    }
    println!(
        "{sink} {}: roll back with `projector rollback {} --sink {sink} --table {topic}`; drop the previous version with `projector gc`",
        r.target.logical,
        model.file.display()
    );
}

/// The expert mode: one worker filling a named target, then parity if asked.
async fn named_target<S: Sink>(args: &RebuildArgs, copy: Rebuild<S>, sink: &S) -> anyhow::Result<()> {
    let copied = copy.copy().await?;
    println!("rebuild {}: copied {} of {} rows into {}", copy.rebuild_id, copied.rows, copied.total, copy.target);
    if args.parity {
        let (client, conn) = tokio_postgres::connect(&args.sinks.postgres_url, tokio_postgres::NoTls)
            .await
            .context("connecting to the staging PostgreSQL (--postgres-url) for parity")?;
        tokio::spawn(conn);
        let mirror = Mirror::open(&client, &copy.mirror).await.map_err(RebuildError::from)?;
        let report = parity(&client, &mirror, sink, &copy.target, args.page_rows).await?;
        println!("parity: {report}");
        if !report.passed() {
            return Err(RebuildError::Parity { rebuild: copy.rebuild_id.clone(), summary: report.to_string() }.into());
        }
    }
    Ok(())
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "projector".into())
}
