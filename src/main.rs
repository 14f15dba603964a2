//! The `projector` command: run a read model, check a read-model file, or
//! feed the demo.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use projector::decode::{DecodeOptions, SchemaHistory, SchemaRegistry, SchemasEnable};
use projector::demo::bus_booking::{BusBooking, Timeline, demo_alter_story, demo_story};
use projector::demo::produce::FixtureProducer;
use projector::mapping::ReadModel;
use projector::ops::{Health, http};
use projector::pipeline::batch::BatchLimits;
use projector::pipeline::dead_letter::DeadLetters;
use projector::pipeline::versions::Versions;
use projector::pipeline::{ErrorTolerance, Patience, Pipeline, PipelineError, Shutdown};
use projector::rebuild::auto::AutoRebuild;
use projector::sink::Sink;
use projector::sink::bigquery::{Auth, BigQuery};
use projector::sink::catalog::Catalog;
use projector::sink::elasticsearch::Elasticsearch;
use projector::sink::postgres::Postgres;
use projector::source::consumer::{ConsumerGroup, GroupSettings};

#[path = "cli/versions.rs"]
mod versions_command;
use versions_command::{VersionArgs, VersionStep, each_target};
#[path = "cli/rebuild.rs"]
mod rebuild_command;

#[path = "cli/plan.rs"]
mod plan_command;

#[derive(Parser)]
#[command(name = "projector", version, about = "Keeps read models in step with Debezium change events on Kafka")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume a read model's topics and keep its sinks up to date.
    Run(RunArgs),
    /// Check a read-model file; prints each problem with file:line.
    Validate { file: PathBuf },
    /// Print what `run` would create, and how each live target compares with the file.
    ///
    /// First the offline plan: index mappings and tables `run` creates. Then,
    /// for each target's current version (from the version catalog), its live
    /// shape (the index mapping, the table's columns and types) and the file's
    /// section recorded when the version was built, against the file now:
    ///
    ///   unchanged  the target already is what the file says;
    ///   in place   `run` applies the printed DDL or mapping change on start
    ///              (a new field or computed field, a PostgreSQL or BigQuery
    ///              widening); a removed field is no longer written, its
    ///              stored values stay;
    ///   rebuild    the target cannot follow in place (an Elasticsearch type
    ///              or analyzer change, e.g. `Route: text(english)`, a
    ///              narrowing, a rename, a changed `where`, a changed
    ///              expression, constant or value map): why, and the
    ///              `projector rebuild` command that builds the next version
    ///              while readers keep the current one.
    ///
    /// It writes nothing to any target. Without a reachable server it prints
    /// the offline plan and names the server it could not reach. BigQuery
    /// targets record no read-model section yet and are compared by shape only.
    /// `run` makes the same check before it writes a target's current version:
    /// it applies in-place changes and holds a target that needs a rebuild.
    Plan(plan_command::PlanArgs),
    /// List the versions of each sink's targets: physical name and state.
    ///
    /// Every target readers use (an Elasticsearch alias, a PostgreSQL view
    /// pair `<table>`/`<table>_live`, a BigQuery view `<table>_live`) is held
    /// by a version: a physical index or table (`<name>_vN`). Readers see the
    /// *current* version. A rebuild fills a *building* one beside it; the swap
    /// makes it current and keeps the old one as *previous*, still written,
    /// so `rollback` can return to it until `gc` drops it.
    Versions(VersionArgs),
    /// Point readers back at the previous version (kept up to date since the
    /// swap); the version rolled back from becomes previous, so a second
    /// rollback returns to it.
    Rollback(VersionArgs),
    /// Drop the previous versions (after printing what it drops); rollback is
    /// no longer possible for them.
    Gc {
        #[command(flatten)]
        args: VersionArgs,
        /// Print what would be dropped and drop nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show how far each sink's consumer group is behind the end of its topics.
    Lag {
        read_model: PathBuf,
        #[arg(long, env = "PROJECTOR_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Consumer group prefix, as given to `run --group`.
        #[arg(long, env = "PROJECTOR_GROUP")]
        group: Option<String>,
        /// Exit 0 only when every partition is fully committed.
        #[arg(long)]
        check: bool,
    },
    /// Rebuild each selected table's target as a new version beside the
    /// live stream and swap it in: version N+1 begun (or the building one
    /// resumed), filled from the staging PostgreSQL mirror, checked for
    /// parity, swapped once. Resumable after a crash; the same command in
    /// several processes shares the work.
    Rebuild(rebuild_command::RebuildArgs),
    /// Measure throughput, latency, memory and CPU per sink against direct
    /// writes and Debezium's JDBC sink (needs scripts/stack up).
    Bench(projector::bench::BenchArgs),
    /// Write the demo's bus-booking change events (SQL Server format) to Kafka.
    DemoProduce {
        #[arg(long, env = "PROJECTOR_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Number of trips in the snapshot (bookings are twice that).
        #[arg(long, default_value_t = 12)]
        trips: i32,
        /// Write `{schema, payload}` JSON (JsonConverter schemas.enable=true).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        schemas: bool,
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// 1: the snapshot, bookings, a fare change, a deleted trip. 2 (after
        /// 1): `ALTER COLUMN Fare decimal(14,4)` at the source and every
        /// trip on sale re-priced with four decimals.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
        chapter: u8,
    },
}

/// Where the sinks and the version catalog are.
#[derive(clap::Args, Clone)]
struct SinkArgs {
    #[arg(long, env = "PROJECTOR_ELASTICSEARCH_URL", default_value = "http://127.0.0.1:9200")]
    elasticsearch_url: String,
    /// BigQuery REST endpoint: Google's by default, or an emulator's.
    #[arg(long, env = "PROJECTOR_BIGQUERY_URL", default_value = "https://bigquery.googleapis.com")]
    bigquery_url: String,
    #[arg(long, env = "PROJECTOR_BIGQUERY_PROJECT", default_value = "projector-local")]
    bigquery_project: String,
    /// Dataset holding the read model's tables; default: the read model's name with '-' as '_'.
    #[arg(long, env = "PROJECTOR_BIGQUERY_DATASET")]
    bigquery_dataset: Option<String>,
    /// `none` (emulator), `adc` (Application Default Credentials) or a path to a service-account key file.
    #[arg(long, env = "PROJECTOR_BIGQUERY_AUTH", default_value = "adc")]
    bigquery_auth: String,
    /// Staging PostgreSQL, as a libpq-style connection string. It also holds
    /// the version catalog of every sink, so Elasticsearch- or BigQuery-only
    /// deployments need it too (for versions, rebuilds and rollbacks).
    #[arg(
        long,
        env = "PROJECTOR_POSTGRES_URL",
        default_value = "host=127.0.0.1 port=5432 user=postgres dbname=projector"
    )]
    postgres_url: String,
}

/// How records are read: their size limit, their JSON form, and where
/// their schemas come from (with the read model's schema-change topic).
#[derive(clap::Args, Clone)]
struct DecodeArgs {
    #[arg(long, env = "PROJECTOR_MAX_RECORD_BYTES", default_value_t = 8 * 1024 * 1024)]
    max_record_bytes: usize,
    /// Whether JSON values carry `{schema, payload}` (the connector's
    /// value.converter.schemas.enable); a record of the other form is dead-lettered.
    #[arg(long, env = "PROJECTOR_SCHEMAS_ENABLE", value_enum, default_value_t = SchemasEnable::Auto)]
    schemas_enable: SchemasEnable,
    /// Confluent-compatible schema registry for Avro records (AvroConverter's
    /// wire format), e.g. http://registry:8081, or Apicurio's
    /// http://host:8080/apis/ccompat/v7. Without it, Avro records are dead-lettered.
    #[arg(long, env = "PROJECTOR_SCHEMA_REGISTRY_URL")]
    schema_registry_url: Option<String>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The read-model file, e.g. mappings/bus_booking.yaml.
    read_model: PathBuf,
    #[arg(long, env = "PROJECTOR_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[command(flatten)]
    sinks: SinkArgs,
    /// Bulk requests in flight at once per read model (other sinks write one
    /// batch at a time).
    #[arg(long, env = "PROJECTOR_ELASTICSEARCH_IN_FLIGHT", default_value_t = 3)]
    elasticsearch_in_flight: usize,
    /// How often each instance reads the version catalog again, to start
    /// writing a version another instance began or swapped.
    #[arg(long, env = "PROJECTOR_VERSION_REFRESH_MS", default_value_t = 5_000)]
    version_refresh_ms: u64,
    /// Consumer group prefix; each sink appends `.<sink>`. Default: `projector.<read_model>`.
    #[arg(long, env = "PROJECTOR_GROUP")]
    group: Option<String>,
    /// Dead-letter topic. Default: `projector.<read_model>.dlq`.
    #[arg(long, env = "PROJECTOR_DLQ_TOPIC")]
    dlq_topic: Option<String>,
    /// Address for /metrics and /health.
    #[arg(long, env = "PROJECTOR_HTTP_ADDR", default_value = "127.0.0.1:9464")]
    http_addr: SocketAddr,
    #[arg(long, env = "PROJECTOR_BATCH_RECORDS", default_value_t = 2000)]
    batch_records: usize,
    #[arg(long, env = "PROJECTOR_BATCH_BYTES", default_value_t = 8 * 1024 * 1024)]
    batch_bytes: usize,
    #[arg(long, env = "PROJECTOR_LINGER_MS", default_value_t = 50)]
    linger_ms: u64,
    /// Pause consumption when this many bytes wait to be written.
    #[arg(long, env = "PROJECTOR_MAX_BUFFER_BYTES", default_value_t = 32 * 1024 * 1024)]
    max_buffer_bytes: usize,
    #[command(flatten)]
    decoding: DecodeArgs,
    /// `all`: dead-letter bad records and carry on; `none`: stop on the first.
    #[arg(long, env = "PROJECTOR_ERRORS_TOLERANCE", value_enum, default_value_t = ErrorTolerance::All)]
    errors_tolerance: ErrorTolerance,
    /// Rows per second at most for the rebuilds this service begins itself
    /// (`on_type_change: rebuild`), as `projector rebuild --max-rows-per-second`.
    #[arg(long, env = "PROJECTOR_REBUILD_MAX_ROWS_PER_SECOND")]
    rebuild_max_rows_per_second: Option<u64>,
    /// Mirror rows per page (one sink write each) of those rebuilds.
    #[arg(long, env = "PROJECTOR_REBUILD_PAGE_ROWS", default_value_t = projector::rebuild::defaults::PAGE_ROWS)]
    rebuild_page_rows: i64,
    /// Kafka session timeout: how fast a dead instance's partitions move.
    #[arg(long, env = "PROJECTOR_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    session_timeout_ms: u64,
    /// Kafka max.poll.interval.ms. projector polls on while it waits for a
    /// sink or the schema registry, so this only bounds a stuck process.
    #[arg(long, env = "PROJECTOR_MAX_POLL_INTERVAL_MS", default_value_t = 300_000)]
    max_poll_interval_ms: u64,
    #[arg(long, env = "PROJECTOR_SHUTDOWN_GRACE_MS", default_value_t = 30_000)]
    shutdown_grace_ms: u64,
    /// A record (or batch) retried for longer than this reports its sink
    /// down in /health/ready, naming the record, until it lands.
    #[arg(long, env = "PROJECTOR_STUCK_AFTER_MS", default_value_t = 60_000)]
    stuck_after_ms: u64,
    /// Log format: json (default) or text.
    #[arg(long, env = "PROJECTOR_LOG_FORMAT", default_value = "json")]
    log_format: String,
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROJECTOR_LOG")
        .unwrap_or_else(|_| "info,rdkafka=warn,refinery_core=warn,tokio_postgres=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "text" {
        builder.init();
    } else {
        builder.json().flatten_event(true).with_current_span(false).init();
    }
}

fn main() -> std::process::ExitCode {
    // glibc gives threads that contend for malloc their own arenas (up to 8
    // per core), each keeping freed memory: with Kafka, HTTP and worker
    // threads that inflated RSS for no speed gain. Two arenas, set before
    // any thread starts.
    // SAFETY: mallopt only tunes the allocator; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(async_main()),
        Err(e) => {
            eprintln!("projector: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn async_main() -> std::process::ExitCode {
    projector::install_tls_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args).await,
        Command::Validate { file } => validate(&file),
        Command::Plan(args) => plan_command::plan(&args).await,
        Command::Lag { read_model, brokers, group, check } => lag(&read_model, &brokers, group, check).await,
        Command::DemoProduce { brokers, trips, schemas, partitions, chapter } => {
            demo_produce(&brokers, trips, schemas, partitions, chapter).await
        }
        Command::Bench(args) => projector::bench::run(args).await,
        Command::Rebuild(args) => {
            init_logs("text");
            rebuild_command::run(args).await
        }
        Command::Versions(args) => each_target(&args, VersionStep::List).await,
        Command::Rollback(args) => each_target(&args, VersionStep::Rollback).await,
        Command::Gc { args, dry_run } => each_target(&args, VersionStep::Gc { dry_run }).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("projector: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn validate(file: &std::path::Path) -> anyhow::Result<()> {
    let model = match ReadModel::load(file) {
        Ok(m) => m,
        Err(e) => {
            let n = e.problems().len().max(1);
            anyhow::bail!("{e}\n{} problem{} in {}", n, if n == 1 { "" } else { "s" }, file.display());
        }
    };
    println!("{}: read model {:?} is valid ({} tables)", file.display(), model.name, model.tables.len());
    // Not an error: a table without a whole mirror rebuilds with --from kafka.
    for t in &model.tables {
        match projector::source::mirror::whole_mirror(t) {
            Ok(mirror) => println!("  {}: rebuilds from its mirror {mirror}", t.topic),
            Err(e) => println!("  {}: {e}", t.topic),
        }
    }
    Ok(())
}

async fn lag(file: &std::path::Path, brokers: &str, group: Option<String>, check: bool) -> anyhow::Result<()> {
    let model = ReadModel::load(file)?;
    let prefix = group.unwrap_or_else(|| format!("projector.{}", model.name));
    let mut behind = Vec::new();
    for (sink, topics) in sink_topics(&model) {
        let group = format!("{prefix}.{sink}");
        let (b, g) = (brokers.to_string(), group.clone());
        let parts = tokio::task::spawn_blocking(move || {
            projector::source::consumer::group_lag(&b, &g, &topics, Duration::from_secs(10))
        })
        .await?
        .with_context(|| format!("reading offsets of group {group}; is Kafka up?"))?;
        let total: i64 = parts.iter().map(|p| p.lag()).sum();
        println!("{:<48} {:>9} {:>12} {:>12} {:>8}", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG");
        for p in &parts {
            println!("{:<48} {:>9} {:>12} {:>12} {:>8}", p.topic, p.partition, p.committed, p.end, p.lag());
        }
        println!("group {group}: total lag {total}\n");
        if total > 0 {
            behind.push(format!("{group} is {total} records behind"));
        }
    }
    if check && !behind.is_empty() {
        anyhow::bail!("{}", behind.join("; "));
    }
    Ok(())
}

/// Each sink the read model writes, with the topics it reads.
fn sink_topics(model: &ReadModel) -> Vec<(&'static str, Vec<String>)> {
    let pick = |f: fn(&projector::mapping::TableMapping) -> bool| {
        model.tables.iter().filter(|t| f(t)).map(|t| t.topic.clone()).collect::<Vec<_>>()
    };
    [
        ("elasticsearch", pick(|t| t.elasticsearch.is_some())),
        ("postgres", pick(|t| t.postgres.is_some())),
        ("bigquery", pick(|t| t.bigquery.is_some())),
    ]
    .into_iter()
    .filter(|(_, t)| !t.is_empty())
    .collect()
}

async fn demo_produce(brokers: &str, trips: i32, schemas: bool, partitions: i32, chapter: u8) -> anyhow::Result<()> {
    let db = BusBooking::new("vexere");
    let mut clock = Timeline::default();
    let mut records = demo_story(&db, &mut clock, trips, schemas);
    if chapter == 2 {
        // The same clock, so the second chapter follows the first in the log.
        records = demo_alter_story(&db, &mut clock, trips, schemas);
    }
    let producer = FixtureProducer::new(brokers)?;
    producer.create_topics(&[db.trips.topic(), db.bookings.topic(), db.seats.topic()], partitions).await?;
    producer.send_all(&records).await?;
    println!("produced {} change events to {} and {}", records.len(), db.trips.topic(), db.bookings.topic());
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logs(&args.log_format);
    let model = Arc::new(ReadModel::load(&args.read_model)?);
    let metrics = http::install_metrics()?;
    let health = Health::default();
    tokio::spawn({
        let health = health.clone();
        async move {
            if let Err(e) = http::serve(args.http_addr, health, metrics).await {
                tracing::error!(error = %e, "ops endpoint stopped");
            }
        }
    });
    let group_prefix = args.group.clone().unwrap_or_else(|| format!("projector.{}", model.name));
    let dlq_topic = args.dlq_topic.clone().unwrap_or_else(|| format!("projector.{}.dlq", model.name));
    let dead_letters = DeadLetters::new(&args.brokers, &dlq_topic, &model.name)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    let decode = args.decoding.options(&model, &args.brokers).await?;
    let catalog = Arc::new(
        Catalog::connect(&args.sinks.postgres_url)
            .await
            .context("opening the version catalog in the staging PostgreSQL (--postgres-url)")?,
    );
    let common = PipelineParts {
        catalog,
        model: model.clone(),
        args: &args,
        group_prefix: &group_prefix,
        dead_letters: &dead_letters,
        health: &health,
        decode: &decode,
        stop: &stop_rx,
    };
    let mut tasks = tokio::task::JoinSet::new();
    if model.tables.iter().any(|t| t.elasticsearch.is_some()) {
        common.spawn(
            &mut tasks,
            Arc::new(args.sinks.elasticsearch()?.with_max_in_flight(args.elasticsearch_in_flight)),
        )?;
    }
    if model.tables.iter().any(|t| t.postgres.is_some()) {
        common.spawn(&mut tasks, Arc::new(args.sinks.postgres(&model)))?;
    }
    if model.tables.iter().any(|t| t.bigquery.is_some()) {
        common.spawn(&mut tasks, Arc::new(args.sinks.bigquery(&model)?))?;
    }
    if tasks.is_empty() {
        anyhow::bail!("{}: no table has an elasticsearch, postgres or bigquery section", model.file.display());
    }
    let stop_tx = Arc::new(stop_tx);
    tokio::spawn({
        let stop_tx = stop_tx.clone();
        async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested: stop fetching, flush, commit");
            let _ = stop_tx.send(true);
        }
    });
    // The first pipeline to stop for good marks its sink down and stops the
    // others (they flush and commit what they have); then the process exits
    // non-zero so that its supervisor restarts it.
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        let (sink, result) = match joined {
            Ok((sink, Ok(Ok(())))) => {
                tracing::info!(sink, "pipeline stopped");
                continue;
            }
            Ok((sink, Ok(Err(e)))) => (sink, anyhow::Error::from(e)),
            Ok((sink, Err(panic))) => (sink, anyhow::anyhow!("{sink}: pipeline task panicked: {panic}")),
            Err(panic) => ("unknown", anyhow::anyhow!("pipeline task panicked: {panic}")),
        };
        health.stopped(sink, &format!("{result:#}"));
        tracing::error!(sink, error = %format!("{result:#}"), "pipeline stopped for good; stopping the others, then exiting");
        let _ = stop_tx.send(true);
        failure.get_or_insert(result);
    }
    if let Some(e) = failure {
        return Err(e);
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The running pipelines, each ending with its sink's name and how it ended.
type PipelineTasks = tokio::task::JoinSet<(&'static str, Result<Result<(), PipelineError>, tokio::task::JoinError>)>;

/// What every sink's pipeline shares.
struct PipelineParts<'a> {
    catalog: Arc<Catalog>,
    model: Arc<ReadModel>,
    args: &'a RunArgs,
    group_prefix: &'a str,
    dead_letters: &'a DeadLetters,
    health: &'a Health,
    decode: &'a DecodeOptions,
    stop: &'a tokio::sync::watch::Receiver<bool>,
}

impl PipelineParts<'_> {
    /// Joins the sink's own consumer group and runs its pipeline.
    fn spawn<S: Sink>(&self, tasks: &mut PipelineTasks, sink: Arc<S>) -> anyhow::Result<()> {
        let settings = GroupSettings {
            brokers: self.args.brokers.clone(),
            group_id: format!("{}.{}", self.group_prefix, sink.name()),
            client_id: format!("projector-{}-{}-{}", self.model.name, sink.name(), std::process::id()),
            auto_offset_reset: "earliest".into(),
            session_timeout: Duration::from_millis(self.args.session_timeout_ms),
            max_poll_interval: Duration::from_millis(self.args.max_poll_interval_ms),
        };
        let topics: Vec<String> =
            self.model.tables.iter().filter(|t| sink.target(t).is_some()).map(|t| t.topic.clone()).collect();
        let group = Arc::new(ConsumerGroup::join(&settings, &topics)?);
        tracing::info!(read_model = %self.model.name, sink = sink.name(), group = %settings.group_id, ?topics, "starting pipeline");
        let pipeline = Pipeline {
            sink: sink.clone(),
            model: self.model.clone(),
            group,
            dead_letters: self.dead_letters.clone(),
            health: self.health.clone(),
            limits: BatchLimits {
                max_records: self.args.batch_records,
                max_bytes: self.args.batch_bytes,
                linger: Duration::from_millis(self.args.linger_ms),
            },
            max_buffer_bytes: self.args.max_buffer_bytes,
            decode: self.decode.clone(),
            tolerance: self.args.errors_tolerance,
            shutdown_grace: Duration::from_millis(self.args.shutdown_grace_ms),
            stuck_after: Duration::from_millis(self.args.stuck_after_ms),
            versions: self.versions(&sink, &settings.client_id),
            refresh: Duration::from_millis(self.args.version_refresh_ms),
            patience: Patience::Forever,
        };
        let name = pipeline.sink.name();
        // Its own task, so that a panic in it is told apart and named.
        let run = tokio::spawn(pipeline.run(Shutdown::new(self.stop.clone())));
        tasks.spawn(async move { (name, run.await) });
        Ok(())
    }
}

impl PipelineParts<'_> {
    /// The sink's versions, its rebuild requests (`on_type_change:
    /// rebuild`) served in this process until shutdown.
    fn versions<S: Sink>(&self, sink: &Arc<S>, member: &str) -> Versions {
        let versions = Versions::new(self.catalog.clone(), &self.model.name, sink.name(), member);
        let (to, requests) = tokio::sync::mpsc::unbounded_channel();
        versions.ask_rebuilds_of(to);
        let auto = AutoRebuild {
            sink: sink.clone(),
            model: self.model.clone(),
            catalog: self.catalog.clone(),
            postgres_url: self.args.sinks.postgres_url.clone(),
            brokers: self.args.brokers.clone(),
            decode: self.decode.clone(),
            dead_letters: self.dead_letters.clone(),
            health: self.health.clone(),
            worker: member.to_string(),
            tolerance: self.args.errors_tolerance,
            max_rows_per_second: self.args.rebuild_max_rows_per_second,
            page_rows: self.args.rebuild_page_rows.max(1),
        };
        tokio::spawn(auto.serve(requests, Shutdown::new(self.stop.clone())));
        versions
    }
}

impl DecodeArgs {
    /// The decoding options for `model`: its schema-change topic read from
    /// the start (not fatal if it cannot be yet: it is read again when a
    /// record needs it), and the registry client if one is given.
    async fn options(&self, model: &ReadModel, brokers: &str) -> anyhow::Result<DecodeOptions> {
        let history = match &model.schema_changes {
            None => None,
            Some(topic) => {
                let history = Arc::new(SchemaHistory::new(topic, brokers, model.time_precision));
                let h = history.clone();
                match tokio::task::spawn_blocking(move || h.catch_up(Duration::from_secs(60))).await? {
                    Ok(n) => tracing::info!(topic = %topic, records = n, "schema history loaded"),
                    Err(e) => tracing::warn!(error = %e, "schema history not loaded yet"),
                }
                Some(history)
            }
        };
        let registry = match &self.schema_registry_url {
            Some(url) => Some(Arc::new(SchemaRegistry::new(url)?)),
            None => None,
        };
        Ok(DecodeOptions {
            max_record_bytes: self.max_record_bytes,
            schemas_enable: self.schemas_enable,
            history,
            registry,
            ..Default::default()
        })
    }
}

impl SinkArgs {
    fn elasticsearch(&self) -> anyhow::Result<Elasticsearch> {
        Ok(Elasticsearch::new(&self.elasticsearch_url)?)
    }

    fn postgres(&self, model: &Arc<ReadModel>) -> Postgres {
        Postgres::new(&self.postgres_url, model.clone())
    }

    fn bigquery(&self, model: &Arc<ReadModel>) -> anyhow::Result<BigQuery> {
        let auth = match self.bigquery_auth.as_str() {
            "none" => Auth::None,
            "adc" => Auth::ApplicationDefault,
            path => Auth::ServiceAccountKey(PathBuf::from(path)),
        };
        let dataset = self.bigquery_dataset.clone().unwrap_or_else(|| model.name.replace('-', "_"));
        Ok(BigQuery::new(&self.bigquery_url, &self.bigquery_project, &dataset, model.clone(), auth)?)
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
