//! The static checks of the deployment files with the real tools, as CI runs them through
//! `cargo xtask test` (which installs the tools and points at them with SLC_PROMTOOL,
//! SLC_KUBECTL and SLC_KUBERNETES_VALIDATE):
//! - `promtool check config` and `promtool check rules` on the shipped Prometheus files;
//! - every PromQL expression of the Grafana dashboard parsed by promtool (as recording rules);
//! - the Kubernetes manifests rendered by `kubectl kustomize` and validated offline against the
//!   Kubernetes schemas by kubernetes-validate, strictly (no unknown fields).
//!
//! Each check is also fed a broken copy and must fail on it, so none of them can pass blindly.
//! Without the tools (a plain `cargo test`) the checks say so and skip, unless
//! SLC_REQUIRE_DEPLOY_TOOLS is set, as `cargo xtask test` sets it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn tool(variable: &str) -> Option<PathBuf> {
    match std::env::var_os(variable) {
        Some(path) => Some(PathBuf::from(path)),
        None if std::env::var_os("SLC_REQUIRE_DEPLOY_TOOLS").is_some() => {
            panic!("{variable} is not set but SLC_REQUIRE_DEPLOY_TOOLS is")
        }
        None => {
            eprintln!("skipped: {variable} is not set (cargo xtask test sets it)");
            None
        }
    }
}

/// Runs a command; returns whether it succeeded and its stdout + stderr.
fn outcome(command: &mut Command) -> (bool, String) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A copy of deploy/prometheus in a temporary folder, with the scrape key file that compose
/// writes in the container made to exist there, so `promtool check config` checks everything
/// (the rule files it names included) rather than only the syntax.
fn prometheus_copy(edit_alerts: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("metrics-key");
    std::fs::write(&key, "a-key").unwrap();
    let config = std::fs::read_to_string(repo().join("deploy/prometheus/prometheus.yml")).unwrap();
    assert!(config.contains("/tmp/slc-metrics-key"));
    std::fs::write(
        dir.path().join("prometheus.yml"),
        config.replace("/tmp/slc-metrics-key", &key.display().to_string()),
    )
    .unwrap();
    let alerts = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml")).unwrap();
    std::fs::write(dir.path().join("alerts.yml"), edit_alerts(alerts)).unwrap();
    dir
}

#[test]
fn promtool_accepts_the_shipped_config_and_rules_and_rejects_a_broken_rule() {
    let Some(promtool) = tool("SLC_PROMTOOL") else {
        return;
    };
    let shipped = prometheus_copy(|alerts| alerts);
    let (ok, text) = outcome(
        Command::new(&promtool)
            .args(["check", "config"])
            .arg(shipped.path().join("prometheus.yml")),
    );
    assert!(ok, "promtool check config: {text}");
    assert!(
        text.contains("rules found"),
        "check config did not reach the rule file: {text}"
    );
    let (ok, text) = outcome(
        Command::new(&promtool)
            .args(["check", "rules"])
            .arg(repo().join("deploy/prometheus/alerts.yml")),
    );
    assert!(ok, "promtool check rules: {text}");

    // One bad range in one expression: both checks must fail and name the problem.
    let broken = prometheus_copy(|alerts| {
        assert!(alerts.contains("[5m]"));
        alerts.replacen("[5m]", "[5x]", 1)
    });
    for subcommand in ["rules", "config"] {
        let file = if subcommand == "rules" {
            "alerts.yml"
        } else {
            "prometheus.yml"
        };
        let (ok, text) = outcome(
            Command::new(&promtool)
                .args(["check", subcommand])
                .arg(broken.path().join(file)),
        );
        assert!(
            !ok,
            "promtool check {subcommand} passed a broken rule: {text}"
        );
        assert!(text.contains("bad duration syntax"), "{text}");
    }

    // And a broken config setting.
    let bad_config = broken.path().join("prometheus.yml");
    let config = std::fs::read_to_string(&bad_config).unwrap();
    std::fs::write(
        &bad_config,
        config.replacen("scrape_interval: 15s", "scrape_interval: fifteen", 1),
    )
    .unwrap();
    let (ok, text) = outcome(
        Command::new(&promtool)
            .args(["check", "config", "--syntax-only"])
            .arg(&bad_config),
    );
    assert!(!ok, "promtool passed scrape_interval: fifteen: {text}");
}

/// Every `expr` of every panel (rows included) of the dashboard.
fn dashboard_expressions(dashboard: &serde_json::Value) -> Vec<String> {
    let mut found = Vec::new();
    let mut panels: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expression) = target["expr"].as_str() {
                found.push(expression.to_string());
            }
        }
    }
    found
}

/// The expressions as recording rules, which `promtool check rules` parses one by one.
fn as_recording_rules(expressions: &[String]) -> String {
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (index, expression) in expressions.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: slc:dashboard_query_{index}\n        expr: {}\n",
            serde_json::to_string(expression).unwrap()
        ));
    }
    rules
}

#[test]
fn every_dashboard_query_parses_and_a_broken_one_does_not() {
    let Some(promtool) = tool("SLC_PROMTOOL") else {
        return;
    };
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/dashboards/slc.json")).unwrap(),
    )
    .unwrap();
    let expressions = dashboard_expressions(&dashboard);
    assert!(
        expressions.len() >= 20,
        "only {} queries",
        expressions.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("dashboard.yml");
    std::fs::write(&rules, as_recording_rules(&expressions)).unwrap();
    let (ok, text) = outcome(Command::new(&promtool).args(["check", "rules"]).arg(&rules));
    assert!(ok, "a dashboard query does not parse: {text}");
    assert!(
        text.contains(&format!("{} rules found", expressions.len())),
        "{text}"
    );

    let mut broken = expressions.clone();
    let victim = broken
        .iter()
        .position(|expression| expression.contains("sum by ("))
        .unwrap();
    broken[victim] = broken[victim].replacen("sum by (", "sum by ((", 1);
    std::fs::write(&rules, as_recording_rules(&broken)).unwrap();
    let (ok, text) = outcome(Command::new(&promtool).args(["check", "rules"]).arg(&rules));
    assert!(!ok, "promtool parsed a broken query: {text}");
}

/// `kubectl kustomize DIR` rendered to a file, then `kubernetes-validate --strict` on it
/// against two Kubernetes versions (the oldest still maintained and the newest it bundles).
fn render_and_validate(kubectl: &Path, validate: &Path, dir: &Path) -> (bool, String) {
    let (ok, rendered) = outcome(Command::new(kubectl).arg("kustomize").arg(dir));
    if !ok {
        return (false, format!("kustomize failed: {rendered}"));
    }
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("rendered.yaml");
    std::fs::write(&file, &rendered).unwrap();
    let mut all = String::new();
    for version in ["1.32.0", "1.37.0"] {
        let (ok, text) = outcome(
            Command::new(validate)
                .args(["--strict", "-k", version])
                .arg(&file),
        );
        all.push_str(&text);
        if !ok {
            return (false, all);
        }
    }
    (true, all)
}

#[test]
fn kubernetes_manifests_render_and_validate_and_an_invalid_one_fails() {
    let (Some(kubectl), Some(validate)) = (tool("SLC_KUBECTL"), tool("SLC_KUBERNETES_VALIDATE"))
    else {
        return;
    };
    let shipped = repo().join("deploy/k8s");
    let (ok, text) = render_and_validate(&kubectl, &validate, &shipped);
    assert!(ok, "{text}");
    // Every resource passed its schema, except the Prometheus Operator's CRD, which has none
    // in the Kubernetes schemas (deploy_drift.rs checks it against the reasoner Service).
    let passed = text
        .lines()
        .filter(|line| line.contains(" passed "))
        .count();
    assert!(passed >= 2 * 9, "too few resources validated: {text}");
    for line in text.lines().filter(|line| !line.contains(" passed ")) {
        assert!(
            line.contains("kind ServiceMonitor"),
            "unexpected validator output: {line}"
        );
    }

    // Broken copies: a wrong type, an unknown field (only --strict catches it), and a
    // kustomization naming a file that does not exist.
    let breakages: [(&str, &str, &str); 3] = [
        ("reasoner.yaml", "replicas: 2", "replicas: two"),
        (
            "reasoner.yaml",
            "containerPort: 8090",
            "containerPort: 8090, hostPortt: 8090",
        ),
        (
            "kustomization.yaml",
            "  - vllm.yaml",
            "  - vllm.yaml\n  - missing.yaml",
        ),
    ];
    for (file, from, to) in breakages {
        let copy = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(&shipped).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
        }
        let target = copy.path().join(file);
        let text = std::fs::read_to_string(&target).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&target, text.replacen(from, to, 1)).unwrap();
        let (ok, output) = render_and_validate(&kubectl, &validate, copy.path());
        assert!(!ok, "{file} with {to:?} passed: {output}");
    }
}
