//! The shipped configuration template parses and validates; bad configurations are refused with
//! the key named, by the library and by the binary; every flag is documented in `--help`.

use std::path::Path;
use std::process::Command;

use fourm_coordinator::config::CoordinatorConfig;

fn template() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/coordinator.toml")
}

#[test]
fn the_template_is_valid() {
    let c = CoordinatorConfig::load(&template()).unwrap();
    c.validate().unwrap();
    assert_eq!(c.membership.min_workers, 2);
}

#[test]
fn bad_values_name_their_key() {
    let text = std::fs::read_to_string(template()).unwrap();
    let cases = [
        (
            "min_workers = 2 ",
            "min_workers = 9 ",
            "membership.max_workers",
        ),
        ("total_steps = 10000", "total_steps = 0", "job.total_steps"),
        (
            "heartbeat_timeout = \"15s\"",
            "heartbeat_timeout = \"1s\"",
            "membership.heartbeat_timeout",
        ),
        ("keep_last = 3", "keep_last = 3\nkeep_lats = 3", "keep_lats"),
        (
            "join_timeout = \"30s\"",
            "join_timeout = \"thirty\"",
            "join_timeout",
        ),
    ];
    for (from, to, key) in cases {
        assert!(text.contains(from), "template lost `{from}`");
        let broken = text.replace(from, to);
        let err = CoordinatorConfig::from_toml(&broken, Path::new("t.toml"))
            .and_then(|c| c.validate().map(|_| c));
        let msg = err.expect_err(key).to_string();
        assert!(
            msg.contains(key),
            "error for `{key}` does not name it: {msg}"
        );
    }
}

#[test]
fn the_binary_refuses_a_bad_file_and_documents_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(template())
            .unwrap()
            .replace("total_steps = 10000", "total_steps = -3"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fourm-coordinator"))
        .args(["--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("total_steps"), "{stderr}");
    let ok = Command::new(env!("CARGO_BIN_EXE_fourm-coordinator"))
        .args(["--check-config", "--config"])
        .arg(template())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let help = Command::new(env!("CARGO_BIN_EXE_fourm-coordinator"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--config",
        "--listen",
        "--metrics-listen",
        "--token-file",
        "--dataset",
        "--checkpoint-root",
        "--total-steps",
        "--min-workers",
        "--max-workers",
        "--log-json",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}
