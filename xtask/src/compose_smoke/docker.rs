//! Docker for compose-smoke: installed from Debian's packages when absent, and a daemon started
//! by hand under the network rule of these machines (no bridge, no iptables: containers use
//! the host's network and talk over loopback only).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The docker command line and the compose command line to use.
pub struct Docker {
    cli: PathBuf,
    compose: Vec<String>,
}

impl Docker {
    /// `docker …` with BuildKit on (the Dockerfiles use cache mounts).
    pub fn cmd(&self) -> Command {
        let mut command = Command::new(&self.cli);
        command.env("DOCKER_BUILDKIT", "1");
        command
    }

    /// `docker compose …` (v2) or `docker-compose …` (v1), whichever is installed.
    pub fn compose(&self) -> Command {
        let mut command = Command::new(&self.compose[0]);
        command.args(&self.compose[1..]);
        command
    }

    pub fn cli(&self) -> &Path {
        &self.cli
    }

    pub fn compose_name(&self) -> String {
        self.compose.join(" ")
    }

    /// Runs `docker ARGS` and returns its stdout, failing with its stderr.
    pub fn output(&self, args: &[&str]) -> Result<String> {
        let output = self.cmd().args(args).output()?;
        checked(output, &format!("docker {}", args.join(" ")))
    }
}

pub fn checked(output: Output, what: &str) -> Result<String> {
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn on_path(program: &str) -> bool {
    crate::deploy_tools::which(program).is_some()
}

/// Installs what is missing, starts the daemon if none answers, and says what it did.
pub fn ensure(work: &Path) -> Result<(Docker, String)> {
    let mut did = Vec::new();
    let mut missing = Vec::new();
    if !on_path("dockerd") {
        missing.extend(["docker.io", "containerd", "runc"]);
    }
    if !on_path("debootstrap") {
        missing.push("debootstrap");
    }
    let compose_v2 = on_path("docker")
        && Command::new("docker")
            .args(["compose", "version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|status| status.success())
            .unwrap_or(false);
    if !compose_v2 && !on_path("docker-compose") {
        missing.push("docker-compose");
    }
    if !missing.is_empty() {
        crate::deploy_tools::apt_install(&missing)?;
        did.push(format!("installed {}", missing.join(" ")));
    }
    // Debian's docker.io brings a CLI that speaks BuildKit without the buildx plugin; a CLI
    // elsewhere on PATH (for example a newer static one) may not.
    let cli = ["/usr/bin/docker"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("docker"));
    let compose = if compose_v2 {
        vec!["docker".to_string(), "compose".to_string()]
    } else {
        vec!["docker-compose".to_string()]
    };
    let docker = Docker { cli, compose };

    if docker
        .output(&["info", "--format", "{{.ServerVersion}}"])
        .is_err()
    {
        let log = work.join("dockerd.log");
        let log_file = std::fs::File::create(&log)?;
        // setsid: the daemon outlives this command, so the warm run finds it.
        Command::new("setsid")
            .args([
                "dockerd",
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
            ])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("starting dockerd")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while docker
            .output(&["info", "--format", "{{.ServerVersion}}"])
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("dockerd did not answer within 60 s (see {})", log.display());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        did.push(format!(
            "started dockerd --bridge=none --iptables=false (log {})",
            log.display()
        ));
    }
    let version = docker.output(&["info", "--format", "{{.ServerVersion}} {{.Driver}}"])?;
    let compose_version = checked(
        docker.compose().arg("version").arg("--short").output()?,
        "compose version",
    )
    .unwrap_or_default();
    did.push(format!(
        "daemon {} ({} storage), {} {}",
        version.split_whitespace().next().unwrap_or("?"),
        version.split_whitespace().nth(1).unwrap_or("?"),
        docker.compose_name(),
        compose_version.trim()
    ));
    Ok((docker, did.join("; ")))
}

/// The bridge networks that exist now (compose-smoke checks that it adds none).
pub fn bridge_networks(docker: &Docker) -> Result<Vec<String>> {
    let listing = docker.output(&[
        "network",
        "ls",
        "--filter",
        "driver=bridge",
        "--format",
        "{{.Name}}",
    ])?;
    Ok(listing.lines().map(str::to_string).collect())
}
