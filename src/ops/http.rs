//! The operations endpoint: `/metrics` (Prometheus text), `/health/live`
//! (the process answers) and `/health/ready` (every sink is taking writes).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::health::Health;

#[derive(Clone)]
struct Ops {
    health: Health,
    metrics: PrometheusHandle,
}

/// Bucket bounds of `projector_append_to_ack_seconds`: 1 ms to 5 min, about
/// 1.25x apart up to 1 s, coarser above.
const APPEND_TO_ACK_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.010, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.08,
    0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Installs the global metrics recorder. Call once, before any metric.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])?
        // Freshness is the number operators watch: finer steps, so p50/p99
        // read from the buckets are within ~25% of the true value.
        .set_buckets_for_metric(Matcher::Full("projector_append_to_ack_seconds".into()), APPEND_TO_ACK_BUCKETS)?
        .install_recorder()?;
    Ok(handle)
}

/// Serves the endpoints until the process exits.
pub async fn serve(addr: SocketAddr, health: Health, metrics: PrometheusHandle) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(|State(o): State<Ops>| async move { o.metrics.render() }))
        .route("/health/live", get(|| async { "live\n" }))
        .route("/health/ready", get(ready))
        .with_state(Ops { health, metrics });
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr} for /metrics and /health: {e}; pick a free port with --http-addr")
    })?;
    tracing::info!(%addr, "serving /metrics, /health/live, /health/ready");
    axum::serve(listener, app).await?;
    Ok(())
}

async fn ready(State(o): State<Ops>) -> impl IntoResponse {
    let body =
        serde_json::json!({"ready": o.health.ready(), "sinks": o.health.snapshot(), "upstreams": o.health.upstreams()});
    let status = if o.health.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [("content-type", "application/json")], body.to_string())
}
