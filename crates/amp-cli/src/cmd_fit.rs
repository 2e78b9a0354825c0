//! `amp fit`: fit the amp cost model's constants to measured runs and show
//! what the fit is worth on each set: neutral, in-sample and
//! leave-one-set-out figures side by side.

use std::io::Write;
use std::path::PathBuf;

use amp_core::cost::device::DeviceOptions;
use amp_core::cost::Calibration;
use amp_core::fit::{at_grid_edge, fit_report, uninformed, Fit, SetFigures};
use amp_core::validate::DatasetReport;
use anyhow::{bail, Context, Result};
use clap::Args;
use comfy_table::{presets::UTF8_BORDERS_ONLY, ContentArrangement, Table};
use serde::Serialize;

use crate::cmd_validate::{opt, pct, read_datasets};

/// Version of the `--json` output; bumped on any incompatible change.
pub const JSON_SCHEMA_VERSION: u32 = 1;

#[derive(Args, Debug)]
pub struct FitArgs {
    /// Dataset directories, as for `amp validate`: every dataset found is
    /// fitted on, and each is also left out in turn.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write the constants fitted on all the datasets to this JSON file, for
    /// `--calibration FILE` of plan, eval, export and validate.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also predict every run with the constants fitted on all the other
    /// runs (leave-one-run-out): what the fit is worth for a plan of the
    /// same cluster not yet run. One fit per run: seconds for tens of runs.
    #[arg(long)]
    pub leave_one_run_out: bool,
}

#[derive(Serialize)]
struct JsonOutput<'a> {
    schema_version: u32,
    fit: &'a Fit,
    neutral: Calibration,
    sets: &'a [SetFigures],
    /// Fitted constants at the end of their grid away from neutral.
    at_grid_edge: Vec<GridEdge>,
    /// Constants no run given depends on, kept neutral for want of data
    /// (`amp_core::fit::uninformed`).
    uninformed: Vec<&'static str>,
}

/// What a run must have for `constant` to matter to it, for the note on
/// constants the runs do not inform.
fn needs(constant: &str) -> &'static str {
    match constant {
        "per_sample_fixed_fraction" => "times from a per-sample profile (AMP's .npy)",
        "per_sample_tp_comm_fixed_fraction" => {
            "tensor parallelism and times from a per-sample profile"
        }
        "inter_node_efficiency" => "traffic between nodes",
        "framework_reserve_bytes" => "an out-of-memory verdict near a GPU's capacity",
        "allocator_cache_bytes" => "a memory reading",
        "host_staging_s_per_gb" => "receives rebuilt through the host (Sailor's engine)",
        _ => "data on it",
    }
}

/// A constant fitted at the end of its grid ([`at_grid_edge`]), and the
/// sets it was fitted on.
#[derive(Serialize)]
struct GridEdge {
    fitted_on: Vec<String>,
    constant: &'static str,
    value: f64,
}

/// Every constant at its grid's end: of the fit on all sets, then of each
/// leave-one-set-out fit.
fn grid_edges(fit: &Fit, sets: &[SetFigures]) -> Vec<GridEdge> {
    let mut out: Vec<GridEdge> = at_grid_edge(&fit.calibration)
        .into_iter()
        .map(|(constant, value)| GridEdge {
            fitted_on: fit.fitted_on.clone(),
            constant,
            value,
        })
        .collect();
    if sets.len() > 1 {
        for s in sets {
            let others: Vec<String> = sets
                .iter()
                .filter(|o| o.name != s.name)
                .map(|o| o.name.clone())
                .collect();
            for (constant, value) in at_grid_edge(&s.leave_one_set_out_calibration) {
                out.push(GridEdge {
                    fitted_on: others.clone(),
                    constant,
                    value,
                });
            }
        }
    }
    out
}

fn constant_rows(fit: &Fit, sets: &[SetFigures]) -> Table {
    let mut t = Table::new();
    let mut header = vec![
        "constant".to_string(),
        "neutral".to_string(),
        "fitted on all".to_string(),
    ];
    if sets.len() > 1 {
        header.extend(sets.iter().map(|s| format!("without {}", s.name)));
    }
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(120)
        .set_header(header);
    type Get = fn(&Calibration) -> String;
    let rows: [(&str, Get); 6] = [
        ("per_sample_fixed_fraction", |c| {
            format!("{}", c.per_sample_fixed_fraction)
        }),
        ("per_sample_tp_comm_fixed_fraction", |c| {
            format!("{}", c.per_sample_tp_comm_fixed_fraction)
        }),
        ("inter_node_efficiency", |c| {
            format!("{}", c.inter_node_efficiency)
        }),
        ("framework_reserve_bytes", |c| {
            format!("{:.2} GB", c.framework_reserve_bytes / 1e9)
        }),
        ("allocator_cache_bytes", |c| {
            format!("{:.2} GB", c.allocator_cache_bytes / 1e9)
        }),
        ("host_staging_s_per_gb", |c| {
            format!("{}", c.host_staging_s_per_gb)
        }),
    ];
    for (name, get) in rows {
        let mut cells = vec![
            name.to_string(),
            get(&Calibration::NEUTRAL),
            get(&fit.calibration),
        ];
        if sets.len() > 1 {
            cells.extend(sets.iter().map(|s| get(&s.leave_one_set_out_calibration)));
        }
        t.add_row(cells);
    }
    t
}

/// Runs whose fit is called wrong: completed but predicted not to fit, or
/// failed but predicted to fit.
fn fit_wrong(r: &DatasetReport) -> String {
    let wrong = r.completed_predicted_infeasible + (r.failed - r.failed_predicted_infeasible);
    format!("{wrong} of {}", r.runs)
}

fn figure_rows(sets: &[SetFigures]) -> Table {
    let by_run = sets.iter().any(|s| s.leave_one_run_out.is_some());
    let mut header = vec!["set", "metric", "neutral", "in-sample", "leave-one-set-out"];
    if by_run {
        header.push("leave-one-run-out");
    }
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(120)
        .set_header(header);
    type Metric = fn(&DatasetReport) -> String;
    let metrics: [(&str, Metric); 5] = [
        ("Spearman", |r| opt(r.spearman, 3)),
        ("top-1 regret", |r| {
            if r.top1_failed {
                "failed".into()
            } else {
                opt(r.top1_regret, 3)
            }
        }),
        ("time error mean / max", |r| pct(&r.time_error)),
        ("memory error mean / max", |r| pct(&r.memory_error)),
        ("fit called wrong", fit_wrong),
    ];
    for s in sets {
        for (i, (name, m)) in metrics.iter().enumerate() {
            let mut cells = vec![
                if i == 0 {
                    s.name.clone()
                } else {
                    String::new()
                },
                name.to_string(),
                m(&s.neutral),
                m(&s.in_sample),
                m(&s.leave_one_set_out),
            ];
            if by_run {
                cells.push(s.leave_one_run_out.as_ref().map_or("-".into(), m));
            }
            t.add_row(cells);
        }
    }
    t
}

pub fn run(args: FitArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
    let loaded = read_datasets(&args.dirs)?;
    if loaded.is_empty() {
        bail!("no measured datasets under the directories given; see `amp validate --help` for the layouts amp reads");
    }
    // As `amp plan` says what it read how: a warning, which the Python
    // package passes on.
    for d in &loaded {
        for n in &d.notes {
            writeln!(err, "warning: {}: {n}", d.dataset.name)?;
        }
    }
    let datasets: Vec<&amp_core::validate::Dataset> = loaded.iter().map(|d| &d.dataset).collect();
    let runs: usize = datasets.iter().map(|d| d.runs.len()).sum();
    if args.leave_one_run_out && runs > amp_core::fit::MAX_LEAVE_ONE_RUN_OUT_RUNS {
        bail!(
            "--leave-one-run-out fits once per run, and these sets hold {runs} runs (at most {} for it); leave it out, or fit on a sample of the runs",
            amp_core::fit::MAX_LEAVE_ONE_RUN_OUT_RUNS
        );
    }
    let (fit, sets) = fit_report(&datasets, &DeviceOptions::default(), args.leave_one_run_out);
    let uninformed = uninformed(&datasets, &DeviceOptions::default());
    if let Some(path) = &args.out {
        let json = serde_json::to_string_pretty(&fit.calibration)? + "\n";
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
        writeln!(err, "wrote the fitted constants to {}", path.display())?;
    }
    if args.json {
        let json = JsonOutput {
            schema_version: JSON_SCHEMA_VERSION,
            fit: &fit,
            neutral: Calibration::NEUTRAL,
            sets: &sets,
            at_grid_edge: grid_edges(&fit, &sets),
            uninformed: uninformed.clone(),
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "fitted on {} ({} calibrations priced)",
        fit.fitted_on.join(", "),
        fit.evaluations
    )?;
    writeln!(out, "{}", constant_rows(&fit, &sets))?;
    for e in grid_edges(&fit, &sets) {
        writeln!(
            out,
            "note: fitted on {}, {} is at the end of its grid ({}): the runs want a value past it, so it likely stands in for an effect the model lacks; the figures fitted with it show what that costs",
            e.fitted_on.join(" and "),
            e.constant,
            if e.constant.ends_with("_bytes") {
                format!("{:.2} GB", e.value / 1e9)
            } else {
                e.value.to_string()
            }
        )?;
    }
    for c in &uninformed {
        writeln!(
            out,
            "note: no run here depends on {c}, so it stays neutral for want of data: fit it on runs with {}",
            needs(c)
        )?;
    }
    if fit.calibration == Calibration::FITTED {
        writeln!(
            out,
            "these are the constants amp uses by default (--calibration fitted)"
        )?;
    } else {
        writeln!(
            out,
            "amp's defaults differ (they were fitted on other data); use these with --calibration FILE after --out FILE"
        )?;
    }
    writeln!(out, "{}", figure_rows(&sets))?;
    writeln!(
        out,
        "in-sample: constants fitted on every set above; leave-one-set-out: fitted on the other sets only (neutral when there are none)"
    )?;
    if args.leave_one_run_out {
        writeln!(
            out,
            "leave-one-run-out: each run predicted with the constants fitted on every other run, its own set's included"
        )?;
    } else if sets.len() == 1 {
        writeln!(
            out,
            "with one set there is no other to fit on: --leave-one-run-out predicts each run with the constants fitted on the others, what to expect for a plan of this cluster not yet run"
        )?;
    }
    Ok(())
}
