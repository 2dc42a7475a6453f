//! Evaluation end to end: validation during training reaches the metrics files, the coordinator's
//! `/metrics` and `/status`, and the launch's `eval.svg`; `fourm eval` scores a checkpoint against
//! baselines; `fourm generate` writes previews and finds its dataset from any directory.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use common::{EXE, serial, spec_with};
use fourm::launch::cluster::LocalCluster;
use fourm::launch::progress::read_all;
use fourm_worker::metrics::MetricsLine;

/// The body of `GET path` from an HTTP/1.1 server at `addr`.
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("an HTTP response")?;
    ensure!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    Ok(body.to_string())
}

#[test]
fn validation_reaches_the_metrics_files_and_the_coordinator() -> anyhow::Result<()> {
    let _serial = serial();
    let dir = tempfile::tempdir()?;
    let extra = "[eval]\nevery = 5\nsamples = 8\nbatch = 4\nsteps = 2\n\
                 tasks = [\"rgb->semseg\", \"rgb->caption\"]\n";
    let mut cluster = LocalCluster::start(spec_with(dir.path(), 2, 10, 10, 4, 2, extra))?;
    // The coordinator serves until the job ends: read /metrics and /status while it runs.
    let addr = cluster.http_address();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut served: Option<(String, serde_json::Value)> = None;
    while cluster.running_workers() > 0 {
        ensure!(Instant::now() < deadline, "the job did not finish");
        for exit in cluster.poll() {
            ensure!(
                exit.name == "coordinator" || exit.status.success(),
                "{} failed:\n{}",
                exit.name,
                cluster.log_tail(&exit.name, 30)
            );
        }
        if let Ok(metrics) = http_get(addr, "/metrics")
            && metrics.contains("fourm_eval{")
            && let Ok(status) = http_get(addr, "/status")
        {
            served = Some((metrics, serde_json::from_str(&status)?));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines: Vec<MetricsLine> = read_all(cluster.spec());
    let mut evaluated: Vec<(u64, u64)> = lines
        .iter()
        .filter(|l| !l.eval.is_empty())
        .map(|l| (l.step, l.eval.len() as u64))
        .collect();
    evaluated.sort();
    ensure!(
        evaluated.iter().map(|e| e.0).collect::<Vec<_>>() == [5, 5, 10, 10],
        "validation on both ranks at steps 5 and 10, got {evaluated:?}"
    );
    let last = lines
        .iter()
        .rev()
        .find(|l| !l.eval.is_empty())
        .map(|l| l.eval.clone())
        .context("no validation")?;
    for key in [
        "held_out/total",
        "held_out/tok_semseg@32",
        "rgb->semseg/miou",
        "rgb->caption/attribute_accuracy",
    ] {
        let v = last
            .get(key)
            .with_context(|| format!("no {key} in {last:?}"))?;
        ensure!(v.is_finite(), "{key} = {v}");
    }
    // Ranks evaluate sharded and all-reduce: every rank logs the same numbers.
    let at_10: Vec<_> = lines
        .iter()
        .filter(|l| l.step == 10)
        .map(|l| l.eval.clone())
        .collect();
    ensure!(at_10.len() == 2 && at_10[0] == at_10[1], "{at_10:?}");

    let (metrics, status) = served.context("/metrics never showed validation")?;
    let step = status["eval_step"]
        .as_u64()
        .context("/status has no eval_step")?;
    let logged = &lines
        .iter()
        .find(|l| l.rank == 0 && l.step == step && !l.eval.is_empty())
        .with_context(|| format!("no validation logged at step {step}"))?
        .eval;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("fourm_eval{metric=\"held_out/total\"}"))
        .with_context(|| format!("no held-out loss in /metrics:\n{metrics}"))?;
    let value: f64 = line.rsplit(' ').next().context("a value")?.parse()?;
    ensure!(
        (value - logged["held_out/total"]).abs() < 1e-9,
        "/metrics {value} vs the metrics file {}",
        logged["held_out/total"]
    );
    ensure!(
        status["eval"]["rgb->semseg/miou"].as_f64() == logged.get("rgb->semseg/miou").copied(),
        "{status}"
    );
    Ok(())
}

/// Width, height, bit depth and colour type of a PNG file.
fn png_header(path: &Path) -> anyhow::Result<(u32, u32, u8, u8)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        bytes.len() > 26 && &bytes[1..4] == b"PNG",
        "{} is not a PNG",
        path.display()
    );
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    Ok((be(16), be(20), bytes[24], bytes[25]))
}

/// Runs the `fourm` command `args` in `cwd`; returns its stdout.
fn fourm(cwd: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(EXE).current_dir(cwd).args(args).output()?;
    ensure!(
        out.status.success(),
        "fourm {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn launch_validates_and_eval_and_generate_work_from_anywhere() -> anyhow::Result<()> {
    let _serial = serial();
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("quick.toml");
    std::fs::write(
        &config,
        "[launch]\nworkers = 2\nsteps = 10\ncheckpoint_every = 10\nlog_every = 5\n\
         [synthetic]\nsamples = 64\nshard_samples = 32\nresolution = 32\nval_samples = 8\n\
         [model]\npreset = \"debug\"\ndim = 32\nencoder_depth = 1\ndecoder_depth = 1\nheads = 2\n\
         [data]\nalphas = \"uniform\"\ninput_tokens = 32\ntarget_tokens = 32\n\
         [train]\nbatch_size = 4\nwarmup_steps = 2\n\
         [eval]\nevery = 5\nsamples = 8\nbatch = 8\nsteps = 2\n",
    )?;
    // A relative job folder: the checkpoint records its dataset as `job/data`.
    let config = config.to_str().context("utf-8")?;
    let summary = fourm(dir.path(), &["launch", "--config", config, "--out", "job"])?;
    ensure!(summary.contains("validation"), "{summary}");
    let svg = std::fs::read_to_string(dir.path().join("job/eval.svg"))?;
    ensure!(
        svg.contains("held_out") && svg.contains("miou"),
        "eval.svg: {svg:.400}"
    );
    let loss = std::fs::read_to_string(dir.path().join("job/loss.svg"))?;
    ensure!(
        loss.contains("tok_semseg@32"),
        "loss.svg has no per-modality curves"
    );

    // From another directory, with only the checkpoint named.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere)?;
    let checkpoints = dir.path().join("job/checkpoints");
    let checkpoints = checkpoints.to_str().context("utf-8")?;
    let table = fourm(
        &elsewhere,
        &[
            "eval",
            "--checkpoint",
            checkpoints,
            "--samples",
            "8",
            "--steps",
            "2",
        ],
    )?;
    ensure!(table.contains("baseline"), "{table}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(elsewhere.join("eval/eval.json"))?)?;
    ensure!(report["samples"] == 8, "{}", report["samples"]);
    let tasks: Vec<&str> = report["tasks"]
        .as_array()
        .context("tasks")?
        .iter()
        .filter_map(|t| t["task"].as_str())
        .collect();
    ensure!(
        tasks
            == [
                "rgb->depth",
                "rgb->semseg",
                "rgb->normal",
                "rgb->caption",
                "caption->rgb",
                "rgb->det"
            ],
        "{tasks:?}"
    );
    for t in report["tasks"].as_array().context("tasks")? {
        for m in t["metrics"].as_array().context("metrics")? {
            ensure!(
                m["value"].is_number() && m["baseline"].is_number(),
                "{} {m}",
                t["task"]
            );
        }
    }
    for modality in ["caption", "tok_semseg@32", "total"] {
        ensure!(
            report["heldout_loss"][modality].is_number(),
            "no held-out loss of {modality}"
        );
    }
    let (_, _, depth, colour) = png_header(&elsewhere.join("eval/samples.png"))?;
    ensure!((depth, colour) == (8, 2), "samples.png is 8-bit RGB");

    // Generation from a held-out picture: raw outputs and previews beside them.
    let rgb = dir.path().join("job/data/val/raw/rgb");
    let picture = first_png_in_tars(&rgb, &dir.path().join("rgb.png"))?;
    let condition = format!("tok_rgb@32={}", picture.display());
    let listed = fourm(
        &elsewhere,
        &[
            "generate",
            "--checkpoint",
            checkpoints,
            "--condition",
            &condition,
            "--target",
            "tok_depth@32",
            "--target",
            "tok_semseg@32",
            "--target",
            "det",
            "--out",
            "gen",
        ],
    )?;
    let generated = elsewhere.join("gen");
    for (file, size) in [
        ("tok_depth_32.preview.png", 256),
        ("tok_semseg_32.preview.png", 256),
        ("det.preview.png", 256),
    ] {
        ensure!(listed.contains(file), "{file} not listed:\n{listed}");
        let (w, h, depth, colour) = png_header(&generated.join(file))?;
        ensure!(
            (w, h, depth, colour) == (size, size, 8, 2),
            "{file}: {w}x{h} {depth}-bit type {colour}"
        );
    }
    // The raw depth keeps its exact 16-bit values.
    let (_, _, depth, colour) = png_header(&generated.join("tok_depth_32.png"))?;
    ensure!((depth, colour) == (16, 0), "raw depth is 16-bit grey");
    Ok(())
}

/// Extracts the first PNG of the first raw shard in `dir` to `to`.
fn first_png_in_tars(dir: &Path, to: &Path) -> anyhow::Result<std::path::PathBuf> {
    let shard = dir.join("shard-00000.tar");
    let bytes = std::fs::read(&shard).with_context(|| format!("reading {}", shard.display()))?;
    let entries = fourm_data::read_tar(&shard.display().to_string(), &bytes::Bytes::from(bytes))?;
    let first = entries.first().context("an empty shard")?;
    std::fs::write(to, &first.data)?;
    Ok(to.to_path_buf())
}
