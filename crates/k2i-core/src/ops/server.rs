//! The HTTP endpoints: `/healthz` (liveness), `/readyz` (readiness, 503 with a JSON reason), `/health`
//! (per-component), `/status` (JSON) on `monitoring.health_port`, and `/metrics` (Prometheus text) on
//! `monitoring.metrics_port`. When both ports are equal one server serves everything.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Ops;
use crate::error::{Error, ErrorKind, Result};

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    match ops.readiness() {
        Ok(()) => (StatusCode::OK, axum::Json(serde_json::json!({ "ready": true }))).into_response(),
        Err(reason) => {
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({ "ready": false, "reason": reason })))
                .into_response()
        }
    }
}

async fn health(State(ops): State<Arc<Ops>>) -> Response {
    let body = ops.health_json();
    let code = if ops.readiness().is_ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(body)).into_response()
}

async fn status(State(ops): State<Arc<Ops>>) -> Response {
    axum::Json(ops.status_json()).into_response()
}

async fn metrics(State(ops): State<Arc<Ops>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], ops.metrics.render()).into_response()
}

/// `POST /resume?action=retry|skip|dead-letter`: an operator's decision for a table paused by a breaking
/// schema change (202 with the pause reason; 409 when nothing is paused).
async fn resume(State(ops): State<Arc<Ops>>, query: axum::extract::Query<ResumeQuery>) -> Response {
    let action = query.action.unwrap_or(super::ResumeAction::Retry);
    match ops.schema_reason() {
        Some(reason) => {
            ops.request_resume(action);
            (
                StatusCode::ACCEPTED,
                axum::Json(serde_json::json!({ "accepted": true, "action": action, "paused": reason })),
            )
                .into_response()
        }
        None => {
            (StatusCode::CONFLICT, axum::Json(serde_json::json!({ "accepted": false, "reason": "no table is paused" })))
                .into_response()
        }
    }
}

#[derive(serde::Deserialize)]
struct ResumeQuery {
    action: Option<super::ResumeAction>,
}

fn health_routes() -> Router<Arc<Ops>> {
    Router::new()
        .route("/resume", axum::routing::post(resume))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/health", get(health))
        .route("/status", get(status))
}

/// Binds the listeners (so a port in use fails the start at once) and serves them on the runtime.
pub async fn start(ops: Arc<Ops>, health_addr: SocketAddr, metrics_addr: SocketAddr) -> Result<Vec<SocketAddr>> {
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::new(ErrorKind::Config, "cannot listen for HTTP").with("address", addr).source(e))
    };
    let mut bound = Vec::new();
    if health_addr == metrics_addr {
        let listener = bind(health_addr).await?;
        bound.push(listener.local_addr().unwrap_or(health_addr));
        let app = health_routes().route("/metrics", get(metrics)).with_state(ops);
        tokio::spawn(serve(listener, app));
    } else {
        let health_listener = bind(health_addr).await?;
        let metrics_listener = bind(metrics_addr).await?;
        bound.push(health_listener.local_addr().unwrap_or(health_addr));
        bound.push(metrics_listener.local_addr().unwrap_or(metrics_addr));
        tokio::spawn(serve(health_listener, health_routes().with_state(ops.clone())));
        tokio::spawn(serve(metrics_listener, Router::new().route("/metrics", get(metrics)).with_state(ops)));
    }
    for addr in &bound {
        tracing::info!(address = %addr, "serving HTTP endpoints");
    }
    Ok(bound)
}

async fn serve(listener: tokio::net::TcpListener, app: Router) {
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the HTTP server stopped");
    }
}
