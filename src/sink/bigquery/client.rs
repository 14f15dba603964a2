//! A thin BigQuery REST v2 client: only the calls the sink makes (datasets
//! insert; tables get, for the columns and the incarnation, `creationTime`;
//! jobs.query for reads and DDL; jobs.insert with a fixed job id for the
//! writes that must never run twice). Plain JSON bodies, never gzip (the
//! local emulator refuses compressed bodies).
//!
//! Failures are classified for the sink in one place, [`classify`]:
//! [`BqError::Transient`] (unreachable, 5xx), [`BqError::Overloaded`] (429,
//! rate and quota limits), [`BqError::Permission`] (401/403),
//! [`BqError::Conflict`] (a concurrent DML statement won), [`BqError::Data`]
//! (400 `invalid`/`invalidQuery`: a value or statement BigQuery refuses, so
//! the pipeline splits the batch), [`BqError::NotFound`]. The sink turns
//! each into an [`crate::sink::ErrorKind`].

use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use super::auth::TokenSource;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum BqError {
    /// Unreachable or failing (5xx, backend errors): try the batch again later.
    Transient(String),
    /// Rate or quota limits, HTTP 429: try again later, more slowly.
    Overloaded(String),
    /// Missing or insufficient credentials (401/403): fix the account; retried meanwhile.
    Permission(String),
    /// Another DML statement on the table committed first: decide again.
    Conflict(String),
    /// BigQuery refused the statement or a value in it.
    Data(String),
    /// The table or job is not there.
    NotFound(String),
    /// A job with this id already exists and it failed: run under a new id.
    FailedBefore(String),
}

impl BqError {
    pub fn message(&self) -> &str {
        match self {
            BqError::Transient(m)
            | BqError::Overloaded(m)
            | BqError::Permission(m)
            | BqError::Conflict(m)
            | BqError::Data(m)
            | BqError::NotFound(m)
            | BqError::FailedBefore(m) => m,
        }
    }
}

/// A connection to one project's BigQuery API.
pub struct Client {
    http: reqwest::Client,
    base: String,
    pub project: String,
    /// Where jobs run (the dataset's location), once known.
    pub location: std::sync::RwLock<Option<String>>,
    auth: TokenSource,
}

/// What tables.get says about a table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    /// Columns `(name, type)`.
    pub columns: Vec<(String, String)>,
    /// Which table of that name this is: its `creationTime` (milliseconds),
    /// which a dropped and re-created table does not share.
    pub incarnation: String,
}

impl TableInfo {
    fn from_resource(b: &Json) -> TableInfo {
        let columns = b["schema"]["fields"]
            .as_array()
            .map(|fs| {
                fs.iter()
                    .map(|f| {
                        let ty = f["type"].as_str().unwrap_or("STRING");
                        // Parameterized decimals say their limits beside the type.
                        let recorded = f["description"].as_str().and_then(super::sql::recorded_type);
                        let ty = match (recorded, f["precision"].as_str(), f["scale"].as_str()) {
                            (Some(t), _, _) => t.to_string(),
                            (None, Some(p), Some(s)) => format!("{ty}({p}, {s})"),
                            (None, Some(p), None) => format!("{ty}({p}, 0)"),
                            _ => ty.to_string(),
                        };
                        (f["name"].as_str().unwrap_or("").to_string(), ty)
                    })
                    .collect()
            })
            .unwrap_or_default();
        // `creationTime` is an int64 sent as a JSON string; accept a number too.
        let incarnation = match &b["creationTime"] {
            Json::String(t) => t.clone(),
            Json::Number(n) => n.to_string(),
            _ => String::new(),
        };
        TableInfo { columns, incarnation }
    }
}

/// One named query parameter.
pub enum Param<'a> {
    String(&'a str, String),
    Strings(&'a str, Vec<String>),
}

fn params_json(params: &[Param<'_>]) -> Json {
    Json::Array(
        params
            .iter()
            .map(|p| match p {
                Param::String(name, v) => {
                    json!({"name": name, "parameterType": {"type": "STRING"}, "parameterValue": {"value": v}})
                }
                Param::Strings(name, vs) => json!({
                    "name": name,
                    "parameterType": {"type": "ARRAY", "arrayType": {"type": "STRING"}},
                    "parameterValue": {"arrayValues": vs.iter().map(|v| json!({"value": v})).collect::<Vec<_>>()},
                }),
            })
            .collect(),
    )
}

/// The first error reason and message of an error body or `status.errorResult`.
fn reason_of(body: &Json) -> (String, String) {
    let e = if body.get("error").is_some() { &body["error"] } else { body };
    let first = e.get("errors").and_then(|x| x.get(0));
    let reason = first.and_then(|f| f["reason"].as_str()).or_else(|| e["reason"].as_str()).unwrap_or("").to_string();
    let message = e["message"].as_str().map(str::to_string).unwrap_or_else(|| body.to_string());
    (reason, message)
}

/// Classifies a failure by HTTP status and BigQuery reason.
fn classify(status: u16, reason: &str, message: String) -> BqError {
    // Two DML statements on one table at once: BigQuery aborts one of them.
    // Its reason is the generic `invalidQuery`, so the documented message is
    // the only signal there is (the one place this sink reads message text).
    // The local emulator (DuckLake underneath) words the same abort as a
    // failed commit of its transaction.
    if message.contains("concurrent update")
        || message.contains("Could not serialize access")
        || message.contains("Failed to commit DuckLake transaction")
    {
        return BqError::Conflict(format!("{message}; another writer changed the table at the same time, will retry"));
    }
    match (status, reason) {
        (_, "rateLimitExceeded" | "jobRateLimitExceeded" | "quotaExceeded") | (429, _) => {
            BqError::Overloaded(format!("{message} (HTTP {status} {reason}); will retry more slowly"))
        }
        (_, "backendError" | "internalError" | "jobBackendError" | "jobInternalError") => {
            BqError::Transient(format!("{message} ({reason}); will retry"))
        }
        (404, _) | (_, "notFound") => BqError::NotFound(message),
        (401 | 403, _) | (_, "accessDenied") => BqError::Permission(format!(
            "{message} (HTTP {status} {reason}); check the credentials and that the account has BigQuery Data Editor and Job User roles"
        )),
        (400, _) | (_, "invalid" | "invalidQuery") => BqError::Data(format!("{message} ({reason})")),
        (500.., _) => BqError::Transient(format!("{message} (HTTP {status}); will retry")),
        _ => BqError::Transient(format!("{message} (HTTP {status} {reason})")),
    }
}

impl Client {
    pub fn new(base_url: &str, project: &str, auth: TokenSource) -> Result<Client, String> {
        crate::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        let base = base_url.trim_end_matches('/').to_string();
        let base = if base.ends_with("/bigquery/v2") { base } else { format!("{base}/bigquery/v2") };
        Ok(Client { http, base, project: project.to_string(), location: std::sync::RwLock::new(None), auth })
    }

    fn location(&self) -> Option<String> {
        self.location.read().ok().and_then(|l| l.clone())
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Json>) -> Result<(u16, Json), BqError> {
        let url = format!("{}/projects/{}{path}", self.base, self.project);
        let mut req = self.http.request(method, &url);
        if let Some(token) = self.auth.token(&self.http).await.map_err(BqError::Transient)? {
            req = req.bearer_auth(token);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| BqError::Transient(format!("{url} unreachable: {e}; is BigQuery (or the emulator) up?")))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| BqError::Transient(format!("{url}: reading response: {e}")))?;
        let json = if bytes.is_empty() {
            Json::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({"message": String::from_utf8_lossy(&bytes)}))
        };
        Ok((status, json))
    }

    fn fail(status: u16, body: &Json) -> BqError {
        let (reason, message) = reason_of(body);
        classify(status, &reason, message)
    }

    /// Creates the dataset unless it exists; returns its location.
    pub async fn ensure_dataset(&self, dataset: &str) -> Result<Option<String>, BqError> {
        let (s, b) = self.send(reqwest::Method::GET, &format!("/datasets/{dataset}"), None).await?;
        if s == 200 {
            return Ok(b["location"].as_str().map(str::to_string));
        }
        let mut body = json!({"datasetReference": {"projectId": self.project, "datasetId": dataset}});
        if let Some(l) = self.location() {
            body["location"] = json!(l);
        }
        let (s, b) = self.send(reqwest::Method::POST, "/datasets", Some(&body)).await?;
        match s {
            200 => Ok(b["location"].as_str().map(str::to_string)),
            409 => Ok(None),
            _ => Err(Self::fail(s, &b)),
        }
    }

    /// The table's columns `(name, type)`, or `None` if it does not exist.
    pub async fn table_columns(&self, dataset: &str, table: &str) -> Result<Option<Vec<(String, String)>>, BqError> {
        Ok(self.table(dataset, table).await?.map(|t| t.columns))
    }

    /// The table's columns and incarnation (tables.get), or `None` if it
    /// does not exist.
    pub async fn table(&self, dataset: &str, table: &str) -> Result<Option<TableInfo>, BqError> {
        let path = format!("/datasets/{dataset}/tables/{}", urlencode(table));
        let (s, b) = self.send(reqwest::Method::GET, &path, None).await?;
        match s {
            200 => Ok(Some(TableInfo::from_resource(&b))),
            404 => Ok(None),
            _ => Err(Self::fail(s, &b)),
        }
    }

    /// Runs a statement with jobs.query and returns its rows (cells as text;
    /// TIMESTAMPs as integer microseconds).
    pub async fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Vec<Option<String>>>, BqError> {
        let mut body = json!({"query": sql, "useLegacySql": false, "timeoutMs": 60000, "formatOptions": {"useInt64Timestamp": true}});
        if !params.is_empty() {
            body["parameterMode"] = json!("NAMED");
            body["queryParameters"] = params_json(params);
        }
        if let Some(l) = self.location() {
            body["location"] = json!(l);
        }
        let (s, mut b) = self.send(reqwest::Method::POST, "/queries", Some(&body)).await?;
        if s != 200 {
            return Err(Self::fail(s, &b));
        }
        let mut rows = Vec::new();
        let started = Instant::now();
        loop {
            if b["jobComplete"].as_bool() == Some(true) {
                rows.extend(cells(&b));
            }
            let job_id = b["jobReference"]["jobId"].as_str().unwrap_or("").to_string();
            let token = b["pageToken"].as_str().map(str::to_string);
            let complete = b["jobComplete"].as_bool() != Some(false);
            if complete && token.is_none() {
                return Ok(rows);
            }
            if job_id.is_empty() || started.elapsed() > Duration::from_secs(600) {
                return Err(BqError::Transient(format!("query did not finish within 10 min (job {job_id:?})")));
            }
            let mut path = format!("/queries/{job_id}?timeoutMs=10000&formatOptions.useInt64Timestamp=true");
            if let Some(t) = token.filter(|_| complete) {
                path.push_str(&format!("&pageToken={}", urlencode(&t)));
            }
            if let Some(l) = self.location() {
                path.push_str(&format!("&location={}", urlencode(&l)));
            }
            let (s, nb) = self.send(reqwest::Method::GET, &path, None).await?;
            if s != 200 {
                return Err(Self::fail(s, &nb));
            }
            b = nb;
        }
    }

    /// Runs a query job under a fixed id and waits for it. Returns `true` when
    /// the id already existed and that job had succeeded (a retry of work
    /// that is done), `false` when this call ran it.
    pub async fn run_job(&self, job_id: &str, sql: &str, params: &[Param<'_>]) -> Result<bool, BqError> {
        let mut query = json!({"query": sql, "useLegacySql": false});
        if !params.is_empty() {
            query["parameterMode"] = json!("NAMED");
            query["queryParameters"] = params_json(params);
        }
        let mut reference = json!({"projectId": self.project, "jobId": job_id});
        if let Some(l) = self.location() {
            reference["location"] = json!(l);
        }
        let body = json!({"jobReference": reference, "configuration": {"query": query}});
        let (s, b) = self.send(reqwest::Method::POST, "/jobs", Some(&body)).await?;
        let (duplicate, job) = match s {
            200 => (false, b),
            409 => (true, Json::Null),
            _ => return Err(Self::fail(s, &b)),
        };
        let job = self.wait_job(job_id, job).await?;
        match job["status"].get("errorResult") {
            None => Ok(duplicate),
            Some(e) if duplicate => Err(BqError::FailedBefore(reason_of(e).1)),
            Some(e) => {
                let (reason, message) = reason_of(e);
                Err(classify(400, &reason, message))
            }
        }
    }

    async fn wait_job(&self, job_id: &str, mut job: Json) -> Result<Json, BqError> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            if job["status"]["state"].as_str() == Some("DONE") {
                return Ok(job);
            }
            if started.elapsed() > Duration::from_secs(600) {
                return Err(BqError::Transient(format!(
                    "job {job_id} did not finish within 10 min; it will be looked up again by its id"
                )));
            }
            if !job.is_null() {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            let mut path = format!("/jobs/{job_id}");
            if let Some(l) = self.location() {
                path.push_str(&format!("?location={}", urlencode(&l)));
            }
            let (s, b) = self.send(reqwest::Method::GET, &path, None).await?;
            if s != 200 {
                return Err(Self::fail(s, &b));
            }
            job = b;
        }
    }
}

/// The rows of a query response, cells as text.
fn cells(b: &Json) -> Vec<Vec<Option<String>>> {
    b["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    r["f"]
                        .as_array()
                        .map(|fs| fs.iter().map(|c| c["v"].as_str().map(str::to_string)).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Percent-encodes a path segment or query value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified() {
        assert!(matches!(classify(400, "invalidQuery", "bad cast".into()), BqError::Data(_)));
        assert!(matches!(classify(503, "", "down".into()), BqError::Transient(_)));
        assert!(matches!(classify(429, "", "slow down".into()), BqError::Overloaded(_)));
        assert!(matches!(classify(403, "rateLimitExceeded", "x".into()), BqError::Overloaded(_)));
        assert!(matches!(classify(403, "accessDenied", "x".into()), BqError::Permission(_)));
        assert!(matches!(classify(401, "", "x".into()), BqError::Permission(_)));
        assert!(matches!(classify(404, "notFound", "x".into()), BqError::NotFound(_)));
        assert!(matches!(classify(400, "jobInternalError", "x".into()), BqError::Transient(_)));
        assert!(matches!(
            classify(400, "invalidQuery", "Could not serialize access to table p:d.t due to concurrent update".into()),
            BqError::Conflict(_)
        ));
        // The emulator's wording of the same abort (a version's CREATE TABLE
        // racing the running instance's MERGE).
        assert!(matches!(
            classify(400, "invalidQuery", "Failed to commit: Failed to commit DuckLake transaction.".into()),
            BqError::Conflict(_)
        ));
        let body =
            json!({"error": {"code": 400, "message": "Could not convert", "errors": [{"reason": "invalidQuery"}]}});
        assert_eq!(reason_of(&body), ("invalidQuery".into(), "Could not convert".into()));
    }

    #[test]
    fn a_table_resource_gives_columns_and_incarnation() {
        let b = json!({"creationTime": "1796156039306", "schema": {"fields": [{"name": "__id", "type": "STRING"}]}});
        let t = TableInfo::from_resource(&b);
        assert_eq!(t.columns, vec![("__id".to_string(), "STRING".to_string())]);
        assert_eq!(t.incarnation, "1796156039306");
        assert_eq!(TableInfo::from_resource(&json!({"creationTime": 17})).incarnation, "17");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(urlencode("Chuyến đi"), "Chuy%E1%BA%BFn%20%C4%91i");
        assert_eq!(urlencode("a_b-1"), "a_b-1");
    }
}
