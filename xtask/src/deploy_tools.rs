//! The tools of the deploy static checks (tests/tests/it/deploy_checks.rs), installed on first
//! use: promtool from Debian's `prometheus`, kustomize through `kubectl kustomize` (the
//! machine's kubectl, else Debian's `kubernetes-client`), and PyPI's `kubernetes-validate`,
//! which bundles the Kubernetes JSON schemas, in a virtualenv of its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::run;

const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

pub struct DeployTools {
    pub promtool: PathBuf,
    pub kubectl: PathBuf,
    pub kubernetes_validate: PathBuf,
}

impl DeployTools {
    /// The env vars the checks read; with `SLC_REQUIRE_DEPLOY_TOOLS` a missing tool fails
    /// them instead of skipping them.
    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("SLC_PROMTOOL", self.promtool.clone()),
            ("SLC_KUBECTL", self.kubectl.clone()),
            ("SLC_KUBERNETES_VALIDATE", self.kubernetes_validate.clone()),
            ("SLC_REQUIRE_DEPLOY_TOOLS", PathBuf::from("1")),
        ]
    }
}

pub fn which(program: &str) -> Option<PathBuf> {
    let output = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
    (output.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

/// Installs Debian packages without letting their postinst start a service (Prometheus's
/// would start a server; Docker's one with a bridge network).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    println!("==> installing Debian's {}", packages.join(", "));
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let wrote_policy = !policy.exists();
    if wrote_policy {
        std::fs::write(policy, "#!/bin/sh\nexit 101\n")?;
        run(Command::new("chmod").args(["+x", "/usr/sbin/policy-rc.d"]))?;
    }
    let result = run(Command::new("apt-get").args(["update", "-qq"])).and_then(|()| {
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    });
    if wrote_policy {
        std::fs::remove_file(policy)?;
    }
    result
}

pub fn ensure() -> Result<DeployTools> {
    let promtool = match which("promtool") {
        Some(path) => path,
        None => {
            apt_install(&["prometheus"])?;
            which("promtool").context("prometheus installed but no promtool")?
        }
    };
    let kubectl = match which("kubectl") {
        Some(path) => path,
        None => {
            apt_install(&["kubernetes-client"])?;
            which("kubectl").context("kubernetes-client installed but no kubectl")?
        }
    };
    let home = std::env::var("HOME").context("HOME is not set")?;
    let venv = Path::new(&home).join(".cache/slc/deploy-tools");
    let validate = venv.join("bin/kubernetes-validate");
    let stamp = venv.join(".slc-requirements");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(KUBERNETES_VALIDATE) {
        println!(
            "==> installing {KUBERNETES_VALIDATE} into {}",
            venv.display()
        );
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            KUBERNETES_VALIDATE,
        ]))?;
        std::fs::write(&stamp, KUBERNETES_VALIDATE)?;
    }
    Ok(DeployTools {
        promtool,
        kubectl,
        kubernetes_validate: validate,
    })
}
