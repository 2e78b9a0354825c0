//! amp's own file of measured runs, `runs.toml`: the plans a user ran on
//! their cluster and what each run measured. This module reads and checks
//! the file's text; the CLI resolves what it names (model, cluster,
//! profiles, plan files) and builds the dataset.
//!
//! ```toml
//! model = "llama3-8b"          # as amp plan's --model
//! seq = 4096                   # --seq
//! cluster = "cluster.toml"     # --cluster
//! profile = ["profile.toml"]   # --profile (optional)
//!
//! [[run]]
//! plan = "plans.json"          # amp plan --json output, or one plan
//! rank = 2                     # which of its plans (default 1)
//! iteration_s = 2.31           # or: out_of_memory = true
//! memory_used_mib = 61234      # optional: nvidia-smi's memory.used, largest over the GPUs
//! grad_reduce_s = 0.2          # optional: the gradient reduction's measured time
//! ```

use amp_core::error::{AmpError, Result};
use amp_core::validate::Outcome;
use serde::Deserialize;

/// The file name amp looks for in a folder of runs.
pub const FILE_NAME: &str = "runs.toml";

/// Most runs one file may hold: every run is priced on every step of
/// `amp fit`'s grid, so this bounds its time.
pub const MAX_RUNS: usize = 4096;

/// Bytes in one MiB, the unit `nvidia-smi` reports memory in.
const MIB: f64 = 1024.0 * 1024.0;

/// A runs file's contents, checked: what to load, and the runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RunsSpec {
    /// `--model`: a zoo name or a file beside the runs file.
    pub model: String,
    /// `--seq`.
    pub seq: Option<u64>,
    /// `--cluster`: a shorthand, a built-in name or a file.
    pub cluster: String,
    /// `--profile` files, relative to the runs file.
    pub profile: Vec<String>,
    /// `--attention`, as written (the CLI checks the name).
    pub attention: Option<String>,
    /// `--gelu`, as written.
    pub gelu: Option<String>,
    /// `--no-analytic`.
    pub no_analytic: bool,
    /// The `[setup]` table: amp's training-setup flags without their
    /// dashes (`optimizer_step = "fused"`), for plans that record no setup;
    /// in key order. The CLI checks the names and values.
    pub setup: Vec<(String, SetupValue)>,
    /// The runs, in file order; at least one.
    pub runs: Vec<RunSpec>,
}

/// A value of the `[setup]` table: a flag's value, or a switch.
#[derive(Debug, Clone, PartialEq)]
pub enum SetupValue {
    /// `precision = "bf16"`, `schedule = "interleaved:2"`.
    Text(String),
    /// `sequence_parallel = true`.
    Switch(bool),
}

/// One run of a runs file.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// The label for reports (`plan#rank` when the file gives none).
    pub name: String,
    /// The plan file, relative to the runs file.
    pub plan: String,
    /// Which plan of an `amp plan --json` output (1-based).
    pub rank: usize,
    /// Completed with its measured seconds per iteration, or out of memory.
    pub outcome: Outcome,
    /// `nvidia-smi`'s memory reading at its largest over the GPUs, bytes.
    pub memory_used_bytes: Option<f64>,
    /// The measured gradient reduction, seconds per iteration.
    pub grad_reduce_s: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    model: String,
    seq: Option<u64>,
    cluster: String,
    #[serde(default)]
    profile: Vec<String>,
    attention: Option<String>,
    gelu: Option<String>,
    #[serde(default)]
    no_analytic: bool,
    #[serde(default)]
    setup: toml::Table,
    #[serde(default, rename = "run")]
    runs: Vec<RawRun>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    name: Option<String>,
    plan: String,
    rank: Option<usize>,
    iteration_s: Option<f64>,
    #[serde(default)]
    out_of_memory: bool,
    memory_used_mib: Option<f64>,
    grad_reduce_s: Option<f64>,
}

/// What one run records happened; `Err` says what is wrong and what to
/// write instead.
fn outcome(r: &RawRun) -> std::result::Result<Outcome, String> {
    for (key, v) in [
        ("iteration_s", r.iteration_s),
        ("memory_used_mib", r.memory_used_mib),
    ] {
        if let Some(x) = v {
            if !(x.is_finite() && x > 0.0) {
                return Err(format!("`{key} = {x}` must be a positive number"));
            }
        }
    }
    if let Some(x) = r.grad_reduce_s {
        if !(x.is_finite() && x >= 0.0) {
            return Err(format!("`grad_reduce_s = {x}` must be 0 or more"));
        }
        // The reduction runs inside the iteration it was measured in.
        if let Some(s) = r.iteration_s.filter(|&s| x > s) {
            return Err(format!(
                "`grad_reduce_s = {x}` is longer than the iteration it is part of \
                 (`iteration_s = {s}`); both are seconds per iteration"
            ));
        }
    }
    if r.rank == Some(0) {
        return Err("`rank = 0`: ranks count from 1, as `amp plan` prints them".into());
    }
    match (r.iteration_s, r.out_of_memory) {
        (Some(s), false) => Ok(Outcome::Completed(s)),
        (None, true) if r.memory_used_mib.is_some() || r.grad_reduce_s.is_some() => Err(
            "a run that ran out of memory has no steady-state readings; drop \
             `memory_used_mib` and `grad_reduce_s`"
                .into(),
        ),
        (None, true) => Ok(Outcome::Failed),
        (Some(_), true) => Err(
            "gives both `iteration_s` and `out_of_memory = true`; a run either completed (its \
             iteration time) or ran out of memory"
                .into(),
        ),
        (None, false) => Err(
            "records no outcome: give `iteration_s` (the measured seconds per iteration) or \
             `out_of_memory = true`"
                .into(),
        ),
    }
}

/// Reads and checks a runs file's text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<RunsSpec> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        AmpError::invalid(
            origin,
            format!(
                "not an amp runs file: {}\n(it needs `model`, `cluster` and one [[run]] table \
                 per run with `plan` and `iteration_s` or `out_of_memory = true`; see README, \
                 \"Your own runs\")",
                e.to_string().trim_end()
            ),
        )
    })?;
    if raw.runs.is_empty() {
        return Err(AmpError::invalid(
            origin,
            "no [[run]] tables; add one per measured run, each with `plan` and `iteration_s`",
        ));
    }
    if raw.runs.len() > MAX_RUNS {
        return Err(AmpError::invalid(
            origin,
            format!(
                "{} runs, more than the {MAX_RUNS} one file may hold; split them over several files",
                raw.runs.len()
            ),
        ));
    }
    let mut setup = Vec::with_capacity(raw.setup.len());
    for (key, v) in &raw.setup {
        setup.push((
            key.clone(),
            match v {
                toml::Value::String(t) => SetupValue::Text(t.clone()),
                toml::Value::Integer(i) => SetupValue::Text(i.to_string()),
                toml::Value::Boolean(b) => SetupValue::Switch(*b),
                other => {
                    return Err(AmpError::invalid(
                        format!("{origin} [setup]"),
                        format!(
                            "`{key}` is not text or true/false (a TOML {} was given): give a flag's value as text (`precision = \"bf16\"`) or a switch as true or false",
                            other.type_str()
                        ),
                    ))
                }
            },
        ));
    }
    let mut runs = Vec::with_capacity(raw.runs.len());
    for (i, r) in raw.runs.iter().enumerate() {
        let at = format!("{origin}, run {} (plan `{}`)", i + 1, r.plan);
        let outcome = outcome(r).map_err(|m| AmpError::invalid(&at, m))?;
        runs.push(RunSpec {
            name: r.name.clone().unwrap_or_else(|| match r.rank {
                Some(k) => format!("{}#{k}", r.plan),
                None => r.plan.clone(),
            }),
            plan: r.plan.clone(),
            rank: r.rank.unwrap_or(1),
            outcome,
            memory_used_bytes: r.memory_used_mib.map(|m| m * MIB),
            grad_reduce_s: r.grad_reduce_s,
        });
    }
    Ok(RunsSpec {
        model: raw.model,
        seq: raw.seq,
        cluster: raw.cluster,
        profile: raw.profile,
        attention: raw.attention,
        gelu: raw.gelu,
        no_analytic: raw.no_analytic,
        setup,
        runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "model = \"gpt2\"\ncluster = \"1x4xT4\"\n";

    fn one(run: &str) -> Result<RunsSpec> {
        parse(
            &format!("{HEAD}[[run]]\nplan = \"p.json\"\n{run}"),
            "runs.toml",
        )
    }

    fn err(run: &str) -> String {
        one(run).unwrap_err().to_string()
    }

    #[test]
    fn a_run_reads_as_written() {
        let s = one("rank = 3\niteration_s = 1.5\nmemory_used_mib = 1024\ngrad_reduce_s = 0\n")
            .unwrap();
        assert_eq!(s.model, "gpt2");
        assert_eq!(s.cluster, "1x4xT4");
        let r = &s.runs[0];
        assert_eq!(r.name, "p.json#3");
        assert_eq!(r.rank, 3);
        assert_eq!(r.outcome, Outcome::Completed(1.5));
        assert_eq!(r.memory_used_bytes, Some(1024.0 * MIB));
        assert_eq!(r.grad_reduce_s, Some(0.0));
        let oom = one("out_of_memory = true\n").unwrap();
        assert_eq!(oom.runs[0].outcome, Outcome::Failed);
        assert_eq!(oom.runs[0].rank, 1);
        assert_eq!(oom.runs[0].name, "p.json");
    }

    #[test]
    fn a_run_records_exactly_one_outcome_with_sane_numbers() {
        assert!(err("iteration_s = 1.5\nout_of_memory = true\n").contains("both"));
        assert!(err("").contains("records no outcome"));
        for bad in ["0.0", "-1.0", "nan", "inf"] {
            assert!(
                err(&format!("iteration_s = {bad}\n")).contains("must be a positive number"),
                "{bad}"
            );
        }
        assert!(err("out_of_memory = true\nmemory_used_mib = 1000\n").contains("no steady-state"));
        assert!(err("iteration_s = 1.0\ngrad_reduce_s = -0.1\n").contains("0 or more"));
        assert!(err("iteration_s = 1.0\nrank = 0\n").contains("count from 1"));
        let e = err("iteration = 1.0\n");
        assert!(
            e.contains("unknown field `iteration`") && e.contains("Your own runs"),
            "{e}"
        );
        assert!(err("iteration_s = 1.0\niteration_s = 2.0\n").contains("duplicate key"));
    }

    #[test]
    fn the_setup_table_reads_as_flags() {
        let s = parse(
            &format!(
                "{HEAD}[setup]\noptimizer_step = \"fused\"\nsequence_parallel = true\nseq_chunks = 2\n[[run]]\nplan = \"p.json\"\niteration_s = 1.0\n"
            ),
            "r.toml",
        )
        .unwrap();
        assert_eq!(
            s.setup,
            vec![
                ("optimizer_step".into(), SetupValue::Text("fused".into())),
                ("seq_chunks".into(), SetupValue::Text("2".into())),
                ("sequence_parallel".into(), SetupValue::Switch(true)),
            ]
        );
        let e = parse(
            &format!(
                "{HEAD}[setup]\nprecision = [1]\n[[run]]\nplan = \"p.json\"\niteration_s = 1.0\n"
            ),
            "r.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("r.toml [setup]: `precision` is not text or true/false (a TOML array"),
            "{e}"
        );
    }

    #[test]
    fn a_file_holds_at_least_one_run_and_at_most_the_limit() {
        assert!(parse(HEAD, "r.toml")
            .unwrap_err()
            .to_string()
            .contains("no [[run]] tables"));
        let many = format!(
            "{HEAD}{}",
            "[[run]]\nplan = \"p.json\"\niteration_s = 1.0\n".repeat(MAX_RUNS + 1)
        );
        assert!(parse(&many, "r.toml")
            .unwrap_err()
            .to_string()
            .contains("split them"));
        let e = parse(
            &format!(
                "{HEAD}[[run]]\nplan = \"a.json\"\niteration_s = 1.0\n[[run]]\nplan = \"b.json\"\n"
            ),
            "r.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("r.toml, run 2 (plan `b.json`)"), "{e}");
    }
}
