//! Layers every response passes through, and the liveness endpoint.

use std::convert::Infallible;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tower::{Layer, Service};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::state::{AppState, ServerConfig};
use crate::{chat, durable_streams, realtime, rest};

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

/// The whole application: the routes, inside the layers every response passes through.
///
/// The outer layers wrap the router once instead of each route (as `Router::layer` does):
/// axum clones a route's service for every request, and cloning the CORS layer with its header
/// lists cost about 3% of a small append's CPU in the profile.
pub fn app(
    app: AppState,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone + Send + 'static
{
    let body_limit = app.config.max_append_bytes;
    let origins = app.config.allowed_origins.clone();
    let routes = DefaultBodyLimit::max(body_limit).layer(routes(app));
    outer(routes, origins.as_deref())
}

/// The layers around every answer: CORS, `nosniff` everywhere, so a stream's bytes are never
/// sniffed into HTML or script, and a cross-origin resource policy so browsers may embed reads
/// from other origins.
fn outer<S>(
    inner: S,
    origins: Option<&[String]>,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone + Send + 'static
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let nosniff = SetResponseHeaderLayer::overriding(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    let embeddable = SetResponseHeaderLayer::overriding(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    embeddable.layer(nosniff.layer(cors(origins).layer(inner)))
}

/// The header lines the outer layers add to the answer of a request without `Origin` (the
/// only kind the lean path takes), found by passing one such request through them, so the two
/// paths cannot drift apart.
pub(crate) async fn outer_headers(config: &ServerConfig) -> Vec<u8> {
    let empty = tower::service_fn(|_: Request| async { Ok::<_, Infallible>(Response::default()) });
    let mut layers = outer(empty, config.allowed_origins.as_deref());
    let probe = Request::post(format!("{}probe", crate::durable_streams::STREAM_PREFIX))
        .body(axum::body::Body::empty())
        .unwrap_or_default();
    let answer = match layers.call(probe).await {
        Ok(answer) => answer,
        Err(never) => match never {},
    };
    let mut lines = Vec::new();
    for (name, value) in answer.headers() {
        lines.extend_from_slice(name.as_str().as_bytes());
        lines.extend_from_slice(b": ");
        lines.extend_from_slice(value.as_bytes());
        lines.extend_from_slice(b"\r\n");
    }
    lines
}

/// Every route, with the authentication of each surface.
fn routes(app: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(crate::metrics::render))
        .route("/v1/tokens", post(crate::auth::http::issue))
        .merge(
            durable_streams::routes().route_layer(middleware::from_fn_with_state(
                app.clone(),
                crate::auth::http::durable_streams,
            )),
        )
        .merge(realtime::routes())
        // Authenticated in each handler: the chat, and so the capability, is in the body.
        .merge(chat::routes())
        .merge(rest::routes().route_layer(middleware::from_fn_with_state(
            app.clone(),
            crate::auth::http::rest,
        )))
        .with_state(app)
}

/// A header value as text, if it is visible ASCII and tabs only: the rule of
/// `HeaderValue::to_str`, for code that reads raw header bytes (the lean path) and must refuse
/// exactly what the router's extractors refuse.
pub(crate) fn visible_text(raw: &[u8]) -> Option<&str> {
    let visible = raw.iter().all(|&b| b == b'\t' || (32..127).contains(&b));
    visible.then(|| std::str::from_utf8(raw).ok()).flatten()
}

async fn healthz() -> &'static str {
    "ok"
}

/// CORS from the origin allowlist; any origin when there is none (the Durable Streams suite
/// and anonymous loopback nodes rely on that).
fn cors(allowed: Option<&[String]>) -> CorsLayer {
    let origins = match allowed {
        None => AllowOrigin::any(),
        Some(list) => AllowOrigin::list(
            list.iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        ),
    };
    CorsLayer::new()
        .allow_origin(origins)
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
