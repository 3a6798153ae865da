//! Prometheus metrics at `/metrics`.
//!
//! Metric names are the contract with dashboards; they are listed in `docs/protocol.md`.
//! The recorder is process-wide (the `metrics` facade allows one), installed on first use, so
//! several nodes in one test process share it.

use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const CONNECTIONS: &str = "mooring_connections";
pub const CONNECTIONS_CLOSED: &str = "mooring_connections_closed_total";
pub const ATTACHMENTS: &str = "mooring_attached_sessions";
pub const EVENTS_IN: &str = "mooring_events_published_total";
pub const EVENTS_OUT: &str = "mooring_events_delivered_total";
pub const RESUMES: &str = "mooring_resumes_total";
pub const SEAM_FAILURES: &str = "mooring_seam_failures_total";
pub const LIVES_ENDED: &str = "mooring_session_lives_ended_total";
pub const SLOW_CONSUMERS: &str = "mooring_slow_consumer_disconnects_total";
pub const ACTIVE_RUNS: &str = "mooring_active_runs";
pub const PUBLISH_TO_DELIVER: &str = "mooring_publish_to_deliver_seconds";
pub const SESSION_WRITE: &str = "mooring_session_write_seconds";
pub const DS_APPENDS: &str = "mooring_stream_appends_total";
pub const LEAN_REQUESTS: &str = "mooring_http_lean_requests_total";
pub const HAND_OFFS: &str = "mooring_http_connections_handed_off_total";
pub const DISPATCH_WAITING: &str = "mooring_dispatch_waiting_inputs";
pub const DISPATCHED: &str = "mooring_dispatched_total";
pub const DISPATCH_DROPPED: &str = "mooring_dispatch_dropped_total";
pub const STORE_NOTICES: &str = "mooring_store_notices_total";
pub const NODES_LOST: &str = "mooring_nodes_lost_total";
pub const LOGS_REGRESSED: &str = "mooring_session_logs_regressed_total";

/// Buckets of the latency histograms (every `_seconds` metric), in seconds: 100 µs to 5 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder (once per process) and describes the metrics.
pub fn install() {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                &LATENCY_BUCKETS,
            )
            .ok()?;
        let handle = builder.install_recorder().ok()?;
        describe();
        Some(handle)
    });
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(CONNECTIONS, "Open realtime connections.");
    describe_counter!(
        CONNECTIONS_CLOSED,
        "Realtime connections ended, by how (clean, lost, closed)."
    );
    describe_gauge!(ATTACHMENTS, "Sessions attached across all connections.");
    describe_counter!(
        EVENTS_IN,
        "Events written to sessions (duplicates excluded)."
    );
    describe_counter!(EVENTS_OUT, "Events queued to attached clients.");
    describe_counter!(RESUMES, "Attaches from a position (resumes).");
    describe_counter!(
        LIVES_ENDED,
        "Hot sessions whose log began a new life (deleted, or lost by the storage) under attached subscribers, who were detached with history_lost."
    );
    describe_counter!(
        SEAM_FAILURES,
        "Attachments failed closed because live events outran the replay."
    );
    describe_counter!(
        SLOW_CONSUMERS,
        "Connections closed because the client read too slowly."
    );
    describe_gauge!(ACTIVE_RUNS, "Runs by state (active, stalled).");
    describe_histogram!(
        PUBLISH_TO_DELIVER,
        Unit::Seconds,
        "From a publish reaching its session to its event being queued to subscribers."
    );
    describe_histogram!(
        SESSION_WRITE,
        Unit::Seconds,
        "One session task's write of its pending publishes to the store, until durable."
    );
    describe_counter!(DS_APPENDS, "Appends through the Durable Streams surface.");
    describe_counter!(
        LEAN_REQUESTS,
        "HTTP requests answered by the lean connection loop (appends directly, other writes through the router) instead of hyper."
    );
    describe_counter!(
        HAND_OFFS,
        "Connections handed from the lean loop to hyper, at their first read, upgrade or request of unusual framing."
    );
    describe_gauge!(DISPATCH_WAITING, "User inputs waiting for a worker.");
    describe_counter!(
        DISPATCHED,
        "Inputs offered to a worker, by attempt (first, again)."
    );
    describe_counter!(
        DISPATCH_DROPPED,
        "Inputs no worker took, by why (expired, evicted)."
    );
    describe_counter!(
        STORE_NOTICES,
        "Notices from other nodes, by kind (moved, presence, lost)."
    );
    describe_counter!(
        LOGS_REGRESSED,
        "Session logs found to have lost their end (a store that went back in time); each started a new life."
    );
    describe_counter!(
        NODES_LOST,
        "Other nodes on the shared store found dead (no beat within the node expiry)."
    );
}

pub(crate) async fn render() -> impl IntoResponse {
    let text = HANDLE
        .get()
        .and_then(Option::as_ref)
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
