//! Command-line arguments, parsed by clap (with `MOORING_*` environment fallbacks).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Mooring: durable sessions for AI applications.
///
/// A session is a named, durable, ordered log between agents and clients. Any tab, device or
/// operator attaches, gets the history, then the live stream; reconnects resume with no gap and
/// no duplicate. Sessions are also readable and writable as Durable Streams.
#[derive(Debug, Parser)]
#[command(name = "mooring", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a Mooring node.
    ///
    /// Listens on one port for every surface: the realtime protocol at /v1/ws, the Durable
    /// Streams protocol at /v1/stream/..., and /healthz. Every setting can also come from a
    /// MOORING_* environment variable.
    Serve(Box<ServeArgs>),
    /// Mint an HS256 token for a client (the same secret as the node's --jwt-secret).
    ///
    /// Prints the token on standard output, and nothing else, so it can be captured.
    Token(TokenArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    /// The HS256 secret (at least 32 bytes).
    #[arg(long, env = "MOORING_JWT_SECRET", hide_env_values = true)]
    pub(crate) secret: String,
    /// The identity the token carries.
    #[arg(long)]
    pub(crate) client_id: String,
    /// A capability, PATTERN=OP[,OP...] (repeatable), e.g. 'chat:user-42:*=subscribe,publish'.
    #[arg(long = "cap", required = true)]
    pub(crate) caps: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub(crate) ttl: u64,
}

/// Algorithms of a public token key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum PublicKeyAlgorithm {
    /// Ed25519.
    #[value(name = "EdDSA", alias = "eddsa")]
    EdDsa,
    #[value(name = "RS256", alias = "rs256")]
    Rs256,
}

/// Storage engines a node can run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EngineKind {
    /// Files in --data-dir (redb), each append fsynced before it is acknowledged.
    Embedded,
    /// Process memory only: everything is lost when the process stops. For tests and demos.
    Memory,
    /// A Redis 7 (or Valkey) shared by every node, at this URL.
    Redis(String),
}

impl std::str::FromStr for EngineKind {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "embedded" => Ok(Self::Embedded),
            "memory" => Ok(Self::Memory),
            url if ["redis://", "rediss://", "redis-cluster://"]
                .iter()
                .any(|scheme| url.starts_with(scheme)) =>
            {
                Ok(Self::Redis(url.to_owned()))
            }
            other => Err(format!(
                "unknown engine {other:?}: use embedded, memory, or a Redis URL \
                 (redis://host:port, rediss://host:port, redis-cluster://host:port)"
            )),
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "MOORING_LISTEN", default_value = "127.0.0.1:7420")]
    pub(crate) listen: SocketAddr,

    /// Directory of the embedded engine's files (created if missing).
    #[arg(long, env = "MOORING_DATA_DIR", default_value = "./mooring-data")]
    pub(crate) data_dir: PathBuf,

    /// Storage engine: embedded, memory, or a Redis URL (redis://host:port) shared by many
    /// nodes.
    #[arg(long, env = "MOORING_ENGINE", default_value = "embedded")]
    pub(crate) engine: EngineKind,

    /// Redis engine: acknowledge a write only once this many replicas have it (Redis WAIT
    /// after each commit); 0 acknowledges once the primary has it. Not on Redis Cluster.
    #[arg(long, env = "MOORING_REDIS_WAIT_REPLICAS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=64))]
    pub(crate) redis_wait_replicas: u32,

    /// Redis engine, with --redis-wait-replicas: how long a write waits for the replicas
    /// before it is refused (STORE_IO, not acknowledged), in milliseconds.
    #[arg(long, env = "MOORING_REDIS_WAIT_TIMEOUT_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub(crate) redis_wait_timeout_ms: u64,

    /// How long a long-poll read waits for new data before answering 204, in milliseconds.
    #[arg(long, env = "MOORING_LONG_POLL_TIMEOUT_MS", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..=300_000))]
    pub(crate) long_poll_timeout_ms: u64,

    /// Largest accepted append or create body, in bytes.
    #[arg(long, env = "MOORING_MAX_APPEND_BYTES", default_value_t = 16 << 20,
          value_parser = clap::value_parser!(u64).range(1..=(1 << 30)))]
    pub(crate) max_append_bytes: u64,

    /// Seconds to wait for requests in flight at shutdown before giving up on them.
    #[arg(long, env = "MOORING_DRAIN_TIMEOUT_SECS", default_value_t = 10)]
    pub(crate) drain_timeout_secs: u64,

    /// Rollup window for appends to one message, in milliseconds (0 turns rollup off; at
    /// most 500).
    #[arg(long, env = "MOORING_ROLLUP_WINDOW_MS", default_value_t = 40,
          value_parser = clap::value_parser!(u64).range(0..=500))]
    pub(crate) rollup_window_ms: u64,

    /// Rollup window of one namespace, as NAMESPACE=MS (repeatable), e.g. chat=20.
    #[arg(long = "namespace-rollup", env = "MOORING_NAMESPACE_ROLLUP", value_delimiter = ',',
          value_parser = parse_namespace_rollup)]
    pub(crate) namespace_rollup: Vec<(String, u64)>,

    /// How long a publish id is remembered for deduplication, in seconds.
    #[arg(long, env = "MOORING_DEDUPE_WINDOW_SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) dedupe_window_secs: u64,

    /// How long sessions keep their events, in seconds: older events are trimmed, and a session
    /// nothing was written to for this long expires. 0 keeps everything. At least the dedupe
    /// window; not on Redis Cluster.
    #[arg(long, env = "MOORING_RETENTION_SECS", default_value_t = 0)]
    pub(crate) retention_secs: u64,

    /// Retention of one namespace, as NAMESPACE=SECS (repeatable; 0 keeps everything), e.g.
    /// support=604800.
    #[arg(long = "namespace-retention", env = "MOORING_NAMESPACE_RETENTION",
          value_delimiter = ',', value_parser = parse_namespace_secs)]
    pub(crate) namespace_retention: Vec<(String, u64)>,

    /// Heartbeat interval of realtime connections, in milliseconds; a peer silent for 2.5
    /// heartbeats is dead.
    #[arg(long, env = "MOORING_HEARTBEAT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=300_000))]
    pub(crate) heartbeat_ms: u64,

    /// How long a lost connection's presence and runs wait for it to come back before the
    /// members leave and the runs end agent_lost, in milliseconds.
    #[arg(long, env = "MOORING_PRESENCE_GRACE_MS", default_value_t = 15_000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub(crate) presence_grace_ms: u64,

    /// With several nodes on Redis: a node that has not beaten for this long is dead, and
    /// the others count its members as lost connections (they leave after the presence
    /// grace), in milliseconds. Nodes beat five times as often.
    #[arg(long, env = "MOORING_NODE_EXPIRY_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(250..=600_000))]
    pub(crate) node_expiry_ms: u64,

    /// A run without progress this long emits run.stalled, in milliseconds.
    #[arg(long, env = "MOORING_STALL_AFTER_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub(crate) stall_after_ms: u64,

    /// stall_after of one namespace, as NAMESPACE=MS (repeatable), e.g. batch=120000.
    #[arg(long = "namespace-stall-after", env = "MOORING_NAMESPACE_STALL_AFTER",
          value_delimiter = ',', value_parser = parse_namespace_ms)]
    pub(crate) namespace_stall_after: Vec<(String, u64)>,

    /// How long a user input waits for a worker (agent dispatch) before it is dropped from
    /// dispatch, in seconds; it stays in the session's log either way.
    #[arg(long, env = "MOORING_DISPATCH_HOLD_SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) dispatch_hold_secs: u64,

    /// User inputs that may wait for a worker at once; over it, the oldest is dropped from
    /// dispatch.
    #[arg(long, env = "MOORING_MAX_WAITING_INPUTS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub(crate) max_waiting_inputs: u64,

    /// API keys of trusted backends, NAME:SECRET separated by commas; each may do everything.
    /// Use --keys-file for keys with narrower capabilities.
    #[arg(long, env = "MOORING_KEYS", hide_env_values = true)]
    pub(crate) keys: Option<String>,

    /// A JSON file of API keys with capabilities:
    /// {"keys":[{"name":"agent","secret":"…","caps":{"chat:**":["append"]}}]}.
    #[arg(long, env = "MOORING_KEYS_FILE")]
    pub(crate) keys_file: Option<PathBuf>,

    /// Secret (at least 32 bytes) of HS256 tokens; also lets POST /v1/tokens mint them.
    #[arg(
        long,
        env = "MOORING_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "jwt_public_key"
    )]
    pub(crate) jwt_secret: Option<String>,

    /// PEM file of the public key tokens are verified with (see --jwt-algorithm).
    #[arg(long, env = "MOORING_JWT_PUBLIC_KEY", requires = "jwt_algorithm")]
    pub(crate) jwt_public_key: Option<PathBuf>,

    /// The algorithm of --jwt-public-key; tokens signed with any other are refused.
    #[arg(long, env = "MOORING_JWT_ALGORITHM", value_enum)]
    pub(crate) jwt_algorithm: Option<PublicKeyAlgorithm>,

    /// Origins browsers may connect from, separated by commas (WebSocket upgrades and CORS);
    /// any origin when absent.
    #[arg(long, env = "MOORING_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub(crate) allowed_origins: Vec<String>,

    /// Allow anonymous access on a non-loopback address (no keys and no token key). Anyone who
    /// can reach the port can then read and write every session.
    #[arg(long, env = "MOORING_INSECURE")]
    pub(crate) insecure: bool,

    /// Publish frames one realtime connection may send a second, on average.
    #[arg(long, env = "MOORING_MAX_PUBLISHES_PER_SEC", default_value_t = 20_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_publishes_per_sec: u32,

    /// Publish frames one realtime connection may send at once (the token bucket's size).
    #[arg(long, env = "MOORING_PUBLISH_BURST", default_value_t = 40_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) publish_burst: u32,

    /// Realtime connections one client id may hold open at once.
    #[arg(long, env = "MOORING_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) max_connections_per_client: u64,

    /// Bytes of frames queued for one realtime connection before its client counts as a slow
    /// consumer and is closed with 4008 (it resumes from its last serial).
    #[arg(long, env = "MOORING_MAX_OUTBOUND_BYTES", default_value_t = 4 << 20,
          value_parser = clap::value_parser!(u64).range(65_536..=(1 << 32)))]
    pub(crate) max_outbound_bytes: u64,

    /// Log format.
    #[arg(long, env = "MOORING_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// `NAMESPACE=N`, with N a whole number of `unit` (named `unit_tag` in the expected form).
fn parse_namespace_number(text: &str, unit_tag: &str, unit: &str) -> Result<(String, u64), String> {
    let (namespace, n) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAMESPACE={unit_tag}, got {text:?}"))?;
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{n:?} is not a whole number of {unit}"))?;
    if namespace.is_empty() {
        return Err("the namespace must not be empty".into());
    }
    Ok((namespace.to_owned(), n))
}

fn parse_namespace_ms(text: &str) -> Result<(String, u64), String> {
    parse_namespace_number(text, "MS", "milliseconds")
}

fn parse_namespace_secs(text: &str) -> Result<(String, u64), String> {
    parse_namespace_number(text, "SECS", "seconds")
}

/// Retention rules: the default (`None`: keep everything), and by namespace.
pub(crate) type Retention = (Option<Duration>, HashMap<String, Option<Duration>>);

fn parse_namespace_rollup(text: &str) -> Result<(String, u64), String> {
    let (namespace, ms) = parse_namespace_ms(text)?;
    if ms > 500 {
        return Err(format!(
            "the rollup window of {namespace:?} is {ms} ms; at most 500"
        ));
    }
    Ok((namespace, ms))
}

impl ServeArgs {
    /// The retention rules, checked against the dedupe window and the engine.
    pub(crate) fn retention(&self) -> Result<Retention, String> {
        let rules = std::iter::once(("every namespace".to_owned(), self.retention_secs)).chain(
            self.namespace_retention
                .iter()
                .map(|(ns, secs)| (format!("namespace {ns:?}"), *secs)),
        );
        for (scope, secs) in rules.filter(|(_, secs)| *secs > 0) {
            if secs < self.dedupe_window_secs {
                return Err(format!(
                    "the retention of {scope} is {secs} s, shorter than the dedupe window ({} s): \
                     a retried publish must be recognized while its event is kept; raise the \
                     retention or lower --dedupe-window-secs",
                    self.dedupe_window_secs
                ));
            }
            if matches!(&self.engine, EngineKind::Redis(url) if url.starts_with("redis-cluster://"))
            {
                return Err(format!(
                    "the retention of {scope} needs the sweeper's index of sessions, a key \
                     outside the sessions' slots, which Redis Cluster cannot write with them: use \
                     a single Redis primary for retention (docs/deploy.md)"
                ));
            }
        }
        let rule = |secs: u64| (secs > 0).then(|| Duration::from_secs(secs));
        let by_namespace = self
            .namespace_retention
            .iter()
            .map(|(ns, secs)| (ns.clone(), rule(*secs)))
            .collect();
        Ok((rule(self.retention_secs), by_namespace))
    }

    pub(crate) fn long_poll_timeout(&self) -> Duration {
        Duration::from_millis(self.long_poll_timeout_ms)
    }
}

#[cfg(test)]
mod engine_tests {
    use super::EngineKind;

    #[test]
    fn engines_parse_by_name_or_redis_url() {
        assert_eq!("embedded".parse(), Ok(EngineKind::Embedded));
        assert_eq!("memory".parse(), Ok(EngineKind::Memory));
        assert_eq!(
            "redis://10.0.0.5:6379".parse(),
            Ok(EngineKind::Redis("redis://10.0.0.5:6379".into()))
        );
        assert!("redis-cluster://a:7000".parse::<EngineKind>().is_ok());
        let refused = "postgres://x".parse::<EngineKind>();
        assert!(refused.is_err_and(|e| e.contains("redis://host:port")));
    }
}

#[cfg(test)]
mod serve_args_tests {
    use std::time::Duration;

    use clap::Parser;

    use super::{Cli, Command, ServeArgs};

    fn serve(args: &[&str]) -> Result<Box<ServeArgs>, clap::Error> {
        let argv = ["mooring", "serve"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Serve(args) => Ok(args),
            Command::Token(_) => unreachable!("parsed serve"),
        }
    }

    #[test]
    fn retention_is_off_by_default_and_never_shorter_than_the_dedupe_window() {
        let default = serve(&[]).expect("defaults").retention().expect("valid");
        assert_eq!(default, (None, Default::default()));
        let set = serve(&[
            "--retention-secs",
            "86400",
            "--namespace-retention",
            "audit=0,support=604800",
        ])
        .expect("parses")
        .retention()
        .expect("valid");
        assert_eq!(set.0, Some(Duration::from_secs(86_400)));
        assert_eq!(set.1["audit"], None, "0 keeps everything");
        assert_eq!(set.1["support"], Some(Duration::from_secs(604_800)));
        let short = serve(&["--namespace-retention", "chat=60"]).expect("parses");
        let refused = short
            .retention()
            .expect_err("shorter than the 120 s window");
        assert!(refused.contains("namespace \"chat\"") && refused.contains("--dedupe-window-secs"));
        let shorter_window = serve(&["--retention-secs", "60", "--dedupe-window-secs", "30"]);
        assert!(shorter_window.expect("parses").retention().is_ok());
        let cluster = serve(&[
            "--engine",
            "redis-cluster://127.0.0.1:7000",
            "--retention-secs",
            "3600",
        ]);
        let refused = cluster.expect("parses").retention().expect_err("cluster");
        assert!(refused.contains("Redis Cluster"), "{refused}");
        assert!(serve(&["--namespace-retention", "chat=soon"]).is_err());
    }

    #[test]
    fn waiting_for_redis_replicas_is_off_by_default_and_needs_a_timeout() {
        let default = serve(&[]).expect("defaults");
        assert_eq!(default.redis_wait_replicas, 0);
        assert_eq!(default.redis_wait_timeout_ms, 1_000);
        let set = serve(&[
            "--redis-wait-replicas",
            "2",
            "--redis-wait-timeout-ms",
            "250",
        ]);
        let set = set.expect("both flags");
        assert_eq!(
            (set.redis_wait_replicas, set.redis_wait_timeout_ms),
            (2, 250)
        );
        // WAIT with 0 ms would wait for ever.
        assert!(serve(&["--redis-wait-timeout-ms", "0"]).is_err());
    }
}
