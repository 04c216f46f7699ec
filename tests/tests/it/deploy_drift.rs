//! Checks that the deployment files cannot drift from the code: it parses `docker-compose.yml`
//! (and the loopback override `cargo xtask compose-smoke` runs it with), the Kubernetes
//! manifests, the Prometheus config and rules and the Grafana dashboard, and checks every env
//! var, port, health path, scrape target and metric name they use against the binaries
//! themselves. The tools' own checks are in deploy_checks.rs; the stack runs for real in
//! `cargo xtask compose-smoke`.

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

/// Every compose service that runs one of the two binaries.
const SERVICES: [(&str, &Service); 5] = [
    ("detector", &DETECTOR),
    ("detector-gpu", &DETECTOR),
    ("detector-demo", &DETECTOR),
    ("reasoner", &REASONER),
    ("reasoner-demo", &REASONER),
];

#[test]
fn compose_services_match_the_binaries() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_mapping().unwrap();
    for (name, service) in SERVICES {
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
    // Secrets come from the env file, never from the compose file itself, and every key that
    // protects an endpoint is required (`${VAR:?message}`): compose refuses to start without it.
    // Only the operator's own key to the large model's API may be left out.
    let text = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    let secret_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("KEY:") || l.contains("KEYS:") || l.contains("PASSWORD:"))
        .collect();
    assert!(secret_lines.len() >= 8, "{secret_lines:?}");
    for line in secret_lines {
        assert!(
            line.contains("${"),
            "a secret is written into docker-compose.yml: {line}"
        );
        if !line.contains("SLC_LLM_API_KEY: ${SLC_LLM_API_KEY:-}") {
            assert!(
                line.contains(":?") && !line.contains(":-"),
                "a key compose does not require: {line}"
            );
        }
    }
    // And env.example names every variable compose requires, empty, with how to make it.
    let example = std::fs::read_to_string(repo().join("deploy/env.example")).unwrap();
    assert!(example.contains("openssl rand"));
    for required in text.split("${").skip(1).filter_map(|rest| {
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest[name.len()..].starts_with(":?").then_some(name)
    }) {
        assert!(
            example.lines().any(|line| line == format!("{required}=")),
            "deploy/env.example does not list {required}= (empty, to be generated)"
        );
    }
}

/// The loopback override: every service of the base file is on the host network there, the
/// demo services bind 127.0.0.1, and what it sets is read by the binaries.
#[test]
fn host_network_override_covers_every_service() {
    let base = yaml("docker-compose.yml");
    let overlay = yaml("deploy/compose/host-network.yml");
    let overrides = overlay["services"].as_mapping().unwrap();
    for (name, _) in base["services"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        assert_eq!(
            overrides[name]["network_mode"].as_str(),
            Some("host"),
            "{name} is not on the host network in the override"
        );
    }
    for (name, service) in SERVICES.iter().filter(|(name, _)| name.ends_with("-demo")) {
        let known = serve_env_vars(service.binary);
        let environment = overrides[*name]["environment"].as_mapping().unwrap();
        for (key, value) in environment {
            let key = key.as_str().unwrap();
            assert!(known.contains(key), "the override sets {key} on {name}");
            let value = value.as_str().unwrap();
            if key == service.bind_var {
                assert!(value.starts_with("127.0.0.1:"), "{name} binds {value}");
            }
        }
        let test = overrides[*name]["healthcheck"]["test"]
            .as_sequence()
            .unwrap();
        let url = test.last().unwrap().as_str().unwrap();
        let path = url.rsplit_once('}').unwrap().1;
        assert!(
            openapi_paths(service.openapi).contains(path),
            "{name}: healthcheck path {path}"
        );
    }
}

/// An allow-list context: secrets, models, target/ and the research-only sample photos in
/// the fixtures never reach the daemon.
#[test]
fn dockerignore_is_an_allow_list_without_fixtures() {
    let text = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(patterns.first(), Some(&"*"), "{patterns:?}");
    for included in patterns.iter().filter(|p| p.starts_with('!')) {
        assert!(
            !included.contains("fixtures")
                && !included.contains("env")
                && !included.contains("models"),
            "{included}"
        );
    }
    for excluded in [
        "tests/fixtures",
        "tests/tests",
        "engine/tests",
        "detector-service/tests",
        "reasoner-service/tests",
        "eval/tests",
    ] {
        assert!(
            patterns.contains(&excluded),
            ".dockerignore lets {excluded} in"
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
    // Streamed answers: time to first answer token on both services has a panel.
    let dashboard =
        std::fs::read_to_string(repo().join("deploy/grafana/dashboards/slc.json")).unwrap();
    for metric in [
        "slc_detector_ask_first_answer_token_seconds_bucket",
        "slc_reasoner_answer_first_token_seconds_bucket",
    ] {
        assert!(
            dashboard.contains(metric),
            "no dashboard panel shows {metric}"
        );
    }

    // Prometheus finds every compose service of each binary by DNS, on the port it binds.
    let compose = yaml("docker-compose.yml");
    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    let jobs = prometheus["scrape_configs"].as_sequence().unwrap();
    assert_eq!(jobs.len(), 2);
    for job in jobs {
        let service = match job["job_name"].as_str().unwrap() {
            "slc-detector" => &DETECTOR,
            "slc-reasoner" => &REASONER,
            other => panic!("unknown job {other}"),
        };
        let discovery = &job["dns_sd_configs"][0];
        let names: Vec<&str> = discovery["names"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        let expected: Vec<&str> = SERVICES
            .iter()
            .filter(|(_, s)| s.binary == service.binary)
            .map(|(name, _)| *name)
            .collect();
        assert_eq!(names, expected, "{}", service.binary);
        for name in names {
            let bind = compose["services"][name]["environment"][service.bind_var]
                .as_str()
                .unwrap();
            assert_eq!(
                discovery["port"].as_u64(),
                Some(port_of(bind) as u64),
                "{name}"
            );
        }
        assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
        assert!(openapi_paths(service.openapi).contains("/metrics"));
        assert_eq!(
            job["authorization"]["credentials_file"].as_str(),
            Some("/tmp/slc-metrics-key"),
            "the file compose's Prometheus entrypoint writes"
        );
    }
    let entrypoint = compose["services"]["prometheus"]["entrypoint"]
        .as_sequence()
        .unwrap();
    assert!(
        entrypoint
            .iter()
            .any(|part| part.as_str().unwrap().contains("> /tmp/slc-metrics-key"))
    );
}

/// The ServiceMonitor (no schema in the Kubernetes JSON schemas) points at the reasoner
/// Service's named port and a real route, and names the job as the alerts do.
#[test]
fn servicemonitor_matches_the_reasoner_service() {
    let monitor = &yaml_documents("deploy/k8s/servicemonitor.yaml")[0];
    let documents = yaml_documents("deploy/k8s/reasoner.yaml");
    let service = documents.iter().find(|d| d["kind"] == "Service").unwrap();
    let labels = service["metadata"]["labels"].as_mapping().unwrap();
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap()
    {
        assert_eq!(labels.get(key), Some(value), "selector {key:?}");
    }
    let job_label = monitor["spec"]["jobLabel"].as_str().unwrap();
    assert_eq!(labels[job_label].as_str(), Some("slc-reasoner"));
    let endpoint = &monitor["spec"]["endpoints"][0];
    let port_names: Vec<&str> = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(port_names.contains(&endpoint["port"].as_str().unwrap()));
    assert!(openapi_paths(REASONER.openapi).contains(endpoint["path"].as_str().unwrap()));
    let secret = &yaml_documents("deploy/k8s/secrets.example.yaml")[0];
    let key = endpoint["authorization"]["credentials"]["key"]
        .as_str()
        .unwrap();
    assert!(
        secret["stringData"][key].is_string(),
        "the Secret has no {key}"
    );
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
