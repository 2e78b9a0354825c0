//! `amp eval PLAN.json`: price one given plan.

use std::io::Write;
use std::path::PathBuf;

use amp_core::cost::{CostModel, DeviceMemory, Estimate, Inputs};
use amp_core::plan::{ModelRecord, Plan};
use amp_core::schedule::{busiest_stage, ending_stage, Timeline};
use anyhow::{bail, Result};
use clap::Args;
use comfy_table::{presets::UTF8_BORDERS_ONLY, ContentArrangement, Table};
use serde::Serialize;

use crate::inputs::{amp_model, InputArgs, Loaded};
use crate::setup_args::SetupArgs;
use amp_core::cost::Calibration;

/// Version of the `--json` output; bumped on any incompatible change (2:
/// the plan records its training setup).
pub const JSON_SCHEMA_VERSION: u32 = amp_core::plan::PLAN_SCHEMA_VERSION;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The plan: a plan JSON (`micro_batch`, `num_micro_batches`, `stages`
    /// with `first_layer`, `end_layer` and `replicas` as lists of
    /// {node, gpu}), an object holding one under `plan`, the output of
    /// `amp plan --json` (see --rank), or with --sailor-data a Sailor
    /// plan_config file.
    pub plan: PathBuf,
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Which plan of an `amp plan --json` file to price (1 = its fastest).
    #[arg(long, default_value_t = 1)]
    pub rank: usize,
    /// Print machine-readable JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Exit 0 even when the plan does not fit in memory.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub setup: SetupArgs,
    /// Also price the plan under every other set of constants amp ships
    /// (`neutral`, `amp-t4`, `sailor-gh200`, or `fitted`): the spread of
    /// its predicted time over constants fitted on two clusters that may
    /// not be like yours.
    #[arg(long)]
    pub sensitivity: bool,
}

/// The plan under one other set of shipped constants (--sensitivity).
#[derive(Serialize)]
struct JsonUnder {
    calibration: &'static str,
    fitted_on: &'static str,
    iteration_s: f64,
    fits_in_memory: Option<bool>,
}

#[derive(Serialize)]
struct JsonDevice<'a> {
    #[serde(flatten)]
    memory: &'a DeviceMemory,
    gpu_type: &'a str,
    fits: Option<bool>,
}

#[derive(Serialize)]
struct JsonOutput<'a> {
    schema_version: u32,
    model: &'a str,
    cluster: &'a str,
    cost_model: &'a str,
    global_batch: usize,
    iteration_s: f64,
    throughput_samples_per_s: f64,
    breakdown: &'a amp_core::cost::Breakdown,
    /// The pipeline stage `breakdown` describes: the one whose last step
    /// ends the iteration (absent where the cost model simulates no
    /// timeline, the amp-paper model).
    #[serde(skip_serializing_if = "Option::is_none")]
    breakdown_stage: Option<usize>,
    /// Each stage's forward and backward passes, seconds (its busiest
    /// replica's), in stage order; absent as `breakdown_stage` is.
    #[serde(skip_serializing_if = "Option::is_none")]
    stage_passes_s: Option<Vec<f64>>,
    /// None when the cost model has no memory model or a capacity is unknown.
    fits_in_memory: Option<bool>,
    memory: Vec<JsonDevice<'a>>,
    /// Part of each GPU's `peak_bytes` that PyTorch's allocator does not
    /// count (`torch.cuda.max_memory_allocated`): the framework reserve
    /// (CUDA context, NCCL buffers, fragmentation), bytes; absent without a
    /// memory model.
    #[serde(skip_serializing_if = "Option::is_none")]
    framework_reserve_bytes: Option<f64>,
    /// What a device reading (`nvidia-smi`) shows beyond each GPU's
    /// `peak_bytes`: the caching allocator's free blocks, bytes; absent
    /// without a memory model.
    #[serde(skip_serializing_if = "Option::is_none")]
    allocator_cache_bytes: Option<f64>,
    plan: &'a Plan,
    /// The model the plan was priced for (read back by `amp eval` and
    /// `amp export` when this output is given as the plan).
    made_for: ModelRecord,
    /// Where the compute times of the plan's GPU types come from, as
    /// `amp plan --json`'s `compute_sources` (measured, or the analytic
    /// model's).
    compute_sources: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sensitivity: Option<Vec<JsonUnder>>,
}

const GIB: f64 = (1u64 << 30) as f64;

/// Whether every device fits: None when some capacity (or the memory model)
/// is missing and nothing overflows.
fn fits(est: &Estimate) -> Option<bool> {
    if est.first_overflow().is_some() {
        return Some(false);
    }
    (!est.memory.is_empty() && est.memory.iter().all(|m| m.capacity_bytes.is_some()))
        .then_some(true)
}

/// What the breakdown's stage is, and the busiest stage beside it: in a
/// 1F1B pipeline the first stage ends the iteration, and its "bubble" is
/// mostly its wait for the others' work, not idle GPUs everywhere.
fn stage_lines(loaded: &Loaded, plan: &Plan, timeline: &Timeline) -> Vec<String> {
    let work = timeline.stage_work();
    let (Some(ending), Some(busiest)) = (ending_stage(&work), busiest_stage(&work)) else {
        return Vec::new();
    };
    if ending >= plan.pp() || busiest >= plan.pp() {
        return Vec::new();
    }
    let mut lines = vec![format!(
        "(the parts above are stage {ending}'s ({}), whose last step ends the iteration; its bubble is its wait for the other stages)",
        loaded
            .cluster
            .gpu_types_of(plan.rank_stages()[ending].devices())
            .join(", ")
    )];
    let passes_s = work[busiest].passes_s;
    let pct = if timeline.iteration_s > 0.0 {
        100.0 * passes_s / timeline.iteration_s
    } else {
        0.0
    };
    lines.push(format!(
        "(busiest stage: {busiest} ({}), forward and backward passes {passes_s:.4} s, {pct:.1} % of the iteration)",
        loaded
            .cluster
            .gpu_types_of(plan.rank_stages()[busiest].devices())
            .join(", ")
    ));
    lines
}

fn print_text(
    out: &mut dyn Write,
    loaded: &Loaded,
    plan: &Plan,
    est: &Estimate,
    timeline: Option<&Timeline>,
    cost_model: &dyn CostModel,
) -> Result<()> {
    let calibration = cost_model.calibration();
    let cost_model = cost_model.name();
    let b = &est.breakdown;
    let gb = plan.global_batch();
    writeln!(
        out,
        "{} on {} ({} of {} GPUs), {}, cost model {cost_model}",
        loaded.model.name,
        loaded.cluster.name,
        plan.devices().count(),
        loaded.cluster.num_devices(),
        crate::cmd_plan::seq_label(&loaded.model, &plan.setup)
    )?;
    let tps: Vec<String> = plan.rank_stages().iter().map(|s| s.tp_label()).collect();
    writeln!(
        out,
        "plan: pp {}, dp {}, tp per stage [{}], micro-batch {} x {} = global batch {gb}, boundaries {:?}",
        plan.pp(),
        plan.dp(),
        tps.join(", "),
        plan.micro_batch,
        micro_batches_label(plan),
        plan.boundaries()
    )?;
    writeln!(out, "setup: {}", plan.setup.summary())?;
    if let Some(note) = crate::cmd_plan::blocks_note(&loaded.model, &plan.setup) {
        writeln!(out, "{note}")?;
    }
    for s in plan_compute_sources(loaded, plan) {
        writeln!(out, "compute times: {s}")?;
    }
    for g in loaded.defined_gpus() {
        writeln!(out, "gpu {g}")?;
    }
    writeln!(
        out,
        "iteration: {:.4} s, throughput {:.2} samples/s",
        est.iteration_s,
        gb as f64 / est.iteration_s
    )?;
    let pct = |x: f64| {
        if est.iteration_s > 0.0 {
            100.0 * x / est.iteration_s
        } else {
            0.0
        }
    };
    for (name, v) in [
        ("compute", b.compute_s),
        ("pipeline bubble", b.bubble_s),
        ("pipeline sends", b.pipeline_send_s),
        ("tensor-parallel comm", b.tp_comm_s),
        ("data-parallel all-reduce", b.dp_allreduce_s),
        ("optimizer", b.optimizer_s),
    ] {
        writeln!(out, "  {name:<26}{v:>10.4} s {:>6.1} %", pct(v))?;
    }
    if let Some(t) = timeline.filter(|_| plan.pp() > 1) {
        for line in stage_lines(loaded, plan, t) {
            writeln!(out, "  {line}")?;
        }
    }
    if plan.setup.reduces_every_micro_batch(plan.pp()) && plan.dp() > 1 {
        writeln!(
            out,
            "  (data-parallel: the gathers and reductions of every micro-batch, beyond what the passes hide)"
        )?;
    }
    if est.memory.is_empty() {
        writeln!(out, "memory: not modelled by this cost model")?;
        return Ok(());
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(100)
        .set_header(vec![
            "node",
            "gpu",
            "type",
            "stage",
            "weights+grads+opt GiB",
            "activations GiB",
            "peak GiB",
            "capacity GiB",
            "fits",
        ]);
    for m in &est.memory {
        let cap = m.capacity_bytes;
        table.add_row(vec![
            m.device.node.to_string(),
            m.device.gpu.to_string(),
            loaded.cluster.nodes[m.device.node].gpu_type.clone(),
            m.stage.to_string(),
            format!(
                "{:.2}",
                (m.weights_bytes + m.gradients_bytes + m.optimizer_bytes) / GIB
            ),
            format!("{:.2}", m.activations_bytes / GIB),
            format!("{:.2}", m.peak_bytes / GIB),
            cap.map_or("?".into(), |c| format!("{:.2}", c / GIB)),
            match m.overflow_bytes() {
                Some(_) => "NO".into(),
                None if cap.is_some() => "yes".into(),
                None => "?".into(),
            },
        ]);
    }
    writeln!(out, "{table}")?;
    match (fits(est), est.first_overflow()) {
        (_, Some((m, over))) => writeln!(
            out,
            "does NOT fit: node {} gpu {} (stage {}) needs {:.2} GiB more than its {:.2} GiB",
            m.device.node,
            m.device.gpu,
            m.stage,
            over / GIB,
            m.capacity_bytes.unwrap_or(0.0) / GIB
        )?,
        (Some(true), None) => writeln!(out, "fits in memory on every device")?,
        _ => writeln!(out, "memory capacity unknown for some devices")?,
    }
    if let Some(b) = loaded.model.resident_bytes_per_device.filter(|&b| b > 0) {
        writeln!(
            out,
            "the peak holds {:.2} GiB the model keeps on every GPU outside its layers \
             (resident_bytes_per_device)",
            b as f64 / GIB
        )?;
    }
    let Some(c) = calibration else {
        return Ok(());
    };
    if c.framework_reserve_bytes > 0.0 {
        writeln!(
            out,
            "the peak holds a {:.2} GiB framework reserve (CUDA context, NCCL buffers, \
             fragmentation) that torch.cuda.max_memory_allocated does not count",
            c.framework_reserve_bytes / GIB
        )?;
    }
    if c.allocator_cache_bytes > 0.0 {
        writeln!(
            out,
            "nvidia-smi will read about {:.2} GiB more than the peak on each GPU: free blocks the \
             caching allocator keeps, which it gives back before running out of memory",
            c.allocator_cache_bytes / GIB
        )?;
    }
    Ok(())
}

pub fn run(args: EvalArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
    let (loaded, plan, warnings) =
        args.inputs
            .load_with_plan(&args.plan, args.rank, &args.setup, None)?;
    for w in warnings {
        writeln!(err, "warning: {w}")?;
    }
    if let Some(why) = plan.setup.engine.and_then(|e| {
        plan.launch_refusal_for(e, &loaded.model)
            .map(|why| format!("priced as {e} runs it, but {e} cannot run this plan: {why}"))
    }) {
        writeln!(err, "warning: {why}")?;
    }
    let cost_model = args.inputs.cost_model()?;
    let inputs = Inputs {
        model: &loaded.model,
        cluster: &loaded.cluster,
        profile: &loaded.profile,
    };
    let primary = args.inputs.calibration()?;
    if args.sensitivity && primary.is_none() {
        bail!("--sensitivity prices the plan under the amp cost model's other fitted constants; the amp-paper model has none. Drop --sensitivity, or use the amp cost model");
    }
    let est = cost_model.evaluate(&inputs, &plan)?;
    let sensitivity = if let (true, Some(primary)) = (args.sensitivity, primary) {
        let mut rows = Vec::new();
        for (name, fitted_on, calibration) in Calibration::shipped_besides(primary) {
            let e = amp_model(calibration).evaluate(&inputs, &plan)?;
            rows.push(JsonUnder {
                calibration: name,
                fitted_on,
                iteration_s: e.iteration_s,
                fits_in_memory: fits(&e),
            });
        }
        Some(rows)
    } else {
        None
    };
    // The simulation that priced the plan, to say which stage the breakdown
    // describes (amp's model only: amp-paper simulates none).
    let timeline = match primary {
        Some(c) => Some(crate::inputs::device_model(c).timeline(&inputs, &plan)?),
        None => None,
    };
    let work = timeline.as_ref().map(Timeline::stage_work);
    // The constants behind the memory figures, where there are any.
    let memory_constants = cost_model.calibration().filter(|_| !est.memory.is_empty());
    if args.json {
        // The text says it under the setup line; JSON readers see stderr.
        if let Some(note) = crate::cmd_plan::blocks_note(&loaded.model, &plan.setup) {
            writeln!(err, "note: {note}")?;
        }
        let json = JsonOutput {
            schema_version: JSON_SCHEMA_VERSION,
            model: &loaded.model.name,
            cluster: &loaded.cluster.name,
            cost_model: cost_model.name(),
            global_batch: plan.global_batch(),
            iteration_s: est.iteration_s,
            throughput_samples_per_s: plan.global_batch() as f64 / est.iteration_s,
            breakdown: &est.breakdown,
            breakdown_stage: work.as_deref().and_then(ending_stage),
            stage_passes_s: work
                .as_ref()
                .map(|w| w.iter().map(|w| w.passes_s).collect()),
            fits_in_memory: fits(&est),
            memory: est
                .memory
                .iter()
                .map(|m| JsonDevice {
                    memory: m,
                    gpu_type: &loaded.cluster.nodes[m.device.node].gpu_type,
                    fits: m.capacity_bytes.map(|_| m.overflow_bytes().is_none()),
                })
                .collect(),
            framework_reserve_bytes: memory_constants.map(|c| c.framework_reserve_bytes),
            allocator_cache_bytes: memory_constants.map(|c| c.allocator_cache_bytes),
            plan: &plan,
            made_for: ModelRecord::of(&loaded.model),
            compute_sources: plan_compute_sources(&loaded, &plan),
            sensitivity,
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
    } else {
        print_text(
            out,
            &loaded,
            &plan,
            &est,
            timeline.as_ref(),
            cost_model.as_ref(),
        )?;
        if let Some(rows) = &sensitivity {
            let under: Vec<String> = rows
                .iter()
                .map(|r| {
                    let fit = match r.fits_in_memory {
                        Some(false) => ", does not fit",
                        _ => "",
                    };
                    format!("{} {:.4} s{fit}", r.calibration, r.iteration_s)
                })
                .collect();
            writeln!(
                out,
                "under the other constants amp ships (--calibration NAME): {}",
                under.join("; ")
            )?;
        }
    }
    if let (Some((m, over)), false) = (est.first_overflow(), args.force) {
        bail!(
            "the plan does not fit in memory: node {} gpu {} (stage {}) needs {:.2} GiB more than its {:.2} GiB (--force to exit 0 anyway)",
            m.device.node,
            m.device.gpu,
            m.stage,
            over / GIB,
            m.capacity_bytes.unwrap_or(0.0) / GIB
        );
    }
    Ok(())
}

/// Where the compute times of the GPU types `plan` runs on come from: a
/// plan made with `--profile` and priced without it is priced on the
/// analytic model's times, and says so.
fn plan_compute_sources(loaded: &Loaded, plan: &Plan) -> Vec<String> {
    let gpus = loaded.cluster.gpu_types_of(plan.devices());
    crate::cmd_plan::compute_sources(&loaded.profile, &gpus)
}

/// The plan's micro-batches: `4 micro-batches` (each replica's), or for
/// uneven replicas the total and each one's range, `512 micro-batches
/// (18-19 per replica)`.
fn micro_batches_label(plan: &amp_core::Plan) -> String {
    if plan.is_uneven() {
        format!(
            "{} micro-batches ({} per replica)",
            plan.total_micro_batches(),
            plan.micro_batches_label()
        )
    } else {
        format!("{} micro-batches", plan.num_micro_batches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARE: &str = r#"{"micro_batch": 2, "num_micro_batches": 4,
        "stages": [{"first_layer": 0, "end_layer": 30, "replicas": [[{"node": 0, "gpu": 0}]]}]}"#;

    fn parse(text: &str, rank: usize) -> amp_core::Result<Plan> {
        Plan::from_json_any(text, "p.json", Some(rank))
    }

    #[test]
    fn accepts_the_three_layouts() {
        let bare = parse(BARE, 1).unwrap();
        assert_eq!(bare.micro_batch, 2);
        let wrapped = format!(r#"{{"plan": {BARE}}}"#);
        assert_eq!(parse(&wrapped, 1).unwrap(), bare);
        let listed = format!(
            r#"{{"schema_version": 1, "plans": [{{"rank": 1, "tp": 1, "predicted_iteration_s": 1.0, "micro_batch": 2, "num_micro_batches": 4, "stages": {}}}]}}"#,
            serde_json::to_string(&bare.stages).unwrap()
        );
        assert_eq!(parse(&listed, 1).unwrap(), bare);
        let e = parse(&listed, 2).unwrap_err().to_string();
        assert!(e.contains("rank 2") && e.contains("1 plans"), "{e}");
    }

    #[test]
    fn bad_plans_say_where() {
        let e = parse("{\"x\": 1}", 1).unwrap_err().to_string();
        assert!(e.contains("p.json") && e.contains("micro_batch"), "{e}");
        let e = parse(r#"{"micro_batch": 1, "stages": []}"#, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("num_micro_batches"), "{e}");
    }
}
