//! Credentials: API keys and signed tokens, verified into a [`Principal`].
//!
//! A node either runs anonymous (no key and no token key configured: everyone may do
//! everything, and clients name themselves, which the binary allows on loopback only), or
//! every request carries a credential:
//!
//! - an **API key** `name:secret`, for trusted backends and agents; its identity is its name
//!   and its capabilities come from its configuration;
//! - a **token** (a JWT, see [`jwt`]) for browsers and devices, whose claims carry the
//!   identity (`client_id`), the expiry and the capabilities.
//!
//! [`http`] applies this to the HTTP surfaces; the realtime connection checks each frame.
//! Credentials are secrets: nothing here logs one, and errors never echo one.

pub mod http;
pub mod jwt;

use std::sync::Arc;

use mooring_core::auth::{Capabilities, Operation, SessionPattern};
use serde::Deserialize;

pub use jwt::{JwtConfig, JwtKey, TokenClaims};

/// One API key of a trusted backend.
#[derive(Clone)]
pub struct ApiKey {
    pub name: String,
    secret: String,
    pub capabilities: Capabilities,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of every log line and panic message.
        f.debug_struct("ApiKey").field("name", &self.name).finish()
    }
}

/// Why key configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyConfigError {
    #[error("an API key is written NAME:SECRET, got one without ':' (the value is not shown)")]
    Syntax,
    #[error("API key {0:?}: the name is empty or the secret shorter than 16 characters")]
    Weak(String),
    #[error("API key {0:?} is configured twice")]
    Duplicate(String),
    #[error("API key {name:?}: {source}")]
    Capabilities {
        name: String,
        source: mooring_core::auth::CapabilityError,
    },
    #[error("the keys file is not valid: {0}")]
    File(String),
}

/// The shortest secret accepted: shorter ones can be guessed online.
pub const MIN_SECRET_LEN: usize = 16;

impl ApiKey {
    /// A key from `name:secret` with `capabilities`.
    pub fn new(
        name: &str,
        secret: &str,
        capabilities: Capabilities,
    ) -> Result<Self, KeyConfigError> {
        if name.is_empty() || secret.len() < MIN_SECRET_LEN {
            return Err(KeyConfigError::Weak(name.to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
            secret: secret.to_owned(),
            capabilities,
        })
    }

    /// Keys from `name:secret,name:secret` (the `--keys` form): each may do everything.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, KeyConfigError> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|entry| {
                let (name, secret) = entry.split_once(':').ok_or(KeyConfigError::Syntax)?;
                Self::new(name, secret, Capabilities::all())
            })
            .collect()
    }

    /// Keys from a JSON keys file:
    /// `{"keys":[{"name":"backend","secret":"…","caps":{"chat:**":["publish"]}}]}`; a key
    /// without `caps` may do everything.
    pub fn parse_file(json: &str) -> Result<Vec<Self>, KeyConfigError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            keys: Vec<Entry>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Entry {
            name: String,
            secret: String,
            #[serde(default)]
            caps: Option<std::collections::BTreeMap<String, Vec<String>>>,
        }
        let file: File =
            serde_json::from_str(json).map_err(|e| KeyConfigError::File(e.to_string()))?;
        file.keys
            .into_iter()
            .map(|entry| {
                let capabilities = match &entry.caps {
                    None => Capabilities::all(),
                    Some(caps) => Capabilities::from_pairs(
                        caps.iter()
                            .map(|(p, ops)| (p.as_str(), ops.iter().map(String::as_str))),
                    )
                    .map_err(|source| KeyConfigError::Capabilities {
                        name: entry.name.clone(),
                        source,
                    })?,
                };
                Self::new(&entry.name, &entry.secret, capabilities)
            })
            .collect()
    }
}

/// Who is asking, and what they may do.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The verified identity; `None` on an anonymous node (the client names itself).
    pub client_id: Option<String>,
    pub capabilities: Capabilities,
    /// When the credential stops being valid, Unix milliseconds (tokens only).
    pub expires_at_ms: Option<u64>,
    /// Authenticated by an API key (which may mint tokens).
    pub api_key: bool,
}

impl Principal {
    /// Anyone, on an anonymous node.
    pub fn anonymous() -> Self {
        Self {
            client_id: None,
            capabilities: Capabilities::all(),
            expires_at_ms: None,
            api_key: false,
        }
    }

    pub fn allows(&self, session: &str, operation: Operation) -> bool {
        // Anonymous nodes behave exactly as before auth existed: even a malformed name is
        // refused by the handler with its own code, not here.
        self.client_id.is_none() || self.capabilities.allows(session, operation)
    }

    /// Whether `operation` is allowed on every session `pattern` matches.
    pub fn allows_all(&self, pattern: &SessionPattern, operation: Operation) -> bool {
        self.client_id.is_none() || self.capabilities.allows_all(pattern, operation)
    }
}

/// Why a credential was refused. Every kind answers `unauthorized`; the kind is for the
/// message and the logs, and never carries the credential itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a credential is required: Authorization: Bearer <token or API key>")]
    Missing,
    #[error("unknown API key or wrong secret")]
    BadKey,
    #[error("token refused: {0}")]
    Token(#[from] jwt::TokenError),
    #[error("tokens are not accepted by this node (no token key is configured)")]
    TokensOff,
}

/// The credential checks of a node.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    keys: Arc<Vec<ApiKey>>,
    jwt: Option<Arc<JwtConfig>>,
}

impl Auth {
    /// Anonymous: every request may do everything.
    pub fn anonymous() -> Self {
        Self::default()
    }

    pub fn new(keys: Vec<ApiKey>, jwt: Option<JwtConfig>) -> Result<Self, KeyConfigError> {
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.name == key.name) {
                return Err(KeyConfigError::Duplicate(key.name.clone()));
            }
        }
        Ok(Self {
            keys: Arc::new(keys),
            jwt: jwt.map(Arc::new),
        })
    }

    /// Whether requests need no credential.
    pub fn is_anonymous(&self) -> bool {
        self.keys.is_empty() && self.jwt.is_none()
    }

    pub fn jwt(&self) -> Option<&JwtConfig> {
        self.jwt.as_deref()
    }

    /// Verifies `credential` (a token or `name:secret`) at `now_ms`. An anonymous node
    /// ignores credentials altogether, so clients written for authenticated nodes still work.
    pub fn authenticate(
        &self,
        credential: Option<&str>,
        now_ms: u64,
    ) -> Result<Principal, AuthError> {
        if self.is_anonymous() {
            return Ok(Principal::anonymous());
        }
        let credential = credential.ok_or(AuthError::Missing)?;
        // A JWT is base64url segments and dots, never a ':'; an API key always has one.
        if let Some((name, secret)) = credential.split_once(':') {
            return self.api_key(name, secret);
        }
        let jwt = self.jwt.as_ref().ok_or(AuthError::TokensOff)?;
        let claims = jwt.verify(credential, now_ms)?;
        Ok(Principal {
            client_id: Some(claims.client_id),
            capabilities: claims.capabilities,
            expires_at_ms: Some(claims.exp.saturating_mul(1000)),
            api_key: false,
        })
    }

    fn api_key(&self, name: &str, secret: &str) -> Result<Principal, AuthError> {
        // Compare against every key, in time independent of where the secret differs, so
        // timing tells nothing about a secret's prefix.
        let mut found = None;
        for key in self.keys.iter() {
            let same = constant_time_eq(key.name.as_bytes(), name.as_bytes())
                & constant_time_eq(key.secret.as_bytes(), secret.as_bytes());
            if same {
                found = Some(key);
            }
        }
        let key = found.ok_or(AuthError::BadKey)?;
        Ok(Principal {
            client_id: Some(key.name.clone()),
            capabilities: key.capabilities.clone(),
            expires_at_ms: None,
            api_key: true,
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
