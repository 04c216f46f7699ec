//! The reasoner under test: the real `slc-reasoner serve` binary on loopback, with its CPU
//! time and peak RSS read from /proc.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// User plus system CPU time of a process so far, from /proc, in seconds.
pub fn cpu_seconds_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks as f64 / 100.0)
}

pub struct Reasoner {
    child: Child,
    pub address: SocketAddr,
    _directory: tempfile::TempDir,
}

impl Reasoner {
    pub async fn start(binary: &PathBuf, upstream: SocketAddr, max_turns: usize) -> Result<Self> {
        let directory = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let address: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = Command::new(binary)
            .arg("serve")
            .env("SLC_REASONER_BIND", address.to_string())
            .env("SLC_LLM_BASE_URL", format!("http://{upstream}/v1"))
            .env("SLC_LLM_MODEL", "bench-vlm")
            .env(
                "SLC_DATABASE_URL",
                format!(
                    "sqlite://{}?mode=rwc",
                    directory.path().join("bench.db").display()
                ),
            )
            .env(
                "SLC_REASONER_MAX_CONCURRENT_TURNS",
                (max_turns * 2).to_string(),
            )
            .env_remove("SLC_REASONER_API_KEYS")
            .env_remove("SLC_REASONER_AUDIT_LOG")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("could not start {}", binary.display()))?;
        let reasoner = Self {
            child,
            address,
            _directory: directory,
        };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(response) = client.get(format!("http://{address}/healthz")).send().await
                && response.status().is_success()
            {
                return Ok(reasoner);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("slc-reasoner did not become healthy at {address}")
    }

    /// User plus system CPU time of the reasoner process so far, in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds_of(&self.child.id().to_string())
    }

    /// Peak resident set size of the reasoner process, from /proc.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find(|line| line.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

impl Drop for Reasoner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
