//! Child processes (the real `breakwater` binary as gateway and simulator),
//! `/proc` sampling of RSS and open descriptors, and `RLIMIT_NOFILE`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Raises the soft (and if allowed the hard) limit of open files to `want`;
/// children inherit it.
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
pub fn raise_nofile(want: u64) {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let want = want as libc::rlim_t;
        if lim.rlim_cur >= want {
            return;
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max.max(want),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            // not allowed past the hard limit: take what there is
            let soft = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
        }
    }
}

/// The current soft limit of open files.
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
pub fn nofile() -> u64 {
    // SAFETY: as above.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur as u64
    }
}

/// `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Cores, CPU model and memory of this machine.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024 / 1024);
    format!("{cores} cores ({cpu}), {mem_gb} GiB, shared by load generator, gateway and upstream")
}

/// One sample of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// Seconds since sampling began.
    pub t: f64,
    /// Resident set size, KiB.
    pub rss_kb: u64,
    /// Open file descriptors.
    pub fds: u64,
}

/// RSS (KiB, from `/proc/PID/status`) and open descriptors (entries of
/// `/proc/PID/fd`) of `pid`.
pub fn sample(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}

/// CPU time `pid` has used so far (user + system), from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// The `breakwater` binary: `$BREAKWATER_BIN`, else beside this one.
pub fn breakwater_bin() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("BREAKWATER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let p = me.with_file_name("breakwater");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found: build it first (`cargo build --release -p breakwater-cli -p breakwater-bench`) or set BREAKWATER_BIN",
            p.display()
        ))
    }
}

/// A child process, killed when dropped.
pub struct Proc {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Proc {
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_port(port: u16, child: &mut Child, what: &str) -> Result<(), String> {
    let give_up = Instant::now() + Duration::from_secs(20);
    while Instant::now() < give_up {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited: {status}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{what} did not listen on {port} within 20 s"))
}

/// Runs `cmd` (which listens on 127.0.0.1:`port`) in the background, its
/// output discarded, and waits until it listens.
async fn spawn_listening(mut cmd: Command, port: u16, what: &str) -> Result<Proc, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    wait_port(port, &mut child, what).await?;
    Ok(Proc { child, port })
}

/// `breakwater simulate --config FILE --port P` in the background.
pub async fn spawn_simulator(bin: &Path, config: &Path) -> Result<Proc, String> {
    let port = breakwater_testkit::free_port();
    let mut cmd = Command::new(bin);
    cmd.args(["simulate", "--port", &port.to_string(), "--config"])
        .arg(config);
    spawn_listening(cmd, port, &format!("{} simulate", bin.display())).await
}

/// `breakwater serve --config FILE --listen 127.0.0.1:P` in the background.
pub async fn spawn_gateway(bin: &Path, config: &Path) -> Result<Proc, String> {
    let port = breakwater_testkit::free_port();
    let mut cmd = Command::new(bin);
    cmd.args([
        "serve",
        "--no-watch",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--config",
    ])
    .arg(config)
    .env("RUST_LOG", "error");
    spawn_listening(cmd, port, &format!("{} serve", bin.display())).await
}

/// This binary as a byte relay (`--relay`, see `relay.rs`) from a free port
/// to `upstream_port`, in the background.
pub async fn spawn_relay(upstream_port: u16) -> Result<Proc, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let port = breakwater_testkit::free_port();
    let mut cmd = Command::new(&me);
    cmd.args(["--relay", &port.to_string(), &upstream_port.to_string()]);
    spawn_listening(cmd, port, &format!("{} --relay", me.display())).await
}
