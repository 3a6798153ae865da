//! A real `redis-server` for tests: on a free port, in a temporary directory, with the
//! durability the Redis engine documents (`appendonly yes`, `appendfsync always`, no RDB
//! snapshots). `scripts/install-tools` installs it. A replica of one
//! ([`RedisServer::start_replica`]) runs with the same durability.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `redis-server`, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    dir: TempDir,
    port: u16,
    /// The primary's port, for a replica.
    primary: Option<u16>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server; fails saying what to install if `redis-server` is missing.
    pub fn start() -> std::io::Result<Self> {
        Self::start_of(None)
    }

    /// Starts a replica of `primary` (`--replicaof`), and waits until `primary` counts it
    /// among its replicas in sync, so a `WAIT` on the primary can count it at once.
    pub fn start_replica(primary: &RedisServer) -> std::io::Result<Self> {
        let replica = Self::start_of(Some(primary.port))?;
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            let info = primary.info("replication")?;
            let needle = format!("port={},state=online", replica.port);
            if info.contains(&needle) {
                return Ok(replica);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the replica on port {} did not come in sync with port {}",
                replica.port, primary.port
            ),
        ))
    }

    fn start_of(primary: Option<u16>) -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut server = Self {
            dir,
            port,
            primary,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// The URL to give `--engine`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let mut command = server_command(self.port, self.dir.path());
        if let Some(primary) = self.primary {
            command.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        self.child = Some(spawn(command)?);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.command(&["PING"]).is_ok_and(|r| r == "+PONG") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("redis-server did not answer PING on port {}", self.port),
        ))
    }

    /// Kills the server with SIGKILL (no shutdown, no final fsync) and starts it again on the
    /// same port and directory, so it reloads its append-only file.
    pub fn crash_and_restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Kills the server and starts it again on the same port with nothing: its files are
    /// removed first, as if it had run without persistence (or a stale replica took over).
    pub fn lose_everything_and_restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.remove_files()?;
        self.spawn()
    }

    /// Removes everything in the server's directory (the server must be stopped).
    fn remove_files(&self) -> std::io::Result<()> {
        for entry in std::fs::read_dir(self.dir.path())? {
            let path = entry?.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// A copy of the server's files as they are now (its append-only file, complete up to the
    /// last acknowledged write with `appendfsync always`), to go back to with
    /// [`restart_from`](Self::restart_from).
    pub fn keep_copy(&self) -> std::io::Result<TempDir> {
        let copy = tempfile::tempdir()?;
        copy_tree(self.dir.path(), copy.path())?;
        Ok(copy)
    }

    /// Kills the server and starts it again on the same port from `copy`: every write since
    /// the copy is gone, as when a replica that lagged behind is promoted.
    pub fn restart_from(&mut self, copy: &TempDir) -> std::io::Result<()> {
        self.kill();
        self.remove_files()?;
        copy_tree(copy.path(), self.dir.path())?;
        self.spawn()
    }

    /// Stops the server with SIGSTOP (it keeps its connections but answers nothing) or,
    /// with `false`, lets it go on with SIGCONT.
    pub fn pause(&self, paused: bool) -> std::io::Result<()> {
        let Some(child) = &self.child else {
            return Ok(());
        };
        let signal = if paused { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "kill {signal} failed: {status}"
            )))
        }
    }

    /// Stops the server with SIGKILL, for good.
    pub fn stop(&mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends one command and returns the first line of the reply (enough for tests).
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line.trim_end().to_owned())
    }

    /// The text `INFO <section>` answers (`replication`, `commandstats`, ...).
    pub fn info(&self, section: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let request = format!("*2\r\n$4\r\nINFO\r\n${}\r\n{section}\r\n", section.len());
        stream.write_all(request.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let length: usize = line
            .trim_end()
            .trim_start_matches('$')
            .parse()
            .map_err(|_| std::io::Error::other(format!("INFO answered {:?}", line.trim_end())))?;
        let mut body = vec![0; length];
        std::io::Read::read_exact(&mut reader, &mut body)?;
        String::from_utf8(body).map_err(std::io::Error::other)
    }

    /// Every key, one per line of a multi-bulk reply.
    pub fn keys(&self) -> std::io::Result<Vec<String>> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"*2\r\n$4\r\nKEYS\r\n$1\r\n*\r\n")?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let count: usize = line.trim_end().trim_start_matches('*').parse().unwrap_or(0);
        let mut keys = Vec::with_capacity(count);
        for _ in 0..count {
            line.clear();
            reader.read_line(&mut line)?; // the $length line
            line.clear();
            reader.read_line(&mut line)?;
            keys.push(line.trim_end().to_owned());
        }
        keys.sort();
        Ok(keys)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-server` on `port` of the loopback, keeping its files in `dir`, with the durability
/// the Redis engine documents (`appendonly yes`, `appendfsync always`, no RDB snapshots).
pub(crate) fn server_command(port: u16, dir: &std::path::Path) -> Command {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Starts `command`; fails saying what to install if `redis-server` is missing.
pub(crate) fn spawn(mut command: Command) -> std::io::Result<Child> {
    command.spawn().map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("running redis-server ({e}); install it: apt-get install -y redis-server"),
        )
    })
}

/// Copies the files and folders under `from` into `to`.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
