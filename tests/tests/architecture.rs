//! The crate graph of `ARCHITECTURE.md`, checked against what cargo resolves: every arrow between
//! workspace crates must be one the design allows, and some crates must never link some libraries
//! (the coordinator no burn, CUDA, tokenizers, image codecs or rayon; the data plane no burn; the
//! model nothing of networking or storage). Only normal dependencies count: what a crate's tests
//! or benchmarks use is not linked into it.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Workspace crate → the workspace crates it may depend on.
const ALLOWED: &[(&str, &[&str])] = &[
    ("fourm-proto", &[]),
    ("fourm-plan", &[]),
    ("fourm-process", &[]),
    ("fourm-model", &[]),
    ("fourm-collective", &[]),
    ("fourm-data", &["fourm-plan"]),
    ("fourm-masking", &["fourm-data", "fourm-plan"]),
    (
        "fourm-synth",
        &["fourm-data", "fourm-masking", "fourm-plan"],
    ),
    (
        "fourm-eval",
        &["fourm-data", "fourm-masking", "fourm-model", "fourm-synth"],
    ),
    (
        "fourm-coordinator",
        &["fourm-proto", "fourm-plan", "fourm-data", "fourm-process"],
    ),
    (
        "fourm-worker",
        &[
            "fourm-proto",
            "fourm-plan",
            "fourm-data",
            "fourm-masking",
            "fourm-model",
            "fourm-collective",
            "fourm-process",
            "fourm-eval",
            "fourm-synth",
        ],
    ),
    (
        "fourm",
        &[
            "fourm-proto",
            "fourm-plan",
            "fourm-data",
            "fourm-masking",
            "fourm-synth",
            "fourm-eval",
            "fourm-model",
            "fourm-collective",
            "fourm-process",
            "fourm-coordinator",
            "fourm-worker",
        ],
    ),
    ("fourm-tests", &["fourm"]),
];

/// Crate → libraries it must never link, directly or through anything it depends on. A name
/// ending in `*` is a prefix.
const NEVER: &[(&str, &[&str])] = &[
    (
        "fourm-coordinator",
        &["burn*", "cubecl*", "cudarc", "tokenizers", "png", "rayon"],
    ),
    ("fourm-data", &["burn*", "tokenizers", "png", "rayon"]),
    ("fourm-plan", &["burn*", "tokio", "object_store"]),
    ("fourm-masking", &["burn*", "png"]),
    ("fourm-synth", &["burn*"]),
    (
        "fourm-model",
        &[
            "tokio",
            "tonic",
            "object_store",
            "fourm-collective",
            "cudarc",
        ],
    ),
    ("fourm-proto", &["burn*", "object_store"]),
];

/// A dependency graph: package name → names of its normal dependencies.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The graph cargo builds for `krate` alone (its own feature resolution, this platform, normal
/// dependencies only), from `cargo tree`'s depth-prefixed listing.
fn tree(krate: &str) -> Graph {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "-p", krate, "-e", "normal", "--prefix", "depth"])
        .args(["--format", "{p}", "--offline"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {krate} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut graph = Graph::new();
    let mut stack: Vec<String> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let digits = line.chars().take_while(char::is_ascii_digit).count();
        let Ok(depth) = line[..digits].parse::<usize>() else {
            continue;
        };
        let name = line[digits..]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        stack.truncate(depth);
        if let Some(parent) = stack.last() {
            graph
                .entry(parent.clone())
                .or_default()
                .insert(name.clone());
        }
        graph.entry(name.clone()).or_default();
        stack.push(name);
    }
    graph
}

/// Every workspace crate's own graph.
fn trees() -> BTreeMap<String, Graph> {
    ALLOWED
        .iter()
        .map(|(krate, _)| (krate.to_string(), tree(krate)))
        .collect()
}

/// Everything `root` links (transitively).
fn closure(graph: &Graph, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![root.to_string()];
    while let Some(n) = stack.pop() {
        for d in graph.get(&n).into_iter().flatten() {
            if seen.insert(d.clone()) {
                stack.push(d.clone());
            }
        }
    }
    seen
}

/// Every way the crates' graphs break the design, one line each.
fn violations(trees: &BTreeMap<String, Graph>) -> Vec<String> {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut out = Vec::new();
    for (krate, graph) in trees {
        let Some(ok) = allowed.get(krate.as_str()) else {
            out.push(format!("{krate} is not in the design's crate table"));
            continue;
        };
        let direct = graph.get(krate).into_iter().flatten();
        for d in direct.filter(|d| d.starts_with("fourm")) {
            if !ok.contains(&d.as_str()) {
                out.push(format!("{krate} → {d} is not an allowed arrow"));
            }
        }
    }
    for (krate, never) in NEVER {
        let linked = closure(&trees[*krate], krate);
        for pattern in *never {
            let hit = |name: &&String| match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name.as_str() == *pattern,
            };
            for name in linked.iter().filter(hit) {
                out.push(format!("{krate} links {name} (never allowed)"));
            }
        }
    }
    out
}

#[test]
fn the_crate_graph_is_the_designed_one() {
    let found = violations(&trees());
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn a_planted_arrow_is_caught() {
    let mut trees = trees();
    assert!(violations(&trees).is_empty());
    // coordinator → burn, through a crate it may use.
    trees
        .get_mut("fourm-coordinator")
        .unwrap()
        .entry("fourm-plan".into())
        .or_default()
        .insert("burn-core".into());
    // data → model: not an arrow of the design.
    trees
        .get_mut("fourm-data")
        .unwrap()
        .entry("fourm-data".into())
        .or_default()
        .insert("fourm-model".into());
    let found = violations(&trees);
    assert!(
        found.contains(&"fourm-coordinator links burn-core (never allowed)".to_string()),
        "{found:?}"
    );
    assert!(
        found.contains(&"fourm-data → fourm-model is not an allowed arrow".to_string()),
        "{found:?}"
    );
}
