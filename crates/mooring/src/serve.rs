//! `mooring serve`: open the engine, listen, and stop cleanly on SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mooring_core::clock::{Clock, SystemClock};
use mooring_core::store::LogStore;
use mooring_engine::embedded::EmbeddedStore;
use mooring_engine::memory::MemoryStore;
use mooring_engine::redis::{RedisOptions, RedisStore};
use mooring_server::auth::{ApiKey, Auth, JwtConfig, JwtKey};
use mooring_server::realtime::RealtimeConfig;
use mooring_server::ServerConfig;
use tokio_util::sync::CancellationToken;

use crate::cli::{EngineKind, LogFormat, PublicKeyAlgorithm, ServeArgs};

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MOORING_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn open_store(args: &ServeArgs, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<dyn LogStore>> {
    Ok(match &args.engine {
        EngineKind::Memory | EngineKind::Embedded if args.redis_wait_replicas > 0 => {
            anyhow::bail!(
                "--redis-wait-replicas waits for Redis replicas: it needs the Redis engine \
                 (--engine redis://host:port)"
            )
        }
        EngineKind::Memory => {
            tracing::warn!("engine: memory; nothing is kept when the process stops");
            Arc::new(MemoryStore::new(clock))
        }
        EngineKind::Embedded => {
            let store = EmbeddedStore::open(&args.data_dir, clock).with_context(|| {
                format!("opening the embedded engine in {}", args.data_dir.display())
            })?;
            tracing::info!(data_dir = %args.data_dir.display(), "engine: embedded");
            Arc::new(store)
        }
        EngineKind::Redis(url) => {
            let options = RedisOptions {
                wait_replicas: args.redis_wait_replicas,
                wait_timeout: Duration::from_millis(args.redis_wait_timeout_ms),
            };
            let store = RedisStore::connect_with(url, clock, options)
                .await
                .context("opening the Redis engine")?;
            if options.wait_replicas > 0 {
                tracing::info!(
                    replicas = options.wait_replicas,
                    timeout_ms = args.redis_wait_timeout_ms,
                    "writes are acknowledged once the replicas have them (WAIT)"
                );
            }
            // The URL may hold a password: log only what the store shows of itself.
            tracing::info!(store = ?store, "engine: redis");
            Arc::new(store)
        }
    })
}

/// The node's credentials from its arguments.
fn auth(args: &ServeArgs) -> anyhow::Result<Auth> {
    let mut keys = match &args.keys {
        Some(list) => ApiKey::parse_list(list).context("reading --keys")?,
        None => Vec::new(),
    };
    if let Some(path) = &args.keys_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the keys file {}", path.display()))?;
        keys.extend(ApiKey::parse_file(&text).context("reading the keys file")?);
    }
    let jwt = match (&args.jwt_secret, &args.jwt_public_key, args.jwt_algorithm) {
        (Some(secret), _, _) => Some(JwtKey::Hs256(secret.as_bytes().to_vec())),
        (None, Some(path), Some(algorithm)) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the public key {}", path.display()))?;
            Some(match algorithm {
                PublicKeyAlgorithm::EdDsa => JwtKey::EdDsaPem(pem),
                PublicKeyAlgorithm::Rs256 => JwtKey::Rs256Pem(pem),
            })
        }
        _ => None,
    };
    let jwt = jwt
        .map(JwtConfig::new)
        .transpose()
        .context("reading the token key")?;
    Ok(Auth::new(keys, jwt)?)
}

/// The safe default: a node without credentials serves loopback only, unless told otherwise.
fn check_exposure(auth: &Auth, listen: SocketAddr, insecure: bool) -> anyhow::Result<()> {
    if !auth.is_anonymous() {
        return Ok(());
    }
    if listen.ip().is_loopback() {
        tracing::warn!(
            address = %listen,
            "AUTH IS OFF: no API keys and no token key are configured, so every client may read \
             and write every session and name itself. This is allowed on loopback only; set \
             --keys or --jwt-secret before listening anywhere else"
        );
        return Ok(());
    }
    if insecure {
        tracing::warn!(
            address = %listen,
            "AUTH IS OFF ON A NON-LOOPBACK ADDRESS (--insecure): anyone who can reach this port \
             can read and write every session"
        );
        return Ok(());
    }
    anyhow::bail!(
        "refusing to listen on {listen} without credentials: configure --keys, --keys-file or \
         --jwt-secret/--jwt-public-key, listen on a loopback address, or pass --insecure"
    )
}

/// Connections the kernel queues before they are accepted. tokio's default (1,024) overflows
/// when thousands of clients reconnect at once after a network blip; Linux caps the figure at
/// `net.core.somaxconn` (4,096 by default on current kernels).
const LISTEN_BACKLOG: u32 = 8192;

/// Binds `addr` with a backlog sized for reconnect storms.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As tokio's own bind does: a restarted node can take its port back at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let auth = auth(&args)?;
    check_exposure(&auth, args.listen, args.insecure)?;
    let (retention, namespace_retention) = args.retention().map_err(anyhow::Error::msg)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = open_store(&args, clock.clone()).await?;
    let listener = listen(args.listen).with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;
    tracing::info!(address = %local, "mooring is listening");
    let realtime = RealtimeConfig {
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        rollup_window: Duration::from_millis(args.rollup_window_ms),
        namespace_rollup: args
            .namespace_rollup
            .iter()
            .map(|(ns, ms)| (ns.clone(), Duration::from_millis(*ms)))
            .collect(),
        dedupe_window: Duration::from_secs(args.dedupe_window_secs),
        retention,
        namespace_retention,
        presence_grace: Duration::from_millis(args.presence_grace_ms),
        node_expiry: Duration::from_millis(args.node_expiry_ms),
        max_publishes_per_sec: args.max_publishes_per_sec,
        publish_burst: args.publish_burst,
        max_connections_per_client: usize::try_from(args.max_connections_per_client)
            .unwrap_or(usize::MAX),
        max_outbound_bytes: usize::try_from(args.max_outbound_bytes).unwrap_or(usize::MAX),
        stall_after: Duration::from_millis(args.stall_after_ms),
        namespace_stall_after: args
            .namespace_stall_after
            .iter()
            .map(|(ns, ms)| (ns.clone(), Duration::from_millis(*ms)))
            .collect(),
        dispatch_hold: Duration::from_secs(args.dispatch_hold_secs),
        max_waiting_inputs: usize::try_from(args.max_waiting_inputs).unwrap_or(usize::MAX),
        ..RealtimeConfig::default()
    };
    let config = ServerConfig {
        realtime,
        long_poll_timeout: args.long_poll_timeout(),
        max_append_bytes: usize::try_from(args.max_append_bytes).unwrap_or(usize::MAX),
        auth,
        allowed_origins: (!args.allowed_origins.is_empty()).then(|| args.allowed_origins.clone()),
        ..ServerConfig::default()
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    mooring_server::serve(
        listener,
        store,
        clock,
        config,
        shutdown,
        Duration::from_secs(args.drain_timeout_secs),
    )
    .await
    .context("serving")?;
    tracing::info!("mooring stopped cleanly");
    Ok(())
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: no new connections, draining requests in flight");
    shutdown.cancel();
}
