//! A tensor-parallel degree per GPU type: on a mixed cluster the slow or
//! small-memory GPUs may want a larger tp than the fast ones (Sailor's
//! plans for OPT-350M on A100 + V100 put V100 stages at tp 4 and A100
//! stages at tp 1). AMP's space has one tp for the whole plan.
//!
//! Candidates: for every order of the GPU types along the pipeline, every
//! tp per type (dividing its nodes' GPUs, not all equal: equal ones are the
//! main search's), every data-parallel degree dividing the global batch with
//! every type's GPUs a whole number of stages (`gpus_T = dp x tp_T x
//! stages_T`), and every micro-batch. Each type's devices are laid out tp
//! fastest, then dp, then its stages. Every candidate (even, uneven or per
//! stage, below) is priced the same way (`price_candidates`): on two
//! seed splits, the even one and one balanced by the profile's per-layer
//! times (`balanced_split`), each checked for memory and bounded first,
//! simulated only when its bound does not prove it slower than the plans
//! kept (`price_bounded`); the leading plans' splits are then refined
//! under the full estimate (a heuristic: no per-stage partitioner tables
//! exist for mixed degrees). Against every split of every even candidate
//! on 18 small instances it finds the best on 17, 1.37% slower on one
//! (`even_search_loss_against_every_split`; refining every candidate's
//! split by local search, the way before 2026-12-04: also 17, worst 1.87%,
//! and 4.8 s where this takes 0.71 on three GPU types x 256 GPUs).
//!
//! With uneven data parallelism ([`SearchOptions::uneven_dp`]) the types'
//! tensor-parallel groups are poured into the pipeline in type order, `dp`
//! groups per stage, so a stage where one type runs out and the next
//! begins is served by both (Sailor's 32 A100 + 96 V100 plan: stage 1 on
//! 24 V100 groups at tp 4 and 3 A100 at tp 1, stage 2 on 27 A100). For
//! every pp up to the layers, dp is the most groups that fill pp stages
//! (`groups / pp`), the few groups left over idle, taken from one type
//! (each type tried); the micro-batches are dealt evenly and need not
//! divide. With [`SearchOptions::fewer_replicas`] each depth is also tried
//! at the fewest replicas that need no more rounds of micro-batches
//! (`uneven_dps`), more groups idle. The leading plans are refined:
//! re-split, micro-batches moved towards the faster replicas
//! ([`crate::uneven::rebalance`]), re-split again. A heuristic:
//! against every split and deal of its candidates on 24 small instances it
//! finds the best on all 24 (21 of 24, losing at most 1.7%, under the
//! constants fitted before 2026-12-03's fp32 all-reduce;
//! `uneven_search_loss_against_every_split_and_deal`).
//!
//! With [`SearchOptions::per_stage_tp`] a type's stages may also run at two
//! tp degrees, its first stages at one and the rest at the other (a tp per
//! stage, as Sailor's planner gives): for every order of the types and
//! every dp, each type on whole stages of `dp` groups at one degree or two
//! (`type_steps`), exactly one at two (`step_candidates`). These are
//! priced apart from the others, as the uneven ones are (bounded, the
//! leaders refined), and their plans added to the others', so the search
//! with them is never slower than without. A heuristic: against every
//! split of every such candidate on 18 small instances it finds the best
//! on 17, 0.44% slower on one (`per_stage_search_loss_against_every_split`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::cluster::{Cluster, Device};
use crate::cost::{CostModel, Estimate, Inputs, LayoutEstimator, LayoutEstimators};
use crate::error::{AmpError, Result};
use crate::limits;
use crate::partition::uniform_split;
use crate::placement::{AxisOrder, Placement};
use crate::plan::{Plan, Stage};
use crate::search::{
    divisors, no_plan_reason, rank_key, Outcome, RankedPlan, SearchOptions, SearchResult, Tally,
};

/// GPU types at most whose orders are all tried (4! = 24).
pub const MAX_TYPES: usize = 4;

/// (GPU type, tp) uses a candidate holds at most: one type may run two tp
/// degrees ([`SearchOptions::per_stage_tp`]).
const MAX_USES: usize = MAX_TYPES + 1;

/// One candidate: GPU types in pipeline order (each by its index in
/// [`types_in_node_order`]: hundreds of thousands of candidates name them),
/// each with its tp and the number of its tensor-parallel groups used, and
/// the shared dp and micro-batch. Groups fill the pipeline in that order,
/// `dp` per stage.
#[derive(Debug, Clone, PartialEq)]
struct Candidate {
    types: TypeUses,
    // u32, not usize: millions of candidates (within the limits a batch
    // and a cluster's groups are far below 2^32).
    dp: u32,
    micro_batch: u32,
}

impl Candidate {
    /// The candidate of `uses` at `dp` and `micro_batch`, when its
    /// micro-batches of `global_batch` deal over `dp` replicas (evenly
    /// unless `uneven`, at most [`limits::MAX_MICRO_BATCHES`] each).
    fn new(
        uses: TypeUses,
        dp: usize,
        micro_batch: usize,
        global_batch: usize,
        uneven: bool,
    ) -> Option<Candidate> {
        let m = global_batch / micro_batch;
        let even = m.is_multiple_of(dp);
        if (!even && !uneven) || m < dp || m.div_ceil(dp) > limits::MAX_MICRO_BATCHES {
            return None;
        }
        debug_assert!(uses.iter().map(|u| u.2).sum::<usize>().is_multiple_of(dp));
        let narrow = |x: usize| u32::try_from(x).expect("within the limits");
        Some(Candidate {
            types: uses,
            dp: narrow(dp),
            micro_batch: narrow(micro_batch),
        })
    }

    fn dp(&self) -> usize {
        self.dp as usize
    }

    fn micro_batch(&self) -> usize {
        self.micro_batch as usize
    }
}

/// Up to [`MAX_USES`] (type index, tp, groups used), in pipeline order,
/// held inline: millions of candidates on four GPU types.
#[derive(Clone, Copy, PartialEq)]
struct TypeUses {
    len: u8,
    uses: [(u8, u8, u32); MAX_USES],
}

impl TypeUses {
    /// `uses` as (type index, tp, groups used); at most [`MAX_USES`] of
    /// them, types below 256, tp below 256 and groups below 2^32 (a cluster
    /// within [`limits`] has at most 65,536 GPUs, 64 to a node).
    fn new(uses: impl IntoIterator<Item = (usize, usize, usize)>) -> TypeUses {
        let mut t = TypeUses {
            len: 0,
            uses: [(0, 0, 0); MAX_USES],
        };
        for (k, (ty, tp, used)) in uses.into_iter().enumerate() {
            let narrow = |x: usize| u32::try_from(x).expect("within the limits");
            t.uses[k] = (narrow(ty) as u8, narrow(tp) as u8, narrow(used));
            t.len += 1;
        }
        t
    }

    fn iter(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        self.uses[..self.len as usize]
            .iter()
            .map(|&(ty, tp, used)| (ty as usize, tp as usize, used as usize))
    }
}

impl std::fmt::Debug for TypeUses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The cluster's GPU types in node order, each with its devices (node
/// order, then GPU) and the fewest GPUs on one of its nodes.
fn types_in_node_order(cluster: &Cluster) -> Vec<(String, Vec<Device>, usize)> {
    let mut out: Vec<(String, Vec<Device>, usize)> = Vec::new();
    for (n, node) in cluster.nodes.iter().enumerate() {
        let devices = (0..node.gpus).map(|gpu| Device { node: n, gpu });
        match out.iter_mut().find(|t| t.0 == node.gpu_type) {
            Some(t) => {
                t.1.extend(devices);
                t.2 = t.2.min(node.gpus);
            }
            None => out.push((node.gpu_type.clone(), devices.collect(), node.gpus)),
        }
    }
    out
}

/// A cluster's GPU types (name, devices, GPUs of its smallest node) and
/// each one's tp degrees.
type TypesAndDegrees = (Vec<(String, Vec<Device>, usize)>, Vec<Vec<usize>>);

/// The cluster's GPU types in node order ([`types_in_node_order`]) and each
/// one's tp degrees ([`tp_choices`]), or `None` when it has fewer than 2 or
/// more than [`MAX_TYPES`] types: what both candidate lists start from.
fn types_and_degrees(cluster: &Cluster, tp_ok: &dyn Fn(usize) -> bool) -> Option<TypesAndDegrees> {
    let types = types_in_node_order(cluster);
    if !(2..=MAX_TYPES).contains(&types.len()) {
        return None;
    }
    let mut choices = tp_choices(cluster, &types);
    // Only degrees that split the model's attention heads.
    for c in &mut choices {
        c.retain(|&tp| tp_ok(tp));
    }
    Some((types, choices))
}

/// Each of `types`' tp degrees: the divisors of its smallest node's GPUs
/// that divide every one of its nodes'.
fn tp_choices(cluster: &Cluster, types: &[(String, Vec<Device>, usize)]) -> Vec<Vec<usize>> {
    types
        .iter()
        .map(|(name, _, min_gpus)| {
            divisors(*min_gpus)
                .into_iter()
                .filter(|tp| {
                    cluster
                        .nodes
                        .iter()
                        .filter(|n| n.gpu_type == *name)
                        .all(|n| n.gpus.is_multiple_of(*tp))
                })
                .collect()
        })
        .collect()
}

/// Every order of `0..k`, lexicographic.
fn orders(k: usize) -> Vec<Vec<usize>> {
    fn rec(cur: &mut Vec<usize>, k: usize, out: &mut Vec<Vec<usize>>) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in 0..k {
            if !cur.contains(&i) {
                cur.push(i);
                rec(cur, k, out);
                cur.pop();
            }
        }
    }
    let mut out = Vec::new();
    rec(&mut Vec::new(), k, &mut out);
    out
}

fn candidates(
    cluster: &Cluster,
    tp_ok: &dyn Fn(usize) -> bool,
    num_layers: usize,
    global_batch: usize,
    uneven: bool,
    fewer_replicas: bool,
) -> Vec<Candidate> {
    let Some((types, tp_choices)) = types_and_degrees(cluster, tp_ok) else {
        return Vec::new();
    };
    let k = types.len();
    // Every tp vector, in a fixed order.
    let mut vectors: Vec<Vec<usize>> = vec![Vec::new()];
    for choices in &tp_choices {
        vectors = vectors
            .into_iter()
            .flat_map(|v| {
                choices.iter().map(move |&tp| {
                    let mut w = v.clone();
                    w.push(tp);
                    w
                })
            })
            .collect();
    }
    vectors.retain(|v| v.iter().any(|&tp| tp != v[0]));
    let micro_batches = divisors(global_batch);
    let mut out = Vec::new();
    let mut push = |order: &[usize], v: &[usize], used: &[usize], dp: usize, micro_batch: usize| {
        let uses = TypeUses::new(order.iter().map(|&t| (t, v[t], used[t])));
        if let Some(c) = Candidate::new(uses, dp, micro_batch, global_batch, uneven) {
            out.push(c);
        }
    };
    for (o, order) in orders(k).into_iter().enumerate() {
        for v in &vectors {
            let groups: Vec<usize> = types
                .iter()
                .zip(v)
                .map(|((_, devices, _), &tp)| devices.len() / tp)
                .collect();
            if !uneven {
                for dp in divisors(global_batch) {
                    let stages: Option<Vec<usize>> = groups
                        .iter()
                        .map(|&g| g.is_multiple_of(dp).then(|| g / dp))
                        .collect();
                    let Some(stages) = stages else { continue };
                    let pp: usize = stages.iter().sum();
                    if pp > num_layers {
                        continue;
                    }
                    for &micro_batch in &micro_batches {
                        push(&order, v, &groups, dp, micro_batch);
                    }
                }
                continue;
            }
            let total: usize = groups.iter().sum();
            // One stage holds every group whatever the order: the first
            // order only.
            for pp in (if o == 0 { 1 } else { 2 })..=num_layers.min(total) {
                let most = total / pp;
                // Each degree's micro-batch sizes: a layout's candidates
                // stay together (they share its estimator, `layouts_of`).
                let mut by_dp: Vec<(usize, Vec<usize>)> = vec![(most, micro_batches.clone())];
                if fewer_replicas {
                    for &micro_batch in &micro_batches {
                        for dp in uneven_dps(most, global_batch / micro_batch)
                            .into_iter()
                            .skip(1)
                        {
                            match by_dp.iter_mut().find(|(d, _)| *d == dp) {
                                Some((_, mbs)) => mbs.push(micro_batch),
                                None => by_dp.push((dp, vec![micro_batch])),
                            }
                        }
                    }
                }
                for (dp, of_dp) in by_dp {
                    let left = total - pp * dp;
                    // Which type leaves its last `left` groups idle.
                    let mut tried: Vec<Vec<usize>> = Vec::new();
                    for idle in 0..k {
                        if groups[idle] < left || (left == 0 && idle > 0) {
                            continue;
                        }
                        let mut used = groups.clone();
                        used[idle] -= left;
                        if used.contains(&0) || tried.contains(&used) {
                            continue;
                        }
                        tried.push(used.clone());
                        for &micro_batch in &of_dp {
                            push(&order, v, &used, dp, micro_batch);
                        }
                    }
                }
            }
        }
    }
    out
}

/// The candidates of [`SearchOptions::per_stage_tp`]: for every order of
/// the GPU types and every dp (dividing the global batch unless `uneven`),
/// each type on whole stages of `dp` groups at one tp degree or two
/// ([`type_steps`]), exactly one type at two, every micro-batch. The
/// first stages of a type at one degree, the rest at the other.
fn step_candidates(
    cluster: &Cluster,
    tp_ok: &dyn Fn(usize) -> bool,
    num_layers: usize,
    global_batch: usize,
    uneven: bool,
) -> Vec<Candidate> {
    let Some((types, tp_choices)) = types_and_degrees(cluster, tp_ok) else {
        return Vec::new();
    };
    let k = types.len();
    let micro_batches = divisors(global_batch);
    let mut out = Vec::new();
    let devices: Vec<usize> = types.iter().map(|t| t.1.len()).collect();
    let most_dp = devices.iter().copied().min().unwrap_or(0);
    for order in orders(k) {
        for dp in 1..=most_dp {
            if !uneven && !global_batch.is_multiple_of(dp) {
                continue;
            }
            let ways: Vec<Vec<Way>> = order
                .iter()
                .map(|&t| type_steps(devices[t], &tp_choices[t], dp, num_layers))
                .collect();
            let mut picked = Vec::with_capacity(k);
            // One type at two degrees: none is [`candidates`]'; more
            // multiplies the ways (18 million candidates on three types of
            // 32 GPUs, 160 s).
            let limits = (dp, num_layers, 1);
            for_each_step_choice(&ways, limits, &mut picked, &mut |picked| {
                let uses = TypeUses::new(
                    picked
                        .iter()
                        .zip(&order)
                        .flat_map(|(w, &t)| w.iter().map(move |&(tp, groups)| (t, tp, groups))),
                );
                out.extend(
                    micro_batches
                        .iter()
                        .filter_map(|&mbs| Candidate::new(uses, dp, mbs, global_batch, uneven)),
                );
            });
        }
    }
    out
}

/// How one GPU type serves its stages: (tp, groups) in pipeline order.
type Way = Vec<(usize, usize)>;

/// The ways a GPU type of `devices` GPUs fills whole stages of `dp` groups
/// at the degrees `choices`, at most `most_stages` stages: each as its
/// (tp, groups) in pipeline order, one degree for all its stages or two
/// (`a` on its first stages, `b` on the rest).
fn type_steps(devices: usize, choices: &[usize], dp: usize, most_stages: usize) -> Vec<Way> {
    let mut out = Vec::new();
    if dp == 0 || !devices.is_multiple_of(dp) {
        return out;
    }
    // GPUs per replica: `stages_a x a + stages_b x b`.
    let per_replica = devices / dp;
    for &tp in choices {
        if per_replica.is_multiple_of(tp) && per_replica / tp <= most_stages {
            out.push(vec![(tp, devices / tp)]);
        }
    }
    for &a in choices {
        for &b in choices {
            if a == b {
                continue;
            }
            for stages_a in 1..most_stages {
                let Some(rest) = per_replica.checked_sub(stages_a * a) else {
                    break;
                };
                if rest == 0 || !rest.is_multiple_of(b) || stages_a + rest / b > most_stages {
                    continue;
                }
                // `b` divides the type's GPUs (every node's), so the first
                // GPU at `b`, all of them less `b`'s, is a multiple of `b`.
                out.push(vec![(a, stages_a * dp), (b, rest / b * dp)]);
            }
        }
    }
    out
}

/// Calls `each` with every choice of one of `ways[i]` per type (ways of
/// `dp` groups per stage) whose stages number at most `stages_left` in all,
/// and in which exactly `twos_left` types run two degrees; `picked` holds
/// the choice so far.
fn for_each_step_choice<'w>(
    ways: &'w [Vec<Way>],
    (dp, stages_left, twos_left): (usize, usize, usize),
    picked: &mut Vec<&'w Way>,
    each: &mut dyn FnMut(&[&'w Way]),
) {
    let Some((first, rest)) = ways.split_first() else {
        if twos_left == 0 {
            each(picked);
        }
        return;
    };
    for w in first {
        let stages = w.iter().map(|u| u.1).sum::<usize>() / dp;
        let two = usize::from(w.len() == 2);
        if stages > stages_left || two > twos_left {
            continue;
        }
        picked.push(w);
        let left = (dp, stages_left - stages, twos_left - two);
        for_each_step_choice(rest, left, picked, each);
        picked.pop();
    }
}

/// The data-parallel degrees an uneven candidate of `most` groups per
/// stage is tried at for `micro_batches` micro-batches: `most`, and the
/// fewest replicas that still run no more micro-batches each than `most`
/// do when dealt evenly (`ceil(m / ceil(m / most))`), when that is fewer.
/// Between the two, every degree runs as many micro-batches on its busiest
/// replica; the fewest leave the most groups idle, out of the gradient
/// all-reduce (Sailor's 32 A100 + 96 V100 plan: 56 groups over two
/// stages give dp 28, but 512 micro-batches take 19 rounds on 27 replicas
/// as on 28, so dp 27 with two A100s idle).
fn uneven_dps(most: usize, micro_batches: usize) -> Vec<usize> {
    if micro_batches < most {
        // Fewer micro-batches than replicas: not a candidate (the search
        // takes smaller micro-batches instead).
        return vec![most];
    }
    let rounds = micro_batches.div_ceil(most.max(1));
    let fewest = micro_batches.div_ceil(rounds);
    if fewest < most {
        vec![most, fewest]
    } else {
        vec![most]
    }
}

/// The plan of a candidate: each type's first groups (tp fastest over its
/// devices in node order) poured into the stages in pipeline order, `dp`
/// per stage; the micro-batches dealt evenly; the layers split by
/// [`balanced_split`] from `profile`, or evenly without one.
#[cfg(test)]
fn build(
    cluster: &Cluster,
    num_layers: usize,
    c: &Candidate,
    opts: &SearchOptions,
    profile: Option<&crate::profile::Profile>,
) -> Plan {
    let times = BalanceTimes::default();
    let mut plan = layout_plan(&types_in_node_order(cluster), c, opts, None);
    let kinds = stage_kinds(&plan, cluster);
    let profile = profile.map(|p| (p, &times, &kinds));
    set_candidate(&mut plan, num_layers, c, opts, (true, profile));
    plan
}

/// Whether [`layout_plan`] gave its plan `virtual_split`.
fn has_virtual_split(plan: &Plan, virtual_split: Option<&[usize]>) -> bool {
    virtual_split.is_some() && plan.setup.virtual_stages() > 1
}

/// The devices of candidate `c`'s layout as a plan (its micro-batch size,
/// split and deal left to [`set_candidate`]): each type's first groups (tp
/// fastest over its devices in node order) poured into the stages in
/// pipeline order, `dp` per stage. Under an interleaved setup with more
/// than one stage, `virtual_split` is Megatron-LM's even split of the
/// `pp x v` virtual stages ([`crate::partition::even_block_split`]),
/// virtual stage `i` on pipeline rank `i mod pp`'s groups.
fn layout_plan(
    types: &[(String, Vec<Device>, usize)],
    c: &Candidate,
    opts: &SearchOptions,
    virtual_split: Option<&[usize]>,
) -> Plan {
    // A type at two degrees takes its devices for the second after the
    // first's.
    let mut taken = vec![0usize; types.len()];
    let groups: Vec<&[Device]> = c
        .types
        .iter()
        .flat_map(|(t, tp, used)| {
            let devices = &types[t].1[taken[t]..];
            taken[t] += used * tp;
            (0..used).map(move |g| &devices[g * tp..(g + 1) * tp])
        })
        .collect();
    let pp = groups.len() / c.dp();
    let mut plan = Plan {
        micro_batch: c.micro_batch(),
        num_micro_batches: 0,
        replica_micro_batches: Vec::new(),
        stages: (0..pp)
            .map(|j| Stage {
                first_layer: 0,
                end_layer: 0,
                replicas: (0..c.dp())
                    .map(|r| groups[j * c.dp() + r].to_vec())
                    .collect(),
            })
            .collect(),
        setup: opts.setup.for_pipeline(pp),
    };
    if let Some(bounds) = virtual_split.filter(|_| has_virtual_split(&plan, virtual_split)) {
        plan.stages = (0..bounds.len() - 1)
            .map(|i| Stage {
                first_layer: bounds[i],
                end_layer: bounds[i + 1],
                replicas: plan.stages[i % pp].replicas.clone(),
            })
            .collect();
    }
    plan
}

/// Each stage's (GPU type, tp) kinds ([`Stage::group_kinds`]): what
/// [`balanced_split`] weighs a stage by, the same for every candidate of a
/// layout.
fn stage_kinds<'c>(plan: &Plan, cluster: &'c Cluster) -> StageKinds<'c> {
    let mut kinds = StageKinds {
        keys: Vec::new(),
        sets: Vec::new(),
        of_stage: Vec::with_capacity(plan.stages.len()),
    };
    for s in &plan.stages {
        let set: Vec<usize> = s
            .group_kinds(cluster)
            .into_iter()
            .map(|key| match kinds.keys.iter().position(|k| *k == key) {
                Some(i) => i,
                None => {
                    kinds.keys.push(key);
                    kinds.keys.len() - 1
                }
            })
            .collect();
        match kinds.sets.iter().position(|k| *k == set) {
            Some(k) => kinds.of_stage.push(k),
            None => {
                kinds.of_stage.push(kinds.sets.len());
                kinds.sets.push(set);
            }
        }
    }
    kinds
}

/// A layout's stages by their (GPU type, tp) kinds, found once per layout,
/// not once per candidate: each kind once (`keys`), each set of kinds a
/// stage's groups have once (`sets`, indices into `keys`, in the stage's
/// order), and each stage's set (`of_stage`). A plan has a few kinds and
/// sets, and many stages.
struct StageKinds<'c> {
    keys: Vec<(&'c str, usize)>,
    sets: Vec<Vec<usize>>,
    of_stage: Vec<usize>,
}

/// Candidate `c` on `plan`, a [`layout_plan`] of its layout: its
/// micro-batch size; with `resplit`, its layers split by [`balanced_split`]
/// from `profile` (with the layout's [`stage_kinds`]), or evenly without
/// one (else the plan keeps its split:
/// an interleaved plan its virtual split); the
/// micro-batches dealt evenly, in whole groups of pp where they allow
/// ([`crate::uneven::schedule_deal`]).
fn set_candidate<'c>(
    plan: &mut Plan,
    num_layers: usize,
    c: &Candidate,
    opts: &SearchOptions,
    (resplit, profile): (bool, Option<Balance<'c, '_>>),
) {
    deal_candidate(plan, c, opts);
    if resplit {
        resplit_candidate(plan, num_layers, profile);
    }
}

/// [`set_candidate`]'s first half: candidate `c`'s micro-batch size and
/// deal, its split left as it was.
fn deal_candidate(plan: &mut Plan, c: &Candidate, opts: &SearchOptions) {
    plan.micro_batch = c.micro_batch();
    // Pipeline ranks: the candidate's groups over dp.
    let pp = c.types.iter().map(|t| t.2).sum::<usize>() / c.dp();
    let counts =
        crate::uneven::schedule_deal(opts.global_batch / c.micro_batch(), c.dp(), pp, &plan.setup);
    crate::uneven::set_micro_batches(plan, counts);
}

/// [`set_candidate`]'s second half, where it re-splits: the layers split
/// by [`balanced_split`] at the plan's micro-batch size, or evenly.
fn resplit_candidate<'c>(plan: &mut Plan, num_layers: usize, profile: Option<Balance<'c, '_>>) {
    let pp = plan.stages.len();
    let bounds = profile
        .and_then(|(p, times, kinds)| balanced_split(p, num_layers, plan, times, kinds))
        .unwrap_or_else(|| uniform_split(num_layers, pp));
    for (j, s) in plan.stages.iter_mut().enumerate() {
        s.first_layer = bounds[j];
        s.end_layer = bounds[j + 1];
    }
}

/// The boundaries of [`seed_splits`] of `plan`, its own first.
fn seed_bounds(plan: &Plan, num_layers: usize) -> Vec<Vec<usize>> {
    let own = plan.boundaries();
    // Interleaved: Megatron-LM's even split only.
    if plan.setup.virtual_stages() > 1 {
        return vec![own];
    }
    let even = uniform_split(num_layers, plan.stages.len());
    if own == even {
        vec![own]
    } else {
        vec![own, even]
    }
}

/// Candidate `c`'s plan split at `bounds`, from `template`, a plan of its
/// layout ([`set_candidate`] to another micro-batch size): its
/// micro-batch size and deal set as `set_candidate` sets them.
fn seed_plan(template: &Plan, c: &Candidate, opts: &SearchOptions, bounds: &[usize]) -> Plan {
    let mut plan = crate::refine::with_boundaries(template, bounds);
    let groups: usize = c.types.iter().map(|t| t.2).sum();
    plan.micro_batch = c.micro_batch();
    let counts = crate::uneven::schedule_deal(
        opts.global_batch / c.micro_batch(),
        c.dp(),
        groups / c.dp(),
        &plan.setup,
    );
    crate::uneven::set_micro_batches(&mut plan, counts);
    plan
}

/// Most (stages x layers x layers) steps [`balanced_split`] takes.
const MAX_BALANCE_STEPS: usize = 1 << 20;

/// Per (GPU type, tp, micro-batch size), each layer's forward + backward
/// time as [`balanced_split`] weighs it (`None`: the profile lacks the
/// type), shared by a search's candidates: thousands of candidates meet a
/// few dozen of these.
type BalanceTimes<'c> = Mutex<HashMap<(&'c str, usize, usize), Option<Weighed>>>;

/// What [`balanced_split`] weighs a layout's stages with: the profile, the
/// per-layer times met so far and the layout's [`stage_kinds`].
type Balance<'c, 'a> = (
    &'a crate::profile::Profile,
    &'a BalanceTimes<'c>,
    &'a StageKinds<'c>,
);

/// Each layer's forward + backward time as [`balanced_split`] weighs it.
type Weighed = Arc<Vec<f64>>;

/// A starting split for a poured candidate, whose stages run on GPUs of
/// different speeds: the layers split so that the largest stage time, each
/// stage on its slowest group by the profile's forward and backward times
/// (tp 1's divided by the degree where the profile lacks it; backward
/// [`crate::cost::device::BACKWARD_FORWARD_RATIO`] x forward where it has
/// none), is as small as it can be (a min-max program over stages and
/// layers). Only a seed: plans are priced and the leaders re-split by the
/// cost model. `None` when a group's GPU has no profile entry or the
/// program would take more than [`MAX_BALANCE_STEPS`]. `times` holds the
/// per-layer times met so far, `kinds` the plan's [`stage_kinds`].
fn balanced_split<'c>(
    profile: &crate::profile::Profile,
    num_layers: usize,
    plan: &Plan,
    times: &BalanceTimes<'c>,
    kinds: &StageKinds<'c>,
) -> Option<Vec<usize>> {
    let pp = plan.stages.len();
    if pp == 0
        || pp > num_layers
        || pp.saturating_mul(num_layers).saturating_mul(num_layers) > MAX_BALANCE_STEPS
    {
        return None;
    }
    let mbs = plan.micro_batch;
    let ratio = crate::cost::device::BACKWARD_FORWARD_RATIO;
    let weigh = |gpu: &str, tp: usize| -> Option<Weighed> {
        let (t, div) = profile
            .layer_times(gpu, tp, mbs, num_layers)
            .map(|t| (t, 1.0))
            .or_else(|| {
                profile
                    .layer_times(gpu, 1, mbs, num_layers)
                    .map(|t| (t, tp as f64))
            })?;
        Some(Arc::new(
            t.iter()
                .map(|x| (x.forward_s + x.backward_s.unwrap_or(ratio * x.forward_s)) / div)
                .collect(),
        ))
    };
    // Each kind's times, looked up once per call (a plan has a few kinds,
    // its stages many).
    let mut of_key: Vec<Weighed> = Vec::with_capacity(kinds.keys.len());
    for &(gpu, tp) in &kinds.keys {
        let known = times
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(gpu, tp, mbs))
            .cloned();
        // Weighed outside the lock; a race weighs twice, alike.
        let t = match known {
            Some(t) => t,
            None => {
                let t = weigh(gpu, tp);
                times
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry((gpu, tp, mbs))
                    .or_insert(t)
                    .clone()
            }
        }?;
        of_key.push(t);
    }
    // Per set of kinds, the prefix sums of its per-layer times, the max
    // over a stage's groups being the max over their kinds (summed as
    // `crate::cost::prefix_sums` sums, from 0 in layer order).
    let mut prefixes: Vec<Vec<f64>> = Vec::with_capacity(kinds.sets.len());
    for set in &kinds.sets {
        let mut prefix = vec![0.0f64; num_layers + 1];
        for &k in set {
            for (p, t) in prefix[1..].iter_mut().zip(of_key[k].iter()) {
                *p = p.max(*t);
            }
        }
        let mut acc = 0.0;
        for p in &mut prefix[1..] {
            acc += *p;
            *p = acc;
        }
        prefixes.push(prefix);
    }
    let prefix = |j: usize| &prefixes[kinds.of_stage[j]];
    // best[e]: the least largest stage time of stages 0..=j over layers 0..e.
    let mut best: Vec<f64> = prefix(0).clone();
    let mut next = vec![f64::INFINITY; num_layers + 1];
    // cut[j * (num_layers + 1) + e]: stage j's first layer in that split.
    let mut cut: Vec<usize> = vec![0; pp * (num_layers + 1)];
    for j in 1..pp {
        let (p, cut) = (prefix(j), &mut cut[j * (num_layers + 1)..]);
        next.fill(f64::INFINITY);
        // Stages j + 1.. need a layer each: stage j ends by the layers
        // less that (the last stage at the last layer).
        for e in j + 1..=num_layers - (pp - 1 - j) {
            // Stage j's share grows as its first layer b moves down, so
            // from the top: once that share alone is over the best, no
            // smaller b does better. Equals replace: the smallest b wins.
            for b in (j..e).rev() {
                let share = p[e] - p[b];
                if share > next[e] {
                    break;
                }
                let t = best[b].max(share);
                if t < next[e] || (t == next[e] && t.is_finite()) {
                    next[e] = t;
                    cut[e] = b;
                }
            }
        }
        std::mem::swap(&mut best, &mut next);
    }
    let mut bounds = vec![num_layers; pp + 1];
    bounds[0] = 0;
    for j in (1..pp).rev() {
        bounds[j] = cut[j * (num_layers + 1) + bounds[j + 1]];
    }
    Some(bounds)
}

/// The layout of `cands`, candidates of one layout (at least one), as a
/// plan ([`layout_plan`]) and whether its candidates re-split it
/// ([`set_candidate`]), or why an interleaved setup cannot split the model
/// over its virtual stages.
fn layout_of(
    inputs: &Inputs,
    opts: &SearchOptions,
    cands: &[Candidate],
) -> std::result::Result<(Plan, bool), String> {
    let types = types_in_node_order(inputs.cluster);
    // Candidates of a layout share its groups, so its pp.
    let groups: usize = cands[0].types.iter().map(|t| t.2).sum();
    let pp = groups / cands[0].dp();
    let v = opts.setup.virtual_stages();
    let virtual_split = if v > 1 && pp > 1 {
        Some(
            crate::partition::even_block_split(inputs.model, pp * v)
                .map_err(|why| format!("pp {pp}: {why}"))?,
        )
    } else {
        None
    };
    let plan = layout_plan(&types, &cands[0], opts, virtual_split.as_deref());
    let resplit = !has_virtual_split(&plan, virtual_split.as_deref());
    Ok((plan, resplit))
}

/// The plans of `cands`, the candidates of one layout (at least one), or
/// why an interleaved setup cannot split the model over its virtual stages:
/// what [`CandidateLayout::set`] makes of its plan, built anew.
#[cfg(test)]
fn build_layout<'c>(
    inputs: &Inputs<'c>,
    opts: &SearchOptions,
    cands: &[Candidate],
    times: &BalanceTimes<'c>,
) -> std::result::Result<Vec<Plan>, String> {
    let (layout, resplit) = layout_of(inputs, opts, cands)?;
    let layers = inputs.model.num_layers();
    let kinds = stage_kinds(&layout, inputs.cluster);
    Ok(cands
        .iter()
        .map(|c| {
            let mut plan = layout.clone();
            let profile = Some((inputs.profile, times, &kinds));
            set_candidate(&mut plan, layers, c, opts, (resplit, profile));
            plan
        })
        .collect())
}

/// The ranked plan of candidate `c`, or [`Outcome::Infeasible`] when it
/// does not fit.
fn ranked(cluster: &Cluster, c: &Candidate, plan: Plan, estimate: Estimate) -> Outcome {
    if estimate.first_overflow().is_some() {
        return Outcome::Infeasible;
    }
    Outcome::Priced(Box::new(RankedPlan {
        tp: c.types.iter().map(|t| t.1).max().unwrap_or(1),
        dp: c.dp(),
        pp: plan.pp(),
        micro_batch: c.micro_batch(),
        num_micro_batches: plan.num_micro_batches,
        placement: Placement {
            axis_order: AxisOrder::DEFAULT,
            node_order: (0..cluster.nodes.len()).collect(),
        },
        plan,
        estimate,
    }))
}

/// Candidates simulated in parallel between two updates of the limit a
/// candidate must beat ([`price_bounded`]).
const CANDIDATES_PER_ROUND: usize = 64;

/// Prices the candidates into `tally`, keeping `pool` plans. They
/// are many, and most do not fit: each seed split ([`seed_bounds`]) is
/// first checked for memory and given a lower bound on its time
/// ([`crate::cost::PlanEstimator::lower_bound_if_fits`]); then candidates are simulated
/// in order of their least bound, in rounds, and a seed whose bound is
/// above the pool's slowest plan so far is not simulated (a candidate with
/// none left is [`Outcome::Slower`]: it cannot be among the plans kept).
/// The rounds are fixed, so the limits, and the plans kept, are those of
/// simulating every seed, whatever the threads. Splits are refined for the
/// leading plans only, afterwards.
fn price_bounded<'a, 'c>(
    inputs: &Inputs<'c>,
    (estimators, times): (&dyn LayoutEstimators<'a>, &BalanceTimes<'c>),
    opts: &SearchOptions,
    (cands, bounded): (&[Candidate], &(dyn Fn(usize) + Sync)),
    layouts: &[std::ops::Range<usize>],
    pool: usize,
    tally: &mut Tally,
) {
    let (cluster, layers) = (inputs.cluster, inputs.model.num_layers());
    // (least bound, candidate, layout, its seeds' bounds) of every
    // candidate with a seed split that fits ([`seed_bounds`], in order);
    // the others' outcomes tallied as they are met. The seeds themselves,
    // the layouts' plans and their estimators are rebuilt for the few
    // simulated, so memory does not grow with the layouts' size (tens of
    // thousands of layouts of 768 GPUs on three GPU types).
    type Seeded = Vec<(f64, usize, usize, SeedBounds)>;
    let (mut order, met): (Seeded, Tally) = layouts
        .par_iter()
        .enumerate()
        .fold(
            || (Vec::new(), Tally::default()),
            |(mut seeded, mut met), (k, r)| {
                let of_layout = &cands[r.clone()];
                let layout = match CandidateLayout::new(inputs, estimators, times, opts, of_layout)
                {
                    Ok(l) => l,
                    Err(why) => {
                        for i in r.clone() {
                            met.add(i, Outcome::Skipped(why.clone()), pool);
                        }
                        bounded(of_layout.len());
                        return (seeded, met);
                    }
                };
                let mut plan = layout.plan.clone();
                for (i, c) in r.clone().zip(of_layout) {
                    // The first is set already; a candidate no split fits
                    // is not split.
                    let may_fit = if i > r.start {
                        layout.set_if_some_split_may_fit(&mut plan, c)
                    } else {
                        layout.estimator.some_split_may_fit(&plan)
                    };
                    if !may_fit {
                        met.add(i, Outcome::Infeasible, pool);
                        continue;
                    }
                    match seed_bounds_of(&layout, &mut plan, layers) {
                        Ok(bounds) if bounds.iter().any(Option::is_some) => {
                            let least = bounds
                                .iter()
                                .flatten()
                                .fold(f64::INFINITY, |a, &b| a.min(b));
                            seeded.push((least, i, k, bounds));
                        }
                        Ok(_) => met.add(i, Outcome::Infeasible, pool),
                        Err(o) => met.add(i, o, pool),
                    }
                }
                // Bounding is most of the search: its progress is the
                // search's.
                bounded(of_layout.len());
                (seeded, met)
            },
        )
        .reduce(
            || (Vec::new(), Tally::default()),
            |(mut a, ta), (b, tb)| {
                a.extend(b);
                (a, ta.merge(tb, pool))
            },
        );
    *tally = std::mem::take(tally).merge(met, pool);
    order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    // The layouts the last round met: rounds in order of bound meet the
    // same layouts again.
    let mut built: HashMap<usize, std::result::Result<CandidateLayout<'a, 'c, '_>, String>> =
        HashMap::new();
    for round in order.chunks(CANDIDATES_PER_ROUND) {
        let limit_s = tally.limit_s(pool);
        // A candidate whose every seed is bounded above the limit is
        // slower than the plans kept: its layout is not rebuilt.
        let (round, slower): (Vec<_>, Vec<_>) = round.iter().copied().partition(|x| x.0 <= limit_s);
        for (_, i, _, _) in slower {
            tally.add(i, Outcome::Slower, pool);
        }
        let mut met: Vec<usize> = round.iter().map(|x| x.2).collect();
        met.sort_unstable();
        met.dedup();
        built.retain(|k, _| met.binary_search(k).is_ok());
        let missing: Vec<usize> = met.into_iter().filter(|k| !built.contains_key(k)).collect();
        let new: Vec<_> = missing
            .par_iter()
            .map(|&k| {
                let of_layout = &cands[layouts[k].clone()];
                (
                    k,
                    CandidateLayout::new(inputs, estimators, times, opts, of_layout),
                )
            })
            .collect();
        built.extend(new);
        let outcomes: Vec<(usize, Outcome)> = round
            .par_iter()
            .map(|&(_, i, k, bounds)| {
                let layout = match &built[&k] {
                    Ok(l) => l,
                    Err(why) => return (i, Outcome::Skipped(why.clone())),
                };
                let mut plan = layout.plan.clone();
                layout.set(&mut plan, &cands[i]);
                let mut best: Option<(Plan, Estimate)> = None;
                let mut slower = false;
                for (b, bound) in seed_bounds(&plan, layers).iter().zip(bounds) {
                    let Some(bound) = bound else { continue };
                    if bound > limit_s {
                        slower = true;
                        continue;
                    }
                    let p = seed_plan(&layout.plan, &cands[i], opts, b);
                    let e = match layout.estimator.estimate(&p) {
                        Ok(e) if e.iteration_s.is_finite() => e,
                        Ok(_) => continue,
                        Err(e) => return (i, Outcome::Skipped(e.to_string())),
                    };
                    if best
                        .as_ref()
                        .is_none_or(|b| e.iteration_s < b.1.iteration_s)
                    {
                        best = Some((p, e));
                    }
                }
                let outcome = match best {
                    Some((p, e)) => ranked(cluster, &cands[i], p, e),
                    None if slower => Outcome::Slower,
                    None => Outcome::Infeasible,
                };
                (i, outcome)
            })
            .collect();
        for (i, o) in outcomes {
            tally.add(i, o, pool);
        }
    }
}

/// The [`SeedBounds`] of `plan`, a plan of `layout` set to one of its
/// candidates (its split left at the last seed's), or the candidate's
/// outcome when a bound cannot be had.
fn seed_bounds_of(
    layout: &CandidateLayout,
    plan: &mut Plan,
    layers: usize,
) -> std::result::Result<SeedBounds, Outcome> {
    let mut bounds: SeedBounds = [None; 2];
    for (j, b) in seed_bounds(plan, layers).into_iter().enumerate() {
        for (s, w) in plan.stages.iter_mut().zip(b.windows(2)) {
            (s.first_layer, s.end_layer) = (w[0], w[1]);
        }
        bounds[j] = layout
            .estimator
            .lower_bound_if_fits(plan)
            .map_err(|e| Outcome::Skipped(e.to_string()))?;
    }
    Ok(bounds)
}

/// The lower bound of each of a candidate's [`seed_bounds`] splits, in
/// their order; `None` for one that does not fit (or is not a seed).
type SeedBounds = [Option<f64>; 2];

/// A layout of candidates (even or uneven): its plan set to its first
/// candidate, its estimator, and what setting the plan to another of its
/// candidates needs.
struct CandidateLayout<'a, 'c, 'x> {
    plan: Plan,
    estimator: LayoutEstimator<'a>,
    resplit: bool,
    kinds: StageKinds<'c>,
    inputs: &'x Inputs<'c>,
    times: &'x BalanceTimes<'c>,
    opts: &'x SearchOptions<'x>,
}

impl<'a, 'c, 'x> CandidateLayout<'a, 'c, 'x> {
    /// The layout of `cands` (at least one), or why it has no plan.
    fn new(
        inputs: &'x Inputs<'c>,
        estimators: &dyn LayoutEstimators<'a>,
        times: &'x BalanceTimes<'c>,
        opts: &'x SearchOptions<'x>,
        cands: &[Candidate],
    ) -> std::result::Result<Self, String> {
        // One plan, set to each candidate in turn: a layout's devices are
        // copied once, not once per candidate.
        let (mut plan, resplit) = layout_of(inputs, opts, cands)?;
        let kinds = stage_kinds(&plan, inputs.cluster);
        let profile = Some((inputs.profile, times, &kinds));
        let layers = inputs.model.num_layers();
        set_candidate(&mut plan, layers, &cands[0], opts, (resplit, profile));
        let estimator = estimators
            .layout_estimator(&plan)
            .map_err(|e| e.to_string())?;
        Ok(CandidateLayout {
            plan,
            estimator,
            resplit,
            kinds,
            inputs,
            times,
            opts,
        })
    }

    /// Sets `plan`, a plan of this layout, to candidate `c` ([`set_candidate`]).
    fn set(&self, plan: &mut Plan, c: &Candidate) {
        let profile = Some((self.inputs.profile, self.times, &self.kinds));
        let layers = self.inputs.model.num_layers();
        set_candidate(plan, layers, c, self.opts, (self.resplit, profile));
    }

    /// [`Self::set`], unless no split of candidate `c` fits in memory
    /// ([`crate::cost::PlanEstimator::some_split_may_fit`], checked before
    /// the split is sought): then `false`, `plan` dealt but not re-split.
    fn set_if_some_split_may_fit(&self, plan: &mut Plan, c: &Candidate) -> bool {
        deal_candidate(plan, c, self.opts);
        if !self.estimator.some_split_may_fit(plan) {
            return false;
        }
        if self.resplit {
            let profile = Some((self.inputs.profile, self.times, &self.kinds));
            resplit_candidate(plan, self.inputs.model.num_layers(), profile);
        }
        true
    }
}

/// The layouts of `cands`, each as the range of its candidates: candidates
/// differing only in micro-batch size are consecutive and share a layout
/// (one estimator prices its network once for all).
fn layouts_of(cands: &[Candidate]) -> Vec<std::ops::Range<usize>> {
    let mut layouts: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, c) in cands.iter().enumerate() {
        match layouts.last_mut() {
            Some(r) if cands[r.start].types == c.types && cands[r.start].dp() == c.dp() => {
                r.end = i + 1
            }
            _ => layouts.push(i..i + 1),
        }
    }
    layouts
}

/// Searches the per-GPU-type tp plans of `inputs` (none on a cluster of
/// one GPU type, or more than [`MAX_TYPES`]); ranks them fastest first and
/// keeps `opts.keep`. Errors with [`AmpError::NoPlan`] when none fits.
pub fn search_per_type_tp(
    inputs: &Inputs,
    model: &dyn CostModel,
    opts: &SearchOptions,
) -> Result<SearchResult> {
    opts.setup.check()?;
    // Every node pair's link filled in, sorted, as the main search prices
    // (a lookup is then a binary search, not a scan of Sailor's pair links).
    let complete = crate::search::with_every_link(inputs.cluster);
    let inputs = &Inputs {
        model: inputs.model,
        cluster: complete.as_ref().unwrap_or(inputs.cluster),
        profile: inputs.profile,
    };
    let cluster = inputs.cluster;
    let layers = inputs.model.num_layers();
    // Degrees that split the model's attention heads only.
    let tp_ok = |tp: usize| inputs.model.tp_refusal(tp).is_none();
    let cands = candidates(
        cluster,
        &tp_ok,
        layers,
        opts.global_batch,
        opts.uneven_dp,
        opts.fewer_replicas,
    );
    let steps = if opts.per_stage_tp {
        step_candidates(cluster, &tp_ok, layers, opts.global_batch, opts.uneven_dp)
    } else {
        Vec::new()
    };
    if cands.is_empty() && steps.is_empty() {
        return Err(AmpError::NoPlan(format!(
            "a tp per GPU type needs 2 to {MAX_TYPES} GPU types whose GPUs divide into whole stages for some dp dividing the global batch {}{}",
            opts.global_batch,
            // Named when the heads took degrees away.
            match types_and_degrees(cluster, &|_| true).map(|t| t.1) {
                Some(all) if Some(&all) != types_and_degrees(cluster, &tp_ok).map(|t| t.1).as_ref() => {
                    let heads = inputs.model.shape.as_ref().map_or(0, |s| s.heads);
                    format!(", and two tp degrees that split the model's {heads} attention heads")
                }
                _ => String::new(),
            }
        )));
    }
    // Layouts share their network prices where their groups are alike,
    // candidates the per-layer times their seed splits weigh.
    let estimators = model.layout_estimators(inputs);
    let times = BalanceTimes::default();
    let priced = (model, estimators.as_ref(), &times);
    // Progress: the candidates of both lists bounded so far, of all.
    let (bounded, total) = (AtomicUsize::new(0), cands.len() + steps.len());
    let report = |n: usize| {
        if let Some(report) = opts.progress {
            report(bounded.fetch_add(n, Ordering::Relaxed) + n, total);
        }
    };
    // The two lists apart, then merged: the steps' plans can only add to
    // the per-type ones (priced together they would share one pool of
    // plans to refine, and could push out one that wins after it).
    let mut result = price_candidates(inputs, priced, opts, &cands, &report);
    if !steps.is_empty() {
        let by_step = price_candidates(inputs, priced, opts, &steps, &report);
        result.absorb(by_step, Some);
        result.plans.sort_by_key(rank_key);
        result.plans.truncate(opts.keep.max(1));
    }
    if result.plans.is_empty() {
        return Err(AmpError::NoPlan(format!(
            "no plan with a tp per GPU type: {}",
            no_plan_reason(&result, &[opts.setup], inputs.cluster.num_devices())
        )));
    }
    Ok(result)
}

/// `cands` priced and ranked, `opts.keep` of their plans kept: bounded and
/// simulated in order of their bound ([`price_bounded`]), the leading plans
/// refined (their micro-batches moved too under
/// [`SearchOptions::uneven_dp`]).
fn price_candidates<'a, 'c>(
    inputs: &Inputs<'c>,
    (model, estimators, times): (&dyn CostModel, &dyn LayoutEstimators<'a>, &BalanceTimes<'c>),
    opts: &SearchOptions,
    cands: &[Candidate],
    bounded: &(dyn Fn(usize) + Sync),
) -> SearchResult {
    // Fastest first, ties in candidate order, as the main search ranks.
    let keep = opts.keep.max(1);
    // The refinement's pool is kept, so which plans are refined does not
    // depend on `keep`.
    let pool = keep.max(crate::refine::REFINE_POOL);
    let layouts = layouts_of(cands);
    let mut tally = Tally::default();
    price_bounded(
        inputs,
        (estimators, times),
        opts,
        (cands, bounded),
        &layouts,
        pool,
        &mut tally,
    );
    let (mut plans, mut result) = tally.finish(pool).into_plans_and_counts(cands.len());
    // The search's estimators: the refined plans' network is priced.
    crate::refine::refine_leading(
        inputs,
        (model, estimators),
        &mut plans,
        rank_key,
        opts.uneven_dp,
    );
    plans.truncate(keep);
    result.plans = plans;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::builtin as clusters;
    use crate::cost::device::DeviceModel;
    use crate::model::builtin as models;
    use crate::profile::uniform_profile;
    use crate::search::PlacementSearch;
    use crate::setup::TrainingSetup;

    /// V100 and T4 at tp 1, 2 and 4, every layer `v100_s` and `t4_s` per
    /// sample at tp 1 and that over tp above.
    fn v100_t4_profile(layers: usize, v100_s: f64, t4_s: f64) -> crate::profile::Profile {
        let entries: Vec<(&str, usize, f64)> = [1, 2, 4]
            .into_iter()
            .flat_map(|tp| {
                [
                    ("V100-16GB", tp, v100_s / tp as f64),
                    ("T4", tp, t4_s / tp as f64),
                ]
            })
            .collect();
        uniform_profile(layers, &entries)
    }

    /// AMP's GPT-2 on AMP's het-cluster (12 V100 + 4 T4), with
    /// [`v100_t4_profile`]'s times.
    struct Gpt2HetCluster {
        model: crate::model::Model,
        cluster: Cluster,
        profile: crate::profile::Profile,
    }

    impl Gpt2HetCluster {
        fn new() -> Gpt2HetCluster {
            Gpt2HetCluster {
                model: models::amp_gpt2(),
                cluster: clusters::het_cluster(),
                profile: v100_t4_profile(30, 0.0024, 0.0072),
            }
        }

        fn inputs(&self) -> Inputs<'_> {
            Inputs {
                model: &self.model,
                cluster: &self.cluster,
                profile: &self.profile,
            }
        }
    }

    #[test]
    fn plans_give_each_type_its_own_tp_and_use_every_device_once() {
        let f = Gpt2HetCluster::new();
        let (model, cluster, inputs) = (&f.model, &f.cluster, f.inputs());
        let dm = DeviceModel::default();
        let opts = SearchOptions::new(32, PlacementSearch::Artifact, TrainingSetup::default());
        let r = search_per_type_tp(&inputs, &dm, &opts).unwrap();
        assert!(!r.plans.is_empty());
        let times: Vec<f64> = r.plans.iter().map(|p| p.estimate.iteration_s).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        for p in &r.plans {
            p.plan.validate(model, cluster).unwrap();
            assert_eq!(p.plan.devices().count(), 16);
            let tps: std::collections::BTreeSet<usize> =
                p.plan.stages.iter().map(|s| s.replicas[0].len()).collect();
            assert!(tps.len() > 1, "one tp for every stage: {tps:?}");
            // Every stage's GPUs are of one type.
            for s in &p.plan.stages {
                let kinds: std::collections::BTreeSet<&str> = s
                    .replicas
                    .iter()
                    .flatten()
                    .map(|d| cluster.nodes[d.node].gpu_type.as_str())
                    .collect();
                assert_eq!(kinds.len(), 1);
            }
        }
        // One GPU type: nothing to vary per type.
        let homo = clusters::homogeneous();
        let inputs = Inputs {
            cluster: &homo,
            ..inputs
        };
        assert!(search_per_type_tp(&inputs, &dm, &opts).is_err());
    }

    /// Under an interleaved setup the plans take Megatron-LM's even split
    /// of the pp x v virtual stages, virtual stage `i` on pipeline rank
    /// `i mod pp`'s groups, each replica's micro-batches a multiple of pp
    /// (its schedule runs them in groups of pp); with and without uneven
    /// data parallelism.
    #[test]
    fn interleaved_setups_give_per_type_plans_on_the_even_split() {
        let profile = v100_t4_profile(30, 0.0024, 0.0072);
        // Two V100 nodes and the T4 node of het-cluster: V100s at tp 2 and
        // T4s at tp 1 make 4 groups each, so pp 2 or 4 at dp 4 or 2, whose
        // 4 or 8 virtual stages split GPT-2's 24 blocks evenly.
        let mut cluster = clusters::het_cluster();
        let t4 = cluster
            .nodes
            .iter()
            .position(|n| n.gpu_type == "T4")
            .unwrap();
        let v100: Vec<usize> = (0..cluster.nodes.len())
            .filter(|&n| cluster.nodes[n].gpu_type != "T4")
            .take(2)
            .collect();
        cluster.nodes = [v100[0], v100[1], t4]
            .iter()
            .map(|&n| cluster.nodes[n].clone())
            .collect();
        cluster.links.clear();
        let model = models::amp_gpt2();
        let inputs = Inputs {
            model: &model,
            cluster: &cluster,
            profile: &profile,
        };
        let dm = DeviceModel::default();
        let setup = TrainingSetup {
            schedule: crate::schedule::Schedule::Interleaved { virtual_stages: 2 },
            ..Default::default()
        };
        for uneven in [false, true] {
            let mut opts = SearchOptions::new(96, PlacementSearch::Artifact, setup);
            opts.uneven_dp = uneven;
            opts.keep = 10_000;
            let r = search_per_type_tp(&inputs, &dm, &opts).unwrap();
            let interleaved: Vec<&Plan> = r
                .plans
                .iter()
                .map(|p| &p.plan)
                .filter(|p| p.setup.virtual_stages() == 2)
                .collect();
            assert!(!interleaved.is_empty(), "uneven {uneven}");
            for p in interleaved {
                p.validate(&model, &cluster).unwrap();
                let pp = p.pp();
                assert_eq!(p.stages.len(), 2 * pp);
                assert_eq!(
                    p.boundaries(),
                    crate::partition::even_block_split(&model, 2 * pp).unwrap()
                );
                for (i, s) in p.stages.iter().enumerate() {
                    assert_eq!(s.replicas, p.stages[i % pp].replicas);
                }
                let tps: std::collections::BTreeSet<usize> = p
                    .rank_stages()
                    .iter()
                    .flat_map(|s| s.replicas.iter().map(Vec::len))
                    .collect();
                assert!(tps.len() > 1, "one tp for every stage: {tps:?}");
                let dp = p.stages[0].replicas.len();
                assert!((0..dp).all(|r| p.micro_batches_of(r) % pp == 0));
                assert_eq!(
                    (0..dp).map(|r| p.micro_batches_of(r)).sum::<usize>() * p.micro_batch,
                    96
                );
            }
        }
    }

    /// With uneven data parallelism the groups pour into mixed stages:
    /// every plan is valid, trains the whole batch, leaves fewer than pp
    /// groups idle, and the best is at least as fast as the even search's
    /// on this cluster.
    #[test]
    fn uneven_candidates_pour_groups_into_mixed_stages() {
        let f = Gpt2HetCluster::new();
        let (model, cluster, inputs) = (&f.model, &f.cluster, f.inputs());
        let dm = DeviceModel::default();
        let even = SearchOptions::new(32, PlacementSearch::Artifact, TrainingSetup::default());
        let uneven = SearchOptions {
            uneven_dp: true,
            ..even
        };
        let r = search_per_type_tp(&inputs, &dm, &uneven).unwrap();
        // Fewer replicas leave more groups idle; every plan still valid.
        let fewer = SearchOptions {
            fewer_replicas: true,
            ..uneven
        };
        let f = search_per_type_tp(&inputs, &dm, &fewer).unwrap();
        for p in &f.plans {
            p.plan.validate(model, cluster).unwrap();
            assert_eq!(p.plan.global_batch(), 32);
        }
        assert!(f.plans.len() >= r.plans.len());
        let mixed_stage = |p: &Plan| {
            p.stages.iter().any(|s| {
                let types: std::collections::BTreeSet<&str> = s
                    .devices()
                    .map(|d| cluster.nodes[d.node].gpu_type.as_str())
                    .collect();
                types.len() > 1
            })
        };
        for p in &r.plans {
            p.plan.validate(model, cluster).unwrap();
            assert_eq!(p.plan.global_batch(), 32);
            let idle = 16 - p.plan.devices().count();
            let max_tp = p.plan.stages.iter().map(|s| s.max_tp()).max().unwrap();
            assert!(idle < p.pp * max_tp, "{idle} idle GPUs");
        }
        assert!(r.plans.iter().any(|p| mixed_stage(&p.plan)));
        assert!(r.plans.iter().any(|p| p.plan.is_uneven()));
        let best_even = search_per_type_tp(&inputs, &dm, &even).unwrap().plans[0]
            .estimate
            .iteration_s;
        assert!(r.plans[0].estimate.iteration_s <= best_even);
    }

    /// With fewer replicas, each pipeline depth is also tried at the fewest
    /// replicas that run as many micro-batches each as the most do, and
    /// only with them: Sailor's 32 + 96 plan (56 groups over two stages,
    /// 512 micro-batches: 19 each on 28 replicas or on 27, two GPUs idle)
    /// on a stand-in cluster of 24 V100 nodes and 8 T4 nodes.
    #[test]
    fn fewer_replicas_give_sailors_dp_27() {
        assert_eq!(uneven_dps(28, 512), vec![28, 27]);
        assert_eq!(uneven_dps(28, 1024), vec![28]); // 37 rounds need all 28
        assert_eq!(uneven_dps(8, 10), vec![8, 5]);
        assert_eq!(uneven_dps(8, 16), vec![8]);
        assert_eq!(uneven_dps(8, 7), vec![8]); // fewer micro-batches than replicas
        let mut nodes = vec![clusters::p3_8xlarge(); 24];
        nodes.extend(vec![clusters::g4dn_12xlarge(); 8]);
        let cluster = Cluster {
            name: "24 V100 + 8 T4 nodes".into(),
            nodes,
            links: Vec::new(),
        };
        // The V100s first in node order: type 0.
        let sailors = Candidate {
            types: TypeUses::new([(0, 4, 24), (1, 1, 30)]),
            dp: 27,
            micro_batch: 2,
        };
        let keys = |fewer: bool| -> std::collections::BTreeSet<String> {
            candidates(&cluster, &|_| true, 26, 1024, true, fewer)
                .iter()
                .map(|c| format!("{c:?}"))
                .collect()
        };
        // A layout's candidates are consecutive, with and without fewer
        // replicas (they share its estimator): as many layouts as distinct
        // (types, dp).
        for fewer in [false, true] {
            let cands = candidates(&cluster, &|_| true, 26, 1024, true, fewer);
            let distinct: std::collections::BTreeSet<String> = cands
                .iter()
                .map(|c| format!("{:?} {}", c.types, c.dp()))
                .collect();
            assert_eq!(layouts_of(&cands).len(), distinct.len());
        }
        let (with, without) = (keys(true), keys(false));
        assert!(with.contains(&format!("{sailors:?}")));
        assert!(!without.contains(&format!("{sailors:?}")));
        assert!(without.is_subset(&with));
        assert!(with.len() > without.len());
    }

    /// Candidates proven slower change nothing: the uneven search keeping
    /// the refinement's pool finds the plans, and counts, of one that
    /// simulates every seed of every candidate (no limit), with and without
    /// fewer replicas. Bounds matched to the wrong seeds fail this.
    #[test]
    fn uneven_pruning_keeps_the_plans_of_simulating_every_candidate() {
        let f = Gpt2HetCluster::new();
        let inputs = f.inputs();
        let dm = DeviceModel::default();
        for fewer_replicas in [false, true] {
            let opts = |keep: usize| SearchOptions {
                uneven_dp: true,
                fewer_replicas,
                keep,
                ..SearchOptions::new(32, PlacementSearch::Artifact, TrainingSetup::default())
            };
            let all = search_per_type_tp(&inputs, &dm, &opts(usize::MAX)).unwrap();
            let few = search_per_type_tp(&inputs, &dm, &opts(crate::refine::REFINE_POOL)).unwrap();
            assert!(all.plans.len() > 2 * few.plans.len(), "{}", all.plans.len());
            assert_eq!(few.plans.as_slice(), &all.plans[..few.plans.len()]);
            let counts =
                |r: &SearchResult| (r.candidates, r.infeasible, r.unpriced, r.skipped.clone());
            assert_eq!(counts(&few), counts(&all));
        }
    }

    /// A seed kept as its boundaries is rebuilt as the plan it was bounded
    /// on: every uneven candidate's seeds, rebuilt from the first plan of
    /// its layout (another micro-batch size), equal the candidate's own
    /// plans, with and without interleaving.
    #[test]
    fn seeds_rebuild_from_their_layouts_first_plan() {
        let f = Gpt2HetCluster::new();
        let (cluster, inputs) = (&f.cluster, f.inputs());
        let mut checked = 0;
        for schedule in [
            crate::schedule::Schedule::OneFOneB,
            crate::schedule::Schedule::Interleaved { virtual_stages: 2 },
        ] {
            let setup = TrainingSetup {
                schedule,
                ..TrainingSetup::default()
            };
            let opts = SearchOptions {
                uneven_dp: true,
                ..SearchOptions::new(32, PlacementSearch::Artifact, setup)
            };
            let cands = candidates(cluster, &|_| true, 30, 32, true, false);
            let times = BalanceTimes::default();
            for r in layouts_of(&cands) {
                if let Ok(plans) = build_layout(&inputs, &opts, &cands[r.clone()], &times) {
                    for (c, plan) in cands[r].iter().zip(&plans) {
                        for b in seed_bounds(plan, 30) {
                            let own = crate::refine::with_boundaries(plan, &b);
                            assert_eq!(seed_plan(&plans[0], c, &opts, &b), own);
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 100, "{checked}");
    }

    /// Every composition of `total` into parts of at least `mins`.
    fn deals(total: usize, mins: &[usize], out: &mut Vec<Vec<usize>>, cur: &mut Vec<usize>) {
        let k = cur.len();
        if k + 1 == mins.len() {
            if total >= mins[k] {
                cur.push(total);
                out.push(cur.clone());
                cur.pop();
            }
            return;
        }
        let rest: usize = mins[k + 1..].iter().sum();
        for t in mins[k]..=total.saturating_sub(rest) {
            cur.push(t);
            deals(total - t, mins, out, cur);
            cur.pop();
        }
    }

    /// A small instance: [`eight_equal_layers`] on `v100_nodes` V100 nodes
    /// and the T4 node of the het-cluster (4 GPUs each), the T4 `t4_ratio`
    /// times slower per layer.
    fn small_instance(
        v100_nodes: usize,
        t4_ratio: f64,
    ) -> (crate::model::Model, Cluster, crate::profile::Profile) {
        let mut cluster = clusters::het_cluster();
        cluster.nodes.drain(v100_nodes..3);
        let profile = v100_t4_profile(8, 0.0026, 0.0026 * t4_ratio);
        (eight_equal_layers(), cluster, profile)
    }

    /// Eight equal transformer blocks: the small instances' model.
    fn eight_equal_layers() -> crate::model::Model {
        use crate::model::{Layer, LayerKind, Model};
        let layer = |i: usize| Layer {
            name: format!("b{i}"),
            kind: LayerKind::TransformerBlock,
            params: 20_000_000,
            output_elems_per_sample: 1_000_000,
            forward_flops_per_sample: None,
            tied_to: None,
            stored_activation_elems_per_sample: None,
            replicated_activation_elems_per_sample: None,
            backward_transient_elems_per_sample: None,
            replicated_backward_transient_elems_per_sample: None,
            forward_send_extra_bytes: 0,
        };
        Model {
            name: "eight".into(),
            shape: None,
            layers: (0..8).map(layer).collect(),
            resident_bytes_per_device: None,
        }
    }

    /// On one small instance (a V100 and a T4 node of 4, 8 equal layers,
    /// the T4 `t4_ratio` times slower per layer, `batch` samples): the
    /// uneven per-type search's best time, and the best over every split
    /// and every deal of the micro-batches between replica classes of every
    /// candidate it generates, with whether that best is uneven or has a
    /// mixed stage.
    fn uneven_search_and_exhaustive(t4_ratio: f64, batch: usize, fewer: bool) -> (f64, f64, bool) {
        let (model, cluster, profile) = small_instance(1, t4_ratio);
        let inputs = Inputs {
            model: &model,
            cluster: &cluster,
            profile: &profile,
        };
        let dm = DeviceModel::default();
        let opts = SearchOptions {
            uneven_dp: true,
            fewer_replicas: fewer,
            ..SearchOptions::new(batch, PlacementSearch::Artifact, TrainingSetup::default())
        };
        let found = search_per_type_tp(&inputs, &dm, &opts).unwrap().plans[0]
            .estimate
            .iteration_s;
        let mut best = (f64::INFINITY, false);
        for c in candidates(&cluster, &|_| true, 8, batch, true, fewer) {
            let plan = build(&cluster, 8, &c, &opts, Some(&profile));
            let classes = crate::uneven::replica_classes(&plan, &cluster);
            let k = classes.iter().max().unwrap() + 1;
            let members: Vec<Vec<usize>> = (0..k)
                .map(|m| (0..classes.len()).filter(|&r| classes[r] == m).collect())
                .collect();
            let mins: Vec<usize> = members.iter().map(Vec::len).collect();
            let mut all = Vec::new();
            deals(batch / c.micro_batch(), &mins, &mut all, &mut Vec::new());
            crate::refine::for_each_split(8, plan.stages.len(), |b| {
                let split = crate::refine::with_boundaries(&plan, b);
                for totals in &all {
                    let mut counts = vec![0; classes.len()];
                    for (m, rs) in members.iter().enumerate() {
                        for (r, n) in rs.iter().zip(crate::uneven::even_deal(totals[m], rs.len())) {
                            counts[*r] = n;
                        }
                    }
                    let mut p = split.clone();
                    crate::uneven::set_micro_batches(&mut p, counts);
                    if let Ok(Some(e)) = dm.evaluate_if_fits(&inputs, &p) {
                        if e.iteration_s < best.0 {
                            let mixed = p.stages.iter().any(|s| {
                                let first = &cluster.nodes[s.replicas[0][0].node].gpu_type;
                                s.devices()
                                    .any(|d| cluster.nodes[d.node].gpu_type != *first)
                            });
                            best = (e.iteration_s, p.is_uneven() || mixed);
                        }
                    }
                }
            });
        }
        (found, best.0, best.1)
    }

    /// The memory check that drops a candidate before its split is sought
    /// ([`crate::memory::SplitMemoryCheck`]) never drops one that some
    /// split fits, and drops nearly every one that none fits: every
    /// candidate of GPT-2 (tied embeddings, eight blocks) on a V100 and a
    /// T4 node, at batches where memory binds, with and without
    /// recomputation and sharded optimizer state, and under eager autocast
    /// with every block recomputed (whose casts the blocks drop), against
    /// every split.
    #[test]
    fn memory_check_before_the_split_never_drops_a_plan_that_fits() {
        use crate::setup::{OptimizerSharding, Recompute};
        let model = models::gpt2(8, 1600, 1024, 50257);
        let n = model.num_layers();
        let mut cluster = clusters::het_cluster();
        cluster.nodes.drain(1..3);
        let reserve = crate::cost::Calibration::FITTED.framework_reserve_bytes;
        let setups = [
            TrainingSetup::default(),
            TrainingSetup {
                recompute: Recompute::Full,
                ..TrainingSetup::default()
            },
            TrainingSetup {
                optimizer_sharding: OptimizerSharding::Zero1,
                ..TrainingSetup::default()
            },
            // Eager autocast: the blocks' casts live through the forward
            // and their own backward only.
            TrainingSetup {
                recompute: Recompute::Full,
                formats: TrainingSetup::default().formats.with_eager_autocast(),
                ..TrainingSetup::default()
            },
        ];
        let (mut some_fit, mut none_fit, mut dropped) = (0, 0, 0);
        for setup in setups {
            for batch in [8, 24, 64] {
                let opts = SearchOptions {
                    uneven_dp: true,
                    ..SearchOptions::new(batch, PlacementSearch::Artifact, setup)
                };
                for c in candidates(&cluster, &|_| true, n, batch, true, false) {
                    let plan = build(&cluster, n, &c, &opts, None);
                    let caps = crate::memory::replica_capacities(&cluster, &plan);
                    let check = crate::memory::SplitMemoryCheck::new(&model, &plan, reserve, &caps);
                    let may = check.unwrap().some_split_may_fit(&plan);
                    let mut fits = false;
                    crate::refine::for_each_split(n, plan.stages.len(), |b| {
                        let p = crate::refine::with_boundaries(&plan, b);
                        fits = fits || crate::memory::plan_fits_within(&model, &p, reserve, &caps);
                    });
                    assert!(may || !fits, "{c:?} at batch {batch}: a split fits");
                    if fits {
                        some_fit += 1;
                    } else {
                        none_fit += 1;
                        dropped += usize::from(!may);
                    }
                }
            }
        }
        eprintln!("some split fits {some_fit}, none fits {none_fit}, dropped {dropped}");
        assert!(
            some_fit > 0 && none_fit > 0,
            "memory binds on some, not all"
        );
        // (2368, 410, 400) without the eager setup until the loss's and a
        // block's workspaces were held one at a time and the reserve was
        // re-fitted to 4.5 GB (2026-12-05).
        assert_eq!((some_fit, none_fit, dropped), (3185, 519, 501));
    }

    /// The uneven per-type search is a heuristic: candidates priced on two
    /// seed splits, the leaders re-split and their micro-batches moved by
    /// local search. Measured against every split and every deal between
    /// replica classes of every candidate it generates, on 24 small
    /// instances (T4 1-5x slower per layer than the V100, batch 6, 9, 10,
    /// 12): the loss the README reports, pinned.
    #[test]
    fn uneven_search_loss_against_every_split_and_deal() {
        let (exact, worst, mean, special) = search_losses(false);
        eprintln!(
            "uneven per-type search: exact on {exact} of 24, worst loss {:.4}%, mean {:.4}%, {special} exhaustive bests uneven or mixed",
            100.0 * worst,
            100.0 * mean
        );
        // In none of them is the best plan of the space uneven or mixed:
        // these instances measure the seeds and the refinement, not the
        // rebalancing (uneven.rs and search.rs test that).
        // Exact on all 24 with the constants fitted on 2026-12-03 (an
        // inter-node efficiency of 1); with 0.5 before, 21 of 24, worst
        // 1.63%: the figure moves with the network's price.
        assert_eq!((exact, special), (24, 0));
        assert!(worst <= 1e-12 && mean <= 1e-12, "{worst} {mean}");
    }

    /// The same 24 instances with fewer replicas, against every split and
    /// deal of every candidate of that wider space.
    #[test]
    fn fewer_replicas_search_loss_against_every_split_and_deal() {
        let (exact, worst, mean, special) = search_losses(true);
        eprintln!(
            "with fewer replicas: exact on {exact} of 24, worst loss {:.4}%, mean {:.4}%, {special} exhaustive bests uneven or mixed",
            100.0 * worst,
            100.0 * mean
        );
        // As without: no best here runs fewer replicas than it could.
        assert_eq!((exact, special), (24, 0));
    }

    /// Over the 24 instances of [`uneven_search_and_exhaustive`]: how many
    /// the search gets exactly, its worst and mean loss, and how many
    /// exhaustive bests are uneven or mixed.
    fn search_losses(fewer: bool) -> (usize, f64, f64, usize) {
        let mut losses = Vec::new();
        let mut special = 0;
        for t4 in [1.0, 1.5, 2.0, 3.0, 4.0, 5.0] {
            for batch in [6, 9, 10, 12] {
                let (found, best, uneven_or_mixed) = uneven_search_and_exhaustive(t4, batch, fewer);
                assert!(found >= best - 1e-12, "{t4} {batch}: {found} < {best}");
                losses.push(found / best - 1.0);
                special += usize::from(uneven_or_mixed);
            }
        }
        let exact = losses.iter().filter(|&&l| l <= 1e-12).count();
        let worst = losses.iter().copied().fold(0.0, f64::max);
        let mean = losses.iter().sum::<f64>() / losses.len() as f64;
        (exact, worst, mean, special)
    }

    /// `balanced_split` is a min-max split: on random per-layer times (V100
    /// and T4 at tp 1, 2 and 4, measured backward or not), for every
    /// candidate of up to 5 stages over 9 layers its largest stage time,
    /// each stage on its slowest group, equals the least over every split.
    #[test]
    fn balanced_split_is_the_least_largest_stage_time_of_every_split() {
        let cluster = clusters::het_cluster();
        let layers = 9;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut draw = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            1e-3 * (1 + state % 100) as f64
        };
        let mut checked = 0;
        for round in 0..3 {
            let mut profile = crate::profile::Profile::default();
            for gpu in ["V100-16GB", "T4"] {
                for tp in [1, 2, 4] {
                    let forward_s: Vec<f64> = (0..layers).map(|_| draw()).collect();
                    let backward_s = (round != 1 || gpu == "T4")
                        .then(|| (0..layers).map(|_| draw()).collect::<Vec<f64>>());
                    profile.entries.push(crate::profile::ProfileEntry {
                        gpu: gpu.into(),
                        tp,
                        micro_batch: None,
                        forward_s,
                        backward_s,
                        optimizer_s: None,
                        source: None,
                    });
                }
            }
            // Each layer's time on a group, as the split weighs it.
            let weight = |gpu: &str, tp: usize, mbs: usize, layer: usize| {
                let t = profile.layer_times(gpu, tp, mbs, layers).unwrap()[layer];
                let ratio = crate::cost::device::BACKWARD_FORWARD_RATIO;
                t.forward_s + t.backward_s.unwrap_or(ratio * t.forward_s)
            };
            let opts = SearchOptions {
                uneven_dp: true,
                ..SearchOptions::new(32, PlacementSearch::Artifact, TrainingSetup::default())
            };
            for c in candidates(&cluster, &|_| true, layers, 32, true, false) {
                let plan = build(&cluster, layers, &c, &opts, None);
                let pp = plan.stages.len();
                if !(2..=5).contains(&pp) {
                    continue;
                }
                // Per stage, each layer's time on its slowest group.
                let slowest: Vec<Vec<f64>> = plan
                    .stages
                    .iter()
                    .map(|s| {
                        (0..layers)
                            .map(|l| {
                                s.replicas
                                    .iter()
                                    .flatten()
                                    .map(|d| {
                                        let gpu = cluster.nodes[d.node].gpu_type.as_str();
                                        let tp = s
                                            .replicas
                                            .iter()
                                            .find(|g| g.contains(d))
                                            .unwrap()
                                            .len();
                                        weight(gpu, tp, plan.micro_batch, l)
                                    })
                                    .fold(0.0, f64::max)
                            })
                            .collect()
                    })
                    .collect();
                let sums: Vec<Vec<f64>> = slowest
                    .iter()
                    .map(|w| crate::cost::prefix_sums(w.iter().copied()))
                    .collect();
                let largest = |b: &[usize]| {
                    (0..pp)
                        .map(|j| sums[j][b[j + 1]] - sums[j][b[j]])
                        .fold(0.0, f64::max)
                };
                let mut least = f64::INFINITY;
                crate::refine::for_each_split(layers, pp, |b| least = least.min(largest(b)));
                let times = BalanceTimes::default();
                let kinds = stage_kinds(&plan, &cluster);
                let b = balanced_split(&profile, layers, &plan, &times, &kinds).unwrap();
                assert_eq!((b[0], b[pp], b.len()), (0, layers, pp + 1));
                assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
                assert_eq!(largest(&b), least, "{c:?}: {b:?}");
                checked += 1;
            }
        }
        assert!(checked > 50, "{checked}");
    }

    /// [`type_steps`] against its definition, every (tp, stages) and
    /// (a, stages at a, b, stages at b) tried: the GPUs of whole stages of
    /// `dp` groups add up to the type's, the stages to at most `most`.
    #[test]
    fn type_steps_are_every_way_to_fill_whole_stages() {
        let mut twos = 0;
        for (devices, choices, most) in [
            (96usize, vec![1usize, 2, 4], 26usize),
            (12, vec![1, 2, 4], 8),
            (48, vec![1, 2, 4, 8], 12),
            (36, vec![1, 2, 3, 6], 10),
        ] {
            for dp in 1..=devices {
                let mut want = Vec::new();
                for &tp in &choices {
                    for s in 1..=most {
                        if dp * s * tp == devices {
                            want.push(vec![(tp, s * dp)]);
                        }
                    }
                }
                for &a in &choices {
                    for &b in &choices {
                        for sa in 1..=most {
                            for sb in 1..=most {
                                if a != b && sa + sb <= most && dp * (sa * a + sb * b) == devices {
                                    want.push(vec![(a, sa * dp), (b, sb * dp)]);
                                }
                            }
                        }
                    }
                }
                twos += want.iter().filter(|w| w.len() == 2).count();
                assert_eq!(
                    type_steps(devices, &choices, dp, most),
                    want,
                    "{devices} {dp}"
                );
            }
        }
        assert!(twos > 100, "{twos}");
    }

    /// The search reports its progress: the candidates bounded so far, of
    /// every candidate of both lists (the per-type and, with
    /// --per-stage-tp, the per-stage ones), ending at all of them.
    #[test]
    fn progress_counts_every_candidate_of_both_lists() {
        let f = Gpt2HetCluster::new();
        let inputs = f.inputs();
        let reports = Mutex::new(Vec::new());
        let record = |done: usize, total: usize| reports.lock().unwrap().push((done, total));
        let opts = SearchOptions {
            per_stage_tp: true,
            progress: Some(&record),
            ..SearchOptions::new(32, PlacementSearch::Artifact, TrainingSetup::default())
        };
        let r = search_per_type_tp(&inputs, &DeviceModel::default(), &opts).unwrap();
        let reports = reports.into_inner().unwrap();
        assert!(reports.len() > 1, "{reports:?}");
        assert!(reports.iter().all(|&(_, total)| total == r.candidates));
        let most = reports.iter().map(|r| r.0).max().unwrap();
        assert_eq!(most, r.candidates);
        // Each count is new: the layouts' candidates are counted once.
        let mut done: Vec<usize> = reports.iter().map(|r| r.0).collect();
        done.sort_unstable();
        done.dedup();
        assert_eq!(done.len(), reports.len());
    }

    /// The per-stage candidates' plans: valid, every GPU used once, one tp
    /// per stage, some type's stages at two; and the search with them is
    /// never slower than without (its plans are added to the per-type
    /// search's, not ranked in their place).
    #[test]
    fn per_stage_plans_give_a_type_two_degrees_and_never_lose() {
        let f = Gpt2HetCluster::new();
        let (model, cluster, inputs) = (&f.model, &f.cluster, f.inputs());
        let layers = model.num_layers();
        let opts = SearchOptions::new(32, PlacementSearch::Artifact, TrainingSetup::default());
        let steps = step_candidates(cluster, &|_| true, layers, 32, false);
        assert!(steps.len() > 50, "{}", steps.len());
        for c in &steps {
            let plan = build(cluster, layers, c, &opts, None);
            plan.validate(model, cluster).unwrap();
            let devices: std::collections::BTreeSet<_> = plan.devices().collect();
            assert_eq!((devices.len(), plan.devices().count()), (16, 16));
            let mut degrees: Vec<(&str, usize)> = Vec::new();
            for s in &plan.stages {
                let kinds = s.group_kinds(cluster);
                assert_eq!(kinds.len(), 1, "one type and tp per stage: {kinds:?}");
                if !degrees.contains(&kinds[0]) {
                    degrees.push(kinds[0]);
                }
            }
            assert!(degrees.len() > 2, "{degrees:?}");
        }
        let dm = DeviceModel::default();
        for uneven_dp in [false, true] {
            let base = SearchOptions { uneven_dp, ..opts };
            let wide = SearchOptions {
                per_stage_tp: true,
                ..base
            };
            let a = search_per_type_tp(&inputs, &dm, &base).unwrap();
            let b = search_per_type_tp(&inputs, &dm, &wide).unwrap();
            let steps = step_candidates(cluster, &|_| true, layers, 32, uneven_dp).len();
            assert_eq!(b.candidates, a.candidates + steps);
            // Every plan kept (`keep` unbounded): the per-type plans are
            // all there, priced as alone.
            let times = |r: &SearchResult| -> Vec<u64> {
                let mut t: Vec<u64> = r
                    .plans
                    .iter()
                    .map(|p| p.estimate.iteration_s.to_bits())
                    .collect();
                t.sort_unstable();
                t
            };
            let (ta, tb) = (times(&a), times(&b));
            assert!(ta.iter().all(|t| tb.binary_search(t).is_ok()));
            assert!(tb.len() > ta.len());
            assert!(b.plans[0].estimate.iteration_s <= a.plans[0].estimate.iteration_s);
        }
    }

    /// On one small instance (two V100 nodes and a T4 node of 4, 8 equal
    /// layers, the T4 `t4_ratio` times slower per layer, `batch` samples):
    /// the best of the per-stage candidates (`steps`) or of the even
    /// per-type ones as the search prices them, and the best of every split
    /// of each.
    fn split_search_and_exhaustive(t4_ratio: f64, batch: usize, steps: bool) -> Option<(f64, f64)> {
        let (model, cluster, profile) = small_instance(2, t4_ratio);
        let inputs = Inputs {
            model: &model,
            cluster: &cluster,
            profile: &profile,
        };
        let dm = DeviceModel::default();
        let opts = SearchOptions::new(batch, PlacementSearch::Artifact, TrainingSetup::default());
        let steps = if steps {
            step_candidates(&cluster, &|_| true, 8, batch, false)
        } else {
            candidates(&cluster, &|_| true, 8, batch, false, false)
        };
        let estimators = dm.layout_estimators(&inputs);
        let times = BalanceTimes::default();
        let priced = (&dm as &dyn CostModel, estimators.as_ref(), &times);
        let found = price_candidates(&inputs, priced, &opts, &steps, &|_| {});
        let found = found.plans.first()?.estimate.iteration_s;
        let mut best = f64::INFINITY;
        for c in &steps {
            let plan = build(&cluster, 8, c, &opts, Some(&profile));
            crate::refine::for_each_split(8, plan.stages.len(), |b| {
                let p = crate::refine::with_boundaries(&plan, b);
                if let Ok(Some(e)) = dm.evaluate_if_fits(&inputs, &p) {
                    best = best.min(e.iteration_s);
                }
            });
        }
        Some((found, best))
    }

    /// The search's losses against every split on the 18 small instances
    /// of [`split_search_and_exhaustive`] (T4 1-5x slower per layer, batch
    /// 8, 12, 16), per-stage or even candidates: (instances where it finds
    /// the best, instances, the worst loss).
    fn split_losses(steps: bool) -> (usize, usize, f64) {
        let mut losses = Vec::new();
        for t4 in [1.0, 1.5, 2.0, 3.0, 4.0, 5.0] {
            for batch in [8, 12, 16] {
                let (found, best) = split_search_and_exhaustive(t4, batch, steps).unwrap();
                assert!(found >= best - 1e-12, "{t4} {batch}: {found} < {best}");
                losses.push(found / best - 1.0);
            }
        }
        let exact = losses.iter().filter(|&&l| l <= 1e-12).count();
        let worst = losses.iter().copied().fold(0.0, f64::max);
        eprintln!(
            "{} search: exact on {exact} of {}, worst loss {:.4}%",
            if steps { "per-stage" } else { "even per-type" },
            losses.len(),
            100.0 * worst
        );
        (exact, losses.len(), worst)
    }

    /// The per-stage candidates are priced as the uneven ones are (two seed
    /// splits bounded, the leaders refined), not every one refined: a
    /// heuristic. Against every split of every per-stage candidate on the 18
    /// small instances: best on 17, 0.44% slower on one; the loss the README
    /// reports, pinned.
    #[test]
    fn per_stage_search_loss_against_every_split() {
        let (exact, n, worst) = split_losses(true);
        // Every candidate refined by local search instead (the even
        // per-type search's way before 2026-12-04): 15 of 18, worst 5.0%.
        assert_eq!((exact, n), (17, 18));
        assert!(worst < 0.0045, "{worst}");
    }

    /// The even per-type candidates (one tp per type, every replica the
    /// same share) are priced as the others are, against every split of
    /// each on the same 18 instances: best on all 18 (17, one 1.37% slower,
    /// while tied weights were all-reduced at the data-parallel reduction's
    /// fp32). Each refined by local search instead (the way before
    /// 2026-12-04): 17, worst 1.87%.
    #[test]
    fn even_search_loss_against_every_split() {
        let (exact, n, worst) = split_losses(false);
        assert_eq!((exact, n), (18, 18));
        assert!(worst < 1e-12, "{worst}");
    }
}
