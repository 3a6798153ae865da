//! A real Redis Cluster for tests: three primaries (`redis-server --cluster-enabled yes`) on
//! free ports in one temporary directory, joined with `redis-cli --cluster create`, with the
//! durability the Redis engine documents. Killed when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const PRIMARIES: usize = 3;
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running cluster of three primaries (no replicas).
#[derive(Debug)]
pub struct RedisCluster {
    dir: TempDir,
    ports: Vec<u16>,
    children: Vec<Child>,
}

impl RedisCluster {
    /// Starts the primaries, joins them and waits until every slot is served.
    pub fn start() -> std::io::Result<Self> {
        let mut cluster = Self {
            dir: tempfile::tempdir()?,
            ports: Vec::new(),
            children: Vec::new(),
        };
        for _ in 0..PRIMARIES {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let node_dir = cluster.dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir)?;
            let mut command = super::redis::server_command(port, &node_dir);
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]);
            let child = super::redis::spawn(command)?;
            cluster.children.push(child);
            cluster.ports.push(port);
        }
        for port in &cluster.ports {
            cluster.wait_until(*port, &["PING"], "PONG")?;
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for port in &cluster.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let created = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        if !created.status.success() {
            return Err(std::io::Error::other(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&created.stderr)
            )));
        }
        for port in &cluster.ports {
            cluster.wait_until(*port, &["CLUSTER", "INFO"], "cluster_state:ok")?;
        }
        Ok(cluster)
    }

    /// The URL to give `--engine`.
    pub fn url(&self) -> String {
        format!("redis-cluster://127.0.0.1:{}", self.ports[0])
    }

    /// Runs `redis-cli -c` (following redirections) against the first primary; its output.
    pub fn cli(&self, args: &[&str]) -> std::io::Result<String> {
        cli(self.ports[0], args, true)
    }

    /// The port of the primary that serves `key`.
    pub fn primary_of(&self, key: &str) -> std::io::Result<u16> {
        let slot: u16 = cli(self.ports[0], &["CLUSTER", "KEYSLOT", key], false)?
            .trim()
            .parse()
            .map_err(|e| std::io::Error::other(format!("CLUSTER KEYSLOT: {e}")))?;
        for port in &self.ports {
            let shards = cli(*port, &["CLUSTER", "MYID"], false)?;
            let nodes = cli(*port, &["CLUSTER", "NODES"], false)?;
            let mine = nodes
                .lines()
                .find(|l| l.starts_with(shards.trim()))
                .unwrap_or_default();
            let serves = mine.split_whitespace().skip(8).any(|range| {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                match (from.parse::<u16>(), to.parse::<u16>()) {
                    (Ok(from), Ok(to)) => (from..=to).contains(&slot),
                    _ => false,
                }
            });
            if serves {
                return Ok(*port);
            }
        }
        Err(std::io::Error::other(format!(
            "no primary serves slot {slot}"
        )))
    }

    fn wait_until(&self, port: u16, args: &[&str], expected: &str) -> std::io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match cli(port, args, false) {
                Ok(out) if out.contains(expected) => return Ok(()),
                _ if Instant::now() > deadline => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("redis on port {port} never answered {expected:?} to {args:?}"),
                    ))
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

fn cli(port: u16, args: &[&str], follow: bool) -> std::io::Result<String> {
    let mut command = Command::new("redis-cli");
    command.args(["-p", &port.to_string()]);
    if follow {
        command.arg("-c");
    }
    let out = command.args(args).stderr(Stdio::null()).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
