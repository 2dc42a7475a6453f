//! Checks of the Kubernetes deployment (`deploy/`) against the programs it runs: every TOML file a
//! ConfigMap is generated from loads and validates with the binaries' own loaders (and passes
//! `--check-config`), and every command-line flag and `FOURM_*` variable the manifests give a
//! container is one its program knows. The schema validation of the manifests themselves is
//! `deploy/validate.sh` (kubectl kustomize + kubernetes-validate).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use fourm_coordinator::config::CoordinatorConfig;
use fourm_worker::config::WorkerConfig;
use serde_yaml_ng::Value;

const EXE: &str = env!("CARGO_BIN_EXE_fourm-test-node");

/// The `FOURM_*` variables a program reads: those of its flags (clap's `env`), read from its own
/// argument definitions so that this list can never drift from the program.
fn env_vars(command: clap::Command) -> BTreeSet<String> {
    command
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
        .collect()
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every file under `dir` whose name ends with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A `fourm-test-node` run (with no inherited FOURM_* variable), stdout and stderr together.
fn run(args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(EXE);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("FOURM_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("starting fourm-test-node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The `--long-flag` names in a text (without the dashes, without `=value`).
fn long_flags(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == '(')
        .filter_map(|word| word.strip_prefix("--"))
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// The flags a (sub)command's `--help` lists.
fn help_flags(subcommand: &[&str]) -> BTreeSet<String> {
    let mut args = subcommand.to_vec();
    args.push("--help");
    let (ok, text) = run(&args);
    assert!(ok, "{args:?} failed: {text}");
    long_flags(&text)
}

#[test]
fn config_files_load_and_validate() {
    let tomls = files(&deploy_dir(), ".toml");
    let (mut coordinators, mut workers) = (0, 0);
    for path in &tomls {
        let text = std::fs::read_to_string(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        let shown = path.display();
        if name.contains("coordinator") {
            let c = CoordinatorConfig::from_toml(&text, path)
                .unwrap_or_else(|e| panic!("{shown}: {e}"));
            c.validate().unwrap_or_else(|e| panic!("{shown}: {e}"));
            let (ok, out) = run(&[
                "coordinator",
                "--config",
                path.to_str().unwrap(),
                "--check-config",
            ]);
            assert!(ok, "{shown}: coordinator --check-config: {out}");
            coordinators += 1;
        } else if name.contains("worker") {
            let w = WorkerConfig::from_toml(&text, path).unwrap_or_else(|e| panic!("{shown}: {e}"));
            w.validate().unwrap_or_else(|e| panic!("{shown}: {e}"));
            let (ok, out) = run(&[
                "worker",
                "--config",
                path.to_str().unwrap(),
                "--check-config",
            ]);
            assert!(ok, "{shown}: worker --check-config: {out}");
            workers += 1;
        } else {
            panic!("{shown}: neither a coordinator nor a worker configuration");
        }
    }
    // The templates, the base and the two overlays.
    assert!(coordinators >= 4, "{coordinators} coordinator files");
    assert!(workers >= 4, "{workers} worker files");
}

/// A container of a manifest, as far as this test cares.
struct Container {
    origin: String,
    image: String,
    command: Vec<String>,
    args: Vec<String>,
    env: Vec<String>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => panic!("not a string: {other:?}"),
            })
            .collect(),
        None => Vec::new(),
        Some(other) => panic!("not a list: {other:?}"),
    }
}

fn collect_containers(v: &Value, origin: &str, out: &mut Vec<Container>) {
    match v {
        Value::Mapping(map) => {
            for (key, value) in map {
                let key = key.as_str().unwrap_or_default();
                if key == "containers" || key == "initContainers" {
                    for c in value.as_sequence().expect("containers are a list") {
                        let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
                        out.push(Container {
                            origin: format!("{origin} {key}/{name}"),
                            image: c
                                .get("image")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                            command: strings(c.get("command")),
                            args: strings(c.get("args")),
                            env: c
                                .get("env")
                                .and_then(Value::as_sequence)
                                .map(|env| {
                                    env.iter()
                                        .filter_map(|e| e.get("name")?.as_str().map(String::from))
                                        .collect()
                                })
                                .unwrap_or_default(),
                        });
                    }
                } else {
                    collect_containers(value, origin, out);
                }
            }
        }
        Value::Sequence(items) => {
            for i in items {
                collect_containers(i, origin, out);
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Program {
    Coordinator,
    Worker,
    Synth,
}

/// Which program a container runs: from its command, else from its image's entrypoint. `None`
/// for a container that runs none of them (or that a patch only partly describes).
fn program(c: &Container) -> Option<Program> {
    let command = c.command.join(" ");
    if command.contains("data synth") {
        Some(Program::Synth)
    } else if command.contains("fourm-worker") || command.contains("fourm worker") {
        Some(Program::Worker)
    } else if command.contains("fourm-coordinator") || command.contains("fourm coordinator") {
        Some(Program::Coordinator)
    } else if !c.command.is_empty() {
        None
    } else if c.image.contains("fourm-worker") {
        Some(Program::Worker)
    } else if c.image.contains("fourm-coordinator") {
        Some(Program::Coordinator)
    } else {
        None
    }
}

#[test]
fn manifest_flags_and_environment_exist() {
    let coordinator = help_flags(&["coordinator"]);
    let worker = help_flags(&["worker"]);
    let synth = help_flags(&["data", "synth"]);
    assert!(coordinator.contains("check-config") && worker.contains("coordinator"));
    assert!(synth.contains("samples"));
    let coordinator_env = env_vars(fourm_coordinator::cli::Args::command());
    let worker_env = env_vars(fourm_worker::cli::Args::command());
    let no_env = BTreeSet::new();
    assert!(coordinator_env.contains("FOURM_JOB_TOKEN") && worker_env.contains("FOURM_WORKER_ID"));

    let mut containers = Vec::new();
    let manifests = files(&deploy_dir().join("k8s"), ".yaml");
    for path in &manifests {
        let text = std::fs::read_to_string(path).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            collect_containers(&value, &path.display().to_string(), &mut containers);
        }
    }

    let mut seen = BTreeSet::new();
    for c in &containers {
        let line = format!("{} {}", c.command.join(" "), c.args.join(" "));
        let flags = long_flags(&line);
        let fourm_env: Vec<&String> = c.env.iter().filter(|e| e.starts_with("FOURM_")).collect();
        let Some(program) = program(c) else {
            assert!(
                flags.is_empty() && fourm_env.is_empty(),
                "{}: flags {flags:?} / variables {fourm_env:?} for an unknown program",
                c.origin
            );
            continue;
        };
        seen.insert(format!("{program:?}"));
        let (known, env) = match program {
            Program::Coordinator => (&coordinator, &coordinator_env),
            Program::Worker => (&worker, &worker_env),
            Program::Synth => (&synth, &no_env),
        };
        for flag in &flags {
            assert!(
                known.contains(flag),
                "{}: --{flag} is not a flag of {program:?}",
                c.origin
            );
        }
        for var in fourm_env {
            assert!(
                env.contains(var),
                "{}: {program:?} does not read {var}",
                c.origin
            );
        }
    }
    // The base's coordinator and workers, the demo's `fourm data synth`.
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["Coordinator", "Synth", "Worker"],
        "programs found in the manifests"
    );
}
