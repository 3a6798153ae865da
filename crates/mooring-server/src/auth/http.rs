//! Auth on the HTTP surfaces: a guard per surface (run after routing, so it sees the session
//! name exactly as the handler will, percent-decoding included), the credential of a request,
//! and token issuance (`POST /v1/tokens`).

use std::collections::HashMap;

use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mooring_core::auth::{Capabilities, Operation};
use mooring_protocol::realtime::ErrorCode;
use serde::Deserialize;
use serde_json::json;

use super::{AuthError, Principal};
use crate::durable_streams::DsError;
use crate::rest::publish::CLIENT_ID_HEADER;
use crate::rest::RestError;
use crate::state::AppState;

/// The bearer credential of a request, if any. A header that is not valid text or not
/// `Bearer <credential>` counts as none (and so is refused on an authenticated node).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    bearer_of(headers.get(axum::http::header::AUTHORIZATION)?.as_bytes())
}

/// The credential of an `Authorization` value, by the rules of [`bearer`].
pub(crate) fn bearer_of(raw: &[u8]) -> Option<&str> {
    let value = crate::http::visible_text(raw)?;
    let (scheme, credential) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim())
        .filter(|c| !c.is_empty())
}

/// Why an HTTP request was refused by auth.
#[derive(Debug)]
pub(crate) enum Refusal {
    Unauthorized(AuthError),
    Forbidden(String),
}

impl Refusal {
    fn rest(self) -> Response {
        match self {
            Self::Unauthorized(e) => RestError::new(ErrorCode::Unauthorized, e.to_string()),
            Self::Forbidden(m) => RestError::new(ErrorCode::Forbidden, m),
        }
        .into_response()
    }

    fn durable_streams(self) -> Response {
        self.ds_error().into_response()
    }

    fn ds_error(self) -> DsError {
        match self {
            Self::Unauthorized(e) => {
                DsError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", e.to_string())
            }
            Self::Forbidden(m) => DsError::new(StatusCode::FORBIDDEN, "FORBIDDEN", m),
        }
    }
}

fn forbidden(operation: Operation, session: &str) -> Refusal {
    Refusal::Forbidden(format!(
        "this credential does not grant {operation} on {session:?}"
    ))
}

/// The decision of every guard: the principal of `credential`, allowed `operation` on
/// `session` (any credential when `None`), and its identity as a header value, refused if it
/// cannot be one.
fn decide(
    app: &AppState,
    credential: Option<&str>,
    session: &str,
    operation: Option<Operation>,
) -> Result<(Principal, Option<HeaderValue>), Refusal> {
    let principal = app
        .config
        .auth
        .authenticate(credential, app.clock.now_ms())
        .map_err(Refusal::Unauthorized)?;
    if let Some(operation) = operation {
        if !principal.allows(session, operation) {
            return Err(forbidden(operation, session));
        }
    }
    let identity = match &principal.client_id {
        Some(client_id) => Some(
            HeaderValue::from_str(client_id)
                .map_err(|_| Refusal::Forbidden("the identity is not a valid header".into()))?,
        ),
        None => None,
    };
    Ok((principal, identity))
}

/// Authenticates `request`, checks `operation` on `session`, and stamps the identity: on an
/// authenticated request the `Mooring-Client-Id` header must be absent or name the credential's
/// identity, and is then set to it, so handlers read the verified identity where anonymous
/// nodes read the client's own word.
fn admit(
    app: &AppState,
    request: &mut Request,
    session: &str,
    operation: Option<Operation>,
) -> Result<(), Refusal> {
    let (principal, identity) = decide(app, bearer(request.headers()), session, operation)?;
    if let Some(identity) = identity {
        let headers = request.headers_mut();
        let claimed = headers.get(CLIENT_ID_HEADER);
        if claimed.is_some_and(|c| c != identity) {
            return Err(Refusal::Forbidden(format!(
                "{CLIENT_ID_HEADER} names another identity than the credential's ({:?})",
                principal.client_id.as_deref().unwrap_or_default()
            )));
        }
        headers.insert(CLIENT_ID_HEADER, identity);
    }
    request.extensions_mut().insert(principal);
    Ok(())
}

/// The guard of `/v1/stream/{*path}`: reads need `subscribe`, appends and creates `publish`
/// (creating a stream is what a first publish does to a session), deletes `admin`.
pub(crate) async fn durable_streams(
    State(app): State<AppState>,
    Path(name): Path<String>,
    mut request: Request,
    next: Next,
) -> Response {
    let operation = match *request.method() {
        Method::GET | Method::HEAD => Operation::Subscribe,
        Method::POST | Method::PUT => Operation::Publish,
        Method::DELETE => Operation::Admin,
        // Anything else is answered by the router (405) without touching data.
        _ => return next.run(request).await,
    };
    match admit(&app, &mut request, &name, Some(operation)) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.durable_streams(),
    }
}

/// The guard of an append taken on the lean connection path (`crate::listener`): the decision
/// `durable_streams` makes for a `POST` (the lean path takes no request that names an identity,
/// so there is none to check against the credential's).
pub(crate) fn admit_append(
    app: &AppState,
    authorization: Option<&[u8]>,
    session: &str,
) -> Result<(), DsError> {
    let credential = authorization.and_then(bearer_of);
    decide(app, credential, session, Some(Operation::Publish)).map_err(Refusal::ds_error)?;
    Ok(())
}

/// The guard of `/v1/sessions/{name}/...`. A publish of events is checked event by event in
/// its handler (each action needs its own operation), so here it only needs a credential.
pub(crate) async fn rest(
    State(app): State<AppState>,
    matched: MatchedPath,
    Path(params): Path<HashMap<String, String>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(name) = params.get("name").cloned() else {
        return next.run(request).await;
    };
    let route = matched.as_str().trim_start_matches("/v1/sessions/{name}/");
    let operation = match (request.method().clone(), route) {
        (Method::POST, "events") => None,
        (Method::GET, "events") => Some(Operation::Subscribe),
        (Method::POST, "messages/{serial}/append") => Some(Operation::Append),
        (Method::GET, "history") => Some(Operation::History),
        (Method::GET, "presence") => Some(Operation::Presence),
        (Method::GET, "runs") => Some(Operation::Subscribe),
        (Method::POST, "cancel") => Some(Operation::Cancel),
        (Method::POST, "approve") => Some(Operation::Approve),
        // A route added without a decision here is refused rather than left open.
        _ => Some(Operation::Admin),
    };
    match admit(&app, &mut request, &name, operation) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.rest(),
    }
}

/// The body of `POST /v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenRequest {
    client_id: String,
    /// Pattern -> operations; each grant must lie within the key's own capabilities.
    caps: std::collections::BTreeMap<String, Vec<String>>,
    /// Lifetime in seconds (default 3600, at most a week).
    #[serde(default)]
    ttl: Option<u64>,
}

/// `POST /v1/tokens`: a backend holding an API key mints a token for one of its users, with
/// capabilities no wider than the key's own.
pub(crate) async fn issue(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<TokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let now = app.clock.now_ms();
    let Some(jwt) = app.config.auth.jwt().filter(|j| j.can_mint()) else {
        return RestError::new(
            ErrorCode::InvalidRequest,
            "this node cannot mint tokens: start it with --jwt-secret",
        )
        .into_response();
    };
    let principal = match app.config.auth.authenticate(bearer(&headers), now) {
        Ok(p) if p.api_key => p,
        Ok(_) => {
            return Refusal::Forbidden("tokens are minted with an API key, not a token".into())
                .rest()
        }
        Err(e) => return Refusal::Unauthorized(e).rest(),
    };
    let request = match body {
        Ok(Json(request)) => request,
        Err(e) => return RestError::invalid(e.body_text()).into_response(),
    };
    match mint(jwt, &principal, request, now) {
        Ok(answer) => (StatusCode::CREATED, Json(answer)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn mint(
    jwt: &super::JwtConfig,
    principal: &Principal,
    request: TokenRequest,
    now: u64,
) -> Result<serde_json::Value, RestError> {
    let ttl = request.ttl.unwrap_or(3600);
    if ttl == 0 || ttl > super::jwt::MAX_TTL_SECS {
        return Err(RestError::invalid(format!(
            "ttl is 1 to {} seconds",
            super::jwt::MAX_TTL_SECS
        )));
    }
    if request.client_id.is_empty() || request.client_id.len() > super::jwt::MAX_CLIENT_ID {
        return Err(RestError::invalid("client_id is 1 to 255 bytes"));
    }
    let caps = Capabilities::from_pairs(
        request
            .caps
            .iter()
            .map(|(p, ops)| (p.as_str(), ops.iter().map(String::as_str))),
    )
    .map_err(|e| RestError::invalid(e.to_string()))?;
    if !caps.is_within(&principal.capabilities) {
        return Err(RestError::new(
            ErrorCode::Forbidden,
            "the requested caps are wider than the API key's",
        ));
    }
    let (token, exp) = jwt
        .mint(&request.client_id, &caps, ttl, now)
        .ok_or_else(|| RestError::invalid("this node cannot mint tokens"))?;
    Ok(json!({ "token": token, "client_id": request.client_id, "expires_at": exp }))
}
