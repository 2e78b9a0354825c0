//! How the search's pick depends on the cost model's fitted constants.
//!
//! A few constants of the cost model are fitted to measured runs
//! ([`crate::cost::Calibration`]), and on a cluster they were not fitted on
//! they may not hold: fitted on one measured set alone they predict the
//! other 9-47% off (README, "How good are the predictions"). What a user
//! needs to know is whether the plan amp picks depends on them. So the
//! search is run again under other constants, and the pick is priced under
//! each: its regret there is its time (or cost) over that of the best plan
//! the search finds under them. A regret of 1 everywhere says the pick does
//! not rest on the fitted constants; a large one names the constants under
//! which another plan wins, and which plan.

use crate::cost::{CostModel, Estimate, Inputs};
use crate::error::Result;
use crate::search::RankedPlan;
use crate::subset_search::{plan_nodes, price_per_s, Objective};

/// The pick under one other set of constants.
#[derive(Debug, Clone)]
pub struct PickUnder {
    /// The pick's estimate under these constants; `None` when it does not
    /// fit in memory under them (their reserve is larger).
    pub pick: Option<Estimate>,
    /// The best plan the search finds under these constants (the pick
    /// itself, re-priced, when the search finds none better); `None` when
    /// no plan fits under them.
    pub fastest: Option<RankedPlan>,
    /// Whether [`Self::fastest`] is the pick.
    pub fastest_is_pick: bool,
    /// The pick's objective over the fastest plan's, both under these
    /// constants: 1 when the pick is the fastest; `None` when the pick does
    /// not fit or no plan does.
    pub regret: Option<f64>,
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

/// The pick (`pick`, the best plan of a search under other constants)
/// under `model`: priced by it, and compared with `found`, the best plan the
/// same search finds under `model` (`None` when no plan fits under it).
pub fn pick_under(
    inputs: &Inputs,
    pick: &RankedPlan,
    objective: Objective,
    model: &dyn CostModel,
    found: Option<RankedPlan>,
) -> Result<PickUnder> {
    let pick_estimate = model.evaluate_if_fits(inputs, &pick.plan)?;
    let value = |plan: &crate::Plan, e: &Estimate| {
        objective_of(inputs, plan, e.iteration_s, objective).unwrap_or(f64::INFINITY)
    };
    let pick_value = pick_estimate.as_ref().map(|e| value(&pick.plan, e));
    // The search is a heuristic past its exact range: where it finds
    // nothing better than the pick, the pick is the best known.
    let (fastest, fastest_is_pick) = match (found, &pick_estimate, pick_value) {
        (Some(f), Some(e), Some(v)) if f.plan == pick.plan || v <= value(&f.plan, &f.estimate) => (
            Some(RankedPlan {
                estimate: e.clone(),
                ..pick.clone()
            }),
            true,
        ),
        (None, Some(e), Some(_)) => (
            Some(RankedPlan {
                estimate: e.clone(),
                ..pick.clone()
            }),
            true,
        ),
        (f, _, _) => (f, false),
    };
    let regret = match (&fastest, pick_value) {
        (Some(f), Some(v)) => Some(v / value(&f.plan, &f.estimate)),
        _ => None,
    };
    Ok(PickUnder {
        pick: pick_estimate,
        fastest,
        fastest_is_pick,
        regret,
    })
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
    fn the_pick_is_compared_with_the_best_plan_found_under_other_constants() {
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
        let (first, second) = (&plans[0], &plans[1]);
        assert!(first.estimate.iteration_s < second.estimate.iteration_s);
        let t = |p: &RankedPlan| p.estimate.iteration_s;
        let time = Objective::Time;
        // Found again, found nothing, or found worse: the pick is the best.
        for found in [Some(first.clone()), None, Some(second.clone())] {
            let u = pick_under(&inputs, first, time, &dm, found).unwrap();
            assert!(u.fastest_is_pick);
            assert_eq!(u.regret, Some(1.0));
            assert_eq!(u.pick.map(|e| e.iteration_s), Some(t(first)));
            assert_eq!(u.fastest.map(|f| f.plan), Some(first.plan.clone()));
        }
        // Another plan is faster: the regret is the ratio of their times.
        let u = pick_under(&inputs, second, time, &dm, Some(first.clone())).unwrap();
        assert!(!u.fastest_is_pick);
        assert_eq!(u.regret, Some(t(second) / t(first)));
        // The pick does not fit under constants that hold back more memory:
        // no regret, and the best plan found is still reported.
        let roomy = DeviceModel::new(DeviceOptions {
            calibration: Calibration {
                framework_reserve_bytes: 16.0e9,
                ..Calibration::FITTED
            },
            ..Default::default()
        });
        let u = pick_under(&inputs, first, time, &roomy, Some(second.clone())).unwrap();
        assert!(u.pick.is_none() && u.regret.is_none() && !u.fastest_is_pick);
        assert!(u.fastest.is_some());
        // Neither fits: nothing to compare.
        let u = pick_under(&inputs, first, time, &roomy, None).unwrap();
        assert!(u.pick.is_none() && u.fastest.is_none() && u.regret.is_none());
    }
}
