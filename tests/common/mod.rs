//! Shared harness for the integration tests: the real local stack started by
//! `scripts/stack up`, the real `projector` binary as a child process, and
//! fixtures shaped like Debezium's SQL Server connector output.
//!
//! Each test gets its own topic prefix, index names and consumer group, so
//! tests in one file can run in parallel without seeing each other.

#![allow(dead_code)]

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
    std::env::var("PROJECTOR_POSTGRES_URL").unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=projector".into())
}

/// A connection to the staging PostgreSQL.
pub async fn pg() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await.expect("PostgreSQL is up (scripts/stack up)");
    tokio::spawn(conn);
    client
}

static SEQ: AtomicU32 = AtomicU32::new(0);
static PORT: AtomicU32 = AtomicU32::new(0);

/// A unique lower-case name for this test run.
pub fn unique(stem: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    format!("{stem}{}x{n}", std::process::id())
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
            db.trips.topic(), indexes[0], db.bookings.topic(), indexes[1], db.seats.topic(), indexes[2]
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
        search_all(index).await.into_iter().map(|(id, mut src, _)| {
            src.as_object_mut().unwrap().remove("__projector");
            (id, src)
        }).collect()
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

/// Every document visible through `index` (an alias): (id, _source, _seq_no).
pub async fn search_all(index: &str) -> Vec<(String, Json, i64)> {
    let c = http();
    let _ = c.post(format!("{}/{index}/_refresh", es_url())).send().await;
    let resp = c
        .post(format!("{}/{index}/_search", es_url()))
        .json(&json!({"size": 10000, "seq_no_primary_term": true, "query": {"match_all": {}}}))
        .send()
        .await
        .unwrap();
    if resp.status() == 404 {
        return vec![];
    }
    let body: Json = resp.json().await.unwrap();
    body["hits"]["hits"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|h| (h["_id"].as_str().unwrap().to_string(), h["_source"].clone(), h["_seq_no"].as_i64().unwrap_or(-1)))
        .collect()
}

/// Every document including tombstones, read from the physical index.
pub async fn raw_docs(index: &str) -> BTreeMap<String, (Json, i64)> {
    let c = http();
    let _ = c.post(format!("{}/{index}_v1/_refresh", es_url())).send().await;
    let body: Json = c
        .post(format!("{}/{index}_v1/_search", es_url()))
        .json(&json!({"size": 10000, "seq_no_primary_term": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for Projector {
    fn drop(&mut self) {
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
        .filter(|l| l.starts_with(name) && (l.as_bytes().get(name.len()) == Some(&b'{') || l.as_bytes().get(name.len()) == Some(&b' ')))
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
