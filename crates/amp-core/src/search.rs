//! The search: every (tp, dp, pp), micro-batch size and placement, each
//! split by the partitioner (exact for the stage tables' closed form) and
//! priced by one cost model; the leading plans' splits are then refined
//! under the full estimate ([`crate::refine`]).

use std::collections::HashSet;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, Node};
use crate::cost::{Candidate, CostModel, Estimate, Inputs};
use crate::error::{AmpError, Result};
use crate::limits;
use crate::partition::{even_block_split, optimal_partition};
use crate::placement::{AxisOrder, DeviceGrid, Placement};
use crate::plan::{Plan, Stage};
use crate::setup::TrainingSetup;

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
/// used to break exact ties).
pub(crate) fn degree_candidates(
    cluster: &Cluster,
    num_layers: usize,
    global_batch: usize,
) -> Vec<(usize, usize, usize, usize)> {
    let n = cluster.num_devices();
    let node_min = cluster.min_gpus_per_node();
    let mut out = Vec::new();
    for tp in divisors(node_min) {
        if !n.is_multiple_of(tp) || cluster.nodes.iter().any(|nd| !nd.gpus.is_multiple_of(tp)) {
            continue;
        }
        for dp in divisors(n / tp) {
            if !global_batch.is_multiple_of(dp) {
                continue;
            }
            let pp = n / (tp * dp);
            if pp > num_layers {
                continue;
            }
            for mbs in divisors(global_batch / dp) {
                out.push((tp, dp, pp, mbs));
            }
        }
    }
    out.sort_by_key(|&(tp, dp, _, mbs)| (mbs, tp, dp));
    out
}

fn same_class(a: &Node, b: &Node) -> bool {
    a.gpu_type == b.gpu_type
        && a.gpus == b.gpus
        && a.intra_bytes_per_s == b.intra_bytes_per_s
        && a.inter_bytes_per_s == b.inter_bytes_per_s
        && a.nics == b.nics
        && a.gpu_memory_bytes == b.gpu_memory_bytes
}

/// Class id of every node: nodes that are interchangeable share one.
fn node_classes(cluster: &Cluster) -> Vec<usize> {
    // A node with its own pair links is interchangeable with no other.
    let linked = |i: usize| cluster.links.iter().any(|l| l.nodes.contains(&i));
    let mut reps: Vec<usize> = Vec::new();
    (0..cluster.nodes.len())
        .map(|i| {
            let found = (!linked(i))
                .then(|| {
                    reps.iter().position(|&r| {
                        !linked(r) && same_class(&cluster.nodes[r], &cluster.nodes[i])
                    })
                })
                .flatten();
            found.unwrap_or_else(|| {
                reps.push(i);
                reps.len() - 1
            })
        })
        .collect()
}

/// At most this many node orders are tried; past it, only orders that keep
/// each node type together are.
const MAX_NODE_ORDERS: usize = 720;

/// Distinct orders of the nodes, up to swapping interchangeable nodes.
pub fn node_orders(cluster: &Cluster) -> Vec<Vec<usize>> {
    let classes = node_classes(cluster);
    let k = classes.iter().max().map_or(0, |m| m + 1);
    let mut counts = vec![0usize; k];
    for &c in &classes {
        counts[c] += 1;
    }
    // Multiset permutations of the class sequence, in lexicographic order.
    let mut seqs: Vec<Vec<usize>> = Vec::new();
    fn rec(
        counts: &mut [usize],
        cur: &mut Vec<usize>,
        len: usize,
        out: &mut Vec<Vec<usize>>,
        cap: usize,
    ) -> bool {
        if out.len() >= cap {
            return false;
        }
        if cur.len() == len {
            out.push(cur.clone());
            return true;
        }
        for c in 0..counts.len() {
            if counts[c] > 0 {
                counts[c] -= 1;
                cur.push(c);
                let ok = rec(counts, cur, len, out, cap);
                cur.pop();
                counts[c] += 1;
                if !ok {
                    return false;
                }
            }
        }
        true
    }
    let complete = rec(
        &mut counts.clone(),
        &mut Vec::new(),
        classes.len(),
        &mut seqs,
        MAX_NODE_ORDERS + 1,
    );
    if !complete || seqs.len() > MAX_NODE_ORDERS {
        // Too many: keep each type together and order the types every way.
        seqs.clear();
        let mut types: Vec<usize> = (0..k).collect();
        permutations(&mut types, 0, &mut |perm| {
            let mut s = Vec::new();
            for &c in perm {
                s.extend(std::iter::repeat_n(c, counts[c]));
            }
            seqs.push(s);
        });
    }
    // Turn a class sequence into nodes: each class's nodes in index order.
    seqs.into_iter()
        .map(|seq| {
            let mut next: Vec<Vec<usize>> = vec![Vec::new(); k];
            for (i, &c) in classes.iter().enumerate().rev() {
                next[c].push(i);
            }
            seq.iter().map(|&c| next[c].pop().unwrap()).collect()
        })
        .collect()
}

fn permutations(items: &mut Vec<usize>, at: usize, f: &mut impl FnMut(&[usize])) {
    if at == items.len() {
        f(items);
        return;
    }
    for i in at..items.len() {
        items.swap(at, i);
        permutations(items, at + 1, f);
        items.swap(at, i);
    }
}

/// A key equal for grids that differ only by renaming interchangeable nodes
/// (or GPUs inside a node): such grids cost the same under every model.
fn grid_key(grid: &DeviceGrid, classes: &[usize]) -> Vec<(usize, usize)> {
    let mut first_seen: Vec<Option<usize>> = vec![None; classes.len()];
    let mut next = 0;
    grid.devices
        .iter()
        .flatten()
        .flatten()
        .map(|d| {
            let id = *first_seen[d.node].get_or_insert_with(|| {
                next += 1;
                next - 1
            });
            (classes[d.node], id)
        })
        .collect()
}

/// Placements to try for one (tp, dp, pp), deduplicated.
fn placements(
    cluster: &Cluster,
    tp: usize,
    dp: usize,
    pp: usize,
    mode: PlacementSearch,
    orders: &[Vec<usize>],
    classes: &[usize],
) -> Vec<(Placement, DeviceGrid)> {
    match mode {
        PlacementSearch::Artifact => {
            let p = Placement::artifact_default(cluster);
            let g = DeviceGrid::new(cluster, tp, dp, pp, &p);
            vec![(p, g)]
        }
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
                    if seen.insert(grid_key(&g, classes)) {
                        out.push((p, g));
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

enum Outcome {
    Priced(Box<RankedPlan>),
    Infeasible,
    Skipped(String),
}

fn price_candidate(
    inputs: &Inputs,
    model: &dyn CostModel,
    setup: &TrainingSetup,
    placement: Placement,
    grid: DeviceGrid,
    micro_batch: usize,
    num_micro_batches: usize,
) -> Outcome {
    let setup = setup.for_pipeline(grid.pp);
    if num_micro_batches > limits::MAX_MICRO_BATCHES {
        return Outcome::Skipped(format!(
            "more than {} micro-batches per iteration (the limit); larger micro-batches or more replicas are searched",
            limits::MAX_MICRO_BATCHES
        ));
    }
    let cand = Candidate {
        grid: &grid,
        setup: &setup,
        micro_batch,
        num_micro_batches,
    };
    let v = setup.virtual_stages();
    let boundaries = if v > 1 {
        // Megatron-LM runs an interleaved pipeline only on its even split.
        match even_block_split(inputs.model, grid.pp * v) {
            Ok(b) => b,
            Err(why) => return Outcome::Skipped(format!("pp {}: {why}", grid.pp)),
        }
    } else {
        let tables = match model.stage_tables(inputs, &cand) {
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
            optimal_partition(layers, grid.pp, num_micro_batches, &tables).map(|p| p.boundaries)
        });
        let Some(boundaries) = split else {
            // With a memory model, no split fitting memory; without one, no
            // split at all (too few layers for the stages).
            return match tables.memory {
                Some(_) => Outcome::Infeasible,
                None => Outcome::Skipped(format!(
                    "no split of {layers} layers into {} stages of at least {} layers each",
                    grid.pp, tables.min_layers
                )),
            };
        };
        boundaries
    };
    let plan = plan_from_grid(&grid, &boundaries, micro_batch, num_micro_batches, &setup);
    let estimate = match model.evaluate(inputs, &plan) {
        Ok(e) => e,
        Err(e) => return Outcome::Skipped(e.to_string()),
    };
    if !(estimate.iteration_s.is_finite() && estimate.iteration_s > 0.0) {
        return Outcome::Skipped(format!(
            "the predicted iteration time is {} (check the profile's times and the layers' sizes)",
            estimate.iteration_s
        ));
    }
    if estimate.first_overflow().is_some() {
        return Outcome::Infeasible;
    }
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
fn rank_key(p: &RankedPlan) -> i64 {
    (p.estimate.iteration_s * 1e9).round() as i64
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
    let degrees = degree_candidates(inputs.cluster, layers, opts.global_batch);
    if degrees.is_empty() {
        let n = inputs.cluster.num_devices();
        return Err(AmpError::NoPlan(format!(
            "no (tp, dp, pp) fits {n} GPUs, {layers} layers and global batch {}: dp must divide the global batch and pp = {n} / (tp x dp) be at most {layers}; try a global batch that shares a factor with {n}",
            opts.global_batch
        )));
    }
    let classes = node_classes(inputs.cluster);
    let orders = match opts.placement {
        PlacementSearch::Full => node_orders(inputs.cluster),
        PlacementSearch::Artifact => Vec::new(),
    };
    let mut jobs = Vec::new();
    let mut grids_cache: Vec<(Degrees, Vec<(Placement, DeviceGrid)>)> = Vec::new();
    for &(tp, dp, pp, mbs) in &degrees {
        let key = (tp, dp, pp);
        if !grids_cache.iter().any(|(k, _)| *k == key) {
            grids_cache.push((
                key,
                placements(
                    inputs.cluster,
                    tp,
                    dp,
                    pp,
                    opts.placement,
                    &orders,
                    &classes,
                ),
            ));
        }
        let grids = &grids_cache.iter().find(|(k, _)| *k == key).unwrap().1;
        let b = opts.global_batch / (dp * mbs);
        for (p, g) in grids {
            jobs.push((p.clone(), g.clone(), mbs, b));
        }
    }
    let candidates = jobs.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let outcomes: Vec<Outcome> = jobs
        .into_par_iter()
        .map(|(p, g, mbs, b)| {
            let o = price_candidate(inputs, model, &opts.setup, p, g, mbs, b);
            if let Some(report) = opts.progress {
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                report(n, candidates);
            }
            o
        })
        .collect();
    let mut plans = Vec::new();
    let mut infeasible = 0;
    let mut unpriced = 0;
    let mut skipped: Vec<String> = Vec::new();
    for o in outcomes {
        match o {
            Outcome::Priced(p) => plans.push(*p),
            Outcome::Infeasible => infeasible += 1,
            Outcome::Skipped(why) => {
                unpriced += 1;
                if !skipped.contains(&why) {
                    skipped.push(why)
                }
            }
        }
    }
    // Stable: ties keep enumeration order.
    plans.sort_by_key(rank_key);
    crate::refine::refine_leading(inputs, model, &mut plans, rank_key);
    if plans.is_empty() {
        let mut why = format!("all {candidates} candidates were rejected");
        if infeasible > 0 {
            why.push_str(&format!("; {infeasible} do not fit in GPU memory"));
        }
        if unpriced > 0 {
            why.push_str(&format!("; {unpriced} could not be priced"));
        }
        for s in &skipped {
            why.push_str("; ");
            why.push_str(s);
        }
        return Err(AmpError::NoPlan(why));
    }
    Ok(SearchResult {
        plans,
        candidates,
        infeasible,
        unpriced,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::builtin as clusters;

    #[test]
    fn artifact_candidate_count() {
        // 53 candidates for GPT-2 on 16 GPUs with batch 32, 65 with 64.
        assert_eq!(
            degree_candidates(&clusters::homogeneous(), 30, 32).len(),
            53
        );
        assert_eq!(degree_candidates(&clusters::het_model(), 56, 64).len(), 65);
    }

    #[test]
    fn nodes_with_pair_links_are_not_interchangeable() {
        let mut c = clusters::het_model();
        assert_eq!(node_classes(&c), vec![0, 0, 0, 0]);
        c.links.push(crate::cluster::NodeLink {
            nodes: [0, 2],
            bytes_per_s: 1e9,
        });
        assert_eq!(node_classes(&c), vec![0, 1, 2, 1]);
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
}
