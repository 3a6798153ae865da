//! Credentials against a node with auth (an API key and HS256 tokens): connecting with each,
//! refused without, a token renewed on the live connection before it expires, and an expired
//! token ending the connection (4003) with the client coming back with a fresh one.
//!
//! Tokens are minted the way the node's `POST /v1/tokens` mints them, with its secret.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mooring_client::{
    Client, ConnectErrorKind, ConnectionStatus, Credential, ErrorCode, SessionItem, StartAt, Token,
    TokenSource,
};
use mooring_core::auth::Capabilities;
use mooring_server::auth::jwt::mint_hs256;
use mooring_server::auth::{ApiKey, Auth, JwtConfig, JwtKey};
use mooring_server::realtime::RealtimeConfig;
use mooring_server::ServerConfig;

use crate::node::{connection_id, next, until_live, Node, PROMPT};

const SECRET: &[u8] = b"client-tests-secret-0123456789abcdef";
const KEY: &str = "backend:backend-secret-0123456789";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn auth_node() -> Node {
    let key = ApiKey::parse_list(KEY).expect("a key");
    let jwt = JwtConfig::new(JwtKey::Hs256(SECRET.to_vec())).expect("a secret");
    Node::with_config(ServerConfig {
        realtime: RealtimeConfig {
            rollup_window: Duration::ZERO,
            // Expiry is also checked at each heartbeat; keep it frequent.
            heartbeat: Duration::from_millis(500),
            ..RealtimeConfig::default()
        },
        auth: Auth::new(key, Some(jwt)).expect("auth"),
        ..ServerConfig::default()
    })
    .await
}

/// A token for `client_id` on `chat:**`, living `ttl_secs`.
fn mint(client_id: &str, ttl_secs: u64) -> (String, u64) {
    let caps = Capabilities::from_pairs([("chat:**", ["subscribe", "publish"])]).expect("caps");
    mint_hs256(SECRET, client_id, &caps, ttl_secs, now_ms()).expect("mint")
}

/// A source minting `ttl_secs` tokens for alice, counting how often it is asked; with
/// `tell_expiry` off it hides the expiry, so the client cannot renew in time.
fn source(ttl_secs: u64, tell_expiry: bool) -> (TokenSource, Arc<AtomicU32>) {
    let asked = Arc::new(AtomicU32::new(0));
    let counter = asked.clone();
    let source = TokenSource::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        let (token, exp) = mint("alice", ttl_secs);
        async move { Ok(Token::new(token, tell_expiry.then_some(exp))) }
    });
    (source, asked)
}

#[tokio::test]
async fn a_client_connects_with_a_key_or_a_token_and_is_refused_without() {
    let node = auth_node().await;
    let options = |credential: Option<Credential>| {
        let mut options = node.options("ignored");
        options.client_id = None;
        options.credential = credential;
        options
    };

    let refused = Client::connect(options(None)).await.expect_err("refused");
    assert_eq!(refused.kind(), ConnectErrorKind::Refused);
    assert_eq!(refused.code(), Some(ErrorCode::Unauthorized));
    let (forged, _) = {
        let caps = Capabilities::all();
        mint_hs256(
            b"another-secret-another-secret-xx",
            "alice",
            &caps,
            60,
            now_ms(),
        )
        .expect("mint")
    };
    let refused = Client::connect(options(Some(Credential::Static(forged))))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Some(ErrorCode::Unauthorized));

    let backend = Client::connect(options(Some(Credential::Static(KEY.into()))))
        .await
        .expect("an API key connects");
    assert!(matches!(
        backend.status(),
        ConnectionStatus::Connected { client_id, .. } if client_id == "backend"
    ));

    let (token, exp) = mint("alice", 60);
    let alice = Client::connect(options(Some(Credential::Static(token))))
        .await
        .expect("a token connects");
    let mut sub = alice
        .attach("chat:a", StartAt::Beginning)
        .await
        .expect("attach");
    until_live(&mut sub).await;
    alice
        .create_message("chat:a", "note", "hi")
        .await
        .expect("publish");
    match next(&mut sub).await {
        SessionItem::Event(e) => assert_eq!(e.client_id.as_deref(), Some("alice")),
        other => panic!("expected the event, got {other:?}"),
    }
    // A static token's expiry is not known to the client.
    assert_eq!(alice.credential_expires_at(), None);
    assert!(exp > now_ms() / 1000);
}

#[tokio::test]
async fn a_token_is_renewed_before_it_expires_without_a_reconnect() {
    let node = auth_node().await;
    // 3-second tokens: renewed halfway, every ~1.5 s. The first one is refused by the server
    // after 3 s + 5 s of leeway, so a connection still up at 10 s lives on renewals.
    let (source, asked) = source(3, true);
    let mut options = node.options("alice");
    options.credential = Some(Credential::Tokens(source));
    let client = Client::connect(options).await.expect("connect");
    let first_connection = connection_id(&client);
    let first_expiry = client.credential_expires_at().expect("an expiry");
    let mut sub = client
        .attach("chat:renew", StartAt::Beginning)
        .await
        .expect("attach");
    until_live(&mut sub).await;
    let mut statuses = client.status_changes();
    statuses.borrow_and_update();

    let started = tokio::time::Instant::now();
    let mut published = Vec::new();
    while started.elapsed() < Duration::from_secs(10) {
        let serial = client
            .create_message("chat:renew", "tick", published.len())
            .await
            .expect("publish while renewing");
        published.push(serial);
        match next(&mut sub).await {
            SessionItem::Event(e) => assert_eq!(e.serial, serial),
            other => panic!("the subscription was interrupted: {other:?}"),
        }
        assert!(
            !statuses.has_changed().unwrap_or(true),
            "the connection changed: {:?}",
            client.status()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        connection_id(&client),
        first_connection,
        "never reconnected"
    );
    let renewals = asked.load(Ordering::SeqCst) - 1;
    let expiry = client.credential_expires_at().expect("an expiry");
    println!(
        "renewed {renewals} times over 10 s on connection {first_connection}; expiry \
         {first_expiry} -> {expiry}; {} events in order",
        published.len()
    );
    assert!(renewals >= 3, "renewed {renewals} times");
    assert!(
        expiry >= first_expiry + 6,
        "the server confirmed later expiries"
    );
}

#[tokio::test]
async fn an_expired_token_closes_with_4003_and_the_client_reconnects_with_a_fresh_one() {
    let node = auth_node().await;
    // The source hides the expiry, so nothing is renewed: the server ends the connection
    // 1 s + 5 s of leeway after the token was minted.
    let (source, asked) = source(1, false);
    let mut options = node.options("alice");
    options.credential = Some(Credential::Tokens(source));
    let client = Client::connect(options).await.expect("connect");
    let first_connection = connection_id(&client);
    let mut sub = client
        .attach("chat:expiry", StartAt::Beginning)
        .await
        .expect("attach");
    until_live(&mut sub).await;
    let before = client
        .create_message("chat:expiry", "m", "before")
        .await
        .expect("publish");

    let mut statuses = client.status_changes();
    let wait = async {
        let mut close_code = None;
        loop {
            match statuses.borrow_and_update().clone() {
                ConnectionStatus::Reconnecting {
                    close_code: Some(code),
                    ..
                } => close_code = Some(code),
                ConnectionStatus::Connected { connection_id, .. }
                    if connection_id != first_connection =>
                {
                    return (close_code, connection_id);
                }
                ConnectionStatus::Closed(reason) => panic!("the client gave up: {reason:?}"),
                _ => {}
            }
            statuses.changed().await.expect("client alive");
        }
    };
    let (close_code, second_connection) = tokio::time::timeout(PROMPT, wait)
        .await
        .expect("the expiry ends the connection and the client comes back");
    assert_eq!(close_code, Some(4003));
    assert_eq!(
        asked.load(Ordering::SeqCst),
        2,
        "a fresh token for the new connection"
    );

    let after = client
        .create_message("chat:expiry", "m", "after")
        .await
        .expect("publish after the reconnect");
    let mut seen = Vec::new();
    while seen.last() != Some(&after) {
        if let SessionItem::Event(e) = next(&mut sub).await {
            seen.push(e.serial);
        }
    }
    assert_eq!(seen, vec![before, after], "nothing lost or repeated");
    println!("expired: closed {close_code:?}, reconnected as {second_connection}");
}
