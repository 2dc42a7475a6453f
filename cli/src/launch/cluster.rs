//! A job on this machine: one coordinator and N workers as child processes of the `fourm` binary
//! (`fourm coordinator`, `fourm worker`), each with its configuration file and log under the job
//! folder. `fourm launch` drives one; the multi-process tests drive one too, killing and restarting
//! processes to inject faults.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::Rng;

use fourm_coordinator::config::{CoordinatorConfig, JobConfig, MembershipConfig, ServerConfig};
use fourm_worker::config::{CoordinatorSection, MetricsSection, WorkerSection};

use super::config::LaunchConfig;

/// What to run.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The `fourm` executable.
    pub exe: PathBuf,
    /// Job folder: configuration files, `logs/`, `metrics/`, `audit/`, `checkpoints/`.
    pub dir: PathBuf,
    /// Dataset URL.
    pub dataset: String,
    /// Worker processes started by [`LocalCluster::start`].
    pub workers: u32,
    /// Workers needed to form a generation (default: all of them).
    pub min_workers: u32,
    /// How long the coordinator waits for a missing worker before it forms a smaller generation.
    pub join_timeout: Duration,
    /// A worker silent this long is lost.
    pub heartbeat_timeout: Duration,
    /// A member whose step does not advance this long is evicted.
    pub progress_timeout: Duration,
    /// A job without progress this long fails.
    pub stall_timeout: Duration,
    /// Restarts (generations after the first) before the job fails.
    pub max_restarts: u32,
    /// Checkpoint root URL (default: `checkpoints/` of the job folder).
    pub checkpoint_url: Option<String>,
    /// Extra environment of every process (store credentials, failpoints).
    pub env: Vec<(String, String)>,
    /// Record the samples of committed steps under `audit/`.
    pub audit: bool,
    /// Add a parameter digest to every metrics line.
    pub param_digest: bool,
    /// Steps, checkpoint interval, seeds, model, data and training settings.
    pub config: LaunchConfig,
}

impl ClusterSpec {
    /// A spec with launch's defaults for the process settings.
    pub fn new(exe: PathBuf, dir: PathBuf, dataset: String, config: LaunchConfig) -> Self {
        Self {
            exe,
            dir,
            dataset,
            workers: config.launch.workers,
            min_workers: config.launch.workers,
            join_timeout: Duration::from_secs(60),
            heartbeat_timeout: Duration::from_secs(5),
            progress_timeout: Duration::from_secs(600),
            stall_timeout: Duration::from_secs(1800),
            max_restarts: 100,
            checkpoint_url: None,
            env: Vec::new(),
            audit: false,
            param_digest: false,
            config,
        }
    }

    /// `checkpoints/` of the job folder.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }

    /// The checkpoint root's URL.
    pub fn checkpoint_root(&self) -> anyhow::Result<String> {
        match &self.checkpoint_url {
            Some(url) => Ok(url.clone()),
            None => path_str(&self.checkpoint_dir()),
        }
    }

    /// The metrics file of worker `i`.
    pub fn metrics_file(&self, i: u32) -> PathBuf {
        self.dir.join("metrics").join(format!("worker-{i}.jsonl"))
    }

    /// The audit file of worker `i`.
    pub fn audit_file(&self, i: u32) -> PathBuf {
        self.dir.join("audit").join(format!("worker-{i}.jsonl"))
    }

    /// The log of a process (`coordinator` or `worker-<i>`).
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }
}

/// The running processes.
#[derive(Debug)]
pub struct LocalCluster {
    spec: ClusterSpec,
    grpc: SocketAddr,
    http: SocketAddr,
    coordinator: Option<Child>,
    coordinator_env: Vec<(String, String)>,
    workers: Vec<Option<Child>>,
}

/// A child that exited.
#[derive(Debug, Clone)]
pub struct Exited {
    /// `coordinator` or `worker-<i>`.
    pub name: String,
    /// How it ended.
    pub status: ExitStatus,
}

impl LocalCluster {
    /// Writes the configuration files and starts the coordinator, then the workers.
    pub fn start(spec: ClusterSpec) -> anyhow::Result<Self> {
        for sub in ["logs", "metrics", "audit", "config"] {
            let d = spec.dir.join(sub);
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let token = spec.dir.join("config").join("token");
        if !token.exists() {
            let mut bytes = [0u8; 24];
            rand::rng().fill(&mut bytes);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            std::fs::write(&token, hex).with_context(|| format!("writing {}", token.display()))?;
        }
        let grpc = free_port()?;
        let http = free_port()?;
        write_coordinator_config(&spec, &token, grpc, http)?;
        for i in 0..spec.workers {
            write_worker_config(&spec, &token, grpc, i)?;
        }
        let mut cluster = Self {
            workers: (0..spec.workers).map(|_| None).collect(),
            spec,
            grpc,
            http,
            coordinator: None,
            coordinator_env: Vec::new(),
        };
        cluster.start_coordinator()?;
        for i in 0..cluster.spec.workers {
            cluster.start_worker(i)?;
        }
        Ok(cluster)
    }

    /// The spec.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// The coordinator's HTTP address (`/status`, `/metrics`).
    pub fn http_address(&self) -> SocketAddr {
        self.http
    }

    /// Starts (or restarts) the coordinator and waits until it accepts connections.
    pub fn start_coordinator(&mut self) -> anyhow::Result<()> {
        let config = self.spec.dir.join("config").join("coordinator.toml");
        let env: Vec<(&str, &str)> = self
            .coordinator_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let child = self.spawn("coordinator", "coordinator", &config, &env)?;
        self.coordinator = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect_timeout(&self.grpc, Duration::from_millis(200)).is_err() {
            if let Some(e) = self.poll().into_iter().find(|e| e.name == "coordinator") {
                bail!(
                    "the coordinator exited ({}) at start:\n{}",
                    e.status,
                    self.log_tail("coordinator", 20)
                );
            }
            if Instant::now() > deadline {
                bail!("the coordinator did not start listening on {}", self.grpc);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Starts (or restarts) worker `i`.
    pub fn start_worker(&mut self, i: u32) -> anyhow::Result<()> {
        self.start_worker_with(i, &[])
    }

    /// Starts (or restarts) worker `i` with extra environment variables (a failpoint).
    pub fn start_worker_with(&mut self, i: u32, env: &[(&str, &str)]) -> anyhow::Result<()> {
        let name = format!("worker-{i}");
        let config = self.spec.dir.join("config").join(format!("{name}.toml"));
        let child = self.spawn("worker", &name, &config, env)?;
        self.workers[i as usize] = Some(child);
        Ok(())
    }

    /// Starts (or restarts) the coordinator with extra environment variables (a failpoint), and
    /// waits until it accepts connections.
    pub fn start_coordinator_with(&mut self, env: &[(&str, &str)]) -> anyhow::Result<()> {
        self.coordinator_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.start_coordinator()
    }

    fn spawn(
        &self,
        command: &str,
        name: &str,
        config: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Child> {
        let log_path = self.spec.log_file(name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let err = log.try_clone().context("duplicating the log handle")?;
        let mut cmd = Command::new(&self.spec.exe);
        for (k, v) in &self.spec.env {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.arg(command)
            .arg("--config")
            .arg(config)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            // Its own process group: a terminal's Ctrl-C reaches only the launcher, which then
            // stops the job in order.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name} ({})", self.spec.exe.display()))
    }

    /// `kill -9` of worker `i`.
    pub fn kill_worker(&mut self, i: u32) -> anyhow::Result<()> {
        if let Some(mut c) = self.workers[i as usize].take() {
            c.kill().context("killing a worker")?;
            c.wait().context("reaping a worker")?;
        }
        Ok(())
    }

    /// `kill -9` of the coordinator.
    pub fn kill_coordinator(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.coordinator.take() {
            c.kill().context("killing the coordinator")?;
            c.wait().context("reaping the coordinator")?;
        }
        Ok(())
    }

    /// Sends `signal` to every running worker.
    pub fn signal_workers(&self, signal: Signal) {
        for c in self.workers.iter().flatten() {
            let _ = kill(Pid::from_raw(c.id() as i32), signal);
        }
    }

    /// Children that exited since the last call (they are reaped).
    pub fn poll(&mut self) -> Vec<Exited> {
        let mut out = Vec::new();
        let mut check = |slot: &mut Option<Child>, name: String| {
            if let Some(c) = slot
                && let Ok(Some(status)) = c.try_wait()
            {
                *slot = None;
                out.push(Exited { name, status });
            }
        };
        check(&mut self.coordinator, "coordinator".into());
        for (i, slot) in self.workers.iter_mut().enumerate() {
            check(slot, format!("worker-{i}"));
        }
        out
    }

    /// Workers still running.
    pub fn running_workers(&self) -> usize {
        self.workers.iter().flatten().count()
    }

    /// Whether the coordinator is running.
    pub fn coordinator_running(&self) -> bool {
        self.coordinator.is_some()
    }

    /// Waits until every worker has exited (or `timeout`); returns the exits seen.
    pub fn wait_workers(&mut self, timeout: Duration) -> Vec<Exited> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while self.running_workers() > 0 && Instant::now() < deadline {
            seen.extend(self.poll());
            std::thread::sleep(Duration::from_millis(50));
        }
        seen
    }

    /// Stops everything: SIGTERM to the workers, then the coordinator, each given `grace` before
    /// SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        self.signal_workers(Signal::SIGTERM);
        self.wait_workers(grace);
        for i in 0..self.workers.len() {
            let _ = self.kill_worker(i as u32);
        }
        if let Some(c) = &self.coordinator {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            while self.coordinator_running() && Instant::now() < deadline {
                self.poll();
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.kill_coordinator();
    }

    /// The last `lines` lines of a process's log.
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(self.spec.log_file(name)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for c in self.workers.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(c) = &mut self.coordinator {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    l.local_addr().context("finding a free port")
}

fn write_coordinator_config(
    spec: &ClusterSpec,
    token: &Path,
    grpc: SocketAddr,
    http: SocketAddr,
) -> anyhow::Result<()> {
    let l = &spec.config.launch;
    let config = CoordinatorConfig {
        server: ServerConfig {
            listen: grpc,
            metrics_listen: http,
            token_file: Some(std::path::absolute(token)?),
            ..ServerConfig::default()
        },
        job: JobConfig {
            id: "fourm-launch".into(),
            dataset: spec.dataset.clone(),
            checkpoint_root: spec.checkpoint_root()?,
            seed: l.seed,
            total_steps: l.steps,
            checkpoint_every: l.checkpoint_every,
            keep_last: 3,
            stall_timeout: spec.stall_timeout,
            max_restarts: spec.max_restarts,
        },
        membership: MembershipConfig {
            min_workers: spec.min_workers,
            max_workers: spec.workers,
            join_timeout: spec.join_timeout,
            heartbeat_interval: Duration::from_millis(250),
            heartbeat_timeout: spec.heartbeat_timeout,
            progress_timeout: spec.progress_timeout,
        },
    };
    config.validate()?;
    write_toml(&spec.dir.join("config").join("coordinator.toml"), &config)
}

fn write_worker_config(
    spec: &ClusterSpec,
    token: &Path,
    grpc: SocketAddr,
    i: u32,
) -> anyhow::Result<()> {
    let config = spec.config.worker(
        &spec.dataset,
        CoordinatorSection {
            address: format!("http://{grpc}"),
            token_file: Some(std::path::absolute(token)?),
            tls_ca: None,
        },
        WorkerSection {
            id: Some(format!("worker-{i}")),
            collective_listen: "127.0.0.1:0".parse().expect("valid address"),
            device: spec.config.launch.device,
            device_index: i as usize,
            collective: spec.config.launch.collective,
            ..WorkerSection::default()
        },
        MetricsSection {
            log_every: spec.config.launch.log_every,
            metrics_file: Some(std::path::absolute(spec.metrics_file(i))?),
            audit_samples: spec
                .audit
                .then(|| std::path::absolute(spec.audit_file(i)))
                .transpose()?,
            param_digest: spec.param_digest,
            ..MetricsSection::default()
        },
    )?;
    write_toml(
        &spec.dir.join("config").join(format!("worker-{i}.toml")),
        &config,
    )
}

fn write_toml(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = toml::to_string(value).context("writing a configuration as TOML")?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn path_str(p: &Path) -> anyhow::Result<String> {
    let abs = std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))?;
    abs.to_str()
        .map(str::to_string)
        .with_context(|| format!("{} is not valid UTF-8", abs.display()))
}
