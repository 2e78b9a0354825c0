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
//! fastest, then dp, then its stages; the layers start evenly split and the
//! split is then improved under the full estimate by
//! [`crate::refine::local_search_split`] (a heuristic: no per-stage
//! partitioner tables exist for mixed degrees).
//!
//! With uneven data parallelism ([`SearchOptions::uneven_dp`]) the types'
//! tensor-parallel groups are poured into the pipeline in type order, `dp`
//! groups per stage, so a stage where one type runs out and the next
//! begins is served by both (Sailor's 32 A100 + 96 V100 plan: stage 1 on
//! 24 V100 groups at tp 4 and 3 A100 at tp 1, stage 2 on 27 A100). For
//! every pp up to the layers, dp is the most groups that fill pp stages
//! (`groups / pp`), the few groups left over idle, taken from one type
//! (each type tried); the micro-batches are dealt evenly and need not
//! divide. These candidates are priced on the even split; the leading ones
//! are then refined: split by local search, micro-batches moved towards
//! the faster replicas ([`crate::uneven::rebalance`]), split again.

use rayon::prelude::*;

use crate::cluster::{Cluster, Device};
use crate::cost::{CostModel, Inputs};
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

/// One candidate: GPU types in pipeline order, each with its tp and the
/// number of its tensor-parallel groups used, and the shared dp and
/// micro-batch. Groups fill the pipeline in that order, `dp` per stage.
#[derive(Debug, Clone, PartialEq)]
struct Candidate {
    types: Vec<(String, usize, usize)>,
    dp: usize,
    micro_batch: usize,
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
    num_layers: usize,
    global_batch: usize,
    uneven: bool,
) -> Vec<Candidate> {
    let types = types_in_node_order(cluster);
    let k = types.len();
    if !(2..=MAX_TYPES).contains(&k) {
        return Vec::new();
    }
    let tp_choices: Vec<Vec<usize>> = types
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
        .collect();
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
    let mut out = Vec::new();
    let mut push = |order: &[usize], v: &[usize], used: &[usize], dp: usize| {
        let total: usize = used.iter().sum();
        for micro_batch in divisors(global_batch) {
            let m = global_batch / micro_batch;
            let even = m.is_multiple_of(dp);
            if (!even && !uneven) || m < dp || m.div_ceil(dp) > limits::MAX_MICRO_BATCHES {
                continue;
            }
            debug_assert!(total.is_multiple_of(dp));
            out.push(Candidate {
                types: order
                    .iter()
                    .map(|&t| (types[t].0.clone(), v[t], used[t]))
                    .collect(),
                dp,
                micro_batch,
            });
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
                    push(&order, v, &groups, dp);
                }
                continue;
            }
            let total: usize = groups.iter().sum();
            // One stage holds every group whatever the order: the first
            // order only.
            for pp in (if o == 0 { 1 } else { 2 })..=num_layers.min(total) {
                let dp = total / pp;
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
                    push(&order, v, &used, dp);
                }
            }
        }
    }
    out
}

/// The plan of a candidate with the layers split evenly: each type's first
/// groups (tp fastest over its devices in node order) poured into the
/// stages in pipeline order, `dp` per stage; the micro-batches dealt evenly.
fn build(cluster: &Cluster, num_layers: usize, c: &Candidate, opts: &SearchOptions) -> Plan {
    let types = types_in_node_order(cluster);
    let groups: Vec<&[Device]> = c
        .types
        .iter()
        .flat_map(|(name, tp, used)| {
            let devices = &types.iter().find(|t| t.0 == *name).unwrap().1;
            (0..*used).map(move |g| &devices[g * tp..(g + 1) * tp])
        })
        .collect();
    let pp = groups.len() / c.dp;
    let bounds = uniform_split(num_layers, pp);
    let mut plan = Plan {
        micro_batch: c.micro_batch,
        num_micro_batches: 0,
        replica_micro_batches: Vec::new(),
        stages: (0..pp)
            .map(|j| Stage {
                first_layer: bounds[j],
                end_layer: bounds[j + 1],
                replicas: (0..c.dp).map(|r| groups[j * c.dp + r].to_vec()).collect(),
            })
            .collect(),
        setup: opts.setup.for_pipeline(pp),
    };
    crate::uneven::set_micro_batches(
        &mut plan,
        crate::uneven::even_deal(opts.global_batch / c.micro_batch, c.dp),
    );
    plan
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
    let cluster = inputs.cluster;
    let layers = inputs.model.num_layers();
    let cands = candidates(cluster, layers, opts.global_batch, opts.uneven_dp);
    if cands.is_empty() {
        return Err(AmpError::NoPlan(format!(
            "a tp per GPU type needs 2 to {MAX_TYPES} GPU types whose GPUs divide into whole stages for some dp dividing the global batch {}",
            opts.global_batch
        )));
    }
    let outcomes: Vec<Outcome> = cands
        .par_iter()
        .map(|c| {
            let plan = build(cluster, layers, c, opts);
            // Uneven candidates are many: priced only when their even split
            // fits, their splits refined for the leading ones only, below.
            let priced = if opts.uneven_dp {
                model.evaluate_if_fits(inputs, &plan)
            } else {
                model.evaluate(inputs, &plan).map(Some)
            };
            let estimate = match priced {
                Ok(Some(e)) => e,
                Ok(None) => return Outcome::Infeasible,
                Err(e) => return Outcome::Skipped(e.to_string()),
            };
            let (plan, estimate) = if opts.uneven_dp {
                (plan, estimate)
            } else {
                crate::refine::local_search_split(inputs, model, &plan, &estimate)
                    .unwrap_or((plan, estimate))
            };
            if estimate.first_overflow().is_some() {
                return Outcome::Infeasible;
            }
            let pp = plan.pp();
            Outcome::Priced(Box::new(RankedPlan {
                tp: c.types.iter().map(|t| t.1).max().unwrap_or(1),
                dp: c.dp,
                pp,
                micro_batch: c.micro_batch,
                num_micro_batches: plan.num_micro_batches,
                placement: Placement {
                    axis_order: AxisOrder::DEFAULT,
                    node_order: (0..cluster.nodes.len()).collect(),
                },
                plan,
                estimate,
            }))
        })
        .collect();
    // Fastest first, ties in candidate order, as the main search ranks.
    let keep = opts.keep.max(1);
    // Uneven candidates keep the refinement's pool, so which plans are
    // refined does not depend on `keep`.
    let pool = if opts.uneven_dp {
        keep.max(crate::refine::REFINE_POOL)
    } else {
        keep
    };
    let mut tally = Tally::default();
    for (index, o) in outcomes.into_iter().enumerate() {
        tally.add(index, o, pool);
    }
    let (mut plans, mut result) = tally.finish(pool).into_plans_and_counts(cands.len());
    if opts.uneven_dp {
        crate::refine::refine_leading(inputs, model, &mut plans, rank_key, true);
        plans.truncate(keep);
    }
    if plans.is_empty() {
        return Err(AmpError::NoPlan(format!(
            "no plan with a tp per GPU type: {}",
            no_plan_reason(&result)
        )));
    }
    result.plans = plans;
    Ok(result)
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

    #[test]
    fn plans_give_each_type_its_own_tp_and_use_every_device_once() {
        let entries: Vec<(&str, usize, f64)> = [1, 2, 4]
            .into_iter()
            .flat_map(|tp| {
                [
                    ("V100-16GB", tp, 0.002 / tp as f64 * 1.2),
                    ("T4", tp, 0.006 / tp as f64 * 1.2),
                ]
            })
            .collect();
        let profile = uniform_profile(30, &entries);
        let (model, cluster) = (models::amp_gpt2(), clusters::het_cluster());
        let inputs = Inputs {
            model: &model,
            cluster: &cluster,
            profile: &profile,
        };
        let dm = DeviceModel::default();
        let opts = SearchOptions::new(32, PlacementSearch::Artifact, TrainingSetup::default());
        let r = search_per_type_tp(&inputs, &dm, &opts).unwrap();
        assert!(!r.plans.is_empty());
        let times: Vec<f64> = r.plans.iter().map(|p| p.estimate.iteration_s).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        for p in &r.plans {
            p.plan.validate(&model, &cluster).unwrap();
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

    /// With uneven data parallelism the groups pour into mixed stages:
    /// every plan is valid, trains the whole batch, leaves fewer than pp
    /// groups idle, and the best is at least as fast as the even search's
    /// on this cluster.
    #[test]
    fn uneven_candidates_pour_groups_into_mixed_stages() {
        let entries: Vec<(&str, usize, f64)> = [1, 2, 4]
            .into_iter()
            .flat_map(|tp| {
                [
                    ("V100-16GB", tp, 0.002 / tp as f64 * 1.2),
                    ("T4", tp, 0.006 / tp as f64 * 1.2),
                ]
            })
            .collect();
        let profile = uniform_profile(30, &entries);
        let (model, cluster) = (models::amp_gpt2(), clusters::het_cluster());
        let inputs = Inputs {
            model: &model,
            cluster: &cluster,
            profile: &profile,
        };
        let dm = DeviceModel::default();
        let even = SearchOptions::new(32, PlacementSearch::Artifact, TrainingSetup::default());
        let uneven = SearchOptions {
            uneven_dp: true,
            ..even
        };
        let r = search_per_type_tp(&inputs, &dm, &uneven).unwrap();
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
            p.plan.validate(&model, &cluster).unwrap();
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
}
