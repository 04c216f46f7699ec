//! The two service images: built with BuildKit on the host's network, then checked the way an
//! operator would: who they run as, how the edge finds libtorch, that the reasoner has none,
//! their sizes, and that no key and no research-only sample file is in any layer.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::bases::build_logged;
use super::docker::{Docker, checked};
use super::layers;

pub const DETECTOR: &str = "slc-detector:latest";
pub const REASONER: &str = "slc-reasoner:latest";
/// Where the detector's RUNPATH and the runtime image put libtorch (deploy/Dockerfile.detector).
const TORCH_LIB: &str = "/opt/torch/lib/python3.11/site-packages/torch/lib";

pub fn build(docker: &Docker, root: &Path, work: &Path, which: &str) -> Result<((), String)> {
    let started = Instant::now();
    let (tag, dockerfile) = match which {
        "detector" => (DETECTOR, "deploy/Dockerfile.detector"),
        _ => (REASONER, "deploy/Dockerfile.reasoner"),
    };
    let log = work.join(format!("build-{which}.log"));
    let mut command = docker.cmd();
    command.current_dir(root).args([
        "build",
        "--network",
        "host",
        "--progress",
        "plain",
        "-t",
        tag,
        "-f",
        dockerfile,
        ".",
    ]);
    build_logged(command, &log)?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    // BuildKit prints `#N CACHED` for each step it did not run.
    let steps = text
        .lines()
        .filter(|line| line.ends_with(" DONE") || line.contains(" DONE "))
        .count();
    let cached = text
        .lines()
        .filter(|line| line.ends_with(" CACHED"))
        .count();
    Ok((
        (),
        format!(
            "{tag} in {:.0} s ({cached} steps cached, {steps} done; log {}), {}",
            started.elapsed().as_secs_f64(),
            log.display(),
            size(docker, tag)?
        ),
    ))
}

pub fn size(docker: &Docker, tag: &str) -> Result<String> {
    let bytes: u64 = docker
        .output(&["image", "inspect", "--format", "{{.Size}}", tag])?
        .trim()
        .parse()?;
    Ok(format!("{:.0} MB", bytes as f64 / 1e6))
}

/// Runs a shell command in a fresh container of `image`, with no network at all, as the
/// image's user or, to look at every file, as root.
fn in_image_as(docker: &Docker, image: &str, root: bool, script: &str) -> Result<String> {
    let mut command = docker.cmd();
    command.args(["run", "--rm", "--network", "none"]);
    if root {
        command.args(["--user", "0"]);
    }
    let output = command
        .args(["--entrypoint", "/bin/sh", image, "-c", script])
        .output()?;
    checked(output, &format!("{script} in {image}"))
}

fn in_image(docker: &Docker, image: &str, script: &str) -> Result<String> {
    in_image_as(docker, image, false, script)
}

/// The configured user is neither empty nor root, and a container really runs as that uid.
pub fn non_root(docker: &Docker) -> Result<String> {
    let mut found = Vec::new();
    for image in [DETECTOR, REASONER] {
        let user = docker.output(&["image", "inspect", "--format", "{{.Config.User}}", image])?;
        let user = user.trim();
        if user.is_empty() || user == "root" || user.starts_with("0:") || user == "0" {
            bail!("{image} runs as root (USER {user:?})");
        }
        let uid = in_image(docker, image, "id -u")?;
        if uid.trim() == "0" {
            bail!("{image}: id -u says 0");
        }
        found.push(format!("{image} USER {user} (id -u {})", uid.trim()));
    }
    Ok(found.join("; "))
}

/// RUNPATH (read with readelf from the binary copied out of the image) names the image's
/// torch/lib, and inside the image, with no LD_LIBRARY_PATH, the loader resolves every library.
pub fn detector_finds_libtorch(docker: &Docker, work: &Path) -> Result<String> {
    let container = docker.output(&["create", DETECTOR])?.trim().to_string();
    let copy = work.join("slc-detector.from-image");
    let copied = docker.output(&[
        "cp",
        &format!("{container}:/usr/local/bin/slc-detector"),
        &copy.display().to_string(),
    ]);
    docker.output(&["rm", &container])?;
    copied?;
    let dynamic = checked(
        Command::new("readelf").arg("-d").arg(&copy).output()?,
        "readelf -d",
    )?;
    let runpath = dynamic
        .lines()
        .find(|line| line.contains("(RUNPATH)"))
        .context("the image's slc-detector has no RUNPATH")?
        .to_string();
    if !runpath.contains(TORCH_LIB) {
        bail!("RUNPATH does not name {TORCH_LIB}: {runpath}");
    }
    let needs_cuda = dynamic
        .lines()
        .any(|line| line.contains("[libtorch_cuda.so]"));
    let ldd = in_image(
        docker,
        DETECTOR,
        "test -z \"${LD_LIBRARY_PATH:-}\" && ldd /usr/local/bin/slc-detector",
    )?;
    if let Some(missing) = ldd.lines().find(|line| line.contains("not found")) {
        bail!("inside the image the loader cannot find {}", missing.trim());
    }
    let libtorch = ldd
        .lines()
        .find(|line| line.contains("libtorch_cpu.so"))
        .context("ldd shows no libtorch_cpu.so")?;
    if !libtorch.contains(TORCH_LIB) {
        bail!("libtorch_cpu.so resolves elsewhere: {}", libtorch.trim());
    }
    let _ = std::fs::remove_file(&copy);
    Ok(format!(
        "RUNPATH [{}]; NEEDED libtorch_cuda.so = {needs_cuda}; ldd in the image resolves all {} libraries, libtorch_cpu.so from {TORCH_LIB}",
        runpath
            .split('[')
            .nth(1)
            .unwrap_or("")
            .trim_end_matches(']'),
        ldd.lines().count()
    ))
}

pub fn reasoner_has_no_libtorch(docker: &Docker) -> Result<String> {
    let files = in_image_as(
        docker,
        REASONER,
        true,
        "find / -xdev \\( -name 'libtorch*' -o -name 'libc10*' -o -name 'torch' \\) -print",
    )?;
    if !files.trim().is_empty() {
        bail!(
            "the reasoner image holds {}",
            files.trim().replace('\n', ", ")
        );
    }
    let ldd = in_image(docker, REASONER, "ldd /usr/local/bin/slc-reasoner")?;
    if ldd.contains("torch") || ldd.contains("c10") {
        bail!("slc-reasoner links libtorch: {ldd}");
    }
    Ok(format!(
        "no libtorch*/libc10*/torch in the filesystem; slc-reasoner needs {} libraries, none of them torch",
        ldd.lines().count()
    ))
}

/// `docker history` and every byte of every layer (docker save) hold none of this run's keys,
/// and no layer holds a file with the bytes of a research-only sample file.
pub fn no_secrets_or_samples(
    docker: &Docker,
    keys: &[String],
    samples: &layers::Samples,
) -> Result<String> {
    let mut lines = Vec::new();
    for image in [DETECTOR, REASONER] {
        let history =
            docker.output(&["history", "--no-trunc", "--format", "{{.CreatedBy}}", image])?;
        if let Some(key) = keys.iter().find(|key| history.contains(key.as_str())) {
            bail!("{image}: docker history shows a test key ({}…)", &key[..8]);
        }
        let mut child = docker
            .cmd()
            .args(["save", image])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("docker save has no stdout")?;
        let scan = layers::scan(stdout, keys, samples)?;
        let status = child.wait()?;
        if !status.success() {
            bail!("docker save {image} failed with {status}");
        }
        if let Some(found) = scan.keys_found.first() {
            bail!("{image}: a layer holds a test key ({}…)", &found[..8]);
        }
        if let Some(found) = scan.samples_found.first() {
            bail!("{image}: a layer holds {found}");
        }
        lines.push(format!(
            "{image}: {} layers, {} files, {:.0} MB scanned",
            scan.layers,
            scan.files,
            scan.bytes as f64 / 1e6
        ));
    }
    Ok(format!(
        "{} keys and {} sample files looked for; {}",
        keys.len(),
        samples.len(),
        lines.join("; ")
    ))
}
