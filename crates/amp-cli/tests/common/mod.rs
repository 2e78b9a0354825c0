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
    let dir = std::env::temp_dir().join(format!("amp-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}
