//! The health and metrics endpoint: `/liveness`, `/readiness`, `/metrics`.
//!
//! The main loop owns the state; it publishes snapshots through `watch` channels that the
//! handlers only read:
//! - `/liveness`: 200 while the main loop has ticked within [`LIVENESS_TIMEOUT`], else 503
//!   (also 503 once the loop is gone);
//! - `/readiness`: 200 `ready`, or 503 with the reason as plain text;
//! - `/metrics`: Prometheus/OpenMetrics text;
//! - `/status`: JSON `{"inSync", "revision", "policyRevision"}` — the datastore revision the
//!   agent has absorbed and the one its policy dataplane reflects (tests and tools wait on it);
//! - `/bgp`: JSON `{"peers": [...], "problems": [...]}`: one row per BGP peer, and the BGP
//!   configuration problems of the current plan (`tortie node status` prints both).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::main_loop::AgentStatus;
use crate::metrics::Metrics;

/// How stale the main loop's heartbeat may get before `/liveness` fails.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(60);

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct HealthView {
    /// `Ok` or the not-ready reason.
    pub readiness: watch::Receiver<Result<(), String>>,
    /// The main loop's last tick.
    pub heartbeat: watch::Receiver<Instant>,
    pub metrics: Arc<Metrics>,
    pub status: watch::Receiver<AgentStatus>,
    /// BGP peers and plan problems (empty with static routing).
    pub bgp: watch::Receiver<crate::bgp::BgpView>,
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn liveness(State(view): State<HealthView>) -> Response {
    if view.heartbeat.has_changed().is_err() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "main loop stopped\n".into(),
        );
    }
    let age = view.heartbeat.borrow().elapsed();
    if age > LIVENESS_TIMEOUT {
        let body = format!("main loop stalled for {}s\n", age.as_secs());
        return text(StatusCode::SERVICE_UNAVAILABLE, body);
    }
    text(StatusCode::OK, "live\n".into())
}

async fn readiness(State(view): State<HealthView>) -> Response {
    let status = view.readiness.borrow().clone();
    match status {
        Ok(()) => text(StatusCode::OK, "ready\n".into()),
        Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

async fn metrics(State(view): State<HealthView>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        view.metrics.encode(),
    )
        .into_response()
}

async fn status(State(view): State<HealthView>) -> Response {
    let s = *view.status.borrow();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&s).unwrap_or_default(),
    )
        .into_response()
}

async fn bgp(State(view): State<HealthView>) -> Response {
    let body = serde_json::to_string(&*view.bgp.borrow()).unwrap_or_default();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// The router over `view`.
pub fn router(view: HealthView) -> Router {
    Router::new()
        .route("/liveness", get(liveness))
        .route("/readiness", get(readiness))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/bgp", get(bgp))
        .with_state(view)
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    view: HealthView,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(view))
        .with_graceful_shutdown(shutdown)
        .await
}
