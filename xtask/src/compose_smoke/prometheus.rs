//! Checks against the stack's Prometheus through its HTTP API: both services scraped, the alert
//! rules loaded as shipped, and every PromQL expression of the alerts and of the dashboard
//! evaluated; every dashboard query must return at least one series after the traffic.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::docker::checked;

pub struct Prometheus {
    base: String,
}

impl Prometheus {
    pub fn new(port: u16) -> Self {
        Prometheus {
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn get(&self, path: &str, query: Option<&str>) -> Result<Value> {
        let mut command = Command::new("curl");
        command.args(["-sS", "--max-time", "30", "-G"]);
        if let Some(query) = query {
            command
                .arg("--data-urlencode")
                .arg(format!("query={query}"));
        }
        let output = command.arg(format!("{}{path}", self.base)).output()?;
        let text = checked(output, &format!("GET {path}"))?;
        let body: Value =
            serde_json::from_str(&text).with_context(|| format!("GET {path}: not JSON: {text}"))?;
        Ok(body)
    }

    /// Evaluates one expression now: Err when Prometheus refuses it (a parse or evaluation
    /// error), else the number of series in the result.
    pub fn evaluate(&self, expression: &str) -> Result<usize> {
        let body = self.get("/api/v1/query", Some(expression))?;
        if body["status"] != "success" {
            bail!("{}: {}", body["errorType"], body["error"]);
        }
        Ok(body["data"]["result"].as_array().map_or(0, Vec::len))
    }

    /// Both jobs have a target that is up and has been scraped.
    pub fn scraped_both(&self, wait: Duration) -> Result<String> {
        let deadline = Instant::now() + wait;
        loop {
            let body = self.get("/api/v1/targets", None)?;
            let targets = body["data"]["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut summary = Vec::new();
            let mut all_up = true;
            for job in ["slc-detector", "slc-reasoner"] {
                let up = targets
                    .iter()
                    .find(|target| target["labels"]["job"] == job && target["health"] == "up");
                match up {
                    Some(target) => summary.push(format!(
                        "{job} {} up (last scrape {:.3} s)",
                        target["scrapeUrl"].as_str().unwrap_or("?"),
                        target["lastScrapeDuration"].as_f64().unwrap_or(0.0)
                    )),
                    None => all_up = false,
                }
            }
            // And the samples are in the database, not only the target list.
            if all_up
                && self.evaluate("slc_detector_queue_depth")? > 0
                && self.evaluate("slc_reasoner_turns_in_flight")? > 0
            {
                return Ok(summary.join("; "));
            }
            if Instant::now() > deadline {
                bail!("not every job is up after {wait:?}: {targets:?}");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The rules Prometheus loaded are exactly the shipped file's, and each evaluates.
    pub fn alert_rules(&self, root: &Path) -> Result<String> {
        let text = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml"))?;
        let file: serde_yaml::Value = serde_yaml::from_str(&text)?;
        let mut shipped = Vec::new();
        for group in file["groups"]
            .as_sequence()
            .context("alerts.yml has no groups")?
        {
            for rule in group["rules"]
                .as_sequence()
                .context("a group has no rules")?
            {
                let name = rule["alert"].as_str().context("a rule has no alert name")?;
                shipped.push(name.to_string());
            }
        }
        let body = self.get("/api/v1/rules", None)?;
        let mut loaded = Vec::new();
        let mut evaluated = 0;
        for group in body["data"]["groups"]
            .as_array()
            .context("no rule groups loaded")?
        {
            for rule in group["rules"]
                .as_array()
                .context("a loaded group has no rules")?
            {
                let name = rule["name"].as_str().unwrap_or("?").to_string();
                let query = rule["query"]
                    .as_str()
                    .context("a loaded rule has no query")?;
                self.evaluate(query)
                    .with_context(|| format!("alert {name}: {query}"))?;
                if rule["health"] == "err" {
                    bail!("alert {name} fails to evaluate: {}", rule["lastError"]);
                }
                evaluated += 1;
                loaded.push(name);
            }
        }
        let mut sorted_shipped = shipped.clone();
        sorted_shipped.sort();
        loaded.sort();
        if loaded != sorted_shipped {
            bail!("Prometheus loaded {loaded:?}, alerts.yml has {sorted_shipped:?}");
        }
        Ok(format!(
            "{evaluated} alert expressions loaded from alerts.yml, each parsed and evaluated without error"
        ))
    }

    /// Every dashboard query parses and returns at least one series; rates need two scrapes
    /// after the traffic, so this waits up to `wait` for the last ones.
    pub fn dashboard(&self, root: &Path, wait: Duration) -> Result<String> {
        let expressions = dashboard_expressions(root)?;
        let deadline = Instant::now() + wait;
        loop {
            let mut empty = Vec::new();
            let mut series = 0;
            for (panel, expression) in &expressions {
                let count = self
                    .evaluate(expression)
                    .with_context(|| format!("panel \"{panel}\": {expression}"))?;
                if count == 0 {
                    empty.push(format!("\"{panel}\": {expression}"));
                }
                series += count;
            }
            if empty.is_empty() {
                return Ok(format!(
                    "{} queries of {} panels, every one parsed and returned data ({series} series in all)",
                    expressions.len(),
                    expressions
                        .iter()
                        .map(|(panel, _)| panel)
                        .collect::<std::collections::BTreeSet<_>>()
                        .len()
                ));
            }
            if Instant::now() > deadline {
                bail!(
                    "{} queries returned no series: {}",
                    empty.len(),
                    empty.join("; ")
                );
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

/// (panel title, expression) for every target of every panel, rows included.
pub fn dashboard_expressions(root: &Path) -> Result<Vec<(String, String)>> {
    let path = root.join("deploy/grafana/dashboards/slc.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let mut found = Vec::new();
    let mut panels: Vec<Value> = dashboard["panels"].as_array().cloned().unwrap_or_default();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested.iter().cloned());
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expression) = target["expr"].as_str() {
                found.push((
                    panel["title"].as_str().unwrap_or("?").to_string(),
                    expression.to_string(),
                ));
            }
        }
    }
    if found.is_empty() {
        bail!("{} has no queries", path.display());
    }
    found.reverse();
    Ok(found)
}
