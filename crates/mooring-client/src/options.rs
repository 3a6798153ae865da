//! How a client connects, reconnects and bounds its queues.

use std::time::Duration;

use crate::credential::Credential;

/// The default address of a local node.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:7420/v1/ws";
/// How long opening the socket and the `hello`/`welcome` exchange may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an attach or a publish waits for the server's answer, reconnects included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Items a subscription buffers before its session is paused (see [`ClientOptions`]).
pub const DEFAULT_SUBSCRIPTION_BUFFER: usize = 1024;
/// Publishes awaiting their acknowledgement at once, per client.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// How long after its first send a publish may be resent: below the server's default dedupe
/// window (2 minutes), with a margin.
pub const DEFAULT_RESEND_WITHIN: Duration = Duration::from_secs(100);
/// The largest presence `data`, as JSON: the server's default limit.
pub const DEFAULT_MAX_PRESENCE_DATA_BYTES: usize = 1024;
/// The server's frame limit unless configured otherwise (1 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1 << 20;
/// How long before its expiry a token is renewed (tokens living less than twice this are
/// renewed halfway through their life).
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(60);

/// Everything [`Client::connect`](crate::Client::connect) needs.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The node's WebSocket endpoint, `ws://host:port/v1/ws`.
    pub url: String,
    /// The identity to publish as, on nodes without auth. `None` lets the server name the
    /// client (from the credential, on nodes with auth); that name is then kept across
    /// reconnects.
    pub client_id: Option<String>,
    /// The token or API key to connect with, on nodes with auth.
    pub credential: Option<Credential>,
    /// How long before its expiry a token from [`Credential::Tokens`] is renewed.
    pub renew_before: Duration,
    pub reconnect: ReconnectPolicy,
    pub connect_timeout: Duration,
    /// How long [`attach`](crate::Client::attach) and [`publish`](crate::Client::publish) wait,
    /// including time spent reconnecting. `None` waits as long as the client lives.
    pub request_timeout: Option<Duration>,
    /// Give every published event without an `id` a random one, so a publish interrupted by a
    /// disconnect can be retried safely (the server drops the duplicate). The cost: the server
    /// merges ("rolls up") only appends without an id, so with this on every append is its own
    /// log event. With it off, a publish interrupted by a disconnect fails with
    /// [`PublishErrorKind::Interrupted`](crate::PublishErrorKind::Interrupted) unless all its
    /// events carry an id.
    pub assign_ids: bool,
    /// Items each subscription buffers. When a subscriber falls this far behind, the client
    /// detaches that session (other sessions keep flowing) and attaches it again from its last
    /// serial once the subscriber has read half of them: nothing is lost and memory stays bounded.
    pub subscription_buffer: usize,
    /// Publishes awaiting acknowledgement at once; more wait for a slot.
    pub max_in_flight: usize,
    /// A publish interrupted by a disconnect is resent only if it was first sent less than
    /// this long ago; older ones fail as interrupted, since the server would no longer
    /// recognize the retry. Keep it below the server's dedupe window (`--dedupe-window-secs`).
    pub resend_within: Duration,
    /// Presence data larger than this (as JSON) is refused before it is sent. Match the
    /// server's limit (1024 bytes unless configured otherwise).
    pub max_presence_data_bytes: usize,
    /// A publish whose frame is larger than this is refused with `too_large` before it is
    /// sent: the server would close the connection (1009), and a resend after reconnecting
    /// would meet the same fate. Match the server's limit (1 MiB unless configured otherwise).
    pub max_frame_bytes: usize,
}

impl ClientOptions {
    /// Options for `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// The same options publishing as `client_id`.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// The same options connecting with `credential`.
    pub fn credential(mut self, credential: Credential) -> Self {
        self.credential = Some(credential);
        self
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.into(),
            client_id: None,
            credential: None,
            renew_before: DEFAULT_RENEW_BEFORE,
            reconnect: ReconnectPolicy::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Some(DEFAULT_REQUEST_TIMEOUT),
            assign_ids: true,
            subscription_buffer: DEFAULT_SUBSCRIPTION_BUFFER,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            resend_within: DEFAULT_RESEND_WITHIN,
            max_presence_data_bytes: DEFAULT_MAX_PRESENCE_DATA_BYTES,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

/// When to try again after a connection is lost: exponential backoff from `initial`, capped
/// at `max`, with full jitter (a uniformly random delay between zero and the backoff).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconnectPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// Draw each delay uniformly from `[0, backoff]` so many clients cut off at once do not
    /// come back at once.
    pub jitter: bool,
    /// Give up after this many failed attempts in a row; `None` never gives up.
    pub max_attempts: Option<u32>,
}

impl ReconnectPolicy {
    /// Never reconnect: the first lost connection ends the client.
    pub fn never() -> Self {
        Self {
            max_attempts: Some(0),
            ..Self::default()
        }
    }
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            jitter: true,
            max_attempts: None,
        }
    }
}
