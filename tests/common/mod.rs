//! Shared harness for the integration tests: the real local stack started by
//! `scripts/stack up`, the real `projector` binary as a child process, and
//! fixtures shaped like Debezium's SQL Server connector output.
//!
//! Each test gets its own topic prefix, index names and consumer group, so
//! tests in one file can run in parallel without seeing each other.

#![allow(dead_code)]

pub mod avro;
pub mod bigquery;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use projector::demo::bus_booking::BusBooking;
use projector::demo::produce::FixtureProducer;
use projector::demo::sqlserver::Record;
use serde_json::{Value as Json, json};

pub fn brokers() -> String {
    std::env::var("PROJECTOR_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn es_url() -> String {
    std::env::var("PROJECTOR_ELASTICSEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".into())
}

pub fn pg_url() -> String {
    std::env::var("PROJECTOR_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=projector".into())
}

/// A connection to the staging PostgreSQL.
pub async fn pg() -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await.expect("PostgreSQL is up (scripts/stack up)");
    tokio::spawn(conn);
    client
}

static SEQ: AtomicU32 = AtomicU32::new(0);
static PORT: AtomicU32 = AtomicU32::new(0);

/// A lower-case name unique to this test and this run. The stack keeps its
/// topics, indexes and tables between runs and PIDs get reused, so the
/// process id alone could hand a test an old run's topic; the run's start
/// time makes the name new.
pub fn unique(stem: &str) -> String {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        format!("{:x}{:x}", (nanos / 1000) as u32, std::process::id())
    });
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    format!("{stem}{run}x{n}")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One test's isolated world: its own topics, indexes, read-model file and group.
pub struct World {
    pub name: String,
    pub db: BusBooking,
    pub model_file: PathBuf,
    pub group: String,
    pub indexes: [String; 3],
    _dir: tempfile::TempDir,
}

impl World {
    pub async fn new(stem: &str, partitions: i32) -> World {
        let name = unique(stem);
        let prefix: &'static str = Box::leak(name.clone().into_boxed_str());
        let db = BusBooking::new(prefix);
        let indexes = [format!("{name}-trips"), format!("{name}-bookings"), format!("{name}-seats")];
        let dir = tempfile::tempdir().unwrap();
        let model_file = dir.path().join(format!("{name}.yaml"));
        let yaml = format!(
            "read_model: {name}\ntables:\n  - topic: {}\n    elasticsearch: {{ index: {} }}\n  - topic: {}\n    elasticsearch: {{ index: {} }}\n  - topic: {}\n    elasticsearch: {{ index: {} }}\n",
            db.trips.topic(),
            indexes[0],
            db.bookings.topic(),
            indexes[1],
            db.seats.topic(),
            indexes[2]
        );
        std::fs::write(&model_file, yaml).unwrap();
        let producer = FixtureProducer::new(&brokers()).unwrap();
        producer.create_topics(&[db.trips.topic(), db.bookings.topic(), db.seats.topic()], partitions).await.unwrap();
        World { group: format!("projector.{name}"), name, db, model_file, indexes, _dir: dir }
    }

    /// Replaces this world's read-model file (tables must use this world's topics).
    pub fn set_model(&self, yaml: &str) {
        std::fs::write(&self.model_file, yaml).unwrap();
    }

    pub fn topics(&self) -> Vec<String> {
        vec![self.db.trips.topic(), self.db.bookings.topic(), self.db.seats.topic()]
    }

    pub async fn produce(&self, records: &[Record]) {
        FixtureProducer::new(&brokers()).unwrap().send_all(records).await.unwrap();
    }

    /// Starts projector on this world's read model with the given group.
    pub fn start(&self, group: &str) -> Projector {
        self.start_with(group, &[])
    }

    pub fn start_with(&self, group: &str, env: &[(&str, &str)]) -> Projector {
        let port = free_port();
        let log = self._dir.path().join(format!("projector-{}.log", PORT.fetch_add(1, Ordering::SeqCst)));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_projector"));
        cmd.arg("run")
            .arg(&self.model_file)
            .arg("--group")
            .arg(group)
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{port}"))
            .env("PROJECTOR_BROKERS", brokers())
            .env("PROJECTOR_ELASTICSEARCH_URL", es_url())
            .env("PROJECTOR_POSTGRES_URL", pg_url())
            .env("PROJECTOR_BIGQUERY_URL", "http://127.0.0.1:9050")
            .env("PROJECTOR_BIGQUERY_AUTH", "none")
            .env("PROJECTOR_SESSION_TIMEOUT_MS", "6000")
            .env("PROJECTOR_LOG", "info,projector=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start projector binary");
        Projector { child: Some(child), port, log }
    }

    /// Waits until `group`'s Elasticsearch pipeline has committed every offset.
    pub async fn wait_caught_up(&self, group: &str, timeout: Duration) {
        self.wait_sink_caught_up(group, "elasticsearch", timeout).await
    }

    /// Waits until `group`'s pipeline for `sink` has committed every offset
    /// up to the end of every topic.
    pub async fn wait_sink_caught_up(&self, group: &str, sink: &str, timeout: Duration) {
        let topics = self.topics();
        let group = format!("{group}.{sink}");
        wait_for(timeout, &format!("group {group} to commit to the end of its topics"), || {
            let topics = topics.clone();
            let group = group.clone();
            async move { tokio::task::spawn_blocking(move || lag(&group, &topics)).await.unwrap() == Some(0) }
        })
        .await;
    }

    /// Live documents of one index (through the alias), id → source without bookkeeping.
    pub async fn docs(&self, index: &str) -> BTreeMap<String, Json> {
        search_all(index)
            .await
            .into_iter()
            .map(|(id, mut src, _)| {
                src.as_object_mut().unwrap().remove("__projector");
                (id, src)
            })
            .collect()
    }
}

/// Sum of (end offset − committed offset) over all partitions; None if unknown.
pub fn lag(group: &str, topics: &[String]) -> Option<i64> {
    let parts = projector::source::consumer::group_lag(&brokers(), group, topics, Duration::from_secs(5)).ok()?;
    Some(parts.iter().map(|p| p.lag()).sum())
}

/// Polls `cond` until it holds or `timeout` passes (then panics with `what`).
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn http() -> reqwest::Client {
    projector::install_tls_provider();
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// The JSON body of a GET of `url`.
pub async fn get_json(url: &str) -> Json {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

/// The JSON answer to `body` POSTed to `url`.
pub async fn post_json(url: &str, body: &Json) -> Json {
    http().post(url).json(body).send().await.unwrap().json().await.unwrap()
}

/// Makes every write to `index` visible to searches.
pub async fn refresh(index: &str) {
    let _ = http().post(format!("{}/{index}/_refresh", es_url())).send().await;
}

/// Every document visible through `index` (an alias): (id, _source, _seq_no);
/// none when the index does not exist.
pub async fn search_all(index: &str) -> Vec<(String, Json, i64)> {
    refresh(index).await;
    let query = json!({"size": 10000, "seq_no_primary_term": true, "query": {"match_all": {}}});
    let body = post_json(&format!("{}/{index}/_search", es_url()), &query).await;
    body["hits"]["hits"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|h| (h["_id"].as_str().unwrap().to_string(), h["_source"].clone(), h["_seq_no"].as_i64().unwrap_or(-1)))
        .collect()
}

/// Every document including tombstones, read from the physical index.
pub async fn raw_docs(index: &str) -> BTreeMap<String, (Json, i64)> {
    refresh(&format!("{index}_v1")).await;
    let query = json!({"size": 10000, "seq_no_primary_term": true});
    let body = post_json(&format!("{}/{index}_v1/_search", es_url()), &query).await;
    body["hits"]["hits"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|h| (h["_id"].as_str().unwrap().to_string(), (h["_source"].clone(), h["_seq_no"].as_i64().unwrap())))
        .collect()
}

/// A running projector process. Stopped with SIGTERM on drop.
pub struct Projector {
    child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
}

impl Projector {
    /// Wraps a projector process started by a test itself.
    pub fn from_child(child: Child, port: u16, log: PathBuf) -> Projector {
        Projector { child: Some(child), port, log }
    }

    pub async fn metrics(&self) -> String {
        match http().get(format!("http://127.0.0.1:{}/metrics", self.port)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// `(status, body)` of /health/ready, or None if not answering.
    pub async fn ready(&self) -> Option<(u16, Json)> {
        let r = http().get(format!("http://127.0.0.1:{}/health/ready", self.port)).send().await.ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.ok()?))
    }

    /// Sum of a counter over all label sets matching every `filter` substring.
    pub async fn counter(&self, name: &str, filters: &[&str]) -> f64 {
        sum_metric(&self.metrics().await, name, filters)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        unsafe_kill(c.id() as i32, 15);
        let start = Instant::now();
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > Duration::from_secs(60) {
                c.kill().unwrap();
                panic!("projector did not exit within 60 s of SIGTERM; log: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit code once the process has ended on its own.
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child.as_mut()?.try_wait().ok()??.code()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

/// The last `lines` lines of a log, for failure messages.
pub fn log_tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Projector {
    fn drop(&mut self) {
        // A failing test unwinds through here: show what the service said,
        // since CI keeps nothing but the test output.
        if std::thread::panicking() {
            eprintln!(
                "---- projector log {} (last 60 lines) ----\n{}\n---- end of log ----",
                self.log.display(),
                log_tail(&self.log_text(), 60)
            );
        }
        if let Some(mut c) = self.child.take() {
            unsafe_kill(c.id() as i32, 15);
            let start = Instant::now();
            while c.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn unsafe_kill(pid: i32, sig: i32) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

pub fn sum_metric(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name)
                && (l.as_bytes().get(name.len()) == Some(&b'{') || l.as_bytes().get(name.len()) == Some(&b' '))
        })
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The repository's `scripts/stack`.
pub fn stack(args: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/stack");
    let status = Command::new("bash").arg(script).args(args).status().unwrap();
    assert!(status.success(), "scripts/stack {args:?} failed");
}

/// Takes a sink's server down for `down_for` while trips keep changing, and
/// checks that Elasticsearch stays caught up meanwhile, that /health/ready
/// names the down sink, and that the sink catches up once back. Returns the
/// expected final fare (in cents) per trip id for the caller to compare.
pub async fn sink_outage_under_load(
    w: &World,
    p: &Projector,
    service: &str,
    sink: &str,
    down_for: Duration,
) -> BTreeMap<String, i64> {
    use projector::demo::bus_booking::{Timeline, trip};
    wait_for(Duration::from_secs(60), "every sink ready", || async { p.ready().await.is_some_and(|(s, _)| s == 200) })
        .await;
    let mut t = Timeline::default();
    let mut expect = BTreeMap::new();
    let produce_round = async |t: &mut Timeline, expect: &mut BTreeMap<String, i64>, round: i64| {
        let mut recs = Vec::new();
        for id in 1..=50 {
            let at = t.commit(if round == 0 { 1 } else { 2 });
            recs.push(w.db.trips.event(
                if round == 0 { 'c' } else { 'u' },
                None,
                Some(&trip(id, round as i128, 1)),
                at,
                t.ts_ms,
                true,
            ));
            expect.insert(id.to_string(), round);
        }
        w.produce(&recs).await;
    };
    let mut round = 0i64;
    produce_round(&mut t, &mut expect, round).await;
    stack(&["stop-service", service]);
    let down_at = Instant::now();
    let (mut fresh, mut reported_down) = (0, false);
    let es_group = format!("{}.elasticsearch", w.group);
    while down_at.elapsed() < down_for {
        round += 1;
        produce_round(&mut t, &mut expect, round).await;
        let caught = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let (g, tp) = (es_group.clone(), w.topics());
                if tokio::task::spawn_blocking(move || lag(&g, &tp)).await.unwrap() == Some(0) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        fresh += caught.is_ok() as i64;
        if let Some((status, body)) = p.ready().await {
            reported_down |=
                status == 503 && body["sinks"][sink]["up"] == false && body["sinks"]["elasticsearch"]["up"] == true;
        }
    }
    assert!(reported_down, "/health/ready named {sink} down and Elasticsearch up");
    assert!(fresh >= round - 1, "Elasticsearch caught up in {fresh} of {round} rounds while {sink} was down");
    stack(&["start-service", service]);
    w.wait_sink_caught_up(&w.group, sink, Duration::from_secs(180)).await;
    expect
}

/// Runs a query on the BigQuery emulator; rows as arrays of cell text
/// (TIMESTAMPs as integer microseconds). Panics on a query error.
pub async fn bigquery_rows(sql: &str) -> Vec<Vec<Json>> {
    try_bigquery_rows(sql).await.unwrap_or_else(|error| panic!("{sql}: {error}"))
}

/// [`bigquery_rows`], with a query error (a table or column that does not
/// exist yet, say) returned instead.
pub async fn try_bigquery_rows(sql: &str) -> Result<Vec<Vec<Json>>, Json> {
    let url = format!("{}/bigquery/v2/projects/{}/queries", bigquery::base_url(), bigquery::PROJECT);
    let query = json!({"query": sql, "useLegacySql": false, "formatOptions": {"useInt64Timestamp": true}});
    let body = post_json(&url, &query).await;
    if body.get("error").is_some() {
        return Err(body);
    }
    Ok(body["rows"]
        .as_array()
        .map(|rows| rows.iter().map(|r| r["f"].as_array().unwrap().iter().map(|c| c["v"].clone()).collect()).collect())
        .unwrap_or_default())
}

/// Reads `n` dead letters from a DLQ topic: (source topic, source offset) →
/// (stage, kind, message), from the `__connect.errors.*` headers.
pub async fn dead_letters(dlq_topic: &str, n: usize) -> BTreeMap<(String, i64), (String, String, String)> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("dlqreader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[dlq_topic]).unwrap();
    let mut out = BTreeMap::new();
    while out.len() < n {
        let Ok(m) = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await else {
            panic!("expected {n} dead letters on {dlq_topic}, found {}: {out:#?}", out.len());
        };
        let m = m.unwrap();
        let h: BTreeMap<String, String> = m
            .headers()
            .unwrap()
            .iter()
            .map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).to_string()))
            .collect();
        out.insert(
            (h["__connect.errors.topic"].clone(), h["__connect.errors.offset"].parse().unwrap()),
            (
                h["__connect.errors.stage"].clone(),
                h["__connect.errors.exception.class.name"].clone(),
                h["__connect.errors.exception.message"].clone(),
            ),
        );
    }
    out
}

/// Trips 1..=n created, their fares updated `rounds` times, every 5th
/// deleted (with its tombstone) at the end; returns the records and the
/// live fares (in cents) they leave.
pub fn churn(
    w: &World,
    t: &mut projector::demo::bus_booking::Timeline,
    n: i32,
    rounds: i32,
) -> (Vec<Record>, BTreeMap<String, i64>) {
    let mut out = Vec::new();
    let mut expect = BTreeMap::new();
    for round in 0..=rounds {
        for id in 1..=n {
            let at = t.commit(if round == 0 { 1 } else { 2 });
            let before = (round > 0).then(|| projector::demo::bus_booking::trip(id, 1000 + round as i128 - 1, 1));
            out.push(w.db.trips.event(
                if round == 0 { 'c' } else { 'u' },
                before.as_ref(),
                Some(&projector::demo::bus_booking::trip(id, 1000 + round as i128, 1)),
                at,
                t.ts_ms,
                true,
            ));
            expect.insert(id.to_string(), 1000 + round as i64);
        }
    }
    for id in (5..=n).step_by(5) {
        let at = t.commit(1);
        out.push(w.db.trips.event(
            'd',
            Some(&projector::demo::bus_booking::trip(id, 1000 + rounds as i128, 1)),
            None,
            at,
            t.ts_ms,
            true,
        ));
        out.push(w.db.trips.tombstone(&projector::demo::bus_booking::trip(id, 0, 1), true));
        expect.remove(&id.to_string());
    }
    (out, expect)
}

/// The versions of one logical target in the catalog at `postgres_url`:
/// (version, physical target, state), oldest first.
pub async fn catalog_versions(
    postgres_url: &str,
    read_model: &str,
    sink: &str,
    logical: &str,
) -> Vec<(i32, String, projector::sink::catalog::State)> {
    use projector::sink::catalog::{Catalog, TargetName};
    let catalog = Catalog::connect(postgres_url).await.unwrap();
    let name = TargetName { read_model: read_model.into(), sink: sink.into(), logical: logical.into() };
    catalog.versions(&name).await.unwrap().into_iter().map(|v| (v.version, v.physical, v.state)).collect()
}
