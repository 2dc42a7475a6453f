//! `fourm data index` and `fourm data inspect` as a user runs them: a good dataset passes, and
//! each kind of bad dataset makes the command exit non-zero naming the culprit.

use std::path::Path;
use std::process::{Command, Output};

use fourm_data::fixtures::{FixtureSpec, write_fixture};
use fourm_data::{DatasetStore, StoreConfig, read_tar, write_tar};

const SPEC: FixtureSpec = FixtureSpec {
    shards: 3,
    samples_per_shard: 4,
    crops: 2,
    grid: 3,
    seed: 3,
};

fn fourm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fourm"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the fourm binary runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A good dataset with its index, in a fresh directory.
fn dataset(with_index: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = DatasetStore::open(dir.path().to_str().unwrap(), StoreConfig::default()).unwrap();
    rt.block_on(write_fixture(&store, &SPEC, false)).unwrap();
    if !with_index {
        std::fs::remove_file(dir.path().join("index.json")).unwrap();
    }
    dir
}

/// Rewrites entry `entry` of `<modality>/shard-00001.tar` (`None` drops it).
fn rewrite(dir: &Path, modality: &str, entry: usize, edit: impl Fn(&[u8]) -> Option<Vec<u8>>) {
    let path = dir.join(modality).join("shard-00001.tar");
    let old = bytes::Bytes::from(std::fs::read(&path).unwrap());
    let files: Vec<(String, Vec<u8>)> = read_tar("t", &old)
        .unwrap()
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let data = if i == entry {
                edit(&e.data)?
            } else {
                e.data.to_vec()
            };
            Some((e.name.clone(), data))
        })
        .collect();
    std::fs::write(
        &path,
        write_tar(files.iter().map(|(n, d)| (n.as_str(), d.as_slice()))),
    )
    .unwrap();
}

fn key(sample: usize) -> String {
    SPEC.shard(1).samples[sample].key.clone()
}

/// Runs inspect on `dir` and checks it fails naming every `culprit` string.
fn assert_inspect_fails(dir: &Path, culprits: &[&str]) {
    let out = fourm(&["data", "inspect", dir.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "inspect passed a bad dataset:\n{stdout}\n{stderr}"
    );
    for c in culprits {
        assert!(stderr.contains(c), "stderr does not name {c:?}:\n{stderr}");
    }
}

#[test]
fn index_then_inspect_a_good_dataset() {
    let dir = dataset(false);
    let root = dir.path().to_str().unwrap();
    let out = fourm(&["data", "index", root, "--checksums"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("3 shards, 11 samples"), "{stdout}");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["shards"].as_array().unwrap().len(), 3);
    assert!(index["shards"][0]["sha256"]["caption"].is_string());

    let out = fourm(&["data", "inspect", root]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("(index.json)"), "{stdout}");
    assert!(stdout.contains("tok_rgb@224"), "{stdout}");
    assert!(stdout.contains("histogram (16 bins)"), "{stdout}");
    // 11 samples x 2 crops x 9 ids per token modality.
    assert!(stdout.contains("tok_depth@224: 198 ids"), "{stdout}");

    let out = fourm(&["data", "inspect", root, "--shard", "2", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success());
    assert_eq!(report["shards_read"], serde_json::json!([2]));
    assert_eq!(report["samples_read"], 4);

    let out = fourm(&["data", "inspect", root, "--shard", "9"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("shard 9 is not in the dataset index"));
}

#[test]
fn truncated_tar() {
    for with_index in [true, false] {
        let dir = dataset(with_index);
        let path = dir.path().join("tok_rgb@224").join("shard-00001.tar");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2 + 100]).unwrap();
        assert_inspect_fails(dir.path(), &["tok_rgb@224/shard-00001.tar"]);
    }
}

#[test]
fn corrupt_npy_header() {
    let dir = dataset(false);
    rewrite(dir.path(), "tok_depth@224", 1, |npy| {
        let mut npy = npy.to_vec();
        npy[0] = b'P';
        Some(npy)
    });
    let entry = format!("entry {}.npy", key(1));
    assert_inspect_fails(
        dir.path(),
        &["tok_depth@224/shard-00001.tar", &entry, "bad .npy file"],
    );
    // `index` refuses too, and names the shard.
    let out = fourm(&["data", "index", dir.path().to_str().unwrap()]);
    let stderr = text(&out).1;
    assert!(!out.status.success());
    assert!(
        stderr.contains("bad shard 1") && stderr.contains(&entry),
        "{stderr}"
    );
    assert!(!dir.path().join("index.json").exists());
    // --skip-bad indexes the good shards.
    let out = fourm(&["data", "index", dir.path().to_str().unwrap(), "--skip-bad"]);
    assert!(out.status.success());
    assert!(text(&out).0.contains("2 shards"));
}

#[test]
fn missing_key_in_one_modality() {
    let dir = dataset(false);
    rewrite(dir.path(), "det", 2, |_| None);
    let expected = format!("{:?}", Some(key(2)));
    assert_inspect_fails(dir.path(), &["det/shard-00001.tar", "sample 2", &expected]);
}

#[test]
fn token_id_at_or_above_the_vocabulary() {
    let dir = dataset(false);
    rewrite(dir.path(), "tok_rgb@224", 2, |npy| {
        let mut npy = npy.to_vec();
        let last = npy.len() - 2;
        npy[last..].copy_from_slice(&16_384i16.to_le_bytes());
        Some(npy)
    });
    let entry = format!("entry {}.npy", key(2));
    assert_inspect_fails(
        dir.path(),
        &[
            "tok_rgb@224/shard-00001.tar",
            &entry,
            "token id 16384",
            "0..16384",
        ],
    );
}

#[test]
fn unparseable_index() {
    let dir = dataset(true);
    std::fs::write(dir.path().join("index.json"), b"{\"format_version\": 1,").unwrap();
    let out = fourm(&["data", "inspect", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("index.json"), "{}", text(&out).1);
}
