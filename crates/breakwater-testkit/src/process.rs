//! Service processes on free ports.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Waits until something accepts connections on `port`, up to `timeout`.
pub async fn wait_for_port(port: u16, timeout: Duration) -> io::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let give_up = tokio::time::Instant::now() + timeout;
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= give_up {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("nothing listens on port {port}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spawn(program: &str, args: &[&str], install_hint: &str) -> io::Result<Child> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                io::Error::new(e.kind(), format!("`{program}` not found: {install_hint}"))
            } else {
                e
            }
        })
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A `redis-server` of our own, on a free port, storing nothing on disk.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts one and waits until it answers PING.
    pub async fn start() -> io::Result<Self> {
        Self::start_with(&[]).await
    }

    /// Starts one with extra `redis-server` arguments.
    pub async fn start_with(extra: &[&str]) -> io::Result<Self> {
        let mut last = None;
        for _ in 0..5 {
            let mut s = RedisServer {
                port: free_port(),
                child: None,
                dir: tempfile::tempdir()?,
                extra: extra.iter().map(|s| s.to_string()).collect(),
            };
            match s.launch().await {
                Ok(()) => return Ok(s),
                Err(e) => last = Some(e), // most likely a port race: try another
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    async fn launch(&mut self) -> io::Result<()> {
        let port = self.port.to_string();
        let dir = self.dir.path().to_string_lossy().into_owned();
        let mut args = vec![
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir,
            "--protected-mode",
            "no",
        ];
        args.extend(self.extra.iter().map(String::as_str));
        self.child = Some(spawn("redis-server", &args, "apt-get install -y redis-server")?);
        match ping(self.port, Duration::from_secs(10)).await {
            Ok(()) => Ok(()),
            Err(e) => {
                kill(&mut self.child);
                Err(e)
            }
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Starts it again on the same port (empty: it kept nothing).
    pub async fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.launch().await
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// Sends PING until `+PONG` comes back.
async fn ping(port: u16, timeout: Duration) -> io::Result<()> {
    let give_up = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
            let mut buf = [0u8; 64];
            if s.write_all(b"PING\r\n").await.is_ok()
                && let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await
                && buf[..n].starts_with(b"+PONG")
            {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= give_up {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("redis on port {port} did not answer PING"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Redis Cluster of `redis-server` processes (masters only), slots spread
/// evenly, ready when every node reports `cluster_state:ok`.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` nodes (3 is the minimum Redis accepts) and joins them.
    pub async fn start(masters: usize) -> io::Result<Self> {
        let masters = masters.max(3);
        let mut nodes = Vec::with_capacity(masters);
        for _ in 0..masters {
            nodes.push(RedisServer::start_with(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]).await?);
        }
        // Each node's nodes.conf lands in its own --dir, so they don't clash.
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        let mut args = vec!["--cluster".to_string(), "create".to_string()];
        args.extend(addrs.iter().cloned());
        args.push("--cluster-yes".into());
        let out = tokio::process::Command::new("redis-cli")
            .args(&args)
            .output()
            .await
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("redis-cli failed ({e}): apt-get install -y redis-tools"),
                )
            })?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let cluster = RedisCluster { nodes };
        cluster.wait_ok(Duration::from_secs(20)).await?;
        Ok(cluster)
    }

    async fn wait_ok(&self, timeout: Duration) -> io::Result<()> {
        let give_up = tokio::time::Instant::now() + timeout;
        'outer: loop {
            for n in &self.nodes {
                let out = tokio::process::Command::new("redis-cli")
                    .args(["-p", &n.port().to_string(), "cluster", "info"])
                    .output()
                    .await?;
                if !String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                    if tokio::time::Instant::now() >= give_up {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "cluster never reached state ok",
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'outer;
                }
            }
            return Ok(());
        }
    }

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes, e.g. to kill one.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }
}

/// A `mosquitto` broker of our own on a free port, anonymous access allowed.
pub struct Mosquitto {
    port: u16,
    child: Option<Child>,
    dir: TempDir,
    persistent: bool,
}

impl Mosquitto {
    /// Starts a broker that keeps nothing across restarts.
    pub async fn start() -> io::Result<Self> {
        Self::start_with(false).await
    }

    /// Starts a broker; with `persistent`, queued QoS 1 messages and
    /// sessions survive a restart (kept in its temporary directory).
    pub async fn start_with(persistent: bool) -> io::Result<Self> {
        let mut last = None;
        for _ in 0..5 {
            let mut m = Mosquitto {
                port: free_port(),
                child: None,
                dir: tempfile::tempdir()?,
                persistent,
            };
            match m.launch().await {
                Ok(()) => return Ok(m),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("mosquitto did not start")))
    }

    fn write_config(&self, path: &Path) -> io::Result<()> {
        let mut conf = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n",
            self.port
        );
        if self.persistent {
            conf.push_str(&format!(
                "persistence true\npersistence_location {}/\nautosave_interval 1\n",
                self.dir.path().display()
            ));
        } else {
            conf.push_str("persistence false\n");
        }
        std::fs::write(path, conf)
    }

    async fn launch(&mut self) -> io::Result<()> {
        let conf = self.dir.path().join("mosquitto.conf");
        self.write_config(&conf)?;
        let conf = conf.to_string_lossy().into_owned();
        self.child = Some(spawn("mosquitto", &["-c", &conf], "apt-get install -y mosquitto")?);
        match wait_for_port(self.port, Duration::from_secs(10)).await {
            Ok(()) => Ok(()),
            Err(e) => {
                kill(&mut self.child);
                Err(e)
            }
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Kills the broker (SIGKILL).
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.launch().await
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn redis_starts_answers_and_restarts() {
        let mut r = RedisServer::start().await.unwrap();
        assert!(r.is_running());
        ping(r.port(), Duration::from_secs(1)).await.unwrap();
        r.kill();
        assert!(ping(r.port(), Duration::from_millis(200)).await.is_err());
        r.restart().await.unwrap();
        ping(r.port(), Duration::from_secs(1)).await.unwrap();
    }

    #[tokio::test]
    async fn mosquitto_starts_and_restarts() {
        let mut m = Mosquitto::start().await.unwrap();
        wait_for_port(m.port(), Duration::from_secs(1)).await.unwrap();
        m.kill();
        m.restart().await.unwrap();
        wait_for_port(m.port(), Duration::from_secs(1)).await.unwrap();
    }
}

#[cfg(test)]
mod cluster_tests {
    use super::*;

    #[tokio::test]
    async fn three_master_cluster_forms() {
        let c = RedisCluster::start(3).await.unwrap();
        assert_eq!(c.urls().len(), 3);
    }
}
