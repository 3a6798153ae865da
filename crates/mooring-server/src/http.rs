//! Layers every response passes through, and the liveness endpoint.

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};

use crate::state::AppState;
use crate::{durable_streams, realtime, rest};

/// Headers browsers may read from our responses.
const EXPOSED: [&str; 11] = [
    "stream-next-offset",
    "stream-cursor",
    "stream-up-to-date",
    "stream-closed",
    "stream-sse-data-encoding",
    "producer-epoch",
    "producer-seq",
    "producer-expected-seq",
    "producer-received-seq",
    "etag",
    "location",
];

/// The whole application router.
pub fn router(app: AppState) -> Router {
    let body_limit = app.config.max_append_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(crate::metrics::render))
        .merge(durable_streams::routes())
        .merge(realtime::routes())
        .merge(rest::routes())
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(cors())
        .layer(middleware::from_fn(security_headers))
        .with_state(app)
}

async fn healthz() -> &'static str {
    "ok"
}

fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::HEAD,
            Method::OPTIONS,
        ])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers(ExposeHeaders::list(EXPOSED.map(HeaderName::from_static)))
}

/// `nosniff` everywhere, so a stream's bytes are never sniffed into HTML or script, and a
/// cross-origin resource policy so browsers may embed reads from other origins.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    response
}
