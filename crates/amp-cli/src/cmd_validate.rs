//! `amp validate`: compare a cost model's predictions with measured runs.
//!
//! Two directory layouts are recognised (a directory holding such
//! directories is searched one level down):
//! - AMP artifact: `measured/*.csv` (`micro_batch,tp,dp,pp,
//!   stage_boundaries,...,measured_s`) and `profiles/*.npy`; the CSV's file
//!   name names the experiment (homogeneous, het_cluster, het_model), which
//!   fixes the built-in model, cluster and global batch. Plans use the CSV's
//!   stage boundaries and the artifact's default placement.
//! - Sailor artifact: `profiles.json`, `llm_info.json`, `training/*.json`,
//!   `cluster_config.json`, `network/*.json` and
//!   `measured/<cluster>/<model>/**/plan_config_*.json`; runs are grouped by
//!   (cluster, model).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use amp_core::artifact::{parse_csv, profile_from_npy, Experiment, Measured};
use amp_core::cost::amp_paper::artifact_setup;
use amp_core::cost::amp_paper::AmpPaper;
use amp_core::cost::device::DeviceModel;
use amp_core::cost::CostModel;
use amp_core::placement::{DeviceGrid, Placement};
use amp_core::sailor;
use amp_core::search::plan_from_grid;
use amp_core::validate::{validate_dataset, Dataset, DatasetReport, ErrorStats, Outcome, Run};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use comfy_table::{presets::UTF8_BORDERS_ONLY, ContentArrangement, Table};
use serde::Serialize;

/// Version of the `--json` output; bumped on any incompatible change.
pub const JSON_SCHEMA_VERSION: u32 = 1;

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Dataset directories: AMP-artifact layout (measured/*.csv +
    /// profiles/*.npy) or Sailor layout (profiles.json, llm_info.json,
    /// training/, network/, cluster_config.json, measured/).
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
}

/// The cost model of that name; the runs' plans carry their setups.
fn cost_model(name: &str) -> Result<Box<dyn CostModel>> {
    match name {
        "amp-paper" => Ok(Box::new(AmpPaper::default())),
        "amp" => Ok(Box::new(DeviceModel::default())),
        _ => bail!("unknown cost model `{name}`; use amp or amp-paper"),
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    out.sort();
    Ok(out)
}

fn ext(p: &Path) -> String {
    p.extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

fn is_amp_layout(dir: &Path) -> bool {
    let m = dir.join("measured");
    m.is_dir()
        && sorted_entries(&m)
            .map(|v| v.iter().any(|p| ext(p) == "csv"))
            .unwrap_or(false)
}

fn is_sailor_layout(dir: &Path) -> bool {
    dir.join("profiles.json").is_file()
        && dir.join("llm_info.json").is_file()
        && dir.join("measured").is_dir()
}

/// The AMP-layout datasets of `dir`: one per measured CSV.
fn amp_datasets(dir: &Path) -> Result<Vec<(Dataset, Vec<String>)>> {
    let mut out = Vec::new();
    let npy: Vec<(String, Vec<u8>)> = match dir.join("profiles") {
        p if p.is_dir() => sorted_entries(&p)?
            .into_iter()
            .filter(|f| ext(f) == "npy")
            .map(|f| {
                Ok((
                    f.file_name().unwrap().to_string_lossy().to_string(),
                    std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?,
                ))
            })
            .collect::<Result<_>>()?,
        _ => Vec::new(),
    };
    let refs: Vec<(&str, &[u8])> = npy
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    for csv in sorted_entries(&dir.join("measured"))?
        .into_iter()
        .filter(|p| ext(p) == "csv")
    {
        let origin = csv.display().to_string();
        let stem = csv.file_stem().unwrap().to_string_lossy().to_string();
        let exp = Experiment::from_name(&stem).ok_or_else(|| {
            anyhow!("{origin}: the file name must name an AMP experiment: homogeneous.csv, het_cluster.csv or het_model.csv")
        })?;
        let mut notes = Vec::new();
        let profile = match profile_from_npy(&refs, exp.profile_model()) {
            Ok(p) => p,
            Err(_) => {
                notes.push(format!(
                    "no {}_*.npy in {}/profiles; used the embedded AMP profiles",
                    exp.profile_model(),
                    dir.display()
                ));
                exp.profile()
            }
        };
        let model = exp.model();
        let cluster = exp.cluster();
        let gb = exp.global_batch();
        let placement = Placement::artifact_default(&cluster);
        let mut runs = Vec::new();
        for (i, row) in parse_csv(&read(&csv)?, &origin)?.into_iter().enumerate() {
            let at = format!("{origin}:{}", i + 2);
            let outcome = match row.measured {
                Some(Measured::Seconds(s)) => Outcome::Completed(s),
                Some(Measured::Failed) => Outcome::Failed,
                None => {
                    notes.push(format!("{at}: no measured_s; row skipped"));
                    continue;
                }
            };
            let n = cluster.num_devices();
            if row.tp * row.dp * row.pp != n {
                notes.push(format!(
                    "{at}: tp x dp x pp = {} but the cluster has {n} GPUs; row skipped",
                    row.tp * row.dp * row.pp
                ));
                continue;
            }
            if !gb.is_multiple_of(row.micro_batch * row.dp) {
                notes.push(format!(
                    "{at}: global batch {gb} is not a multiple of micro_batch x dp; row skipped"
                ));
                continue;
            }
            if row.boundaries.last() != Some(&model.num_layers())
                || row.boundaries.first() != Some(&0)
            {
                notes.push(format!(
                    "{at}: stage boundaries must run from 0 to {}; row skipped",
                    model.num_layers()
                ));
                continue;
            }
            let grid = DeviceGrid::new(&cluster, row.tp, row.dp, row.pp, &placement);
            let plan = plan_from_grid(
                &grid,
                &row.boundaries,
                row.micro_batch,
                gb / (row.micro_batch * row.dp),
                // The artifact trained in fp16, 1F1B, without recomputation.
                &artifact_setup(),
            );
            runs.push(Run {
                name: format!(
                    "{stem}:{} mbs{} tp{} dp{} pp{}",
                    i + 2,
                    row.micro_batch,
                    row.tp,
                    row.dp,
                    row.pp
                ),
                cluster: cluster.clone(),
                plan,
                outcome,
                measured_peak_bytes: None,
                measured_grad_reduce_s: None,
            });
        }
        out.push((
            Dataset {
                name: format!("amp/{stem}"),
                model,
                profile,
                runs,
            },
            notes,
        ));
    }
    Ok(out)
}

/// Every `plan_config*.json` under `dir`, recursively, sorted.
fn plan_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for p in sorted_entries(dir)? {
        if p.is_dir() {
            plan_files(&p, out)?;
        } else if ext(&p) == "json"
            && p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("plan_config"))
        {
            out.push(p);
        }
    }
    Ok(())
}

/// The Sailor-layout datasets of `dir`: one per (cluster, model) directory.
fn sailor_datasets(dir: &Path) -> Result<Vec<(Dataset, Vec<String>)>> {
    let profiles = read(&dir.join("profiles.json"))?;
    let profiles_origin = dir.join("profiles.json").display().to_string();
    let llm_path = dir.join("llm_info.json");
    let llm = read(&llm_path)?;
    let mut training = BTreeMap::new();
    let tdir = dir.join("training");
    if tdir.is_dir() {
        for f in sorted_entries(&tdir)?
            .into_iter()
            .filter(|p| ext(p) == "json")
        {
            let t = sailor::parse_training(&read(&f)?, &f.display().to_string())?;
            training.insert(t.model.clone(), t);
        }
    }
    let cfg_path = dir.join("cluster_config.json");
    let gpus = if cfg_path.is_file() {
        sailor::parse_cluster_config(&read(&cfg_path)?, &cfg_path.display().to_string())?
    } else {
        BTreeMap::new()
    };
    let (intra_p, inter_p) = (
        dir.join("network/intra_node_bandwidths.json"),
        dir.join("network/inter_node_bandwidths.json"),
    );
    let network = sailor::Network::parse(
        &read(&intra_p)?,
        &intra_p.display().to_string(),
        &read(&inter_p)?,
        &inter_p.display().to_string(),
    )?;
    let measured = dir.join("measured");
    let mut files = Vec::new();
    plan_files(&measured, &mut files)?;
    // Group by the first two directories under measured/: cluster, model.
    let mut groups: BTreeMap<(String, String), Vec<PathBuf>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&measured).unwrap_or(&f);
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect();
        if parts.len() < 3 {
            bail!(
                "{}: expected measured/<cluster>/<model>/.../plan_config_*.json",
                f.display()
            );
        }
        groups
            .entry((parts[0].clone(), parts[1].clone()))
            .or_default()
            .push(f);
    }
    let mut out = Vec::new();
    for ((cluster_name, model_name), files) in groups {
        let name = format!("sailor/{cluster_name}/{model_name}");
        let t = sailor::match_model_name(&model_name, training.keys().map(|k| k.as_str()))
            .and_then(|k| training.get(k));
        let t = t.ok_or_else(|| {
            anyhow!(
                "{}: no training/*.json with \"model\": \"{model_name}\" (found: {}); add the model's training settings",
                dir.display(),
                training.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        let model = sailor::parse_model(&llm, &llm_path.display().to_string(), t)?;
        let mut profile = sailor::parse_profiles(&profiles, &profiles_origin, &t.model)?;
        // The runs' number format, which sizes their sends and all-reduces.
        profile.precision =
            sailor::training_precision(&llm, &llm_path.display().to_string(), &t.model)?;
        let setup = sailor::training_setup(profile.precision);
        let mut notes = Vec::new();
        if t.model != model_name {
            notes.push(format!(
                "note: measured/{cluster_name}/{model_name} read as model `{}` (its training/*.json)",
                t.model
            ));
        }
        profile.check_layers(model.num_layers(), &profiles_origin)?;
        let mut runs = Vec::new();
        for f in files {
            let origin = f.display().to_string();
            let rel = f
                .strip_prefix(&measured)
                .unwrap_or(&f)
                .display()
                .to_string();
            match sailor::parse_plan_config(&read(&f)?, &origin, &model, &gpus, &network) {
                Ok(mut run) => {
                    notes.extend(run.warnings.drain(..).map(|w| format!("warning: {w}")));
                    run.plan.setup = setup;
                    runs.push(Run {
                        name: rel,
                        cluster: run.cluster,
                        plan: run.plan,
                        // A run without a measured time did not complete.
                        outcome: run.measured_s.map_or(Outcome::Failed, Outcome::Completed),
                        measured_peak_bytes: run.max_mem_bytes,
                        measured_grad_reduce_s: run.grad_reduce_s,
                    });
                }
                Err(e) => notes.push(format!("skipped: {e}")),
            }
        }
        out.push((
            Dataset {
                name,
                model,
                profile,
                runs,
            },
            notes,
        ));
    }
    Ok(out)
}

fn datasets_of(dir: &Path, depth: usize) -> Result<Vec<(Dataset, Vec<String>)>> {
    let mut out = Vec::new();
    let (amp, sailor_l) = (is_amp_layout(dir), is_sailor_layout(dir));
    if amp {
        out.extend(amp_datasets(dir)?);
    }
    if sailor_l {
        out.extend(sailor_datasets(dir)?);
    }
    if !amp && !sailor_l && depth == 0 && dir.is_dir() {
        for sub in sorted_entries(dir)?.into_iter().filter(|p| p.is_dir()) {
            out.extend(datasets_of(&sub, 1)?);
        }
    }
    if out.is_empty() && depth == 0 {
        bail!(
            "{}: no dataset found; expected measured/*.csv with profiles/*.npy (AMP layout) or profiles.json, llm_info.json and measured/<cluster>/<model>/plan_config_*.json (Sailor layout)",
            dir.display()
        );
    }
    Ok(out)
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or("-".to_string(), |v| format!("{v:.digits$}"))
}

fn pct(e: &Option<ErrorStats>) -> String {
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
            let mut t = Table::new();
            t.load_preset(UTF8_BORDERS_ONLY)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_width(100)
                .set_header(vec![
                    "run",
                    "measured s",
                    "predicted s",
                    "err",
                    "measured GB",
                    "predicted GB",
                    "fits",
                ]);
            for d in &r.details {
                let err = match (d.predicted_s, d.measured_s) {
                    (Some(p), Some(m)) => format!("{:+.1}%", 100.0 * (p - m) / m),
                    _ => "-".into(),
                };
                t.add_row(vec![
                    d.name.clone(),
                    if d.failed {
                        "failed".into()
                    } else {
                        opt(d.measured_s, 3)
                    },
                    opt(d.predicted_s, 3),
                    err,
                    opt(d.measured_peak_bytes.map(|b| b / 1e9), 2),
                    opt(d.predicted_peak_bytes.map(|b| b / 1e9), 2),
                    if d.predicted_infeasible {
                        "no".into()
                    } else {
                        "yes".into()
                    },
                ]);
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
    let cost = cost_model(&args.cost_model)?;
    let mut datasets = Vec::new();
    for dir in &args.dirs {
        if !dir.exists() {
            bail!("{}: no such directory", dir.display());
        }
        datasets.extend(datasets_of(dir, 0)?);
    }
    let reports: Vec<DatasetReport> = datasets
        .iter()
        .map(|(d, notes)| {
            let mut r = validate_dataset(d, cost.as_ref());
            r.notes = notes.clone();
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
