//! `amp plan`: search and print the fastest plans.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use amp_core::cost::{CostModel, Inputs};
use amp_core::search::{
    divisors, search, NodeOrderSearch, PlacementSearch, RankedPlan, SearchOptions, SearchResult,
    MAX_NODE_ORDERS,
};
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use comfy_table::{presets::UTF8_BORDERS_ONLY, ContentArrangement, Table};
use serde::Serialize;

use crate::inputs::{amp_model, CostModelName, InputArgs, Loaded};
use crate::output::{export_files, write_files, write_report, EngineArg, HostArgs};
use crate::plan_sensitivity::{
    hedge_json, print_sensitivity, sensitivity_json, sensitivity_notes, sensitivity_rows,
    JsonHedge, JsonPickUnder, SENSITIVITY_POOL,
};
use crate::setup_args::SetupArgs;
use amp_core::baseline::megatron_heuristic;
use amp_core::cost::Calibration;
use amp_core::partition::EXACT_SPLIT_MAX_LAYERS;
use amp_core::plan::ModelRecord;
use amp_core::schedule::ending_stage;
use amp_core::sensitivity::sensitivity;
use amp_core::setup::{Engine, TrainingSetup};
use amp_core::setup_search::{search_setups, search_setups_with, setup_candidates, SetupSpace};
use amp_core::subset_search::{
    faster_on_one_type, objective_value, plan_price_per_hour, rank_by_objective, search_subsets,
    FasterOnOneType, Objective, MAX_SUBSET_GPU_TYPES,
};
use amp_core::type_tp_search::search_per_type_tp;
use amp_export::SensitivitySection;

/// Version of the `--json` output; bumped on any incompatible change (2:
/// every plan records its training setup).
pub const JSON_SCHEMA_VERSION: u32 = amp_core::plan::PLAN_SCHEMA_VERSION;

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Samples per iteration, over all data-parallel replicas (default with
    /// --example, and with --sailor-data the model's training file's).
    #[arg(long, required_unless_present_any = ["example", "sailor_data"])]
    pub global_batch: Option<usize>,
    /// Placements to search: full (every axis order and node order) or
    /// artifact (the AMP artifact's default rank order only).
    #[arg(long, value_enum, default_value_t = PlacementArg::Full)]
    pub placement: PlacementArg,
    /// How many plans to print.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Print machine-readable JSON (schema in README.md) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write launch files of the fastest plan for this engine (needs --out).
    #[arg(long, value_enum, requires = "out")]
    pub emit: Option<EngineArg>,
    /// Directory for --emit's files.
    #[arg(long, requires = "emit")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub hosts: HostArgs,
    /// Write a self-contained HTML report of the search and the fastest plan.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub setup: SetupArgs,
    /// Also search these training-setup options, comma-separated:
    /// recompute, sharding, interleaving (2, 4 or 8 chunks), sp (sequence
    /// parallelism), or all. Only what the engine (--engine) can run is
    /// tried; every combination is searched in full.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        help_heading = "Training setup"
    )]
    pub search_setup: Vec<SetupOption>,
    /// Also price two baselines under the same model: the best plan of
    /// AMP's space (the given setup only) and Megatron-LM's recipe (tp =
    /// GPUs per node or the largest that splits the heads, pp across
    /// nodes, micro-batch 1, even split).
    #[arg(long)]
    pub compare: bool,
    /// Also run the search again under each other set of constants amp
    /// ships (`neutral`, and `amp-t4` and `sailor-gh200`, each fitted on
    /// one measured cluster alone; --calibration takes each name) and
    /// print how the best plan fares there: its time, and its regret
    /// against the best plan found there; and the hedge, the plan found
    /// whose worst regret over all of them is least. The constants were
    /// fitted on two clusters and may not hold on yours; this says whether
    /// the pick depends on them. Three more searches.
    #[arg(long)]
    pub sensitivity: bool,
    /// Also search parts of the cluster: every non-empty set of its GPU
    /// types, then those sets with fewer of each type's nodes (every count
    /// when the combinations number at most 64, else halves, quarters, ...;
    /// at most 64 sets): leaving slow GPUs or a slow network idle can be
    /// faster, and is cheaper. Implies --fewer-replicas for --per-type-tp
    /// --uneven-dp.
    #[arg(long)]
    pub subsets: bool,
    /// With --per-type-tp --uneven-dp: also try each pipeline depth at the
    /// fewest replicas that run as many micro-batches each as the most do,
    /// the surplus GPUs idle (how Sailor's planner reaches dp 27 on 128
    /// GPUs). A fifth to a third more search time on Sailor's scenarios.
    #[arg(long)]
    pub fewer_replicas: bool,
    /// What the ranking minimises: time (per iteration) or cost (dollars
    /// per iteration, from the nodes' prices; every node needs one; the
    /// same order as dollars per token, which the summary also gives).
    /// Cost searches the GPU-type subsets too (--subsets), since on the
    /// whole cluster it ranks as time does.
    #[arg(long, value_enum, default_value_t = ObjectiveArg::Time)]
    pub objective: ObjectiveArg,
    /// Only plans whose nodes cost at most this many dollars per hour (from
    /// the nodes' prices; every node needs one). Searches the GPU-type
    /// subsets too (--subsets), since only a smaller set of GPUs costs less.
    #[arg(long, value_name = "USD", value_parser = positive_usd)]
    pub max_usd_per_hour: Option<f64>,
    /// Also search plans with a tensor-parallel degree per GPU type (on the
    /// whole cluster, under the given setup and every one --search-setup
    /// adds; the split improved by local search, a heuristic; interleaved
    /// setups take Megatron-LM's even split).
    #[arg(long)]
    pub per_type_tp: bool,
    /// --per-type-tp, and a GPU type's stages at two tp degrees too: its
    /// first stages at one, the rest at another (a tp per stage, as
    /// Sailor's planner gives; under 1F1B the first stages hold the most
    /// activations). Many more candidates: seconds where --per-type-tp
    /// takes a fraction of one.
    #[arg(long)]
    pub per_stage_tp: bool,
    /// Let replicas run different numbers of micro-batches: data-parallel
    /// degrees that need not divide the batch, faster replicas taking more,
    /// and with --per-type-tp stages whose replicas mix GPU types (Sailor's
    /// plans). Megatron-LM, DeepSpeed and torchtitan give every replica the
    /// same share, so such plans do not export to them.
    #[arg(long)]
    pub uneven_dp: bool,
}

impl PlanArgs {
    /// What the ranking minimises.
    fn objective(&self) -> Objective {
        match self.objective {
            ObjectiveArg::Time => Objective::Time,
            ObjectiveArg::Cost => Objective::Cost,
        }
    }

    /// Whether the per-type search runs (--per-stage-tp widens it, so runs
    /// it too).
    fn per_type(&self) -> bool {
        self.per_type_tp || self.per_stage_tp
    }

    /// Whether the main search is the subset search: asked for, or needed
    /// by the cost objective or a budget (both search the sub-clusters: a
    /// part of the cluster can cost less than all of it).
    fn wide(&self) -> bool {
        self.subsets || self.objective() == Objective::Cost || self.max_usd_per_hour.is_some()
    }
}

/// A budget: a finite number above zero.
fn positive_usd(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of dollars (e.g. 250 or 99.5)"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!(
            "`{s}`: a budget must be a finite number of dollars above 0"
        ))
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectiveArg {
    Time,
    Cost,
}

/// One baseline of `--compare`.
#[derive(Serialize)]
struct JsonBaseline {
    name: &'static str,
    /// `None` when the baseline has no plan that fits (see `note`).
    predicted_iteration_s: Option<f64>,
    /// The baseline's time over amp's best.
    slowdown: Option<f64>,
    tp: Option<usize>,
    dp: Option<usize>,
    pp: Option<usize>,
    micro_batch: Option<usize>,
    note: String,
}

/// AMP's space (the given setup) and Megatron-LM's recipe, priced by the
/// same model as `best_s`.
fn baselines(
    inputs: &Inputs,
    cost: &dyn amp_core::cost::CostModel,
    opts: &SearchOptions,
    beyond_amp_space: bool,
    best_s: f64,
) -> Result<Vec<JsonBaseline>> {
    let row = |name: &'static str, r: std::result::Result<&amp_core::RankedPlan, String>| match r {
        Ok(p) => JsonBaseline {
            name,
            predicted_iteration_s: Some(p.estimate.iteration_s),
            slowdown: Some(p.estimate.iteration_s / best_s),
            tp: Some(p.tp),
            dp: Some(p.dp),
            pp: Some(p.pp),
            micro_batch: Some(p.micro_batch),
            note: amp_core::setup_search::short_label(&p.plan.setup),
        },
        Err(why) => JsonBaseline {
            name,
            predicted_iteration_s: None,
            slowdown: None,
            tp: None,
            dp: None,
            pp: None,
            micro_batch: None,
            note: why,
        },
    };
    let mut out = Vec::new();
    // AMP's space: dp divides the batch, every replica the same share.
    let quiet = SearchOptions {
        progress: None,
        uneven_dp: false,
        ..*opts
    };
    let amp_space = if beyond_amp_space {
        search(inputs, cost, &quiet)
    } else {
        Err(amp_core::AmpError::NoPlan(String::new()))
    };
    match &amp_space {
        Ok(r) => out.push(row("AMP's space (given setup)", Ok(&r.plans[0]))),
        Err(_) if !beyond_amp_space => out.push(JsonBaseline {
            name: "AMP's space (given setup)",
            predicted_iteration_s: Some(best_s),
            slowdown: Some(1.0),
            tp: None,
            dp: None,
            pp: None,
            micro_batch: None,
            note: "the search above (add --search-setup to search beyond it)".into(),
        }),
        Err(e) => out.push(row("AMP's space (given setup)", Err(e.to_string()))),
    }
    let h = megatron_heuristic(inputs, cost, opts.global_batch, &opts.setup);
    out.push(row(
        "Megatron-LM heuristic",
        h.as_ref().map_err(|e| e.to_string()),
    ));
    Ok(out)
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupOption {
    Recompute,
    Sharding,
    Interleaving,
    Sp,
    All,
}

/// The options `--search-setup` names; an error when one is also fixed by
/// its own flag.
fn setup_space(args: &PlanArgs) -> Result<SetupSpace> {
    let mut space = SetupSpace::default();
    for o in &args.search_setup {
        match o {
            SetupOption::Recompute => space.recompute = true,
            SetupOption::Sharding => space.optimizer_sharding = true,
            SetupOption::Interleaving => space.interleaving = true,
            SetupOption::Sp => space.sequence_parallel = true,
            SetupOption::All => space = SetupSpace::all(),
        }
    }
    let given = args.setup.given();
    for (searched, flag, name) in [
        (space.recompute, "--recompute", "recompute"),
        (space.optimizer_sharding, "--optimizer-sharding", "sharding"),
        (space.interleaving, "--schedule", "interleaving"),
        (space.sequence_parallel, "--sequence-parallel", "sp"),
    ] {
        if searched && given.contains(&flag) {
            bail!("{flag} fixes what --search-setup {name} searches; give one or the other");
        }
    }
    Ok(space)
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementArg {
    Full,
    Artifact,
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    rank: usize,
    tp: usize,
    dp: usize,
    pp: usize,
    micro_batch: usize,
    num_micro_batches: usize,
    /// Micro-batches of each replica, when they differ (uneven data
    /// parallelism; `num_micro_batches` is then the largest).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    replica_micro_batches: &'a [usize],
    predicted_iteration_s: f64,
    throughput_samples_per_s: f64,
    /// GPUs the plan uses (with --subsets, fewer than the cluster's).
    #[serde(skip_serializing_if = "Option::is_none")]
    gpus: Option<usize>,
    /// Dollars per iteration, from the nodes' prices (with --objective cost).
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_per_iteration_usd: Option<f64>,
    /// Dollars per million tokens trained (with --objective cost, where the
    /// model gives its sequence length).
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_per_million_tokens_usd: Option<f64>,
    /// Dollars per hour of the nodes the plan uses (with --max-usd-per-hour).
    #[serde(skip_serializing_if = "Option::is_none")]
    usd_per_hour: Option<f64>,
    stage_boundaries: Vec<usize>,
    placement: JsonPlacement,
    stages: &'a [amp_core::plan::Stage],
    setup: &'a TrainingSetup,
    /// The model the plan was made for: `amp eval` and `amp export` read
    /// its sequence length and kernels back.
    made_for: &'a ModelRecord,
    breakdown: &'a amp_core::cost::Breakdown,
    /// The pipeline stage `breakdown` describes: the one whose last step
    /// ends the iteration, as in `amp eval --json` (absent under the
    /// amp-paper model, which simulates no timeline).
    #[serde(skip_serializing_if = "Option::is_none")]
    breakdown_stage: Option<usize>,
    /// Each stage's forward and backward passes, seconds (its busiest
    /// replica's), in stage order; absent as `breakdown_stage` is.
    #[serde(skip_serializing_if = "Option::is_none")]
    stage_passes_s: Option<Vec<f64>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    memory: &'a [amp_core::cost::DeviceMemory],
}

#[derive(Serialize)]
struct JsonPlacement {
    axis_order: String,
    node_order: Vec<usize>,
    stage_gpu_types: Vec<Vec<String>>,
}

#[derive(Serialize)]
struct JsonOutput<'a> {
    schema_version: u32,
    model: &'a str,
    cluster: &'a str,
    num_gpus: usize,
    global_batch: usize,
    cost_model: &'a str,
    setup: &'a TrainingSetup,
    placement_search: &'a str,
    /// "exhaustive" or "classes-together" (the heuristic past
    /// MAX_NODE_ORDERS); null under --placement artifact.
    node_orders: Option<NodeOrderSearch>,
    /// "exact", or "grouped" past EXACT_SPLIT_MAX_LAYERS layers (a
    /// heuristic, `amp_core::partition::coarse_partition`).
    layer_split: &'static str,
    compute_sources: Vec<String>,
    candidates: usize,
    infeasible: usize,
    unpriced: usize,
    skipped: &'a [String],
    plans: Vec<JsonPlan<'a>>,
    /// Planned for an engine: why its export refuses the best plan (a
    /// model it does not build), when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    export_refusal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baselines: Option<Vec<JsonBaseline>>,
    /// One GPU type whose nodes alone run faster than the best plan on
    /// every GPU (`amp_core::subset_search::faster_on_one_type`).
    #[serde(skip_serializing_if = "Option::is_none")]
    faster_on_one_type: Option<FasterOnOneType>,
    /// Rank 1 under each other set of shipped constants (--sensitivity).
    #[serde(skip_serializing_if = "Option::is_none")]
    sensitivity: Option<Vec<JsonPickUnder>>,
    /// The plan whose worst regret over every set of constants is least
    /// (--sensitivity).
    #[serde(skip_serializing_if = "Option::is_none")]
    sensitivity_hedge: Option<JsonHedge<'a>>,
}

/// `usd` per iteration as dollars per million tokens trained: the global
/// batch times the model's sequence length (`None` where the model gives
/// none, as a layer list may not).
fn usd_per_million_tokens(
    model: &amp_core::model::Model,
    global_batch: usize,
    usd: f64,
) -> Option<f64> {
    let seq = model.shape.as_ref()?.seq_len;
    (seq > 0).then(|| usd * 1e6 / (global_batch as f64 * seq as f64))
}

/// The sequence length the model was built at, its attention kernel where
/// the model says, and a GeLU priced kernel by kernel (`gelu_new` without an
/// engine), for the header.
pub fn seq_label(model: &amp_core::model::Model, setup: &TrainingSetup) -> String {
    match &model.shape {
        Some(s) => {
            let attention = match model.flash_attention() {
                Some(true) => ", fused attention",
                Some(false) => ", explicit attention",
                None => "",
            };
            let composite = model
                .eager_architecture(setup.eager_blocks())
                .is_some_and(|a| a.activation == amp_core::model::Activation::GeluNew);
            let gelu = if composite {
                ", gelu_new GeLU (unfused)"
            } else {
                ""
            };
            format!("sequence length {}{attention}{gelu}", s.seq_len)
        }
        None => "sequence length not applicable (layer list)".to_string(),
    }
}

/// Under DeepSpeed, which runs whatever module it is given, which blocks a
/// model with an architecture was priced with when the setup does not say:
/// an engine's fused ones, with the flag for Hugging Face's.
pub fn blocks_note(model: &amp_core::model::Model, setup: &TrainingSetup) -> Option<&'static str> {
    (setup.engine == Some(amp_core::setup::Engine::DeepSpeed)
        && setup.block_kernels.is_none()
        && model.architecture().is_some())
    .then_some(
        "blocks: priced as an engine's fused kernels (Megatron-DeepSpeed's); for Hugging Face's modules under DeepSpeed, add --block-kernels eager",
    )
}

/// Where the compute times of `gpus` come from, a line per GPU type and
/// source (`T4: tp 1, 2, 4 measured (gpt2_G4_1.npy, ...)`,
/// `H100-SXM: tp 1, 2 from the analytic model (micro-batches 1, 2)`).
pub fn compute_sources(profile: &amp_core::profile::Profile, gpus: &[String]) -> Vec<String> {
    amp_catalog::describe_sources(profile)
        .into_iter()
        .filter(|line| gpus.iter().any(|g| line.starts_with(&format!("{g}:"))))
        .collect()
}

/// GPU types running each stage, for display.
fn stage_gpu_types(loaded: &Loaded, p: &RankedPlan) -> Vec<Vec<String>> {
    p.plan
        .stages
        .iter()
        .map(|s| loaded.cluster.gpu_types_of(s.devices()))
        .collect()
}

/// A short placement description: axis order, then the GPU types of the
/// stages in order, run-length encoded ("V100x3 T4").
pub(crate) fn placement_summary(loaded: &Loaded, p: &RankedPlan) -> String {
    let types = stage_gpu_types(loaded, p);
    let mut runs: Vec<(String, usize)> = Vec::new();
    for t in types {
        let label = t.join("+");
        match runs.last_mut() {
            Some((l, n)) if *l == label => *n += 1,
            _ => runs.push((label, 1)),
        }
    }
    let stages: Vec<String> = runs
        .into_iter()
        .map(|(l, n)| if n > 1 { format!("{l}x{n}") } else { l })
        .collect();
    format!("{} | {}", p.placement.axis_order.label(), stages.join(" "))
}

#[allow(clippy::too_many_arguments)]
fn print_table(
    out: &mut dyn Write,
    loaded: &Loaded,
    result: &SearchResult,
    top: usize,
    global_batch: usize,
    cost_model: &str,
    setup: &TrainingSetup,
    searched: Option<(&SetupSpace, usize)>,
    objective: Objective,
    budget_usd_per_hour: Option<f64>,
    grouped_split: bool,
    sources: &[String],
) -> Result<()> {
    let mut table = Table::new();
    let mut header = vec![
        "rank",
        "tp",
        "pp",
        "dp",
        "mbs",
        "µbatches",
        "stage boundaries",
        "placement",
    ];
    if searched.is_some() {
        header.push("setup");
    }
    if objective == Objective::Cost {
        header.push("$/iter");
    }
    if budget_usd_per_hour.is_some() {
        header.push("$/h");
    }
    header.push("iter s");
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(100)
        .set_header(header);
    for (i, p) in result.plans.iter().take(top).enumerate() {
        let b: Vec<String> = p.plan.boundaries().iter().map(|x| x.to_string()).collect();
        let mut row = vec![
            (i + 1).to_string(),
            p.plan.tp_label(),
            p.pp.to_string(),
            p.dp.to_string(),
            p.micro_batch.to_string(),
            p.plan.micro_batches_label(),
            b.join(" "),
            placement_summary(loaded, p),
        ];
        if searched.is_some() {
            row.push(amp_core::setup_search::short_label(&p.plan.setup));
        }
        if objective == Objective::Cost {
            let usd = objective_value(&loaded.cluster, p, objective).unwrap_or(f64::NAN);
            row.push(format!("{usd:.5}"));
        }
        if budget_usd_per_hour.is_some() {
            let usd = plan_price_per_hour(&loaded.cluster, p).unwrap_or(f64::NAN);
            row.push(format!("{usd:.2}"));
        }
        row.push(format!("{:.4}", p.estimate.iteration_s));
        table.add_row(row);
    }
    writeln!(
        out,
        "{} on {} ({} GPUs), global batch {global_batch}, {}, cost model {cost_model}",
        loaded.model.name,
        loaded.cluster.name,
        loaded.cluster.num_devices(),
        seq_label(&loaded.model, setup)
    )?;
    writeln!(out, "training setup: {}", setup.summary())?;
    if let Some(note) = blocks_note(&loaded.model, setup) {
        writeln!(out, "{note}")?;
    }
    if let Some((space, n)) = searched {
        let mut names = Vec::new();
        for (on, name) in [
            (space.recompute, "recomputation"),
            (space.optimizer_sharding, "optimizer sharding"),
            (space.interleaving, "interleaving"),
            (space.sequence_parallel, "sequence parallelism"),
        ] {
            if on {
                names.push(name);
            }
        }
        writeln!(
            out,
            "also searched: {} ({n} setups the engine can run; column `setup`)",
            names.join(", ")
        )?;
    }
    writeln!(out, "{table}")?;
    for s in sources {
        writeln!(out, "compute times: {s}")?;
    }
    for g in loaded.defined_gpus() {
        writeln!(out, "gpu {g}")?;
    }
    let best = &result.plans[0];
    if objective == Objective::Cost {
        // The best plan's cost, per iteration and, where the model gives
        // its sequence length, per million tokens trained.
        let usd = objective_value(&loaded.cluster, best, objective).unwrap_or(f64::NAN);
        let per_token = usd_per_million_tokens(&loaded.model, global_batch, usd)
            .map(|t| format!(", ${t:.4} per million tokens"))
            .unwrap_or_default();
        writeln!(
            out,
            "ranked by cost per iteration (the nodes' prices per hour): the best ${usd:.5} per iteration{per_token}"
        )?;
    }
    if let Some(b) = budget_usd_per_hour {
        writeln!(
            out,
            "only plans whose GPUs cost at most ${b:.2} per hour (column $/h; sets searched: those of --subsets)"
        )?;
    }
    writeln!(
        out,
        "best: {:.4} s/iteration, {:.1} samples/s; {} candidates, {} did not fit in memory, {} could not be priced",
        best.estimate.iteration_s,
        global_batch as f64 / best.estimate.iteration_s,
        result.candidates,
        result.infeasible,
        result.unpriced
    )?;
    // Most candidates over memory and no setup searched: name the options
    // that fit more plans (the error says so when none fits at all).
    if searched.is_none() && result.infeasible * 2 > result.candidates {
        use amp_core::setup::{OptimizerSharding, Recompute};
        let mut untried = Vec::new();
        if setup.optimizer_sharding == OptimizerSharding::None {
            untried.push(("sharding", "sharded optimizer state"));
        }
        if setup.recompute == Recompute::None {
            untried.push(("recompute", "recomputation"));
        }
        if !untried.is_empty() {
            let flags: Vec<&str> = untried.iter().map(|u| u.0).collect();
            let what: Vec<&str> = untried.iter().map(|u| u.1).collect();
            writeln!(
                out,
                "memory: {} of {} candidates did not fit; --search-setup {} also tries {}, which may fit {} plans",
                result.infeasible,
                result.candidates,
                flags.join(","),
                what.join(" and "),
                if objective == Objective::Cost {
                    "cheaper"
                } else {
                    "faster"
                }
            )?;
        }
    }
    // What the engines cannot run, said where the plan is shown.
    let unlaunchable = best.plan.unlaunchable_shape();
    if !unlaunchable.is_empty() {
        writeln!(
            out,
            "best plan: {}; Megatron-LM, DeepSpeed and torchtitan cannot run it",
            unlaunchable.join(", and ")
        )?;
    }
    if let Some(why) = export_refusal(loaded, &best.plan) {
        writeln!(out, "best plan: {why}")?;
    }
    if result.node_orders == Some(NodeOrderSearch::ClassesTogether) {
        writeln!(
            out,
            "node orders: more than {MAX_NODE_ORDERS} distinct orders of the interchangeable node groups; searched each group kept together, the groups in every order (a heuristic, see the README)"
        )?;
    }
    let layers = loaded.model.num_layers();
    if grouped_split {
        writeln!(
            out,
            "layer split: {layers} layers, more than {EXACT_SPLIT_MAX_LAYERS}; split exactly over {EXACT_SPLIT_MAX_LAYERS} groups of consecutive layers, then exactly within a group of each boundary (a heuristic, see the README)"
        )?;
    }
    // A few reasons suffice to act on; --json lists them all.
    const SHOWN: usize = 3;
    for s in result.skipped.iter().take(SHOWN) {
        writeln!(out, "skipped some candidates: {s}")?;
    }
    if result.skipped.len() > SHOWN {
        writeln!(
            out,
            "... and {} more reasons for skipping (see --json `skipped`)",
            result.skipped.len() - SHOWN
        )?;
    }
    Ok(())
}

/// Plans the search keeps under --emit (at least; `--top` if more): the
/// fastest one the engine can launch among them is exported.
const KEEP_FOR_EMIT: usize = 100;

pub fn run(args: PlanArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
    let mut loaded = args.inputs.load()?;
    for note in std::mem::take(&mut loaded.notes) {
        writeln!(err, "warning: {note}")?;
    }
    let global_batch = match (args.global_batch, loaded.example_batch) {
        (Some(b), _) | (None, Some(b)) => b,
        (None, None) => bail!("--global-batch is required (the Sailor training file gives none)"),
    };
    if global_batch == 0 || global_batch > amp_core::limits::MAX_GLOBAL_BATCH {
        bail!(
            "--global-batch {global_batch} is outside 1..={}, the samples per iteration amp plans for",
            amp_core::limits::MAX_GLOBAL_BATCH
        );
    }
    let cost_name = args.inputs.cost_model;
    let space = setup_space(&args)?;
    let mut given = args.setup.given();
    if !space.is_empty() {
        given.push("--search-setup");
    }
    if cost_name == CostModelName::AmpPaper && !given.is_empty() {
        bail!(
            "{} do not apply to --cost-model amp-paper, which prices only the AMP artifact's setup (fp16 with an fp32 all-reduce, 1f1b, no recomputation or sharding); drop them or use the amp cost model",
            given.join(", ")
        );
    }
    let per_type_tp = args.per_type();
    if args.fewer_replicas && !(per_type_tp && args.uneven_dp) {
        bail!("--fewer-replicas adds candidates to the search of --per-type-tp with --uneven-dp; add both, or drop it");
    }
    if cost_name == CostModelName::AmpPaper && args.sensitivity {
        bail!("--sensitivity re-runs the search under the amp cost model's other fitted constants; the amp-paper model has none. Drop --sensitivity, or use the amp cost model");
    }
    if cost_name == CostModelName::AmpPaper && args.uneven_dp {
        bail!("--uneven-dp does not apply to --cost-model amp-paper, whose equations give every replica the same micro-batches; drop it or use the amp cost model");
    }
    if cost_name == CostModelName::Amp && args.inputs.partition.is_some() {
        bail!("--partition applies only to --cost-model amp-paper; the amp cost model always uses its own split (the exact partitioner, then the leading plans refined under its estimate)");
    }
    // The exact partitioner's splits, grouped past its layer limit; the
    // amp-paper model's artifact partitioner splits on its own.
    let grouped_split = loaded.model.num_layers() > EXACT_SPLIT_MAX_LAYERS
        && !(cost_name == CostModelName::AmpPaper
            && args.inputs.partition != Some(crate::inputs::PartitionName::Exact));
    let emit = args.emit.map(EngineArg::engine);
    let setup = match cost_name {
        CostModelName::AmpPaper => amp_core::cost::amp_paper::artifact_setup(),
        CostModelName::Amp => match loaded.data_setup {
            // Sailor's scenarios train as Sailor's runs did.
            Some(s) => {
                let flags = args.setup.given();
                if !flags.is_empty() {
                    bail!(
                        "{} do not apply with --sailor-data: plans are priced in the setup of Sailor's runs (from its llm_info.json); drop them (--search-setup still varies it)",
                        flags.join(", ")
                    );
                }
                s
            }
            None if space.sequence_parallel && args.setup.tp_comm_overlap => {
                // The overlap runs only under sequence parallelism: the
                // search puts it on the setups with it (setup_candidates).
                let mut with_sp = args.setup.clone();
                with_sp.sequence_parallel = true;
                loaded.resolve_setup(&with_sp, emit)?
            }
            None => loaded.resolve_setup(&args.setup, emit)?,
        },
    };
    // Said once a plan is found, so that an error comes first when none is.
    let mut said = Vec::new();
    if let (None, Some(gpu)) = (args.setup.precision, &loaded.no_bf16_gpu) {
        said.push(format!(
            "note: planning in {}: {gpu} has no bf16 tensor cores (--precision to choose)",
            setup.formats.compute
        ));
    }
    if let Some(note) = args.inputs.attention_for_engine(&mut loaded, &setup)? {
        said.push(format!("warning: {note}"));
    }
    // The text says it under the setup line; JSON readers see stderr.
    if let (true, Some(note)) = (args.json, blocks_note(&loaded.model, &setup)) {
        said.push(format!("note: {note}"));
    }
    args.inputs
        .complete_profile(&mut loaded, &divisors(global_batch), &setup, None)?;
    // Only the GPU types this cluster has.
    let sources = compute_sources(&loaded.profile, &loaded.cluster.gpu_types());
    if args.top == 0 {
        bail!("--top must be at least 1");
    }
    let cost_model = args.inputs.cost_model()?;
    let inputs = Inputs {
        model: &loaded.model,
        cluster: &loaded.cluster,
        profile: &loaded.profile,
    };
    let placement = match args.placement {
        PlacementArg::Full => PlacementSearch::Full,
        PlacementArg::Artifact => PlacementSearch::Artifact,
    };
    let progress = Progress::new(args.quiet, "searching");
    let search_opts = SearchOptions {
        global_batch,
        placement,
        setup,
        progress: None,
        // Only the plans printed are kept (a plan of a 16,384-GPU
        // cluster holds every device twice, a few MB); --emit keeps
        // more, to find one the engine can launch, and --report all,
        // which it counts.
        max_node_orders: MAX_NODE_ORDERS,
        uneven_dp: args.uneven_dp,
        // --subsets leaves GPUs idle where that may be faster: whole nodes
        // in the main search, surplus replicas in the per-type one.
        fewer_replicas: args.fewer_replicas || args.subsets,
        per_stage_tp: args.per_stage_tp,
        keep: if args.report.is_some() {
            usize::MAX
        } else if args.emit.is_some() || (setup.engine.is_some() && (per_type_tp || args.uneven_dp))
        {
            // Plans the engine cannot run are dropped after the search.
            args.top.max(KEEP_FOR_EMIT)
        } else {
            args.top
        },
    };
    let setups = setup_candidates(&setup, &space);
    let objective = args.objective();
    let budget = args.max_usd_per_hour;
    let wide = args.wide();
    let searches = Searches {
        args: &args,
        inputs: &inputs,
        opts: &search_opts,
        setups: &setups,
        space_is_empty: space.is_empty(),
    };
    let result = searches
        .run(cost_model.as_ref(), &progress)
        .map_err(|e| name_default_seq(e, &loaded.model, &args.inputs))?;
    let faster_type = (!wide)
        .then(|| {
            faster_on_one_type(
                &inputs,
                cost_model.as_ref(),
                &search_opts,
                &setups,
                result.plans[0].estimate.iteration_s,
            )
        })
        .flatten();
    let sensitivity = if args.sensitivity {
        let primary = args
            .inputs
            .calibration()?
            .expect("--sensitivity is refused with the amp-paper model");
        // Each search keeps its leading plans: the pool the hedge is
        // chosen from.
        let alt_opts = SearchOptions {
            keep: SENSITIVITY_POOL,
            ..search_opts
        };
        let mut pool: Vec<RankedPlan> = result
            .plans
            .iter()
            .take(SENSITIVITY_POOL)
            .cloned()
            .collect();
        let mut named = Vec::new();
        let mut models = Vec::new();
        for (name, fitted_on, calibration) in Calibration::shipped_besides(primary) {
            let model = amp_model(calibration);
            let bar = Progress::new(args.quiet, &format!("searching under --calibration {name}"));
            match (Searches {
                opts: &alt_opts,
                ..searches
            })
            .run(model.as_ref(), &bar)
            {
                Ok(r) => pool.extend(r.plans),
                Err(e) if matches!(e.downcast_ref(), Some(amp_core::AmpError::NoPlan(_))) => {}
                Err(e) => return Err(e),
            }
            bar.finish();
            named.push((name, fitted_on, calibration));
            models.push(model);
        }
        let all: Vec<&dyn CostModel> = std::iter::once(cost_model.as_ref())
            .chain(models.iter().map(|m| m.as_ref()))
            .collect();
        Some((named, sensitivity(&inputs, objective, &all, &pool)?))
    } else {
        None
    };
    // The constants asked for, as --calibration named them.
    let primary_name = args.inputs.calibration.as_deref().unwrap_or("fitted");
    // Its rows and notes, for the text and the report.
    let sensitivity_text = sensitivity.as_ref().map(|r| {
        (
            sensitivity_rows(&loaded, r),
            sensitivity_notes(
                &loaded,
                primary_name,
                r,
                result.plans.len().min(args.top),
                result.plans[0].estimate.iteration_s,
                objective,
            ),
        )
    });
    let compared = if args.compare {
        Some(baselines(
            &inputs,
            cost_model.as_ref(),
            &search_opts,
            // The main search went beyond AMP's space.
            !space.is_empty() || wide || per_type_tp || args.uneven_dp,
            result.plans[0].estimate.iteration_s,
        )?)
    } else {
        None
    };
    progress.finish();
    for line in said {
        writeln!(err, "{line}")?;
    }
    if args.json {
        let made_for = ModelRecord::of(&loaded.model);
        // Each listed plan's simulation, for the stage lines `amp eval
        // --json` gives (amp's model only: amp-paper simulates none).
        let calibration = args.inputs.calibration()?;
        let mut stage_work = Vec::new();
        for p in result.plans.iter().take(args.top) {
            stage_work.push(match calibration {
                Some(c) => Some(
                    crate::inputs::device_model(c)
                        .timeline(&inputs, &p.plan)?
                        .stage_work(),
                ),
                None => None,
            });
        }
        let plans = result
            .plans
            .iter()
            .take(args.top)
            .zip(&stage_work)
            .enumerate()
            .map(|(i, (p, work))| {
                let usd = (objective == Objective::Cost)
                    .then(|| objective_value(&loaded.cluster, p, objective))
                    .flatten();
                JsonPlan {
                    rank: i + 1,
                    tp: p.tp,
                    dp: p.dp,
                    pp: p.pp,
                    micro_batch: p.micro_batch,
                    num_micro_batches: p.num_micro_batches,
                    replica_micro_batches: &p.plan.replica_micro_batches,
                    predicted_iteration_s: p.estimate.iteration_s,
                    throughput_samples_per_s: global_batch as f64 / p.estimate.iteration_s,
                    gpus: wide.then(|| p.plan.devices().count()),
                    cost_per_iteration_usd: usd,
                    cost_per_million_tokens_usd: usd
                        .and_then(|usd| usd_per_million_tokens(&loaded.model, global_batch, usd)),
                    usd_per_hour: budget.and_then(|_| plan_price_per_hour(&loaded.cluster, p)),
                    stage_boundaries: p.plan.boundaries(),
                    placement: JsonPlacement {
                        axis_order: p.placement.axis_order.label(),
                        node_order: p.placement.node_order.clone(),
                        stage_gpu_types: stage_gpu_types(&loaded, p),
                    },
                    stages: &p.plan.stages,
                    setup: &p.plan.setup,
                    made_for: &made_for,
                    breakdown: &p.estimate.breakdown,
                    breakdown_stage: work.as_deref().and_then(ending_stage),
                    stage_passes_s: work
                        .as_ref()
                        .map(|w| w.iter().map(|w| w.passes_s).collect()),
                    memory: &p.estimate.memory,
                }
            })
            .collect();
        let json = JsonOutput {
            schema_version: JSON_SCHEMA_VERSION,
            model: &loaded.model.name,
            cluster: &loaded.cluster.name,
            num_gpus: loaded.cluster.num_devices(),
            global_batch,
            cost_model: cost_model.name(),
            setup: &setup,
            placement_search: match placement {
                PlacementSearch::Full => "full",
                PlacementSearch::Artifact => "artifact",
            },
            node_orders: result.node_orders,
            layer_split: if grouped_split { "grouped" } else { "exact" },
            compute_sources: sources.clone(),
            candidates: result.candidates,
            infeasible: result.infeasible,
            unpriced: result.unpriced,
            skipped: &result.skipped,
            export_refusal: export_refusal(&loaded, &result.plans[0].plan),
            plans,
            baselines: compared,
            faster_on_one_type: faster_type,
            sensitivity: sensitivity.as_ref().map(sensitivity_json),
            sensitivity_hedge: sensitivity.as_ref().and_then(|r| {
                hedge_json(
                    r,
                    primary_name,
                    result.plans.len().min(args.top),
                    &loaded.model,
                )
            }),
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
    } else {
        print_table(
            out,
            &loaded,
            &result,
            args.top,
            global_batch,
            cost_model.name(),
            &setup,
            (!space.is_empty()).then_some((&space, setups.len())),
            objective,
            budget,
            grouped_split,
            &sources,
        )?;
        if let Some(rows) = &compared {
            for b in rows {
                match (b.predicted_iteration_s, b.slowdown) {
                    (Some(t), Some(x)) => {
                        let shape = match (b.tp, b.pp, b.dp, b.micro_batch) {
                            (Some(tp), Some(pp), Some(dp), Some(m)) => {
                                format!(" (tp {tp}, pp {pp}, dp {dp}, mbs {m}, {})", b.note)
                            }
                            _ => format!(" ({})", b.note),
                        };
                        writeln!(
                            out,
                            "{}: {t:.4} s/iteration, {x:.3}x amp's best{shape}",
                            b.name
                        )?
                    }
                    _ => writeln!(out, "{}: no plan: {}", b.name, b.note)?,
                }
            }
        }
        if let Some(f) = &faster_type {
            let best_s = result.plans[0].estimate.iteration_s;
            writeln!(
                out,
                "fewer GPUs are faster: the {} {} GPUs alone take {:.4} s/iteration, {:.1}% less than the best plan on all {}; --subsets searches subsets of the GPUs",
                f.gpus,
                f.gpu_type,
                f.predicted_iteration_s,
                100.0 * (1.0 - f.predicted_iteration_s / best_s),
                loaded.cluster.num_devices()
            )?;
        }
        if let Some((rows, notes)) = &sensitivity_text {
            print_sensitivity(out, rows, notes, objective)?;
        }
    }
    let best = &result.plans[0];
    if let (Some(engine), Some(dir)) = (args.emit, &args.out) {
        let hosts = args.hosts.names()?;
        // The fastest plan the engine can run: some placements (a
        // tensor-parallel group across nodes, say) have no launch form.
        let mut refusal = None;
        for (i, p) in result.plans.iter().enumerate() {
            // An engine's refusal moves on to the next plan; a bad option
            // or failing to write the files is an error.
            match export_files(&inputs, &p.plan, engine, &hosts) {
                Ok(files) => {
                    let files = write_files(dir, files)?;
                    if let Some(why) = refusal {
                        writeln!(err, "note: the fastest plan cannot be launched: {why}")?;
                        writeln!(
                            err,
                            "exporting rank {} instead, the fastest {} can run ({:.1}% slower)",
                            i + 1,
                            engine.engine().name(),
                            (p.estimate.iteration_s / best.estimate.iteration_s - 1.0) * 100.0
                        )?;
                    }
                    writeln!(
                        err,
                        "wrote {} launch files for plan rank {} to {}",
                        files.len(),
                        i + 1,
                        dir.display()
                    )?;
                    for note in amp_export::export_notes(inputs.model, &p.plan, engine.engine()) {
                        writeln!(err, "warning: {note}")?;
                    }
                    refusal = None;
                    break;
                }
                Err(e @ amp_export::ExportError::Option { .. }) => {
                    bail!("cannot export for {}: {e}", engine.engine().name())
                }
                Err(e) if i == 0 => refusal = Some(format!("{e:#}")),
                Err(_) => {}
            }
        }
        if let Some(why) = refusal {
            bail!("no plan found can be launched: {why}");
        }
    }
    if let Some(path) = &args.report {
        let title = format!("{} on {}", loaded.model.name, loaded.cluster.name);
        write_report(
            &inputs,
            args.inputs.calibration()?,
            &title,
            &result.plans,
            &best.plan,
            Some(&best.estimate),
            sensitivity_text
                .as_ref()
                .map(|(rows, notes)| SensitivitySection { rows, notes }),
            path,
        )?;
        writeln!(err, "wrote the report to {}", path.display())?;
    }
    Ok(())
}

/// The search `amp plan` runs, as its options ask: the main search (over
/// the setups, or the node subsets) and beside it the per-type one, their
/// plans ranked together. Run once under the cost model asked for, and
/// under each other set of constants for `--sensitivity`.
#[derive(Clone, Copy)]
struct Searches<'a> {
    args: &'a PlanArgs,
    inputs: &'a Inputs<'a>,
    opts: &'a SearchOptions<'a>,
    setups: &'a [TrainingSetup],
    space_is_empty: bool,
}

impl Searches<'_> {
    fn run(&self, model: &dyn CostModel, progress: &Progress) -> Result<SearchResult> {
        let (args, inputs, setups) = (self.args, self.inputs, self.setups);
        let (objective, budget) = (args.objective(), args.max_usd_per_hour);
        // One bar over both searches when the per-type one runs beside the
        // main one: each reports its own (done, total), the bar their sums.
        let shares = [
            (AtomicUsize::new(0), AtomicUsize::new(0)),
            (AtomicUsize::new(0), AtomicUsize::new(0)),
        ];
        let report_share = |k: usize, done: usize, total: usize| {
            shares[k].0.fetch_max(done, Ordering::Relaxed);
            shares[k].1.store(total, Ordering::Relaxed);
            let (done, total) = shares.iter().fold((0, 0), |(d, t), (a, b)| {
                (d + a.load(Ordering::Relaxed), t + b.load(Ordering::Relaxed))
            });
            progress.update(done, total);
        };
        let report_progress = |done: usize, total: usize| report_share(0, done, total);
        let report_per_type = |done: usize, total: usize| report_share(1, done, total);
        let search_opts = SearchOptions {
            progress: Some(&report_progress),
            ..*self.opts
        };
        // Ranking by cost searches the sub-clusters, a budget too; but a
        // cluster of more GPU types than have their subsets searched is
        // ranked by cost whole, and the output says so (below), where
        // --subsets and a budget are refused.
        let too_many_types = inputs.cluster.gpu_types().len() > MAX_SUBSET_GPU_TYPES;
        let cost_whole =
            objective == Objective::Cost && too_many_types && !args.subsets && budget.is_none();
        let subsets = !cost_whole;
        let main_search = || {
            if args.wide() {
                search_subsets(
                    inputs,
                    model,
                    &search_opts,
                    setups,
                    subsets,
                    objective,
                    budget,
                )
            } else if self.space_is_empty {
                search(inputs, model, &search_opts)
            } else {
                search_setups(inputs, model, &search_opts, setups)
            }
        };
        // Under every setup searched, as the main search; its progress on
        // the main search's bar.
        let per_type_opts = SearchOptions {
            progress: Some(&report_per_type),
            ..*self.opts
        };
        let per_type_search = || {
            if setups.len() > 1 {
                search_setups_with(inputs, model, &per_type_opts, setups, search_per_type_tp)
            } else {
                search_per_type_tp(inputs, model, &per_type_opts)
            }
        };
        // The two searches side by side: each leaves a core idle between
        // its phases, which the other fills.
        let (result, per_type) = if args.per_type() {
            let (main, per_type) = rayon::join(main_search, per_type_search);
            (main, Some(per_type))
        } else {
            (main_search(), None)
        };
        let mut result = result?;
        if cost_whole {
            let types = inputs.cluster.gpu_types().len();
            result.skipped.push(format!(
                "sub-clusters: ranked by cost on the whole cluster only: its {types} GPU types make {} sub-clusters, and only clusters of at most {MAX_SUBSET_GPU_TYPES} types have theirs searched (merge GPU types to search them)",
                (1u64 << types.min(63)) - 1
            ));
        }
        if let Some(per_type) = per_type {
            match per_type {
                Ok(r) => {
                    let cluster = inputs.cluster;
                    result.absorb(r, |p| {
                        let over = budget.is_some_and(|b| {
                            plan_price_per_hour(cluster, &p).is_none_or(|usd| usd > b)
                        });
                        (!over).then_some(p)
                    });
                    rank_by_objective(cluster, &mut result, objective, self.opts.keep);
                }
                Err(amp_core::AmpError::NoPlan(why)) => {
                    // Named as the user asked for it.
                    let flag = if args.per_stage_tp {
                        "--per-stage-tp"
                    } else {
                        "--per-type-tp"
                    };
                    result.skipped.push(format!("{flag}: {why}"))
                }
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(engine) = self.opts.setup.engine {
            drop_unlaunchable(&mut result, engine, inputs.model)?;
        }
        Ok(result)
    }
}

/// A search that found no plan because none fits, for a zoo model or a
/// Hugging Face config at a sequence length the user did not give, says
/// which length it planned at: the architecture's default (4096 for most of
/// the zoo) is often longer than the job's, and the error's header line,
/// which names it, is printed only with a plan.
fn name_default_seq(
    e: anyhow::Error,
    model: &amp_core::Model,
    inputs: &InputArgs,
) -> anyhow::Error {
    let defaulted =
        inputs.seq.is_none() && inputs.example.is_none() && inputs.sailor_data.is_none();
    let seq = model
        .shape
        .as_ref()
        .filter(|s| defaulted && s.architecture.is_some())
        .map(|s| s.seq_len);
    match (seq, e.downcast_ref::<amp_core::AmpError>()) {
        (Some(seq), Some(amp_core::AmpError::NoPlan(why)))
            if why.contains("do not fit in GPU memory") =>
        {
            anyhow::anyhow!(
                "{e}; amp planned {} at its default sequence length, {seq} tokens (--seq to give the job's)",
                model.name
            )
        }
        _ => e,
    }
}

/// Planned for an engine: what its export refuses `plan` for (a model it
/// does not build, a split its flags cannot say), said before the user
/// tries: `amp export --to ENGINE refuses it: ...`.
fn export_refusal(loaded: &Loaded, plan: &amp_core::Plan) -> Option<String> {
    let engine = plan.setup.engine?;
    let export = amp_export::export(
        plan,
        &loaded.model,
        &loaded.cluster,
        engine,
        &amp_export::ExportOptions::default(),
    );
    match export {
        Err(amp_export::ExportError::Unsupported { reason, .. }) => {
            Some(format!("amp export --to {engine} refuses it: {reason}"))
        }
        _ => None,
    }
}

/// Under an engine (`--engine`, `--emit`), drops the plans it cannot run
/// ([`SearchResult::keep_launchable`]): every plan ranked is one the engine
/// runs. The fastest dropped is named among the skipped, so that the user
/// knows what the engine costs.
fn drop_unlaunchable(
    result: &mut SearchResult,
    engine: Engine,
    model: &amp_core::Model,
) -> Result<()> {
    let Some((p, why)) = result.keep_launchable(engine, model) else {
        return Ok(());
    };
    let name = engine.name();
    let why = format!(
        "plans {name} cannot run are not ranked; the fastest of them, tp {} pp {} dp {} at micro-batch {}, {:.4} s: {why}; drop --engine (and --emit) to rank them",
        p.plan.tp_label(),
        p.plan.pp(),
        p.plan.dp(),
        p.plan.micro_batch,
        p.estimate.iteration_s,
    );
    if result.plans.is_empty() {
        bail!("no plan found that {name} can run: {why}");
    }
    result.skipped.push(why);
    Ok(())
}

/// A progress bar on stderr for searches that take over a second, shown
/// only on a terminal and without --quiet.
///
/// A watcher thread shows it half a second after the search starts (so it
/// is visible within a second even while the first candidates are still
/// being priced) and keeps it ticking. The estimate of the time left is the
/// candidates still to price at the rate measured so far, and says
/// "estimating" until there is a rate to go by. Ctrl-C clears the bar and
/// restores the cursor before amp exits with 130.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    start: Instant,
    done: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

/// The bar Ctrl-C must clear, if one is showing.
static SHOWN_BAR: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// Delay before the bar appears: searches faster than this print nothing.
const SHOW_AFTER: Duration = Duration::from_millis(500);

impl Progress {
    /// A bar that says `what` it is doing ("searching").
    fn new(quiet: bool, what: &str) -> Progress {
        let done = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::hidden();
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {prefix} {bar:40} {pos}/{len} candidates, {msg}",
                )
                .expect("valid template"),
            );
            bar.set_prefix(what.to_string());
            bar.set_message("estimating the time left");
            let (bar2, done2) = (bar.clone(), done.clone());
            std::thread::spawn(move || {
                let (lock, cvar) = &*done2;
                let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
                let (finished, _) = cvar
                    .wait_timeout_while(guard, SHOW_AFTER, |finished| !*finished)
                    .unwrap_or_else(|e| e.into_inner());
                if !*finished {
                    *SHOWN_BAR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar2.clone());
                    install_ctrlc_handler();
                    bar2.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                    bar2.enable_steady_tick(Duration::from_millis(100));
                }
            });
            bar
        });
        Progress {
            bar,
            start: Instant::now(),
            done,
        }
    }

    fn update(&self, done: usize, total: usize) {
        if let Some(bar) = &self.bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            let elapsed = self.start.elapsed().as_secs_f64();
            // An estimate from at least a few candidates and a quarter second.
            if done >= 4 && elapsed > 0.25 && done < total {
                let left = (total - done) as f64 * elapsed / done as f64;
                bar.set_message(format!("about {} left", human_seconds(left)));
            }
        }
    }

    fn finish(&self) {
        let (lock, cvar) = &*self.done;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cvar.notify_all();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            *SHOWN_BAR.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

impl Drop for Progress {
    /// An error mid-search leaves no bar behind either.
    fn drop(&mut self) {
        self.finish();
    }
}

fn human_seconds(s: f64) -> String {
    if s < 60.0 {
        format!("{:.0} s", s.max(1.0))
    } else if s < 3600.0 {
        format!("{:.0} min {:.0} s", (s / 60.0).floor(), s % 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// On Ctrl-C while a bar shows: clear it, show the cursor, exit 130 (128 +
/// SIGINT). Installed once per process, the first time a bar is shown.
fn install_ctrlc_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if let Some(bar) = SHOWN_BAR.lock().unwrap_or_else(|e| e.into_inner()).take() {
                bar.finish_and_clear();
            }
            let mut err = std::io::stderr();
            // Show the cursor, clear the line.
            let _ = err.write_all(b"\x1b[?25h\r\x1b[2K");
            let _ = err.flush();
            std::process::exit(130);
        });
    });
}
