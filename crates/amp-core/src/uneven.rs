//! Uneven data parallelism: replicas that run different numbers of
//! micro-batches ([`Plan::replica_micro_batches`]).
//!
//! Two uses. A data-parallel degree that does not divide the batch (Sailor
//! picks 27 or 20 replicas for a batch of 1024) deals the micro-batches as
//! evenly as they go ([`even_deal`]). And replicas that differ in speed (a
//! stage served by A100s beside V100 groups, or a placement that puts one
//! replica on slower GPUs) finish together only if the faster ones take
//! more: [`rebalance`] moves micro-batches between classes of identical
//! replicas under the cost model's own estimate, a local search.
//!
//! The gradient all-reduce stays correct when each replica's gradient is
//! summed over its own samples and the sum divided by the global batch;
//! stock Megatron-LM, DeepSpeed and torchtitan average equal shares, which
//! is why their exports refuse such plans.

use crate::cluster::Cluster;
use crate::cost::{CostModel, Estimate, Inputs, PlanEstimator};
use crate::plan::Plan;

/// `total` micro-batches over `replicas` replicas as evenly as they go, the
/// first `total mod replicas` taking one more.
pub fn even_deal(total: usize, replicas: usize) -> Vec<usize> {
    let replicas = replicas.max(1);
    let (each, extra) = (total / replicas, total % replicas);
    (0..replicas)
        .map(|r| each + usize::from(r < extra))
        .collect()
}

/// `total` micro-batches over `replicas` replicas under `setup` for a
/// pipeline of `pp` ranks: as evenly as they go ([`even_deal`]), in whole
/// groups of `pp` when the schedule is interleaved and the total allows
/// (Megatron-LM's interleaved schedule runs micro-batches in groups of pp)
/// with a group for every replica; with fewer groups than replicas, evenly
/// (every replica runs at least one micro-batch; the schedule then refuses
/// the plan with its own reason).
pub fn schedule_deal(
    total: usize,
    replicas: usize,
    pp: usize,
    setup: &crate::setup::TrainingSetup,
) -> Vec<usize> {
    let group = if setup.virtual_stages() > 1
        && pp > 0
        && total.is_multiple_of(pp)
        && total / pp >= replicas
    {
        pp
    } else {
        1
    };
    even_deal(total / group, replicas)
        .into_iter()
        .map(|b| b * group)
        .collect()
}

/// Gives `plan`'s replicas `counts` micro-batches each: `num_micro_batches`
/// becomes the largest, and `replica_micro_batches` is left empty when
/// they are all equal (the even form every engine runs).
pub fn set_micro_batches(plan: &mut Plan, counts: Vec<usize>) {
    plan.num_micro_batches = counts.iter().copied().max().unwrap_or(0);
    if counts.iter().all(|&b| b == plan.num_micro_batches) {
        plan.replica_micro_batches = Vec::new();
    } else {
        plan.replica_micro_batches = counts;
    }
}

/// Classes of interchangeable replicas: per replica, the index of its class
/// (numbered by first appearance). Replicas are alike when every stage
/// gives them the same tensor-parallel degree on the same GPU types.
pub fn replica_classes(plan: &Plan, cluster: &Cluster) -> Vec<usize> {
    let stages = plan.rank_stages();
    let signature = |r: usize| -> Vec<(usize, Vec<&str>)> {
        stages
            .iter()
            .map(|s| {
                let g = &s.replicas[r];
                let mut types: Vec<&str> = g
                    .iter()
                    .map(|d| cluster.nodes[d.node].gpu_type.as_str())
                    .collect();
                types.sort_unstable();
                (g.len(), types)
            })
            .collect()
    };
    let mut seen: Vec<Vec<(usize, Vec<&str>)>> = Vec::new();
    (0..plan.dp())
        .map(|r| {
            let sig = signature(r);
            match seen.iter().position(|s| *s == sig) {
                Some(k) => k,
                None => {
                    seen.push(sig);
                    seen.len() - 1
                }
            }
        })
        .collect()
}

/// Most estimates one [`rebalance`] prices.
pub const MAX_REBALANCE_EVALUATIONS: usize = 64;

/// Moves micro-batches between classes of replicas ([`replica_classes`])
/// while that makes `plan` strictly faster under `model` (memory
/// respected): the returned plan and its estimate, or `None` when no move
/// helps or none applies (one class, an interleaved schedule, which needs
/// every count a multiple of pp).
///
/// A class's micro-batches are dealt evenly over its replicas. Each round
/// tries moving `step` micro-batches from every class to every other and
/// takes the best move; without one, the step halves, from a quarter of a
/// class's share down to 1. At most [`MAX_REBALANCE_EVALUATIONS`] estimates.
/// A local search: the iteration time is the slowest class's, which a
/// move from the slowest class to another lowers until they cross, so on
/// two classes it ends at the balance point; with more it may stop early.
pub fn rebalance(
    inputs: &Inputs,
    model: &dyn CostModel,
    plan: &Plan,
    current: &Estimate,
) -> Option<(Plan, Estimate)> {
    let estimate = model.layout_estimator(inputs, plan).ok()?;
    rebalance_with(estimate.as_ref(), inputs, plan, current)
}

/// [`rebalance`] with `estimate`, an estimator of `plan`'s layout.
pub(crate) fn rebalance_with(
    estimate: &dyn PlanEstimator,
    inputs: &Inputs,
    plan: &Plan,
    current: &Estimate,
) -> Option<(Plan, Estimate)> {
    if plan.setup.virtual_stages() > 1 {
        return None;
    }
    let classes = replica_classes(plan, inputs.cluster);
    let k = classes.iter().copied().max().map_or(0, |m| m + 1);
    if k < 2 {
        return None;
    }
    let members: Vec<Vec<usize>> = (0..k)
        .map(|c| (0..classes.len()).filter(|&r| classes[r] == c).collect())
        .collect();
    let mut totals: Vec<usize> = members
        .iter()
        .map(|m| m.iter().map(|&r| plan.micro_batches_of(r)).sum())
        .collect();
    let build = |totals: &[usize]| {
        let mut counts = vec![0; classes.len()];
        for (c, m) in members.iter().enumerate() {
            for (r, b) in m.iter().zip(even_deal(totals[c], m.len())) {
                counts[*r] = b;
            }
        }
        let mut p = plan.clone();
        set_micro_batches(&mut p, counts);
        p
    };
    // Only a plan faster than `bar` is kept: one proven slower is not
    // simulated.
    let price = |p: &Plan, bar: f64| {
        let e = estimate.time_if_fits_under(p, bar).ok()??;
        e.iteration_s.is_finite().then_some(e)
    };
    let total: usize = totals.iter().sum();
    let mut step = (total / (4 * k)).max(1);
    let mut best: Option<(Plan, Estimate)> = None;
    let mut best_s = current.iteration_s;
    let mut budget = MAX_REBALANCE_EVALUATIONS;
    while budget > 0 {
        let mut found: Option<(Vec<usize>, Plan, Estimate)> = None;
        'moves: for from in 0..k {
            for to in 0..k {
                if from == to || totals[from] < members[from].len() + step {
                    continue;
                }
                if budget == 0 {
                    break 'moves;
                }
                budget -= 1;
                let mut t = totals.clone();
                t[from] -= step;
                t[to] += step;
                let p = build(&t);
                let bar = found.as_ref().map_or(best_s, |f| f.2.iteration_s);
                if let Some(e) = price(&p, bar) {
                    if e.iteration_s < bar {
                        found = Some((t, p, e));
                    }
                }
            }
        }
        match found {
            Some((t, p, e)) => {
                totals = t;
                best_s = e.iteration_s;
                best = Some((p, e));
            }
            None if step == 1 => break,
            None => step = (step / 2).max(1),
        }
    }
    crate::refine::with_memory(estimate, best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Device, Node};
    use crate::cost::device::{DeviceModel, DeviceOptions};
    use crate::model::builtin as models;
    use crate::plan::Stage;
    use crate::profile::uniform_profile;

    #[test]
    fn even_deal_gives_the_first_replicas_the_rest() {
        assert_eq!(even_deal(10, 4), vec![3, 3, 2, 2]);
        assert_eq!(even_deal(8, 4), vec![2; 4]);
        assert_eq!(even_deal(1024, 27).iter().sum::<usize>(), 1024);
        let mut p = Plan {
            micro_batch: 1,
            num_micro_batches: 1,
            replica_micro_batches: Vec::new(),
            stages: Vec::new(),
            setup: Default::default(),
        };
        set_micro_batches(&mut p, vec![3, 3]);
        assert!(p.replica_micro_batches.is_empty() && p.num_micro_batches == 3);
        set_micro_batches(&mut p, vec![3, 2]);
        assert_eq!((p.num_micro_batches, p.replica_micro_batches.len()), (3, 2));
    }

    /// Interleaved: whole groups of pp micro-batches while every replica
    /// gets one; with fewer groups than replicas, evenly, never leaving a
    /// replica without micro-batches.
    #[test]
    fn interleaved_deals_give_every_replica_micro_batches() {
        let setup = crate::setup::TrainingSetup {
            schedule: crate::schedule::Schedule::Interleaved { virtual_stages: 2 },
            ..Default::default()
        };
        assert_eq!(schedule_deal(24, 4, 4, &setup), vec![8, 8, 4, 4]);
        assert_eq!(schedule_deal(16, 4, 4, &setup), vec![4; 4]);
        // Two groups of 4 over 4 replicas: 2 each, not 4, 4, 0, 0.
        assert_eq!(schedule_deal(8, 4, 4, &setup), vec![2; 4]);
        assert_eq!(schedule_deal(10, 4, 4, &setup), vec![3, 3, 2, 2]);
        assert_eq!(schedule_deal(8, 4, 4, &Default::default()), even_deal(8, 4));
    }

    /// Two one-stage replicas, one on a GPU three times faster: the
    /// rebalanced plan gives it three quarters of the micro-batches, and
    /// nothing finer does better (checked against every deal).
    #[test]
    fn rebalance_finds_the_best_deal_between_two_classes() {
        let model = models::amp_gpt2();
        let node = |gpu: &str| Node {
            gpu_type: gpu.into(),
            gpus: 1,
            intra_bytes_per_s: 1e10,
            inter_bytes_per_s: 1e10,
            nics: 1,
            gpu_memory_bytes: None,
            price_per_hour: None,
        };
        let cluster = Cluster {
            name: "two".into(),
            nodes: vec![node("fast"), node("slow")],
            links: Vec::new(),
        };
        let profile = uniform_profile(30, &[("fast", 1, 0.001), ("slow", 1, 0.003)]);
        let inputs = Inputs {
            model: &model,
            cluster: &cluster,
            profile: &profile,
        };
        let dm = DeviceModel::new(DeviceOptions {
            price_memory: false,
            ..Default::default()
        });
        let dev = |node| vec![Device { node, gpu: 0 }];
        let plan = Plan {
            micro_batch: 1,
            num_micro_batches: 16,
            replica_micro_batches: Vec::new(),
            stages: vec![Stage {
                first_layer: 0,
                end_layer: 30,
                replicas: vec![dev(0), dev(1)],
            }],
            setup: Default::default(),
        };
        assert_eq!(replica_classes(&plan, &cluster), vec![0, 1]);
        let even = dm.evaluate(&inputs, &plan).unwrap();
        let (p, e) = rebalance(&inputs, &dm, &plan, &even).unwrap();
        assert_eq!(p.replica_micro_batches, vec![24, 8]);
        assert_eq!(p.global_batch(), plan.global_batch());
        assert!(e.iteration_s < 0.6 * even.iteration_s);
        for a in 1..32 {
            let mut q = plan.clone();
            set_micro_batches(&mut q, vec![a, 32 - a]);
            let t = dm.evaluate(&inputs, &q).unwrap().iteration_s;
            assert!(t >= e.iteration_s, "{a}: {t} < {}", e.iteration_s);
        }
        // Alike replicas: nothing to move.
        let same = Cluster {
            nodes: vec![node("fast"), node("fast")],
            ..cluster.clone()
        };
        let inputs = Inputs {
            cluster: &same,
            ..inputs
        };
        assert!(rebalance(&inputs, &dm, &plan, &even).is_none());
    }
}
