//! The demo stack under compose: its env file with fresh keys, the loopback scrape config,
//! `up`, the wait for every healthcheck, and `down -v`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_yaml::Value;

use super::bases::PROMETHEUS_TAG;
use super::docker::{Docker, checked};

pub const PROJECT: &str = "slc-smoke";
/// The demo profile's services, in the order compose starts them.
pub const SERVICES: [&str; 4] = ["postgres", "prometheus", "reasoner-demo", "detector-demo"];

pub struct Ports {
    pub detector: u16,
    pub reasoner: u16,
    pub postgres: u16,
    pub prometheus: u16,
}

pub struct Keys {
    pub app: String,
    pub pair: String,
    pub metrics: String,
    pub postgres: String,
    pub grafana: String,
}

impl Keys {
    pub fn all(&self) -> Vec<String> {
        vec![
            self.app.clone(),
            self.pair.clone(),
            self.metrics.clone(),
            self.postgres.clone(),
            self.grafana.clone(),
        ]
    }
}

pub struct Stack {
    pub ports: Ports,
    pub keys: Keys,
    root: PathBuf,
    env_file: PathBuf,
    prometheus_config: PathBuf,
    /// The merged config that `up` runs (see `resolve`).
    resolved: PathBuf,
}

fn random_hex() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Stack {
    /// Fresh keys and ports. The env file sits in the repository root on purpose: it is in
    /// the build context's folder, so the layer scan would find its keys if .dockerignore
    /// ever let it into an image.
    pub fn prepare(root: &Path, work: &Path) -> Result<Stack> {
        let keys = Keys {
            app: random_hex()?,
            pair: random_hex()?,
            metrics: random_hex()?,
            postgres: random_hex()?,
            grafana: random_hex()?,
        };
        let ports = Ports {
            detector: free_port()?,
            reasoner: free_port()?,
            postgres: free_port()?,
            prometheus: free_port()?,
        };
        let stack = Stack {
            ports,
            keys,
            root: root.to_path_buf(),
            env_file: root.join(".env.compose-smoke"),
            prometheus_config: work.join("prometheus.yml"),
            resolved: work.join("compose.resolved.yml"),
        };
        let mut text =
            String::from("# Written by cargo xtask compose-smoke for one run; removed by it.\n");
        for (name, value) in stack.variables() {
            text.push_str(&format!("{name}={value}\n"));
        }
        std::fs::write(&stack.env_file, text)?;
        std::fs::write(&stack.prometheus_config, stack.scrape_config()?)?;
        Ok(stack)
    }

    fn variables(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("POSTGRES_PASSWORD", self.keys.postgres.clone()),
            ("GRAFANA_ADMIN_PASSWORD", self.keys.grafana.clone()),
            ("SLC_REASONER_API_KEY", self.keys.pair.clone()),
            ("SLC_DETECTOR_API_KEYS", self.keys.app.clone()),
            ("SLC_METRICS_KEY", self.keys.metrics.clone()),
            ("SLC_PROMETHEUS_TAG", PROMETHEUS_TAG.to_string()),
            ("SLC_SMOKE_DETECTOR_PORT", self.ports.detector.to_string()),
            ("SLC_SMOKE_REASONER_PORT", self.ports.reasoner.to_string()),
            ("SLC_SMOKE_POSTGRES_PORT", self.ports.postgres.to_string()),
            (
                "SLC_SMOKE_PROMETHEUS_PORT",
                self.ports.prometheus.to_string(),
            ),
            (
                "SLC_SMOKE_PROMETHEUS_CONFIG",
                self.prometheus_config.display().to_string(),
            ),
        ])
    }

    /// deploy/prometheus/prometheus.yml with the DNS discovery replaced by the loopback ports
    /// (there is no DNS for services on the host's network) and a 5 s interval, so that rates
    /// exist soon after the traffic. Everything else, keys and rules included, is the shipped
    /// file's.
    fn scrape_config(&self) -> Result<String> {
        let path = self.root.join("deploy/prometheus/prometheus.yml");
        let mut config: Value = serde_yaml::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("parsing {}", path.display()))?;
        config["global"]["scrape_interval"] = Value::from("5s");
        config["global"]["evaluation_interval"] = Value::from("5s");
        let jobs = config["scrape_configs"]
            .as_sequence_mut()
            .context("prometheus.yml has no scrape_configs")?;
        for job in jobs {
            let (port, service) = match job["job_name"].as_str() {
                Some("slc-detector") => (self.ports.detector, "detector-demo"),
                Some("slc-reasoner") => (self.ports.reasoner, "reasoner-demo"),
                other => bail!("prometheus.yml has a job compose-smoke does not know: {other:?}"),
            };
            let mapping = job
                .as_mapping_mut()
                .context("a scrape config is no mapping")?;
            if mapping.remove("dns_sd_configs").is_none() {
                bail!("prometheus.yml's {service} job has no dns_sd_configs to replace");
            }
            mapping.remove("relabel_configs");
            let targets: Value = serde_yaml::from_str(&format!(
                "[{{targets: ['127.0.0.1:{port}'], labels: {{service: {service}}}}}]"
            ))?;
            mapping.insert("static_configs".into(), targets);
        }
        Ok(serde_yaml::to_string(&config)?)
    }

    /// `compose --env-file … -p slc-smoke -f FILE… --profile demo …`, without the operator's
    /// own compose settings, which must not leak into the smoke run.
    fn compose_with(&self, docker: &Docker, files: &[&Path]) -> Command {
        let mut command = docker.compose();
        command
            .current_dir(&self.root)
            .env_remove("COMPOSE_PROFILES")
            .env_remove("COMPOSE_FILE")
            .env_remove("COMPOSE_PROJECT_NAME")
            .envs(self.variables())
            .arg("--env-file")
            .arg(&self.env_file)
            .args(["-p", PROJECT]);
        for file in files {
            command.arg("-f").arg(file);
        }
        command.args(["--profile", "demo"]);
        command
    }

    /// The shipped file with the loopback override on top.
    fn compose_sources(&self, docker: &Docker) -> Command {
        self.compose_with(
            docker,
            &[
                Path::new("docker-compose.yml"),
                Path::new("deploy/compose/host-network.yml"),
            ],
        )
    }

    /// The resolved config that `up` runs.
    pub fn compose(&self, docker: &Docker) -> Command {
        self.compose_with(docker, &[&self.resolved])
    }

    /// `compose config` of the two files: every service is on the host's network and no
    /// network is declared. The merged config, less its published ports, is what `up` runs:
    /// published ports mean nothing on the host network, Docker 20.10 refuses the pair, and
    /// Compose v1 cannot remove a list in an override file (v2's `!reset` can).
    pub fn resolve(&self, docker: &Docker) -> Result<String> {
        let output = self.compose_sources(docker).arg("config").output()?;
        let text = checked(output, "compose config")?;
        let mut config: Value = serde_yaml::from_str(&text)?;
        let mut dropped = 0;
        for (_, service) in config["services"]
            .as_mapping_mut()
            .context("compose config has no services")?
        {
            if let Some(mapping) = service.as_mapping_mut()
                && mapping.remove("ports").is_some()
            {
                dropped += 1;
            }
        }
        // The resolved file holds this run's keys: only root may read it, and `down` removes it.
        std::fs::write(&self.resolved, serde_yaml::to_string(&config)?)?;
        std::fs::set_permissions(
            &self.resolved,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        let services = config["services"]
            .as_mapping()
            .context("compose config has no services")?;
        let mut names = Vec::new();
        for (name, service) in services {
            let name = name.as_str().unwrap_or("?");
            if service["network_mode"].as_str() != Some("host") {
                bail!("{name} is not on the host network in the merged config");
            }
            names.push(name.to_string());
        }
        for wanted in SERVICES {
            if !names.iter().any(|name| name == wanted) {
                bail!("the demo profile has no service {wanted}");
            }
        }
        if config
            .get("networks")
            .is_some_and(|n| n.as_mapping().is_some_and(|m| !m.is_empty()))
        {
            bail!(
                "the merged config declares networks: {:?}",
                config["networks"]
            );
        }
        Ok(format!(
            "{} services, all network_mode host ({}); published ports of {dropped} left out",
            names.len(),
            names.join(", ")
        ))
    }

    pub fn up(&self, docker: &Docker) -> Result<String> {
        let started = Instant::now();
        let output = self
            .compose(docker)
            .args(["up", "-d", "--no-build"])
            .output()?;
        checked(output, "compose up")?;
        Ok(format!(
            "{} up -d --no-build in {:.0} s",
            docker.compose_name(),
            started.elapsed().as_secs_f64()
        ))
    }

    pub fn container(&self, docker: &Docker, service: &str) -> Result<String> {
        let output = self.compose(docker).args(["ps", "-q", service]).output()?;
        let id = checked(output, "compose ps")?.trim().to_string();
        if id.is_empty() {
            bail!("compose has no container for {service}");
        }
        Ok(id)
    }

    /// Waits for the service's healthcheck; returns its test command and the wait.
    pub fn wait_healthy(&self, docker: &Docker, service: &str) -> Result<String> {
        let started = Instant::now();
        let id = self.container(docker, service)?;
        let test = docker.output(&[
            "inspect",
            "--format",
            "{{json .Config.Healthcheck.Test}}",
            &id,
        ])?;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let state = docker.output(&[
                "inspect",
                "--format",
                "{{.State.Status}} {{.State.Health.Status}}",
                &id,
            ])?;
            let mut words = state.split_whitespace();
            let (status, health) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            if health == "healthy" {
                break;
            }
            if status != "running" || Instant::now() > deadline {
                let logs = docker.cmd().args(["logs", "--tail", "20", &id]).output()?;
                bail!(
                    "{service} is {status}/{health}; its last log lines:\n{}{}",
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let network =
            docker.output(&["inspect", "--format", "{{.HostConfig.NetworkMode}}", &id])?;
        if network.trim() != "host" {
            bail!("{service} runs on network {}", network.trim());
        }
        Ok(format!(
            "healthy after {:.0} s; network host; healthcheck {}",
            started.elapsed().as_secs_f64(),
            test.trim()
        ))
    }

    pub fn logs(&self, docker: &Docker, work: &Path) -> Result<PathBuf> {
        let output = self.compose(docker).args(["logs", "--no-color"]).output()?;
        let path = work.join("compose.log");
        std::fs::write(&path, [output.stdout, output.stderr].concat())?;
        Ok(path)
    }

    pub fn down(&self, docker: &Docker) -> Result<String> {
        let output = self
            .compose(docker)
            .args(["down", "-v", "--remove-orphans"])
            .output()?;
        checked(output, "compose down -v")?;
        let left = docker.output(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={PROJECT}"),
        ])?;
        if !left.trim().is_empty() {
            bail!("containers left after down: {}", left.trim());
        }
        let volumes = docker.output(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={PROJECT}"),
        ])?;
        if !volumes.trim().is_empty() {
            bail!("volumes left after down -v: {}", volumes.trim());
        }
        let _ = std::fs::remove_file(&self.env_file);
        let _ = std::fs::remove_file(&self.resolved);
        Ok("no container and no volume of the project left".to_string())
    }
}
