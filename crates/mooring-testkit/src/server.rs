//! Runs a `mooring serve` child process that tests can kill and restart on the same data.
//!
//! The child's stdout and stderr are kept as a short tail, so a server that fails to come up
//! explains itself in the test failure instead of vanishing.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How many output lines to keep for error messages.
const TAIL_LINES: usize = 40;
/// How often to ask /healthz while waiting for readiness.
const HEALTH_POLL: Duration = Duration::from_millis(20);
/// How many ports to try when a restart cannot come up (e.g. the old port was taken).
const PORT_ATTEMPTS: usize = 3;

/// Why the server could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("could not spawn {binary}: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not pick a free port: {0}")]
    Port(#[source] std::io::Error),
    #[error("server exited with {status} before it was ready; output tail:\n{tail}")]
    Exited { status: ExitStatus, tail: String },
    #[error("server not ready after {timeout:?} (GET /healthz never answered 200); output tail:\n{tail}")]
    NotReady { timeout: Duration, tail: String },
    #[error("could not kill the server: {0}")]
    Kill(#[source] std::io::Error),
    #[error("could not build the readiness client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("could not create a temporary data directory: {0}")]
    DataDir(#[source] std::io::Error),
}

/// How to run the server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    /// `embedded` (durable, on disk) or `memory`.
    pub engine: String,
    /// Appended after the standard arguments, e.g. `--long-poll-timeout-ms 500`.
    pub extra_args: Vec<String>,
    pub ready_timeout: Duration,
}

impl ServerConfig {
    pub fn new(binary: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            data_dir: data_dir.into(),
            engine: "embedded".to_owned(),
            extra_args: Vec::new(),
            ready_timeout: Duration::from_secs(30),
        }
    }

    pub fn engine(mut self, engine: &str) -> Self {
        self.engine = engine.to_owned();
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_owned());
        self
    }
}

/// The last lines a child printed on stdout and stderr.
#[derive(Clone, Debug, Default)]
struct OutputTail(Arc<Mutex<VecDeque<String>>>);

impl OutputTail {
    /// Collects lines from `pipe` on a thread that ends when the child closes it.
    fn follow(&self, pipe: impl Read + Send + 'static) {
        let lines = Arc::clone(&self.0);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                let mut lines = lines.lock().unwrap_or_else(|p| p.into_inner());
                if lines.len() == TAIL_LINES {
                    lines.pop_front();
                }
                lines.push_back(text);
                line.clear();
            }
        });
    }

    fn text(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// A running (or killed) server process; dropping it kills the child.
#[derive(Debug)]
pub struct MooringProcess {
    config: ServerConfig,
    port: u16,
    child: Option<Child>,
    output: OutputTail,
}

impl MooringProcess {
    /// Starts the server on a free port and waits until it is ready.
    pub async fn start(config: ServerConfig) -> Result<Self, ServerError> {
        let mut process = Self {
            config,
            port: 0,
            child: None,
            output: OutputTail::default(),
        };
        process.come_up(None).await?;
        Ok(process)
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the running child, so a test can read its memory from `/proc`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the current (or last) child printed most recently.
    pub fn output_tail(&self) -> String {
        self.output.text()
    }

    /// SIGKILLs the child and reaps it: no shutdown hooks run, as in a power cut of the process.
    pub fn kill(&mut self) -> Result<(), ServerError> {
        if let Some(mut child) = self.child.take() {
            child.kill().map_err(ServerError::Kill)?;
            child.wait().map_err(ServerError::Kill)?;
        }
        Ok(())
    }

    /// Kills the child if it still runs and starts a new one on the same data directory.
    ///
    /// It tries the same port first so clients can keep their address; if that server exits
    /// before it is ready (say the port was taken meanwhile), it moves to a new port. Read
    /// [`base_url`](Self::base_url) again afterwards.
    pub async fn restart(&mut self) -> Result<(), ServerError> {
        self.kill()?;
        let port = self.port;
        self.come_up(Some(port)).await
    }

    /// Like [`restart`](Self::restart) but always on a new port.
    pub async fn restart_on_new_port(&mut self) -> Result<(), ServerError> {
        self.kill()?;
        self.come_up(None).await
    }

    /// Spawns until one child becomes ready, starting with `port` if given.
    async fn come_up(&mut self, mut port: Option<u16>) -> Result<(), ServerError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.port = match port.take() {
                Some(port) => port,
                None => free_port()?,
            };
            self.spawn()?;
            match self.wait_ready().await {
                Err(ServerError::Exited { .. }) if attempt < PORT_ATTEMPTS => continue,
                Err(e) => {
                    // Never leave a half-started child behind.
                    let _ = self.kill();
                    return Err(e);
                }
                Ok(()) => return Ok(()),
            }
        }
    }

    fn spawn(&mut self) -> Result<(), ServerError> {
        let config = &self.config;
        let mut child = Command::new(&config.binary)
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&config.data_dir)
            .arg("--engine")
            .arg(&config.engine)
            .args(&config.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ServerError::Spawn {
                binary: config.binary.display().to_string(),
                source,
            })?;
        self.output = OutputTail::default();
        if let Some(out) = child.stdout.take() {
            self.output.follow(out);
        }
        if let Some(err) = child.stderr.take() {
            self.output.follow(err);
        }
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<(), ServerError> {
        let timeout = self.config.ready_timeout;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .map_err(ServerError::Client)?;
        let url = format!("{}/healthz", self.base_url());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                self.child = None;
                // Give the output threads a moment to drain the dying child's last words.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let tail = self.output.text();
                return Err(ServerError::Exited { status, tail });
            }
            let healthy = client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == reqwest::StatusCode::OK);
            if healthy {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let tail = self.output.text();
                return Err(ServerError::NotReady { timeout, tail });
            }
            tokio::time::sleep(HEALTH_POLL).await;
        }
    }

    fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for MooringProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Starts `binary` as one node on `engine` (say a Redis URL that several nodes share), with a
/// fresh temporary data directory. Keep the directory as long as the node: dropping it removes
/// the directory.
pub async fn start_node(
    binary: impl Into<PathBuf>,
    engine: &str,
) -> Result<(MooringProcess, TempDir), ServerError> {
    let dir = tempfile::tempdir().map_err(ServerError::DataDir)?;
    let config = ServerConfig::new(binary, dir.path()).engine(engine);
    let process = MooringProcess::start(config).await?;
    Ok((process, dir))
}

/// Asks the OS for a free loopback port. Another process could take it before the server
/// binds; [`MooringProcess`] retries on a new port when that happens.
fn free_port() -> Result<u16, ServerError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(ServerError::Port)?;
    let port = listener.local_addr().map_err(ServerError::Port)?.port();
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_that_dies_at_startup_reports_its_output() {
        // `sh serve ...` fails to open a script named `serve` and says so on stderr.
        let config = ServerConfig::new("sh", std::env::temp_dir());
        let err = MooringProcess::start(config).await.err();
        let Some(ServerError::Exited { tail, .. }) = err else {
            panic!("expected an early exit, got {err:?}");
        };
        assert!(tail.contains("serve"), "tail: {tail}");
    }

    #[tokio::test]
    async fn a_missing_binary_is_a_spawn_error() {
        let config = ServerConfig::new("/nonexistent/mooring", std::env::temp_dir());
        let err = MooringProcess::start(config).await.err();
        assert!(matches!(err, Some(ServerError::Spawn { .. })), "{err:?}");
    }
}
