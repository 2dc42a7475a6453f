//! `fourm data synth`, `render`, `inspect` and `train-tokenizer` as a user runs them.

use std::process::{Command, Output};

fn fourm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fourm"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the fourm binary runs")
}

fn ok(o: &Output) -> String {
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    out
}

#[test]
fn synth_then_inspect_and_render() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("synth");
    let url = root.to_str().unwrap();
    let out = ok(&fourm(&[
        "data",
        "synth",
        "--out",
        url,
        "--samples",
        "30",
        "--shard-samples",
        "10",
        "--resolution",
        "32",
        "--patch",
        "8",
        "--codebook-size",
        "16",
        "--fit-samples",
        "30",
        "--seed",
        "5",
    ]));
    assert!(out.contains("30 samples in 3 shards"), "{out}");
    assert!(
        out.contains("tok_semseg@32") && out.contains("vocab 16"),
        "{out}"
    );
    let out = ok(&fourm(&["data", "inspect", url]));
    assert!(out.contains("30 good sample(s)"), "{out}");
    let png = dir.path().join("s.png");
    let out = ok(&fourm(&[
        "data",
        "render",
        url,
        "--sample",
        "00000017",
        "--out",
        png.to_str().unwrap(),
    ]));
    assert!(out.contains("caption: a"), "{out}");
    assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");
    let missing = fourm(&[
        "data",
        "render",
        url,
        "--sample",
        "nope",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope"));
    let bad = fourm(&[
        "data",
        "synth",
        "--out",
        url,
        "--resolution",
        "30",
        "--patch",
        "8",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("patch"));
    let far = fourm(&["data", "synth", "--out", url, "--zoom", "0.1"]);
    assert!(!far.status.success());
    assert!(String::from_utf8_lossy(&far.stderr).contains("zoom 0.1"));
}

#[test]
fn train_tokenizer_on_a_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "a large red sphere left of a small blue cube\na green cylinder\n",
    )
    .unwrap();
    let out_path = dir.path().join("tok.json");
    let out = ok(&fourm(&[
        "data",
        "train-tokenizer",
        "--corpus",
        corpus.to_str().unwrap(),
        "--out",
        out_path.to_str().unwrap(),
        "--vocab-size",
        "500",
        "--sentinels",
        "20",
        "--coord-bins",
        "10",
    ]));
    assert!(out.contains("trained on 2 texts"), "{out}");
    let t = fourm_masking::TextTokenizer::load(&out_path).unwrap();
    assert_eq!(t.sequence_tokens().sentinels.len(), 20);
    assert_eq!(t.token_to_id("v0=0"), Some(24));
}

#[test]
fn launch_refuses_a_dataset_written_with_other_settings() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("job").join("data");
    ok(&fourm(&[
        "data",
        "synth",
        "--out",
        data.to_str().unwrap(),
        "--samples",
        "16",
        "--shard-samples",
        "16",
        "--fit-samples",
        "16",
        "--resolution",
        "32",
        "--max-objects",
        "2",
    ]));
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[synthetic]\nsamples = 16\nshard_samples = 16\nresolution = 32\nval_samples = 0\n\
         max_objects = 3\nmin_objects = 2\nzoom = 1.0\n",
    )
    .unwrap();
    let out = fourm(&[
        "launch",
        "--config",
        config.to_str().unwrap(),
        "--out",
        dir.path().join("job").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("written with other settings"), "{err}");
    assert!(err.contains(r#""max_objects":2"#), "{err}");
    assert!(!err.contains("resolution"), "only what differs: {err}");
}
