//! `projector bench`: how fast the real service is, against yardsticks
//! measured on the same machine in the same run.
//!
//! 1. Writes N Bookings-like change events (about 1 KB of row data each,
//!    JSON with the inline Connect schema, as Debezium's SQL Server connector
//!    emits them) to a fresh topic.
//! 2. Measures decode + map CPU per event in-process, on one thread.
//! 3. For each sink, starts `projector run` (the real binary) on that topic:
//!    throughput until its group has committed everything, the process's
//!    CPU per event and peak RSS, then p50/p99 append-to-ack latency while
//!    events arrive at a fixed offered rate. Each sink's result is checked
//!    (row counts equal the live bookings) before it is reported.
//! 4. Ceilings: direct `_bulk` (best batch size × concurrency), direct
//!    PostgreSQL COPY + upsert, and Debezium's JDBC sink connector.
//! 5. Rebuilds ([`rebuild`]): a mirror of `--rebuild-rows` rows rebuilt into
//!    a fresh target per sink, against that sink's ceiling on the same rows.
//!
//! It prints Markdown tables (and writes them to `--markdown`).

pub mod ceiling;
pub mod probe;
pub mod rebuild;
pub mod workload;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::{Value as Json, json};

use crate::decode::{DecodeOptions, Decoded, decode};
use crate::mapping::{Document, ReadModel};
use crate::source::{Lineage, SourceRecord};
use ceiling::Cell3;
use probe::{CatchUp, Service};
use workload::{BenchProducer, Produced, Workload};

/// Options of `projector bench`.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Change events to write before the throughput phases.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Offered rate (events/s) of the latency phase.
    #[arg(long, default_value_t = 2_000)]
    pub rate: u64,
    /// Length of the latency phase, in seconds.
    #[arg(long, default_value_t = 20)]
    pub rate_seconds: u64,
    /// Sinks to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "elasticsearch,postgres,bigquery")]
    pub sinks: Vec<String>,
    /// Longest a throughput phase may take; a sink still behind then is
    /// reported with what it did so far, marked partial.
    #[arg(long, default_value_t = 1_200)]
    pub limit_seconds: u64,
    /// The same limit for BigQuery (the local emulator is far slower than BigQuery).
    #[arg(long, default_value_t = 120)]
    pub bigquery_limit_seconds: u64,
    /// Documents each ceiling cell writes (the first ones of the stream).
    #[arg(long, default_value_t = 100_000)]
    pub ceiling_docs: usize,
    /// Mirror rows rebuilt into a fresh target per sink (0: no rebuild measurement).
    #[arg(long, default_value_t = 1_000_000)]
    pub rebuild_rows: u64,
    /// The same for BigQuery (the local emulator is far slower than BigQuery:
    /// one MERGE job per 2,000-row page, tens of seconds each on a busy machine).
    #[arg(long, default_value_t = 2_000)]
    pub bigquery_rebuild_rows: u64,
    /// Workers sharing each rebuild's key ranges, as a read model's instances do.
    #[arg(long, default_value_t = 2)]
    pub rebuild_workers: usize,
    /// Events decoded and mapped for the CPU-per-event figure.
    #[arg(long, default_value_t = 200_000)]
    pub cpu_events: usize,
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
    #[arg(long, default_value = "http://127.0.0.1:9050")]
    pub bigquery_url: String,
    #[arg(long, default_value = "http://127.0.0.1:8083")]
    pub connect_url: String,
    /// The JDBC URL the JDBC sink connector writes to (the same database).
    #[arg(long, default_value = "jdbc:postgresql://127.0.0.1:5432/projector")]
    pub jdbc_url: String,
    /// Also write the result table to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Keep the topic, indexes and tables afterwards (default: removed).
    #[arg(long)]
    pub keep: bool,
}

/// One sink's figures.
#[derive(Clone, Debug, Default)]
struct SinkFigures {
    sink: String,
    catch_up: Option<CatchUp>,
    cpu_per_event_us: f64,
    peak_rss: u64,
    latency: Option<(f64, f64, u64)>,
    ceiling: Option<(String, f64)>,
}

impl SinkFigures {
    fn throughput(&self) -> f64 {
        self.catch_up.map_or(0.0, |c| c.records as f64 / c.elapsed.as_secs_f64().max(1e-9))
    }
}

struct Bench {
    args: BenchArgs,
    /// Names the run's topic, index, table and group (leaked once: the
    /// workload's table keeps a `&'static str` prefix).
    run: &'static str,
    topic: String,
    http: reqwest::Client,
    dir: PathBuf,
    exe: PathBuf,
}

/// Runs the benchmark and prints its table.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let run: &'static str = Box::leak(format!("bench{stamp}").into_boxed_str());
    let mut workload = Workload::new(run, 42);
    let topic = workload.table.topic();
    let dir = std::env::temp_dir().join(format!("projector-{run}"));
    std::fs::create_dir_all(&dir)?;
    let bench = Bench {
        http: reqwest::Client::builder().timeout(Duration::from_secs(300)).build()?,
        exe: std::env::current_exe().context("finding the projector binary")?,
        args,
        run,
        topic,
        dir,
    };
    let args = &bench.args;

    step(&format!("writing {} change events to {}", args.events, bench.topic));
    let producer = Arc::new(BenchProducer::new(&args.brokers)?);
    producer.create_topic(&bench.topic, args.partitions).await?;
    let (produced, w) = {
        let (p, n) = (producer.clone(), args.events);
        tokio::task::spawn_blocking(move || (p.produce(&mut workload, n), workload)).await?
    };
    let produced = produced?;
    workload = w;
    step(&format!(
        "{} records ({:.0} events/s into Kafka)",
        produced.records,
        produced.records as f64 / produced.elapsed.as_secs_f64()
    ));

    step(&format!("decode + map of {} events on one thread", args.cpu_events.min(args.events as usize)));
    let (docs, decode_map_us) = decode_and_map(&bench, args.cpu_events.min(args.events as usize))?;
    let ceiling_docs = &docs[..docs.len().min(args.ceiling_docs)];

    let mut figures = Vec::new();
    let mut jdbc = None;
    for sink in &args.sinks {
        let (mut f, w) = bench.sink_phase(sink, workload, producer.clone()).await?;
        workload = w;
        match sink.as_str() {
            "elasticsearch" => {
                bench.check_elasticsearch(workload.live_rows()).await?;
                step("ceiling: direct _bulk, batch size x concurrency");
                let cells = ceiling::elasticsearch_bulk(
                    &bench.http,
                    &args.elasticsearch_url,
                    &format!("{}_v1", bench.run),
                    ceiling_docs,
                    &[1_000, 2_000, 5_000],
                    &[1, 2, 4],
                )
                .await?;
                f.ceiling = best(&cells)
                    .map(|c| (format!("_bulk {} docs x {} in flight", c.batch, c.concurrency), c.docs_per_s));
                print_cells("_bulk", &cells);
            }
            "postgres" => {
                bench.check_postgres(bench.run, workload.live_rows(), true).await?;
                step("ceiling: direct COPY + INSERT ON CONFLICT");
                // The version table, not the readers' view (a view has no key for ON CONFLICT).
                let v1 = format!("{}_v1", bench.run);
                let cells = ceiling::postgres_copy(&args.postgres_url, &v1, ceiling_docs, &[2_000, 10_000]).await?;
                f.ceiling = best(&cells).map(|c| (format!("COPY+upsert {} rows/tx", c.batch), c.docs_per_s));
                print_cells("COPY+upsert", &cells);
                jdbc = Some(bench.jdbc_phase(workload.live_rows()).await?);
            }
            "bigquery" => {
                if f.catch_up.is_some_and(|c| c.complete) {
                    bench.check_bigquery(workload.live_rows()).await?;
                }
            }
            other => anyhow::bail!("unknown sink {other:?}; use elasticsearch, postgres or bigquery"),
        }
        figures.push(f);
    }

    let rebuilds = rebuild::Settings {
        run: bench.run,
        brokers: &args.brokers,
        elasticsearch_url: &args.elasticsearch_url,
        postgres_url: &args.postgres_url,
        bigquery_url: &args.bigquery_url,
        sinks: &args.sinks,
        rows: args.rebuild_rows,
        bigquery_rows: args.bigquery_rebuild_rows,
        workers: args.rebuild_workers,
        ceiling_docs: args.ceiling_docs,
    }
    .measure(&bench.http)
    .await?;

    let mut table = report(&bench, &produced, decode_map_us, &figures, jdbc.as_ref()).await;
    table.push_str(&rebuild_report(&rebuilds, args.rebuild_workers));
    println!("{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &table).with_context(|| format!("writing {}", path.display()))?;
    }
    if !args.keep {
        bench.clean_up().await;
    }
    Ok(())
}

fn step(what: &str) {
    eprintln!("[bench] {what}");
}

fn best(cells: &[Cell3]) -> Option<Cell3> {
    cells.iter().copied().max_by(|a, b| a.docs_per_s.total_cmp(&b.docs_per_s))
}

fn print_cells(what: &str, cells: &[Cell3]) {
    for c in cells {
        step(&format!("  {what}: batch {:>5}, {} in flight: {:>8.0} docs/s", c.batch, c.concurrency, c.docs_per_s));
    }
}

/// Decodes and maps the first `n` events of the stream (regenerated from
/// the same seed) on this thread; returns the documents and CPU µs/event.
fn decode_and_map(bench: &Bench, n: usize) -> anyhow::Result<(Vec<Document>, f64)> {
    decode_and_map_stream(bench.run, n, bench.args.ceiling_docs)
}

/// The first `n` events of the benchmark's stream under topic prefix
/// `prefix`, decoded and mapped on the calling thread: the first `keep`
/// documents and the CPU time per event in µs. Records are generated in
/// chunks outside the timed part, so only decode + map is counted and the
/// heap looks like a running service's, not like 1M records held at once.
/// Also used by `cargo bench --bench decode_map`.
pub fn decode_and_map_stream(prefix: &'static str, n: usize, keep: usize) -> anyhow::Result<(Vec<Document>, f64)> {
    decode_and_map_metered(prefix, n, keep, &mut |_| {})
}

/// Which edge of the timed part [`decode_and_map_metered`] is at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timed {
    Enter,
    Leave,
}

/// [`decode_and_map_stream`], calling `meter` on entering and leaving each
/// timed part, so a caller can count what happens in decode + map alone
/// (the bench counts heap allocations) and not in generating the records.
pub fn decode_and_map_metered(
    prefix: &'static str,
    n: usize,
    keep: usize,
    meter: &mut dyn FnMut(Timed),
) -> anyhow::Result<(Vec<Document>, f64)> {
    let mut workload = Workload::new(prefix, 42);
    let topic = workload.table.topic();
    let model = ReadModel::parse(
        std::path::Path::new("bench.yaml"),
        &format!("read_model: cpu\ntables:\n  - topic: {topic}\n    elasticsearch: {{ index: cpu }}\n"),
    )?;
    let table = model.table(&topic).context("the CPU model has the bench topic")?;
    let opts = DecodeOptions::default();
    let mut docs = Vec::with_capacity(keep.min(n));
    let (mut done, mut cpu) = (0usize, 0.0);
    while done < n {
        let chunk: Vec<SourceRecord> = workload
            .take(1_000.min(n - done))
            .into_iter()
            .enumerate()
            .map(|(i, r)| SourceRecord {
                lineage: Lineage { topic: r.topic.into(), partition: 0, offset: (done + i) as i64 },
                key: Some(r.key.into()),
                value: r.value.map(Into::into),
                headers: Vec::new(),
                timestamp_ms: None,
                generation: 0,
            })
            .collect();
        meter(Timed::Enter);
        let started = probe::thread_cpu_seconds();
        for r in &chunk {
            match decode(r, &opts) {
                Ok(Decoded::Change(event)) => {
                    let doc = table.document(event).map_err(|e| anyhow::anyhow!("{}: {e}", r.lineage))?;
                    if docs.len() < keep {
                        docs.push(doc);
                    }
                }
                Ok(_) => {}
                Err(e) => anyhow::bail!("{}: {e}", r.lineage),
            }
        }
        cpu += probe::thread_cpu_seconds() - started;
        meter(Timed::Leave);
        done += chunk.len();
    }
    Ok((docs, cpu * 1e6 / done.max(1) as f64))
}

impl Bench {
    fn read_model_yaml(&self, sink: &str) -> String {
        let section = match sink {
            "elasticsearch" => format!("elasticsearch: {{ index: {} }}", self.run),
            "postgres" => format!("postgres: {{ table: {} }}", self.run),
            _ => "bigquery: { table: bookings }".to_string(),
        };
        format!("read_model: {}-{sink}\ntables:\n  - topic: {}\n    {section}\n", self.run, self.topic)
    }

    /// Throughput, CPU, then latency at a fixed rate, for one sink.
    async fn sink_phase(
        &self,
        sink: &str,
        mut workload: Workload,
        producer: Arc<BenchProducer>,
    ) -> anyhow::Result<(SinkFigures, Workload)> {
        let args = &self.args;
        let file = self.dir.join(format!("{sink}.yaml"));
        std::fs::write(&file, self.read_model_yaml(sink))?;
        let port = free_port()?;
        let run_args: Vec<String> = [
            ("--group", self.run.to_string()),
            ("--brokers", args.brokers.clone()),
            ("--elasticsearch-url", args.elasticsearch_url.clone()),
            ("--postgres-url", args.postgres_url.clone()),
            ("--bigquery-url", args.bigquery_url.clone()),
            ("--bigquery-auth", "none".into()),
            ("--bigquery-project", "projector-local".into()),
            ("--bigquery-dataset", self.run.to_string()),
            ("--log-format", "text".into()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v])
        .collect();
        let mut service = Service::start(&self.exe, &file, port, &run_args, self.dir.join(format!("{sink}.log")))?;
        let group = format!("{}.{sink}", self.run);
        let topics = [self.topic.clone()];
        let limit =
            Duration::from_secs(if sink == "bigquery" { args.bigquery_limit_seconds } else { args.limit_seconds });
        step(&format!("{sink}: projector catching up (limit {} s)", limit.as_secs()));
        let catch_up =
            probe::wait_caught_up(&args.brokers, &group, &topics, limit, async || service.check_alive()).await?;
        let cpu = service.cpu_seconds()?;
        let mut f = SinkFigures {
            sink: sink.to_string(),
            catch_up: Some(catch_up),
            cpu_per_event_us: cpu * 1e6 / catch_up.records.max(1) as f64,
            ..Default::default()
        };
        step(&format!(
            "{sink}: {} records in {:.1} s = {:.0} events/s{}",
            catch_up.records,
            catch_up.elapsed.as_secs_f64(),
            f.throughput(),
            if catch_up.complete { "" } else { " (partial)" }
        ));
        if catch_up.complete {
            step(&format!("{sink}: latency at {} events/s for {} s", args.rate, args.rate_seconds));
            let http = &self.http;
            let name = "projector_append_to_ack_seconds";
            let filter = format!("sink=\"{sink}\"");
            let before = probe::histogram(&service.metrics(http).await?, name, &[&filter]);
            let (rate, secs, p) = (args.rate, args.rate_seconds, producer.clone());
            let (sent, w) = tokio::task::spawn_blocking(move || {
                (p.produce_at_rate(&mut workload, rate, Duration::from_secs(secs)), workload)
            })
            .await?;
            workload = w;
            let sent = sent?;
            let settle = probe::wait_caught_up(&args.brokers, &group, &topics, Duration::from_secs(300), async || {
                service.check_alive()
            })
            .await?;
            anyhow::ensure!(
                settle.complete,
                "{sink}: still behind 300 s after the latency phase; see {}",
                service.log.display()
            );
            let after = probe::histogram(&service.metrics(http).await?, name, &[&filter]);
            let delta = probe::histogram_delta(&before, &after);
            let samples = delta.last().map_or(0.0, |b| b.1) as u64;
            f.latency =
                probe::quantile(&delta, 0.5).zip(probe::quantile(&delta, 0.99)).map(|(p50, p99)| (p50, p99, samples));
            step(&format!(
                "{sink}: offered {:.0} events/s; {samples} acks; p50 {:?} p99 {:?}",
                sent.records as f64 / sent.elapsed.as_secs_f64(),
                f.latency.map(|l| l.0),
                f.latency.map(|l| l.1)
            ));
        }
        f.peak_rss = service.peak_rss()?;
        service.stop()?;
        Ok((f, workload))
    }

    /// Debezium's JDBC sink over the same topic, into PostgreSQL.
    async fn jdbc_phase(&self, live: usize) -> anyhow::Result<SinkFigures> {
        let args = &self.args;
        step(&format!(
            "baseline: Debezium JDBC sink connector, {} tasks, batch 2000 (limit {} s)",
            args.partitions, args.limit_seconds
        ));
        let table = format!("{}_jdbc", self.run);
        let name = format!("{}-jdbc", self.run);
        let j = ceiling::JdbcSink {
            connect_url: &args.connect_url,
            jdbc_url: &args.jdbc_url,
            brokers: &args.brokers,
            name: &name,
            topic: &self.topic,
            table: &table,
            tasks: args.partitions.max(1) as usize,
            batch: 2_000,
        };
        let catch_up = ceiling::jdbc_sink(&self.http, &j, Duration::from_secs(args.limit_seconds)).await?;
        let f = SinkFigures { sink: "jdbc".into(), catch_up: Some(catch_up), ..Default::default() };
        step(&format!(
            "JDBC sink: {} records in {:.1} s = {:.0} events/s{}",
            catch_up.records,
            catch_up.elapsed.as_secs_f64(),
            f.throughput(),
            if catch_up.complete { "" } else { " (partial)" }
        ));
        if catch_up.complete {
            self.check_postgres(&table, live, false).await?;
        }
        Ok(f)
    }

    /// The index holds exactly the live bookings.
    async fn check_elasticsearch(&self, live: usize) -> anyhow::Result<()> {
        let es = &self.args.elasticsearch_url;
        self.http.post(format!("{es}/{}/_refresh", self.run)).send().await?.error_for_status()?;
        let count: Json =
            self.http.get(format!("{es}/{}/_count", self.run)).send().await?.error_for_status()?.json().await?;
        let n = count["count"].as_u64().unwrap_or(0) as usize;
        anyhow::ensure!(
            n == live,
            "elasticsearch: the alias {} holds {n} documents, the source {live} live rows: the benchmark's result is wrong",
            self.run
        );
        Ok(())
    }

    /// The mirror table holds exactly the live bookings (projector's table
    /// keeps deleted rows, flagged; the JDBC sink's deletes them).
    async fn check_postgres(&self, table: &str, live: usize, soft_deletes: bool) -> anyhow::Result<()> {
        let (client, conn) = tokio_postgres::connect(&self.args.postgres_url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let filter = if soft_deletes { " WHERE NOT __deleted" } else { "" };
        let n: i64 = client.query_one(&format!("SELECT count(*) FROM \"{table}\"{filter}"), &[]).await?.get(0);
        anyhow::ensure!(
            n as usize == live,
            "postgres: {table} holds {n} live rows, the source {live}: the benchmark's result is wrong"
        );
        Ok(())
    }

    async fn check_bigquery(&self, live: usize) -> anyhow::Result<()> {
        let sql = format!("SELECT COUNT(*) FROM `projector-local.{}.bookings_live`", self.run);
        let body: Json = self
            .http
            .post(format!("{}/bigquery/v2/projects/projector-local/queries", self.args.bigquery_url))
            .json(&json!({"query": sql, "useLegacySql": false}))
            .send()
            .await?
            .json()
            .await?;
        let n = body["rows"][0]["f"][0]["v"].as_str().and_then(|v| v.parse::<usize>().ok());
        anyhow::ensure!(
            n == Some(live),
            "bigquery: bookings_live holds {n:?} rows, the source {live}: the benchmark's result is wrong ({body})"
        );
        Ok(())
    }

    async fn clean_up(&self) {
        let a = &self.args;
        let _ = self.http.delete(format!("{}/{}_v1", a.elasticsearch_url, self.run)).send().await;
        if let Ok((client, conn)) = tokio_postgres::connect(&a.postgres_url, tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            let _ = client
                .batch_execute(&format!(
                    "DROP VIEW IF EXISTS \"{r}_live\"; DROP VIEW IF EXISTS \"{r}\"; DROP TABLE IF EXISTS \"{r}_v1\"; DROP TABLE IF EXISTS \"{r}_jdbc\"; DROP TABLE IF EXISTS \"{r}_mirror_v1\" CASCADE",
                    r = self.run
                ))
                .await;
        }
        let _ = self
            .http
            .delete(format!(
                "{}/bigquery/v2/projects/projector-local/datasets/{}?deleteContents=true",
                a.bigquery_url, self.run
            ))
            .send()
            .await;
        let admin: Result<rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>, _> =
            rdkafka::ClientConfig::new().set("bootstrap.servers", &a.brokers).create();
        if let Ok(admin) = admin {
            let _ = admin.delete_topics(&[&self.topic], &rdkafka::admin::AdminOptions::new()).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / (1024.0 * 1024.0))
}

fn ms(seconds: f64) -> String {
    if seconds < 1.0 { format!("{:.0} ms", seconds * 1000.0) } else { format!("{seconds:.2} s") }
}

/// The Markdown report: workload, machine, one row per sink, the ratios
/// against the targets.
async fn report(
    bench: &Bench,
    produced: &Produced,
    decode_map_us: f64,
    figures: &[SinkFigures],
    jdbc: Option<&SinkFigures>,
) -> String {
    let a = &bench.args;
    let mut out = String::new();
    let n = produced.records.max(1);
    let _ = writeln!(
        out,
        "**Workload:** {} Bookings change events (55% insert, 41% update, 4% delete + tombstone) on {} partitions; row data {} B per event on average ({} B per record with the inline Connect schema).",
        produced.records,
        a.partitions,
        produced.payload_bytes / n,
        (produced.value_bytes + produced.key_bytes) / n
    );
    let _ = writeln!(out, "**Machine:** {}; {}.", machine(), engines(bench).await);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| sink | events | throughput | ceiling | vs ceiling | append→ack p50 / p99 at {} ev/s | peak RSS | CPU/event |",
        a.rate
    );
    let _ = writeln!(out, "|---|---:|---:|---|---:|---:|---:|---:|");
    for f in figures.iter().chain(jdbc) {
        let c = f.catch_up.unwrap_or(CatchUp { records: 0, elapsed: Duration::ZERO, complete: false });
        let name = if f.sink == "jdbc" {
            "Debezium JDBC sink → PostgreSQL".to_string()
        } else {
            format!("projector → {}", f.sink)
        };
        let events = if c.complete {
            format!("{}", c.records)
        } else {
            format!("{} (partial, {:.0} s limit)", c.records, c.elapsed.as_secs_f64())
        };
        let ceiling = f.ceiling.as_ref().map_or("–".into(), |(how, v)| format!("{v:.0}/s ({how})"));
        let ratio = f.ceiling.as_ref().map_or("–".into(), |(_, v)| format!("{:.2}x", f.throughput() / v));
        let latency = f.latency.map_or("–".into(), |(p50, p99, _)| format!("{} / {}", ms(p50), ms(p99)));
        let rss = if f.peak_rss > 0 { mb(f.peak_rss) } else { "–".into() };
        let cpu = if f.cpu_per_event_us > 0.0 { format!("{:.1} µs", f.cpu_per_event_us) } else { "–".into() };
        let _ = writeln!(
            out,
            "| {name} | {events} | {:.0}/s | {ceiling} | {ratio} | {latency} | {rss} | {cpu} |",
            f.throughput()
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Decode + map: **{decode_map_us:.2} µs/event** (one thread, {} events, in-process). CPU/event above is the whole service process (Kafka client, decode, map, HTTP or SQL) divided by events.",
        a.cpu_events.min(a.events as usize)
    );
    let mut targets = Vec::new();
    if let Some(es) = figures.iter().find(|f| f.sink == "elasticsearch")
        && let Some((_, v)) = &es.ceiling
    {
        targets.push(format!("Elasticsearch {:.2}x its ceiling (target ≥ 0.9)", es.throughput() / v));
    }
    if let (Some(pg), Some(j)) = (figures.iter().find(|f| f.sink == "postgres"), jdbc) {
        targets
            .push(format!("PostgreSQL {:.1}x the JDBC sink (target ≥ 5)", pg.throughput() / j.throughput().max(1e-9)));
    }
    if let Some(max) = figures.iter().map(|f| f.peak_rss).max() {
        targets.push(format!("peak RSS {} (target ≤ 256 MB)", mb(max)));
    }
    targets.push(format!("decode + map {decode_map_us:.2} µs/event (target ≤ 2)"));
    let _ = writeln!(out, "Ratios: {}.", targets.join("; "));
    out
}

/// The rebuild table: each sink's rebuild from the mirror against its ceiling.
fn rebuild_report(rebuilds: &[rebuild::Figures], workers: usize) -> String {
    let mut out = String::new();
    if rebuilds.is_empty() {
        return out;
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "**Rebuild** from the staging PostgreSQL mirror into a fresh target (`Rebuild::copy`, {workers} workers on one rebuild id; one for BigQuery, on the emulator with fewer rows), against the sink's direct bulk ceiling on the same rows:"
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| rebuild | rows | throughput | ceiling | vs ceiling |");
    let _ = writeln!(out, "|---|---:|---:|---|---:|");
    for f in rebuilds {
        let ceiling = f.ceiling.as_ref().map_or("–".into(), |(how, v)| format!("{v:.0}/s ({how})"));
        let ratio = f.ceiling.as_ref().map_or("–".into(), |(_, v)| format!("{:.2}x", f.rows_per_s() / v));
        let _ =
            writeln!(out, "| mirror → {} | {} | {:.0} rows/s | {ceiling} | {ratio} |", f.sink, f.rows, f.rows_per_s());
    }
    if let Some(es) = rebuilds.iter().find(|f| f.sink == "elasticsearch")
        && let Some((_, v)) = &es.ceiling
    {
        let _ = writeln!(out);
        let _ = writeln!(out, "Ratios: Elasticsearch rebuild {:.2}x its ceiling (target ≥ 0.9).", es.rows_per_s() / v);
    }
    out
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix("MemTotal:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        })
        .unwrap_or(0);
    format!("{cores} cores ({cpu}), {:.0} GiB RAM", mem as f64 / 1024.0 / 1024.0)
}

async fn engines(bench: &Bench) -> String {
    let url = format!("{}/_nodes/_local?filter_path=nodes.*.version", bench.args.elasticsearch_url);
    let version = match bench.http.get(&url).send().await {
        Ok(r) => r.json::<Json>().await.ok().and_then(|j| {
            j["nodes"]
                .as_object()
                .and_then(|n| n.values().next())
                .and_then(|n| n["version"].as_str().map(str::to_string))
        }),
        Err(_) => None,
    };
    let distribution = match bench.http.get(format!("{}/_cluster/health", bench.args.elasticsearch_url)).send().await {
        Ok(r) if r.headers().contains_key("x-elastic-product") => "Elasticsearch",
        _ => "OpenSearch",
    };
    format!(
        "{distribution} {}, Kafka and PostgreSQL from scripts/stack, all on this machine",
        version.unwrap_or_else(|| "?".into())
    )
}
