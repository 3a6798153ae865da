//! Signed tokens (JWT) for browsers and devices.
//!
//! A node trusts exactly one signing key, and so exactly one algorithm: HS256 with a shared
//! secret, or EdDSA / RS256 with a public key (PEM). The algorithm allowlist is that one
//! algorithm; a token whose header names any other (`none`, or HS256 signed with an RSA public
//! key as its secret: the classic algorithm confusion) is refused before its claims are read.
//!
//! Claims: `client_id` (required; the identity stamped on the client's events), `exp`
//! (required, Unix seconds), `nbf` (optional), and `caps`, a map from session-name pattern to
//! operation names (see `mooring_core::auth`). Expiry and not-before are checked here against
//! the node's injected clock with a leeway of [`LEEWAY_SECS`], for clocks a little apart.

use std::collections::BTreeMap;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use mooring_core::auth::Capabilities;
use serde::{Deserialize, Serialize};

/// Clock skew forgiven on `exp` and `nbf`, in seconds: small, so an expired token stops
/// working within seconds.
pub const LEEWAY_SECS: u64 = 5;

/// The longest a token minted by this node may live.
pub const MAX_TTL_SECS: u64 = 7 * 24 * 3600;

/// The key tokens are verified with.
pub enum JwtKey {
    /// HS256 with a shared secret (at least 32 bytes); this node can also mint tokens.
    Hs256(Vec<u8>),
    /// EdDSA (Ed25519) with a public key in PEM.
    EdDsaPem(Vec<u8>),
    /// RS256 with a public key in PEM.
    Rs256Pem(Vec<u8>),
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.write_str(match self {
            Self::Hs256(_) => "JwtKey::Hs256(..)",
            Self::EdDsaPem(_) => "JwtKey::EdDsaPem(..)",
            Self::Rs256Pem(_) => "JwtKey::Rs256Pem(..)",
        })
    }
}

/// The shortest HS256 secret accepted (RFC 7518 asks for at least the hash size).
pub const MIN_HS256_SECRET: usize = 32;

/// Why a token key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JwtKeyError {
    #[error("the HS256 secret must be at least {MIN_HS256_SECRET} bytes")]
    ShortSecret,
    #[error("the public key is not a valid PEM key for {0:?}: {1}")]
    Pem(Algorithm, String),
}

/// Verifies (and, with HS256, mints) tokens.
pub struct JwtConfig {
    algorithm: Algorithm,
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a well-formed token")]
    Malformed,
    #[error("the token's algorithm is not the one this node accepts")]
    Algorithm,
    #[error("the signature does not verify")]
    Signature,
    #[error("the token has no exp claim; tokens must expire")]
    MissingExpiry,
    #[error("the token expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token's claims are invalid: {0}")]
    Claims(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct RawClaims {
    client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default)]
    caps: BTreeMap<String, Vec<String>>,
}

/// The verified claims of a token.
#[derive(Debug, Clone)]
pub struct TokenClaims {
    pub client_id: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    pub capabilities: Capabilities,
}

/// Largest accepted `client_id`, as for other identifiers.
pub const MAX_CLIENT_ID: usize = 255;

impl JwtConfig {
    pub fn new(key: JwtKey) -> Result<Self, JwtKeyError> {
        Ok(match key {
            JwtKey::Hs256(secret) => {
                if secret.len() < MIN_HS256_SECRET {
                    return Err(JwtKeyError::ShortSecret);
                }
                Self {
                    algorithm: Algorithm::HS256,
                    decoding: DecodingKey::from_secret(&secret),
                    encoding: Some(EncodingKey::from_secret(&secret)),
                }
            }
            JwtKey::EdDsaPem(pem) => Self {
                algorithm: Algorithm::EdDSA,
                decoding: DecodingKey::from_ed_pem(&pem)
                    .map_err(|e| JwtKeyError::Pem(Algorithm::EdDSA, e.to_string()))?,
                encoding: None,
            },
            JwtKey::Rs256Pem(pem) => Self {
                algorithm: Algorithm::RS256,
                decoding: DecodingKey::from_rsa_pem(&pem)
                    .map_err(|e| JwtKeyError::Pem(Algorithm::RS256, e.to_string()))?,
                encoding: None,
            },
        })
    }

    /// Whether this node can mint tokens (HS256 only: the other keys are public).
    pub fn can_mint(&self) -> bool {
        self.encoding.is_some()
    }

    /// Verifies `token` at `now_ms` (the node's clock).
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<TokenClaims, TokenError> {
        let mut validation = Validation::new(self.algorithm);
        validation.algorithms = vec![self.algorithm];
        // Time is checked below against the injected clock, not the library's system time.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        // The header first, so `alg: none` (which the library cannot even name) is reported
        // as the refused algorithm it is, not as a malformed token.
        if jsonwebtoken::decode_header(token).is_err() {
            return Err(if header_alg(token).is_some() {
                TokenError::Algorithm
            } else {
                TokenError::Malformed
            });
        }
        let data =
            jsonwebtoken::decode::<RawClaims>(token, &self.decoding, &validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::InvalidSignature => TokenError::Signature,
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        TokenError::Algorithm
                    }
                    ErrorKind::Json(e) if e.is_data() => TokenError::Claims(e.to_string()),
                    _ => TokenError::Malformed,
                }
            })?;
        let claims = data.claims;
        let now = now_ms / 1000;
        let exp = claims.exp.ok_or(TokenError::MissingExpiry)?;
        if now > exp.saturating_add(LEEWAY_SECS) {
            return Err(TokenError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| now.saturating_add(LEEWAY_SECS) < nbf)
        {
            return Err(TokenError::NotYetValid);
        }
        if claims.client_id.is_empty() || claims.client_id.len() > MAX_CLIENT_ID {
            return Err(TokenError::Claims("client_id is 1 to 255 bytes".into()));
        }
        let capabilities = Capabilities::from_pairs(
            claims
                .caps
                .iter()
                .map(|(p, ops)| (p.as_str(), ops.iter().map(String::as_str))),
        )
        .map_err(|e| TokenError::Claims(e.to_string()))?;
        Ok(TokenClaims {
            client_id: claims.client_id,
            exp,
            capabilities,
        })
    }

    /// Mints an HS256 token for `client_id` with `capabilities`, valid `ttl_secs` from
    /// `now_ms`. `None` if this node holds no secret.
    pub fn mint(
        &self,
        client_id: &str,
        capabilities: &Capabilities,
        ttl_secs: u64,
        now_ms: u64,
    ) -> Option<(String, u64)> {
        let encoding = self.encoding.as_ref()?;
        let now = now_ms / 1000;
        let exp = now.saturating_add(ttl_secs);
        let claims = RawClaims {
            client_id: client_id.to_owned(),
            exp: Some(exp),
            nbf: None,
            iat: Some(now),
            caps: capabilities.to_claim(),
        };
        let token = jsonwebtoken::encode(&Header::new(self.algorithm), &claims, encoding).ok()?;
        Some((token, exp))
    }
}

/// The `alg` of a token's header, if the header is base64url JSON with a string `alg`.
fn header_alg(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("alg")?.as_str().map(str::to_owned)
}

/// Mints an HS256 token without a node (the `mooring token` command).
pub fn mint_hs256(
    secret: &[u8],
    client_id: &str,
    capabilities: &Capabilities,
    ttl_secs: u64,
    now_ms: u64,
) -> Result<(String, u64), JwtKeyError> {
    let config = JwtConfig::new(JwtKey::Hs256(secret.to_vec()))?;
    config
        .mint(client_id, capabilities, ttl_secs, now_ms)
        .ok_or(JwtKeyError::ShortSecret)
}
