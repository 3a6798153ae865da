//! Arbitrary bytes as a credential: as the `Authorization` header of an HTTP request and as
//! the credential handed to a node that holds API keys and an HS256 token key. Nothing
//! panics, and random bytes never authenticate.
#![no_main]

use axum::http::{header::AUTHORIZATION, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mooring_server::auth::http::bearer;
use mooring_server::auth::{ApiKey, Auth, JwtConfig, JwtKey};

const NOW_MS: u64 = 1_764_000_000_000;

fn node() -> Auth {
    let keys = ApiKey::parse_list("backend:0123456789abcdef0123").expect("a valid key list");
    let jwt = JwtConfig::new(JwtKey::Hs256(b"fuzz-secret-fuzz-secret-fuzz-sec".to_vec()))
        .expect("a 32-byte secret");
    Auth::new(keys, Some(jwt)).expect("one key")
}

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static NODE: Auth = node();
    }
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(data) {
        headers.insert(AUTHORIZATION, value);
    }
    let from_header = bearer(&headers).map(str::to_owned);
    let credential = std::str::from_utf8(data).ok();
    NODE.with(|auth| {
        for credential in [from_header.as_deref(), credential].into_iter().flatten() {
            // The one valid key is 28 bytes libFuzzer would have to guess; a token must carry
            // a valid HMAC. Either is a finding worth stopping for.
            if let Ok(principal) = auth.authenticate(Some(credential), NOW_MS) {
                panic!("random bytes authenticated as {:?}", principal.client_id);
            }
        }
    });
});
