//! The search: every (tp, dp, pp), micro-batch size and placement, each
//! split by the partitioner (exact for the stage tables' closed form) and
//! priced by one cost model; the leading plans' splits are then refined
//! under the full estimate ([`crate::refine`]).

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, NodeLink};
use crate::cost::{
    Candidate, CostModel, Estimate, GridTables, Inputs, LayoutEstimator, StageTables,
};
use crate::error::{AmpError, Result};
use crate::limits;
use crate::partition::{best_partition, even_block_split};
use crate::placement::{node_classes, node_orders_bounded, AxisOrder, DeviceGrid, Placement};
pub use crate::placement::{node_orders, NodeOrderSearch, MAX_NODE_ORDERS};
use crate::plan::{Plan, Stage};
use crate::rank_order::grid_launchable;
use crate::setup::{Engine, TrainingSetup};

/// Which placements to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementSearch {
    /// Only the artifact's default: DeepSpeed rank order over the nodes as
    /// listed.
    Artifact,
    /// Every axis order and every distinct order of the nodes.
    Full,
}

/// What [`search`] looks for: the global batch, the placements to try, the
/// training setup, and an optional progress callback.
#[derive(Clone, Copy)]
pub struct SearchOptions<'a> {
    /// Samples per iteration over all replicas; every plan found trains exactly this many.
    pub global_batch: usize,
    /// Which placements to try.
    pub placement: PlacementSearch,
    /// The training setup every plan is priced and recorded with (one-stage
    /// plans run 1F1B whatever the schedule, [`TrainingSetup::for_pipeline`]).
    pub setup: TrainingSetup,
    /// Called with (candidates priced, candidates in all) as the search
    /// goes, from any thread.
    pub progress: Option<&'a (dyn Fn(usize, usize) + Sync)>,
    /// At most this many plans are returned, the fastest (every candidate is
    /// still priced and counted). Bounds the search's memory, since a plan
    /// holds every device of a large cluster twice (its stages and its
    /// memory estimate); `usize::MAX` keeps every plan that fits.
    pub keep: usize,
    /// At most this many node orders are searched exhaustively (default
    /// [`MAX_NODE_ORDERS`]); past it, the classes-together heuristic
    /// ([`NodeOrderSearch::ClassesTogether`]).
    pub max_node_orders: usize,
    /// Uneven data parallelism ([`crate::uneven`]): data-parallel degrees
    /// that do not divide the batch (the micro-batches dealt as evenly as
    /// they go), and the leading plans' micro-batches moved towards their
    /// faster replicas. Off by default: the engines amp exports to give
    /// every replica the same share.
    pub uneven_dp: bool,
    /// With [`Self::uneven_dp`], the per-type search also tries each
    /// pipeline depth at the fewest replicas that run no more micro-batches
    /// each than the most replicas do, the other GPUs idle (Sailor's
    /// 32 A100 + 96 V100 plan at dp 27 of 28;
    /// [`crate::type_tp_search`]). Off by default: these candidates need
    /// layouts of their own, a fifth to a third more time for the per-type
    /// search on Sailor's larger scenarios, for plans rarely faster.
    pub fewer_replicas: bool,
    /// The per-type search also tries a GPU type's stages at two tp
    /// degrees, its first stages at one and the rest at the other (a tp per
    /// stage, as Sailor's planner gives: under 1F1B the first stages hold
    /// the most activations, so they may need a larger tp than the last;
    /// [`crate::type_tp_search`]). Off by default: many more candidates.
    pub per_stage_tp: bool,
}

impl SearchOptions<'_> {
    /// Options for `global_batch` samples per iteration, trying `placement`, with
    /// `setup`, without progress reports.
    pub fn new(
        global_batch: usize,
        placement: PlacementSearch,
        setup: TrainingSetup,
    ) -> SearchOptions<'static> {
        SearchOptions {
            global_batch,
            placement,
            setup,
            progress: None,
            keep: usize::MAX,
            max_node_orders: MAX_NODE_ORDERS,
            uneven_dp: false,
            fewer_replicas: false,
            per_stage_tp: false,
        }
    }
}

/// One searched plan with its price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedPlan {
    /// Tensor-parallel degree of every stage.
    pub tp: usize,
    /// Data-parallel degree: replicas.
    pub dp: usize,
    /// Pipeline-parallel degree: stages.
    pub pp: usize,
    /// Samples per micro-batch on each replica.
    pub micro_batch: usize,
    /// Micro-batches each replica runs per iteration.
    pub num_micro_batches: usize,
    /// Where the ranks sit on the cluster.
    pub placement: Placement,
    /// The plan itself: stages split by the partitioner, refined under the
    /// estimate for the leading plans ([`crate::refine`]), or the cost
    /// model's preferred split.
    pub plan: Plan,
    /// The cost model's price of `plan`.
    pub estimate: Estimate,
}

/// What a search returns: the plans that fit, fastest first, and counts of the
/// candidates tried, dropped and left unpriced.
#[derive(Debug, Clone)]
pub struct SearchResult {
    /// Plans that fit, fastest first.
    pub plans: Vec<RankedPlan>,
    /// Candidates priced (after removing placements that are the same up to
    /// renaming identical nodes).
    pub candidates: usize,
    /// Candidates dropped because some device runs out of memory.
    pub infeasible: usize,
    /// Candidates that could not be priced (reasons in `skipped`): kept
    /// apart from `infeasible`, which only counts memory.
    pub unpriced: usize,
    /// Why candidates could not be priced at all, one line per reason.
    pub skipped: Vec<String>,
    /// How the node orders were chosen under [`PlacementSearch::Full`]
    /// (`None` under [`PlacementSearch::Artifact`], which keeps the file's).
    pub node_orders: Option<NodeOrderSearch>,
}

impl SearchResult {
    /// No plans and nothing counted: what several searches merge into.
    pub fn empty() -> SearchResult {
        SearchResult {
            plans: Vec::new(),
            candidates: 0,
            infeasible: 0,
            unpriced: 0,
            skipped: Vec::new(),
            node_orders: None,
        }
    }

    /// Adds another search's result to this one: its plans, each passed
    /// through `plan` (dropped when it returns `None`), its counts, each
    /// reason for skipping once, and the node-order heuristic if either
    /// used it. The plans are not re-ranked ([`SearchResult::rank_and_keep`]).
    pub fn absorb(
        &mut self,
        other: SearchResult,
        plan: impl FnMut(RankedPlan) -> Option<RankedPlan>,
    ) {
        self.candidates += other.candidates;
        self.infeasible += other.infeasible;
        self.unpriced += other.unpriced;
        for s in other.skipped {
            if !self.skipped.contains(&s) {
                self.skipped.push(s);
            }
        }
        self.node_orders = match (self.node_orders, other.node_orders) {
            (Some(NodeOrderSearch::ClassesTogether), _)
            | (_, Some(NodeOrderSearch::ClassesTogether)) => Some(NodeOrderSearch::ClassesTogether),
            (x, y) => x.or(y),
        };
        self.plans.extend(other.plans.into_iter().filter_map(plan));
    }

    /// Drops the plans `engine` cannot run ([`Plan::launch_refusal_for`]: a
    /// tp per stage or uneven replicas, which the per-type search and uneven
    /// data parallelism find; the searches themselves try only placements
    /// it launches; FP8 products Transformer Engine cannot tile), keeping
    /// the ranking. Returns the first plan dropped, the fastest of them,
    /// with why, when any was.
    pub fn keep_launchable(
        &mut self,
        engine: Engine,
        model: &crate::model::Model,
    ) -> Option<(RankedPlan, String)> {
        let mut first = None;
        let mut kept = Vec::with_capacity(self.plans.len());
        for p in self.plans.drain(..) {
            match p.plan.launch_refusal_for(engine, model) {
                None => kept.push(p),
                Some(why) if first.is_none() => first = Some((p, why)),
                Some(_) => {}
            }
        }
        self.plans = kept;
        first
    }

    /// Ranks the plans by `value` (seconds, dollars; at nanosecond
    /// resolution, ties keeping their order, as [`search`] ranks) and keeps
    /// the first `keep`.
    pub fn rank_and_keep(&mut self, keep: usize, value: impl Fn(&RankedPlan) -> f64) {
        self.plans.sort_by_key(|p| nanos(value(p)));
        self.plans.truncate(keep.max(1));
    }
}

/// Progress of the `k`-th of `n` searches run in turn, as a share of one
/// report: `(done, total)` of that search becomes `k + done / total` of
/// `n` equal parts.
pub(crate) fn progress_share<'a>(
    progress: Option<&'a (dyn Fn(usize, usize) + Sync)>,
    k: usize,
    n: usize,
) -> impl Fn(usize, usize) + Sync + 'a {
    const PARTS: usize = 1000;
    move |done, total| {
        if let Some(report) = progress {
            report(k * PARTS + done * PARTS / total.max(1), n * PARTS);
        }
    }
}

/// Divisors of `n`, ascending (none for 0), in O(sqrt n) steps.
pub fn divisors(n: usize) -> Vec<usize> {
    let mut small = Vec::new();
    let mut large = Vec::new();
    let mut d = 1usize;
    // d <= n / d, written so that d * d cannot overflow.
    while d <= n / d {
        if n.is_multiple_of(d) {
            small.push(d);
            if d != n / d {
                large.push(n / d);
            }
        }
        d += 1;
    }
    small.extend(large.into_iter().rev());
    small
}

/// (tp, dp, pp, micro-batch) combinations AMP considers: tp at most the GPUs
/// of the smallest node and dividing it, dp dividing the global batch, every
/// micro-batch size dividing the per-replica batch, pp no more than the
/// layers. Ordered by micro-batch, then tp, then dp (the artifact's order,
/// used to break exact ties). With `uneven`, dp need not divide the batch:
/// every micro-batch size dividing the batch into at least dp micro-batches.
pub(crate) fn degree_candidates(
    cluster: &Cluster,
    num_layers: usize,
    global_batch: usize,
    uneven: bool,
) -> Vec<(usize, usize, usize, usize)> {
    let n = cluster.num_devices();
    let node_min = cluster.min_gpus_per_node();
    let mut out = Vec::new();
    for tp in divisors(node_min) {
        if !n.is_multiple_of(tp) || cluster.nodes.iter().any(|nd| !nd.gpus.is_multiple_of(tp)) {
            continue;
        }
        for dp in divisors(n / tp) {
            let pp = n / (tp * dp);
            if pp > num_layers {
                continue;
            }
            if global_batch.is_multiple_of(dp) {
                for mbs in divisors(global_batch / dp) {
                    out.push((tp, dp, pp, mbs));
                }
            } else if uneven {
                for mbs in divisors(global_batch) {
                    if global_batch / mbs >= dp {
                        out.push((tp, dp, pp, mbs));
                    }
                }
            }
        }
    }
    out.sort_by_key(|&(tp, dp, _, mbs)| (mbs, tp, dp));
    out
}

/// A key equal for grids that differ only by renaming interchangeable nodes
/// (or GPUs inside a node): such grids cost the same under every model. The
/// key is the sequence of (class, node numbered by first appearance) over
/// the grid's devices, hashed to 128 bits (two independent SipHash runs with
/// fixed keys, so deterministic) so that deduplicating thousands of
/// placements of a 16,384-GPU cluster stores 16 bytes each, not the whole
/// sequence; a collision (odds about 2^-128 per pair) would drop one
/// placement.
fn grid_key(grid: &DeviceGrid, classes: &[usize]) -> u128 {
    let mut first_seen: Vec<Option<usize>> = vec![None; classes.len()];
    let mut next = 0;
    #[allow(deprecated)] // SipHasher: the one std hasher with a stable, fixed-key output.
    let mut h = [
        std::hash::SipHasher::new_with_keys(0, 0),
        std::hash::SipHasher::new_with_keys(0x9e37_79b9_7f4a_7c15, 0xbf58_476d_1ce4_e5b9),
    ];
    for d in grid.devices.iter().flatten().flatten() {
        let id = *first_seen[d.node].get_or_insert_with(|| {
            next += 1;
            next - 1
        });
        for hasher in &mut h {
            (classes[d.node], id).hash(hasher);
        }
    }
    ((h[0].finish() as u128) << 64) | h[1].finish() as u128
}

/// Placements to try for one (tp, dp, pp), deduplicated. Only the
/// placements are kept: each candidate rebuilds its grid (O(devices)) when
/// it is priced, so the search never holds a grid per candidate.
fn placements(
    cluster: &Cluster,
    (tp, dp, pp): Degrees,
    mode: PlacementSearch,
    orders: &[Vec<usize>],
    classes: &[usize],
    engine: Option<Engine>,
) -> Vec<Placement> {
    match mode {
        PlacementSearch::Artifact => vec![Placement::artifact_default(cluster)],
        PlacementSearch::Full => {
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            for axis_order in AxisOrder::all() {
                for order in orders {
                    let p = Placement {
                        axis_order,
                        node_order: order.clone(),
                    };
                    let g = DeviceGrid::new(cluster, tp, dp, pp, &p);
                    // Planned for an engine, only what it launches; checked
                    // before the twins are merged, since a twin of a
                    // placement it cannot launch may be one it can.
                    if engine.is_some_and(|e| !grid_launchable(&g, e.rank_orders())) {
                        continue;
                    }
                    if seen.insert(grid_key(&g, classes)) {
                        out.push(p);
                    }
                }
            }
            out
        }
    }
}

/// Builds the plan of a uniform candidate from its grid and split. Under an
/// interleaved `setup`, `boundaries` bound the `pp x v` virtual stages and
/// virtual stage `i` runs on the devices of pipeline rank `i mod pp`.
pub fn plan_from_grid(
    grid: &DeviceGrid,
    boundaries: &[usize],
    micro_batch: usize,
    num_micro_batches: usize,
    setup: &TrainingSetup,
) -> Plan {
    let setup = setup.for_pipeline(grid.pp);
    let stages = boundaries.len().saturating_sub(1);
    Plan {
        micro_batch,
        num_micro_batches,
        replica_micro_batches: Vec::new(),
        stages: (0..stages)
            .map(|i| Stage {
                first_layer: boundaries[i],
                end_layer: boundaries[i + 1],
                replicas: grid.devices[i % grid.pp].clone(),
            })
            .collect(),
        setup,
    }
}

/// (tp, dp, pp).
type Degrees = (usize, usize, usize);

pub(crate) enum Outcome {
    Priced(Box<RankedPlan>),
    Infeasible,
    Skipped(String),
    /// Fits, and is proven slower than every plan kept
    /// ([`crate::cost::PlanEstimator::lower_bound_if_fits`]): counted as priced,
    /// kept nowhere.
    Slower,
}

/// Prices the candidates of one placement at its micro-batch sizes:
/// `members` are (enumeration index, micro-batch size, micro-batches of the
/// whole iteration). They share the grid, the partitioner's network tables
/// ([`crate::cost::LayoutEstimators::grid_tables`] of `shared`, the
/// search's) and the estimator of their plans
/// ([`CostModel::layout_estimator`]), so the network is priced once.
fn price_placement<'a>(
    inputs: &'a Inputs<'a>,
    (model, shared, limit): (
        &'a dyn CostModel,
        &dyn crate::cost::LayoutEstimators<'a>,
        &Limit,
    ),
    setup: &TrainingSetup,
    (tp, dp, pp): Degrees,
    placement: &Placement,
    members: &[(usize, usize, usize)],
) -> Vec<(usize, Outcome)> {
    let layers = inputs.model.num_layers();
    let setup = setup.for_pipeline(pp);
    let mut out = Vec::with_capacity(members.len());
    // (index, micro-batch, each replica's micro-batches, their largest)
    let mut live: Vec<(usize, usize, Vec<usize>, usize)> = Vec::new();
    for &(index, micro_batch, total) in members {
        if total.div_ceil(dp) > limits::MAX_MICRO_BATCHES {
            // Checked before building the grid: at a large global batch
            // most small micro-batches land here.
            out.push((
                index,
                Outcome::Skipped(format!(
                    "more than {} micro-batches per iteration (the limit); larger micro-batches or more replicas are searched",
                    limits::MAX_MICRO_BATCHES
                )),
            ));
        } else if pp.saturating_mul(layers) > limits::MAX_STAGE_LAYER_CELLS {
            out.push((
                index,
                Outcome::Skipped(format!(
                    "pp x layers above {} (the limit that bounds the partitioner's memory): pp up to {} is searched for {layers} layers",
                    limits::MAX_STAGE_LAYER_CELLS,
                    limits::MAX_STAGE_LAYER_CELLS / layers
                )),
            ));
        } else {
            // Dealt evenly ([`crate::uneven::schedule_deal`]); the
            // partitioner's tables assume the largest share.
            let counts = crate::uneven::schedule_deal(total, dp, pp, &setup);
            let most = counts.iter().copied().max().unwrap_or(0);
            live.push((index, micro_batch, counts, most));
        }
    }
    if live.is_empty() {
        return out;
    }
    let grid = DeviceGrid::new(inputs.cluster, tp, dp, pp, placement);
    // Megatron-LM runs an interleaved pipeline only on its even split: no
    // tables. Else each candidate's tables when it is priced (one held at
    // a time), the grid's network priced once for all.
    let interleaved = setup.virtual_stages() > 1;
    let mut tables = shared.grid_tables();
    let mut estimator: Option<LayoutEstimator> = None;
    for (index, micro_batch, counts, most) in live {
        let cand = Candidate {
            grid: &grid,
            setup: &setup,
            micro_batch,
            num_micro_batches: most,
        };
        let t = (!interleaved).then(|| tables.stage_tables(&cand));
        let o = price_candidate(
            inputs,
            (model, limit),
            &setup,
            placement.clone(),
            &grid,
            (micro_batch, counts, most),
            t,
            (tables.as_mut(), &mut estimator),
        );
        out.push((index, o));
    }
    out
}

/// Prices one candidate of [`price_placement`]: `micro_batch` samples per
/// micro-batch, `counts` micro-batches per replica (`most` the largest),
/// split by the partitioner on `tables` (`None` for an interleaved setup,
/// which takes the even split), estimated by the placement's estimator
/// (made by `grid_tables` on first need, sharing the tables' network).
#[allow(clippy::too_many_arguments)]
fn price_candidate<'a>(
    inputs: &'a Inputs<'a>,
    (model, limit): (&'a dyn CostModel, &Limit),
    setup: &TrainingSetup,
    placement: Placement,
    grid: &DeviceGrid,
    (micro_batch, counts, num_micro_batches): (usize, Vec<usize>, usize),
    tables: Option<Result<StageTables>>,
    (grid_tables, estimator): (&mut dyn GridTables<'a>, &mut Option<LayoutEstimator<'a>>),
) -> Outcome {
    let cand = Candidate {
        grid,
        setup,
        micro_batch,
        num_micro_batches,
    };
    let boundaries = match tables {
        None => {
            let v = setup.virtual_stages();
            match even_block_split(inputs.model, grid.pp * v) {
                Ok(b) => b,
                Err(why) => return Outcome::Skipped(format!("pp {}: {why}", grid.pp)),
            }
        }
        Some(tables) => {
            let tables = match tables {
                Ok(t) => t,
                Err(e) => return Outcome::Skipped(e.to_string()),
            };
            let finite = |rows: &[Vec<f64>]| rows.iter().flatten().all(|x| x.is_finite());
            if !finite(&tables.compute_prefix) || !finite(&tables.cut) {
                return Outcome::Skipped(
                    "a compute or transfer time is not a finite number (check the profile's times and the layers' sizes)".into(),
                );
            }
            let layers = inputs.model.num_layers();
            let split = model.preferred_split(inputs, &cand, &tables).or_else(|| {
                best_partition(layers, grid.pp, num_micro_batches, &tables).map(|p| p.boundaries)
            });
            let Some(boundaries) = split else {
                // With a memory model, no split fitting memory; without one,
                // no split at all (too few layers for the stages).
                return match tables.memory {
                    Some(_) => Outcome::Infeasible,
                    None => Outcome::Skipped(format!(
                        "no split of {layers} layers into {} stages of at least {} layers each",
                        grid.pp, tables.min_layers
                    )),
                };
            };
            boundaries
        }
    };
    let mut plan = plan_from_grid(grid, &boundaries, micro_batch, num_micro_batches, setup);
    crate::uneven::set_micro_batches(&mut plan, counts);
    // The placement's plans at every micro-batch size share one estimator:
    // its network is priced once, not once per size.
    if estimator.is_none() {
        match grid_tables.layout_estimator(&plan) {
            Ok(e) => *estimator = Some(e),
            Err(e) => return Outcome::Skipped(e.to_string()),
        }
    }
    let Some(estimator) = estimator.as_deref() else {
        return Outcome::Skipped("no estimator".into());
    };
    // Plans that do not fit are dropped before their time is priced, and
    // once plans enough are priced, those a lower bound proves slower than
    // them are not simulated.
    let estimate = match limit.limit_s() {
        None => match estimator.estimate_if_fits(&plan) {
            Ok(Some(e)) => e,
            Ok(None) => return Outcome::Infeasible,
            Err(e) => return Outcome::Skipped(e.to_string()),
        },
        Some(limit_s) => match estimator.lower_bound_if_fits(&plan) {
            Ok(None) => return Outcome::Infeasible,
            Ok(Some(bound)) if bound.is_finite() && bound > limit_s => return Outcome::Slower,
            Ok(Some(_)) => match estimator.estimate(&plan) {
                Ok(e) => e,
                Err(e) => return Outcome::Skipped(e.to_string()),
            },
            Err(e) => return Outcome::Skipped(e.to_string()),
        },
    };
    if !(estimate.iteration_s.is_finite() && estimate.iteration_s > 0.0) {
        return Outcome::Skipped(format!(
            "the predicted iteration time is {} (check the profile's times and the layers' sizes)",
            estimate.iteration_s
        ));
    }
    limit.offer(nanos(estimate.iteration_s));
    Outcome::Priced(Box::new(RankedPlan {
        tp: grid.tp,
        dp: grid.dp,
        pp: grid.pp,
        micro_batch,
        num_micro_batches,
        placement,
        plan,
        estimate,
    }))
}

/// Times are compared at nanosecond resolution so that plans equal up to
/// rounding keep the enumeration order (micro-batch, tp, dp, placement).
pub(crate) fn rank_key(p: &RankedPlan) -> i64 {
    nanos(p.estimate.iteration_s)
}

/// A ranking value at nanosecond (nano-dollar) resolution.
fn nanos(v: f64) -> i64 {
    (v * 1e9).round() as i64
}

/// Searches every (tp, dp, pp), micro-batch size and placement for
/// `opts.global_batch`, splits each candidate with the partitioner and prices
/// it with `model`; returns the plans that fit, fastest first. Errors on
/// invalid inputs, and with [`AmpError::NoPlan`] when no candidate fits.
pub fn search(
    inputs: &Inputs,
    model: &dyn CostModel,
    opts: &SearchOptions,
) -> Result<SearchResult> {
    inputs.model.validate()?;
    inputs.cluster.validate()?;
    opts.setup.check()?;
    limits::check_count(opts.global_batch as u64, 1, limits::MAX_GLOBAL_BATCH as u64)
        .map_err(|m| AmpError::invalid("global batch", m))?;
    let layers = inputs.model.num_layers();
    let complete = with_every_link(inputs.cluster);
    let inputs = &Inputs {
        model: inputs.model,
        cluster: complete.as_ref().unwrap_or(inputs.cluster),
        profile: inputs.profile,
    };
    let mut degrees = degree_candidates(inputs.cluster, layers, opts.global_batch, opts.uneven_dp);
    // Degrees that do not split the attention heads are no plans at all.
    let refused = degrees.iter().find_map(|d| inputs.model.tp_refusal(d.0));
    let mut sized_tps: Vec<usize> = degrees.iter().map(|d| d.0).collect();
    sized_tps.dedup();
    degrees.retain(|d| inputs.model.tp_refusal(d.0).is_none());
    if let (true, Some(why)) = (degrees.is_empty(), refused) {
        // The sizes may have left only such a tp (a node of 7 GPUs whose
        // tp 1 would need more stages than layers): say which, and what
        // else would give others.
        let n = inputs.cluster.num_devices();
        let tps = sized_tps
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(AmpError::NoPlan(format!(
            "no (tp, dp, pp) for {n} GPUs, {layers} layers and global batch {} has a tp that splits the model's attention: the sizes allow tp {tps} alone, and {why}; try a global batch that shares a factor with {n}, or --subsets to leave some GPUs idle",
            opts.global_batch
        )));
    }
    // Nor are those the engine cannot run at their tp and micro-batch.
    let untileable = |&(tp, _, _, mbs): &(usize, usize, usize, usize)| {
        opts.setup.tiling_refusal(inputs.model, tp, mbs)
    };
    let refused = degrees.iter().find_map(untileable);
    degrees.retain(|d| untileable(d).is_none());
    if let (true, Some(why)) = (degrees.is_empty(), refused) {
        let engine = opts
            .setup
            .engine
            .map_or("the engine".to_string(), |e| e.to_string());
        return Err(AmpError::NoPlan(format!(
            "no tp and micro-batch that {engine} can run: {why}"
        )));
    }
    if degrees.is_empty() {
        let n = inputs.cluster.num_devices();
        return Err(AmpError::NoPlan(format!(
            "no (tp, dp, pp) fits {n} GPUs, {layers} layers and global batch {}: dp must divide the global batch and pp = {n} / (tp x dp) be at most {layers}; try a global batch that shares a factor with {n}",
            opts.global_batch
        )));
    }
    let classes = node_classes(inputs.cluster);
    let (orders, node_order_search) = match opts.placement {
        PlacementSearch::Full => {
            let (orders, how) = node_orders_bounded(inputs.cluster, opts.max_node_orders);
            (orders, Some(how))
        }
        PlacementSearch::Artifact => (Vec::new(), None),
    };
    // Each distinct (tp, dp, pp) with its placements, and the candidates as
    // small index tuples (degrees, placement, micro-batch, micro-batches).
    let mut triples: Vec<(Degrees, Vec<Placement>)> = Vec::new();
    let mut triple_index: std::collections::HashMap<Degrees, usize> = Default::default();
    let mut jobs: Vec<(usize, usize, usize, usize)> = Vec::new();
    for &(tp, dp, pp, mbs) in &degrees {
        let t = *triple_index.entry((tp, dp, pp)).or_insert_with(|| {
            triples.push((
                (tp, dp, pp),
                placements(
                    inputs.cluster,
                    (tp, dp, pp),
                    opts.placement,
                    &orders,
                    &classes,
                    opts.setup.engine,
                ),
            ));
            triples.len() - 1
        });
        // Micro-batches of the whole iteration (each replica's share is
        // dealt when the candidate is priced).
        let total = opts.global_batch / mbs;
        jobs.extend((0..triples[t].1.len()).map(|p| (t, p, mbs, total)));
    }
    let candidates = jobs.len();
    // The candidates of one placement (all its micro-batch sizes) are
    // priced together, in enumeration order, so they share its grid and
    // network prices; each keeps its enumeration index for the ranking.
    // (degrees, placement, [(index, micro-batch, micro-batches)])
    type PlacementGroup = (usize, usize, Vec<(usize, usize, usize)>);
    let mut groups: Vec<PlacementGroup> = Vec::new();
    let mut group_of: std::collections::HashMap<(usize, usize), usize> = Default::default();
    for (index, (t, p, mbs, total)) in jobs.into_iter().enumerate() {
        let g = *group_of.entry((t, p)).or_insert_with(|| {
            groups.push((t, p, Vec::new()));
            groups.len() - 1
        });
        groups[g].2.push((index, mbs, total));
    }
    drop(group_of);
    // The refinement looks at the leading REFINE_POOL plans whatever the
    // caller keeps, so the ranking does not depend on `keep`.
    let keep = opts.keep.max(crate::refine::REFINE_POOL);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let limit = Limit::new(keep);
    // Shared by the grids' tables and the refinement's estimators.
    let estimators = model.layout_estimators(inputs);
    let tally = groups
        .into_par_iter()
        .flat_map_iter(|(t, p, members)| {
            let (degrees, places) = &triples[t];
            let priced = price_placement(
                inputs,
                (model, estimators.as_ref(), &limit),
                &opts.setup,
                *degrees,
                &places[p],
                &members,
            );
            if let Some(report) = opts.progress {
                let n = done.fetch_add(priced.len(), std::sync::atomic::Ordering::Relaxed)
                    + priced.len();
                report(n, candidates);
            }
            priced
        })
        .fold(Tally::default, |mut acc, (index, o)| {
            acc.add(index, o, keep);
            acc
        })
        .reduce(Tally::default, |a, b| a.merge(b, keep));
    let (mut plans, mut result) = tally.finish(keep).into_plans_and_counts(candidates);
    crate::refine::refine_leading(
        inputs,
        (model, estimators.as_ref()),
        &mut plans,
        rank_key,
        opts.uneven_dp,
    );
    plans.truncate(opts.keep.max(1));
    if plans.is_empty() {
        return Err(AmpError::NoPlan(no_plan_reason(
            &result,
            &[opts.setup],
            inputs.cluster.num_devices(),
        )));
    }
    result.plans = plans;
    result.node_orders = node_order_search;
    Ok(result)
}

/// Why a search with these counts found nothing: the candidates rejected,
/// how many for memory, how many unpriced, and each reason; when every
/// candidate was over memory, what else to try ([`memory_hint`]) beyond
/// the setups `tried` on a cluster of `gpus` GPUs.
pub(crate) fn no_plan_reason(r: &SearchResult, tried: &[TrainingSetup], gpus: usize) -> String {
    let mut why = format!("all {} candidates were rejected", r.candidates);
    if r.infeasible > 0 {
        why.push_str(&format!("; {} do not fit in GPU memory", r.infeasible));
    }
    if r.unpriced > 0 {
        why.push_str(&format!("; {} could not be priced", r.unpriced));
    }
    for s in &r.skipped {
        why.push_str("; ");
        why.push_str(s);
    }
    if r.infeasible > 0 && r.infeasible == r.candidates {
        why.push_str(&memory_hint(tried, gpus));
    }
    why
}

/// How [`memory_hint`] starts: a search over setups finds it in each
/// setup's reason, to give one hint for them all.
pub(crate) const MEMORY_HINT_START: &str = ". To fit, ";

/// What to try when no candidate fits in memory under the setups `tried`:
/// more GPUs, and the optimizer sharding and recomputation none of them
/// reached (never one already tried: a user who searched them all is told
/// so, not sent to search them again). Sharding needs data parallelism, so
/// it is no way on one GPU.
pub(crate) fn memory_hint(tried: &[TrainingSetup], gpus: usize) -> String {
    use crate::setup::{OptimizerSharding as Z, Recompute as R};
    // Past the furthest any setup went, and only what the engine runs
    // (torchtitan shards with FSDP alone, DeepSpeed recomputes whole layers).
    let base = tried.first().copied().unwrap_or_default();
    let runs = |s: TrainingSetup| s.check().is_ok();
    let sharded = tried.iter().map(|s| s.optimizer_sharding).max();
    let recomputed = tried.iter().map(|s| s.recompute).max();
    let shard: Vec<&str> = [Z::Zero1, Z::Zero2, Z::Zero3]
        .into_iter()
        .filter(|&z| {
            gpus > 1
                && Some(z) > sharded
                && runs(TrainingSetup {
                    optimizer_sharding: z,
                    ..base
                })
        })
        .map(Z::name)
        .collect();
    let recompute: Vec<&str> = [R::Selective, R::Full]
        .into_iter()
        .filter(|&r| {
            Some(r) > recomputed
                && runs(TrainingSetup {
                    recompute: r,
                    ..base
                })
        })
        .map(R::name)
        .collect();
    let mut ways = vec!["use more GPUs or GPUs with more memory".to_string()];
    if !shard.is_empty() {
        ways.push(format!(
            "shard the optimizer state (--optimizer-sharding {})",
            shard.join(", ")
        ));
    }
    if !recompute.is_empty() {
        ways.push(format!(
            "recompute activations (--recompute {})",
            recompute.join(", ")
        ));
    }
    let mut hint = format!("{MEMORY_HINT_START}{}", ways.join(", "));
    // Only what no setup tried goes to --search-setup: a setup flag that
    // fixed it (`--recompute selective`) cannot be searched beside it.
    let searchable: Vec<&str> = [
        (!shard.is_empty() && sharded == Some(Z::None), "sharding"),
        (
            !recompute.is_empty() && recomputed == Some(R::None),
            "recompute",
        ),
    ]
    .into_iter()
    .filter_map(|(ok, name)| ok.then_some(name))
    .collect();
    if ways.len() > 1 && !searchable.is_empty() {
        hint.push_str(&format!(
            ", or let amp try {} (--search-setup {})",
            if searchable.len() > 1 { "those" } else { "it" },
            searchable.join(",")
        ));
    } else if ways.len() == 1 && gpus > 1 {
        hint.push_str(
            ", or a shorter sequence or a smaller model: the setups tried already shard the optimizer state and recompute activations as far as the engine goes",
        );
    } else if ways.len() == 1 {
        hint.push_str(
            ", or a shorter sequence or a smaller model: the setups tried already recompute activations as far as the engine goes, and sharding the optimizer state needs more than one GPU",
        );
    }
    hint
}

/// At most this many node pairs get an explicit link in [`with_every_link`]
/// (24 MB of links).
const MAX_COMPLETE_LINKS: usize = 1 << 20;

/// A cluster with pair links, with every node pair given its link (the
/// default one where the file has none) in pair order, so that
/// [`Cluster::link_bytes_per_s`] finds each by binary search instead of
/// scanning every link: with Sailor-style pair links between three types of
/// 64 nodes (12,288 links) the scans took 80% of the search. `None` when
/// the cluster has no links (nothing to scan) or too many nodes for
/// [`MAX_COMPLETE_LINKS`] (then the file's links are only sorted). The
/// bandwidth of every pair is unchanged.
pub(crate) fn with_every_link(cluster: &Cluster) -> Option<Cluster> {
    if cluster.links.is_empty() {
        return None;
    }
    let n = cluster.nodes.len();
    let key = |l: &NodeLink| (l.nodes[0].min(l.nodes[1]), l.nodes[0].max(l.nodes[1]));
    let mut links = cluster.links.clone();
    links.sort_by_key(key);
    if n.saturating_mul(n.saturating_sub(1)) / 2 <= MAX_COMPLETE_LINKS {
        let given = links;
        let mut at = 0;
        links = Vec::with_capacity(n * (n - 1) / 2);
        for a in 0..n {
            for b in a + 1..n {
                if at < given.len() && key(&given[at]) == (a, b) {
                    links.push(given[at]);
                    at += 1;
                } else {
                    let default = cluster.nodes[a]
                        .inter_bytes_per_s
                        .min(cluster.nodes[b].inter_bytes_per_s);
                    links.push(NodeLink {
                        nodes: [a, b],
                        bytes_per_s: default,
                    });
                }
            }
        }
    }
    Some(Cluster {
        name: cluster.name.clone(),
        nodes: cluster.nodes.clone(),
        links,
    })
}

/// The limit a candidate must beat to be among the fastest `keep` plans
/// priced so far, shared by the threads of a search (the [`Tally`]s fold
/// apart). A candidate whose lower bound is above it cannot be among the
/// plans kept at the end, whatever is priced after it, so it is not
/// simulated ([`Outcome::Slower`], counted as priced, as a plan priced and
/// not kept is): which candidates are simulated depends on the threads,
/// the plans kept and every count do not.
struct Limit {
    keep: usize,
    /// The fastest `keep` times priced so far, in ranking nanoseconds,
    /// sorted; nothing while `keep` is too large to hold.
    best: std::sync::Mutex<Vec<i64>>,
}

impl Limit {
    /// Most plans kept for which a limit is held (a search keeping more,
    /// as a report of every plan does, simulates every candidate).
    const MAX_KEEP: usize = 1 << 16;

    fn new(keep: usize) -> Limit {
        Limit {
            keep,
            best: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// As [`Tally::limit_s`]: one nanosecond above the `keep`-th time;
    /// `None` while fewer are priced.
    fn limit_s(&self) -> Option<f64> {
        let best = self.best.lock().unwrap_or_else(|e| e.into_inner());
        (self.keep <= Self::MAX_KEEP && best.len() >= self.keep.max(1))
            .then(|| (best[self.keep.max(1) - 1] + 1) as f64 / 1e9)
    }

    /// Records a priced plan's ranking time.
    fn offer(&self, nanos: i64) {
        if self.keep > Self::MAX_KEEP {
            return;
        }
        let mut best = self.best.lock().unwrap_or_else(|e| e.into_inner());
        let at = best.partition_point(|&t| t <= nanos);
        if at < self.keep.max(1) {
            best.insert(at, nanos);
            best.truncate(self.keep.max(1));
        }
    }
}

/// What the parallel search folds its outcomes into: the fastest `keep`
/// plans so far by (time, enumeration index), so that the result does not
/// depend on how rayon splits the work, and the counts.
#[derive(Default)]
pub(crate) struct Tally {
    best: Vec<(i64, usize, Box<RankedPlan>)>,
    infeasible: usize,
    unpriced: usize,
    /// Each reason once, with the first candidate that gave it.
    skipped: Vec<(usize, String)>,
}

impl Tally {
    pub(crate) fn add(&mut self, index: usize, o: Outcome, keep: usize) {
        match o {
            Outcome::Priced(p) => {
                self.best.push((rank_key(&p), index, p));
                // Prune only when twice over, so each plan is sorted O(1) times.
                if self.best.len() >= keep.saturating_mul(2) {
                    self.prune(keep);
                }
            }
            Outcome::Infeasible => self.infeasible += 1,
            Outcome::Slower => {}
            Outcome::Skipped(why) => {
                self.unpriced += 1;
                self.note(index, why);
            }
        }
    }

    fn note(&mut self, index: usize, why: String) {
        match self.skipped.iter_mut().find(|(_, w)| *w == why) {
            Some(first) => first.0 = first.0.min(index),
            None => self.skipped.push((index, why)),
        }
    }

    fn prune(&mut self, keep: usize) {
        self.best.sort_by_key(|(t, i, _)| (*t, *i));
        self.best.truncate(keep);
    }

    pub(crate) fn merge(mut self, other: Tally, keep: usize) -> Tally {
        self.best.extend(other.best);
        if self.best.len() >= keep.saturating_mul(2) {
            self.prune(keep);
        }
        self.infeasible += other.infeasible;
        self.unpriced += other.unpriced;
        for (index, why) in other.skipped {
            self.note(index, why);
        }
        self
    }

    /// The limit a candidate must beat to be among the `keep` fastest so
    /// far, in seconds: a plan whose iteration time is above it ranks after
    /// all of them (one nanosecond above the `keep`-th key, so that not even
    /// a tie at ranking resolution lets it in); infinite while fewer are
    /// kept.
    pub(crate) fn limit_s(&mut self, keep: usize) -> f64 {
        if self.best.len() < keep.max(1) {
            return f64::INFINITY;
        }
        self.prune(keep);
        (self.best[keep.max(1) - 1].0 + 1) as f64 / 1e9
    }

    pub(crate) fn finish(mut self, keep: usize) -> Tally {
        self.prune(keep);
        self.skipped.sort_by_key(|(i, _)| *i);
        self
    }

    /// The kept plans, fastest first, and a result with the counts of
    /// `candidates` candidates (plans still to be placed in it).
    pub(crate) fn into_plans_and_counts(
        self,
        candidates: usize,
    ) -> (Vec<RankedPlan>, SearchResult) {
        let counts = SearchResult {
            candidates,
            infeasible: self.infeasible,
            unpriced: self.unpriced,
            skipped: self.skipped.into_iter().map(|(_, why)| why).collect(),
            ..SearchResult::empty()
        };
        (self.best.into_iter().map(|(_, _, p)| *p).collect(), counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::builtin as clusters;

    /// The memory hint names only what the setups tried did not reach, and
    /// only what the engine runs.
    #[test]
    fn memory_hints_name_only_what_was_not_tried() {
        use crate::setup::{Engine, OptimizerSharding as Z, Recompute as R};
        let base = TrainingSetup::default();
        let hint = memory_hint(&[base], 8);
        assert!(hint.starts_with(MEMORY_HINT_START), "{hint}");
        assert!(
            hint.contains("--optimizer-sharding zero1, zero2, zero3"),
            "{hint}"
        );
        assert!(hint.contains("--recompute selective, full"), "{hint}");
        assert!(
            hint.ends_with("or let amp try those (--search-setup sharding,recompute)"),
            "{hint}"
        );
        // A setup flag fixed what --search-setup would search (an error
        // beside it): the hint names only the flag for the rest.
        for r in [R::Selective, R::Full] {
            let fixed = TrainingSetup {
                recompute: r,
                ..base
            };
            let hint = memory_hint(&[fixed], 8);
            assert!(
                hint.ends_with("or let amp try it (--search-setup sharding)"),
                "{hint}"
            );
        }
        // Across setups: the furthest each went counts.
        let z1 = TrainingSetup {
            optimizer_sharding: Z::Zero1,
            ..base
        };
        let selective = TrainingSetup {
            recompute: R::Selective,
            ..base
        };
        let hint = memory_hint(&[base, z1, selective], 8);
        assert!(
            hint.contains("--optimizer-sharding zero2, zero3)"),
            "{hint}"
        );
        assert!(hint.contains("--recompute full)"), "{hint}");
        assert!(!hint.contains("--search-setup"), "{hint}");
        let furthest = TrainingSetup {
            optimizer_sharding: Z::Zero3,
            recompute: R::Full,
            ..base
        };
        for tried in [&[furthest][..], &[base, furthest][..]] {
            let hint = memory_hint(tried, 8);
            assert!(!hint.contains("--"), "{hint}");
            assert!(hint.contains("more GPUs"), "{hint}");
        }
        // One GPU: sharding has no replicas to shard over.
        let hint = memory_hint(&[base], 1);
        assert!(!hint.contains("sharding"), "{hint}");
        assert!(
            hint.ends_with("or let amp try it (--search-setup recompute)"),
            "{hint}"
        );
        let full = TrainingSetup {
            recompute: R::Full,
            ..base
        };
        let hint = memory_hint(&[full], 1);
        assert!(!hint.contains("--"), "{hint}");
        assert!(hint.contains("needs more than one GPU"), "{hint}");
        // DeepSpeed recomputes whole layers only.
        let deepspeed = base.on_engine(Engine::DeepSpeed);
        let hint = memory_hint(&[deepspeed], 8);
        assert!(hint.contains("--recompute full)"), "{hint}");
    }

    #[test]
    fn artifact_candidate_count() {
        // 53 candidates for GPT-2 on 16 GPUs with batch 32, 65 with 64.
        assert_eq!(
            degree_candidates(&clusters::homogeneous(), 30, 32, false).len(),
            53
        );
        assert_eq!(
            degree_candidates(&clusters::het_model(), 56, 64, false).len(),
            65
        );
    }

    /// Three nodes of four T4: dp 3, 6 and 12 do not divide a batch of 32.
    /// Without uneven data parallelism they are not candidates; with it,
    /// their plans deal the 32 samples as evenly as they go.
    #[test]
    fn uneven_dp_searches_degrees_that_do_not_divide_the_batch() {
        let mut cluster = clusters::homogeneous();
        cluster.nodes.truncate(3);
        let even = degree_candidates(&cluster, 30, 32, false);
        assert!(even.iter().all(|&(_, dp, _, _)| 32 % dp == 0));
        let uneven = degree_candidates(&cluster, 30, 32, true);
        assert!(uneven.contains(&(1, 12, 1, 2)) && !uneven.contains(&(1, 12, 1, 4)));
        assert!(even.iter().all(|c| uneven.contains(c)));
        let model = crate::model::builtin::amp_gpt2();
        let profile = crate::profile::uniform_profile(
            30,
            &[("T4", 1, 0.002), ("T4", 2, 0.0012), ("T4", 4, 0.0008)],
        );
        let inputs = Inputs {
            model: &model,
            cluster: &cluster,
            profile: &profile,
        };
        let opts = SearchOptions {
            uneven_dp: true,
            ..SearchOptions::new(32, PlacementSearch::Artifact, TrainingSetup::default())
        };
        let dm = crate::cost::device::DeviceModel::default();
        let r = search(&inputs, &dm, &opts).unwrap();
        assert!(r.plans.iter().any(|p| p.plan.is_uneven()));
        for p in &r.plans {
            p.plan.validate(&model, &cluster).unwrap();
            assert_eq!(p.plan.global_batch(), 32);
            assert_eq!(p.num_micro_batches, p.plan.num_micro_batches);
        }
        let plain = search(
            &inputs,
            &dm,
            &SearchOptions {
                uneven_dp: false,
                ..opts
            },
        )
        .unwrap();
        assert!(plain.plans.iter().all(|p| !p.plan.is_uneven()));
        assert!(r.candidates > plain.candidates);
        // Interleaved: uneven replicas get whole groups of pp micro-batches.
        let setup = TrainingSetup {
            schedule: crate::schedule::Schedule::Interleaved { virtual_stages: 2 },
            ..TrainingSetup::default()
        };
        let r = search(&inputs, &dm, &SearchOptions { setup, ..opts }).unwrap();
        let uneven: Vec<&Plan> = r
            .plans
            .iter()
            .map(|p| &p.plan)
            .filter(|p| p.is_uneven() && p.pp() > 1)
            .collect();
        assert!(!uneven.is_empty());
        for p in uneven {
            assert!(
                p.replica_micro_batches.iter().all(|b| b % p.pp() == 0),
                "{p:?}"
            );
            assert_eq!(p.global_batch(), 32);
        }
    }

    fn link(a: usize, b: usize, bytes_per_s: f64) -> crate::cluster::NodeLink {
        crate::cluster::NodeLink {
            nodes: [a, b],
            bytes_per_s,
        }
    }

    #[test]
    fn nodes_whose_links_differ_stay_apart() {
        let mut c = clusters::het_model();
        assert_eq!(node_classes(&c), vec![0, 0, 0, 0]);
        // 0-2 slow: swapping 0 and 2 changes nothing, but 0 and 1 differ
        // (0 reaches 2 slowly, 1 does not).
        c.links.push(link(0, 2, 1e9));
        assert_eq!(node_classes(&c), vec![0, 1, 0, 1]);
        // 0-3 slow too: 0 is unlike every other node; 1 reaches no one
        // slowly, 2 and 3 each reach 0 slowly.
        c.links.push(link(0, 3, 1e9));
        assert_eq!(node_classes(&c), vec![0, 1, 2, 2]);
        // Same link, other bandwidth: 2 and 3 part.
        c.links[1].bytes_per_s = 2e9;
        assert_eq!(node_classes(&c), vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_link_at_the_default_bandwidth_is_no_link() {
        let mut c = clusters::het_model();
        let default = c.nodes[0].inter_bytes_per_s;
        c.links.push(link(1, 3, default));
        assert_eq!(node_classes(&c), vec![0, 0, 0, 0]);
    }

    /// Two zones of `per_zone` V100 nodes each, every cross-zone pair linked
    /// alike (Sailor's layout): the nodes of a zone are one class.
    fn two_zones(per_zone: usize) -> Cluster {
        let mut c = clusters::het_model();
        let node = c.nodes[0].clone();
        c.nodes = vec![node; 2 * per_zone];
        for a in 0..per_zone {
            for b in per_zone..2 * per_zone {
                c.links.push(link(a, b, 0.5e9));
            }
        }
        c
    }

    #[test]
    fn zones_linked_alike_collapse_into_one_class_each() {
        let c = two_zones(4);
        assert_eq!(node_classes(&c), vec![0, 0, 0, 0, 1, 1, 1, 1]);
        // 8! / (4! 4!) = 70 orders, not 8! = 40,320.
        let (orders, how) = node_orders_bounded(&c, MAX_NODE_ORDERS);
        assert_eq!((orders.len(), how), (70, NodeOrderSearch::Exhaustive));
        // One node of zone 1 gets a faster link to node 0: it leaves its class.
        let mut d = c.clone();
        let i = d.links.iter().position(|l| l.nodes == [0, 7]).unwrap();
        d.links[i].bytes_per_s = 1e9;
        assert_eq!(node_classes(&d), vec![0, 1, 1, 1, 2, 2, 2, 3]);
    }

    #[test]
    fn too_many_class_orders_keep_each_class_together() {
        // 40 + 40 nodes: C(80, 40) orders; the heuristic tries 2.
        let c = two_zones(40);
        let (orders, how) = node_orders_bounded(&c, MAX_NODE_ORDERS);
        assert_eq!(how, NodeOrderSearch::ClassesTogether);
        let zone = |o: &Vec<usize>| o.iter().map(|&n| n / 40).collect::<Vec<_>>();
        let firsts: Vec<usize> = orders.iter().map(|o| zone(o)[0]).collect();
        assert_eq!(firsts, vec![0, 1]);
        for o in &orders {
            let z = zone(o);
            assert_eq!(z.windows(2).filter(|w| w[0] != w[1]).count(), 1, "{z:?}");
        }
        // The bound holds however many classes there are.
        assert_eq!(node_orders_bounded(&c, 1).0.len(), 1);
    }

    /// The search over class orders finds the same best time as pricing
    /// every permutation of the nodes with every axis order: nodes of one
    /// class are interchangeable, so deduplicating them loses nothing.
    #[test]
    fn class_orders_lose_nothing_against_every_node_permutation() {
        use crate::cost::device::DeviceModel;
        use crate::profile::{Profile, ProfileEntry};
        // V100 nodes 0 and 1 reach the T4 node 3 over one slow link each, node
        // 2 over a faster one: classes {0, 1}, {2}, {3}.
        let mut c = clusters::het_cluster();
        c.links = vec![link(0, 3, 0.2e9), link(1, 3, 0.2e9), link(2, 3, 0.9e9)];
        assert_eq!(node_classes(&c), vec![0, 0, 1, 2]);
        let m = crate::model::builtin::gpt2(4, 256, 128, 1000);
        let layers = m.num_layers();
        let entry = |gpu: &str, s: f64| ProfileEntry {
            gpu: gpu.into(),
            tp: 1,
            micro_batch: None,
            forward_s: vec![s; layers],
            backward_s: None,
            optimizer_s: None,
            source: None,
        };
        let profile = Profile {
            entries: vec![entry(clusters::V100, 1e-4), entry(clusters::T4, 3e-4)],
            precision: None,
        };
        let inputs = Inputs {
            model: &m,
            cluster: &c,
            profile: &profile,
        };
        // The device model with the partitioner's splits final: the search
        // refines no split, so it must equal the exhaustive pricing below.
        let cost = DeviceModel::new(crate::cost::device::DeviceOptions {
            refine_splits: false,
            ..Default::default()
        });
        let setup = TrainingSetup::default();
        let batch = 16;
        let found = search(
            &inputs,
            &cost,
            &SearchOptions::new(batch, PlacementSearch::Full, setup),
        )
        .unwrap();
        assert_eq!(found.node_orders, Some(NodeOrderSearch::Exhaustive));
        let shared = cost.layout_estimators(&inputs);
        let mut best = f64::INFINITY;
        let mut priced = 0;
        let mut nodes: Vec<usize> = (0..4).collect();
        let mut orders = Vec::new();
        loop {
            orders.push(nodes.clone());
            // Next permutation in lexicographic order.
            let Some(i) = (1..4).rev().find(|&i| nodes[i - 1] < nodes[i]) else {
                break;
            };
            let j = (i..4).rev().find(|&j| nodes[j] > nodes[i - 1]).unwrap();
            nodes.swap(i - 1, j);
            nodes[i..].reverse();
        }
        assert_eq!(orders.len(), 24);
        for (tp, dp, pp, mbs) in degree_candidates(&c, layers, batch, false) {
            for axis_order in AxisOrder::all() {
                for order in &orders {
                    let p = Placement {
                        axis_order,
                        node_order: order.clone(),
                    };
                    priced += 1;
                    let mut o = price_placement(
                        &inputs,
                        (&cost, shared.as_ref(), &Limit::new(usize::MAX)),
                        &setup,
                        (tp, dp, pp),
                        &p,
                        &[(0, mbs, batch / mbs)],
                    );
                    if let Some((_, Outcome::Priced(r))) = o.pop() {
                        best = best.min(r.estimate.iteration_s);
                    }
                }
            }
        }
        assert!(
            found.candidates * 4 < priced,
            "{} vs {priced}",
            found.candidates
        );
        assert_eq!(found.plans[0].estimate.iteration_s, best);
    }

    #[test]
    fn node_orders_are_the_distinct_orders_of_the_classes() {
        // Exhaustive below the bound: every distinct class sequence once.
        let mut c = two_zones(2);
        c.nodes[3].nics = 2;
        let classes = node_classes(&c);
        assert_eq!(classes, vec![0, 0, 1, 2]);
        let orders = node_orders(&c);
        let seqs: HashSet<Vec<usize>> = orders
            .iter()
            .map(|o| o.iter().map(|&n| classes[n]).collect())
            .collect();
        assert_eq!((orders.len(), seqs.len()), (12, 12));
    }

    #[test]
    fn node_orders_skip_identical_nodes() {
        assert_eq!(node_orders(&clusters::homogeneous()).len(), 1);
        let het = node_orders(&clusters::het_cluster());
        assert_eq!(het.len(), 4);
        for o in &het {
            let mut s = o.clone();
            s.sort();
            assert_eq!(s, vec![0, 1, 2, 3]);
        }
    }

    /// Candidates a lower bound proves slower than the plans kept so far
    /// are not simulated, and that changes nothing: on GPT-2 over AMP's
    /// 12 V100 + 4 T4, every placement, the 64 plans kept (the
    /// refinement's pool) and every count are those of a search that
    /// simulates every candidate (pruning at half the limit fails this);
    /// and slow candidates are proven slower than the fastest plan. That
    /// the bound is one: `tests/refine.rs`.
    #[test]
    fn candidates_proven_slower_change_no_plan_and_no_count() {
        let cluster = clusters::het_cluster();
        let model = crate::model::builtin::amp_gpt2();
        let profile = crate::profile::uniform_profile(
            30,
            &[
                ("V100-16GB", 1, 0.0024),
                ("T4", 1, 0.0072),
                ("V100-16GB", 2, 0.0014),
                ("T4", 2, 0.004),
            ],
        );
        let inputs = Inputs {
            model: &model,
            cluster: &cluster,
            profile: &profile,
        };
        let dm = crate::cost::device::DeviceModel::default();
        let shared = dm.layout_estimators(&inputs);
        for uneven_dp in [false, true] {
            let opts = |keep: usize| SearchOptions {
                uneven_dp,
                keep,
                ..SearchOptions::new(32, PlacementSearch::Full, TrainingSetup::default())
            };
            // Above Limit::MAX_KEEP: no limit, every candidate simulated.
            let all = search(&inputs, &dm, &opts(usize::MAX)).unwrap();
            let few = search(&inputs, &dm, &opts(64)).unwrap();
            assert_eq!(few.plans.as_slice(), &all.plans[..64]);
            let counts =
                |r: &SearchResult| (r.candidates, r.infeasible, r.unpriced, r.skipped.clone());
            assert_eq!(counts(&few), counts(&all));
            assert!(all.plans.len() > 100, "{}", all.plans.len());
            // The slowest plans, against a limit just above the fastest.
            let limit = Limit::new(1);
            limit.offer(rank_key(&all.plans[0]));
            let slower = all.plans[all.plans.len() - 10..]
                .iter()
                .filter(|p| {
                    let o = price_placement(
                        &inputs,
                        (&dm, shared.as_ref(), &limit),
                        &TrainingSetup::default(),
                        (p.tp, p.dp, p.pp),
                        &p.placement,
                        &[(0, p.micro_batch, 32 / p.micro_batch)],
                    );
                    matches!(o.as_slice(), [(0, Outcome::Slower)])
                })
                .count();
            assert!(slower > 5, "{slower} of the 10 slowest proven slower");
        }
    }

    #[test]
    fn the_limit_is_one_nanosecond_above_the_kept_plans_slowest() {
        let limit = Limit::new(2);
        assert_eq!(limit.limit_s(), None);
        for t in [50, 30, 40, 10] {
            limit.offer(t);
        }
        assert_eq!(limit.limit_s(), Some(31e-9));
        assert_eq!(Limit::new(usize::MAX).limit_s(), None);
    }
}
