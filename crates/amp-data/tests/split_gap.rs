//! How far the searched splits are from the best split of the same plan under
//! the default cost model, on the three AMP experiments.
//!
//! For each experiment, the top 10 plans of the default search (amp model,
//! every placement); for every pipelined one, every split of the layers into
//! its stages is priced with the same `CostModel::evaluate` that ranks plans
//! (splits that do not fit in memory excluded), and the fastest is compared
//! with the searched one. Run twice: the search with the partitioner's splits
//! only (as before `amp_core::refine`) and the search as it is. The figures
//! are in the README ("Split refinement"):
//!
//! ```sh
//! cargo test --release -p amp-data --test split_gap -- --ignored --nocapture
//! ```

use amp_core::cost::amp_paper::artifact_setup;
use amp_core::cost::device::{DeviceModel, DeviceOptions};
use amp_core::cost::{CostModel, Inputs};
use amp_core::refine::{for_each_split, split_count, with_boundaries};
use amp_core::search::{search, PlacementSearch, SearchOptions};
use amp_data::amp_artifact::Experiment;

/// The default model with the refinement turned off: the search keeps the
/// partitioner's splits, as it did before `amp_core::refine`.
fn partitioner_only() -> DeviceModel {
    DeviceModel::new(DeviceOptions {
        refine_splits: false,
        ..DeviceOptions::default()
    })
}

/// Plans with more splits than this are reported as not checked.
const MAX_SPLITS: u64 = 200_000;

/// (pipelined plans, plans with a faster split, largest gap as a fraction of
/// the searched time, plans not checked) over the top 10 of `e`.
fn gaps(e: Experiment, search_model: &dyn CostModel, label: &str) -> (usize, usize, f64, usize) {
    let (model, cluster, profile) = (e.model(), e.cluster(), e.profile());
    let inputs = Inputs {
        model: &model,
        cluster: &cluster,
        profile: &profile,
    };
    let price = DeviceModel::default();
    let opts = SearchOptions::new(e.global_batch(), PlacementSearch::Full, artifact_setup());
    let found = search(&inputs, search_model, &opts).unwrap();
    let (mut pipelined, mut faster, mut worst, mut unchecked) = (0, 0, 0.0f64, 0);
    for (rank, p) in found.plans.iter().take(10).enumerate() {
        if p.pp < 2 {
            continue;
        }
        pipelined += 1;
        let layers = model.num_layers();
        if split_count(layers, p.pp) > MAX_SPLITS {
            unchecked += 1;
            println!(
                "{label} {} rank {}: pp {} has {} splits, not checked",
                e.name(),
                rank + 1,
                p.pp,
                split_count(layers, p.pp)
            );
            continue;
        }
        let chosen_s = p.estimate.iteration_s;
        let mut best_s = f64::INFINITY;
        let mut best_b = Vec::new();
        for_each_split(layers, p.pp, |b| {
            let Ok(est) = price.evaluate(&inputs, &with_boundaries(&p.plan, b)) else {
                return;
            };
            if est.first_overflow().is_none() && est.iteration_s < best_s {
                best_s = est.iteration_s;
                best_b = b.to_vec();
            }
        });
        assert!(best_s.is_finite(), "the searched split itself fits");
        // A split counts as faster from a nanosecond on, the search's ranking resolution.
        if best_s < chosen_s - 1e-9 {
            faster += 1;
            let gap = (chosen_s - best_s) / best_s;
            worst = worst.max(gap);
            println!(
                "{label} {} rank {}: tp {} dp {} pp {} mbs {}: {:.4} s searched at {:?}, {:.4} s at {:?} (searched {:.1}% slower)",
                e.name(),
                rank + 1,
                p.tp,
                p.dp,
                p.pp,
                p.micro_batch,
                chosen_s,
                amp_core::refine::boundaries(&p.plan),
                best_s,
                best_b,
                gap * 100.0
            );
        }
    }
    (pipelined, faster, worst, unchecked)
}

#[test]
#[ignore = "prices every split of 30 plans; run with --release (README, Split refinement)"]
fn searched_splits_against_every_split() {
    let mut totals = [(0, 0, 0.0f64, 0); 2];
    for e in Experiment::ALL {
        for (k, (model, label)) in [
            (&partitioner_only() as &dyn CostModel, "before"),
            (&DeviceModel::default() as &dyn CostModel, "after"),
        ]
        .into_iter()
        .enumerate()
        {
            let (p, f, w, u) = gaps(e, model, label);
            println!(
                "{label} {}: {f} of {p} pipelined plans in the top 10 have a faster split; the searched one is up to {:.1}% slower ({u} not checked)",
                e.name(),
                w * 100.0
            );
            let t = &mut totals[k];
            *t = (t.0 + p, t.1 + f, t.2.max(w), t.3 + u);
        }
    }
    for (t, label) in totals.iter().zip(["before", "after"]) {
        println!(
            "{label}, all three: {} of {} pipelined plans have a faster split; the searched one is up to {:.1}% slower ({} not checked)",
            t.1,
            t.0,
            t.2 * 100.0,
            t.3
        );
    }
    // The refinement never leaves a larger gap than the partitioner alone.
    assert!(totals[1].2 <= totals[0].2, "{totals:?}");
}
