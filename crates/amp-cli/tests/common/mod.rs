//! Helpers shared by the CLI tests: run the binary, read its output, write
//! input files.

// Each test binary uses some of these helpers, not all.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn amp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amp"))
        .args(args)
        .output()
        .expect("amp runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Writes `contents` to a file named `name` in this test process's own
/// temporary directory.
pub fn tmp(name: &str, contents: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("amp-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

/// `../shared/data` beside the checkout, or `None` (and a note) when it is
/// absent; under CI its absence is a broken checkout, not a reason to pass.
pub fn shared_data() -> Option<PathBuf> {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"));
    if p.is_dir() {
        Some(p)
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is absent but CI is set",
            p.display()
        );
        println!("skipping: {} is absent", p.display());
        None
    }
}

/// Runs amp with `args`, asserts it succeeded and parses its JSON output.
pub fn amp_json(args: &[&str]) -> serde_json::Value {
    let o = amp(args);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

/// [`amp_json`], with what amp said on standard error (its notes and
/// warnings).
pub fn amp_json_and_stderr(args: &[&str]) -> (serde_json::Value, String) {
    let o = amp(args);
    assert!(o.status.success(), "{}", stderr(&o));
    (serde_json::from_str(&stdout(&o)).unwrap(), stderr(&o))
}

/// Runs amp with `args`, asserts it succeeded and returns its standard
/// output: the text counterpart of [`amp_json`].
pub fn amp_text(args: &[&str]) -> String {
    let o = amp(args);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

/// Whether a plan (`amp plan --json`'s) on 2 + 2 nodes of two GPU types
/// (nodes 0-1 one type, 2-3 the other) runs one type's stages at two tp
/// degrees: more than two (type, tp) kinds over its stages.
pub fn has_a_type_at_two_degrees(plan: &serde_json::Value) -> bool {
    let mut kinds: Vec<(bool, usize)> = Vec::new();
    for s in plan["stages"].as_array().unwrap() {
        let r = s["replicas"][0].as_array().unwrap();
        let kind = (r[0]["node"].as_u64().unwrap() >= 2, r.len());
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    kinds.len() > 2
}

/// Whether a plan (`amp plan --json`'s) places its tensor-parallel groups
/// with tp not the fastest axis: on a cluster of nodes that each hold a
/// whole group, across nodes, where no engine's rank order launches it.
pub fn tp_not_innermost(plan: &serde_json::Value) -> bool {
    plan["tp"].as_u64() > Some(1)
        && !plan["placement"]["axis_order"]
            .as_str()
            .unwrap()
            .ends_with("tp")
}

/// `amp_json` of `base` followed by `extra`: one command's variants.
pub fn amp_json_with(base: &[&str], extra: &[&str]) -> serde_json::Value {
    amp_json(&[base, extra].concat())
}
