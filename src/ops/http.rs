//! The operations endpoint: `/metrics` (Prometheus text), `/health/live`
//! (the process answers) and `/health/ready` (every sink is taking writes).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::health::Health;

#[derive(Clone)]
struct Ops {
    health: Health,
    metrics: PrometheusHandle,
}

/// Installs the global metrics recorder. Call once, before any metric.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])?
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
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for /metrics and /health: {e}; pick a free port with --http-addr"))?;
    tracing::info!(%addr, "serving /metrics, /health/live, /health/ready");
    axum::serve(listener, app).await?;
    Ok(())
}

async fn ready(State(o): State<Ops>) -> impl IntoResponse {
    let body = serde_json::json!({"ready": o.health.ready(), "sinks": o.health.snapshot()});
    let status = if o.health.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [("content-type", "application/json")], body.to_string())
}
