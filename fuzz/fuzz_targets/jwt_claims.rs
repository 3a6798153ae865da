//! A token with a valid header and a valid signature over arbitrary claims: what a holder of
//! the signing key (a buggy backend) could send. Verification never panics, and a token it
//! accepts has an identity of 1 to 255 bytes and has not expired.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use mooring_server::auth::jwt::LEEWAY_SECS;
use mooring_server::auth::{JwtConfig, JwtKey};

const SECRET: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-sec";
const NOW_MS: u64 = 1_764_000_000_000;

fuzz_target!(|claims: &[u8]| {
    thread_local! {
        static CONFIG: JwtConfig =
            JwtConfig::new(JwtKey::Hs256(SECRET.to_vec())).expect("a 32-byte secret");
    }
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(SECRET),
        Algorithm::HS256,
    )
    .expect("HS256 signs anything");
    let token = format!("{message}.{signature}");
    CONFIG.with(|config| {
        if let Ok(verified) = config.verify(&token, NOW_MS) {
            assert!(!verified.client_id.is_empty() && verified.client_id.len() <= 255);
            assert!(
                verified.exp.saturating_add(LEEWAY_SECS) >= NOW_MS / 1000,
                "an expired token passed"
            );
        }
    });
});
