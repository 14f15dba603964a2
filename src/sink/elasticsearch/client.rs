//! A thin Elasticsearch/OpenSearch REST client: just the calls projector
//! makes (health, index + alias creation, `_mget`, `_bulk`).
//!
//! It sends plain `application/json` (and `application/x-ndjson` for bulk),
//! which Elasticsearch 8/9 and OpenSearch 2 all accept; the official client's
//! `compatible-with` media types are refused by OpenSearch.

use std::time::Duration;

use serde_json::{Value as Json, json};

use super::super::SinkError;

pub(crate) const SINK: &str = "elasticsearch";

/// The field holding projector's own bookkeeping in every document.
pub const META_FIELD: &str = "__projector";

/// A connection to one cluster.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

/// What `_mget` says about one document.
#[derive(Clone, Debug, PartialEq)]
pub struct Current {
    pub seq_no: i64,
    pub primary_term: i64,
    /// The stored source position; `None` for a document projector did not write.
    pub position: Option<String>,
}

fn err(message: impl Into<String>) -> SinkError {
    SinkError { sink: SINK, message: message.into() }
}

impl Client {
    pub fn new(base_url: &str, timeout: Duration) -> Result<Client, SinkError> {
        crate::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| err(format!("cannot build HTTP client: {e}")))?;
        Ok(Client { http, base: base_url.trim_end_matches('/').to_string() })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<(u16, Json), SinkError> {
        let resp =
            req.send().await.map_err(|e| err(format!("{what}: {} unreachable: {e}; is the cluster up?", self.base)))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| err(format!("{what}: reading response: {e}")))?;
        let body = if bytes.is_empty() {
            Json::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
        };
        Ok((status, body))
    }

    /// `GET /_cluster/health`, proving the cluster answers. (`GET /` is not
    /// used: the integ-test-zip distribution lacks the module that serves it.)
    pub async fn health(&self) -> Result<Json, SinkError> {
        let (status, body) =
            self.send(self.http.get(format!("{}/_cluster/health", self.base)), "cluster health").await?;
        if status != 200 {
            return Err(err(format!("cluster health: HTTP {status}: {body}")));
        }
        Ok(body)
    }

    /// Makes sure `alias` exists and points at a physical index created with
    /// projector's mapping. The alias filters out tombstone documents, so
    /// searches through it see only live rows.
    pub async fn ensure_alias(&self, alias: &str, mappings: &Json) -> Result<(), SinkError> {
        let (status, _) = self.send(self.http.head(format!("{}/_alias/{alias}", self.base)), "alias lookup").await?;
        if status == 200 {
            return Ok(());
        }
        let physical = format!("{alias}_v1");
        let body = json!({"mappings": mappings, "aliases": {alias: alias_definition()}});
        let (status, resp) =
            self.send(self.http.put(format!("{}/{physical}", self.base)).json(&body), "index creation").await?;
        match status {
            200 => Ok(()),
            // Another instance created it first, or it exists without the alias.
            400 if resp.to_string().contains("resource_already_exists_exception") => {
                let actions = json!({"actions": [{"add": {"index": physical, "alias": alias, "is_write_index": true, "filter": alias_definition()["filter"]}}]});
                let (status, resp) = self
                    .send(self.http.post(format!("{}/_aliases", self.base)).json(&actions), "alias creation")
                    .await?;
                if status == 200 {
                    Ok(())
                } else {
                    Err(err(format!("adding alias {alias} to {physical}: HTTP {status}: {resp}")))
                }
            }
            _ => {
                let hint = if resp.to_string().contains("maximum normal shards open") {
                    "; the cluster is at cluster.max_shards_per_node: delete unused indexes or raise that limit (projector retries until the index can be created)"
                } else {
                    ""
                };
                Err(err(format!("creating index {physical} for alias {alias}: HTTP {status}: {resp}{hint}")))
            }
        }
    }

    /// Names of the top-level fields in the mapping behind `alias`.
    pub async fn mapped_fields(&self, alias: &str) -> Result<std::collections::HashSet<String>, SinkError> {
        let (status, body) =
            self.send(self.http.get(format!("{}/{alias}/_mapping", self.base)), "reading mapping").await?;
        if status != 200 {
            return Err(err(format!("reading mapping of {alias}: HTTP {status}: {body}")));
        }
        let mut out = std::collections::HashSet::new();
        if let Some(indexes) = body.as_object() {
            for idx in indexes.values() {
                if let Some(props) = idx.pointer("/mappings/properties").and_then(Json::as_object) {
                    out.extend(props.keys().cloned());
                }
            }
        }
        Ok(out)
    }

    /// Adds field mappings to the index behind `alias` (additive only).
    pub async fn put_mapping(&self, alias: &str, fields: &[(String, Json)]) -> Result<(), SinkError> {
        let props: serde_json::Map<String, Json> = fields.iter().cloned().collect();
        let (status, body) = self
            .send(
                self.http.put(format!("{}/{alias}/_mapping", self.base)).json(&json!({"properties": props})),
                "extending mapping",
            )
            .await?;
        if status == 200 {
            Ok(())
        } else {
            Err(err(format!("extending mapping of {alias}: HTTP {status}: {}", truncate(&body.to_string(), 400))))
        }
    }

    /// Reads the stored position, `_seq_no` and `_primary_term` of documents.
    pub async fn current(&self, alias: &str, ids: &[&str]) -> Result<Vec<Option<Current>>, SinkError> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let url = format!("{}/{alias}/_mget?_source_includes={META_FIELD}.position&realtime=true", self.base);
        let (status, body) =
            self.send(self.http.post(url).json(&json!({"ids": ids})), "reading current positions").await?;
        if status != 200 {
            return Err(err(format!("_mget on {alias}: HTTP {status}: {body}")));
        }
        let docs = body
            .get("docs")
            .and_then(Json::as_array)
            .ok_or_else(|| err(format!("_mget on {alias}: no docs in response")))?;
        if docs.len() != ids.len() {
            return Err(err(format!("_mget on {alias}: asked for {} ids, got {}", ids.len(), docs.len())));
        }
        docs.iter()
            .map(|d| {
                if let Some(e) = d.get("error") {
                    return Err(err(format!("_mget on {alias}: {e}")));
                }
                if d.get("found").and_then(Json::as_bool) != Some(true) {
                    return Ok(None);
                }
                Ok(Some(Current {
                    seq_no: d
                        .get("_seq_no")
                        .and_then(Json::as_i64)
                        .ok_or_else(|| err("_mget: found document without _seq_no"))?,
                    primary_term: d
                        .get("_primary_term")
                        .and_then(Json::as_i64)
                        .ok_or_else(|| err("_mget: found document without _primary_term"))?,
                    position: d
                        .pointer(&format!("/_source/{META_FIELD}/position"))
                        .and_then(Json::as_str)
                        .map(str::to_string),
                }))
            })
            .collect()
    }

    /// Sends an NDJSON bulk body; returns each item's result.
    pub async fn bulk(&self, body: Vec<u8>, expected_items: usize) -> Result<Vec<BulkItem>, SinkError> {
        let url = format!(
            "{}/_bulk?require_alias=true&filter_path=errors,items.*.status,items.*.error,items.*._seq_no,items.*._primary_term",
            self.base
        );
        let req = self.http.post(url).header("content-type", "application/x-ndjson").body(body);
        let (status, resp) = self.send(req, "bulk").await?;
        if status != 200 {
            return Err(err(format!("bulk: HTTP {status}: {}", truncate(&resp.to_string(), 500))));
        }
        let items = resp
            .get("items")
            .and_then(Json::as_array)
            .ok_or_else(|| err(format!("bulk: response has no items: {}", truncate(&resp.to_string(), 500))))?;
        if items.len() != expected_items {
            return Err(err(format!("bulk: sent {expected_items} actions, got {} results", items.len())));
        }
        Ok(items
            .iter()
            .map(|item| {
                let result = item.as_object().and_then(|o| o.values().next()).cloned().unwrap_or(Json::Null);
                BulkItem {
                    status: result.get("status").and_then(Json::as_u64).unwrap_or(0) as u16,
                    error: result.get("error").cloned(),
                    seq_no: result.get("_seq_no").and_then(Json::as_i64),
                    primary_term: result.get("_primary_term").and_then(Json::as_i64),
                }
            })
            .collect())
    }
}

/// One bulk action's result.
#[derive(Clone, Debug)]
pub struct BulkItem {
    pub status: u16,
    pub error: Option<Json>,
    /// The document's new sequence number and primary term, when written.
    pub seq_no: Option<i64>,
    pub primary_term: Option<i64>,
}

/// The alias hides tombstones from searches.
fn alias_definition() -> Json {
    json!({"is_write_index": true, "filter": {"bool": {"must_not": {"term": {format!("{META_FIELD}.deleted"): true}}}}})
}

pub(crate) fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
