//! Credential verification, table-driven: every way in that must fail, and the ways that work.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::jwt::TokenError;
use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const NOW_MS: u64 = 1_700_000_000_000;
const NOW: u64 = NOW_MS / 1000;
const RSA_PRIVATE: &[u8] = include_bytes!("testdata/rsa_private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("testdata/rsa_public.pem");
const ED_PRIVATE: &[u8] = include_bytes!("testdata/ed25519_private.pem");
const ED_PUBLIC: &[u8] = include_bytes!("testdata/ed25519_public.pem");

fn sign(alg: Algorithm, key: &EncodingKey, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap_or_else(|e| panic!("{e}"))
}

fn hs(claims: serde_json::Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET), claims)
}

fn claims(exp: Option<u64>) -> serde_json::Value {
    let mut c = json!({ "client_id": "alice", "caps": { "chat:alice:*": ["subscribe"] } });
    if let Some(exp) = exp {
        c["exp"] = json!(exp);
    }
    c
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn auth(key: JwtKey) -> Auth {
    let keys = vec![
        ApiKey::new("backend", "backend-secret-0123", Capabilities::all())
            .unwrap_or_else(|e| panic!("{e}")),
    ];
    let jwt = JwtConfig::new(key).unwrap_or_else(|e| panic!("{e}"));
    Auth::new(keys, Some(jwt)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn hs256_credentials_that_must_fail() {
    let node = auth(JwtKey::Hs256(SECRET.to_vec()));
    let good = hs(claims(Some(NOW + 60)));
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let tampered_sig = {
        let mut p = parts.clone();
        p[2] = b64(b"not the signature at all, really");
        p.join(".")
    };
    let tampered_claims = {
        let mut c = claims(Some(NOW + 60));
        c["caps"] = json!({ "**": ["admin"] });
        parts[1] = b64(c.to_string().as_bytes());
        parts.join(".")
    };
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims(Some(NOW + 60)).to_string().as_bytes())
    );
    let other_secret = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
        claims(Some(NOW + 60)),
    );
    let rsa_signed = sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap_or_else(|e| panic!("{e}")),
        claims(Some(NOW + 60)),
    );
    let hs512 = sign(
        Algorithm::HS512,
        &EncodingKey::from_secret(SECRET),
        claims(Some(NOW + 60)),
    );
    let mut not_yet = claims(Some(NOW + 600));
    not_yet["nbf"] = json!(NOW + 300);
    let mut bad_caps = claims(Some(NOW + 60));
    bad_caps["caps"] = json!({ "chat:user-4*": ["subscribe"] });
    let table: Vec<(&str, Option<String>, AuthError)> = vec![
        ("no credential", None, AuthError::Missing),
        (
            "unknown key",
            Some("nobody:backend-secret-0123".into()),
            AuthError::BadKey,
        ),
        (
            "wrong secret",
            Some("backend:backend-secret-0124".into()),
            AuthError::BadKey,
        ),
        ("empty secret", Some("backend:".into()), AuthError::BadKey),
        (
            "tampered signature",
            Some(tampered_sig),
            TokenError::Signature.into(),
        ),
        (
            "tampered claims",
            Some(tampered_claims),
            TokenError::Signature.into(),
        ),
        ("alg none", Some(alg_none), TokenError::Algorithm.into()),
        (
            "another secret",
            Some(other_secret),
            TokenError::Signature.into(),
        ),
        (
            "RS256 on an HS256 node",
            Some(rsa_signed),
            TokenError::Algorithm.into(),
        ),
        (
            "HS512 on an HS256 node",
            Some(hs512),
            TokenError::Algorithm.into(),
        ),
        (
            "expired",
            Some(hs(claims(Some(NOW - 6)))),
            TokenError::Expired.into(),
        ),
        (
            "no exp",
            Some(hs(claims(None))),
            TokenError::MissingExpiry.into(),
        ),
        (
            "not yet valid",
            Some(hs(not_yet)),
            TokenError::NotYetValid.into(),
        ),
        (
            "garbage",
            Some("abc.def.ghi".into()),
            TokenError::Malformed.into(),
        ),
        (
            "bad caps",
            Some(hs(bad_caps)),
            TokenError::Claims(String::new()).into(),
        ),
    ];
    for (what, credential, expected) in table {
        let got = node.authenticate(credential.as_deref(), NOW_MS);
        let same = match (&got, &expected) {
            (
                Err(AuthError::Token(TokenError::Claims(_))),
                AuthError::Token(TokenError::Claims(_)),
            ) => true,
            (Err(e), expected) => e == expected,
            (Ok(_), _) => false,
        };
        assert!(same, "{what}: got {got:?}, expected {expected:?}");
    }
}

#[test]
fn good_credentials_carry_identity_and_caps() {
    let node = auth(JwtKey::Hs256(SECRET.to_vec()));
    let p = node
        .authenticate(Some(&hs(claims(Some(NOW + 60)))), NOW_MS)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.client_id.as_deref(), Some("alice"));
    assert!(p.allows("chat:alice:1", Operation::Subscribe));
    assert!(!p.allows("chat:alice:1", Operation::Publish));
    assert_eq!(p.expires_at_ms, Some((NOW + 60) * 1000));
    // Inside the leeway on both sides.
    assert!(node
        .authenticate(Some(&hs(claims(Some(NOW - 4)))), NOW_MS)
        .is_ok());
    let mut soon = claims(Some(NOW + 60));
    soon["nbf"] = json!(NOW + 4);
    assert!(node.authenticate(Some(&hs(soon)), NOW_MS).is_ok());
    let key = node
        .authenticate(Some("backend:backend-secret-0123"), NOW_MS)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(key.api_key);
    assert_eq!(key.client_id.as_deref(), Some("backend"));
}

#[test]
fn public_key_nodes_refuse_confusion() {
    let rs = auth(JwtKey::Rs256Pem(RSA_PUBLIC.to_vec()));
    let rsa_key = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap_or_else(|e| panic!("{e}"));
    let good = sign(Algorithm::RS256, &rsa_key, claims(Some(NOW + 60)));
    assert!(rs.authenticate(Some(&good), NOW_MS).is_ok());
    // The classic confusion: HS256 "signed" with the RSA public key as the secret.
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUBLIC),
        claims(Some(NOW + 60)),
    );
    assert_eq!(
        rs.authenticate(Some(&confused), NOW_MS).err(),
        Some(TokenError::Algorithm.into())
    );
    let ed = auth(JwtKey::EdDsaPem(ED_PUBLIC.to_vec()));
    let ed_key = EncodingKey::from_ed_pem(ED_PRIVATE).unwrap_or_else(|e| panic!("{e}"));
    let good = sign(Algorithm::EdDSA, &ed_key, claims(Some(NOW + 60)));
    assert!(ed.authenticate(Some(&good), NOW_MS).is_ok());
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(ED_PUBLIC),
        claims(Some(NOW + 60)),
    );
    assert!(ed.authenticate(Some(&confused), NOW_MS).is_err());
    assert!(ed
        .authenticate(
            Some(&sign(Algorithm::RS256, &rsa_key, claims(Some(NOW + 60)))),
            NOW_MS
        )
        .is_err());
    // A node with a public key cannot mint.
    assert!(ed.jwt().is_some_and(|j| !j.can_mint()));
}

#[test]
fn anonymous_nodes_ignore_credentials() {
    let node = Auth::anonymous();
    for credential in [None, Some("garbage"), Some("a:b")] {
        let p = node
            .authenticate(credential, NOW_MS)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.client_id, None);
        assert!(p.allows("any:thing", Operation::Admin));
    }
}

#[test]
fn minted_tokens_verify_and_keys_are_checked() {
    let node = auth(JwtKey::Hs256(SECRET.to_vec()));
    let mut caps = Capabilities::default();
    caps.add_text("chat:*=subscribe")
        .unwrap_or_else(|e| panic!("{e}"));
    let jwt = node.jwt().unwrap_or_else(|| panic!("no jwt"));
    let (token, exp) = jwt
        .mint("bob", &caps, 60, NOW_MS)
        .unwrap_or_else(|| panic!("no mint"));
    assert_eq!(exp, NOW + 60);
    let p = node
        .authenticate(Some(&token), NOW_MS)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.client_id.as_deref(), Some("bob"));
    assert!(p.allows("chat:1", Operation::Subscribe));
    assert!(node.authenticate(Some(&token), NOW_MS + 66_000).is_err());
    assert!(ApiKey::parse_list("a:short").is_err());
    assert!(ApiKey::parse_list("nocolon").is_err());
    assert_eq!(
        ApiKey::parse_list("a:0123456789abcdef, b:0123456789abcdef")
            .map(|k| k.len())
            .ok(),
        Some(2)
    );
    let keys = ApiKey::parse_file(
        r#"{"keys":[{"name":"agent","secret":"0123456789abcdef","caps":{"chat:**":["append"]}}]}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(keys[0].capabilities.allows("chat:a:b", Operation::Append));
    assert!(!keys[0].capabilities.allows("chat:a:b", Operation::Publish));
    assert!(JwtConfig::new(JwtKey::Hs256(b"short".to_vec())).is_err());
    let twice = ApiKey::parse_list("a:0123456789abcdef,a:0123456789abcdeg").unwrap_or_default();
    assert!(Auth::new(twice, None).is_err());
    // The secret never shows in Debug output.
    let debug = format!(
        "{:?}",
        ApiKey::parse_list("a:0123456789abcdef").unwrap_or_default()
    );
    assert!(!debug.contains("0123456789abcdef"), "{debug}");
}
