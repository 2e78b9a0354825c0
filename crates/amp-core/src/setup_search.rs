//! Searching the training setup too: recomputation, optimizer-state
//! sharding, interleaving and sequence parallelism, each varied only where
//! asked for and only as the target engine can run it.
//!
//! Every setup of the product is searched in full by [`crate::search::search`]
//! and the plans are merged into one ranking, so the result is exact over
//! the declared product. Plans on which an option has no effect (sequence
//! parallelism at tp 1, interleaving with one stage, sharding with one
//! replica) are kept once, under the setup without the option where the
//! product has it.

use serde::{Deserialize, Serialize};

use crate::cost::{CostModel, Inputs};
use crate::error::{AmpError, Result};
use crate::schedule::Schedule;
use crate::search::{
    memory_hint, progress_share, search, SearchOptions, SearchResult, MEMORY_HINT_START,
};
use crate::setup::{OptimizerSharding, Recompute, TrainingSetup};

/// Model chunks per pipeline rank an interleaving search tries.
pub const VIRTUAL_STAGE_CHOICES: [usize; 3] = [2, 4, 8];

/// Which setup options the search varies; the others stay as the base setup
/// has them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupSpace {
    /// Activation recomputation: none, selective, full.
    pub recompute: bool,
    /// Optimizer-state sharding: none and the ZeRO stages the engine runs.
    pub optimizer_sharding: bool,
    /// The base schedule and interleaving with [`VIRTUAL_STAGE_CHOICES`]
    /// chunks per rank (Megatron-LM's even split of the blocks).
    pub interleaving: bool,
    /// Sequence parallelism off and on (Megatron-LM and torchtitan).
    pub sequence_parallel: bool,
}

impl SetupSpace {
    /// Every option varied.
    pub fn all() -> SetupSpace {
        SetupSpace {
            recompute: true,
            optimizer_sharding: true,
            interleaving: true,
            sequence_parallel: true,
        }
    }

    /// Whether nothing is varied.
    pub fn is_empty(&self) -> bool {
        *self == SetupSpace::default()
    }
}

/// The setups to search: `base` first, then every combination of the varied
/// options that [`TrainingSetup::check`] accepts (so only what the base's
/// engine can run), in a fixed order.
pub fn setup_candidates(base: &TrainingSetup, space: &SetupSpace) -> Vec<TrainingSetup> {
    let recomputes: Vec<Recompute> = if space.recompute {
        vec![Recompute::None, Recompute::Selective, Recompute::Full]
    } else {
        vec![base.recompute]
    };
    let shardings: Vec<OptimizerSharding> = if space.optimizer_sharding {
        vec![
            OptimizerSharding::None,
            OptimizerSharding::Zero1,
            OptimizerSharding::Zero2,
            OptimizerSharding::Zero3,
        ]
    } else {
        vec![base.optimizer_sharding]
    };
    let mut schedules = vec![base.schedule];
    if space.interleaving {
        schedules.extend(
            VIRTUAL_STAGE_CHOICES
                .iter()
                .map(|&v| Schedule::Interleaved { virtual_stages: v })
                .filter(|s| *s != base.schedule),
        );
    }
    let sps: Vec<bool> = if space.sequence_parallel {
        vec![false, true]
    } else {
        vec![base.sequence_parallel]
    };
    let mut out = vec![*base];
    for &schedule in &schedules {
        for &sequence_parallel in &sps {
            for &optimizer_sharding in &shardings {
                for &recompute in &recomputes {
                    let s = TrainingSetup {
                        schedule,
                        sequence_parallel,
                        optimizer_sharding,
                        recompute,
                        // Megatron-LM overlaps tensor-parallel communication
                        // only under sequence parallelism.
                        tp_comm_overlap: base.tp_comm_overlap && sequence_parallel,
                        // Lockstep is DeepSpeed's 1F1B: the other schedules
                        // run on engines that exchange their own way.
                        stage_exchange: base
                            .stage_exchange
                            .filter(|_| schedule == Schedule::OneFOneB),
                        ..*base
                    };
                    if s.check().is_ok() && !out.contains(&s) {
                        out.push(s);
                    }
                }
            }
        }
    }
    out
}

/// A setup's searchable options in a few characters (`rc:full zero1 il:4
/// sp`, `-` for none), for tables.
pub fn short_label(s: &TrainingSetup) -> String {
    let mut parts = Vec::new();
    if s.recompute != Recompute::None {
        parts.push(format!("rc:{}", s.recompute.name()));
    }
    if s.optimizer_sharding != OptimizerSharding::None {
        parts.push(s.optimizer_sharding.name().to_string());
    }
    if s.virtual_stages() > 1 {
        parts.push(format!("il:{}", s.virtual_stages()));
    }
    if s.sequence_parallel {
        parts.push("sp".into());
    }
    if s.tp_comm_overlap {
        parts.push("tp-overlap".into());
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

/// Whether an option of `setup` has no effect on a plan of `tp`, `dp`, `pp`
/// (sequence parallelism at tp 1, interleaving with one stage, sharding
/// with one replica).
fn option_without_effect(setup: &TrainingSetup, tp: usize, dp: usize, pp: usize) -> bool {
    (setup.sequence_parallel && tp <= 1)
        || (setup.virtual_stages() > 1 && pp <= 1)
        || (setup.optimizer_sharding != OptimizerSharding::None && dp <= 1)
}

/// `setup` with the options that have no effect on a plan of `tp`, `dp`,
/// `pp` taken out: two setups that agree on this give that plan alike.
fn effective_setup(setup: &TrainingSetup, tp: usize, dp: usize, pp: usize) -> TrainingSetup {
    let mut s = setup.for_pipeline(pp);
    if tp <= 1 {
        s.sequence_parallel = false;
        s.tp_comm_overlap = false;
    }
    if pp <= 1 {
        s.stage_exchange = None;
    }
    if dp <= 1 {
        s.optimizer_sharding = OptimizerSharding::None;
    }
    s
}

/// Whether a plan of `tp`, `dp`, `pp` found under `setups[k]` is kept: a
/// plan that several setups give alike is kept once, under the first of
/// them without an option that has no effect on it (else the first of
/// them). A setup searched alone keeps all its plans, whatever its
/// options: `--optimizer-sharding zero2 --subsets` keeps a one-GPU
/// subset's plans.
fn kept_under(setups: &[TrainingSetup], k: usize, tp: usize, dp: usize, pp: usize) -> bool {
    let setup = &setups[k];
    if !option_without_effect(setup, tp, dp, pp) {
        return true;
    }
    let effective = effective_setup(setup, tp, dp, pp);
    let alike = |s: &TrainingSetup| effective_setup(s, tp, dp, pp) == effective;
    let keeper = setups
        .iter()
        .position(|s| alike(s) && !option_without_effect(s, tp, dp, pp))
        .or_else(|| setups.iter().position(alike));
    keeper == Some(k)
}

/// Searches every setup of `setups` with `opts` and merges the plans into
/// one ranking, fastest first (ties keep the order of `setups`, then the
/// search's own order). Counts add up over the setups. Errors as
/// [`search`] does on bad inputs, and with [`AmpError::NoPlan`] when no
/// setup has a plan that fits.
pub fn search_setups(
    inputs: &Inputs,
    model: &dyn CostModel,
    opts: &SearchOptions,
    setups: &[TrainingSetup],
) -> Result<SearchResult> {
    search_setups_with(inputs, model, opts, setups, search)
}

/// [`search_setups`] with another search over each setup: e.g.
/// [`crate::type_tp_search::search_per_type_tp`], so that plans with a tp
/// per GPU type are searched under every setup too.
pub fn search_setups_with(
    inputs: &Inputs,
    model: &dyn CostModel,
    opts: &SearchOptions,
    setups: &[TrainingSetup],
    search: impl Fn(&Inputs, &dyn CostModel, &SearchOptions) -> Result<SearchResult>,
) -> Result<SearchResult> {
    let mut merged = SearchResult::empty();
    let mut why_none: Vec<String> = Vec::new();
    for (k, setup) in setups.iter().enumerate() {
        // One progress bar over all the setups.
        let part = progress_share(opts.progress, k, setups.len());
        let o = SearchOptions {
            setup: *setup,
            progress: opts
                .progress
                .is_some()
                .then_some(&part as &(dyn Fn(usize, usize) + Sync)),
            ..*opts
        };
        match search(inputs, model, &o) {
            Ok(r) => {
                merged.absorb(r, |p| kept_under(setups, k, p.tp, p.dp, p.pp).then_some(p));
                // Keep memory to two searches' worth of plans (a plan of a
                // 16,384-GPU cluster is megabytes): the best `keep` so far,
                // ties in the setups' order.
                merged.rank_and_keep(opts.keep, |p| p.estimate.iteration_s);
            }
            Err(AmpError::NoPlan(why)) => why_none.push(why),
            Err(e) => return Err(e),
        }
    }
    if merged.plans.is_empty() {
        // One hint for every setup searched, not the first one's for it alone.
        // Some setups may have had nothing to price (an interleaved one on
        // too few layers); memory stopped the others.
        let over_memory = why_none.iter().any(|w| w.contains(MEMORY_HINT_START));
        let first = why_none.first().map_or(String::new(), |w| {
            let w = w.split(MEMORY_HINT_START).next().unwrap_or(w);
            format!("; the first: {w}")
        });
        let hint = if over_memory {
            memory_hint(setups, inputs.cluster.num_devices())
        } else {
            String::new()
        };
        return Err(AmpError::NoPlan(format!(
            "no plan fits under any of the {} training setups searched{first}{hint}",
            setups.len(),
        )));
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
    use crate::search::PlacementSearch;
    use crate::setup::Engine;

    #[test]
    fn candidates_follow_the_engine() {
        let base = TrainingSetup::default();
        assert_eq!(setup_candidates(&base, &SetupSpace::default()), vec![base]);
        let all = setup_candidates(&base, &SetupSpace::all());
        // 4 schedules x 2 x 4 shardings x 3 recomputes, no engine to refuse any.
        assert_eq!(all.len(), 96);
        assert_eq!(all[0], base);
        let megatron = TrainingSetup {
            engine: Some(Engine::Megatron),
            ..base
        };
        let m = setup_candidates(&megatron, &SetupSpace::all());
        // Megatron-LM shards only optimizer state: none or zero1.
        assert_eq!(m.len(), 4 * 2 * 2 * 3);
        assert!(m.iter().all(|s| s.check().is_ok()));
        let ds = TrainingSetup {
            engine: Some(Engine::DeepSpeed),
            ..base
        };
        // DeepSpeed: 1F1B only, no sequence parallelism, no selective recompute.
        assert_eq!(setup_candidates(&ds, &SetupSpace::all()).len(), 4 * 2);
    }

    /// The AMP paper's GPT-2 on its 16 T4s, every layer 4 ms a sample.
    fn gpt2_on_t4s() -> (
        crate::profile::Profile,
        crate::model::Model,
        crate::cluster::Cluster,
    ) {
        let profile = uniform_profile(30, &[("T4", 1, 0.004)]);
        (profile, models::amp_gpt2(), clusters::homogeneous())
    }

    /// DeepSpeed's pipeline engine asserts ZeRO stage < 2: a DeepSpeed
    /// search over the shardings keeps zero2 and zero3 to one-stage plans,
    /// and a pipelined plan with them does not validate.
    #[test]
    fn deepspeed_shards_past_zero1_only_without_a_pipeline() {
        let (profile, model, cluster) = gpt2_on_t4s();
        let inputs = Inputs {
            model: &model,
            cluster: &cluster,
            profile: &profile,
        };
        let dm = DeviceModel::default();
        let ds = TrainingSetup {
            engine: Some(Engine::DeepSpeed),
            ..TrainingSetup::default()
        };
        let opts = SearchOptions::new(32, PlacementSearch::Artifact, ds);
        let space = SetupSpace {
            optimizer_sharding: true,
            ..Default::default()
        };
        let setups = setup_candidates(&ds, &space);
        let r = search_setups(&inputs, &dm, &opts, &setups).unwrap();
        let wide = |p: &crate::search::RankedPlan| {
            p.plan.setup.optimizer_sharding >= OptimizerSharding::Zero2
        };
        assert!(r.plans.iter().any(|p| p.pp > 1));
        assert!(r.plans.iter().any(wide));
        assert!(r.plans.iter().filter(|p| wide(p)).all(|p| p.pp == 1));
        let piped = r.plans.iter().find(|p| p.pp > 1).unwrap();
        let mut plan = piped.plan.clone();
        plan.setup.optimizer_sharding = OptimizerSharding::Zero2;
        let e = plan.validate(&model, &cluster).unwrap_err().to_string();
        assert!(e.contains("ZeRO stages 0 and 1 only"), "{e}");
        plan.setup.engine = None;
        assert!(plan.validate(&model, &cluster).is_ok());
    }

    /// A plan an option does not touch (sharding at dp 1, interleaving at
    /// pp 1) is kept once, under the setup without the option where the
    /// setups have it, and under its own setup where they do not: a setup
    /// searched alone (`--optimizer-sharding zero2 --subsets`, whose subsets
    /// go through here) keeps every plan its plain search finds.
    #[test]
    fn plans_an_option_does_not_touch_are_kept_once() {
        let (profile, model, cluster) = gpt2_on_t4s();
        let inputs = Inputs {
            model: &model,
            cluster: &cluster,
            profile: &profile,
        };
        let dm = DeviceModel::default();
        let zero2 = TrainingSetup {
            optimizer_sharding: OptimizerSharding::Zero2,
            ..TrainingSetup::default()
        };
        let interleaved = TrainingSetup {
            schedule: Schedule::Interleaved { virtual_stages: 2 },
            ..TrainingSetup::default()
        };
        let shape = |p: &crate::search::RankedPlan| (p.tp, p.dp, p.pp, p.plan.micro_batch);
        for alone in [zero2, interleaved] {
            let opts = SearchOptions::new(32, PlacementSearch::Artifact, alone);
            let plain = search(&inputs, &dm, &opts).unwrap();
            let merged = search_setups(&inputs, &dm, &opts, &[alone]).unwrap();
            assert_eq!(
                merged.plans.iter().map(shape).collect::<Vec<_>>(),
                plain.plans.iter().map(shape).collect::<Vec<_>>()
            );
            assert!(merged
                .plans
                .iter()
                .any(|p| option_without_effect(&alone, p.tp, p.dp, p.pp)));
            // Beside the setup without the option, those plans are its.
            let base = TrainingSetup::default();
            let both = search_setups(&inputs, &dm, &opts, &[alone, base]).unwrap();
            let untouched: Vec<_> = both
                .plans
                .iter()
                .filter(|p| option_without_effect(&alone, p.tp, p.dp, p.pp))
                .collect();
            assert!(!untouched.is_empty());
            assert!(untouched
                .iter()
                .all(|p| p.plan.setup.for_pipeline(1) == base));
            // Once: not under both setups.
            for (i, a) in untouched.iter().enumerate() {
                for b in &untouched[i + 1..] {
                    let same = shape(a) == shape(b) && a.plan.stages == b.plan.stages;
                    assert!(!same, "a plan kept under both setups");
                }
            }
        }
    }

    #[test]
    fn the_merged_ranking_is_the_best_of_each_setup() {
        let (profile, model, cluster) = gpt2_on_t4s();
        let inputs = Inputs {
            model: &model,
            cluster: &cluster,
            profile: &profile,
        };
        let dm = DeviceModel::default();
        let opts = SearchOptions::new(32, PlacementSearch::Artifact, TrainingSetup::default());
        let space = SetupSpace {
            recompute: true,
            interleaving: true,
            ..Default::default()
        };
        let setups = setup_candidates(&opts.setup, &space);
        let merged = search_setups(&inputs, &dm, &opts, &setups).unwrap();
        let times: Vec<f64> = merged
            .plans
            .iter()
            .map(|p| p.estimate.iteration_s)
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        // The best merged plan is the best of the setups' own bests.
        let best_each = setups
            .iter()
            .filter_map(|s| {
                let o = SearchOptions { setup: *s, ..opts };
                search(&inputs, &dm, &o).ok()
            })
            .map(|r| r.plans[0].estimate.iteration_s)
            .fold(f64::INFINITY, f64::min);
        assert_eq!(times[0], best_each);
        // No plan appears twice (options without effect are kept once).
        for (i, a) in merged.plans.iter().enumerate() {
            for b in &merged.plans[i + 1..] {
                let same = a.plan.stages == b.plan.stages
                    && a.plan.micro_batch == b.plan.micro_batch
                    && a.plan.setup.for_pipeline(1) == b.plan.setup.for_pipeline(1)
                    && a.pp == 1;
                assert!(!same, "duplicate one-stage plan");
            }
        }
        // One progress bar over all the setups: one total, reaching it.
        let seen = std::sync::Mutex::new(Vec::new());
        let record = |done: usize, total: usize| seen.lock().unwrap().push((done, total));
        let with_progress = SearchOptions {
            progress: Some(&record),
            ..opts
        };
        search_setups(&inputs, &dm, &with_progress, &setups).unwrap();
        let seen = seen.into_inner().unwrap();
        let total = setups.len() * 1000;
        assert!(seen.iter().all(|&(d, t)| t == total && d <= t));
        assert_eq!(seen.iter().map(|r| r.0).max(), Some(total));
        // Each plan records the setup it was priced with.
        assert!(merged
            .plans
            .iter()
            .any(|p| p.plan.setup.recompute == Recompute::Full));
    }
}
