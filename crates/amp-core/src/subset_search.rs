//! Using part of the cluster, and ranking by cost.
//!
//! A slow GPU type can make every plan that uses it slower than leaving it
//! idle; and when GPUs cost money, the fastest plan is not the cheapest per
//! sample. [`search_subsets`] searches the whole cluster and every cluster
//! made of all the nodes of some of its GPU types, each in full
//! ([`crate::setup_search::search_setups`]), and ranks the union by the
//! chosen [`Objective`].

use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::cost::{CostModel, Inputs};
use crate::error::{AmpError, Result};
use crate::search::{progress_share, RankedPlan, SearchOptions, SearchResult};
use crate::setup::TrainingSetup;
use crate::setup_search::search_setups;

/// GPU types at most for which every subset is searched (2^6 - 1 = 63
/// sub-clusters).
pub const MAX_SUBSET_GPU_TYPES: usize = 6;

/// What the ranking minimises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Iteration time.
    #[default]
    Time,
    /// Price of one iteration: iteration time times the hourly price of the
    /// nodes the plan uses (every node needs `price_per_hour`).
    Cost,
}

/// Price of the nodes `nodes` of `cluster`, dollars per second; `None` when
/// some node has no price.
pub fn price_per_s(cluster: &Cluster, nodes: &[usize]) -> Option<f64> {
    nodes
        .iter()
        .map(|&n| cluster.nodes[n].price_per_hour.map(|p| p / 3600.0))
        .sum()
}

/// Price of the nodes `nodes` of `cluster`, dollars per hour; `None` when
/// some node has no price.
pub fn price_per_hour(cluster: &Cluster, nodes: &[usize]) -> Option<f64> {
    nodes.iter().map(|&n| cluster.nodes[n].price_per_hour).sum()
}

/// Price of the nodes a plan runs on, dollars per hour.
pub fn plan_price_per_hour(cluster: &Cluster, p: &RankedPlan) -> Option<f64> {
    price_per_hour(cluster, &plan_nodes(&p.plan))
}

/// Nodes a plan runs on, sorted.
pub fn plan_nodes(plan: &crate::Plan) -> Vec<usize> {
    let mut v: Vec<usize> = plan.devices().map(|d| d.node).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Every non-empty set of the cluster's GPU types as the node lists that
/// hold them, the whole cluster first, then by fewer types and type order.
pub fn gpu_type_subsets(cluster: &Cluster) -> Result<Vec<Vec<usize>>> {
    let types = cluster.gpu_types();
    if types.len() > MAX_SUBSET_GPU_TYPES {
        return Err(AmpError::invalid(
            "cluster",
            format!(
                "searching subsets of {} GPU types means {} sub-clusters; at most {MAX_SUBSET_GPU_TYPES} types are searched this way: drop --subsets and --max-usd-per-hour (which searches them too), or merge GPU types",
                types.len(),
                (1u64 << types.len().min(63)) - 1
            ),
        ));
    }
    let mut masks: Vec<u32> = (1..(1u32 << types.len())).collect();
    // The whole cluster first, then fewer types first, then type order.
    masks.sort_by_key(|m| (std::cmp::Reverse(m.count_ones()), m.reverse_bits()));
    Ok(masks
        .into_iter()
        .map(|m| {
            (0..cluster.nodes.len())
                .filter(|&n| {
                    let t = types
                        .iter()
                        .position(|t| *t == cluster.nodes[n].gpu_type)
                        .unwrap();
                    m & (1 << t) != 0
                })
                .collect()
        })
        .collect())
}

/// A GPU type of a mixed cluster whose nodes alone run faster than the
/// best plan on every GPU ([`faster_on_one_type`]): what
/// [`search_subsets`] would find among other sets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FasterOnOneType {
    /// The GPU type.
    pub gpu_type: String,
    /// GPUs of that type in the cluster.
    pub gpus: usize,
    /// The best plan's time on them alone.
    pub predicted_iteration_s: f64,
}

/// On a cluster of several GPU types: the type whose nodes alone give the
/// fastest plan, when it is faster than `best_s` (the best on every GPU).
/// Each type's nodes are searched as the whole cluster was, over `setups`
/// ([`search_setups`], as [`search_subsets`] searches its sets); one plan
/// kept, no progress. A type on which no plan fits or which cannot be
/// priced is passed over: a hint, not a result.
pub fn faster_on_one_type(
    inputs: &Inputs,
    model: &dyn CostModel,
    opts: &SearchOptions,
    setups: &[TrainingSetup],
    best_s: f64,
) -> Option<FasterOnOneType> {
    let cluster = inputs.cluster;
    let types = cluster.gpu_types();
    if types.len() < 2 {
        return None;
    }
    let opts = SearchOptions {
        progress: None,
        keep: 1,
        ..*opts
    };
    let mut faster: Option<FasterOnOneType> = None;
    for t in types {
        let keep: Vec<usize> = (0..cluster.nodes.len())
            .filter(|&n| cluster.nodes[n].gpu_type == t)
            .collect();
        let sub = cluster.subset(&keep);
        let sub_inputs = Inputs {
            cluster: &sub,
            ..*inputs
        };
        let Some(s) = search_setups(&sub_inputs, model, &opts, setups)
            .ok()
            .and_then(|r| r.plans.first().map(|p| p.estimate.iteration_s))
        else {
            continue;
        };
        if s < best_s && faster.as_ref().is_none_or(|f| s < f.predicted_iteration_s) {
            faster = Some(FasterOnOneType {
                gpus: sub.num_devices(),
                gpu_type: t,
                predicted_iteration_s: s,
            });
        }
    }
    faster
}

/// Sub-clusters searched at most (whole GPU types first, then fewer nodes).
pub const MAX_SUBSETS: usize = 64;

/// The node sets [`search_subsets`] tries: every set of whole GPU types
/// ([`gpu_type_subsets`], the whole cluster first), then the same sets with
/// fewer nodes of some types: each type's first `k` nodes in cluster order
/// for every `k` when all such combinations number at most
/// [`MAX_SUBSETS`], else `n / 2`, `n / 4`, ... (a node group on a slow
/// network can train faster alone, and fewer nodes cost less per hour). At
/// most [`MAX_SUBSETS`], in that order, duplicates removed; the flag says
/// whether more were left out.
pub fn node_subsets(cluster: &Cluster) -> Result<(Vec<Vec<usize>>, bool)> {
    let whole = gpu_type_subsets(cluster)?;
    // Each type's nodes in cluster order.
    let by_type: Vec<Vec<usize>> = cluster
        .gpu_types()
        .iter()
        .map(|t| {
            (0..cluster.nodes.len())
                .filter(|&n| cluster.nodes[n].gpu_type == *t)
                .collect()
        })
        .collect();
    // Node counts tried per type: every count when all their combinations
    // fit in MAX_SUBSETS, else all, then halvings down to one.
    let every = by_type
        .iter()
        .try_fold(1usize, |a, nodes| a.checked_mul(nodes.len() + 1))
        .is_some_and(|p| p - 1 <= MAX_SUBSETS);
    let counts = |n: usize| -> Vec<usize> {
        if every {
            return (1..=n).rev().collect();
        }
        let mut c = vec![n];
        let mut k = n / 2;
        while k >= 1 && *c.last().unwrap() != k {
            c.push(k);
            k /= 2;
        }
        c
    };
    // One more than kept, to tell whether any was left out.
    let mut out: Vec<Vec<usize>> = Vec::new();
    let push = |nodes: Vec<usize>, out: &mut Vec<Vec<usize>>| {
        if !out.contains(&nodes) {
            out.push(nodes);
        }
        out.len() > MAX_SUBSETS
    };
    let full = |out: Vec<Vec<usize>>| {
        let truncated = out.len() > MAX_SUBSETS;
        (out.into_iter().take(MAX_SUBSETS).collect(), truncated)
    };
    for w in &whole {
        if push(w.clone(), &mut out) {
            return Ok(full(out));
        }
    }
    for w in &whole {
        // The types in this set (it holds all of each or none) and the
        // counts each may take.
        let mut member = vec![false; cluster.nodes.len()];
        for &n in w {
            member[n] = true;
        }
        let present: Vec<&Vec<usize>> = by_type
            .iter()
            .filter(|nodes| nodes.first().is_some_and(|&n| member[n]))
            .collect();
        let options: Vec<Vec<usize>> = present.iter().map(|nodes| counts(nodes.len())).collect();
        // Every combination of counts, in order (all of each type first,
        // the last type's count changing fastest).
        let mut pick = vec![0usize; present.len()];
        'combinations: loop {
            let mut nodes: Vec<usize> = present
                .iter()
                .zip(&pick)
                .zip(&options)
                .flat_map(|((nodes, &i), o)| nodes[..o[i]].iter().copied())
                .collect();
            nodes.sort_unstable();
            if push(nodes, &mut out) {
                return Ok(full(out));
            }
            let mut k = present.len();
            loop {
                if k == 0 {
                    break 'combinations;
                }
                k -= 1;
                pick[k] += 1;
                if pick[k] < options[k].len() {
                    continue 'combinations;
                }
                pick[k] = 0;
            }
        }
    }
    Ok(full(out))
}

/// A plan found on the sub-cluster of nodes `keep`, renamed to the whole
/// cluster's node indices.
fn lift(mut p: RankedPlan, keep: &[usize]) -> RankedPlan {
    for s in &mut p.plan.stages {
        for r in &mut s.replicas {
            for d in r {
                d.node = keep[d.node];
            }
        }
    }
    for n in &mut p.placement.node_order {
        *n = keep[*n];
    }
    for m in &mut p.estimate.memory {
        m.device.node = keep[m.device.node];
    }
    p
}

/// The objective's value for a plan on `cluster`: seconds, or dollars per
/// iteration.
pub fn objective_value(cluster: &Cluster, p: &RankedPlan, objective: Objective) -> Option<f64> {
    match objective {
        Objective::Time => Some(p.estimate.iteration_s),
        Objective::Cost => {
            price_per_s(cluster, &plan_nodes(&p.plan)).map(|r| r * p.estimate.iteration_s)
        }
    }
}

/// Ranks `result`'s plans by `objective` (stable) and keeps the first `keep`.
pub fn rank_by_objective(
    cluster: &Cluster,
    result: &mut SearchResult,
    objective: Objective,
    keep: usize,
) {
    result.rank_and_keep(keep, |p| {
        objective_value(cluster, p, objective).unwrap_or(f64::INFINITY)
    });
}

/// Searches every setup of `setups` on the whole cluster and, when
/// `subsets`, on every node subset ([`node_subsets`]); ranks the
/// plans by `objective`, ties in search order. With a budget, only plans
/// whose nodes cost at most `budget_usd_per_hour` are kept (sub-clusters
/// over it are not searched: every plan uses all of its sub-cluster's
/// GPUs). Every plan's devices are the whole cluster's. Errors when the
/// objective is cost or a budget is given and a node has no price, and with
/// [`AmpError::NoPlan`] when nothing fits anywhere (within the budget).
pub fn search_subsets(
    inputs: &Inputs,
    model: &dyn CostModel,
    opts: &SearchOptions,
    setups: &[TrainingSetup],
    subsets: bool,
    objective: Objective,
    budget_usd_per_hour: Option<f64>,
) -> Result<SearchResult> {
    let cluster = inputs.cluster;
    if objective == Objective::Cost || budget_usd_per_hour.is_some() {
        if let Some(n) = cluster
            .nodes
            .iter()
            .position(|n| n.price_per_hour.is_none())
        {
            let why = if objective == Objective::Cost {
                "ranking by cost"
            } else {
                "a budget"
            };
            return Err(AmpError::invalid(
                format!("cluster node {n} ({})", cluster.nodes[n].gpu_type),
                format!("{why} needs a price per hour for every node; give price_per_hour in the cluster file or use a cloud instance name (4xp3.8xlarge) whose price amp knows"),
            ));
        }
    }
    let (groups, truncated) = if subsets {
        node_subsets(cluster)?
    } else {
        (vec![(0..cluster.nodes.len()).collect()], false)
    };
    let within = |nodes: &[usize]| match (budget_usd_per_hour, price_per_hour(cluster, nodes)) {
        (Some(budget), Some(price)) => price <= budget,
        _ => true,
    };
    let mut merged = SearchResult::empty();
    let mut first_error = None;
    // The cheapest sub-cluster over the budget, for the error when nothing
    // is within it.
    let mut cheapest_over: Option<(f64, usize)> = None;
    for (k, keep) in groups.iter().enumerate() {
        if !within(keep) {
            let price = price_per_hour(cluster, keep).unwrap_or(f64::INFINITY);
            let gpus = keep.iter().map(|&n| cluster.nodes[n].gpus).sum();
            if cheapest_over.is_none_or(|(p, _)| price < p) {
                cheapest_over = Some((price, gpus));
            }
            continue;
        }
        let sub = cluster.subset(keep);
        let sub_inputs = Inputs {
            cluster: &sub,
            ..*inputs
        };
        // One progress bar over all the sub-clusters.
        let part = progress_share(opts.progress, k, groups.len());
        let o = SearchOptions {
            progress: opts
                .progress
                .is_some()
                .then_some(&part as &(dyn Fn(usize, usize) + Sync)),
            ..*opts
        };
        match search_setups(&sub_inputs, model, &o, setups) {
            Ok(r) => {
                merged.absorb(r, |p| {
                    let p = lift(p, keep);
                    within(&plan_nodes(&p.plan)).then_some(p)
                });
                rank_by_objective(cluster, &mut merged, objective, opts.keep);
            }
            // A subset that cannot train the batch, or lacks a profile
            // entry, is not an error of the whole search.
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
    }
    if merged.plans.is_empty() {
        if let (Some(budget), Some((price, gpus))) = (budget_usd_per_hour, cheapest_over) {
            let within = match &first_error {
                Some(e) => format!("; the sets within it found no plan: {e}"),
                None => String::new(),
            };
            return Err(AmpError::NoPlan(format!(
                "no plan costs at most ${budget:.2} per hour: the cheapest set of GPUs over it ({gpus} GPUs) costs ${price:.2}{within}; raise --max-usd-per-hour, or give a cluster of fewer or cheaper nodes (the sets searched: whole GPU types, then fewer nodes of each: every count when the combinations number at most 64, else halvings)"
            )));
        }
        return Err(first_error.unwrap_or_else(|| AmpError::NoPlan("no plan".into())));
    }
    if truncated {
        merged.skipped.push(format!(
            "sub-clusters: only the first {MAX_SUBSETS} node sets were searched (every set of whole GPU types first, then fewer nodes of each: every count when the combinations number at most 64, else halvings); merge GPU types or give a smaller cluster to search the rest"
        ));
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::builtin as clusters;
    use crate::cost::device::DeviceModel;
    use crate::model::builtin as models;
    use crate::profile::uniform_profile;
    use crate::search::{search, PlacementSearch};

    #[test]
    fn subsets_by_gpu_type() {
        let c = clusters::het_cluster();
        let s = gpu_type_subsets(&c).unwrap();
        // T4 and V100: both, then each alone.
        assert_eq!(s.len(), 3);
        assert_eq!(s[0], vec![0, 1, 2, 3]);
        assert!(s[1..].iter().all(|g| g.len() < 4));
        let sub = c.subset(&s[1]);
        assert_eq!(sub.gpu_types().len(), 1);
    }

    #[test]
    fn leaving_slow_gpus_idle_can_win_and_plans_keep_whole_cluster_devices() {
        // V100s 10x faster than the T4: the V100-only plans compete.
        let profile = uniform_profile(30, &[("V100-16GB", 1, 0.0005), ("T4", 1, 0.005)]);
        let (model, cluster) = (models::amp_gpt2(), clusters::het_cluster());
        let inputs = Inputs {
            model: &model,
            cluster: &cluster,
            profile: &profile,
        };
        let dm = DeviceModel::default();
        let opts = SearchOptions::new(32, PlacementSearch::Artifact, TrainingSetup::default());
        let all = search(&inputs, &dm, &opts).unwrap();
        let r = search_subsets(
            &inputs,
            &dm,
            &opts,
            &[opts.setup],
            true,
            Objective::Time,
            None,
        )
        .unwrap();
        assert!(r.plans[0].estimate.iteration_s <= all.plans[0].estimate.iteration_s);
        // Every plan's devices exist in the whole cluster and are used once.
        for p in &r.plans {
            let mut d: Vec<_> = p.plan.devices().collect();
            let n = d.len();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), n);
            assert!(d.iter().all(|d| d.node < 4 && d.gpu < 4));
        }
        assert!(r.plans.iter().any(|p| plan_nodes(&p.plan).len() < 4));
        // The built-in cluster carries the instances' prices: by cost, the
        // first plan is the cheapest per iteration of all found.
        let by_cost = search_subsets(
            &inputs,
            &dm,
            &opts,
            &[opts.setup],
            true,
            Objective::Cost,
            None,
        )
        .unwrap();
        let cost = |p: &RankedPlan| objective_value(&cluster, p, Objective::Cost).unwrap();
        let cheapest = cost(&by_cost.plans[0]);
        assert!(by_cost.plans.iter().all(|p| cost(p) >= cheapest));
        assert!(r.plans.iter().all(|p| cost(p) >= cheapest));
        // Without prices, cost cannot rank.
        let mut unpriced = cluster.clone();
        unpriced.nodes[0].price_per_hour = None;
        let inputs = Inputs {
            cluster: &unpriced,
            ..inputs
        };
        let e = search_subsets(
            &inputs,
            &dm,
            &opts,
            &[opts.setup],
            true,
            Objective::Cost,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("price per hour"), "{e}");
    }
    #[test]
    fn a_budget_keeps_only_plans_whose_gpus_cost_at_most_it() {
        let (model, cluster) = (models::amp_gpt2(), clusters::het_cluster());
        let profile = uniform_profile(30, &[("V100-16GB", 1, 0.002), ("T4", 1, 0.005)]);
        let inputs = Inputs {
            model: &model,
            cluster: &cluster,
            profile: &profile,
        };
        let dm = DeviceModel::default();
        let opts = SearchOptions::new(32, PlacementSearch::Artifact, TrainingSetup::default());
        let run = |budget| {
            search_subsets(
                &inputs,
                &dm,
                &opts,
                &[opts.setup],
                true,
                Objective::Time,
                budget,
            )
        };
        let price = |p: &RankedPlan| plan_price_per_hour(&cluster, p).unwrap();
        let free = run(None).unwrap();
        let prices: Vec<f64> = free.plans.iter().map(price).collect();
        let whole = price_per_hour(&cluster, &[0, 1, 2, 3]).unwrap();
        let cheapest = prices.iter().copied().fold(f64::INFINITY, f64::min);
        assert!(cheapest < whole);
        // A budget at the whole cluster's price changes nothing.
        assert_eq!(run(Some(whole)).unwrap().plans, free.plans);
        // Between the cheapest set and the rest: only plans within it, in
        // the same order as without a budget.
        let b = Some(cheapest);
        let within = run(b).unwrap();
        assert!(!within.plans.is_empty());
        assert!(within.plans.iter().all(|p| price(p) <= cheapest));
        let kept: Vec<&RankedPlan> = free.plans.iter().filter(|p| price(p) <= cheapest).collect();
        assert_eq!(within.plans.iter().collect::<Vec<_>>(), kept);
        // Below every set: no plan, and the error names the cheapest.
        let e = run(Some(cheapest / 2.0)).unwrap_err().to_string();
        assert!(e.contains(&format!("${cheapest:.2}")), "{e}");
        // Without prices a budget cannot be checked.
        let mut unpriced = cluster.clone();
        unpriced.nodes[3].price_per_hour = None;
        let inputs = Inputs {
            cluster: &unpriced,
            ..inputs
        };
        let e = search_subsets(&inputs, &dm, &opts, &[opts.setup], true, Objective::Time, b)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a budget needs a price per hour"), "{e}");
    }
    #[test]
    fn node_subsets_add_fewer_nodes_of_each_type() {
        let c = clusters::het_cluster();
        let (s, truncated) = node_subsets(&c).unwrap();
        assert!(!truncated);
        let v100: Vec<usize> = (0..4)
            .filter(|&n| c.nodes[n].gpu_type == "V100-16GB")
            .collect();
        let t4: Vec<usize> = (0..4).filter(|&n| c.nodes[n].gpu_type == "T4").collect();
        assert_eq!((v100.len(), t4.len()), (3, 1));
        // The three whole-type sets first, then every count of V100 nodes
        // (4 x 2 - 1 = 7 sets in all, under the limit): two with the T4,
        // one with the T4, two alone, one alone.
        assert_eq!(s[..3], gpu_type_subsets(&c).unwrap()[..]);
        let with_t4 = |k: usize| {
            let mut n: Vec<usize> = v100[..k].to_vec();
            n.push(t4[0]);
            n.sort();
            n
        };
        assert_eq!(
            s[3..],
            [
                with_t4(2),
                with_t4(1),
                v100[..2].to_vec(),
                v100[..1].to_vec()
            ]
        );
    }

    #[test]
    fn node_subsets_stop_at_the_limit_and_say_so() {
        // Six types of two nodes: 63 whole-type sets, then halvings.
        let mut c = clusters::het_cluster();
        let template = c.nodes[0].clone();
        c.nodes = (0..12)
            .map(|i| {
                let mut n = template.clone();
                n.gpu_type = format!("G{}", i / 2);
                n
            })
            .collect();
        let (s, truncated) = node_subsets(&c).unwrap();
        assert!(truncated);
        assert_eq!(s.len(), MAX_SUBSETS);
        assert_eq!(s[..63], gpu_type_subsets(&c).unwrap()[..]);
        assert_eq!(s[63].len(), 11, "{:?}", s[63]);
    }

    #[test]
    fn on_a_slow_network_one_node_can_beat_every_whole_type_set() {
        // 1 Mbit/s between nodes: the V100s are faster alone on one node
        // than on three, and faster than the T4 node.
        let mut cluster = clusters::het_cluster();
        for n in &mut cluster.nodes {
            n.inter_bytes_per_s = 1e6 / 8.0;
        }
        let model = models::amp_gpt2();
        let profile = uniform_profile(30, &[("V100-16GB", 1, 0.0005), ("T4", 1, 0.005)]);
        let inputs = Inputs {
            model: &model,
            cluster: &cluster,
            profile: &profile,
        };
        let dm = DeviceModel::default();
        let opts = SearchOptions::new(32, PlacementSearch::Full, TrainingSetup::default());
        let r = search_subsets(
            &inputs,
            &dm,
            &opts,
            &[opts.setup],
            true,
            Objective::Time,
            None,
        )
        .unwrap();
        let best = &r.plans[0];
        assert_eq!(plan_nodes(&best.plan).len(), 1, "{:?}", best.plan);
        assert_eq!(
            cluster.nodes[plan_nodes(&best.plan)[0]].gpu_type,
            "V100-16GB"
        );
        // Faster than the best plan on any set of whole GPU types.
        for keep in gpu_type_subsets(&cluster).unwrap() {
            let sub = cluster.subset(&keep);
            let sub_inputs = Inputs {
                cluster: &sub,
                ..inputs
            };
            if let Ok(w) = search(&sub_inputs, &dm, &opts) {
                assert!(best.estimate.iteration_s < w.plans[0].estimate.iteration_s);
            }
        }
    }
}
