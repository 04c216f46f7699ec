//! First-run setup: a virtualenv with PyTorch 2.11.0 (libtorch for tch) and the Hugging
//! Face reference stack, kept outside the work tree so every checkout and CI reuse it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::run;

const REQUIREMENTS: &str = include_str!("../../scripts/requirements.txt");

pub struct PythonEnv {
    pub python: PathBuf,
}

/// The virtualenv's folder: `$SLC_VENV`, else `~/.cache/slc/torch-2.11.0`.
pub fn venv_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("SLC_VENV") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var("HOME").context("HOME is not set")?;
    Ok(Path::new(&home).join(".cache/slc/torch-2.11.0"))
}

pub fn ensure() -> Result<PythonEnv> {
    let venv = venv_dir()?;
    let python = venv.join("bin/python");
    if !python.exists() {
        println!("==> creating virtualenv {}", venv.display());
        std::fs::create_dir_all(venv.parent().unwrap_or(Path::new(".")))?;
        let created = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .context("python3 is needed")?;
        if !created.success() {
            // Debian splits venv support out of python3; install it and try once more.
            run(Command::new("apt-get").args(["install", "-y", "python3-venv"]))?;
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        }
    }

    // A stamp holding the requirements we installed makes the pip step run only when they change.
    let stamp = venv.join(".slc-requirements");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(REQUIREMENTS) {
        println!(
            "==> installing scripts/requirements.txt into {}",
            venv.display()
        );
        let requirements = venv.join(".slc-requirements.txt");
        std::fs::write(&requirements, REQUIREMENTS)?;
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements))?;
        std::fs::write(&stamp, REQUIREMENTS)?;
    }

    let torch = torch_dir(&venv)?;
    link_libtorch(&torch)?;
    Ok(PythonEnv { python })
}

fn torch_dir(venv: &Path) -> Result<PathBuf> {
    for entry in std::fs::read_dir(venv.join("lib"))? {
        let candidate = entry?.path().join("site-packages/torch");
        if candidate.join("lib/libtorch.so").exists() {
            return Ok(candidate);
        }
    }
    bail!("no torch/lib/libtorch.so under {}", venv.display())
}

/// `.cargo/config.toml` points LIBTORCH at `<workspace>/.libtorch`; keep that link current.
fn link_libtorch(torch: &Path) -> Result<()> {
    let link = workspace_root().join(".libtorch");
    if std::fs::read_link(&link).ok().as_deref() == Some(torch) {
        return Ok(());
    }
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(torch, &link)
        .with_context(|| format!("could not link {} -> {}", link.display(), torch.display()))?;
    println!("==> linked .libtorch -> {}", torch.display());
    Ok(())
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}
