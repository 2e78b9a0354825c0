//! `amp validate`: compare a cost model's predictions with measured runs.
//!
//! This command reads the folders' files; `amp_data::find_datasets`
//! recognises the AMP and Sailor layouts and assembles the datasets, and
//! `amp_core::validate` scores them.

use std::io::Write;
use std::path::{Path, PathBuf};

use amp_core::cost::amp_paper::AmpPaper;
use amp_core::cost::device::{DeviceModel, DeviceOptions};
use amp_core::cost::CostModel;
use amp_core::validate::{validate_dataset, DatasetReport, ErrorStats};
use amp_data::DatasetFiles;

use crate::calibration_arg::read_calibration;
use crate::runs_file;
use anyhow::{bail, Context, Result};
use clap::Args;
use comfy_table::{presets::UTF8_BORDERS_ONLY, ContentArrangement, Table};
use serde::Serialize;

/// Version of the `--json` output; bumped on any incompatible change.
pub const JSON_SCHEMA_VERSION: u32 = 1;

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Measured runs: amp's own runs file (a folder's runs.toml, or the
    /// file itself: your plans' measured times, see README "Your own
    /// runs"), or folders in the AMP artifact's layout (measured/*.csv and
    /// profiles/*.npy) or Sailor's (profiles.json, llm_info.json, training/,
    /// network/, cluster_config.json, measured/).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Cost model: amp (per-device, the default) or amp-paper.
    #[arg(long, default_value = "amp")]
    pub cost_model: String,
    /// Also print one line per run.
    #[arg(long)]
    pub runs: bool,
    #[arg(long, help = crate::calibration_arg::HELP)]
    pub calibration: Option<String>,
}

/// The cost model of that name with the `--calibration` given (amp only);
/// the runs' plans carry their setups.
fn cost_model(name: &str, calibration: Option<&str>) -> Result<Box<dyn CostModel>> {
    match (name, calibration) {
        ("amp-paper", None) => Ok(Box::new(AmpPaper::default())),
        ("amp-paper", Some(_)) => bail!(
            "--calibration sets constants of the amp cost model; the amp-paper model has none. \
             Drop --calibration, or use --cost-model amp"
        ),
        ("amp", c) => Ok(Box::new(DeviceModel::new(DeviceOptions {
            calibration: c.map(read_calibration).transpose()?.unwrap_or_default(),
            ..Default::default()
        }))),
        _ => bail!("unknown cost model `{name}`; use amp or amp-paper"),
    }
}

/// Reads the files a dataset can hold (`.csv`, `.npy`, `.json`) under
/// `dir`, two folders deep beyond `measured/<cluster>/<model>/`, into memory
/// for [`amp_data::find_datasets`]: the only I/O of validation.
pub(crate) fn read_tree(dir: &Path) -> Result<DatasetFiles> {
    fn walk(base: &Path, dir: &Path, depth: usize, files: &mut DatasetFiles) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        entries.sort();
        for p in entries {
            if p.is_dir() {
                if depth < MAX_DEPTH {
                    walk(base, &p, depth + 1, files)?;
                }
                continue;
            }
            let ext = p
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            if !matches!(ext.as_str(), "csv" | "npy" | "json") {
                continue;
            }
            let rel: Vec<String> = p
                .strip_prefix(base)
                .unwrap_or(&p)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().to_string())
                .collect();
            let bytes =
                std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
            files.files.insert(rel.join("/"), bytes);
        }
        Ok(())
    }
    // A folder of dataset folders, then measured/<cluster>/<model>/N*/file.
    const MAX_DEPTH: usize = 6;
    let mut files = DatasetFiles {
        root: dir.display().to_string(),
        ..Default::default()
    };
    walk(dir, dir, 0, &mut files)?;
    Ok(files)
}

/// Every dataset under `dirs`, in order: a runs file given itself, a
/// folder's `runs.toml`, or the artifact layouts of a folder, with the
/// runs files of its immediate subfolders.
pub(crate) fn read_datasets(dirs: &[PathBuf]) -> Result<Vec<amp_data::LoadedDataset>> {
    let mut datasets = Vec::new();
    for dir in dirs {
        if dir.is_file() {
            datasets.push(runs_file::read(dir)?);
            continue;
        }
        if !dir.is_dir() {
            bail!(
                "{}: no such file or directory; give a folder of measured runs (the AMP or Sailor artifact's layout, or one holding amp's {}) or a runs file",
                dir.display(),
                runs_file::FILE_NAME
            );
        }
        let own = dir.join(runs_file::FILE_NAME);
        if own.is_file() {
            datasets.push(runs_file::read(&own)?);
            continue;
        }
        let mut subfolders: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .map(|e| e.map(|e| e.path().join(runs_file::FILE_NAME)))
            .collect::<std::io::Result<_>>()?;
        subfolders.retain(|p| p.is_file());
        subfolders.sort();
        let files = read_tree(dir)?;
        if amp_data::holds_layouts(&files) {
            datasets.extend(amp_data::find_datasets(&files)?);
        } else if subfolders.is_empty() {
            bail!(
                "{}: no measured runs found; expected amp's {} (your runs of amp's plans, see README \"Your own runs\"), measured/*.csv with profiles/*.npy (the AMP artifact's layout) or profiles.json, llm_info.json and measured/<cluster>/<model>/plan_config_*.json (Sailor's), in the folder or in its subfolders",
                dir.display(),
                runs_file::FILE_NAME
            );
        }
        for f in subfolders {
            datasets.push(runs_file::read(&f)?);
        }
    }
    Ok(datasets)
}

pub(crate) fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or("-".to_string(), |v| format!("{v:.digits$}"))
}

pub(crate) fn pct(e: &Option<ErrorStats>) -> String {
    e.map_or("-".to_string(), |e| {
        format!("{:.1}% / {:.1}%", 100.0 * e.mean, 100.0 * e.max)
    })
}

fn print_tables(out: &mut dyn Write, reports: &[DatasetReport], runs: bool) -> Result<()> {
    // One column per dataset, one row per metric: fits 100 columns for a
    // few datasets, where a row per dataset would not.
    let mut table = Table::new();
    let mut header = vec!["metric".to_string()];
    header.extend(reports.iter().map(|r| r.name.clone()));
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(100)
        .set_header(header);
    let row = |label: &str, f: &dyn Fn(&DatasetReport) -> String| {
        let mut cells = vec![label.to_string()];
        cells.extend(reports.iter().map(f));
        cells
    };
    table.add_row(row("runs (completed)", &|r| {
        let mut s = format!("{} ({})", r.runs, r.completed);
        if r.unpriced > 0 {
            s.push_str(&format!(", {} unpriced", r.unpriced));
        }
        s
    }));
    table.add_row(row("Spearman / Kendall", &|r| {
        format!("{} / {}", opt(r.spearman, 3), opt(r.kendall_tau_b, 3))
    }));
    table.add_row(row("top-1 regret", &|r| {
        if r.top1_failed {
            "failed".to_string()
        } else {
            opt(r.top1_regret, 3)
        }
    }));
    table.add_row(row("time error mean / max", &|r| pct(&r.time_error)));
    table.add_row(row("memory error mean / max", &|r| pct(&r.memory_error)));
    table.add_row(row("grad reduce error mean / max", &|r| {
        pct(&r.grad_reduce_error)
    }));
    table.add_row(row("completed, predicted infeasible", &|r| {
        r.completed_predicted_infeasible.to_string()
    }));
    table.add_row(row("failed, predicted infeasible", &|r| {
        format!("{} of {}", r.failed_predicted_infeasible, r.failed)
    }));
    writeln!(
        out,
        "cost model {}",
        reports.first().map_or("", |r| r.cost_model.as_str())
    )?;
    writeln!(out, "{table}")?;
    for r in reports {
        for n in &r.notes {
            writeln!(out, "{}: {n}", r.name)?;
        }
        if let Some(e) = r.details.iter().find_map(|d| d.error.as_ref()) {
            writeln!(
                out,
                "{}: {} run(s) not priced, e.g.: {e}",
                r.name, r.unpriced
            )?;
        }
    }
    if runs {
        for r in reports {
            // Phase columns only where the data records the phase.
            let phases = r.details.iter().any(|d| d.measured_grad_reduce_s.is_some());
            let mut header = vec![
                "run",
                "plan",
                "measured s",
                "predicted s",
                "err",
                "measured GB",
                "predicted GB",
            ];
            if phases {
                header.extend(["grad reduce: measured ms", "predicted ms"]);
            }
            header.extend(["peak GB", "fits"]);
            // One line per run, however wide: a listing to read or grep.
            let mut t = Table::new();
            t.load_preset(UTF8_BORDERS_ONLY)
                .set_content_arrangement(ContentArrangement::Disabled)
                .set_header(header);
            for d in &r.details {
                let err = match (d.predicted_s, d.measured_s) {
                    (Some(p), Some(m)) => format!("{:+.1}%", 100.0 * (p - m) / m),
                    _ => "-".into(),
                };
                let tp = d.tp.map_or("mixed".to_string(), |t| t.to_string());
                let mut row = vec![
                    d.name.clone(),
                    format!("tp {tp} dp {} pp {} mbs {}", d.dp, d.pp, d.micro_batch),
                    if d.failed {
                        "failed".into()
                    } else {
                        opt(d.measured_s, 3)
                    },
                    opt(d.predicted_s, 3),
                    err,
                    opt(d.measured_peak_bytes.map(|b| b / 1e9), 2),
                    opt(d.predicted_reading_bytes.map(|b| b / 1e9), 2),
                ];
                if phases {
                    row.push(opt(d.measured_grad_reduce_s.map(|s| s * 1e3), 1));
                    row.push(opt(d.predicted_grad_reduce_s.map(|s| s * 1e3), 1));
                }
                row.push(opt(d.predicted_peak_bytes.map(|b| b / 1e9), 2));
                row.push(if d.predicted_infeasible {
                    "no".into()
                } else {
                    "yes".into()
                });
                t.add_row(row);
            }
            writeln!(out, "{}", r.name)?;
            writeln!(out, "{t}")?;
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct JsonOutput<'a> {
    schema_version: u32,
    cost_model: &'a str,
    datasets: &'a [DatasetReport],
}

pub fn run(args: ValidateArgs, out: &mut dyn Write, _err: &mut dyn Write) -> Result<()> {
    let cost = cost_model(&args.cost_model, args.calibration.as_deref())?;
    let datasets = read_datasets(&args.dirs)?;
    let reports: Vec<DatasetReport> = datasets
        .iter()
        .map(|d| {
            let mut r = validate_dataset(&d.dataset, cost.as_ref());
            r.notes = d.notes.clone();
            r
        })
        .collect();
    if args.json {
        let json = JsonOutput {
            schema_version: JSON_SCHEMA_VERSION,
            cost_model: cost.name(),
            datasets: &reports,
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
    } else {
        print_tables(out, &reports, args.runs)?;
    }
    Ok(())
}
