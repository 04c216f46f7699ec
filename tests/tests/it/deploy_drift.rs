//! Docker cannot run on the development machines, so this test stands in for `docker compose
//! config` and `kubectl apply --dry-run`: it parses `docker-compose.yml`, the Kubernetes
//! manifests, the Prometheus rules and the Grafana dashboard, and checks every env var, port,
//! health path and metric name they use against the binaries themselves, so the files cannot
//! drift from the code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The service binaries sit next to this test's `deps/` folder; `cargo test --workspace`
/// builds them because their own crates have integration tests.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --bins` (cargo xtask test does)",
        path.display()
    );
    path
}

/// Every `[env: NAME…]` that `BINARY serve --help` prints: the clap config is the source of truth.
fn serve_env_vars(name: &str) -> BTreeSet<String> {
    let output = std::process::Command::new(binary(name))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{name} serve --help failed");
    let help = String::from_utf8(output.stdout).unwrap();
    let vars: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect();
    assert!(
        vars.len() > 3,
        "{name} serve --help lists almost no env vars: {vars:?}"
    );
    vars
}

fn openapi_paths(file: &str) -> BTreeSet<String> {
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("openapi").join(file)).unwrap())
            .unwrap();
    spec["paths"].as_object().unwrap().keys().cloned().collect()
}

/// Parses a YAML file with its `<<:` merge keys applied, as docker compose does.
fn yaml(path: &str) -> Value {
    let mut value: Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo().join(path)).unwrap())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    value.apply_merge().unwrap();
    value
}

fn yaml_documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join(path)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

fn port_of(address: &str) -> u16 {
    address.rsplit(':').next().unwrap().parse().unwrap()
}

/// `http://localhost:8080/readyz` -> (8080, "/readyz").
fn url_port_and_path(url: &str) -> (u16, String) {
    let rest = url.split("://").nth(1).unwrap();
    let (host_port, path) = rest.split_once('/').unwrap();
    (port_of(host_port), format!("/{path}"))
}

struct Service {
    binary: &'static str,
    bind_var: &'static str,
    openapi: &'static str,
}

const DETECTOR: Service = Service {
    binary: "slc-detector",
    bind_var: "SLC_BIND",
    openapi: "detector.json",
};
const REASONER: Service = Service {
    binary: "slc-reasoner",
    bind_var: "SLC_REASONER_BIND",
    openapi: "reasoner.json",
};

#[test]
fn compose_services_match_the_binaries() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_mapping().unwrap();
    for (name, service) in [
        ("detector", &DETECTOR),
        ("detector-gpu", &DETECTOR),
        ("reasoner", &REASONER),
    ] {
        let definition = &services[name];
        assert!(definition.is_mapping(), "compose has no service {name}");
        let known = serve_env_vars(service.binary);
        let environment = definition["environment"].as_mapping().unwrap();
        let mut bind_port = None;
        for (key, value) in environment {
            let key = key.as_str().unwrap();
            assert!(
                known.contains(key),
                "compose service {name} sets {key}, which {} does not read",
                service.binary
            );
            if key == service.bind_var {
                bind_port = Some(port_of(value.as_str().unwrap()));
            }
        }
        let bind_port =
            bind_port.unwrap_or_else(|| panic!("{name} does not set {}", service.bind_var));
        let published: Vec<u16> = definition["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|mapping| port_of(mapping.as_str().unwrap()))
            .collect();
        assert_eq!(
            published,
            [bind_port],
            "{name}: container port differs from {}",
            service.bind_var
        );

        let test = definition["healthcheck"]["test"].as_sequence().unwrap();
        let url = test.last().unwrap().as_str().unwrap();
        let (port, path) = url_port_and_path(url);
        assert_eq!(port, bind_port, "{name}: healthcheck port");
        assert!(
            openapi_paths(service.openapi).contains(&path),
            "{name}: healthcheck path {path} is not a route of {}",
            service.binary
        );
    }
    // Secrets come from the env file, never from the compose file itself.
    let text = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    for line in text
        .lines()
        .filter(|l| l.contains("KEY:") || l.contains("PASSWORD:"))
    {
        assert!(
            line.contains("${"),
            "a secret is written into docker-compose.yml: {line}"
        );
    }
}

#[test]
fn kubernetes_reasoner_matches_the_binary() {
    let known = serve_env_vars(REASONER.binary);
    let paths = openapi_paths(REASONER.openapi);
    let documents = yaml_documents("deploy/k8s/reasoner.yaml");
    let deployment = documents
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a reasoner Deployment");
    assert!(documents.iter().any(|d| d["kind"] == "Service"));
    assert!(
        documents
            .iter()
            .any(|d| d["kind"] == "HorizontalPodAutoscaler")
    );
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut bind_port = None;
    for variable in container["env"].as_sequence().unwrap() {
        let name = variable["name"].as_str().unwrap();
        assert!(
            known.contains(name),
            "reasoner.yaml sets {name}, which slc-reasoner does not read"
        );
        if name == REASONER.bind_var {
            bind_port = Some(port_of(variable["value"].as_str().unwrap()));
        }
    }
    let container_port = container["ports"][0]["containerPort"].as_u64().unwrap() as u16;
    assert_eq!(Some(container_port), bind_port);
    for probe in ["readinessProbe", "livenessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().unwrap();
        assert!(
            paths.contains(path),
            "{probe} path {path} is not a reasoner route"
        );
    }

    // Every file kustomize lists exists and parses.
    let kustomization = yaml("deploy/k8s/kustomization.yaml");
    for resource in kustomization["resources"].as_sequence().unwrap() {
        let file = format!("deploy/k8s/{}", resource.as_str().unwrap());
        assert!(!yaml_documents(&file).is_empty(), "{file} is empty");
    }
}

/// Metric names in the alert rules and the dashboard must be ones the services register.
#[test]
fn alerts_and_dashboard_use_registered_metrics() {
    let detector_source =
        std::fs::read_to_string(repo().join("detector-service/src/metrics.rs")).unwrap();
    let reasoner_source =
        std::fs::read_to_string(repo().join("reasoner-service/src/metrics.rs")).unwrap();
    let mut seen = 0;
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/dashboards/slc.json",
    ] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        for token in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            let Some(name) = ["slc_detector_", "slc_reasoner_"]
                .iter()
                .find(|prefix| token.starts_with(**prefix))
                .map(|_| token)
            else {
                continue;
            };
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            let registered = if let Some(short) = base.strip_prefix("slc_reasoner_") {
                // The reasoner registers its metrics under the `slc_reasoner` prefix.
                reasoner_source.contains(&format!("\"{short}\""))
            } else {
                detector_source.contains(&format!("\"{base}\""))
            };
            assert!(registered, "{file} uses {name}, which no service registers");
            seen += 1;
        }
    }
    assert!(
        seen > 20,
        "the dashboards reference almost no metrics ({seen})"
    );

    // Prometheus scrapes the ports the services bind in compose.
    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    for job in prometheus["scrape_configs"].as_sequence().unwrap() {
        for target in job["static_configs"][0]["targets"].as_sequence().unwrap() {
            let port = port_of(target.as_str().unwrap());
            let expected = if job["job_name"] == "slc-reasoner" {
                8090
            } else {
                8080
            };
            assert_eq!(port, expected, "{target:?}");
        }
    }
}

#[test]
fn dockerfiles_expose_the_bound_ports_and_run_unprivileged() {
    for (file, port) in [
        ("deploy/Dockerfile.detector", 8080),
        ("deploy/Dockerfile.reasoner", 8090),
    ] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        assert!(text.contains(&format!("EXPOSE {port}")), "{file}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("USER ") && !l.contains("root")),
            "{file}"
        );
        assert!(
            text.matches("FROM ").count() >= 3,
            "{file} is not multi-stage"
        );
    }
    let reasoner = std::fs::read_to_string(repo().join("deploy/Dockerfile.reasoner")).unwrap();
    let instructions: Vec<&str> = reasoner.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(
        !instructions.iter().any(|l| l.contains("torch")),
        "the reasoner image must not carry libtorch"
    );
    let detector = std::fs::read_to_string(repo().join("deploy/Dockerfile.detector")).unwrap();
    assert!(
        detector.contains("torch==${TORCH_VERSION}") && detector.contains("TORCH_VERSION=2.11.0")
    );
}
