//! Credentials for nodes with auth (`docs/auth.md`): what the application gives the client
//! ([`Credential`], [`Token`], [`TokenSource`]), and when the task asks for a fresh token.
//!
//! A credential travels as `Authorization: Bearer …` on the WebSocket upgrade. A token from
//! a [`TokenSource`] is renewed over the live connection (`{"type":"auth"}`) before it
//! expires, so the connection, its attachments and its runs never drop for an expiry; each
//! new connection asks the source again, so a reconnect after a long outage never presents a
//! stale token.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long before a token retried after a failed or refused renewal.
const RENEW_RETRY: Duration = Duration::from_secs(2);

/// A token and when it expires.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    /// Expiry, Unix seconds (`expires_at` of `POST /v1/tokens`). `None`: unknown, and the
    /// token is never renewed on a live connection (the server closes it with `4003` when it
    /// expires, and the client reconnects with a fresh one).
    pub expires_at: Option<u64>,
}

impl Token {
    pub fn new(token: impl Into<String>, expires_at: Option<u64>) -> Self {
        Self {
            token: token.into(),
            expires_at,
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A token is a secret: never in a log line.
        f.debug_struct("Token")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What a [`TokenSource`] returns.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<Token, String>> + Send>>;

/// Where fresh tokens come from: typically a call to the application's backend, which mints
/// them with `POST /v1/tokens`. An `Err` is a message for the log; the client tries again.
#[derive(Clone)]
pub struct TokenSource(Arc<dyn Fn() -> TokenFuture + Send + Sync>);

impl TokenSource {
    pub fn new<F, Fut>(fetch: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Token, String>> + Send + 'static,
    {
        Self(Arc::new(move || Box::pin(fetch())))
    }

    fn fetch(&self) -> TokenFuture {
        (self.0)()
    }
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSource(..)")
    }
}

/// How the client proves who it is to a node with auth.
#[derive(Clone)]
pub enum Credential {
    /// A token or an API key `name:secret`, the same on every connection. A token that
    /// expires ends the connection (`4003`) and the client with it: use
    /// [`Credential::Tokens`] for tokens.
    Static(String),
    /// Tokens from a source, asked before each connection and again before the token in
    /// force expires.
    Tokens(TokenSource),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static(_) => f.write_str("Credential::Static(..)"),
            Self::Tokens(_) => f.write_str("Credential::Tokens(..)"),
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// When to renew a token expiring at `expires_at` (Unix seconds), seen at `now_ms`: `before`
/// ahead of its expiry, or halfway through what is left of a shorter life. The instant is on
/// the task's timer, `now` being `now_ms`.
pub(crate) fn renew_at(expires_at: u64, now_ms: u64, before: Duration, now: Instant) -> Instant {
    let left = Duration::from_millis(expires_at.saturating_mul(1000).saturating_sub(now_ms));
    now + left - before.min(left / 2)
}

/// The task's side: the credential of the next connection, and the renewal of a token on the
/// live one.
#[derive(Debug)]
pub(crate) struct Credentials {
    credential: Option<Credential>,
    renew_before: Duration,
    /// The expiry of the token in force, Unix seconds; handles watch it.
    expires_at: watch::Sender<Option<u64>>,
    fetching: Option<JoinHandle<Result<Token, String>>>,
    /// A renewal was sent and its `authenticated` (or refusal) has not come back.
    awaiting_reply: bool,
    retry_at: Option<Instant>,
}

impl Credentials {
    pub(crate) fn new(credential: Option<Credential>, renew_before: Duration) -> Self {
        Self {
            credential,
            renew_before,
            expires_at: watch::Sender::new(None),
            fetching: None,
            awaiting_reply: false,
            retry_at: None,
        }
    }

    pub(crate) fn expiry(&self) -> watch::Receiver<Option<u64>> {
        self.expires_at.subscribe()
    }

    /// The credential of a new connection: a static one, or a fresh token from the source
    /// (which has `timeout` to answer).
    pub(crate) async fn for_connect(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<String>, String> {
        self.stop_renewal();
        match &self.credential {
            None => Ok(None),
            Some(Credential::Static(credential)) => Ok(Some(credential.clone())),
            Some(Credential::Tokens(source)) => {
                let token = tokio::time::timeout(timeout, source.fetch())
                    .await
                    .map_err(|_| format!("the token source did not answer within {timeout:?}"))?
                    .map_err(|e| format!("the token source failed: {e}"))?;
                self.expires_at.send_replace(token.expires_at);
                Ok(Some(token.token))
            }
        }
    }

    fn stop_renewal(&mut self) {
        if let Some(fetch) = self.fetching.take() {
            fetch.abort();
        }
        self.awaiting_reply = false;
        self.retry_at = None;
    }

    /// When the next renewal starts, if one is due at all.
    fn next_renewal(&self) -> Option<Instant> {
        if self.awaiting_reply || !matches!(self.credential, Some(Credential::Tokens(_))) {
            return None;
        }
        if let Some(retry) = self.retry_at {
            return Some(retry);
        }
        let expires_at = (*self.expires_at.borrow())?;
        Some(renew_at(
            expires_at,
            unix_ms(),
            self.renew_before,
            Instant::now(),
        ))
    }

    /// Waits until a renewal is due, fetches a token, and returns it to be sent as `auth`.
    /// Cancel-safe: the fetch runs in its own task and is picked up by the next call.
    pub(crate) async fn renewed(&mut self) -> String {
        loop {
            if let Some(fetch) = &mut self.fetching {
                let fetched = fetch.await;
                self.fetching = None;
                match fetched {
                    Ok(Ok(token)) => {
                        self.awaiting_reply = true;
                        self.retry_at = None;
                        return token.token;
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "token renewal: the source failed"),
                    Err(e) => tracing::warn!(error = %e, "token renewal: the source panicked"),
                }
                self.retry_at = Some(Instant::now() + RENEW_RETRY);
                continue;
            }
            match self.next_renewal() {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
            if let Some(Credential::Tokens(source)) = &self.credential {
                self.fetching = Some(tokio::spawn(source.fetch()));
            }
        }
    }

    /// The server took the renewal: its expiry is now the one in force.
    pub(crate) fn on_authenticated(&mut self, expires_at: Option<u64>) {
        self.awaiting_reply = false;
        self.retry_at = None;
        self.expires_at.send_replace(expires_at);
    }

    /// The server refused a renewal (`unauthorized` or `forbidden` outside any request): the
    /// token in force stays until it expires; try another one shortly.
    pub(crate) fn on_refused(&mut self) {
        if self.awaiting_reply {
            tracing::warn!("token renewal refused by the server; trying again");
            self.awaiting_reply = false;
            self.retry_at = Some(Instant::now() + RENEW_RETRY);
        }
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        self.stop_renewal();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_ahead_of_expiry_or_halfway_through_a_short_life() {
        let now = Instant::now();
        let before = Duration::from_secs(60);
        // An hour left: a minute ahead of expiry.
        let at = renew_at(1_000 + 3600, 1_000_000, before, now);
        assert_eq!(at - now, Duration::from_secs(3540));
        // Ten seconds left: halfway, five seconds from now.
        let at = renew_at(1_010, 1_000_000, before, now);
        assert_eq!(at - now, Duration::from_secs(5));
        // Already expired: now.
        assert_eq!(renew_at(900, 1_000_000, before, now), now);
    }

    #[test]
    fn credentials_never_print_their_secret() {
        let token = Token::new("secret-token", Some(5));
        assert!(!format!("{token:?}").contains("secret"));
        let key = Credential::Static("name:secret-secret-secret".into());
        assert!(!format!("{key:?}").contains("secret"));
    }
}
