//! A thin Elasticsearch/OpenSearch REST client: just the calls projector
//! makes (health, index and alias creation, the alias swap, `_mget`, `_bulk`).
//!
//! It sends plain `application/json` (and `application/x-ndjson` for bulk),
//! which Elasticsearch 8/9 and OpenSearch 2 all accept; the official client's
//! `compatible-with` media types are refused by OpenSearch.

use std::time::Duration;

use serde_json::{Value as Json, json};

use super::super::compaction::Stored;
use super::super::{ErrorKind, SinkError};

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
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Current {
    pub seq_no: i64,
    pub primary_term: i64,
    /// The stored source position; `None` for a document projector did not write.
    pub position: Option<String>,
    /// The Kafka partition and offset of the record that last wrote it;
    /// `None` for a document written before projector stored them.
    pub written_by: Option<(i32, i64)>,
    /// Whether it is a tombstone document (`__projector.deleted`).
    pub deleted: bool,
}

impl Current {
    /// What a compaction delete reads of it.
    pub fn stored(&self) -> Stored {
        Stored { deleted: self.deleted, written_by: self.written_by }
    }
}

fn err(kind: ErrorKind, message: impl Into<String>) -> SinkError {
    SinkError::new(SINK, kind, message)
}

/// The one table from an Elasticsearch status and error `type` (of a bulk
/// item or a whole response) to what kind of failure it is. The type wins
/// over the status: a read-only index answers 403 but is unavailable, not a
/// permission problem.
pub fn kind_of(status: u16, error_type: Option<&str>) -> ErrorKind {
    match (status, error_type.unwrap_or("")) {
        (_, "cluster_block_exception" | "index_closed_exception") => ErrorKind::Unavailable,
        (_, "security_exception") | (401 | 403, _) => ErrorKind::Permission,
        (_, "es_rejected_execution_exception" | "circuit_breaking_exception") | (429, _) => ErrorKind::Overloaded,
        (_, "version_conflict_engine_exception") | (409, _) => ErrorKind::Conflict,
        (_, "index_not_found_exception") | (404, _) => ErrorKind::NotFound,
        (
            _,
            "mapper_parsing_exception"
            | "document_parsing_exception"
            | "illegal_argument_exception"
            | "strict_dynamic_mapping_exception",
        ) => ErrorKind::RefusedRow,
        (s, _) if s >= 500 || s == 0 => ErrorKind::Unavailable,
        // Any other 4xx on a document is about that document.
        (400..=499, _) => ErrorKind::RefusedRow,
        _ => ErrorKind::Unavailable,
    }
}

/// The `error.type` of a response body, when it has one.
pub fn error_type(body: &Json) -> Option<&str> {
    body.pointer("/error/type").or_else(|| body.get("type")).and_then(Json::as_str)
}

/// A failed whole request as a sink error, its kind from the table.
fn failed(what: &str, status: u16, body: &Json) -> SinkError {
    err(kind_of(status, error_type(body)), format!("{what}: HTTP {status}: {}", truncate(&body.to_string(), 500)))
}

impl Client {
    pub fn new(base_url: &str, timeout: Duration) -> Result<Client, SinkError> {
        crate::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| err(ErrorKind::Configuration, format!("cannot build HTTP client: {e}")))?;
        Ok(Client { http, base: base_url.trim_end_matches('/').to_string() })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<(u16, Json), SinkError> {
        let resp = req.send().await.map_err(|e| {
            err(ErrorKind::Unavailable, format!("{what}: {} unreachable: {e}; is the cluster up?", self.base))
        })?;
        let status = resp.status().as_u16();
        let bytes =
            resp.bytes().await.map_err(|e| err(ErrorKind::Unavailable, format!("{what}: reading response: {e}")))?;
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
            return Err(failed("cluster health", status, &body));
        }
        Ok(body)
    }

    /// Makes sure index `physical` exists (created with projector's
    /// mapping) and carries `aliases` (name → definition, see
    /// [`reader_alias`] and [`write_alias`]).
    pub async fn ensure_index(&self, physical: &str, mappings: &Json, aliases: &Json) -> Result<(), SinkError> {
        let body = json!({"mappings": mappings, "aliases": aliases});
        let (status, resp) =
            self.send(self.http.put(format!("{}/{physical}", self.base)).json(&body), "index creation").await?;
        match status {
            200 => Ok(()),
            // Another instance created it first, or it exists already.
            400 if error_type(&resp) == Some("resource_already_exists_exception") => {
                let adds: Vec<Json> = aliases
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(alias, def)| {
                        let mut add = json!({"index": physical, "alias": alias});
                        if let (Some(add), Some(def)) = (add.as_object_mut(), def.as_object()) {
                            add.extend(def.clone());
                        }
                        json!({"add": add})
                    })
                    .collect();
                if adds.is_empty() {
                    return Ok(());
                }
                let (status, resp) = self
                    .send(
                        self.http.post(format!("{}/_aliases", self.base)).json(&json!({"actions": adds})),
                        "alias creation",
                    )
                    .await?;
                if status == 200 {
                    Ok(())
                } else {
                    Err(failed(&format!("adding aliases to {physical}"), status, &resp))
                }
            }
            _ => {
                // The shard limit (cluster.max_shards_per_node) is a validation_exception.
                let hint = if error_type(&resp) == Some("validation_exception") {
                    "; if the cluster is at cluster.max_shards_per_node, delete unused indexes or raise that limit (projector retries until the index can be created)"
                } else {
                    ""
                };
                let e = failed(&format!("creating index {physical}"), status, &resp);
                // Refused index settings are the read model's, not a row's.
                let kind = if e.kind.is_data() { ErrorKind::Configuration } else { e.kind };
                Err(err(kind, format!("{}{hint}", e.message)))
            }
        }
    }

    /// The indexes `alias` points at (none when it does not exist).
    pub async fn aliased(&self, alias: &str) -> Result<Vec<String>, SinkError> {
        let (status, body) = self.send(self.http.get(format!("{}/_alias/{alias}", self.base)), "alias lookup").await?;
        match status {
            200 => Ok(body.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()),
            404 => Ok(vec![]),
            _ => Err(failed(&format!("looking up alias {alias}"), status, &body)),
        }
    }

    /// Points `alias` at `physical` alone, in one `_aliases` request: at
    /// every moment readers see exactly one index.
    pub async fn point_alias(&self, alias: &str, physical: &str) -> Result<(), SinkError> {
        let mut actions: Vec<Json> = self
            .aliased(alias)
            .await?
            .into_iter()
            .filter(|i| i != physical)
            .map(|index| json!({"remove": {"index": index, "alias": alias}}))
            .collect();
        let mut add = json!({"index": physical, "alias": alias});
        if let (Some(add), Some(def)) = (add.as_object_mut(), reader_alias().as_object()) {
            add.extend(def.clone());
        }
        actions.push(json!({"add": add}));
        let (status, resp) = self
            .send(self.http.post(format!("{}/_aliases", self.base)).json(&json!({"actions": actions})), "alias swap")
            .await?;
        if status == 200 {
            Ok(())
        } else {
            Err(failed(&format!("pointing alias {alias} at {physical}"), status, &resp))
        }
    }

    /// Sets index `physical`'s `refresh_interval`; `None` returns it to
    /// the server's default.
    pub async fn refresh_interval(&self, physical: &str, interval: Option<&str>) -> Result<(), SinkError> {
        let body = json!({"index": {"refresh_interval": interval}});
        let url = format!("{}/{physical}/_settings", self.base);
        let (status, resp) = self.send(self.http.put(url).json(&body), "index settings").await?;
        match status {
            200 => Ok(()),
            _ => Err(failed(&format!("setting the refresh interval of {physical}"), status, &resp)),
        }
    }

    /// Deletes index `physical`; gone already is fine.
    pub async fn delete_index(&self, physical: &str) -> Result<(), SinkError> {
        let (status, resp) = self.send(self.http.delete(format!("{}/{physical}", self.base)), "index deletion").await?;
        if status == 200 || status == 404 {
            Ok(())
        } else {
            Err(failed(&format!("deleting index {physical}"), status, &resp))
        }
    }

    /// Names of the top-level fields in the mapping behind `alias`.
    pub async fn mapped_fields(&self, alias: &str) -> Result<std::collections::HashMap<String, Json>, SinkError> {
        let (status, body) =
            self.send(self.http.get(format!("{}/{alias}/_mapping", self.base)), "reading mapping").await?;
        if status != 200 {
            return Err(failed(&format!("reading mapping of {alias}"), status, &body));
        }
        let mut out = std::collections::HashMap::new();
        if let Some(indexes) = body.as_object() {
            for idx in indexes.values() {
                if let Some(props) = idx.pointer("/mappings/properties").and_then(Json::as_object) {
                    out.extend(props.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        Ok(out)
    }

    /// The whole mapping of index `physical` (`properties`, `_meta`), or
    /// `None` when the index does not exist. Reads only.
    pub async fn mapping(&self, physical: &str) -> Result<Option<Json>, SinkError> {
        let (status, body) =
            self.send(self.http.get(format!("{}/{physical}/_mapping", self.base)), "reading mapping").await?;
        match status {
            200 => Ok(body.as_object().and_then(|o| o.values().next()).map(|i| i["mappings"].clone())),
            404 => Ok(None),
            _ => Err(failed(&format!("reading mapping of {physical}"), status, &body)),
        }
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
        if status == 200 { Ok(()) } else { Err(failed(&format!("extending mapping of {alias}"), status, &body)) }
    }

    /// Reads the stored position, `_seq_no` and `_primary_term` of documents.
    pub async fn current(&self, alias: &str, ids: &[&str]) -> Result<Vec<Option<Current>>, SinkError> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let url = format!("{}/{alias}/_mget?_source_includes={META_FIELD}&realtime=true", self.base);
        let (status, body) =
            self.send(self.http.post(url).json(&json!({"ids": ids})), "reading current positions").await?;
        if status != 200 {
            return Err(failed(&format!("_mget on {alias}"), status, &body));
        }
        let docs = body
            .get("docs")
            .and_then(Json::as_array)
            .ok_or_else(|| err(ErrorKind::Unavailable, format!("_mget on {alias}: no docs in response")))?;
        if docs.len() != ids.len() {
            return Err(err(
                ErrorKind::Unavailable,
                format!("_mget on {alias}: asked for {} ids, got {}", ids.len(), docs.len()),
            ));
        }
        docs.iter()
            .map(|d| {
                if let Some(e) = d.get("error") {
                    return Err(err(kind_of(0, error_type(d)), format!("_mget on {alias}: {e}")));
                }
                if d.get("found").and_then(Json::as_bool) != Some(true) {
                    return Ok(None);
                }
                let meta = d.pointer(&format!("/_source/{META_FIELD}"));
                Ok(Some(Current {
                    seq_no: d
                        .get("_seq_no")
                        .and_then(Json::as_i64)
                        .ok_or_else(|| err(ErrorKind::Unavailable, "_mget: found document without _seq_no"))?,
                    primary_term: d
                        .get("_primary_term")
                        .and_then(Json::as_i64)
                        .ok_or_else(|| err(ErrorKind::Unavailable, "_mget: found document without _primary_term"))?,
                    position: meta.and_then(|m| m.get("position")).and_then(Json::as_str).map(str::to_string),
                    written_by: meta.and_then(|m| {
                        let partition = i32::try_from(m.get("partition")?.as_i64()?).ok()?;
                        Some((partition, m.get("offset")?.as_i64()?))
                    }),
                    deleted: meta.and_then(|m| m.get("deleted")).and_then(Json::as_bool).unwrap_or(false),
                }))
            })
            .collect()
    }

    /// Every document of the index behind `alias` (or of the index
    /// `alias` itself), tombstones included: the alias filters those out,
    /// so the count goes to the physical indexes. Refreshes first, so writes
    /// just acknowledged are counted.
    pub async fn count_all(&self, alias: &str) -> Result<u64, SinkError> {
        let (status, body) = self.send(self.http.post(format!("{}/{alias}/_refresh", self.base)), "refresh").await?;
        if status != 200 {
            return Err(failed(&format!("refreshing {alias}"), status, &body));
        }
        let (status, body) = self.send(self.http.get(format!("{}/_alias/{alias}", self.base)), "alias lookup").await?;
        let indexes = match body.as_object() {
            Some(o) if status == 200 && !o.is_empty() => o.keys().cloned().collect::<Vec<_>>().join(","),
            _ => alias.to_string(),
        };
        let (status, body) = self.send(self.http.get(format!("{}/{indexes}/_count", self.base)), "count").await?;
        if status != 200 {
            return Err(failed(&format!("counting {alias}"), status, &body));
        }
        body.get("count")
            .and_then(Json::as_u64)
            .ok_or_else(|| err(ErrorKind::Unavailable, format!("counting {alias}: no count in the response")))
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
            return Err(failed("bulk", status, &resp));
        }
        let items = resp.get("items").and_then(Json::as_array).ok_or_else(|| {
            err(ErrorKind::Unavailable, format!("bulk: response has no items: {}", truncate(&resp.to_string(), 500)))
        })?;
        if items.len() != expected_items {
            return Err(err(
                ErrorKind::Unavailable,
                format!("bulk: sent {expected_items} actions, got {} results", items.len()),
            ));
        }
        Ok(items
            .iter()
            .map(|item| {
                let result = item.as_object().and_then(|o| o.values().next()).cloned().unwrap_or(Json::Null);
                BulkItem {
                    status: result
                        .get("status")
                        .and_then(Json::as_u64)
                        .and_then(|s| u16::try_from(s).ok())
                        .unwrap_or(0),
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

/// The readers' alias hides tombstones from searches.
pub fn reader_alias() -> Json {
    json!({"filter": {"bool": {"must_not": {"term": {format!("{META_FIELD}.deleted"): true}}}}})
}

/// The alias projector writes a version through: a bulk request with
/// `require_alias` fails on a deleted index (so projector re-creates it
/// with its mapping) instead of creating it with dynamic mappings.
pub fn write_alias(physical: &str) -> String {
    format!("{physical}{WRITE_ALIAS_SUFFIX}")
}

pub const WRITE_ALIAS_SUFFIX: &str = ".writes";

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
