//! The split refinement (`amp_core::refine`) against brute force under the
//! default cost model, and the search against exhaustive enumeration.
//!
//! - `refined_split_is_never_worse_and_exact_when_small`: on random small
//!   instances (2-10 layers, 1-3 nodes of two GPU types, 2-4 stages and more),
//!   every pipelined plan of the partitioner-only search is refined; the
//!   refinement is never slower than the partitioner's split, and (these
//!   instances have at most `BRUTE_FORCE_MAX_SPLITS` splits, so it prices
//!   every one) equals the brute-force best.
//! - `local_search_against_brute_force`: the local search alone (the path of
//!   plans with more splits) on the same instances, from the partitioner's
//!   split, over 64 deterministic cases: it is never worse than the
//!   partitioner and the test prints how often it reaches the brute-force
//!   best and its worst gap (README, "Split refinement"). Measured (the
//!   constants fitted on 2026-12-03 13:20 UTC): of 511 pipelined plans, the
//!   partitioner's split is the best on 315 (worst 22.0% slower than the
//!   best), the local search reaches the best on 456 (89%; worst 15.9%
//!   slower).
//! - `search_equals_exhaustive_enumeration`: on instances of up to 16 GPUs
//!   (2-4 nodes, two GPU types) and up to 12 layers, the best plan `search`
//!   returns is as fast as the best of every (tp, dp, pp, micro-batch),
//!   every axis order and node order, and every split, priced the same way.
//!   Measured: equal on all 32 instances (and on 96 with `EXHAUSTIVE_CASES`
//!   raised); the partitioner-only search misses the best on 5 of 32
//!   (21 of 96), by up to 11.1% (15.7%).
//! - `interleaved_plans_are_left_alone`: under an interleaved schedule the
//!   search returns exactly what it returns without refinement.

use std::cell::RefCell;

use amp_core::cluster::{Cluster, Node, GBPS_TO_BYTES_PER_S};
use amp_core::cost::device::{DeviceModel, DeviceOptions};
use amp_core::cost::{CostModel, Estimate, Inputs};
use amp_core::model::{Layer, LayerKind, Model};
use amp_core::placement::{AxisOrder, DeviceGrid, Placement};
use amp_core::plan::Plan;
use amp_core::profile::{Profile, ProfileEntry};
use amp_core::refine::{
    best_split, for_each_split, local_search_split, refine_split, with_boundaries,
};
use amp_core::search::{divisors, plan_from_grid, search, PlacementSearch, SearchOptions};
use amp_core::setup::{StageExchange, TrainingSetup};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// The default model with the refinement off: the search keeps the
/// partitioner's splits.
fn partitioner_only() -> DeviceModel {
    DeviceModel::new(DeviceOptions {
        refine_splits: false,
        ..DeviceOptions::default()
    })
}

const GPU_TYPES: [&str; 2] = ["A", "B"];

#[derive(Debug, Clone)]
struct Instance {
    model: Model,
    cluster: Cluster,
    profile: Profile,
    global_batch: usize,
}

impl Instance {
    fn inputs(&self) -> Inputs<'_> {
        Inputs {
            model: &self.model,
            cluster: &self.cluster,
            profile: &self.profile,
        }
    }
}

fn node(sizes: &'static [usize]) -> impl Strategy<Value = Node> {
    (
        0..GPU_TYPES.len(),
        prop::sample::select(sizes),
        1.0f64..400.0,
        1.0f64..100.0,
        prop_oneof![Just(None), (2u64..=32).prop_map(Some)],
    )
        .prop_map(|(t, gpus, intra, inter, mem_gib)| Node {
            gpu_type: GPU_TYPES[t].to_string(),
            gpus,
            intra_bytes_per_s: intra * GBPS_TO_BYTES_PER_S,
            inter_bytes_per_s: inter * GBPS_TO_BYTES_PER_S,
            nics: 1,
            gpu_memory_bytes: mem_gib.map(|g| g << 30),
            price_per_hour: None,
        })
}

fn layer() -> impl Strategy<Value = Layer> {
    (
        prop_oneof![
            Just(LayerKind::TransformerBlock),
            Just(LayerKind::Other),
            Just(LayerKind::Noop)
        ],
        0u64..1_000_000_000,
        1u64..20_000_000,
    )
        .prop_map(|(kind, params, out)| Layer {
            name: "l".into(),
            kind,
            params,
            output_elems_per_sample: out,
            forward_flops_per_sample: None,
            tied_to: None,
            stored_activation_elems_per_sample: None,
            replicated_activation_elems_per_sample: None,
            backward_transient_elems_per_sample: None,
            replicated_backward_transient_elems_per_sample: None,
            forward_send_extra_bytes: 0,
        })
}

/// Random instances: `nodes` nodes of `sizes` GPUs, `layers` layers with
/// random per-layer times on both GPU types, a global batch from `batches`.
fn instance(
    nodes: std::ops::RangeInclusive<usize>,
    sizes: &'static [usize],
    layers: std::ops::RangeInclusive<usize>,
    batches: &'static [usize],
) -> impl Strategy<Value = Instance> {
    (
        prop::collection::vec(node(sizes), nodes),
        prop::collection::vec(layer(), layers),
        prop::sample::select(batches),
    )
        .prop_flat_map(|(nodes, layers, global_batch)| {
            let n = layers.len();
            let times = prop::collection::vec(prop::collection::vec(1e-5f64..0.05, n), 6);
            (Just((nodes, layers, global_batch)), times)
        })
        .prop_map(|((nodes, layers, global_batch), times)| {
            let mut entries = Vec::new();
            for (ti, t) in GPU_TYPES.iter().enumerate() {
                for (k, tp) in [1usize, 2, 4].into_iter().enumerate() {
                    entries.push(ProfileEntry {
                        gpu: t.to_string(),
                        tp,
                        micro_batch: None,
                        forward_s: times[ti * 3 + k].clone(),
                        backward_s: None,
                        optimizer_s: None,
                        source: None,
                    });
                }
            }
            Instance {
                model: Model {
                    name: "random".into(),
                    shape: None,
                    layers,
                    resident_bytes_per_device: None,
                },
                cluster: Cluster {
                    name: "random".into(),
                    nodes,
                    links: Vec::new(),
                },
                profile: Profile {
                    entries,
                    precision: None,
                },
                global_batch,
            }
        })
}

fn small_instance() -> impl Strategy<Value = Instance> {
    instance(1..=3, &[1, 2, 4], 2..=10, &[1, 2, 4, 8, 16])
}

/// The fastest split of `plan` that fits, by brute force, and its time.
fn brute_force_s(inputs: &Inputs, model: &DeviceModel, plan: &Plan) -> f64 {
    let mut best = f64::INFINITY;
    for_each_split(inputs.model.num_layers(), plan.stages.len(), |b| {
        if let Ok(e) = model.evaluate(inputs, &with_boundaries(plan, b)) {
            if e.first_overflow().is_none() && e.iteration_s < best {
                best = e.iteration_s;
            }
        }
    });
    best
}

/// The partitioner-only search's pipelined plans.
fn partitioner_plans(i: &Instance) -> Vec<(Plan, Estimate)> {
    let opts = SearchOptions::new(
        i.global_batch,
        PlacementSearch::Full,
        TrainingSetup::default(),
    );
    match search(&i.inputs(), &partitioner_only(), &opts) {
        Ok(r) => r
            .plans
            .into_iter()
            .filter(|p| p.pp > 1)
            .map(|p| (p.plan, p.estimate))
            .collect(),
        Err(_) => Vec::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn refined_split_is_never_worse_and_exact_when_small(i in small_instance()) {
        let model = DeviceModel::default();
        let inputs = i.inputs();
        for (plan, est) in partitioner_plans(&i) {
            let refined_s = refine_split(&inputs, &model, &plan, &est)
                .map_or(est.iteration_s, |(_, e)| e.iteration_s);
            prop_assert!(refined_s <= est.iteration_s);
            let best_s = brute_force_s(&inputs, &model, &plan);
            // The same prices compared in the same order: equal to the bit.
            prop_assert_eq!(refined_s, best_s.min(est.iteration_s));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The layout estimator (collectives priced once per layout, layer
    /// costs once per micro-batch size) gives every re-split, and the plan
    /// at another micro-batch size, exactly the estimate `evaluate` gives
    /// it, and `evaluate_if_fits`'s verdict, under full and scatter/gather
    /// sends and a sharded optimizer; a plan on other devices falls back to
    /// `evaluate`.
    #[test]
    fn layout_estimator_equals_evaluate(i in small_instance(), variant in 0usize..4) {
        use amp_core::setup::{OptimizerSharding, PipelineReceive, PipelineSend};
        let model = DeviceModel::default();
        let inputs = i.inputs();
        let plans = partitioner_plans(&i);
        for (plan, _) in &plans {
            let mut plan = plan.clone();
            match variant {
                1 => plan.setup.pipeline_send = PipelineSend::ScatterGather,
                2 => plan.setup.optimizer_sharding = OptimizerSharding::Zero1,
                // Sailor's engine: receives through the host, a barrier
                // before the reduction, DeepSpeed's lockstep exchange (its
                // last stage keeps earlier micro-batches' outputs).
                3 => {
                    plan.setup.pipeline_receive = PipelineReceive::HostStaged;
                    plan.setup.grad_reduce_barrier = true;
                    plan.setup.stage_exchange = Some(StageExchange::Lockstep);
                }
                _ => {}
            }
            let estimate = model.layout_estimator(&inputs, &plan).unwrap();
            // The same layout with the micro-batches halved or doubled.
            let mut resized = Vec::new();
            if plan.micro_batch % 2 == 0 {
                let mut p = plan.clone();
                p.micro_batch /= 2;
                p.num_micro_batches *= 2;
                resized.push(p);
            }
            if plan.num_micro_batches % 2 == 0 {
                let mut p = plan.clone();
                p.micro_batch *= 2;
                p.num_micro_batches /= 2;
                resized.push(p);
            }
            let mut checked = 0;
            for_each_split(inputs.model.num_layers(), plan.stages.len(), |b| {
                if checked < 64 {
                    for base in std::iter::once(&plan).chain(&resized) {
                        let p = with_boundaries(base, b);
                        assert_eq!(estimate.estimate(&p).ok(), model.evaluate(&inputs, &p).ok(), "{b:?}");
                        assert_eq!(
                            estimate.estimate_if_fits(&p).ok(),
                            model.evaluate_if_fits(&inputs, &p).ok(),
                            "{b:?}"
                        );
                    }
                    checked += 1;
                }
            });
            for (other, _) in &plans {
                assert_eq!(estimate.estimate(other).ok(), model.evaluate(&inputs, other).ok());
            }
        }
    }

    /// The layout estimator's lower bound (what the uneven per-type search
    /// leaves unsimulated by) is never above the simulated time, on every
    /// split of every plan, with the micro-batches dealt evenly and one
    /// moved between replicas, sends blocking or not, in lockstep or not,
    /// the all-reduce overlapped or not, Sailor's host-staged receives and
    /// barrier before the reduction or not; and it is there exactly when the
    /// plan fits. `time_if_fits_under` (what the refinement prices splits
    /// with) gives `time_if_fits`'s estimate of every split faster than the
    /// limit, and leaves unsimulated a split whose bound is above it:
    /// limits at half, once and twice the simulated time and between.
    #[test]
    fn lower_bound_is_below_the_simulated_time(
        i in small_instance(),
        blocking in any::<bool>(),
        overlap in any::<bool>(),
        lockstep in any::<bool>(),
        sailor in any::<bool>(),
    ) {
        let model = DeviceModel::new(DeviceOptions {
            blocking_sends: blocking,
            ..DeviceOptions::default()
        });
        let inputs = i.inputs();
        for (plan, _) in &partitioner_plans(&i) {
            let mut plan = plan.clone();
            plan.setup.overlap_grad_reduce = overlap;
            plan.setup.stage_exchange = lockstep.then_some(StageExchange::Lockstep);
            if sailor {
                plan.setup.pipeline_receive = amp_core::setup::PipelineReceive::HostStaged;
                // The barrier holds the reduction back: no overlap with it.
                plan.setup.grad_reduce_barrier = !overlap;
            }
            let mut variants = vec![plan.clone()];
            let dp = plan.stages[0].replicas.len();
            if dp > 1 && plan.num_micro_batches > 1 {
                // One micro-batch moved from the first replica to the last.
                let mut counts = vec![plan.num_micro_batches; dp];
                counts[0] -= 1;
                counts[dp - 1] += 1;
                let mut p = plan.clone();
                amp_core::uneven::set_micro_batches(&mut p, counts);
                variants.push(p);
            }
            for base in &variants {
                let estimator = model.layout_estimator(&inputs, base).unwrap();
                let mut checked = 0;
                for_each_split(inputs.model.num_layers(), base.stages.len(), |b| {
                    if checked < 64 {
                        let p = with_boundaries(base, b);
                        let fits = model.evaluate_if_fits(&inputs, &p).unwrap();
                        let bound = estimator.lower_bound_if_fits(&p).unwrap();
                        assert_eq!(fits.is_some(), bound.is_some(), "{b:?}");
                        if let (Some(e), Some(bound)) = (fits, bound) {
                            assert!(
                                bound <= e.iteration_s * (1.0 + 1e-12),
                                "bound {bound} above the simulated {} at {b:?}",
                                e.iteration_s
                            );
                            let time = estimator.time_if_fits(&p).unwrap().unwrap();
                            let t = time.iteration_s;
                            for limit in [0.5 * t, 0.999 * t, t, 1.001 * t, 2.0 * t] {
                                let under = estimator.time_if_fits_under(&p, limit).unwrap();
                                if t < limit {
                                    assert_eq!(under.as_ref(), Some(&time), "{b:?} under {limit}");
                                }
                                if bound > limit * 1.001 {
                                    assert!(under.is_none(), "{b:?}: bound {bound} over {limit}");
                                }
                            }
                        } else {
                            assert!(estimator.time_if_fits_under(&p, f64::INFINITY).unwrap().is_none());
                        }
                        checked += 1;
                    }
                });
            }
        }
    }

    /// `evaluate_if_fits` gives evaluate's estimate when the split fits and
    /// nothing when it does not, on every split of every plan (the
    /// instances' GPUs are often too small: over 24 cases, 641 splits fit
    /// and 801 do not).
    #[test]
    fn evaluate_if_fits_agrees_with_evaluate(i in small_instance(), lockstep in any::<bool>()) {
        let model = DeviceModel::default();
        let inputs = i.inputs();
        for (mut plan, _) in partitioner_plans(&i) {
            plan.setup.stage_exchange = lockstep.then_some(StageExchange::Lockstep);
            for_each_split(inputs.model.num_layers(), plan.stages.len(), |b| {
                let p = with_boundaries(&plan, b);
                let e = model.evaluate(&inputs, &p).unwrap();
                let fits = e.first_overflow().is_none();
                let want = fits.then_some(e);
                assert_eq!(model.evaluate_if_fits(&inputs, &p).unwrap(), want, "{b:?}");
            });
        }
    }
}

#[test]
fn local_search_against_brute_force() {
    let model = DeviceModel::default();
    // (plans, plans where the partitioner already was best, where the local
    // search reached the best, worst gap of the local search, worst gap of
    // the partitioner)
    let stats = RefCell::new((0usize, 0usize, 0usize, 0.0f64, 0.0f64));
    let mut runner = TestRunner::new_with_rng(
        Config::with_cases(64),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    runner
        .run(&small_instance(), |i| {
            let inputs = i.inputs();
            for (plan, est) in partitioner_plans(&i) {
                let local_s = local_search_split(&inputs, &model, &plan, &est)
                    .map_or(est.iteration_s, |(_, e)| e.iteration_s);
                prop_assert!(local_s <= est.iteration_s);
                let best_s = best_split(&inputs, &model, &plan, &est)
                    .map_or(est.iteration_s, |(_, e)| e.iteration_s);
                prop_assert!(best_s <= local_s);
                let mut s = stats.borrow_mut();
                s.0 += 1;
                s.1 += usize::from(best_s == est.iteration_s);
                s.2 += usize::from(best_s == local_s);
                s.3 = s.3.max((local_s - best_s) / best_s);
                s.4 = s.4.max((est.iteration_s - best_s) / best_s);
            }
            Ok(())
        })
        .unwrap();
    let (n, partitioner_best, local_best, local_gap, partitioner_gap) = *stats.borrow();
    println!(
        "{n} pipelined plans: the partitioner's split is the best on {partitioner_best} (worst gap {:.2}%), the local search reaches the best on {local_best} (worst gap {:.2}%)",
        partitioner_gap * 100.0,
        local_gap * 100.0
    );
    assert!(n > 0, "the instances have pipelined plans");
    assert!(local_best >= partitioner_best);
    // The README's figures (fixed seeds); (511, 374, 481) before stages'
    // all-reduces through one NIC were priced sharing it, 2026-12-07 late
    // (the partitioner's tail prices each stage's alone); (527, 388, 497)
    // with the 3.5 GB reserve before 2026-12-05.
    assert_eq!((n, partitioner_best, local_best), (511, 348, 481));
    assert!(
        (partitioner_gap * 100.0 - 28.35).abs() < 0.005,
        "{partitioner_gap}"
    );
    assert!((local_gap * 100.0 - 11.30).abs() < 0.005, "{local_gap}");
}

/// Every permutation of `0..n`, in lexicographic order.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for first in 0..n {
        for rest in permutations(n - 1) {
            let mut p = vec![first];
            p.extend(rest.into_iter().map(|x| if x >= first { x + 1 } else { x }));
            out.push(p);
        }
    }
    out
}

/// The fastest plan of the declared space by enumeration: every (tp, dp, pp,
/// micro-batch) the search declares (tp dividing every node's GPUs, dp the
/// global batch, pp at most the layers, the micro-batch the per-replica
/// batch), every axis order and node order, every split; one-stage plans run
/// 1F1B as the search records them.
fn exhaustive_best_s(i: &Instance, model: &DeviceModel) -> f64 {
    let inputs = i.inputs();
    let (cluster, layers) = (&i.cluster, i.model.num_layers());
    let n = cluster.num_devices();
    let setup = TrainingSetup::default();
    let mut best = f64::INFINITY;
    let mut seen = std::collections::HashSet::new();
    for tp in divisors(n) {
        if cluster.nodes.iter().any(|nd| !nd.gpus.is_multiple_of(tp)) {
            continue;
        }
        for dp in divisors(n / tp) {
            let pp = n / (tp * dp);
            if !i.global_batch.is_multiple_of(dp) || pp > layers {
                continue;
            }
            for mbs in divisors(i.global_batch / dp) {
                let b = i.global_batch / (dp * mbs);
                for axis_order in AxisOrder::all() {
                    for node_order in permutations(cluster.nodes.len()) {
                        let p = Placement {
                            axis_order,
                            node_order,
                        };
                        let grid = DeviceGrid::new(cluster, tp, dp, pp, &p);
                        // The same devices in the same slots price the same.
                        if !seen.insert((grid.devices.clone(), mbs)) {
                            continue;
                        }
                        for_each_split(layers, pp, |bounds| {
                            let plan = plan_from_grid(&grid, bounds, mbs, b, &setup);
                            if let Ok(e) = model.evaluate(&inputs, &plan) {
                                if e.first_overflow().is_none() && e.iteration_s < best {
                                    best = e.iteration_s;
                                }
                            }
                        });
                    }
                }
            }
        }
    }
    best
}

#[test]
fn search_equals_exhaustive_enumeration() {
    let model = DeviceModel::default();
    // (instances, instances where the partitioner-only search misses the
    // best, its worst loss)
    let stats = RefCell::new((0usize, 0usize, 0.0f64));
    let mut runner = TestRunner::new_with_rng(
        Config::with_cases(EXHAUSTIVE_CASES),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    runner
        .run(&instance(2..=4, &[2, 4], 2..=12, &[2, 4, 8]), |i| {
            prop_assume!(i.cluster.num_devices() <= 16);
            let opts = SearchOptions::new(
                i.global_batch,
                PlacementSearch::Full,
                TrainingSetup::default(),
            );
            let exhaustive = exhaustive_best_s(&i, &model);
            let best = |m: &dyn CostModel| {
                search(&i.inputs(), m, &opts)
                    .map_or(f64::INFINITY, |r| r.plans[0].estimate.iteration_s)
            };
            let found = best(&model);
            prop_assert!(
                found == exhaustive,
                "search {found} s, exhaustive {exhaustive} s ({:.3}% apart)",
                (found - exhaustive) / exhaustive * 100.0
            );
            let before = best(&partitioner_only());
            let mut s = stats.borrow_mut();
            s.0 += 1;
            if before > exhaustive {
                s.1 += 1;
                s.2 = s.2.max((before - exhaustive) / exhaustive);
            }
            Ok(())
        })
        .unwrap();
    let (n, missed, loss) = *stats.borrow();
    println!(
        "{n} instances: the search equals enumeration on all; with the partitioner's splits only it missed the best on {missed} (worst loss {:.2}%)",
        loss * 100.0
    );
    // The README's figures (fixed seeds).
    if EXHAUSTIVE_CASES == 32 {
        // 6 with the 3.5 GB reserve before 2026-12-05.
        assert_eq!(missed, 5);
        assert!((loss * 100.0 - 13.43).abs() < 0.005, "{loss}");
    }
}

/// Instances of `search_equals_exhaustive_enumeration`.
const EXHAUSTIVE_CASES: u32 = 32;

/// Interleaved plans keep Megatron-LM's even split and one-stage plans
/// have nothing to split: under an interleaved schedule the search returns
/// exactly what it returns without refinement.
#[test]
fn interleaved_plans_are_left_alone() {
    let setup = TrainingSetup {
        schedule: amp_core::schedule::Schedule::Interleaved { virtual_stages: 2 },
        ..TrainingSetup::default()
    };
    let interleaved = RefCell::new(0usize);
    let mut runner = TestRunner::new_with_rng(
        Config::with_cases(32),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    runner
        .run(&instance(1..=3, &[2, 4], 4..=10, &[4, 8, 16]), |i| {
            let opts = SearchOptions::new(i.global_batch, PlacementSearch::Full, setup);
            let plans = |m: &dyn CostModel| {
                search(&i.inputs(), m, &opts)
                    .map(|r| r.plans)
                    .map_err(|e| e.to_string())
            };
            let refined = plans(&DeviceModel::default());
            if let Ok(p) = &refined {
                *interleaved.borrow_mut() += p
                    .iter()
                    .filter(|p| p.plan.setup.virtual_stages() > 1)
                    .count();
            }
            prop_assert_eq!(refined, plans(&partitioner_only()));
            Ok(())
        })
        .unwrap();
    assert!(
        *interleaved.borrow() > 0,
        "the instances have interleaved plans"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Under torchtitan's FSDP2 (sharded or replicated) and DeepSpeed's
    /// ZeRO-2 and ZeRO-3, a bucketed overlap asked for or not, one-stage
    /// plans over every GPU at 1, 3 and 8 micro-batches (their traffic at
    /// every micro-batch, `sharded.rs`) and
    /// every plan the search returns are priced by their layout estimator
    /// as by `evaluate`, the search's at their searched time, and their
    /// lower bound is not above that time.
    #[test]
    fn fsdp2_plans_are_priced_alike_and_bounded(
        i in small_instance(),
        shard in any::<bool>(),
        deepspeed in any::<bool>(),
        overlap in any::<bool>(),
        micro_batch in 1usize..=2,
    ) {
        use amp_core::setup::{Engine, OptimizerSharding};
        let (engine, sharding) = match (deepspeed, shard) {
            (false, true) => (Engine::Torchtitan, OptimizerSharding::Zero3),
            (false, false) => (Engine::Torchtitan, OptimizerSharding::None),
            (true, true) => (Engine::DeepSpeed, OptimizerSharding::Zero3),
            (true, false) => (Engine::DeepSpeed, OptimizerSharding::Zero2),
        };
        let setup = TrainingSetup {
            engine: Some(engine),
            optimizer_sharding: sharding,
            overlap_grad_reduce: overlap,
            ..TrainingSetup::default()
        };
        let model = DeviceModel::default();
        let inputs = i.inputs();
        let n = i.cluster.num_devices();
        let grid = DeviceGrid::new(&i.cluster, 1, n, 1, &Placement::artifact_default(&i.cluster));
        let layers = i.model.num_layers();
        let mut plans: Vec<(Plan, Option<f64>)> = [1, 3, 8]
            .iter()
            .map(|&b| (plan_from_grid(&grid, &[0, layers], micro_batch, b, &setup), None))
            .collect();
        let opts = SearchOptions::new(i.global_batch, PlacementSearch::Full, setup);
        if let Ok(r) = search(&inputs, &model, &opts) {
            plans.extend(r.plans.into_iter().map(|p| (p.plan, Some(p.estimate.iteration_s))));
        }
        for (plan, searched) in &plans {
            let e = model.evaluate(&inputs, plan).unwrap();
            if let Some(t) = searched {
                prop_assert_eq!(*t, e.iteration_s);
            }
            let estimator = model.layout_estimator(&inputs, plan).unwrap();
            prop_assert_eq!(estimator.estimate(plan).unwrap().iteration_s, e.iteration_s);
            if let Some(bound) = estimator.lower_bound_if_fits(plan).unwrap() {
                prop_assert!(bound <= e.iteration_s * (1.0 + 1e-12), "{} > {}", bound, e.iteration_s);
                if plan.pp() == 1 && !overlap {
                    // One stage: the bound is the flow shop's time itself.
                    prop_assert!(bound >= e.iteration_s * (1.0 - 1e-12), "{} < {}", bound, e.iteration_s);
                }
            }
        }
    }
}
