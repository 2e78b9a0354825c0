//! amp's own file of measured runs (`runs.toml`, read and checked by
//! `amp_data::runs_file`) as a dataset for `amp validate` and `amp fit`.
//!
//! The file names its inputs as `amp plan` takes them; each run's plan is
//! read by the same code as `amp eval`'s (`InputArgs::load_plan`) and
//! priced in the setup it records, with the analytic times of its own
//! micro-batch and setup.

use std::path::Path;

use amp_core::validate::{Dataset, Run};
use amp_data::runs_file::{parse, RunsSpec, SetupValue};
use anyhow::{Context, Result};
use clap::ValueEnum;

use crate::inputs::{AttentionArg, CostModelName, GeluArg, InputArgs};
use crate::setup_args::SetupArgs;

pub use amp_data::runs_file::FILE_NAME;

/// `spec` as a path beside the runs file when such a file exists there,
/// else as given (a zoo name, a cluster shorthand, an absolute path).
fn beside(dir: &Path, spec: &str) -> String {
    let p = dir.join(spec);
    if Path::new(spec).is_relative() && p.exists() {
        p.display().to_string()
    } else {
        spec.to_string()
    }
}

fn value_enum<T: ValueEnum>(origin: &str, key: &str, v: &str) -> Result<T> {
    T::from_str(v, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|x| x.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        anyhow::anyhow!(
            "{origin}: `{key} = \"{v}\"` is not one of {}",
            names.join(", ")
        )
    })
}

/// The `amp plan` inputs a runs file names, its paths taken beside it.
fn input_args(spec: &RunsSpec, dir: &Path, origin: &str) -> Result<InputArgs> {
    Ok(InputArgs {
        example: None,
        model: Some(beside(dir, &spec.model)),
        seq: spec.seq,
        attention: spec
            .attention
            .as_deref()
            .map(|v| value_enum::<AttentionArg>(origin, "attention", v))
            .transpose()?,
        gelu: spec
            .gelu
            .as_deref()
            .map(|v| value_enum::<GeluArg>(origin, "gelu", v))
            .transpose()?,
        cluster: Some(beside(dir, &spec.cluster)),
        no_analytic: spec.no_analytic,
        profile: spec.profile.iter().map(|p| dir.join(p)).collect(),
        cost_model: CostModelName::Amp,
        partition: None,
        calibration: None,
        sailor_data: None,
    })
}

/// The `[setup]` table as `amp plan`'s setup flags: `key = "v"` is
/// `--key v`, `key = true` the switch `--key`; `false` leaves a switch off
/// (but `fp32_allreduce = false`, which turns a default off).
fn setup_args(spec: &RunsSpec, origin: &str) -> Result<SetupArgs> {
    #[derive(clap::Parser)]
    struct Setup {
        #[command(flatten)]
        setup: SetupArgs,
    }
    let mut argv = vec!["[setup]".to_string()];
    for (key, value) in &spec.setup {
        let flag = format!("--{}", key.replace('_', "-"));
        match value {
            SetupValue::Text(v) => {
                argv.push(flag);
                argv.push(v.clone());
            }
            SetupValue::Switch(true) => argv.push(flag),
            SetupValue::Switch(false) if key == "fp32_allreduce" => {
                argv.push(format!("{flag}=false"))
            }
            SetupValue::Switch(false) => {}
        }
    }
    use clap::Parser;
    Setup::try_parse_from(&argv).map(|s| s.setup).map_err(|e| {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or("").trim_start_matches("error: ");
        anyhow::anyhow!(
            "{origin} [setup]: {first}; its keys are amp plan's training-setup flags without the dashes (optimizer_step = \"fused\", recompute = \"full\", sequence_parallel = true)"
        )
    })
}

/// `nvidia-smi`'s reading of a run of `plan` on `cluster` is at most what
/// the largest of its GPUs holds, where the cluster says: a reading above
/// it was written in another unit or for another run.
fn check_reading(
    cluster: &amp_core::cluster::Cluster,
    plan: &amp_core::plan::Plan,
    reading_bytes: Option<f64>,
) -> Result<()> {
    let Some(reading) = reading_bytes else {
        return Ok(());
    };
    let capacities: Option<Vec<u64>> = plan
        .stages
        .iter()
        .flat_map(|s| s.replicas.iter().flatten())
        .map(|d| cluster.nodes.get(d.node).and_then(|n| n.gpu_memory_bytes))
        .collect();
    let Some(largest) = capacities.and_then(|c| c.into_iter().max()) else {
        return Ok(());
    };
    if reading > largest as f64 {
        let mib = |b: f64| b / (1u64 << 20) as f64;
        anyhow::bail!(
            "`memory_used_mib = {:.0}` is more than any GPU of the plan holds ({:.0} MiB); \
             nvidia-smi's `memory.used` is in MiB (GiB x 1024, GB x 953.7)",
            mib(reading),
            mib(largest as f64)
        );
    }
    Ok(())
}

/// The dataset of the runs file at `path`, and what its inputs' readers
/// noted.
pub fn read(path: &Path) -> Result<amp_data::LoadedDataset> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {origin}"))?;
    let spec = parse(&text, &origin)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let args = input_args(&spec, dir, &origin)?;
    let setup = setup_args(&spec, &origin)?;
    let mut loaded = args
        .load()
        .with_context(|| format!("{origin}: reading the model, cluster and profiles it names"))?;
    let mut runs = Vec::with_capacity(spec.runs.len());
    for (i, r) in spec.runs.iter().enumerate() {
        let at = format!("{origin}, run {} (plan `{}`)", i + 1, r.plan);
        // Each run is priced as `amp eval` prices it alone: the analytic
        // model fills what the profile lacks at the run's micro-batch and
        // in its setup, so that runs of other setups or micro-batches do
        // not leave their fills behind for it.
        let given = loaded.profile.clone();
        let plan = args
            .load_plan(&mut loaded, &dir.join(&r.plan), r.rank, &setup, None)
            .with_context(|| at.clone())?;
        let filled = std::mem::replace(&mut loaded.profile, given);
        let profile = (filled != loaded.profile).then_some(filled);
        check_reading(&loaded.cluster, &plan, r.memory_used_bytes).with_context(|| at.clone())?;
        runs.push(Run {
            name: r.name.clone(),
            cluster: loaded.cluster.clone(),
            plan,
            outcome: r.outcome,
            measured_peak_bytes: r.memory_used_bytes,
            measured_grad_reduce_s: r.grad_reduce_s,
            profile,
        });
    }
    // Named after its folder, the file's stem when it is not `runs.toml`.
    let name = match path.file_name().and_then(|n| n.to_str()) {
        Some(FILE_NAME) | None => dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| origin.clone()),
        Some(n) => n.trim_end_matches(".toml").to_string(),
    };
    Ok(amp_data::LoadedDataset {
        dataset: Dataset {
            name,
            model: loaded.model,
            profile: loaded.profile,
            runs,
        },
        notes: loaded.notes,
    })
}
