//! Avro test helpers: JsonConverter fixtures turned into AvroConverter
//! output, with their schemas registered in the stack's real registry.

pub mod fixture;

use std::collections::HashMap;

use projector::demo::sqlserver::Record;
use serde_json::{Value as Json, json};

use super::http;

pub fn registry_url() -> String {
    std::env::var("PROJECTOR_SCHEMA_REGISTRY_URL").unwrap_or_else(|_| "http://127.0.0.1:8081/apis/ccompat/v7".into())
}

/// Registers `schema` under `subject` (the same schema again gets the same id).
pub async fn register(subject: &str, schema: &Json) -> u32 {
    let resp = http()
        .post(format!("{}/subjects/{subject}/versions", registry_url()))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&json!({"schema": schema.to_string()}))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!("schema registry at {} unreachable ({e}); is `scripts/stack up` running?", registry_url())
        });
    let status = resp.status();
    let body: Json = resp.json().await.unwrap();
    assert!(status.is_success(), "registering {subject}: {status} {body}");
    body["id"].as_u64().unwrap() as u32
}

/// Turns JsonConverter fixtures (made with schemas) into AvroConverter output,
/// registering each distinct schema once.
pub async fn to_avro(records: &[Record]) -> Vec<Record> {
    let mut ids: HashMap<(String, String), u32> = HashMap::new();
    let mut out = Vec::new();
    for r in records {
        let parts = fixture::split(&r.topic, &r.key, r.value.as_deref()).unwrap();
        let mut encode = async |suffix: &str, (schema, payload): &(Json, Json)| {
            let subject = format!("{}-{suffix}", parts.topic);
            let id = match ids.get(&(subject.clone(), schema.to_string())) {
                Some(id) => *id,
                None => {
                    let id = register(&subject, schema).await;
                    ids.insert((subject, schema.to_string()), id);
                    id
                }
            };
            fixture::wire(schema, id, payload).unwrap()
        };
        let key = encode("key", &parts.key).await;
        let value = match &parts.value {
            Some(v) => Some(encode("value", v).await),
            None => None,
        };
        out.push(Record { topic: parts.topic.clone(), key, value });
    }
    out
}
