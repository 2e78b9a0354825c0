//! Real host names for launch files: `--hosts` and `--hostfile`.

mod common;

use common::{amp, stderr, stdout, tmp};

const PLAN: &str = r#"{"micro_batch": 1, "num_micro_batches": 8, "stages": [
 {"first_layer": 0, "end_layer": 17, "replicas": [[{"node": 0, "gpu": 0}, {"node": 0, "gpu": 1}]]},
 {"first_layer": 17, "end_layer": 35, "replicas": [[{"node": 1, "gpu": 0}, {"node": 1, "gpu": 1}]]}]}"#;

fn export(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let plan = tmp("hosts-plan.json", PLAN);
    let mut args = vec![
        "export",
        plan.to_str().unwrap(),
        "--model",
        "llama-3-8b",
        "--seq",
        "8192",
        "--cluster",
        "2x2xH100",
        "--to",
        "megatron",
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    amp(&args)
}

#[test]
fn hosts_flag_and_hostfile_name_the_nodes() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("amp-cli-hosts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = export(&dir.join("a"), &["--hosts", "gpu-a.example,gpu-b.example"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("launch.sh"), "{}", stdout(&o));
    let launch = std::fs::read_to_string(dir.join("a/launch.sh")).unwrap();
    assert!(launch.contains("--master_addr gpu-a.example"), "{launch}");
    let hostfile = std::fs::read_to_string(dir.join("a/hostfile")).unwrap();
    assert!(hostfile.contains("gpu-b.example slots=2"), "{hostfile}");

    // An MPI-style hostfile: the first word of each line, comments skipped.
    let hf = tmp(
        "hosts.txt",
        "# our nodes\nalpha slots=2\n\nbeta slots=2  # second\n",
    );
    let o = export(&dir.join("b"), &["--hostfile", hf.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let launch = std::fs::read_to_string(dir.join("b/launch.sh")).unwrap();
    assert!(launch.contains("--master_addr alpha"), "{launch}");

    let o = export(&dir.join("c"), &["--hosts", "only-one"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("1 host names given but the cluster has 2 nodes"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
