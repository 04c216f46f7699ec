//! Look-alike base images (deploy/lookalike/README.md): Docker Hub is out of reach on these
//! machines, so `debian:bookworm-slim` comes from debootstrap and the others from Dockerfiles
//! on top of it, each tagged with the name that `FROM` and `image:` use. Each carries a hash of
//! its recipe (and of the image below it) as a label, and is rebuilt only when that changes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::docker::{Docker, checked};
use crate::run;

const LABEL: &str = "org.slc.lookalike.recipe";

/// What the official slim image leaves out, in its own words (dpkg path excludes).
const SLIM_DPKG_EXCLUDES: &str = "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n\
path-exclude /usr/share/man/*\npath-exclude /usr/share/groff/*\npath-exclude /usr/share/info/*\n\
path-exclude /usr/share/lintian/*\npath-exclude /usr/share/linda/*\npath-exclude /usr/share/locale/*\n\
path-include /usr/share/locale/locale.alias\n";

/// The Debian sources the host's apt uses, so the images' apt reaches what the host reaches.
const HOST_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";

/// The Rust toolchain that the Dockerfiles' `RUST_VERSION` default names.
pub const RUST_TAG: &str = "rust:1.95-bookworm";
pub const PROMETHEUS_TAG: &str = "v2.42.0";

/// FNV-1a: a stable hash for the recipe label (no cryptographic claim is made).
fn fnv(parts: &[&[u8]]) -> String {
    let mut hash: u64 = 0xcbf29ce484222325;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x100000001b3);
        }
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x100000001b3);
    }
    format!("{hash:016x}")
}

fn current_label(docker: &Docker, tag: &str) -> Option<String> {
    let format = format!("{{{{ index .Config.Labels \"{LABEL}\" }}}}");
    docker
        .output(&["image", "inspect", "--format", &format, tag])
        .ok()
        .map(|label| label.trim().to_string())
}

fn image_id(docker: &Docker, tag: &str) -> Result<String> {
    Ok(docker
        .output(&["image", "inspect", "--format", "{{.Id}}", tag])?
        .trim()
        .to_string())
}

/// One line per base for the report: built (and how long it took) or cached.
pub fn ensure(docker: &Docker, root: &Path, work: &Path) -> Result<((), String)> {
    let mut lines = Vec::new();
    let started = Instant::now();
    let debian = debian_slim(docker, work)?;
    lines.push(format!(
        "debian:bookworm-slim {debian} ({:.0} s)",
        started.elapsed().as_secs_f64()
    ));
    let base_id = image_id(docker, "debian:bookworm-slim")?;
    let lookalike = root.join("deploy/lookalike");
    let toolchain = host_toolchain()?;
    let rust_context = work.join("rust-context");
    let prometheus_tag = format!("prom/prometheus:{PROMETHEUS_TAG}");
    let derived: [(&str, &str, Vec<PathBuf>, Vec<String>); 4] = [
        (
            "python:3.11-slim-bookworm",
            "Dockerfile.python",
            vec![],
            vec![],
        ),
        (
            RUST_TAG,
            "Dockerfile.rust",
            vec![],
            vec![format!("RUST_TOOLCHAIN={}", toolchain.name)],
        ),
        (
            "postgres:15-bookworm",
            "Dockerfile.postgres",
            vec![lookalike.join("postgres-entrypoint.sh")],
            vec![],
        ),
        (&prometheus_tag, "Dockerfile.prometheus", vec![], vec![]),
    ];
    for (tag, dockerfile, extra_files, build_args) in derived {
        let started = Instant::now();
        let dockerfile_path = lookalike.join(dockerfile);
        let mut parts = vec![
            std::fs::read(&dockerfile_path)?,
            base_id.clone().into_bytes(),
        ];
        for file in &extra_files {
            parts.push(std::fs::read(file)?);
        }
        parts.extend(build_args.iter().map(|arg| arg.clone().into_bytes()));
        if tag == RUST_TAG {
            parts.push(toolchain.version.clone().into_bytes());
        }
        let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let recipe = fnv(&slices);
        if current_label(docker, tag).as_deref() == Some(recipe.as_str()) {
            lines.push(format!("{tag} cached"));
            continue;
        }
        // The Rust context holds a hard-linked copy of the host's toolchain (docs left out).
        let context = if tag == RUST_TAG {
            let _ = std::fs::remove_dir_all(&rust_context);
            std::fs::create_dir_all(&rust_context)?;
            run(Command::new("cp")
                .arg("-al")
                .arg(&toolchain.path)
                .arg(rust_context.join("toolchain")))?;
            let _ = std::fs::remove_dir_all(rust_context.join("toolchain/share/doc"));
            rust_context.clone()
        } else {
            lookalike.clone()
        };
        let log = work.join(format!("build-{}.log", tag.replace(['/', ':'], "_")));
        let mut command = docker.cmd();
        command
            .args(["build", "--network", "host", "--progress", "plain"])
            .arg("--label")
            .arg(format!("{LABEL}={recipe}"))
            .arg("-t")
            .arg(tag)
            .arg("-f")
            .arg(&dockerfile_path);
        for arg in &build_args {
            command.arg("--build-arg").arg(arg);
        }
        command.arg(&context);
        build_logged(command, &log).with_context(|| format!("building the look-alike {tag}"))?;
        if tag == RUST_TAG {
            let _ = std::fs::remove_dir_all(&rust_context);
        }
        lines.push(format!(
            "{tag} built ({:.0} s)",
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(((), lines.join("; ")))
}

/// Runs a build with its output in a log file; on failure, the log's tail is in the error.
pub fn build_logged(mut command: Command, log: &Path) -> Result<()> {
    let file = std::fs::File::create(log)?;
    let status = command
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("could not start {command:?}"))?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{status}; last lines of {}:\n{}",
            log.display(),
            tail.join("\n")
        );
    }
    Ok(())
}

/// PEM blocks of a bundle, whitespace-normalized.
fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line == "-----BEGIN CERTIFICATE-----" {
            current = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            if let Some(body) = current.take() {
                blocks.push(body);
            }
        } else if let Some(body) = current.as_mut() {
            body.push_str(line);
        }
    }
    blocks
}

/// The certificate authorities the host trusts beyond Debian's own set (for example the one
/// of a TLS-inspecting proxy between this machine and the registries). Builds run on the
/// host's network, so the look-alikes must trust what the host trusts to reach PyPI and
/// crates.io from inside a build.
fn host_extra_authorities() -> Result<Vec<String>> {
    let bundle = std::env::var("SSL_CERT_FILE")
        .ok()
        .filter(|path| Path::new(path).is_file())
        .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".to_string());
    let Ok(host) = std::fs::read_to_string(&bundle) else {
        return Ok(Vec::new());
    };
    let mut debian = std::collections::HashSet::new();
    let mut visit = vec![PathBuf::from("/usr/share/ca-certificates")];
    while let Some(dir) = visit.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten() {
            let path = entry?.path();
            if path.is_dir() {
                visit.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                debian.extend(pem_blocks(&text));
            }
        }
    }
    Ok(pem_blocks(&host)
        .into_iter()
        .filter(|block| !debian.contains(block))
        .collect())
}

fn as_pem(block: &str) -> String {
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in block.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

fn debian_slim(docker: &Docker, work: &Path) -> Result<&'static str> {
    let sources = std::fs::read(HOST_SOURCES).unwrap_or_default();
    let authorities = host_extra_authorities()?;
    let authorities_text = authorities.concat();
    let recipe = fnv(&[
        b"debootstrap --variant=minbase --include=ca-certificates bookworm",
        SLIM_DPKG_EXCLUDES.as_bytes(),
        &sources,
        authorities_text.as_bytes(),
    ]);
    let tag = "debian:bookworm-slim";
    if current_label(docker, tag).as_deref() == Some(recipe.as_str()) {
        return Ok("cached");
    }
    let rootfs = work.join("rootfs");
    let _ = std::fs::remove_dir_all(&rootfs);
    std::fs::create_dir_all(&rootfs)?;
    // The exclusions apply from the first package on, as in the official slim image.
    let dpkg_config = rootfs.join("etc/dpkg/dpkg.cfg.d");
    std::fs::create_dir_all(&dpkg_config)?;
    std::fs::write(dpkg_config.join("docker"), SLIM_DPKG_EXCLUDES)?;
    let log = work.join("debootstrap.log");
    let mut command = Command::new("debootstrap");
    command
        .args(["--variant=minbase", "--include=ca-certificates", "bookworm"])
        .arg(&rootfs);
    build_logged(command, &log).context("debootstrap bookworm")?;
    if !authorities.is_empty() {
        let folder = rootfs.join("usr/local/share/ca-certificates");
        std::fs::create_dir_all(&folder)?;
        for (index, block) in authorities.iter().enumerate() {
            std::fs::write(folder.join(format!("slc-host-{index}.crt")), as_pem(block))?;
        }
        run(Command::new("chroot")
            .arg(&rootfs)
            .args(["update-ca-certificates", "--fresh"]))?;
    }
    if !sources.is_empty() {
        std::fs::write(
            rootfs.join("etc/apt/sources.list.d/debian.sources"),
            &sources,
        )?;
        let _ = std::fs::remove_file(rootfs.join("etc/apt/sources.list"));
    }
    for leftover in [
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
    ] {
        let path = rootfs.join(leftover);
        if path.exists() {
            run(Command::new("find").arg(&path).args([
                "-mindepth",
                "1",
                "-type",
                "f",
                "!",
                "-name",
                "copyright",
                "!",
                "-name",
                "locale.alias",
                "!",
                "-name",
                "lock",
                "-delete",
            ]))?;
        }
    }
    let import = format!(
        "tar -C {} -c . | {} import --change 'CMD [\"bash\"]' --change 'LABEL {LABEL}={recipe}' - {tag}",
        rootfs.display(),
        docker.cli().display()
    );
    let output = Command::new("sh").args(["-c", &import]).output()?;
    checked(output, "docker import")?;
    std::fs::remove_dir_all(&rootfs)?;
    Ok("built")
}

struct Toolchain {
    name: String,
    path: PathBuf,
    version: String,
}

/// The toolchain `rustc` resolves to on the host; it must be the Dockerfiles' Rust 1.95.
fn host_toolchain() -> Result<Toolchain> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()?;
    let sysroot = PathBuf::from(checked(sysroot, "rustc --print sysroot")?.trim());
    let version = checked(Command::new("rustc").arg("-vV").output()?, "rustc -vV")?;
    let release = version
        .lines()
        .find_map(|line| line.strip_prefix("release: "))
        .context("rustc -vV names no release")?
        .to_string();
    if !release.starts_with("1.95.") {
        bail!("the host's rustc is {release}; the look-alike {RUST_TAG} needs a 1.95 toolchain");
    }
    let path = std::fs::canonicalize(&sysroot)?;
    Ok(Toolchain {
        name: format!("{release}-x86_64-unknown-linux-gnu"),
        path,
        version,
    })
}
