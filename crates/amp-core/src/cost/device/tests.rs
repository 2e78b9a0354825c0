//! Unit tests of the per-device model.

use super::layer_costs::Among;
use super::*;
use crate::cluster::{Cluster, Node};
use crate::error::AmpError;
use crate::model::{Layer, Model};
use crate::placement::{DeviceGrid, Placement};
use crate::plan::Stage;
use crate::profile::{Profile, ProfileEntry};
use crate::schedule::{EventKind, Schedule};
use crate::setup::{Engine, NumberFormat, NumberFormats, OptimizerSharding, Precision, Recompute};

fn d(node: usize, gpu: usize) -> Device {
    Device { node, gpu }
}

/// Four blocks of 1000 parameters, 100 elements per sample.
fn model() -> Model {
    let layer = |i: usize| Layer {
        name: format!("b{i}"),
        kind: LayerKind::TransformerBlock,
        params: 1000,
        output_elems_per_sample: 100,
        forward_flops_per_sample: None,
        tied_to: None,
        stored_activation_elems_per_sample: None,
        replicated_activation_elems_per_sample: None,
        backward_transient_elems_per_sample: None,
        replicated_backward_transient_elems_per_sample: None,
        forward_send_extra_bytes: 0,
    };
    Model {
        name: "m".into(),
        shape: None,
        layers: (0..4).map(layer).collect(),
        resident_bytes_per_device: None,
    }
}

/// Node 0: two fast GPUs; node 1: two slow ones. 1e9 B/s everywhere.
fn cluster() -> Cluster {
    let node = |gpu: &str| Node {
        gpu_type: gpu.into(),
        gpus: 2,
        intra_bytes_per_s: 1e9,
        inter_bytes_per_s: 1e9,
        nics: 1,
        gpu_memory_bytes: None,
        price_per_hour: None,
    };
    Cluster {
        name: "c".into(),
        nodes: vec![node("fast"), node("slow")],
        links: Vec::new(),
    }
}

fn entry(gpu: &str, tp: usize, f: f64, b: Option<f64>) -> ProfileEntry {
    ProfileEntry {
        gpu: gpu.into(),
        tp,
        micro_batch: Some(2),
        forward_s: vec![f; 4],
        backward_s: b.map(|b| vec![b; 4]),
        optimizer_s: None,
        source: None,
    }
}

/// tp 1 on both types: the fast GPU 1 s forward and 2 s backward per
/// layer, the slow one 3 s and 6 s.
fn fast_slow_profile() -> Profile {
    fast_slow_profile_by(3.0)
}

/// tp 1 on both types: the fast GPU 1 s forward and 2 s backward per
/// layer, the slow one `slow` times that.
fn fast_slow_profile_by(slow: f64) -> Profile {
    Profile {
        entries: vec![
            entry("fast", 1, 1.0, Some(2.0)),
            entry("slow", 1, slow, Some(2.0 * slow)),
        ],
        precision: None,
    }
}

fn time_only() -> DeviceModel {
    DeviceModel::new(DeviceOptions {
        price_memory: false,
        ..Default::default()
    })
}

fn plan(stages: Vec<(usize, usize, Vec<Vec<Device>>)>, b: usize) -> Plan {
    Plan {
        micro_batch: 2,
        num_micro_batches: b,
        replica_micro_batches: Vec::new(),
        stages: stages
            .into_iter()
            .map(|(first_layer, end_layer, replicas)| Stage {
                first_layer,
                end_layer,
                replicas,
            })
            .collect(),
        setup: TrainingSetup::default(),
    }
}

fn durations(t: &Timeline, stage: usize, kind: EventKind) -> Vec<f64> {
    t.events
        .iter()
        .filter(|e| e.stage == stage && e.kind == kind)
        .map(|e| e.end_s - e.start_s)
        .collect()
}

/// The breakdown's parts add up to the iteration.
fn assert_breakdown_adds_up(e: &crate::cost::Estimate) {
    let b = &e.breakdown;
    let sum = b.compute_s
        + b.bubble_s
        + b.pipeline_send_s
        + b.tp_comm_s
        + b.dp_allreduce_s
        + b.optimizer_s;
    assert!(
        (sum - e.iteration_s).abs() < 1e-9,
        "{sum} vs {}",
        e.iteration_s
    );
}

fn all_close(got: Vec<f64>, want: f64, n: usize) {
    assert_eq!(got.len(), n, "{got:?}");
    assert!(
        got.iter().all(|g| (g - want).abs() < 1e-12),
        "{got:?} != {want}"
    );
}

#[test]
fn each_stage_is_priced_on_its_own_gpus() {
    let (m, c) = (model(), cluster());
    let p = fast_slow_profile();
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    // Stage 0 (layers 0..3) on a fast GPU, stage 1 (layer 3) on a slow one.
    let pl = plan(
        vec![(0, 3, vec![vec![d(0, 0)]]), (3, 4, vec![vec![d(1, 0)]])],
        2,
    );
    let t = time_only().timeline(&inputs, &pl).unwrap();
    all_close(durations(&t, 0, EventKind::Forward), 3.0, 2);
    all_close(durations(&t, 0, EventKind::Backward), 6.0, 2);
    all_close(durations(&t, 1, EventKind::Forward), 3.0, 2);
    all_close(durations(&t, 1, EventKind::Backward), 6.0, 2);
    // A tensor-parallel group mixing the types runs at the slow pace
    // (tp = 2 derived from tp = 1: 3 / 2 per layer plus the all-reduces).
    let pl = plan(vec![(0, 4, vec![vec![d(0, 0), d(1, 0)]])], 1);
    let t = time_only().timeline(&inputs, &pl).unwrap();
    // All-reduce of 2 x 100 x 2 = 400 bytes between the nodes:
    // 2 x 30us + 400 / (1e9 x the fitted inter-node efficiency).
    let ar = 2.0 * collective::INTER_NODE_LATENCY_S
        + 400.0 / (1e9 * crate::cost::Calibration::FITTED.inter_node_efficiency);
    let f = durations(&t, 0, EventKind::Forward)[0];
    assert!((f - 4.0 * (1.5 + 2.0 * ar)).abs() < 1e-12, "{f}");
}

/// A layer of kind `noop` takes no time whatever its profile says (what a
/// per-layer profiler records for one is its own overhead); its cut still
/// sends, and its parameters still take the optimizer step.
#[test]
fn noop_layers_take_no_time_whatever_the_profile_says() {
    let (mut m, c) = (model(), cluster());
    let p = fast_slow_profile();
    let pl = plan(vec![(0, 4, vec![vec![d(0, 0)]])], 2);
    let run = |m: &Model| {
        let inputs = Inputs {
            model: m,
            cluster: &c,
            profile: &p,
        };
        let t = time_only().timeline(&inputs, &pl).unwrap();
        (
            durations(&t, 0, EventKind::Forward),
            durations(&t, 0, EventKind::Backward),
        )
    };
    // Four blocks of 1 s forward, 2 s backward on the fast GPU.
    let (f, b) = run(&m);
    all_close(f, 4.0, 2);
    all_close(b, 8.0, 2);
    m.layers[1].kind = LayerKind::Noop;
    m.layers[2].kind = LayerKind::Noop;
    let (f, b) = run(&m);
    all_close(f, 2.0, 2);
    all_close(b, 4.0, 2);
}

#[test]
fn per_sample_profiles_split_compute_and_tp_communication() {
    let (m, c) = (model(), cluster());
    let per_sample = |tp: usize, f: f64| ProfileEntry {
        micro_batch: None,
        backward_s: None,
        ..entry("fast", tp, f, None)
    };
    let p = Profile {
        entries: vec![per_sample(1, 1.0), per_sample(2, 0.8)],
        precision: None,
    };
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    // Fixed shares of 0.2 and 0.6, whatever the fit gives.
    let model = DeviceModel::new(DeviceOptions {
        price_memory: false,
        calibration: crate::cost::Calibration {
            per_sample_fixed_fraction: 0.2,
            per_sample_tp_comm_fixed_fraction: 0.6,
            ..crate::cost::Calibration::FITTED
        },
        ..Default::default()
    });
    // A layer at tp 2, per sample: compute 1.0 / 2 = 0.5, communication
    // 0.3. Micro-batch 2: compute 0.5 x (0.2 + 0.8 x 2) = 0.9,
    // communication 0.3 x (0.6 + 0.4 x 2) = 0.42. Forward 1.32,
    // backward 2 x 0.9 + 0.42 = 2.22; four layers.
    let pl = plan(vec![(0, 4, vec![vec![d(0, 0), d(0, 1)]])], 1);
    let t = model.timeline(&inputs, &pl).unwrap();
    all_close(durations(&t, 0, EventKind::Forward), 4.0 * 1.32, 1);
    all_close(durations(&t, 0, EventKind::Backward), 4.0 * 2.22, 1);
    let e = model.evaluate(&inputs, &pl).unwrap();
    assert!(
        (e.breakdown.tp_comm_s - 4.0 * 0.84).abs() < 1e-9,
        "{:?}",
        e.breakdown
    );
    // Node 1 has no profile: a clear error.
    let pl = plan(
        vec![
            (0, 1, vec![vec![d(0, 0), d(0, 1)]]),
            (1, 4, vec![vec![d(1, 0), d(1, 1)]]),
        ],
        1,
    );
    let e = model.evaluate(&inputs, &pl).unwrap_err().to_string();
    assert!(e.contains("`slow`"), "{e}");
}

#[test]
fn breakdown_adds_up_and_tables_match() {
    let (m, c) = (model(), cluster());
    let p = Profile {
        entries: vec![
            entry("fast", 1, 1.0, Some(2.0)),
            entry("slow", 1, 2.0, Some(4.0)),
        ],
        precision: None,
    };
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    let pl = plan(
        vec![
            (0, 2, vec![vec![d(0, 0)], vec![d(0, 1)]]),
            (2, 4, vec![vec![d(1, 0)], vec![d(1, 1)]]),
        ],
        4,
    );
    let e = time_only().evaluate(&inputs, &pl).unwrap();
    let b = &e.breakdown;
    assert_breakdown_adds_up(&e);
    assert!(b.dp_allreduce_s > 0.0 && b.optimizer_s > 0.0);
    // The slow stage bounds the iteration from below: 4 x (2 + 4) x 2.
    assert!(e.iteration_s >= 48.0);
    let grid = DeviceGrid::new(&c, 1, 2, 2, &Placement::artifact_default(&c));
    let cand = Candidate {
        grid: &grid,
        setup: &TrainingSetup::default(),
        micro_batch: 2,
        num_micro_batches: 4,
    };
    let t = time_only().stage_tables(&inputs, &cand).unwrap();
    assert_eq!(t.compute_prefix[0][4], 12.0);
    assert_eq!(t.compute_prefix[1][4], 24.0);
    // A cut after any block: 2 x 100 x 2 bytes, both ways, two replicas
    // sharing each NIC: 2 x (30us + 400 x 2 / 0.5e9).
    let cut = 2.0
        * (collective::INTER_NODE_LATENCY_S
            + 800.0 / (1e9 * crate::cost::Calibration::FITTED.inter_node_efficiency));
    assert!((t.cut[0][1] - cut).abs() < 1e-15);
    // The tables of the grid's candidates at several micro-batch sizes,
    // asked in a row (the network priced once), are each candidate's own,
    // with and without memory (which can leave the network unpriced).
    // A change of setup in the row (fp32 sends and gradients) is priced on
    // its own network.
    let fp32 = TrainingSetup {
        formats: crate::setup::Precision::Fp32.formats(),
        ..TrainingSetup::default()
    };
    for model in [time_only(), DeviceModel::default()] {
        let setup = TrainingSetup::default();
        let cands: Vec<Candidate> = [
            (1, &setup),
            (2, &setup),
            (2, &fp32),
            (4, &setup),
            (64, &setup),
        ]
        .into_iter()
        .map(|(micro_batch, setup)| Candidate {
            grid: &grid,
            setup,
            micro_batch,
            num_micro_batches: 4,
        })
        .collect();
        let mut together = model.grid_tables(&inputs);
        let tables: Vec<StageTables> = cands
            .iter()
            .map(|c| {
                let t = together.stage_tables(c).unwrap();
                assert_eq!(
                    t,
                    model.stage_tables(&inputs, c).unwrap(),
                    "mbs {}",
                    c.micro_batch
                );
                t
            })
            .collect();
        // fp32 sends cost more than 16-bit ones at the same micro-batch.
        assert!(tables[2].cut[0][1] > tables[1].cut[0][1]);
        // The estimator made after the tables (sharing their network) gives
        // the model's own estimates, on the grid and off it.
        together.stage_tables(&cands[1]).unwrap();
        let estimator = together.layout_estimator(&pl).unwrap();
        assert_eq!(
            estimator.estimate(&pl).unwrap(),
            model.evaluate(&inputs, &pl).unwrap()
        );
    }
}

#[test]
fn number_formats_size_sends_and_allreduces() {
    let (m, c) = (model(), cluster());
    let mut p = Profile {
        entries: vec![
            entry("fast", 1, 1.0, Some(2.0)),
            entry("slow", 1, 2.0, Some(4.0)),
        ],
        precision: None,
    };
    let grid = DeviceGrid::new(&c, 1, 2, 2, &Placement::artifact_default(&c));
    let fp32 = TrainingSetup {
        formats: Precision::Fp32.formats(),
        ..TrainingSetup::default()
    };
    let fp16 = TrainingSetup {
        formats: Precision::Fp16.formats(),
        ..TrainingSetup::default()
    };
    let price = |p: &Profile, setup: &TrainingSetup| {
        let inputs = Inputs {
            model: &m,
            cluster: &c,
            profile: p,
        };
        let cand = Candidate {
            grid: &grid,
            setup,
            micro_batch: 2,
            num_micro_batches: 4,
        };
        let mut pl = plan(
            vec![
                (0, 2, vec![vec![d(0, 0)], vec![d(0, 1)]]),
                (2, 4, vec![vec![d(1, 0)], vec![d(1, 1)]]),
            ],
            4,
        );
        pl.setup = *setup;
        let model = time_only();
        Ok::<_, AmpError>((
            model.stage_tables(&inputs, &cand)?,
            model.allreduce_times(
                &inputs,
                &pl,
                &model.allreduce_curves(&inputs, &pl),
                &Default::default(),
            ),
        ))
    };
    // 16-bit: 2 x 100 x 2 = 400 bytes per rank and cut; fp32 twice
    // that; two replicas sharing each NIC, both ways.
    let (t16, ar16) = price(&p, &fp16).unwrap();
    // bf16 sends 16-bit activations but all-reduces fp32 gradients.
    let (tb16, arb16) = price(&p, &TrainingSetup::default()).unwrap();
    assert_eq!(tb16.cut, t16.cut);
    // fp16 with DeepSpeed's fp32 all-reduce (the AMP artifact's runs):
    // fp16 sends, fp32 all-reduce bytes.
    let fp16_reduce32 = TrainingSetup {
        formats: NumberFormats {
            gradient_reduction: Some(NumberFormat::Fp32),
            ..fp16.formats
        },
        ..fp16
    };
    let (t16r, ar16r) = price(&p, &fp16_reduce32).unwrap();
    assert_eq!(t16r.cut, t16.cut);
    // Eager autocast sends its fp32 residual stream between stages: the
    // cut of fp32 training.
    let eager = TrainingSetup {
        formats: Precision::Fp16.formats().with_eager_autocast(),
        ..TrainingSetup::default()
    };
    let (te, _) = price(&p, &eager).unwrap();
    p.precision = Some(Precision::Fp32);
    let (t32, ar32) = price(&p, &fp32).unwrap();
    let lat = collective::INTER_NODE_LATENCY_S;
    let bw = 1e9 * crate::cost::Calibration::FITTED.inter_node_efficiency;
    assert!((t16.cut[0][1] - 2.0 * (lat + 800.0 / bw)).abs() < 1e-15);
    assert!((t32.cut[0][1] - 2.0 * (lat + 1600.0 / bw)).abs() < 1e-15);
    assert_eq!(te.cut, t32.cut);
    // All-reduce of each stage's 2000 parameters over two replicas on
    // one node (1e9 B/s, 10 us steps): 2 x 10 us + bytes / 1e9.
    let intra = collective::INTRA_NODE_LATENCY_S;
    for (ar, bytes) in [
        (&ar16, 2000.0 * 2.0),
        (&ar16r, 2000.0 * 4.0),
        (&arb16, 2000.0 * 4.0),
        (&ar32, 2000.0 * 4.0),
    ] {
        for t in ar.iter() {
            assert!((t - (2.0 * intra + bytes / 1e9)).abs() < 1e-15, "{t}");
        }
    }
    // A profile measured in fp32 does not price a 16-bit setup.
    let e = price(&p, &TrainingSetup::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("measured in fp32"), "{e}");
    // fp16 and bf16 share their element size.
    p.precision = Some(Precision::Fp16);
    let (t16b, _) = price(&p, &TrainingSetup::default()).unwrap();
    assert_eq!(t16b.cut, t16.cut);
}

/// Two stages of two blocks, each replicated on a node's two GPUs (the fast
/// node first), 4 micro-batches.
fn two_stages_on_two_nodes() -> Plan {
    plan(
        vec![
            (0, 2, vec![vec![d(0, 0)], vec![d(0, 1)]]),
            (2, 4, vec![vec![d(1, 0)], vec![d(1, 1)]]),
        ],
        4,
    )
}

#[test]
fn zero3_gathers_weights_and_reduce_scatters_gradients_and_selective_recompute_reruns_attention() {
    let (c, mut m) = (cluster(), model());
    m.shape = Some(crate::model::TransformerShape {
        hidden: 64,
        num_blocks: 4,
        seq_len: 128,
        vocab: 10,
        heads: 2,
        architecture: None,
    });
    let p = fast_slow_profile_by(2.0);
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    let mut pl = two_stages_on_two_nodes();
    pl.setup.formats = Precision::Fp16.formats();
    let plain = time_only().allreduce_times(
        &inputs,
        &pl,
        &time_only().allreduce_curves(&inputs, &pl),
        &Default::default(),
    );
    pl.setup.optimizer_sharding = OptimizerSharding::Zero3;
    let z3 = time_only().allreduce_times(
        &inputs,
        &pl,
        &time_only().allreduce_curves(&inputs, &pl),
        &Default::default(),
    );
    // 16-bit weights and gradients: a reduce-scatter and two all-gathers
    // of the same size, half an all-reduce each.
    assert_eq!(pl.setup.formats.weights.bytes(), gradient_bytes(&pl.setup));
    for (a, b) in plain.iter().zip(&z3) {
        assert!((b / a - 1.5).abs() < 1e-12);
    }
    // fp32 gradients (bf16): the gathers move the 16-bit weights, half the
    // gradients' bytes; torchtitan's pipelines gather once.
    let curves = time_only().allreduce_curves(&inputs, &pl);
    let params: Vec<f64> = (0..2)
        .map(|j| m.stage_params(pl.stages[j].layers()) as f64)
        .collect();
    for (engine, gathers) in [(None, 1.0), (Some(crate::setup::Engine::Torchtitan), 0.5)] {
        let mut bf = pl.clone();
        bf.setup = TrainingSetup {
            engine,
            optimizer_sharding: OptimizerSharding::Zero3,
            ..TrainingSetup::default()
        };
        assert_eq!(bf.setup.formats, Precision::Bf16.formats());
        assert_eq!(gradient_bytes(&bf.setup), 4.0);
        let z3 = time_only().allreduce_times(&inputs, &bf, &curves, &Default::default());
        for j in 0..2 {
            let want =
                0.5 * curves[j].at(4.0 * params[j]) + gathers * curves[j].at(2.0 * params[j]);
            assert!(
                (z3[j] - want).abs() < 1e-15,
                "{engine:?} {j}: {} vs {want}",
                z3[j]
            );
        }
    }
    // s = 128, h = 64: the attention core is 128 / (384 + 128) = 1/4 of
    // a block's forward, rerun in its backward.
    pl.setup = TrainingSetup {
        recompute: Recompute::Selective,
        ..TrainingSetup::default()
    };
    let t = time_only().timeline(&inputs, &pl).unwrap();
    all_close(durations(&t, 0, EventKind::Backward), 2.0 * (2.0 + 0.25), 4);
}

/// A Llama-like architecture for `model()`'s blocks: 2 heads of 32, one
/// key/value head, a gated MLP of 128.
fn llama_like(hidden: u64, seq: u64) -> crate::model::TransformerShape {
    crate::model::TransformerShape {
        hidden,
        num_blocks: 4,
        seq_len: seq,
        vocab: 10,
        heads: 2,
        architecture: Some(crate::model::Architecture {
            family: "llama".into(),
            kv_heads: 1,
            head_dim: hidden / 2,
            ffn_hidden: 2 * hidden,
            activation: crate::model::Activation::Swiglu,
            norm: crate::model::NormKind::Rmsnorm,
            norm_eps: 1e-5,
            position_embedding: crate::model::PositionEmbedding::Rope,
            rope_theta: Some(500_000.0),
            rope_scaling: None,
            max_positions: seq,
            tied_embeddings: false,
            linear_bias: false,
            mlp_bias: None,
            qkv_bias: false,
            qk_norm: false,
            post_norms: false,
            flash_attention: Some(true),
            dropout: Some(false),
        }),
    }
}

#[test]
fn torchtitans_selective_checkpointing_reruns_every_second_product() {
    let (c, mut m) = (cluster(), model());
    m.shape = Some(llama_like(64, 128));
    // Products in forward order, QKV fused as torchtitan builds it: qkv
    // 64 x 128, o 64 x 64, gate and up 64 x 128, down 128 x 64 (36,864
    // multiply-adds per token); the causal attention 128 x 64 = 8,192.
    // torchtitan reruns o and up: 12,288 of 45,056, 3/11.
    let share = per_op_selective_share(&m).unwrap();
    assert!((share - 3.0 / 11.0).abs() < 1e-12, "{share}");
    let p = fast_slow_profile_by(2.0);
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    let mut pl = two_stages_on_two_nodes();
    let backward = |pl: &Plan| {
        let t = time_only().timeline(&inputs, pl).unwrap();
        durations(&t, 1, EventKind::Backward)
    };
    pl.setup = TrainingSetup {
        recompute: Recompute::Selective,
        engine: Some(crate::setup::Engine::Torchtitan),
        ..TrainingSetup::default()
    };
    // The slow stage: two blocks of forward 2, backward 4 each.
    all_close(backward(&pl), 2.0 * (4.0 + 2.0 * 3.0 / 11.0), 4);
    // Megatron-LM's selective recomputation reruns the attention core:
    // 128 / (384 + 128) of the forward.
    pl.setup.engine = Some(crate::setup::Engine::Megatron);
    all_close(backward(&pl), 2.0 * (4.0 + 2.0 * 0.25), 4);
    // Without an architecture torchtitan's is priced as Megatron-LM's.
    m.shape.as_mut().unwrap().architecture = None;
    assert_eq!(per_op_selective_share(&m), None);
}

#[test]
fn analytic_entries_get_tp_allreduces_and_recompute_reruns_the_forward() {
    let (m, c) = (model(), cluster());
    let analytic = ProfileEntry {
        source: Some(crate::profile::ANALYTIC_SOURCE.into()),
        ..entry("fast", 2, 1.0, Some(2.0))
    };
    let measured = entry("fast", 2, 1.0, Some(2.0));
    let price = |e: &ProfileEntry, recompute: bool| {
        let mut pl = plan(vec![(0, 4, vec![vec![d(0, 0), d(0, 1)]])], 1);
        if recompute {
            pl.setup.recompute = Recompute::Full;
        }
        let p = Profile {
            entries: vec![e.clone()],
            precision: None,
        };
        let inputs = Inputs {
            model: &m,
            cluster: &c,
            profile: &p,
        };
        let t = time_only().timeline(&inputs, &pl).unwrap();
        (
            durations(&t, 0, EventKind::Forward)[0],
            durations(&t, 0, EventKind::Backward)[0],
        )
    };
    // Measured tp 2 times include the all-reduces: used as they are.
    assert_eq!(price(&measured, false), (4.0, 8.0));
    // Analytic ones do not: per block two all-reduces forward and two
    // backward of 2 x 100 x 2 = 400 bytes between two GPUs of a node,
    // 2 x 10 us + 2 x 1/2 x 400 / 1e9 each.
    let ar = 2.0 * collective::INTRA_NODE_LATENCY_S + 400.0 / 1e9;
    let (f, b) = price(&analytic, false);
    assert!((f - 4.0 * (1.0 + 2.0 * ar)).abs() < 1e-12, "{f}");
    assert!((b - 4.0 * (2.0 + 2.0 * ar)).abs() < 1e-12, "{b}");
    // Full recomputation: the backward reruns the forward first.
    let (f2, b2) = price(&analytic, true);
    assert_eq!(f2, f);
    assert!((b2 - (b + f)).abs() < 1e-12, "{b2}");
    assert_eq!(price(&measured, true), (4.0, 12.0));
}

/// The first forward pass of the test model's 4 layers on one tp-2 group
/// of a node under Megatron-LM, each layer an analytic (compute-only) entry
/// of `layer_s` forward and twice that backward, the setup as `setup`
/// leaves it: the blocks' tensor-parallel collectives priced on top.
fn megatron_tp2_forward_s(layer_s: f64, setup: impl Fn(&mut TrainingSetup)) -> f64 {
    let (m, c) = (model(), cluster());
    let analytic = ProfileEntry {
        source: Some(crate::profile::ANALYTIC_SOURCE.into()),
        ..entry("fast", 2, layer_s, Some(2.0 * layer_s))
    };
    let p = Profile {
        entries: vec![analytic],
        precision: None,
    };
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    let mut pl = plan(vec![(0, 4, vec![vec![d(0, 0), d(0, 1)]])], 1);
    pl.setup.engine = Some(crate::setup::Engine::Megatron);
    setup(&mut pl.setup);
    let t = time_only().timeline(&inputs, &pl).unwrap();
    durations(&t, 0, EventKind::Forward)[0]
}

/// Under sequence parallelism a block's all-reduce is a reduce-scatter and
/// an all-gather, the same traffic; under FP8 (Transformer Engine) the
/// all-gather carries 1-byte elements, the reduce-scatter 16-bit ones.
#[test]
fn fp8_sequence_parallel_gathers_one_byte_elements() {
    let forward = |precision: Precision, sequence_parallel: bool| {
        megatron_tp2_forward_s(1.0, |s| {
            s.formats = precision.formats();
            s.sequence_parallel = sequence_parallel;
        })
    };
    // 2 x 100 x 2 = 400 bytes between two GPUs of a node: an all-reduce
    // 2 x 10 us + 2 x 1/2 x 400 / 1e9; a reduce-scatter or an all-gather
    // of B bytes 10 us + 1/2 x B / 1e9.
    let lat = collective::INTRA_NODE_LATENCY_S;
    let ar = 2.0 * lat + 400.0 / 1e9;
    let fp8_sp = (lat + 200.0 / 1e9) + (lat + 100.0 / 1e9);
    for (precision, sp, comm) in [
        (Precision::Bf16, false, ar),
        (Precision::Bf16, true, ar),
        (Precision::Fp8, false, ar),
        (Precision::Fp8, true, fp8_sp),
    ] {
        let f = forward(precision, sp);
        assert!(
            (f - 4.0 * (1.0 + 2.0 * comm)).abs() < 1e-12,
            "{precision:?} sp {sp}: {f}"
        );
    }
}

/// Megatron-LM's `--tp-comm-overlap`: a block's collectives run in chunks
/// beside its matrix products, so a pass exposes only the communication
/// its products (the pass less its attention core) cannot cover.
#[test]
fn tp_comm_overlap_exposes_only_what_the_products_cannot_cover() {
    let forward = |layer_s: f64, overlap: bool| {
        megatron_tp2_forward_s(layer_s, |s| {
            s.formats = Precision::Bf16.formats();
            s.sequence_parallel = true;
            s.tp_comm_overlap = overlap;
        })
    };
    // Two 400-byte collectives a pass, each a reduce-scatter and an
    // all-gather of 10 us + 1/2 x 400 / 1e9 (the test above).
    let lat = collective::INTRA_NODE_LATENCY_S;
    let comm = 2.0 * lat + 400.0 / 1e9;
    let share = 1.0 - attention_core_share(&model());
    // Passes of a second hide every collective.
    assert!((forward(1.0, false) - 4.0 * (1.0 + 2.0 * comm)).abs() < 1e-12);
    assert!((forward(1.0, true) - 4.0).abs() < 1e-12);
    // Passes of a microsecond expose what their products cannot cover.
    let short = 1e-6;
    let exposed = 2.0 * comm - share * short;
    assert!(exposed > 0.0);
    let got = forward(short, true);
    assert!((got - 4.0 * (short + exposed)).abs() < 1e-15, "{got}");
    assert!(got < forward(short, false));
}

/// Two stages of two replicas, two chunks per device: identical
/// replicas are simulated once, every chunk is priced on its layers and
/// the wrap-around cut (device 1 chunk 0 -> device 0 chunk 1) is an
/// inter-node send.
#[test]
fn interleaved_plans_simulate_one_representative_replica() {
    let (m, c) = (model(), cluster());
    let p = fast_slow_profile();
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    let il = TrainingSetup {
        schedule: Schedule::Interleaved { virtual_stages: 2 },
        ..TrainingSetup::default()
    };
    // Megatron-LM's order: virtual stage i on pipeline rank i mod 2.
    let (r0, r1) = (
        vec![vec![d(0, 0)], vec![d(0, 1)]],
        vec![vec![d(1, 0)], vec![d(1, 1)]],
    );
    let mut pl = plan(
        vec![
            (0, 1, r0.clone()),
            (1, 2, r1.clone()),
            (2, 3, r0),
            (3, 4, r1),
        ],
        4,
    );
    pl.setup = il;
    let dm = time_only();
    let t = dm.timeline(&inputs, &pl).unwrap();
    let fwd: Vec<_> = t
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Forward)
        .collect();
    // 2 devices x 2 chunks x 4 micro-batches, one replica.
    assert_eq!(fwd.len(), 16);
    assert!(fwd.iter().all(|e| e.replica == 0 && e.chunk.is_some()));
    all_close(durations(&t, 0, EventKind::Forward), 1.0, 8);
    all_close(durations(&t, 1, EventKind::Backward), 6.0, 8);
    // Two replicas cross every cut at once, sharing the NICs:
    // 30 us + 2 x 400 / 0.5e9, on the wrap-around cut too.
    let send = collective::INTER_NODE_LATENCY_S
        + 800.0 / (1e9 * crate::cost::Calibration::FITTED.inter_node_efficiency);
    let wrap: Vec<f64> = t
        .events
        .iter()
        .filter(|e| e.kind == EventKind::SendForward && e.stage == 1)
        .map(|e| e.end_s - e.start_s)
        .collect();
    all_close(wrap, send, 4);
    // The same plan with one replica per stage runs the same pipeline.
    let mut one = plan(
        vec![
            (0, 1, vec![vec![d(0, 0)]]),
            (1, 2, vec![vec![d(1, 0)]]),
            (2, 3, vec![vec![d(0, 0)]]),
            (3, 4, vec![vec![d(1, 0)]]),
        ],
        4,
    );
    one.setup = il;
    let e2 = dm.evaluate(&inputs, &pl).unwrap();
    let e1 = dm.evaluate(&inputs, &one).unwrap();
    let busy = |e: &Estimate| e.iteration_s - e.breakdown.dp_allreduce_s - e.breakdown.optimizer_s;
    assert!(busy(&e2) > busy(&e1), "sends share NICs with two replicas");
    assert!(e2.iteration_s > 0.0 && e1.iteration_s > 0.0);
}

#[test]
fn scatter_gather_sends_a_slice_and_gathers_it() {
    let (m, c) = (model(), cluster());
    let p = Profile {
        entries: vec![
            entry("fast", 1, 1.0, Some(2.0)),
            entry("slow", 1, 1.0, Some(2.0)),
        ],
        precision: None,
    };
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    let grid = DeviceGrid::new(&c, 2, 1, 2, &Placement::artifact_default(&c));
    let cand = Candidate {
        grid: &grid,
        setup: &TrainingSetup::default(),
        micro_batch: 2,
        num_micro_batches: 4,
    };
    let sg_setup = TrainingSetup {
        pipeline_send: PipelineSend::ScatterGather,
        ..TrainingSetup::default()
    };
    let sg_cand = Candidate {
        grid: &grid,
        setup: &sg_setup,
        micro_batch: 2,
        num_micro_batches: 4,
    };
    let lat = collective::INTER_NODE_LATENCY_S;
    let bw = 1e9 * crate::cost::Calibration::FITTED.inter_node_efficiency;
    // Full sends: each of the 2 ranks sends 400 bytes through one NIC.
    let full = time_only().stage_tables(&inputs, &cand).unwrap();
    assert!((full.cut[0][1] - 2.0 * (lat + 2.0 * 400.0 / bw)).abs() < 1e-15);
    // Scatter/gather: 200 bytes each, then an all-gather of the 400
    // bytes inside the receiving node: 10 us + 1/2 x 400 / 1e9.
    let t = time_only().stage_tables(&inputs, &sg_cand).unwrap();
    let gather = collective::INTRA_NODE_LATENCY_S + 200.0 / 1e9;
    let want = 2.0 * (lat + 2.0 * 200.0 / bw + gather);
    assert!(
        (t.cut[0][1] - want).abs() < 1e-15,
        "{} vs {want}",
        t.cut[0][1]
    );
}

/// The receivers' all-gather of a scatter/gather cut is the slowest of
/// their groups' all-gathers: reading each kind of one-node group once
/// gives what every group does, on nodes of two GPU types and two
/// intra-node links, with a group across nodes among them.
#[test]
fn receivers_gather_is_the_slowest_groups() {
    let m = model();
    let mut c = cluster();
    let node = |gpu: &str, intra: f64| Node {
        gpu_type: gpu.into(),
        gpus: 4,
        intra_bytes_per_s: intra,
        inter_bytes_per_s: 1e9,
        nics: 1,
        gpu_memory_bytes: None,
        price_per_hour: None,
    };
    // Nodes 0-1: fast at 1e9 B/s inside; 2-3: fast at 1e8; 4: slow.
    c.nodes = vec![
        node("fast", 1e9),
        node("fast", 1e9),
        node("fast", 1e8),
        node("fast", 1e8),
        node("slow", 1e9),
    ];
    let p = fast_slow_profile();
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    let setup = TrainingSetup {
        pipeline_send: PipelineSend::ScatterGather,
        ..TrainingSetup::default()
    };
    let dm = time_only();
    let net = dm.network(&c);
    let pair = |n: usize, g: usize| vec![d(n, g), d(n, g + 1)];
    let from = vec![vec![d(4, 0)]];
    let receivers = [
        vec![pair(0, 0), pair(0, 2), pair(1, 0)],
        vec![pair(0, 0), pair(2, 0), pair(1, 2), pair(3, 2)],
        vec![pair(4, 2), pair(1, 0), vec![d(2, 3), d(3, 3)]],
        vec![pair(2, 0)],
    ];
    for to in receivers {
        let curves = dm.transfer_curves(&inputs, &setup, &from, &to).unwrap();
        let gather = curves.gather.expect("tp-2 receivers gather");
        for bytes in [0.0, 1e3, 1e6, 1e9] {
            let slowest = to
                .iter()
                .map(|g| collective::allgather_curve(&net, g).at(bytes))
                .fold(0.0, f64::max);
            assert_eq!(gather.at(bytes), slowest, "{to:?} at {bytes} B");
        }
    }
}

/// A tensor-parallel group across two nodes, measured on one: its blocks
/// pay the difference between its all-reduces and those of the same group
/// on one node, twice forward and twice backward.
#[test]
fn measured_tp_groups_across_nodes_pay_the_network() {
    let (m, c) = (model(), cluster());
    let p = Profile {
        entries: vec![
            entry("fast", 2, 1.0, Some(2.0)),
            entry("slow", 2, 1.0, Some(2.0)),
        ],
        precision: None,
    };
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    let price = |group: Vec<Device>| {
        let pl = plan(vec![(0, 4, vec![group])], 1);
        let t = time_only().timeline(&inputs, &pl).unwrap();
        (
            durations(&t, 0, EventKind::Forward)[0],
            durations(&t, 0, EventKind::Backward)[0],
        )
    };
    assert_eq!(price(vec![d(0, 0), d(0, 1)]), (4.0, 8.0));
    let bytes = 2.0 * 100.0 * 2.0;
    let extra = collective::allreduce_s(&time_only().network(&c), &[d(0, 0), d(1, 0)], bytes)
        - collective::allreduce_s(&time_only().network(&c), &[d(0, 0), d(0, 1)], bytes);
    assert!(extra > 0.0);
    let (f, b) = price(vec![d(0, 0), d(1, 0)]);
    assert!((f - (4.0 + 4.0 * 2.0 * extra)).abs() < 1e-12, "{f}");
    assert!((b - (8.0 + 4.0 * 2.0 * extra)).abs() < 1e-12, "{b}");
}

/// Uneven data parallelism: replicas are separate pipelines until the
/// gradient all-reduce, so a replica of fast GPUs that takes more
/// micro-batches ends when the slow one does, not three times earlier.
#[test]
fn uneven_replicas_run_their_own_micro_batches() {
    let (m, c) = (model(), cluster());
    let p = fast_slow_profile();
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    let run = |per: Vec<usize>| {
        let mut pl = plan(vec![(0, 4, vec![vec![d(0, 0)], vec![d(1, 0)]])], 4);
        pl.num_micro_batches = per.iter().copied().max().unwrap_or(4);
        pl.replica_micro_batches = per;
        time_only().timeline(&inputs, &pl).unwrap()
    };
    let even = run(Vec::new());
    // Writing the even counts out prices the same plan.
    assert_eq!(run(vec![4, 4]), even);
    // When the last backward pass ends: then the same all-reduce and step.
    let computed = |t: &Timeline| {
        t.events
            .iter()
            .filter(|e| e.kind == EventKind::Backward)
            .map(|e| e.end_s)
            .fold(0.0, f64::max)
    };
    // Even: the slow replica runs 4 x 4 layers x (3 + 6) s.
    assert_eq!(computed(&even), 144.0);
    // Six on the fast replica (6 x 12 s), two on the slow one (2 x 36 s).
    let uneven = run(vec![6, 2]);
    assert_eq!(uneven.num_micro_batches, 6);
    assert_eq!(computed(&uneven), 72.0);
    let after = |t: &Timeline| t.iteration_s - computed(t);
    assert!((after(&even) - after(&uneven)).abs() < 1e-12);
    let forwards = |t: &Timeline, r: usize| {
        t.events
            .iter()
            .filter(|e| e.replica == r && e.kind == EventKind::Forward)
            .count()
    };
    assert_eq!((forwards(&uneven, 0), forwards(&uneven, 1)), (6, 2));
}

/// Replicas of one stage at different tp degrees (Sailor's A100s at tp 1
/// beside V100 groups at tp 4): each group is priced at its own degree,
/// holds its own share of the weights, and the gradient reduction through
/// the tp-1 GPU carries its whole gradient, as a plain ring of tp-1
/// replicas does.
#[test]
fn replicas_of_a_stage_may_differ_in_tp() {
    let (m, c) = (model(), cluster());
    let p = Profile {
        entries: vec![
            entry("fast", 2, 1.0, Some(2.0)),
            entry("slow", 1, 3.0, Some(6.0)),
        ],
        precision: None,
    };
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    let mixed = plan(vec![(0, 4, vec![vec![d(0, 0), d(0, 1)], vec![d(1, 0)]])], 2);
    assert_eq!(mixed.stages[0].tp_label(), "2+1");
    assert_eq!(mixed.uniform_tp(), None);
    let t = time_only().timeline(&inputs, &mixed).unwrap();
    let fwd = |r: usize| {
        t.events
            .iter()
            .find(|e| e.replica == r && e.kind == EventKind::Forward)
            .map(|e| e.end_s - e.start_s)
            .unwrap()
    };
    assert_eq!((fwd(0), fwd(1)), (4.0, 12.0));
    // Gradient reduction: two rings of half the gradient, both through
    // node 1's one GPU and NIC, against one ring of the whole gradient.
    let plain = plan(vec![(0, 4, vec![vec![d(0, 0)], vec![d(1, 0)]])], 2);
    let single = fast_slow_profile();
    let tp1 = Inputs {
        profile: &single,
        ..inputs
    };
    let t1 = time_only().timeline(&tp1, &plain).unwrap();
    let (a, b) = (
        durations(&t, 0, EventKind::AllReduce)[0],
        durations(&t1, 0, EventKind::AllReduce)[0],
    );
    assert!(a > 0.0 && (a - b).abs() <= 1e-12 * b, "{a} vs {b}");
    // Memory: the tp-1 GPU holds the whole stage, each tp-2 GPU half.
    let mem = DeviceModel::default()
        .evaluate(&inputs, &mixed)
        .unwrap()
        .memory;
    let w = |dev: Device| mem.iter().find(|x| x.device == dev).unwrap().weights_bytes;
    assert_eq!(w(d(1, 0)), 2.0 * w(d(0, 0)));
    assert_eq!(w(d(0, 1)), w(d(0, 0)));
}

/// Scatter/gather between stages of different degrees still moves one
/// whole activation: a tp-2 stage feeding a tp-1 stage sends its two
/// halves into the one receiving GPU (through node 1's one NIC), as long as
/// a whole copy takes; the reverse, a tp-1 stage feeding a tp-2 one, sends
/// a half to each rank, which then all-gather inside their node.
#[test]
fn scatter_gather_between_degrees_moves_one_whole_activation() {
    let (m, c) = (model(), cluster());
    let p = Profile {
        entries: vec![
            entry("fast", 2, 1.0, Some(2.0)),
            entry("fast", 1, 1.0, Some(2.0)),
            entry("slow", 1, 3.0, Some(6.0)),
            entry("slow", 2, 3.0, Some(6.0)),
        ],
        precision: None,
    };
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    let with = |send: PipelineSend, stages| {
        let mut p = plan(stages, 2);
        p.setup.pipeline_send = send;
        p
    };
    let lat = collective::INTER_NODE_LATENCY_S;
    let bw = 1e9 * crate::cost::Calibration::FITTED.inter_node_efficiency;
    // 100 elements x micro-batch 2 x 2 bytes (bf16).
    let whole = 400.0;
    let two_to_one = vec![
        (0, 2, vec![vec![d(0, 0), d(0, 1)]]),
        (2, 4, vec![vec![d(1, 0)]]),
    ];
    for send in [PipelineSend::Full, PipelineSend::ScatterGather] {
        let t = time_only()
            .timeline(&inputs, &with(send, two_to_one.clone()))
            .unwrap();
        all_close(
            durations(&t, 0, EventKind::SendForward),
            lat + whole / bw,
            2,
        );
    }
    // tp 1 into tp 2 under scatter/gather: a half to each rank through
    // node 0's one NIC (the whole activation leaves it), then each rank
    // all-gathers the other half over node 1's link.
    let one_to_two = vec![
        (0, 2, vec![vec![d(0, 0)]]),
        (2, 4, vec![vec![d(1, 0), d(1, 1)]]),
    ];
    let t = time_only()
        .timeline(&inputs, &with(PipelineSend::ScatterGather, one_to_two))
        .unwrap();
    let gather = collective::INTRA_NODE_LATENCY_S + (whole / 2.0) / 1e9;
    all_close(
        durations(&t, 0, EventKind::SendForward),
        lat + whole / bw + gather,
        2,
    );
}

/// A tp-2 stage feeding a tp-2 stage on another node (one NIC each): whole
/// sends (Megatron Core's, [`Engine::default_pipeline_send`]) put two
/// copies of the activation through the NIC; scatter/gather (DeepSpeed's)
/// one copy in halves, then the receivers' all-gather; sequence
/// parallelism one copy in halves and no gather, since the next block
/// takes its input split over the group and gathers it itself.
#[test]
fn sends_between_tensor_parallel_stages_as_each_engine_makes_them() {
    let (m, c) = (model(), cluster());
    let p = Profile {
        entries: vec![
            entry("fast", 2, 1.0, Some(2.0)),
            entry("slow", 2, 3.0, Some(6.0)),
        ],
        precision: None,
    };
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    let two_to_two = vec![
        (0, 2, vec![vec![d(0, 0), d(0, 1)]]),
        (2, 4, vec![vec![d(1, 0), d(1, 1)]]),
    ];
    let send_s = |send: PipelineSend, sequence_parallel: bool| {
        let mut p = plan(two_to_two.clone(), 2);
        p.setup.pipeline_send = send;
        p.setup.sequence_parallel = sequence_parallel;
        let t = time_only().timeline(&inputs, &p).unwrap();
        durations(&t, 0, EventKind::SendForward)
    };
    let lat = collective::INTER_NODE_LATENCY_S;
    let bw = 1e9 * crate::cost::Calibration::FITTED.inter_node_efficiency;
    // 100 elements x micro-batch 2 x 2 bytes (bf16).
    let whole = 400.0;
    let gather = collective::INTRA_NODE_LATENCY_S + (whole / 2.0) / 1e9;
    all_close(send_s(PipelineSend::Full, false), lat + 2.0 * whole / bw, 2);
    all_close(
        send_s(PipelineSend::ScatterGather, false),
        lat + whole / bw + gather,
        2,
    );
    for send in [PipelineSend::Full, PipelineSend::ScatterGather] {
        all_close(send_s(send, true), lat + whole / bw, 2);
    }
    assert_eq!(Engine::Megatron.default_pipeline_send(), PipelineSend::Full);
    assert_eq!(
        Engine::DeepSpeed.default_pipeline_send(),
        PipelineSend::ScatterGather
    );
}

/// Three orders of [`linked_cluster`]'s 24 nodes: in file order, reversed,
/// and each first-kind node followed by two of the other kind.
fn linked_node_orders() -> [Vec<usize>; 3] {
    [
        (0..24).collect(),
        (0..24).rev().collect(),
        (0..8).flat_map(|i| [i, 8 + 2 * i, 9 + 2 * i]).collect(),
    ]
}

/// 24 nodes of 4 GPUs (96, above the 64 below which nothing is shared):
/// 8 fast, then 16 slow; every fast-slow pair linked at 3 GB/s, and with
/// `odd_link` nodes 12 and 16 at 0.5 GB/s.
fn linked_cluster(odd_link: bool) -> Cluster {
    let node = |gpu: &str| Node {
        gpu_type: gpu.into(),
        gpus: 4,
        intra_bytes_per_s: 100e9,
        inter_bytes_per_s: 10e9,
        nics: 1,
        gpu_memory_bytes: None,
        price_per_hour: None,
    };
    let mut links = Vec::new();
    for a in 0..8 {
        for b in 8..24 {
            links.push(crate::cluster::NodeLink {
                nodes: [a, b],
                bytes_per_s: 3e9,
            });
        }
    }
    if odd_link {
        links.push(crate::cluster::NodeLink {
            nodes: [12, 16],
            bytes_per_s: 0.5e9,
        });
    }
    Cluster {
        name: "linked".into(),
        nodes: (0..24)
            .map(|i| node(if i < 8 { "fast" } else { "slow" }))
            .collect(),
        links,
    }
}

/// Six blocks of 1000 x (i + 1) parameters, 100,000 elements per sample.
fn six_blocks() -> Model {
    let layer = |i: usize| Layer {
        name: format!("b{i}"),
        kind: LayerKind::TransformerBlock,
        params: 1000 * (i as u64 + 1),
        output_elems_per_sample: 100_000,
        forward_flops_per_sample: None,
        tied_to: None,
        stored_activation_elems_per_sample: None,
        replicated_activation_elems_per_sample: None,
        backward_transient_elems_per_sample: None,
        replicated_backward_transient_elems_per_sample: None,
        forward_send_extra_bytes: 0,
    };
    Model {
        name: "m".into(),
        shape: None,
        layers: (0..6).map(layer).collect(),
        resident_bytes_per_device: None,
    }
}

/// On a cluster with pair links, cuts and stages alike up to renaming nodes
/// of one kind (keeping the links among their own nodes and their order)
/// are priced once and shared, and every shared price is the one priced on
/// the cut's own devices; a link that makes a cut unlike the others keeps
/// it apart.
#[test]
fn alike_cuts_on_a_linked_cluster_share_exact_prices() {
    // Nodes 12 and 16 at 0.5 GB/s.
    let c = linked_cluster(true);
    let m = six_blocks();
    let p = Profile {
        entries: vec![
            ProfileEntry {
                forward_s: vec![1.0; 6],
                backward_s: Some(vec![2.0; 6]),
                ..entry("fast", 4, 1.0, None)
            },
            ProfileEntry {
                forward_s: vec![3.0; 6],
                backward_s: Some(vec![6.0; 6]),
                ..entry("slow", 4, 3.0, None)
            },
        ],
        precision: None,
    };
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    // Six stages of one layer, each dp 4 at tp 4, replica r of stage j on
    // node 4 j + r: two fast stages, four slow.
    let stage = |j: usize| {
        let replicas = (0..4)
            .map(|r| (0..4).map(|g| d(4 * j + r, g)).collect())
            .collect();
        (j, j + 1, replicas)
    };
    for send in [PipelineSend::Full, PipelineSend::ScatterGather] {
        let mut pl = plan((0..6).map(stage).collect(), 8);
        pl.setup.pipeline_send = send;
        let model = time_only();
        let ranks = pl.rank_stages();
        let first = crate::placement::first_alike(&c, 5, |j| {
            vec![&ranks[j].replicas, &ranks[j + 1].replicas]
        });
        // Cuts 2 -> 3 and 4 -> 5 are alike (slow to slow, no special
        // link among their nodes); 3 -> 4 crosses the slow link.
        assert_eq!(first, vec![0, 1, 2, 3, 2]);
        let net = model.net_prices(&inputs, &pl);
        let at = |k: &Option<TransferCurves>, layer: usize| {
            model.transfer_at(&inputs, &pl.setup, k.as_ref().unwrap(), (layer, true), 2)
        };
        for cut in 0..5 {
            let (a, b) = (&ranks[cut].replicas, &ranks[cut + 1].replicas);
            let forward = model.transfer_curves(&inputs, &pl.setup, a, b);
            let backward = model.transfer_curves(&inputs, &pl.setup, b, a);
            assert_eq!(at(&net.sends[cut], cut), at(&forward, cut));
            assert_eq!(at(&net.back[cut], cut), at(&backward, cut));
        }
        // Bytes a forward send carries besides the activation (the AMP
        // artifact's attention mask) are sent whole by each rank, forward
        // only.
        let mut masked = m.clone();
        masked.layers[1].forward_send_extra_bytes = 3_000_000;
        let with_mask = Inputs {
            model: &masked,
            ..inputs
        };
        let k = net.sends[1].as_ref().unwrap();
        let bytes =
            |i: &Inputs, forward: bool| model.send_bytes(i, &pl.setup, (1, forward), (4, 4), 2);
        assert_eq!(bytes(&with_mask, true), bytes(&inputs, true) + 3e6);
        assert_eq!(bytes(&with_mask, false), bytes(&inputs, false));
        let t = |i: &Inputs, forward: bool| model.transfer_at(i, &pl.setup, k, (1, forward), 2);
        assert!(t(&with_mask, true) > t(&inputs, true));
        assert_eq!(t(&with_mask, false), t(&inputs, false));
        // The slow link shows: the cut it crosses costs more.
        assert!(at(&net.sends[3], 3) > 1.5 * at(&net.sends[2], 3));
        // Every stage's all-reduce alike to the one priced on its devices.
        let fresh = |j: usize| {
            let rings: Vec<Vec<Device>> = (0..4)
                .map(|t| ranks[j].replicas.iter().map(|rep| rep[t]).collect())
                .collect();
            collective::concurrent_allreduce_curve(&model.network(&c), &rings)
        };
        for (j, curve) in net.allreduce.iter().enumerate() {
            for bytes in [0.0, 1e3, 1e6, 1e9] {
                assert_eq!(curve.at(bytes), fresh(j).at(bytes));
            }
        }
    }
}

/// The layouts of one search share a [`NetMemo`]: a cut or stage priced
/// for one layout is read back for another whose devices are alike up to
/// renaming nodes. Every price read so is the one the layout's own devices
/// give: on a cluster whose pair links follow the node kinds (Sailor's),
/// and on one with a link that does not, over layouts in three node
/// orders, three tp degrees and four depths, both send modes.
#[test]
fn shared_network_prices_equal_each_layouts_own() {
    let m = six_blocks();
    let p = Profile {
        entries: Vec::new(),
        precision: None,
    };
    for odd_link in [false, true] {
        // Every pair filled in, as the searches leave them.
        let given = linked_cluster(odd_link);
        let c = crate::search::with_every_link(&given).unwrap();
        assert_eq!(
            crate::placement::NodeKinds::with_links(&c).links_follow_kinds(),
            !odd_link
        );
        let inputs = Inputs {
            model: &m,
            cluster: &c,
            profile: &p,
        };
        let model = time_only();
        let memo = NetMemo::default();
        let orders = linked_node_orders();
        let mut cuts = 0;
        for order in &orders {
            let devices: Vec<Device> = order
                .iter()
                .flat_map(|&n| (0..4).map(move |g| d(n, g)))
                .collect();
            for tp in [1, 2, 4] {
                for pp in [2, 3, 4, 6] {
                    let dp = 96 / (tp * pp);
                    let bounds = crate::partition::uniform_split(6, pp);
                    let stages: Vec<_> = (0..pp)
                        .map(|j| {
                            let replicas = (0..dp)
                                .map(|r| {
                                    let g = j * dp + r;
                                    devices[g * tp..(g + 1) * tp].to_vec()
                                })
                                .collect();
                            (bounds[j], bounds[j + 1], replicas)
                        })
                        .collect();
                    for send in [PipelineSend::Full, PipelineSend::ScatterGather] {
                        let mut pl = plan(stages.clone(), 8);
                        pl.setup.pipeline_send = send;
                        let shared = model.net_prices_with(&inputs, &pl, Some(&memo));
                        let own = model.net_prices(&inputs, &pl);
                        let at = |k: &Option<TransferCurves>, layer: usize| {
                            k.as_ref()
                                .map(|k| model.transfer_at(&inputs, &pl.setup, k, (layer, true), 2))
                        };
                        for cut in 0..pp - 1 {
                            let layer = bounds[cut + 1] - 1;
                            assert_eq!(at(&shared.sends[cut], layer), at(&own.sends[cut], layer));
                            assert_eq!(at(&shared.back[cut], layer), at(&own.back[cut], layer));
                            cuts += 1;
                        }
                        for (a, b) in shared.allreduce.iter().zip(&own.allreduce) {
                            for bytes in [0.0, 1e3, 1e6, 1e9] {
                                assert_eq!(a.at(bytes), b.at(bytes));
                            }
                        }
                    }
                }
            }
        }
        // Layouts did share: fewer cuts priced than met.
        let priced = memo.cuts.lock().unwrap().len();
        assert!(priced > 0 && priced < cuts / 2, "{priced} of {cuts}");
    }
}

/// The search's grid tables ([`LayoutEstimators::grid_tables`]: the
/// cluster's kinds of node found once, with pair links that follow them)
/// are the model's own tables, grid by grid: on a cluster whose pair links
/// follow the node kinds and on one with a link that does not, over three
/// node orders, every axis order, three tp degrees and four depths.
#[test]
fn search_grid_tables_equal_the_models_own() {
    let m = six_blocks();
    let times = |gpu: &str, tp: usize, f: f64| ProfileEntry {
        forward_s: vec![f; 6],
        backward_s: Some(vec![2.0 * f; 6]),
        ..entry(gpu, tp, f, None)
    };
    let p = Profile {
        entries: [1, 2, 4]
            .into_iter()
            .flat_map(|tp| [times("fast", tp, 1.0), times("slow", tp, 3.0)])
            .collect(),
        precision: None,
    };
    for odd_link in [false, true] {
        let c = crate::search::with_every_link(&linked_cluster(odd_link)).unwrap();
        let inputs = Inputs {
            model: &m,
            cluster: &c,
            profile: &p,
        };
        let model = time_only();
        let shared = model.layout_estimators(&inputs);
        let orders = linked_node_orders();
        let mut cuts = 0;
        for order in &orders {
            for axis_order in crate::placement::AxisOrder::all() {
                let placement = Placement {
                    axis_order,
                    node_order: order.clone(),
                };
                for tp in [1, 2, 4] {
                    for pp in [2, 3, 4, 6] {
                        let grid = DeviceGrid::new(&c, tp, 96 / (tp * pp), pp, &placement);
                        let cand = Candidate {
                            grid: &grid,
                            setup: &TrainingSetup::default(),
                            micro_batch: 2,
                            num_micro_batches: 8,
                        };
                        let mut tables = shared.grid_tables();
                        assert_eq!(
                            tables.stage_tables(&cand).unwrap(),
                            model.stage_tables(&inputs, &cand).unwrap(),
                            "{order:?} {axis_order:?} tp {tp} pp {pp}"
                        );
                        cuts += pp - 1;
                    }
                }
            }
        }
        assert!(cuts > 100, "{cuts}");
    }
}

/// A weight tied across stages (GPT-2's embedding and vocabulary
/// projection) adds one all-reduce of its gradient to both stages: one pair
/// per (replica, tp rank), the pairs sharing their nodes' NICs, as
/// DeepSpeed's pipeline engine runs it; its curve is priced once per layout.
#[test]
fn tied_weights_add_an_allreduce_between_their_stages() {
    let mut m = model();
    m.layers[3].tied_to = Some(0);
    let profile = fast_slow_profile();
    let c = cluster();
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &profile,
    };
    let pl = plan(
        vec![
            (0, 2, vec![vec![d(0, 0)], vec![d(0, 1)]]),
            (2, 4, vec![vec![d(1, 0)], vec![d(1, 1)]]),
        ],
        4,
    );
    let with = time_only();
    let without = DeviceModel::new(DeviceOptions {
        price_memory: false,
        tied_allreduce: false,
        ..Default::default()
    });
    let curves = with.allreduce_curves(&inputs, &pl);
    let tied = TiedCurves::default();
    let on = with.allreduce_times(&inputs, &pl, &curves, &tied);
    let off = without.allreduce_times(&inputs, &pl, &curves, &Default::default());
    let pairs = vec![vec![d(0, 0), d(1, 0)], vec![d(0, 1), d(1, 1)]];
    let bytes = 1000.0 * gradient_bytes(&pl.setup);
    let want = collective::concurrent_allreduce_s(&with.network(&c), &pairs, bytes);
    assert!(want > 0.0);
    for j in 0..2 {
        assert!((on[j] - off[j] - want).abs() <= 1e-12, "stage {j}");
    }
    // The next plan of the layout reads the curve the first one priced.
    assert_eq!(with.allreduce_times(&inputs, &pl, &curves, &tied), on);
    assert_eq!(tied.0.lock().unwrap().len(), 1);
    // fp16 gradients reduced as fp32 (DeepSpeed's `fp32_allreduce`): the
    // data-parallel buckets are cast, the tied gradient is all-reduced as
    // it is (`dist.all_reduce(weight.grad)`), 2 bytes a parameter.
    let mut wide = pl.clone();
    wide.setup.formats = crate::setup::NumberFormats {
        gradient_reduction: Some(crate::setup::NumberFormat::Fp32),
        ..crate::setup::Precision::Fp16.formats()
    };
    assert_eq!(gradient_bytes(&wide.setup), 4.0);
    let curves = with.allreduce_curves(&inputs, &wide);
    let on = with.allreduce_times(&inputs, &wide, &curves, &Default::default());
    let off = without.allreduce_times(&inputs, &wide, &curves, &Default::default());
    let want = collective::concurrent_allreduce_s(&with.network(&c), &pairs, 1000.0 * 2.0);
    for j in 0..2 {
        assert!((on[j] - off[j] - want).abs() <= 1e-12, "stage {j}");
    }
    // Both ends on one stage: nothing crosses between stages.
    let one = plan(vec![(0, 4, vec![vec![d(0, 0)], vec![d(1, 0)]])], 4);
    let curves = with.allreduce_curves(&inputs, &one);
    assert_eq!(
        with.allreduce_times(&inputs, &one, &curves, &Default::default()),
        without.allreduce_times(&inputs, &one, &curves, &Default::default())
    );
}

/// A layout estimator's time without memory, its memory filled in after,
/// is its estimate: on AMP's GPT-2 over 12 V100 + 4 T4 (memory priced),
/// every split of a two- and a four-stage layout at micro-batches that fit
/// and that do not, and a plan of another layout.
#[test]
fn time_then_memory_is_the_estimate() {
    let model = crate::model::builtin::amp_gpt2();
    let cluster = crate::cluster::builtin::het_cluster();
    let profile = crate::profile::uniform_profile(
        model.num_layers(),
        &[("V100-16GB", 1, 0.0024), ("T4", 1, 0.0072)],
    );
    let inputs = Inputs {
        model: &model,
        cluster: &cluster,
        profile: &profile,
    };
    let dm = DeviceModel::default();
    let (mut fitting, mut not) = (0, 0);
    for pp in [2, 4] {
        let grid = DeviceGrid::new(
            &cluster,
            1,
            16 / pp,
            pp,
            &Placement::artifact_default(&cluster),
        );
        let even = crate::partition::uniform_split(model.num_layers(), pp);
        let first = crate::search::plan_from_grid(&grid, &even, 1, 8, &TrainingSetup::default());
        let estimator = dm.layout_estimator(&inputs, &first).unwrap();
        let other = crate::search::plan_from_grid(
            &DeviceGrid::new(
                &cluster,
                2,
                8 / pp,
                pp,
                &Placement::artifact_default(&cluster),
            ),
            &even,
            1,
            8,
            &TrainingSetup::default(),
        );
        for micro_batch in [1, 8, 64] {
            let mut splits = Vec::new();
            crate::refine::for_each_split(model.num_layers(), pp, |b| splits.push(b.to_vec()));
            for b in splits.iter().step_by(7) {
                let mut p = crate::refine::with_boundaries(&first, b);
                p.micro_batch = micro_batch;
                let full = estimator.estimate_if_fits(&p).unwrap();
                let time = estimator.time_if_fits(&p).unwrap();
                assert_eq!(full.is_some(), time.is_some(), "{b:?} mbs {micro_batch}");
                if let (Some(full), Some(time)) = (full, time) {
                    assert!(time.memory.is_empty());
                    assert_eq!(estimator.with_memory(&p, time), full);
                    fitting += 1;
                } else {
                    not += 1;
                }
            }
            let mut o = other.clone();
            o.micro_batch = micro_batch;
            let time = estimator.time_if_fits(&o).unwrap();
            let full = estimator.estimate_if_fits(&o).unwrap();
            assert_eq!(time.map(|t| estimator.with_memory(&o, t)), full);
        }
    }
    assert!(fitting > 20 && not > 20, "{fitting} fit, {not} do not");
}

/// A group's compute costs depend on its nodes alone, position by
/// position (what `on_same_nodes` lets the tables and compute prices
/// reuse): groups on the same nodes, other GPUs, cost the same, on and
/// across nodes, with an odd link, analytic and measured entries, and
/// with recomputation.
#[test]
fn groups_on_the_same_nodes_cost_the_same() {
    let m = six_blocks();
    let c = crate::search::with_every_link(&linked_cluster(true)).unwrap();
    let mut analytic = Vec::new();
    let mut measured = Vec::new();
    for gpu in ["fast", "slow"] {
        for tp in [1, 2, 4] {
            let mut e = entry(gpu, tp, 0.01 / tp as f64, Some(0.02 / tp as f64));
            // Six layers, as the model's.
            e.forward_s = vec![0.01 / tp as f64; 6];
            e.backward_s = Some(vec![0.02 / tp as f64; 6]);
            measured.push(e.clone());
            e.source = Some(crate::profile::ANALYTIC_SOURCE.into());
            analytic.push(e);
        }
    }
    let model = time_only();
    let mut compared = 0;
    for entries in [analytic, measured] {
        let p = Profile {
            entries,
            precision: None,
        };
        let inputs = Inputs {
            model: &m,
            cluster: &c,
            profile: &p,
        };
        for recompute in [Recompute::None, Recompute::Full] {
            let setup = TrainingSetup {
                recompute,
                ..TrainingSetup::default()
            };
            for nodes in [
                vec![3, 3],
                vec![0, 1],
                vec![0, 8],
                vec![12, 16],
                vec![16, 12],
                vec![12, 13, 16, 17],
                vec![12, 12, 16, 16],
            ] {
                let on = |g: usize| -> Vec<Device> {
                    nodes
                        .iter()
                        .enumerate()
                        .map(|(i, &n)| d(n, (g + i) % 4))
                        .collect()
                };
                let base = on(0);
                let mut fresh = Caches::default();
                let want = model
                    .group_costs(&inputs, &setup, (&base, None), 2, (&mut fresh, None))
                    .unwrap()
                    .to_vec();
                for g in 1..4 {
                    let other = on(g);
                    if other
                        .iter()
                        .collect::<std::collections::BTreeSet<_>>()
                        .len()
                        < other.len()
                    {
                        continue;
                    }
                    assert!(on_same_nodes(&base, &other));
                    let mut fresh = Caches::default();
                    let got = model
                        .group_costs(&inputs, &setup, (&other, None), 2, (&mut fresh, None))
                        .unwrap();
                    assert_eq!(got, want.as_slice(), "{nodes:?} gpu offset {g}");
                    compared += 1;
                }
            }
        }
    }
    assert!(compared > 40, "{compared}");
}

#[test]
fn host_staged_receives_cost_their_fp32_buffer_in_the_receiving_pass() {
    let (m, c) = (model(), cluster());
    let p = fast_slow_profile();
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    let mut pl = plan(
        vec![
            (0, 1, vec![vec![d(0, 0)]]),
            (1, 3, vec![vec![d(0, 1)]]),
            (3, 4, vec![vec![d(1, 0)]]),
        ],
        3,
    );
    // Sent in fp16, rebuilt in an fp32 buffer: 100 elements x micro-batch
    // 2 x 4 bytes at 10 s per GB.
    pl.setup.formats = Precision::Fp16.formats();
    pl.setup.pipeline_receive = crate::setup::PipelineReceive::HostStaged;
    let staged = |s_per_gb: f64| {
        DeviceModel::new(DeviceOptions {
            price_memory: false,
            calibration: Calibration {
                host_staging_s_per_gb: s_per_gb,
                ..Calibration::FITTED
            },
            ..Default::default()
        })
    };
    let s = 800.0 * 10.0 / 1e9;
    let t = staged(10.0).timeline(&inputs, &pl).unwrap();
    // The first stage receives no activation, the last no gradient.
    all_close(durations(&t, 0, EventKind::Forward), 1.0, 3);
    all_close(durations(&t, 0, EventKind::Backward), 2.0 + s, 3);
    all_close(durations(&t, 1, EventKind::Forward), 2.0 + s, 3);
    all_close(durations(&t, 1, EventKind::Backward), 4.0 + s, 3);
    all_close(durations(&t, 2, EventKind::Forward), 3.0 + s, 3);
    all_close(durations(&t, 2, EventKind::Backward), 6.0, 3);
    // The breakdown counts it with the sends and still adds up.
    let e = staged(10.0).evaluate(&inputs, &pl).unwrap();
    let b = &e.breakdown;
    assert_breakdown_adds_up(&e);
    let direct = {
        let mut d = pl.clone();
        d.setup.pipeline_receive = crate::setup::PipelineReceive::Direct;
        staged(10.0).evaluate(&inputs, &d).unwrap()
    };
    assert!(b.pipeline_send_s > direct.breakdown.pipeline_send_s);
    assert!(e.iteration_s > direct.iteration_s);
    // At the neutral 0 s per GB, or received directly, nothing changes.
    let neutral = staged(0.0).evaluate(&inputs, &pl).unwrap();
    assert_eq!(neutral.iteration_s, direct.iteration_s);
}

/// A tp group across two nodes whose degree was measured on one node pays
/// what its links cost beyond its first node's: two such groups that
/// differ only in which node comes first (nodes of one GPU type, one with
/// slower NVLink) cost what each costs alone, also when priced one after
/// the other from one cache, and from a shared memo.
#[test]
fn groups_across_nodes_are_cached_by_their_first_node_too() {
    let m = model();
    let mut c = cluster();
    c.nodes = vec![c.nodes[0].clone(), c.nodes[0].clone()];
    c.nodes[0].gpus = 4;
    c.nodes[1].gpus = 4;
    c.nodes[0].intra_bytes_per_s = 100e9;
    c.nodes[1].intra_bytes_per_s = 1e9;
    let p = Profile {
        entries: vec![
            entry("fast", 1, 1.0, Some(2.0)),
            entry("fast", 4, 0.3, Some(0.6)),
        ],
        precision: None,
    };
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    let setup = TrainingSetup::default();
    let model = time_only();
    let a = vec![d(0, 0), d(0, 1), d(1, 0), d(1, 1)];
    let b = vec![d(1, 2), d(1, 3), d(0, 2), d(0, 3)];
    let alone = |g: &[Device]| {
        let mut fresh = Caches::default();
        model
            .group_costs(&inputs, &setup, (g, None), 2, (&mut fresh, None))
            .unwrap()
            .to_vec()
    };
    let (want_a, want_b) = (alone(&a), alone(&b));
    // Measured on node 0's fast links, group a pays less beyond them than
    // group b does beyond node 1's slow ones.
    assert_ne!(want_a, want_b);
    let mut one = Caches::default();
    let memo = GroupMemo::default();
    for (g, want) in [(&a, &want_a), (&b, &want_b), (&a, &want_a)] {
        let got = model
            .group_costs(&inputs, &setup, (g, None), 2, (&mut one, Some(&memo)))
            .unwrap();
        assert_eq!(got, want.as_slice());
        let mut fresh = Caches::default();
        let from_memo = model
            .group_costs(&inputs, &setup, (g, None), 2, (&mut fresh, Some(&memo)))
            .unwrap();
        assert_eq!(from_memo, want.as_slice());
    }
}

/// Tensor-parallel groups of one stage that span the same nodes run each
/// block's all-reduces at the same time through the nodes' NICs: each pays
/// the share the others leave it, and the memo keeps the shared group
/// apart from the same group alone. A plan of such groups prices its
/// tensor-parallel traffic so.
#[test]
fn tensor_parallel_groups_across_nodes_share_the_nics() {
    let (m, c) = (model(), cluster());
    let p = Profile {
        entries: vec![
            entry("fast", 1, 1.0, Some(2.0)),
            entry("slow", 1, 1.0, Some(2.0)),
        ],
        precision: None,
    };
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    let setup = TrainingSetup::default();
    let model = time_only();
    let groups = vec![vec![d(0, 0), d(1, 0)], vec![d(0, 1), d(1, 1)]];
    let memo = GroupMemo::default();
    let price = |among: Among| {
        let mut fresh = Caches::default();
        model
            .group_costs(
                &inputs,
                &setup,
                (&groups[0], among),
                2,
                (&mut fresh, Some(&memo)),
            )
            .unwrap()
            .to_vec()
    };
    let alone = price(None);
    let (rings, _) = spanning_groups(&c, &groups).unwrap();
    let shared = price(Some((&rings, 0)));
    let comm = |c: &[LayerCost]| c.iter().map(|l| l.tp_comm_s).sum::<f64>();
    // Per block two all-reduces forward and two backward of 100 elements x
    // micro-batch 2 x 2 bytes, whose bandwidth term (one byte in two of
    // 2 ranks crossing, 2 x 1/2 x 400 bytes) doubles at half the NIC.
    let bw = 1e9 * crate::cost::Calibration::FITTED.inter_node_efficiency;
    let extra = 4.0 * 4.0 * 400.0 / bw;
    assert!((comm(&shared) - comm(&alone) - extra).abs() < 1e-12);
    assert_eq!(price(None), alone);
    // A plan of both groups against one of the first alone, two
    // micro-batches each.
    let plan_of = |reps: Vec<Vec<Device>>| plan(vec![(0, 4, reps)], 2);
    let across = model.evaluate(&inputs, &plan_of(groups.clone())).unwrap();
    let single = model
        .evaluate(&inputs, &plan_of(vec![groups[0].clone()]))
        .unwrap();
    assert!(
        (across.breakdown.tp_comm_s - single.breakdown.tp_comm_s - 2.0 * extra).abs() < 1e-12,
        "{:?} {:?}",
        across.breakdown,
        single.breakdown
    );
    assert_eq!(
        spanning_groups(&c, &groups).unwrap().1,
        vec![Some(0), Some(1)]
    );
    let inside = vec![vec![d(0, 0), d(0, 1)], vec![d(1, 0), d(1, 1)]];
    assert!(spanning_groups(&c, &inside).is_none());
    assert!(spanning_groups(&c, &groups[..1]).is_none());
}

#[test]
fn deepspeed_zero3_gathers_the_layers_it_keeps_once_a_micro_batch() {
    // DeepSpeed's ZeRO-3 keeps a layer gathered from its forward to its
    // backward when twice the later layers' parameters fall short of its
    // reuse distance (1e9 elements): here the last two layers, of 4e8
    // each. The others are gathered again for their backward.
    let (mut c, mut m) = (cluster(), model());
    c.nodes[0].intra_bytes_per_s = 1e8;
    m.layers[0].params = 1_000_000_000;
    m.layers[2].params = 400_000_000;
    m.layers[3].params = 400_000_000;
    let p = fast_slow_profile();
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    let b = 4;
    let mut pl = plan(vec![(0, 4, vec![vec![d(0, 0)], vec![d(0, 1)]])], b);
    pl.setup = TrainingSetup {
        engine: Some(crate::setup::Engine::DeepSpeed),
        optimizer_sharding: OptimizerSharding::Zero3,
        ..TrainingSetup::default()
    }
    .for_pipeline(1);
    let curve = time_only().allreduce_curves(&inputs, &pl)[0].clone();
    let (w, g) = (pl.setup.formats.weights.bytes(), gradient_bytes(&pl.setup));
    let units: Vec<sharded::UnitTimes> = m
        .layers
        .iter()
        .enumerate()
        .map(|(l, layer)| {
            let params = layer.params as f64;
            sharded::UnitTimes {
                forward_s: 1.0,
                backward_s: 2.0,
                gather_s: curve.at(w * params) / 2.0,
                regather: l < 2,
                reduce_s: curve.at(g * params) / 2.0,
            }
        })
        .collect();
    let want = sharded::overlapped_passes_s(&units, b);
    let e = time_only().evaluate(&inputs, &pl).unwrap();
    assert_breakdown_adds_up(&e);
    let passes = e.iteration_s - e.breakdown.optimizer_s;
    assert!((passes - want).abs() < 1e-9, "{passes} vs {want}");
    // Every layer gathered again would cost more: on these slow links
    // (1e8 B/s) the kept layers' gathers outlast their computation.
    let again: Vec<_> = units
        .iter()
        .map(|u| sharded::UnitTimes {
            regather: true,
            ..*u
        })
        .collect();
    assert!(sharded::overlapped_passes_s(&again, b) > want);
}

#[test]
fn torchtitan_without_a_pipeline_gathers_and_reduces_every_micro_batch() {
    // One stage on node 0's two fast GPUs, one replica each, 1e9 B/s
    // between them; a heavy first layer (its gathers and reduction outlast
    // the passes) and a vocabulary projection last (kept from its forward
    // to its backward, so not gathered again).
    let (c, mut m) = (cluster(), model());
    m.layers[0].params = 1_000_000_000;
    m.layers[3].kind = LayerKind::VocabProjection;
    let p = fast_slow_profile();
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    let b = 4;
    let mut pl = plan(vec![(0, 4, vec![vec![d(0, 0)], vec![d(0, 1)]])], b);
    let curve = time_only().allreduce_curves(&inputs, &pl)[0].clone();
    for sharding in [OptimizerSharding::Zero3, OptimizerSharding::None] {
        pl.setup = TrainingSetup {
            engine: Some(crate::setup::Engine::Torchtitan),
            optimizer_sharding: sharding,
            ..TrainingSetup::default()
        };
        // By hand: 16-bit gathers, fp32 reductions, each half an all-reduce
        // when sharded; an fp32 all-reduce of each layer's gradients
        // without sharding.
        let units: Vec<sharded::UnitTimes> = m
            .layers
            .iter()
            .map(|l| {
                let params = l.params as f64;
                let (gather_s, reduce_s) = if sharding == OptimizerSharding::Zero3 {
                    (curve.at(2.0 * params) / 2.0, curve.at(4.0 * params) / 2.0)
                } else {
                    (0.0, curve.at(4.0 * params))
                };
                sharded::UnitTimes {
                    forward_s: 1.0,
                    backward_s: 2.0,
                    gather_s,
                    regather: l.kind != LayerKind::VocabProjection,
                    reduce_s,
                }
            })
            .collect();
        let want = sharded::overlapped_passes_s(&units, b);
        let e = time_only().evaluate(&inputs, &pl).unwrap();
        assert_breakdown_adds_up(&e);
        let passes = e.iteration_s - e.breakdown.optimizer_s;
        assert!(
            (passes - want).abs() < 1e-9,
            "{sharding:?}: {passes} vs {want}"
        );
        assert!(
            (e.breakdown.dp_allreduce_s - (want - b as f64 * 12.0)).abs() < 1e-9,
            "{sharding:?}: {:?}",
            e.breakdown
        );
        // The network alone: every micro-batch's gathers and reductions
        // one after another.
        let network: f64 = units
            .iter()
            .map(|u| u.gather_s * if u.regather { 2.0 } else { 1.0 } + u.reduce_s)
            .sum();
        assert!(passes >= b as f64 * network, "{passes} < {b} x {network}");
        // Overlapped already: asking for a bucketed overlap changes nothing.
        let mut overlapping = pl.clone();
        overlapping.setup.overlap_grad_reduce = true;
        let o = time_only().evaluate(&inputs, &overlapping).unwrap();
        assert_eq!(o.iteration_s, e.iteration_s);
        let exposed = e.breakdown.dp_allreduce_s;
        if sharding == OptimizerSharding::Zero3 {
            // Sharded, each micro-batch waits for the heavy layer's gathers:
            // more exposed than the same traffic once per iteration, as a
            // pipeline stage pays it.
            let once = time_only().allreduce_times(
                &inputs,
                &pl,
                std::slice::from_ref(&curve),
                &Default::default(),
            )[0];
            assert!(exposed > once, "{exposed} vs {once}");
        } else {
            // Replicated, the heavy layer's all-reduce, issued last, runs
            // behind the next micro-batch's forward: only the last
            // micro-batch's is exposed.
            assert!((exposed - units[0].reduce_s).abs() < 1e-9, "{exposed}");
        }
    }
}

#[test]
fn deepspeed_zero2_reduces_every_micro_batch_on_the_computations_stream() {
    // DeepSpeed's own engine (a one-stage ZeRO-2 plan) all-reduces each
    // micro-step's gradients whole (`use_multi_rank_bucket_allreduce`, its
    // default), without `overlap_comm` on the computation's stream, and
    // all-gathers the updated weights after the step; with `overlap_comm`
    // (`overlap_grad_reduce`) the reductions run beside the backward.
    let (c, m) = (cluster(), model());
    let p = fast_slow_profile();
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    let b = 3;
    let mut pl = plan(vec![(0, 4, vec![vec![d(0, 0)], vec![d(0, 1)]])], b);
    pl.setup = TrainingSetup {
        engine: Some(crate::setup::Engine::DeepSpeed),
        optimizer_sharding: OptimizerSharding::Zero2,
        ..TrainingSetup::default()
    };
    let curve = time_only().allreduce_curves(&inputs, &pl)[0].clone();
    let g = gradient_bytes(&pl.setup);
    let w = pl.setup.formats.weights.bytes();
    let per_layer = curve.at(1000.0 * g);
    let gather = curve.at(4000.0 * w) / 2.0;
    let e = time_only().evaluate(&inputs, &pl).unwrap();
    assert_breakdown_adds_up(&e);
    let want = b as f64 * 4.0 * per_layer + gather;
    assert!(
        (e.breakdown.dp_allreduce_s - want).abs() < 1e-12,
        "{} vs {want}",
        e.breakdown.dp_allreduce_s
    );
    // Beside the backward: only the first layer's, reduced last, and the
    // gather after the step are exposed.
    pl.setup.overlap_grad_reduce = true;
    let o = time_only().evaluate(&inputs, &pl).unwrap();
    assert!(
        (o.breakdown.dp_allreduce_s - (per_layer + gather)).abs() < 1e-12,
        "{:?}",
        o.breakdown
    );
    // The pipeline engine's ZeRO-1 all-reduces once, after the last
    // backward, and all-gathers the updated weights after the step.
    pl.setup.overlap_grad_reduce = false;
    pl.setup.optimizer_sharding = OptimizerSharding::Zero1;
    let once = time_only().evaluate(&inputs, &pl).unwrap();
    let want = curve.at(4000.0 * g) + gather;
    assert!((once.breakdown.dp_allreduce_s - want).abs() < 1e-12);
    // Megatron-LM's distributed optimizer reduce-scatters the gradients
    // and all-gathers the weights, each half an all-reduce of its own
    // format: less than a whole all-reduce of the gradients where they are
    // wider than the weights (fp32 under 16-bit weights).
    pl.setup.engine = Some(crate::setup::Engine::Megatron);
    let megatron = time_only().evaluate(&inputs, &pl).unwrap();
    let g = gradient_bytes(&pl.setup);
    assert!(g > w, "{g} {w}");
    let want = (curve.at(4000.0 * g) + curve.at(4000.0 * w)) / 2.0;
    assert!((megatron.breakdown.dp_allreduce_s - want).abs() < 1e-12);
    assert!(want < curve.at(4000.0 * g));
}

#[test]
fn deepspeeds_bf16_optimizer_all_reduces_bf16_and_gathers_after_its_step() {
    // bf16 without ZeRO: the `BF16_Optimizer` accumulates bf16 gradients
    // (`grad_acc_dtype`, the model's dtype), which the pipeline engine's
    // `_bf16_reduce_grads` all-reduces in `communication_data_type` (bf16
    // unless the config names one), and its step all-gathers the updated
    // bf16 weights over the replicas.
    let (c, m) = (cluster(), model());
    let p = fast_slow_profile();
    let inputs = Inputs {
        model: &m,
        cluster: &c,
        profile: &p,
    };
    let mut pl = plan(vec![(0, 4, vec![vec![d(0, 0)], vec![d(0, 1)]])], 3);
    pl.setup = TrainingSetup {
        engine: Some(crate::setup::Engine::DeepSpeed),
        ..TrainingSetup::default()
    }
    .for_pipeline(1);
    assert!(crate::memory::deepspeed_bf16_optimizer(&pl.setup));
    assert_eq!(gradient_bytes(&pl.setup), 2.0);
    let curve = time_only().allreduce_curves(&inputs, &pl)[0].clone();
    let e = time_only().evaluate(&inputs, &pl).unwrap();
    let want = curve.at(4000.0 * 2.0) * 1.5;
    assert!(
        (e.breakdown.dp_allreduce_s - want).abs() < 1e-12,
        "{} vs {want}",
        e.breakdown.dp_allreduce_s
    );
    // `--fp32-allreduce` (`communication_data_type: fp32`) sends them as
    // they are.
    pl.setup.formats.gradient_reduction = Some(crate::setup::NumberFormat::Fp32);
    assert_eq!(gradient_bytes(&pl.setup), 4.0);
    let wide = time_only().evaluate(&inputs, &pl).unwrap();
    let want = curve.at(4000.0 * 4.0) + curve.at(4000.0 * 2.0) / 2.0;
    assert!((wide.breakdown.dp_allreduce_s - want).abs() < 1e-12);
    // Elsewhere, the all-reduce of the fp32 gradients alone.
    pl.setup.formats.gradient_reduction = None;
    pl.setup.formats.gradients = crate::setup::NumberFormat::Fp32;
    pl.setup.engine = None;
    let plain = time_only().evaluate(&inputs, &pl).unwrap();
    assert!((plain.breakdown.dp_allreduce_s - curve.at(4000.0 * 4.0)).abs() < 1e-12);
}

/// Two pipeline stages, each replicated on both nodes (one GPU a node): the
/// stages' gradient all-reduces cross each node's one NIC together after
/// the barrier, so each takes what it takes on nodes whose two GPUs have a
/// NIC of half the rate each, not what it takes alone. Without the barrier
/// the second stage starts later and they meet for part of the time.
#[test]
fn stages_reducing_through_one_nic_share_it() {
    // Gradients of seconds at 1 GB/s, longer than the last backward that
    // parts the stages' starts.
    let mut m = model();
    for l in &mut m.layers {
        l.params = 1_000_000_000;
    }
    let p = Profile {
        entries: vec![
            entry("fast", 1, 1.0, Some(2.0)),
            entry("slow", 1, 1.0, Some(2.0)),
        ],
        precision: None,
    };
    let barrier = TrainingSetup {
        grad_reduce_barrier: true,
        ..TrainingSetup::default()
    };
    let stages = |setup: TrainingSetup| Plan {
        setup,
        ..plan(
            vec![
                (0, 2, vec![vec![d(0, 0)], vec![d(1, 0)]]),
                (2, 4, vec![vec![d(0, 1)], vec![d(1, 1)]]),
            ],
            2,
        )
    };
    let reductions = |c: &Cluster, setup: TrainingSetup| {
        let inputs = Inputs {
            model: &m,
            cluster: c,
            profile: &p,
        };
        let t = time_only().timeline(&inputs, &stages(setup)).unwrap();
        [0, 1].map(|j| durations(&t, j, EventKind::AllReduce)[0])
    };
    let one_nic = cluster();
    let mut own_nics = cluster();
    for n in &mut own_nics.nodes {
        n.nics = 2;
    }
    let shared = reductions(&one_nic, barrier);
    let halves = reductions(&own_nics, barrier);
    for j in 0..2 {
        assert!(
            (shared[j] - halves[j]).abs() <= 1e-12 * halves[j],
            "{shared:?} {halves:?}"
        );
    }
    // Alone, a stage's ring has the whole NIC: here the other stage's
    // replicas are both on node 0, its ring inside the node.
    let mut three = cluster();
    for n in &mut three.nodes {
        n.gpus = 3;
    }
    let single = Plan {
        setup: barrier,
        ..plan(
            vec![
                (0, 2, vec![vec![d(0, 0)], vec![d(1, 0)]]),
                (2, 4, vec![vec![d(0, 1)], vec![d(0, 2)]]),
            ],
            2,
        )
    };
    let inputs = Inputs {
        model: &m,
        cluster: &three,
        profile: &p,
    };
    let t = time_only().timeline(&inputs, &single).unwrap();
    let alone = durations(&t, 0, EventKind::AllReduce)[0];
    assert!(shared[0] > 1.9 * alone, "{shared:?} vs {alone}");
    // Without the barrier the last stage's all-reduce starts first and
    // runs alone until the first stage's starts.
    let staggered = reductions(&one_nic, TrainingSetup::default());
    for j in 0..2 {
        assert!(
            staggered[j] > alone && staggered[j] < shared[j],
            "{staggered:?} between {alone} and {shared:?}"
        );
    }
}
