//! Refines the split of the leading plans under the cost model's full
//! estimate.
//!
//! The partitioner ([`crate::partition`]) splits the layers exactly for the
//! closed-form pipeline objective of [`crate::cost::StageTables`], but plans
//! are ranked by [`CostModel::evaluate`], which for the default model
//! simulates the schedule event by event (sends serialized per link,
//! warm-up and drain of 1F1B, memory). The two disagree, so a split that is
//! optimal for the closed form can be several percent slower than another
//! split under the estimate that ranks plans. This step re-splits the
//! leading plans under that estimate:
//!
//! - when a plan has at most [`BRUTE_FORCE_MAX_SPLITS`] splits, every split is
//!   priced and the fastest that fits in memory kept: exact;
//! - otherwise a local search from the partitioner's split: move one
//!   boundary by one layer (or, when no such move helps, two neighbouring
//!   boundaries by up to two layers each), take the best move, repeat until
//!   no move helps or its budget ([`MAX_SIMULATED_PER_PLAN`]) is spent: a
//!   heuristic.
//!
//! Which plans: the first [`REFINE_TOP`] of the ranking and every plan within
//! [`REFINE_MARGIN`] of the fastest. The best split of a plan of the AMP
//! experiments' top 10s was at most 14.5% faster than the partitioner's
//! (README, "Split refinement"), so a plan more than 15% slower than the
//! fastest is not expected to overtake it; the rule is a heuristic resting
//! on that measurement, not a proof (on small random instances the gain
//! reaches 36%, yet the search matched exhaustive enumeration on every one
//! tested, `tests/refine.rs`).
//!
//! Only 1F1B and GPipe plans with more than one stage are touched:
//! interleaved plans keep Megatron-LM's even split (the only layout it runs),
//! and models whose partitioner already is their estimate say so with
//! [`CostModel::split_is_final`]. Deterministic: moves and splits are tried
//! in a fixed order and a split replaces the current one only when strictly
//! faster, so ties keep the partitioner's split.

use rayon::prelude::*;

use crate::cost::{CostModel, Estimate, Inputs, LayoutEstimators, PlanEstimator};
use crate::plan::Plan;
use crate::search::RankedPlan;

/// Plans with at most this many splits are split by pricing every one.
/// 406 is GPT-2's (30 layers) three-stage count; 512 keeps every split of
/// up to 12 layers exact.
pub const BRUTE_FORCE_MAX_SPLITS: u64 = 512;

/// The local search of one plan prices at most this many stage
/// micro-batches (splits priced x stages x micro-batches, what the
/// simulation of a split costs), and between [`MIN_EVALUATIONS_PER_PLAN`]
/// and [`MAX_EVALUATIONS_PER_PLAN`] splits, so that deep pipelines with many
/// micro-batches (0.2 ms per split for 16 stages and 64 micro-batches) keep
/// the search in tens of milliseconds. A quarter of this (and of
/// [`MAX_EVALUATIONS_PER_PLAN`]) until 2026-12-05 cut short searches that
/// were still improving (README, Split refinement), at no measurable time.
pub const MAX_SIMULATED_PER_PLAN: usize = 32768;

/// Fewest splits the local search may price, however deep the pipeline.
pub const MIN_EVALUATIONS_PER_PLAN: usize = 16;

/// Most splits the local search prices for one plan.
pub const MAX_EVALUATIONS_PER_PLAN: usize = 256;

/// The first this many plans of the ranking are always refined (the CLI's
/// default `--top`).
pub const REFINE_TOP: usize = 10;

/// Plans at most this factor slower than the fastest are refined too.
pub const REFINE_MARGIN: f64 = 1.15;

/// At most this many leading plans are refined, whatever the margin; the
/// search keeps at least this many before refining, so that which plans are
/// refined (and so the ranking) does not depend on how many plans the
/// caller asks to keep.
pub const REFINE_POOL: usize = 64;

/// Stage boundaries of `plan`: `[0, b1, ..., num_layers]`.
pub fn boundaries(plan: &Plan) -> Vec<usize> {
    let mut b: Vec<usize> = plan.stages.iter().map(|s| s.first_layer).collect();
    b.push(plan.stages.last().map_or(0, |s| s.end_layer));
    b
}

/// `plan` with its stages re-split at `boundaries` (same devices per stage).
pub fn with_boundaries(plan: &Plan, boundaries: &[usize]) -> Plan {
    let mut p = plan.clone();
    for (j, s) in p.stages.iter_mut().enumerate() {
        s.first_layer = boundaries[j];
        s.end_layer = boundaries[j + 1];
    }
    p
}

/// Number of splits of `layers` layers into `stages` non-empty stages,
/// C(layers - 1, stages - 1), saturating at `u64::MAX`.
pub fn split_count(layers: usize, stages: usize) -> u64 {
    if stages == 0 || stages > layers {
        return 0;
    }
    let (n, k) = ((layers - 1) as u64, (stages - 1) as u64);
    let k = k.min(n - k);
    let mut c: u64 = 1;
    for i in 0..k {
        // c * (n - i) / (i + 1) stays an integer at every step.
        match c.checked_mul(n - i) {
            Some(x) => c = x / (i + 1),
            None => return u64::MAX,
        }
    }
    c
}

/// Calls `f` with every split of `layers` layers into `stages` non-empty
/// stages, as boundaries `[0, ..., layers]`, in lexicographic order.
pub fn for_each_split(layers: usize, stages: usize, mut f: impl FnMut(&[usize])) {
    if stages == 0 || stages > layers {
        return;
    }
    let mut b: Vec<usize> = (0..stages).collect();
    b.push(layers);
    loop {
        f(&b);
        // Advance the rightmost inner boundary that can move right.
        let mut i = stages - 1;
        while i >= 1 && b[i] + 1 >= b[i + 1] {
            i -= 1;
        }
        if i == 0 {
            return;
        }
        b[i] += 1;
        for k in i + 1..stages {
            b[k] = b[k - 1] + 1;
        }
    }
}

/// The estimate of `plan`, when it fits in memory, prices to a finite time
/// and may be faster than `limit_s` (one that does not fit, or that a lower
/// bound proves slower, is not simulated: only a faster one is kept), its
/// per-device memory left to [`with_memory`] (most are priced only to be
/// compared).
fn feasible(estimate: &dyn PlanEstimator, plan: &Plan, limit_s: f64) -> Option<Estimate> {
    let e = estimate.time_if_fits_under(plan, limit_s).ok()??;
    (e.iteration_s.is_finite() && e.iteration_s > 0.0).then_some(e)
}

/// The plan a search chose, its estimate with its memory filled in.
pub(crate) fn with_memory(
    estimate: &dyn PlanEstimator,
    chosen: Option<(Plan, Estimate)>,
) -> Option<(Plan, Estimate)> {
    chosen.map(|(p, e)| {
        let e = estimate.with_memory(&p, e);
        (p, e)
    })
}

/// Whether refinement applies to `plan` under `model`.
fn refinable(model: &dyn CostModel, plan: &Plan) -> bool {
    plan.stages.len() > 1 && plan.setup.virtual_stages() == 1 && !model.split_is_final()
}

/// The fastest split of `plan` that fits, under `model`'s full estimate,
/// when one is strictly faster than `current` (the estimate of `plan`
/// itself); `None` when no split beats it, or refinement does not apply
/// (one stage, an interleaved schedule, [`CostModel::split_is_final`]).
/// Exact when the plan has at most [`BRUTE_FORCE_MAX_SPLITS`] splits
/// ([`best_split`]), a local search otherwise ([`local_search_split`]).
pub fn refine_split(
    inputs: &Inputs,
    model: &dyn CostModel,
    plan: &Plan,
    current: &Estimate,
) -> Option<(Plan, Estimate)> {
    let estimate = model.layout_estimator(inputs, plan).ok()?;
    refine_split_with(estimate.as_ref(), inputs, model, plan, current)
}

/// [`refine_split`] with `estimate`, an estimator of `plan`'s layout.
fn refine_split_with(
    estimate: &dyn PlanEstimator,
    inputs: &Inputs,
    model: &dyn CostModel,
    plan: &Plan,
    current: &Estimate,
) -> Option<(Plan, Estimate)> {
    if !refinable(model, plan) {
        return None;
    }
    let layers = inputs.model.num_layers();
    if split_count(layers, plan.stages.len()) <= BRUTE_FORCE_MAX_SPLITS {
        best_split_with(estimate, layers, plan, current)
    } else {
        local_search_split_with(estimate, plan, current)
    }
}

/// Every split of `plan` priced: the fastest that fits, first in
/// lexicographic order of boundaries among equals, when strictly faster than
/// `current`.
pub fn best_split(
    inputs: &Inputs,
    model: &dyn CostModel,
    plan: &Plan,
    current: &Estimate,
) -> Option<(Plan, Estimate)> {
    let estimate = model.layout_estimator(inputs, plan).ok()?;
    best_split_with(estimate.as_ref(), inputs.model.num_layers(), plan, current)
}

/// [`best_split`] of a plan of `num_layers` layers with `estimate`, an
/// estimator of its layout.
fn best_split_with(
    estimate: &dyn PlanEstimator,
    num_layers: usize,
    plan: &Plan,
    current: &Estimate,
) -> Option<(Plan, Estimate)> {
    let mut best: Option<(Plan, Estimate)> = None;
    let mut best_s = current.iteration_s;
    // One plan re-split in place, cloned only when it is the best so far.
    let mut p = plan.clone();
    for_each_split(num_layers, plan.stages.len(), |b| {
        for (j, s) in p.stages.iter_mut().enumerate() {
            s.first_layer = b[j];
            s.end_layer = b[j + 1];
        }
        if let Some(e) = feasible(estimate, &p, best_s) {
            if e.iteration_s < best_s {
                best_s = e.iteration_s;
                best = Some((p.clone(), e));
            }
        }
    });
    with_memory(estimate, best)
}

/// Local search from `plan`'s split. Price every move of one boundary by
/// one layer (boundaries in order, down before up) and take the fastest
/// that fits (the first among equals) when strictly faster than the split
/// so far; when none is, try moving two neighbouring boundaries together by
/// up to two layers each (a stage shifted, or layers passed through it: a
/// step no single move takes when each half alone is slower), the same way. Stop when neither helps or the budget is spent
/// ([`MAX_SIMULATED_PER_PLAN`]). A heuristic: it stops at a split no such
/// move improves, or earlier.
pub fn local_search_split(
    inputs: &Inputs,
    model: &dyn CostModel,
    plan: &Plan,
    current: &Estimate,
) -> Option<(Plan, Estimate)> {
    let estimate = model.layout_estimator(inputs, plan).ok()?;
    local_search_split_with(estimate.as_ref(), plan, current)
}

/// [`local_search_split`] with `estimate`, an estimator of `plan`'s layout
/// the caller already has (its prices are reused).
pub(crate) fn local_search_split_with(
    estimate: &dyn PlanEstimator,
    plan: &Plan,
    current: &Estimate,
) -> Option<(Plan, Estimate)> {
    let stages = plan.stages.len();
    // Moves as (boundary, layers to shift it by); the order breaks ties.
    let singles: Vec<Vec<(usize, isize)>> = (1..stages)
        .flat_map(|i| [vec![(i, -1)], vec![(i, 1)]])
        .collect();
    let pairs: Vec<Vec<(usize, isize)>> = (1..stages.saturating_sub(1))
        .flat_map(|i| {
            [-2isize, -1, 1, 2]
                .into_iter()
                .flat_map(move |di| [-2isize, -1, 1, 2].map(move |dk| (di, dk)))
                // Two layers on both at once is rarely the missing step.
                .filter(|(di, dk)| di.abs() + dk.abs() <= 3)
                .map(move |(di, dk)| vec![(i, di), (i + 1, dk)])
        })
        .collect();
    let mut best: Option<(Plan, Estimate)> = None;
    let mut best_s = current.iteration_s;
    let mut b = boundaries(plan);
    let mut evaluations = 0;
    let budget = (MAX_SIMULATED_PER_PLAN / (stages * plan.num_micro_batches).max(1))
        .clamp(MIN_EVALUATIONS_PER_PLAN, MAX_EVALUATIONS_PER_PLAN);
    'step: loop {
        for moves in [&singles, &pairs] {
            let mut step: Option<(Vec<usize>, Plan, Estimate)> = None;
            let mut step_s = best_s;
            for m in moves {
                let mut nb = b.clone();
                let mut ordered = true;
                for &(i, d) in m {
                    match nb[i].checked_add_signed(d) {
                        Some(x) => nb[i] = x,
                        None => ordered = false,
                    }
                }
                if !ordered || nb.windows(2).any(|w| w[0] >= w[1]) {
                    continue;
                }
                if evaluations == budget {
                    break;
                }
                evaluations += 1;
                let p = with_boundaries(plan, &nb);
                if let Some(e) = feasible(estimate, &p, step_s) {
                    if e.iteration_s < step_s {
                        step_s = e.iteration_s;
                        step = Some((nb, p, e));
                    }
                }
            }
            if let Some((nb, p, e)) = step {
                b = nb;
                best_s = step_s;
                best = Some((p, e));
                continue 'step;
            }
        }
        return with_memory(estimate, best);
    }
}

/// Refines the splits of the leading plans of `plans` (sorted fastest first
/// by `rank_key`) and sorts them again: the first [`REFINE_TOP`] and every
/// plan within [`REFINE_MARGIN`] of the fastest. Plans are refined in
/// parallel and collected in order, so the result does not depend on the
/// thread count; the sort is stable. `estimators` gives each plan's
/// estimator (a search's, whose network prices are known).
pub(crate) fn refine_leading<'a>(
    inputs: &Inputs,
    (model, estimators): (&dyn CostModel, &dyn LayoutEstimators<'a>),
    plans: &mut [RankedPlan],
    rank_key: impl Fn(&RankedPlan) -> i64,
    uneven: bool,
) {
    let Some(first) = plans.first() else {
        return;
    };
    let limit_s = first.estimate.iteration_s * REFINE_MARGIN;
    let chosen = plans
        .iter()
        .enumerate()
        .take_while(|(i, p)| {
            *i < REFINE_POOL && (*i < REFINE_TOP || p.estimate.iteration_s <= limit_s)
        })
        .count();
    let refined: Vec<Option<(Plan, Estimate)>> = plans[..chosen]
        .par_iter()
        .map(|p| {
            let estimate = estimators.layout_estimator(&p.plan).ok()?;
            refine_plan(
                estimate.as_ref(),
                inputs,
                model,
                &p.plan,
                &p.estimate,
                uneven,
            )
        })
        .collect();
    for (p, r) in plans.iter_mut().zip(refined) {
        if let Some((plan, estimate)) = r {
            p.num_micro_batches = plan.num_micro_batches;
            p.plan = plan;
            p.estimate = estimate;
        }
    }
    plans.sort_by_key(rank_key);
}

/// One leading plan refined: its split ([`refine_split`]), then with
/// `uneven` its micro-batches moved towards faster replicas
/// ([`crate::uneven::rebalance`]) and, when that moved any, its split again
/// for the new deal. `None` when nothing is faster. Every step keeps the
/// layout (devices and setup), so `estimate`, an estimator of `plan`'s
/// layout, prices them all.
fn refine_plan(
    estimate: &dyn PlanEstimator,
    inputs: &Inputs,
    model: &dyn CostModel,
    plan: &Plan,
    current: &Estimate,
    uneven: bool,
) -> Option<(Plan, Estimate)> {
    let split = refine_split_with(estimate, inputs, model, plan, current);
    if !uneven {
        return split;
    }
    let (p, e) = split.as_ref().map_or((plan, current), |(p, e)| (p, e));
    match crate::uneven::rebalance_with(estimate, inputs, p, e) {
        Some((p, e)) => Some(refine_split_with(estimate, inputs, model, &p, &e).unwrap_or((p, e))),
        None => split,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_enumeration_matches_the_count() {
        for layers in 1..=9 {
            for stages in 1..=layers {
                let mut n = 0u64;
                let mut last: Option<Vec<usize>> = None;
                for_each_split(layers, stages, |b| {
                    assert_eq!(b.len(), stages + 1);
                    assert_eq!((b[0], b[stages]), (0, layers));
                    assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
                    if let Some(l) = &last {
                        assert!(l.as_slice() < b, "not increasing: {l:?} then {b:?}");
                    }
                    last = Some(b.to_vec());
                    n += 1;
                });
                assert_eq!(
                    n,
                    split_count(layers, stages),
                    "{layers} layers, {stages} stages"
                );
            }
        }
        assert_eq!(split_count(30, 4), 3654);
        assert_eq!(split_count(3, 4), 0);
        assert_eq!(split_count(1024, 512), u64::MAX);
    }
}
