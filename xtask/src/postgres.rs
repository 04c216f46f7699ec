//! A real PostgreSQL for the tests: reuse `SLC_TEST_POSTGRES_URL` when given, else start
//! Debian's server (installing it when absent) on a free loopback port with a throwaway
//! cluster, and stop it again after the tests if this run started it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::run;

const DATABASE: &str = "slc_test";

pub struct Database {
    pub url: String,
    started: Option<(PathBuf, PathBuf)>,
}

impl Database {
    pub fn stop_if_started(&self) {
        if let Some((bin, data)) = &self.started {
            let _ = as_postgres(&bin.join("pg_ctl"))
                .arg("-D")
                .arg(data)
                .args(["-m", "fast", "-s", "stop"])
                .status();
        }
    }
}

pub fn ensure() -> Result<Database> {
    if let Ok(url) = std::env::var("SLC_TEST_POSTGRES_URL") {
        return Ok(Database { url, started: None });
    }
    let bin = match find_bin_dir() {
        Some(bin) => bin,
        None => {
            println!("==> installing Debian's postgresql");
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            run(Command::new("apt-get")
                .args(["install", "-y", "-qq", "postgresql"])
                .env("DEBIAN_FRONTEND", "noninteractive"))?;
            find_bin_dir().context("postgresql installed but no pg_ctl found")?
        }
    };

    let data = std::env::temp_dir().join(format!("slc-postgres-{}", whoami()));
    if !data.join("PG_VERSION").exists() {
        std::fs::create_dir_all(&data)?;
        if is_root() {
            run(Command::new("chown").arg("postgres:postgres").arg(&data))?;
        }
        run(as_postgres(&bin.join("initdb"))
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "-D",
            ])
            .arg(&data)
            .arg("--no-instructions"))?;
    }

    // A server left running on this cluster by an earlier run is reused as it is.
    if let Some(port) = running_port(&bin, &data) {
        return finish(bin, data, port, false);
    }
    let port = free_port()?;
    let socket_dir = data.clone();
    run(as_postgres(&bin.join("pg_ctl"))
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(data.join("server.log"))
        .arg("-o")
        .arg(format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {}",
            socket_dir.display()
        ))
        .args(["-w", "-s", "start"]))
    .context("could not start PostgreSQL (see server.log in the data folder)")?;
    finish(bin, data, port, true)
}

fn finish(bin: PathBuf, data: PathBuf, port: u16, started: bool) -> Result<Database> {
    let base = format!("postgres://postgres@127.0.0.1:{port}");
    let exists = Command::new(bin.join("psql"))
        .args([&format!("{base}/postgres"), "-tAc"])
        .arg(format!(
            "select 1 from pg_database where datname = '{DATABASE}'"
        ))
        .output()?;
    if String::from_utf8_lossy(&exists.stdout).trim() != "1" {
        run(Command::new(bin.join("createdb")).args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            DATABASE,
        ]))?;
    }
    Ok(Database {
        url: format!("{base}/{DATABASE}"),
        started: started.then_some((bin, data)),
    })
}

fn running_port(bin: &Path, data: &Path) -> Option<u16> {
    let status = as_postgres(&bin.join("pg_ctl"))
        .arg("-D")
        .arg(data)
        .arg("status")
        .output()
        .ok()?;
    if !status.status.success() {
        return None;
    }
    // postmaster.pid's fourth line is the port the server listens on.
    let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    pid_file.lines().nth(3)?.trim().parse().ok()
}

fn find_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// PostgreSQL refuses to run as root, so as root the server runs as Debian's `postgres` user.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    whoami() == "root"
}

fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| {
            Command::new("id")
                .arg("-un")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        })
        .unwrap_or_default()
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    if port == 0 {
        bail!("no free port");
    }
    Ok(port)
}
