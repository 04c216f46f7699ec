//! `cargo xtask compose-smoke`: the demo profile of docker-compose.yml for real, on a machine
//! whose containers may talk over loopback only. Installs and starts Docker when absent,
//! builds the look-alike bases once (deploy/lookalike/), builds both images, brings the demo
//! stack up on the host's network, waits for every healthcheck, sends an app's traffic with
//! keys, checks that Prometheus scraped both services and evaluates every PromQL expression of
//! the alerts and the dashboard, then `down -v`. Prints a table; exits non-zero on a failure.
//!
//! `--keep` leaves the stack up afterwards (its env file says how to reach it).

mod bases;
mod docker;
mod images;
mod layers;
mod prometheus;
mod report;
mod stack;
mod traffic;

use std::time::Duration;

use anyhow::Result;

use crate::setup::workspace_root;
use report::Report;

pub fn run(args: &[String]) -> Result<()> {
    let keep = args.iter().any(|arg| arg == "--keep");
    let root = workspace_root();
    let work = root.join("target/compose-smoke");
    std::fs::create_dir_all(&work)?;
    let mut report = Report::default();
    let outcome = run_checks(&mut report, &root, &work, keep);
    if let Err(error) = &outcome {
        println!("stopped: {error:#}");
    }
    report.finish()
}

fn run_checks(
    report: &mut Report,
    root: &std::path::Path,
    work: &std::path::Path,
    keep: bool,
) -> Result<()> {
    let docker = report.check("docker installed and running", || docker::ensure(work))?;
    let bridges_before = docker::bridge_networks(&docker)?;
    report.check("look-alike base images", || {
        bases::ensure(&docker, root, work)
    })?;
    report.check("build slc-reasoner image", || {
        images::build(&docker, root, work, "reasoner")
    })?;
    report.check("build slc-detector image", || {
        images::build(&docker, root, work, "detector")
    })?;

    report.soft_check("images run as a non-root user", || {
        images::non_root(&docker)
    });
    report.soft_check("slc-detector finds libtorch through its RUNPATH", || {
        images::detector_finds_libtorch(&docker, work)
    });
    report.soft_check("slc-reasoner image holds no libtorch", || {
        images::reasoner_has_no_libtorch(&docker)
    });

    let stack = report.check("env file with fresh keys, loopback scrape config", || {
        let stack = stack::Stack::prepare(root, work)?;
        let detail = format!(
            "ports: edge {}, reasoner {}, postgres {}, prometheus {}",
            stack.ports.detector,
            stack.ports.reasoner,
            stack.ports.postgres,
            stack.ports.prometheus
        );
        Ok((stack, detail))
    })?;
    report.soft_check("no key and no sample file in any image layer", || {
        let samples = layers::Samples::collect(root)?;
        images::no_secrets_or_samples(&docker, &stack.keys.all(), &samples)
    });
    let result = with_stack(report, &docker, &stack, root, work, &bridges_before);
    if let Ok(path) = stack.logs(&docker, work) {
        println!("compose logs: {}", path.display());
    }
    if keep {
        println!(
            "--keep: the stack stays up (project {}, env file .env.compose-smoke)",
            stack::PROJECT
        );
    } else {
        report.soft_check("docker compose down -v", || stack.down(&docker));
    }
    result
}

fn with_stack(
    report: &mut Report,
    docker: &docker::Docker,
    stack: &stack::Stack,
    root: &std::path::Path,
    work: &std::path::Path,
    bridges_before: &[String],
) -> Result<()> {
    report.check("merged compose config is loopback only", || {
        stack.resolve(docker).map(|detail| ((), detail))
    })?;
    report.check("compose up (profile demo, host network)", || {
        stack.up(docker).map(|d| ((), d))
    })?;
    for service in stack::SERVICES {
        report.check(&format!("healthcheck: {service}"), || {
            stack.wait_healthy(docker, service).map(|d| ((), d))
        })?;
    }
    report.soft_check("no bridge network created", || {
        let after = docker::bridge_networks(docker)?;
        let new: Vec<&String> = after
            .iter()
            .filter(|name| !bridges_before.contains(name))
            .collect();
        if !new.is_empty() {
            anyhow::bail!("new bridge networks: {new:?}");
        }
        Ok(format!("bridge networks before and after: {after:?}"))
    });
    report.soft_check("API keys are enforced", || {
        traffic::keys_are_required(stack, work)
    });
    report.check("register a concept through the edge", || {
        traffic::register(stack, root, work).map(|d| ((), d))
    })?;
    report.check("ask through the edge (visual and text-only)", || {
        traffic::ask(stack, root, work).map(|d| ((), d))
    })?;
    report.soft_check("reflection through the reasoner", || {
        traffic::reflect(stack, root, work)
    });
    let prometheus = prometheus::Prometheus::new(stack.ports.prometheus);
    report.check("Prometheus scraped both services", || {
        prometheus
            .scraped_both(Duration::from_secs(90))
            .map(|d| ((), d))
    })?;
    report.soft_check("every alert expression evaluates", || {
        prometheus.alert_rules(root)
    });
    report.soft_check("every dashboard query returns data", || {
        prometheus.dashboard(root, Duration::from_secs(120))
    });
    Ok(())
}
