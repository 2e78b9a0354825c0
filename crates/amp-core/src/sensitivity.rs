//! How the search's pick depends on the cost model's fitted constants.
//!
//! A few constants of the cost model are fitted to measured runs
//! ([`crate::cost::Calibration`]), and on a cluster they were not fitted on
//! they may not hold: fitted on one measured set alone they predict the
//! other 8.5% and 47% off (README, "How good are the predictions"). What a
//! user needs to know is whether the plan amp picks depends on them. So the
//! search is run again under other constants, and a pool of plans (rank 1,
//! then the leading plans of every search) is priced under every set: rank
//! 1's regret under a set is its time (or cost) over that of the pool's
//! best plan there. A regret of 1 everywhere says the pick does not rest on
//! the fitted constants; a large one names the constants under which
//! another plan wins, and which plan. The hedge is the plan of the pool
//! whose worst regret is least.

use rayon::prelude::*;

use crate::cost::{CostModel, Estimate, Inputs};
use crate::error::Result;
use crate::search::RankedPlan;
use crate::subset_search::{plan_nodes, price_per_s, Objective};

/// Rank 1 under one other set of constants.
#[derive(Debug, Clone)]
pub struct PickUnder {
    /// Rank 1's estimate under these constants; `None` when it does not
    /// fit in memory under them (their reserve is larger).
    pub pick: Option<Estimate>,
    /// The best plan of the pool under these constants, priced by them;
    /// `None` when none fits under them.
    pub fastest: Option<RankedPlan>,
    /// Whether [`Self::fastest`] is rank 1.
    pub fastest_is_pick: bool,
    /// Rank 1's objective over the fastest plan's, both under these
    /// constants: 1 when rank 1 is the fastest; `None` when rank 1 does not
    /// fit or no plan does.
    pub regret: Option<f64>,
}

/// The plan of the pool whose largest regret over every set of constants
/// is least: a plan to run when it is not known which set holds.
#[derive(Debug, Clone)]
pub struct Hedge {
    /// Its index in the pool (0: rank 1).
    pub index: usize,
    /// The plan, priced under the constants asked for.
    pub plan: RankedPlan,
    /// Its regret under each set of constants, in the order of the models
    /// (the one asked for first); `None` under a set no plan fits.
    pub regrets: Vec<Option<f64>>,
    /// The largest of [`Self::regrets`].
    pub worst_regret: f64,
}

/// How rank 1 fares under other constants, and the hedge.
#[derive(Debug, Clone)]
pub struct Sensitivity {
    /// Rank 1 under each model after the first, in their order.
    pub under: Vec<PickUnder>,
    /// The least worst-regret plan; `None` when no plan of the pool fits
    /// under every set of constants.
    pub hedge: Option<Hedge>,
}

/// The objective of `plan` at `iteration_s`: the time, or its price.
fn objective_of(
    inputs: &Inputs,
    plan: &crate::Plan,
    iteration_s: f64,
    objective: Objective,
) -> Option<f64> {
    match objective {
        Objective::Time => Some(iteration_s),
        Objective::Cost => price_per_s(inputs.cluster, &plan_nodes(plan)).map(|r| r * iteration_s),
    }
}

/// Prices every plan of `pool` under every one of `models` and compares:
/// `models[0]` is the cost model the search ranked with and `pool[0]` its
/// rank 1; the rest of the pool is the leading plans of the same search run
/// under each model (so the pool holds each model's best plan, and the best
/// of the pool under a model is the best that search finds under it; where
/// its heuristics miss a plan of the pool, the pool's is taken). Plans
/// repeated in the pool count once, at their first place. Ties go to the
/// earlier plan. An empty pool has no rank 1: nothing is compared.
pub fn sensitivity(
    inputs: &Inputs,
    objective: Objective,
    models: &[&dyn CostModel],
    pool: &[RankedPlan],
) -> Result<Sensitivity> {
    if pool.is_empty() {
        let none = PickUnder {
            pick: None,
            fastest: None,
            fastest_is_pick: false,
            regret: None,
        };
        return Ok(Sensitivity {
            under: vec![none; models.len().saturating_sub(1)],
            hedge: None,
        });
    }
    let mut plans: Vec<&RankedPlan> = Vec::new();
    for p in pool {
        if !plans.iter().any(|q| q.plan == p.plan) {
            plans.push(p);
        }
    }
    // estimates[i][m]: plan i under model m, when it fits.
    let estimates: Vec<Vec<Option<Estimate>>> = plans
        .par_iter()
        .map(|p| {
            models
                .iter()
                .map(|m| m.evaluate_if_fits(inputs, &p.plan))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    let value = |i: usize, m: usize| {
        estimates[i][m]
            .as_ref()
            .and_then(|e| objective_of(inputs, &plans[i].plan, e.iteration_s, objective))
            .unwrap_or(f64::INFINITY)
    };
    // The best plan under each model: the first of the least value.
    let best: Vec<Option<usize>> = (0..models.len())
        .map(|m| {
            (0..plans.len()).filter(|&i| value(i, m).is_finite()).fold(
                None,
                |b: Option<usize>, i| match b {
                    Some(j) if value(j, m) <= value(i, m) => b,
                    _ => Some(i),
                },
            )
        })
        .collect();
    let regret = |i: usize, m: usize| {
        best[m].and_then(|b| {
            let v = value(i, m);
            v.is_finite().then(|| v / value(b, m))
        })
    };
    let priced = |i: usize, m: usize| {
        estimates[i][m].as_ref().map(|e| RankedPlan {
            estimate: e.clone(),
            ..plans[i].clone()
        })
    };
    let under = (1..models.len())
        .map(|m| PickUnder {
            pick: estimates[0][m].clone(),
            fastest: best[m].and_then(|b| priced(b, m)),
            fastest_is_pick: best[m] == Some(0),
            regret: regret(0, m),
        })
        .collect();
    // A set under which no plan fits says nothing of any plan.
    let informative: Vec<usize> = (0..models.len()).filter(|&m| best[m].is_some()).collect();
    let worst = |i: usize| {
        informative
            .iter()
            .map(|&m| regret(i, m).unwrap_or(f64::INFINITY))
            .fold(0.0, f64::max)
    };
    let hedge = (0..plans.len())
        .filter(|&i| worst(i).is_finite())
        .fold(None, |h: Option<usize>, i| match h {
            Some(j) if worst(j) <= worst(i) => h,
            _ => Some(i),
        })
        .and_then(|i| {
            Some(Hedge {
                index: pool.iter().position(|p| p.plan == plans[i].plan)?,
                plan: priced(i, 0)?,
                regrets: (0..models.len()).map(|m| regret(i, m)).collect(),
                worst_regret: worst(i),
            })
        });
    Ok(Sensitivity { under, hedge })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::builtin as clusters;
    use crate::cost::device::{DeviceModel, DeviceOptions};
    use crate::cost::Calibration;
    use crate::model::builtin as models;
    use crate::profile::uniform_profile;
    use crate::search::{search, PlacementSearch, SearchOptions};
    use crate::setup::TrainingSetup;

    #[test]
    fn rank_1_is_compared_with_the_best_plan_of_the_pool_under_each_model() {
        let profile = uniform_profile(30, &[("V100-16GB", 1, 0.0005), ("T4", 1, 0.005)]);
        let (model, cluster) = (models::amp_gpt2(), clusters::het_cluster());
        let inputs = Inputs {
            model: &model,
            cluster: &cluster,
            profile: &profile,
        };
        let dm = DeviceModel::default();
        let opts = SearchOptions::new(32, PlacementSearch::Artifact, TrainingSetup::default());
        let plans = search(&inputs, &dm, &opts).unwrap().plans;
        let (first, second, third) = (&plans[0], &plans[1], &plans[2]);
        let t = |p: &RankedPlan| p.estimate.iteration_s;
        assert!(t(first) < t(second) && t(second) < t(third));
        let time = Objective::Time;
        let both: [&dyn CostModel; 2] = [&dm, &dm];
        // Under the same constants rank 1 is the best, found again or not,
        // and the hedge; a plan repeated counts once.
        for pool in [
            vec![first.clone()],
            vec![first.clone(), second.clone(), first.clone()],
        ] {
            let s = sensitivity(&inputs, time, &both, &pool).unwrap();
            let u = &s.under[0];
            assert!(u.fastest_is_pick);
            assert_eq!(u.regret, Some(1.0));
            assert_eq!(u.pick.as_ref().map(|e| e.iteration_s), Some(t(first)));
            let h = s.hedge.unwrap();
            assert_eq!((h.index, h.worst_regret), (0, 1.0));
            assert_eq!(h.regrets, vec![Some(1.0), Some(1.0)]);
        }
        // A slower rank 1: its regret is the ratio of the times, and the
        // faster plan is the hedge.
        let s = sensitivity(&inputs, time, &both, &[second.clone(), first.clone()]).unwrap();
        assert!(!s.under[0].fastest_is_pick);
        assert_eq!(s.under[0].regret, Some(t(second) / t(first)));
        assert_eq!(s.under[0].fastest.as_ref().map(t), Some(t(first)));
        let h = s.hedge.unwrap();
        assert_eq!(h.index, 1);
        assert_eq!(h.plan.plan, first.plan);
        // Constants that hold back more memory: rank 1 does not fit under
        // them, so it has no regret there and cannot be the hedge.
        let roomy = DeviceModel::new(DeviceOptions {
            calibration: Calibration {
                framework_reserve_bytes: 16.0e9,
                ..Calibration::FITTED
            },
            ..Default::default()
        });
        let with_roomy: [&dyn CostModel; 2] = [&dm, &roomy];
        let s = sensitivity(&inputs, time, &with_roomy, std::slice::from_ref(first)).unwrap();
        let u = &s.under[0];
        assert!(u.pick.is_none() && u.regret.is_none() && u.fastest.is_none());
        // An empty pool: nothing to compare.
        let empty = sensitivity(&inputs, time, &with_roomy, &[]).unwrap();
        assert!(empty.hedge.is_none() && empty.under.len() == 1);
        assert!(empty.under[0].regret.is_none());
        // No plan fits under them: they say nothing, and rank 1 is the hedge.
        assert_eq!(s.hedge.map(|h| h.regrets), Some(vec![Some(1.0), None]));
        // Room for a plan that needs less memory than rank 1, not for rank
        // 1: that plan is the fastest there, and the hedge.
        let headroom = |p: &RankedPlan| {
            p.estimate
                .memory
                .iter()
                .map(|d| d.capacity_bytes.unwrap() - d.peak_bytes)
                .fold(f64::INFINITY, f64::min)
        };
        let lean = plans
            .iter()
            .find(|p| headroom(p) > headroom(first) + 0.2e9)
            .unwrap();
        let tighter = DeviceModel::new(DeviceOptions {
            calibration: Calibration {
                framework_reserve_bytes: Calibration::FITTED.framework_reserve_bytes
                    + headroom(first)
                    + 0.1e9,
                ..Calibration::FITTED
            },
            ..Default::default()
        });
        let with_tighter: [&dyn CostModel; 2] = [&dm, &tighter];
        let s = sensitivity(&inputs, time, &with_tighter, &[first.clone(), lean.clone()]).unwrap();
        let u = &s.under[0];
        assert!(u.pick.is_none() && u.regret.is_none() && !u.fastest_is_pick);
        assert_eq!(u.fastest.as_ref().map(|f| &f.plan), Some(&lean.plan));
        let h = s.hedge.unwrap();
        assert_eq!(h.index, 1);
        assert_eq!(h.regrets[1], Some(1.0));
        assert_eq!(h.worst_regret, t(lean) / t(first));
    }
}
