//! Snapshots of every engine's export for a homogeneous and an uneven plan,
//! and the refusals.

mod common;

use amp_core::placement::{DeviceGrid, Placement};
use amp_core::search::plan_from_grid;
use amp_core::setup::{OptimizerSharding, Precision, Recompute};
use amp_export::{engines_for, export, Engine, ExportError, ExportOptions};

/// The plan as it must be priced to run on `engine`: torchtitan trains in
/// bf16 (not the AMP plans' fp16). (torchtitan 0.3.0 replicates beside tp
/// and pp without FSDP, so the sharding stays the plan's.)
fn for_engine(plan: &amp_core::plan::Plan, engine: Engine) -> amp_core::plan::Plan {
    let mut plan = plan.clone();
    if engine == Engine::Torchtitan {
        plan.setup.formats = Precision::Bf16.formats();
    }
    plan
}

fn snapshot_all(
    case: &str,
    plan: &amp_core::plan::Plan,
    model: &amp_core::model::Model,
    cluster: &amp_core::cluster::Cluster,
    opts: &ExportOptions,
    engines: &[Engine],
) {
    for &engine in engines {
        let plan = for_engine(plan, engine);
        let files = export(&plan, model, cluster, engine, opts)
            .unwrap_or_else(|e| panic!("{case} on {engine}: {e}"));
        assert!(!files.is_empty());
        for f in files {
            insta::assert_snapshot!(
                format!("{case}__{engine}__{}", f.path.replace('.', "_")),
                f.contents
            );
        }
    }
}

#[test]
fn homogeneous_plan_exports() {
    let (p, m, c) = common::homogeneous();
    // torchtitan builds only the model flavors it ships; AMP's GPT-2 is none.
    snapshot_all(
        "homogeneous",
        &p,
        &m,
        &c,
        &ExportOptions::default(),
        &[Engine::Megatron, Engine::DeepSpeed],
    );
    // The AMP runs' fp16 and Megatron-LM loss are not torchtitan's either;
    // in a setup torchtitan runs the model is still refused.
    let e = export(&p, &m, &c, Engine::Torchtitan, &ExportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not fp16"), "{e}");
    let mut plain = p.clone();
    plain.setup = amp_core::setup::TrainingSetup::default();
    let e = export(
        &plain,
        &m,
        &c,
        Engine::Torchtitan,
        &ExportOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("gives sizes but not its architecture"), "{e}");
}

#[test]
fn uneven_plan_exports() {
    let (mut p, m, c) = common::uneven();
    let opts = ExportOptions {
        hosts: vec![
            "v100-a".into(),
            "v100-b".into(),
            "v100-c".into(),
            "t4-a".into(),
        ],
        ..ExportOptions::default()
    };
    p.setup.recompute = Recompute::Full;
    p.setup.optimizer_sharding = OptimizerSharding::Zero1;
    snapshot_all(
        "uneven",
        &p,
        &m,
        &c,
        &opts,
        &[Engine::Megatron, Engine::DeepSpeed],
    );
}

#[test]
fn llama3_8b_plan_exports() {
    let (p, m, c) = common::llama3_8b();
    let mut p = p;
    p.setup.formats = Precision::Bf16.formats();
    let opts = ExportOptions::default();
    snapshot_all("llama3_8b", &p, &m, &c, &opts, &Engine::ALL);
    let files = export(&p, &m, &c, Engine::Megatron, &opts).unwrap();
    let a = megatron_args(&files);
    for line in [
        "--swiglu",
        "--group-query-attention",
        "--num-query-groups 8",
        "--ffn-hidden-size 14336",
        "--normalization RMSNorm",
        "--position-embedding-type rope",
        "--rotary-base 500000",
        "--untie-embeddings-and-output-weights",
        "--disable-bias-linear",
        "--bf16",
    ] {
        assert!(a.contains(line), "missing {line} in\n{a}");
    }
    assert!(!a.contains("--add-qkv-bias"), "{a}");
    let launch = &files
        .iter()
        .find(|f| f.path == "launch.sh")
        .unwrap()
        .contents;
    assert!(
        launch.contains("export CUDA_DEVICE_MAX_CONNECTIONS=1"),
        "{launch}"
    );
    assert!(
        launch.contains("\"$MEGATRON_LM\"/pretrain_gpt.py"),
        "{launch}"
    );
}

/// DeepSpeed's files say which blocks amp priced: an engine's fused ones by
/// default, Hugging Face's eager ones when the plan says so.
#[test]
fn deepspeed_files_name_the_blocks_amp_priced() {
    let (p, m, c) = common::llama3_8b();
    let mut p = p;
    p.setup.formats = Precision::Bf16.formats();
    let py = |plan: &amp_core::plan::Plan| {
        let files = export(plan, &m, &c, Engine::DeepSpeed, &ExportOptions::default()).unwrap();
        files
            .into_iter()
            .find(|f| f.path == "amp_pipeline.py")
            .unwrap()
            .contents
    };
    let fused = py(&p);
    assert!(
        fused.contains("blocks with fused kernels") && fused.contains("--block-kernels eager"),
        "{fused}"
    );
    p.setup.block_kernels = Some(amp_core::setup::BlockKernels::Eager);
    let eager = py(&p);
    assert!(
        eager.contains("priced for Hugging Face's eager blocks")
            && !eager.contains("fused kernels,"),
        "{eager}"
    );
}

#[test]
fn qwen_gets_qkv_bias_on_megatron_and_is_refused_by_torchtitan() {
    let (p, _, c) = common::llama3_8b();
    let m = amp_catalog::zoo_model("qwen2.5-7b", Some(4096)).unwrap();
    let mut p = p;
    p.stages[0].end_layer = 15;
    p.stages[1].first_layer = 15;
    p.stages[1].end_layer = m.layers.len();
    let files = export(&p, &m, &c, Engine::Megatron, &ExportOptions::default()).unwrap();
    let a = megatron_args(&files);
    for line in [
        "--disable-bias-linear",
        "--add-qkv-bias",
        "--num-query-groups 4",
        "--norm-epsilon 1e-6",
        "--rotary-base 1000000",
    ] {
        assert!(a.contains(line), "missing {line} in\n{a}");
    }
    let e = export(&p, &m, &c, Engine::Torchtitan, &ExportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("qwen2 family") && e.contains("llama3 8B, 70B, 405B"),
        "{e}"
    );
}

#[test]
fn qwen3_gets_query_and_key_norms_and_its_head_width_on_megatron() {
    // Qwen3-32B: 64 heads of 128 on a hidden size of 5120, a norm on each
    // head's query and key (megatron/core/transformer/transformer_config.py
    // `qk_layernorm`), no biases.
    let (p, _, c) = common::llama3_8b();
    let m = amp_catalog::zoo_model("qwen3-32b", Some(4096)).unwrap();
    let mut p = p;
    p.stages[0].end_layer = 33;
    p.stages[1].first_layer = 33;
    p.stages[1].end_layer = m.layers.len();
    let files = export(&p, &m, &c, Engine::Megatron, &ExportOptions::default()).unwrap();
    let a = megatron_args(&files);
    for line in [
        "--qk-layernorm\n",
        "--kv-channels 128\n",
        "--num-attention-heads 64\n",
        "--num-query-groups 8\n",
        "--disable-bias-linear\n",
        "--normalization RMSNorm\n",
    ] {
        assert!(a.contains(line), "missing {line} in\n{a}");
    }
    assert!(!a.contains("--add-qkv-bias"), "{a}");
    // Llama has no such norm.
    let (p, m, c) = common::llama3_8b();
    let files = export(&p, &m, &c, Engine::Megatron, &ExportOptions::default()).unwrap();
    assert!(!megatron_args(&files).contains("--qk-layernorm"));
}

#[test]
fn interleaving_without_a_pipeline_is_refused() {
    let (p, m, c) = common::llama3_8b();
    let mut one = p.clone();
    one.stages.truncate(1);
    one.stages[0].end_layer = m.layers.len();
    // Two replicas of the whole model on the 16 GPUs' first two: dp 2.
    one.setup.schedule = amp_core::schedule::Schedule::Interleaved { virtual_stages: 2 };
    let e = export(&one, &m, &c, Engine::Megatron, &ExportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("pp >= 2"), "{e}");
}

fn megatron_args(files: &[amp_export::ExportFile]) -> &str {
    &files.iter().find(|f| f.path == "args.sh").unwrap().contents
}

#[test]
fn homogeneous_megatron_has_the_plan_degrees_and_no_uneven_flags() {
    let (p, m, c) = common::homogeneous();
    let files = export(&p, &m, &c, Engine::Megatron, &ExportOptions::default()).unwrap();
    let a = megatron_args(&files);
    for line in [
        "--tensor-model-parallel-size 2",
        "--pipeline-model-parallel-size 4",
        "--micro-batch-size 2",
        "--global-batch-size 16",
        "--num-layers 24",
        "--hidden-size 1024",
        "--num-attention-heads 16",
        "--seq-length 1024",
        "--max-position-embeddings 1024",
    ] {
        assert!(a.contains(line), "missing {line} in\n{a}");
    }
    assert!(!a.contains("pipeline-num-layers"), "{a}");
    assert!(!a.contains("--use-distributed-optimizer"));
    let launch = &files
        .iter()
        .find(|f| f.path == "launch.sh")
        .unwrap()
        .contents;
    assert_eq!(launch.matches("torchrun --nnodes 4").count(), 4);
    assert!(launch.contains("CUDA_VISIBLE_DEVICES=0,1,2,3 torchrun --nnodes 4 --node_rank 3 --nproc_per_node 4 --master_addr node0"));
}

/// A plan priced with its gradient reduction overlapping the last backward
/// launches so: Megatron-LM reduces after the backward unless told
/// otherwise (`--overlap-grad-reduce`, off by default in its arguments.py).
#[test]
fn megatron_overlaps_the_gradient_reduction_the_plan_was_priced_with() {
    let (mut p, m, c) = common::homogeneous();
    let files = export(&p, &m, &c, Engine::Megatron, &ExportOptions::default()).unwrap();
    assert!(!megatron_args(&files).contains("--overlap-grad-reduce"));
    p.setup.overlap_grad_reduce = true;
    let files = export(&p, &m, &c, Engine::Megatron, &ExportOptions::default()).unwrap();
    assert!(
        megatron_args(&files).contains("--overlap-grad-reduce"),
        "{}",
        megatron_args(&files)
    );
}

/// Megatron-LM's tensor-parallel overlap and bf16 gradients, as priced;
/// at tp 1 no overlap flag (Megatron-LM turns sequence parallelism off
/// there and would then assert that the overlap needs it).
#[test]
fn megatron_writes_the_tp_overlap_and_bf16_gradients_it_was_priced_with() {
    let (mut p, m, c) = common::homogeneous();
    p.setup = p.setup.on_engine(Engine::Megatron);
    p.setup.formats = amp_core::setup::Precision::Bf16.formats();
    p.setup.sequence_parallel = true;
    let args = |p: &amp_core::Plan| {
        let files = export(p, &m, &c, Engine::Megatron, &ExportOptions::default()).unwrap();
        megatron_args(&files).to_string()
    };
    let plain = args(&p);
    assert!(!plain.contains("--tp-comm-overlap") && !plain.contains("--grad-reduce-in-bf16"));
    p.setup.tp_comm_overlap = true;
    p.setup.formats.gradients = amp_core::setup::NumberFormat::Bf16;
    let both = args(&p);
    assert!(both.contains("--tp-comm-overlap"), "{both}");
    assert!(both.contains("--grad-reduce-in-bf16"), "{both}");
    // The same plan at tp 1: every replica's group down to one GPU.
    for stage in &mut p.stages {
        let groups: Vec<Vec<_>> = stage
            .replicas
            .iter()
            .flat_map(|g| g.iter().map(|d| vec![*d]))
            .collect();
        stage.replicas = groups;
    }
    p.num_micro_batches /= 2;
    let tp1 = args(&p);
    assert!(tp1.contains("--tensor-model-parallel-size 1"), "{tp1}");
    assert!(!tp1.contains("--tp-comm-overlap"), "{tp1}");
}

#[test]
fn uneven_split_uses_first_and_last_stage_flags_and_t4_node_first() {
    let (p, m, c) = common::uneven();
    let files = export(&p, &m, &c, Engine::Megatron, &ExportOptions::default()).unwrap();
    let a = megatron_args(&files);
    assert!(a.contains("--decoder-first-pipeline-num-layers 5"), "{a}");
    assert!(a.contains("--decoder-last-pipeline-num-layers 5"), "{a}");
    let hostfile = &files
        .iter()
        .find(|f| f.path == "hostfile")
        .unwrap()
        .contents;
    let hosts: Vec<&str> = hostfile.lines().filter(|l| !l.starts_with('#')).collect();
    // The T4 node (cluster node 3) runs stage 0, so it is node rank 0.
    assert_eq!(
        hosts,
        vec![
            "node3 slots=4",
            "node0 slots=4",
            "node1 slots=4",
            "node2 slots=4"
        ]
    );
}

#[test]
fn uneven_middle_uses_the_layout_or_is_refused_with_alternatives() {
    let (p, m, c) = common::uneven_middle();
    let files = export(&p, &m, &c, Engine::Megatron, &ExportOptions::default()).unwrap();
    assert!(megatron_args(&files).contains("--pipeline-model-parallel-layout 'Et*5|t*6|t*8|t*5L'"));
    let no_layout = ExportOptions {
        megatron_layout: false,
        ..ExportOptions::default()
    };
    let e = export(&p, &m, &c, Engine::Megatron, &no_layout).unwrap_err();
    match &e {
        ExportError::Unsupported {
            engine,
            reason,
            runnable_by,
        } => {
            assert_eq!(*engine, Engine::Megatron);
            assert!(reason.contains("5/6/8/5"), "{reason}");
            assert_eq!(runnable_by, &vec![Engine::DeepSpeed]);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string().contains("engines that can run it: deepspeed"),
        "{e}"
    );
}

#[test]
fn per_stage_gpu_types_with_their_own_tp_are_refused_for_megatron() {
    // Stage 0 on the T4 node at tp 2, stage 1 on a V100 node at tp 1: the
    // per-GPU-type plan stock Megatron-LM cannot express.
    let (p, m, c) = common::mixed_tp();
    p.validate(&m, &c).unwrap();
    let gpu = |s: usize| &c.nodes[p.stages[s].replicas[0][0].node].gpu_type;
    assert_ne!(gpu(0), gpu(1));
    let e = export(&p, &m, &c, Engine::Megatron, &ExportOptions::default()).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("megatron cannot run this plan"), "{text}");
    assert!(text.contains("stage 0: tp 2, stage 1: tp 1"), "{text}");
    assert!(
        text.contains("one tensor-parallel degree for every pipeline stage"),
        "{text}"
    );
    let ExportError::Unsupported { runnable_by, .. } = e else {
        panic!()
    };
    assert!(runnable_by.is_empty());
    assert!(engines_for(&p, &m, &c, &ExportOptions::default()).is_empty());
}

#[test]
fn uneven_replicas_and_mixed_tp_replicas_are_refused_by_every_engine() {
    let (p, m, c) = common::homogeneous();
    let mut uneven = p.clone();
    uneven.num_micro_batches += 1;
    uneven.replica_micro_batches = (0..p.dp())
        .map(|r| p.num_micro_batches + usize::from(r == 0))
        .collect();
    // In a setup every engine runs (the AMP runs' fp16 and Megatron-LM
    // loss are not torchtitan's).
    uneven.setup = amp_core::setup::TrainingSetup::default();
    uneven.validate(&m, &c).unwrap();
    for engine in [Engine::Megatron, Engine::DeepSpeed, Engine::Torchtitan] {
        let e = export(&uneven, &m, &c, engine, &ExportOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("different numbers of micro-batches") && e.contains("same share"),
            "{e}"
        );
        // Each share once, with its count of replicas.
        let (more, rest) = (p.num_micro_batches + 1, p.num_micro_batches);
        assert_eq!(p.dp(), 2);
        let shares = format!("(1 replica runs {more}, 1 runs {rest})");
        assert!(e.contains(&shares), "{e}");
    }
    assert!(engines_for(&uneven, &m, &c, &ExportOptions::default()).is_empty());
}

#[test]
fn unrealisable_placement_is_refused() {
    use amp_core::placement::{Axis, AxisOrder, DeviceGrid, Placement};
    let (_, m, c) = common::homogeneous();
    // pp fastest along each node's GPUs: a node holds one GPU of every stage.
    let pl = Placement {
        axis_order: AxisOrder([Axis::Tp, Axis::Dp, Axis::Pp]),
        node_order: vec![0, 1, 2, 3],
    };
    let g = DeviceGrid::new(&c, 2, 2, 4, &pl);
    let p = amp_core::search::plan_from_grid(&g, &[0, 8, 14, 20, 30], 2, 4, &Default::default());
    // (torchtitan refuses AMP's GPT-2 before looking at the placement.)
    for engine in [Engine::Megatron, Engine::DeepSpeed] {
        let e = export(&p, &m, &c, engine, &ExportOptions::default()).unwrap_err();
        assert!(
            e.to_string().contains("contiguous block of ranks"),
            "{engine}: {e}"
        );
    }
}

#[test]
fn dp_outermost_placement_uses_megatrons_tp_pp_dp_mapping() {
    use amp_core::placement::{Axis, AxisOrder, DeviceGrid, Placement};
    let (_, m, c) = common::homogeneous();
    let pl = Placement {
        axis_order: AxisOrder([Axis::Dp, Axis::Pp, Axis::Tp]),
        node_order: vec![0, 1, 2, 3],
    };
    let g = DeviceGrid::new(&c, 1, 4, 4, &pl);
    let p = amp_core::search::plan_from_grid(&g, &[0, 8, 14, 20, 30], 1, 8, &Default::default());
    let files = export(&p, &m, &c, Engine::Megatron, &ExportOptions::default()).unwrap();
    assert!(megatron_args(&files).contains("--use-tp-pp-dp-mapping"));
    // DeepSpeed and torchtitan have no such order.
    let e = export(&p, &m, &c, Engine::DeepSpeed, &ExportOptions::default()).unwrap_err();
    assert!(
        e.to_string().contains("engines that can run it: megatron"),
        "{e}"
    );
}

#[test]
fn deepspeed_parts_are_the_plan_boundaries_and_batches_add_up() {
    let (p, m, c) = common::uneven();
    let files = export(&p, &m, &c, Engine::DeepSpeed, &ExportOptions::default()).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(
        &files
            .iter()
            .find(|f| f.path == "ds_config.json")
            .unwrap()
            .contents,
    )
    .unwrap();
    assert_eq!(cfg["train_batch_size"], 16);
    assert_eq!(cfg["train_micro_batch_size_per_gpu"], 1);
    assert_eq!(cfg["gradient_accumulation_steps"], 8);
    assert_eq!(cfg["fp16"]["enabled"], true);
    assert_eq!(cfg["zero_optimization"]["stage"], 0);
    let py = &files
        .iter()
        .find(|f| f.path == "amp_pipeline.py")
        .unwrap()
        .contents;
    assert!(py.contains("PARTS = [0, 7, 14, 21, 30]"), "{py}");
}

#[test]
fn deepspeed_runs_non_gpt_models_that_megatron_refuses() {
    use amp_core::placement::{DeviceGrid, Placement};
    let c = amp_core::cluster::builtin::het_model();
    let m = amp_core::model::builtin::amp_transgan();
    let g = DeviceGrid::new(&c, 1, 4, 4, &Placement::artifact_default(&c));
    let p = amp_core::search::plan_from_grid(&g, &[0, 9, 20, 45, 56], 2, 8, &Default::default());
    assert!(export(&p, &m, &c, Engine::DeepSpeed, &ExportOptions::default()).is_ok());
    let e = export(&p, &m, &c, Engine::Megatron, &ExportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("no transformer shape"), "{e}");
    assert!(
        e.to_string().contains("engines that can run it: deepspeed"),
        "{e}"
    );
}

#[test]
fn torchtitan_stage_modules_cover_every_block_once() {
    let (p, m, c) = common::llama3_8b();
    // Blocks 5/6/8/13 over four stages of tp 2, dp 2.
    let g = amp_core::placement::DeviceGrid::new(
        &c,
        2,
        2,
        4,
        &amp_core::placement::Placement::artifact_default(&c),
    );
    let p4 = amp_core::search::plan_from_grid(&g, &[0, 6, 12, 20, 35], 1, 8, &Default::default());
    drop(p);
    let files = export(&p4, &m, &c, Engine::Torchtitan, &ExportOptions::default()).unwrap();
    let py = &files
        .iter()
        .find(|f| f.path == "amp_torchtitan.py")
        .unwrap()
        .contents;
    let parts: Vec<&str> = py
        .lines()
        .filter(|l| l.trim_start().starts_with("[\"") && l.trim_end().ends_with("],"))
        .collect();
    assert_eq!(parts.len(), 4, "{py}");
    let blocks: Vec<usize> = parts
        .iter()
        .map(|l| l.matches("\"layers.").count())
        .collect();
    assert_eq!(blocks, vec![5, 6, 8, 13]);
    for b in 0..32 {
        let n: usize = parts
            .iter()
            .map(|l| l.matches(&format!("\"layers.{b}\"")).count())
            .sum();
        assert_eq!(n, 1, "block {b}");
    }
    assert!(parts[0].contains("\"tok_embeddings\""));
    assert!(
        parts[3].ends_with("\"norm\", \"lm_head\"],"),
        "{}",
        parts[3]
    );
    for line in [
        "t.local_batch_size = 8",
        "p.pipeline_parallel_microbatch_size = 1",
        "t.global_batch_size = 16",
        "p.data_parallel_replicate_degree = 2",
        "p.data_parallel_shard_degree = 1",
        "config = llama3_8b()",
    ] {
        assert!(py.contains(line), "missing {line} in\n{py}");
    }
}

#[test]
fn torchtitan_without_a_pipeline_keeps_the_micro_batches_as_accumulation() {
    let (_, m, c) = common::llama3_8b();
    let g = amp_core::placement::DeviceGrid::new(
        &c,
        4,
        4,
        1,
        &amp_core::placement::Placement::artifact_default(&c),
    );
    let p = amp_core::search::plan_from_grid(&g, &[0, 35], 2, 8, &Default::default());
    let files = export(&p, &m, &c, Engine::Torchtitan, &ExportOptions::default()).unwrap();
    let py = &files[0].contents;
    assert!(py.contains("t.local_batch_size = 2\n"), "{py}");
    assert!(py.contains("t.global_batch_size = 64\n"), "{py}");
    assert!(!py.contains("pipeline_parallel_microbatch_size"), "{py}");
    // torchtitan's CUDA graph is turned off, as amp priced the plan, and
    // the file says what turning it back on changes.
    assert!(py.contains("    t.disable_cuda_graphs = True\n"), "{py}");
    assert!(py.contains("delete this line to use it"), "{py}");
    assert!(py.contains("runs faster than priced"), "{py}");
}

#[test]
fn torchtitan_builds_qwen3_from_its_own_flavors() {
    let c = amp_catalog::parse_cluster("1x8xH100").unwrap();
    let grid = |tp, dp, pp| {
        amp_core::placement::DeviceGrid::new(
            &c,
            tp,
            dp,
            pp,
            &amp_core::placement::Placement::artifact_default(&c),
        )
    };
    let py = |p: &amp_core::plan::Plan, m: &amp_core::model::Model| {
        export(p, m, &c, Engine::Torchtitan, &ExportOptions::default())
            .map(|f| f[0].contents.clone())
            .map_err(|e| e.to_string())
    };
    // 32B has a recipe of its own (torchtitan/models/qwen3/config_registry.py).
    let m = amp_catalog::zoo_model("qwen3-32b", Some(4096)).unwrap();
    let p =
        amp_core::search::plan_from_grid(&grid(4, 1, 2), &[0, 33, 67], 1, 4, &Default::default());
    let text = py(&p, &m).unwrap();
    assert!(
        text.contains("from torchtitan.models.qwen3.config_registry import qwen3_32b\n"),
        "{text}"
    );
    assert!(
        text.contains("    config = qwen3_32b()\n") && !text.contains("import model_registry"),
        "{text}"
    );
    // 8B has none: the 14B's recipe with the 8B model.
    let m = amp_catalog::zoo_model("qwen3-8b", Some(4096)).unwrap();
    let p =
        amp_core::search::plan_from_grid(&grid(2, 2, 2), &[0, 19, 39], 1, 4, &Default::default());
    let text = py(&p, &m).unwrap();
    for line in [
        "from torchtitan.models.qwen3 import model_registry\n",
        "    config = qwen3_14b()\n",
        "    config.model_spec = model_registry(\"8B\")\n",
        "    p.tensor_parallel_degree = 2\n",
        "    p.enable_sequence_parallel = False  # as priced\n",
        "    p.pipeline_parallel_degree = 2\n",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    // The loss as priced: the recipe's chunked loss under torchtitan's
    // setup (nothing written), PyTorch's over the whole sequence for a plan
    // priced so (as one priced without an engine is), and never
    // Megatron-LM's.
    let mut titan = p.clone();
    titan.setup.engine = Some(amp_core::setup::Engine::Torchtitan);
    let text = py(&titan, &m).unwrap();
    assert!(!text.contains("config.loss"), "{text}");
    let mut whole = titan.clone();
    whole.setup.cross_entropy = Some(amp_core::setup::CrossEntropy::Pytorch);
    let text = py(&whole, &m).unwrap();
    assert!(
        text.contains("    config.loss = config.loss.loss_fn\n"),
        "{text}"
    );
    let mut megatron = titan.clone();
    megatron.setup.cross_entropy = Some(amp_core::setup::CrossEntropy::Megatron);
    let e = py(&megatron, &m).unwrap_err();
    assert!(e.contains("vocabulary-parallel cross entropy"), "{e}");
    // Sequence parallelism as priced: on only when the plan's setup says so.
    let mut sp = p.clone();
    sp.setup.sequence_parallel = true;
    let text = py(&sp, &m).unwrap();
    assert!(
        text.contains("    p.enable_sequence_parallel = True  # as priced\n"),
        "{text}"
    );
    // Compiled as priced: the blocks, not the loss (priced uncompiled);
    // nothing written when the plan runs eager, torchtitan's default.
    assert!(!text.contains("config.compile"), "{text}");
    let mut compiled = titan.clone();
    compiled.setup.compile = true;
    let text = py(&compiled, &m).unwrap();
    for line in [
        "    config.compile.enable = True\n",
        "    config.compile.components = [\"model\"]\n",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    // Without its query and key norms the same sizes are no torchtitan model.
    let mut plain = amp_catalog::zoo::zoo_arch("qwen3-8b").unwrap();
    plain.qk_norm = false;
    let e = py(&p, &plain.build(Some(4096)).unwrap()).unwrap_err();
    assert!(
        e.contains("qwen3 family") && e.contains("qwen3 0.6B"),
        "{e}"
    );
    // A tied flavor (Qwen3-1.7B): torchtitan refuses weight tying with a
    // pipeline, so amp does; without one it exports.
    let mut small = amp_catalog::zoo::zoo_arch("qwen3-8b").unwrap();
    (
        small.hidden,
        small.layers,
        small.heads,
        small.ffn,
        small.tied,
    ) = (2048, 28, 16, 6144, true);
    let small = small.build(Some(4096)).unwrap();
    let p =
        amp_core::search::plan_from_grid(&grid(2, 2, 2), &[0, 15, 31], 1, 4, &Default::default());
    let e = py(&p, &small).unwrap_err();
    assert!(
        e.contains("1.7B ties its output") && e.contains("without a pipeline"),
        "{e}"
    );
    let p = amp_core::search::plan_from_grid(&grid(2, 4, 1), &[0, 31], 1, 4, &Default::default());
    assert!(py(&p, &small)
        .unwrap()
        .contains("    config = qwen3_1_7b()\n"));
}

#[test]
fn torchtitan_runs_the_adam_step_the_plan_names() {
    let (p, m, c) = common::llama3_8b();
    let mut p = p;
    p.setup.formats = Precision::Bf16.formats();
    let py = |p: &amp_core::plan::Plan| {
        export(p, &m, &c, Engine::Torchtitan, &ExportOptions::default()).unwrap()[0]
            .contents
            .clone()
    };
    // Unnamed: torchtitan's own default (fused), as priced for an engine.
    assert!(!py(&p).contains("config.optimizer.implementation"));
    p.setup.optimizer_step = Some(amp_core::setup::OptimizerStep::Foreach);
    let text = py(&p);
    assert!(
        text.contains("    config.optimizer.implementation = \"foreach\"\n"),
        "{text}"
    );
}

#[test]
fn megatron_runs_the_attention_amp_priced() {
    let (p, _, c) = common::llama3_8b();
    let fused = amp_catalog::zoo_model("llama3-8b", Some(4096)).unwrap();
    let mut explicit = fused.clone();
    explicit.architecture_mut().unwrap().flash_attention = Some(false);
    let args = |m: &amp_core::model::Model| {
        let files = export(&p, m, &c, Engine::Megatron, &ExportOptions::default()).unwrap();
        megatron_args(&files).to_string()
    };
    // Fused: Megatron-LM's default backend (auto) picks a fused kernel.
    assert!(!args(&fused).contains("--attention-backend"));
    let a = args(&explicit);
    assert!(a.contains("--attention-backend unfused"), "{a}");
}

#[test]
fn bad_options_are_specific_errors() {
    let (p, m, c) = common::homogeneous();
    let opts = ExportOptions {
        hosts: vec!["a".into()],
        ..ExportOptions::default()
    };
    let e = export(&p, &m, &c, Engine::Megatron, &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("1 host names given but the cluster has 4 nodes"),
        "{e}"
    );
    let opts = ExportOptions {
        hosts: vec!["a b".into(), "b".into(), "c".into(), "d".into()],
        ..ExportOptions::default()
    };
    let e = export(&p, &m, &c, Engine::Megatron, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`a b` is not a host name"), "{e}");
    let mut bad = p.clone();
    bad.stages[1].first_layer = 9;
    let e = export(&bad, &m, &c, Engine::DeepSpeed, &ExportOptions::default()).unwrap_err();
    assert!(matches!(e, ExportError::InvalidPlan(_)), "{e:?}");
    let (mut p, m, c) = common::llama3_8b();
    p.setup.formats = Precision::Fp16.formats();
    let e = export(&p, &m, &c, Engine::Torchtitan, &ExportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("fp16"), "{e}");
}

#[test]
fn exports_are_deterministic() {
    for engine in Engine::ALL {
        let (p, m, c) = if engine == Engine::Torchtitan {
            common::llama3_8b()
        } else {
            common::uneven()
        };
        let a = export(&p, &m, &c, engine, &ExportOptions::default()).unwrap();
        let b = export(&p, &m, &c, engine, &ExportOptions::default()).unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn megatron_refuses_architectures_it_cannot_build() {
    use amp_core::placement::{DeviceGrid, Placement};
    let (_, _, c) = common::llama3_8b();
    let g = DeviceGrid::new(&c, 2, 8, 1, &Placement::artifact_default(&c));
    for (name, why) in [
        ("opt-1.3b", "ReLU"),
        ("gpt-neo-2.7b", "none on query, key and value"),
    ] {
        let m = amp_catalog::zoo_model(name, None).unwrap();
        let p =
            amp_core::search::plan_from_grid(&g, &[0, m.layers.len()], 1, 4, &Default::default());
        let e = export(&p, &m, &c, Engine::Megatron, &ExportOptions::default()).unwrap_err();
        match &e {
            ExportError::Unsupported {
                reason,
                runnable_by,
                ..
            } => {
                assert!(reason.contains(why), "{name}: {reason}");
                assert!(runnable_by.contains(&Engine::DeepSpeed), "{name}: {e}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // Biases on the attention output but not the MLP (a Llama config's
    // `attention_bias` alone): Megatron-LM's `add_bias_linear` puts them on
    // both, so the model it would build is not the one amp priced.
    let mut m = amp_catalog::zoo_model("llama3-8b", None).unwrap();
    let a = m.architecture_mut().unwrap();
    (a.linear_bias, a.qkv_bias, a.mlp_bias) = (true, true, Some(false));
    let p = amp_core::search::plan_from_grid(&g, &[0, m.layers.len()], 1, 4, &Default::default());
    let e = export(&p, &m, &c, Engine::Megatron, &ExportOptions::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("biases on the attention output but none on the MLP"),
        "{e}"
    );
    // Without the MLP's told apart, as plan files before 2026-12-08 wrote
    // them, the linear biases are everywhere and Megatron-LM builds them.
    m.architecture_mut().unwrap().mlp_bias = None;
    assert!(export(&p, &m, &c, Engine::Megatron, &ExportOptions::default()).is_ok());
}

/// DeepSpeed's pipeline engine runs ZeRO stages 0 and 1 only: ZeRO-2 and
/// -3 on a pipeline are refused, saying why. One stage under them is a
/// plain module on DeepSpeed's own engine, as amp prices it: no
/// PipelineModule, the config's stage, no pipeline section.
#[test]
fn deepspeed_refuses_zero_2_and_3_on_a_pipeline_only() {
    let (p, m, c) = common::homogeneous();
    let one_stage = {
        let g = DeviceGrid::new(&c, 1, 16, 1, &Placement::artifact_default(&c));
        plan_from_grid(&g, &[0, 30], 2, 1, &p.setup)
    };
    let mut piped = p;
    for z in [OptimizerSharding::Zero2, OptimizerSharding::Zero3] {
        piped.setup.optimizer_sharding = z;
        let e = export(&piped, &m, &c, Engine::DeepSpeed, &ExportOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ZeRO stages 0 and 1 only") && e.contains("PipelineModule"),
            "{e}"
        );
        let engines = engines_for(&piped, &m, &c, &ExportOptions::default());
        assert!(!engines.contains(&Engine::DeepSpeed), "{engines:?}");

        let mut plan = one_stage.clone();
        plan.setup.optimizer_sharding = z;
        let files = export(&plan, &m, &c, Engine::DeepSpeed, &ExportOptions::default()).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            names,
            ["ds_config.json", "amp_plan.py", "hostfile", "launch.sh"]
        );
        let cfg: serde_json::Value = serde_json::from_str(&files[0].contents).unwrap();
        let stage = if z == OptimizerSharding::Zero2 { 2 } else { 3 };
        assert_eq!(cfg["zero_optimization"]["stage"], stage);
        assert_eq!(cfg["train_batch_size"], 32);
        assert!(cfg.get("pipeline").is_none(), "{cfg}");
        // What amp priced, not left to DeepSpeed's defaults: ZeRO-3
        // reduces beside the passes, ZeRO-2 (not overlapped in this
        // setup) on the computation's stream; the buckets amp's memory holds.
        let zero = &cfg["zero_optimization"];
        assert_eq!(zero["overlap_comm"], stage == 3);
        assert_eq!(zero["reduce_bucket_size"], 500_000_000);
        assert_eq!(
            zero.get("stage3_prefetch_bucket_size").cloned(),
            (stage == 3).then(|| serde_json::json!(50_000_000))
        );
        // And the reuse distance that keeps a suffix gathered.
        assert_eq!(
            zero.get("stage3_max_reuse_distance").cloned(),
            (stage == 3).then(|| serde_json::json!(1_000_000_000))
        );
        let py = &files[1].contents;
        assert!(!py.contains("PipelineModule("), "{py}");
        assert!(py.contains(&format!("ZERO_STAGE = {stage}")), "{py}");
        assert!(py.contains("DATA_PARALLEL = 16"), "{py}");
        assert!(py.contains("RECOMPUTE_EVERY_BLOCK = False"), "{py}");
    }
    piped.setup.optimizer_sharding = OptimizerSharding::Zero1;
    let files = export(&piped, &m, &c, Engine::DeepSpeed, &ExportOptions::default()).unwrap();
    assert!(files.iter().any(|f| f.path == "amp_pipeline.py"));
    let mut plan = one_stage;
    plan.setup.optimizer_sharding = OptimizerSharding::Zero1;
    let files = export(&plan, &m, &c, Engine::DeepSpeed, &ExportOptions::default()).unwrap();
    assert!(files.iter().any(|f| f.path == "amp_pipeline.py"));
}

/// The rotary rescaling the model uses is the one the engine builds:
/// Megatron-LM's `--use-rope-scaling --rope-scaling-factor F` for Llama 3.1
/// and 3.2 (its RotaryEmbedding fixes the other three numbers at theirs),
/// `--rotary-seq-len-interpolation-factor` for linear interpolation, nothing
/// for Llama 3, and a refusal for other kinds. torchtitan's llama3 flavors
/// are Llama 3.1's: a Llama 3 model exports with a note, another rescaling
/// is refused.
#[test]
fn rope_scaling_is_built_as_the_model_says() {
    use amp_core::model::RopeScaling;
    let (mut p, m, c) = common::llama3_8b();
    p.setup.formats = Precision::Bf16.formats();
    let opts = ExportOptions::default();
    // A plan priced without an engine is said to be priced so.
    let notes = amp_export::export_notes(&m, &p, Engine::Megatron);
    assert!(
        notes.len() == 1
            && notes[0].contains("priced without an engine")
            && notes[0].contains("--engine megatron"),
        "{notes:?}"
    );
    let as_priced = |engine: Engine| {
        let mut q = p.clone();
        q.setup.engine = Some(engine);
        q
    };
    let priced_for = |engine: Engine| {
        let q = as_priced(engine);
        let notes = amp_export::export_notes(&m, &q, Engine::Torchtitan);
        (engine == Engine::Torchtitan) == notes.iter().all(|n| !n.contains("the plan was priced"))
    };
    assert!(priced_for(Engine::Megatron) && priced_for(Engine::Torchtitan));
    let pm = as_priced(Engine::Megatron);
    let with = |scaling: Option<RopeScaling>| {
        let mut m = m.clone();
        m.architecture_mut().unwrap().rope_scaling = scaling;
        m
    };
    let llama3 = |factor| Some(RopeScaling::llama3(factor));
    let megatron = |m: &amp_core::model::Model| export(&p, m, &c, Engine::Megatron, &opts);
    let a = megatron(&m).unwrap();
    assert!(!megatron_args(&a).contains("rope-scaling"));
    for factor in [8.0, 32.0] {
        let files = megatron(&with(llama3(factor))).unwrap();
        let a = megatron_args(&files);
        assert!(
            a.contains("--use-rope-scaling\n")
                && a.contains(&format!("--rope-scaling-factor {factor}\n")),
            "{a}"
        );
    }
    // Megatron-LM's builder hands GPTModel the switch, not the factor, and
    // GPTModel's default is 8: any other factor is said beside the files.
    assert!(amp_export::export_notes(&with(llama3(8.0)), &pm, Engine::Megatron).is_empty());
    let notes = amp_export::export_notes(&with(llama3(32.0)), &pm, Engine::Megatron);
    assert!(
        notes.len() == 1 && notes[0].contains("rescales by its default, 8"),
        "{notes:?}"
    );
    let files = megatron(&with(Some(RopeScaling::Linear { factor: 4.0 }))).unwrap();
    assert!(megatron_args(&files).contains("--rotary-seq-len-interpolation-factor 4\n"));
    for (scaling, words) in [
        (
            Some(RopeScaling::Linear { factor: 2.5 }),
            "not a whole number",
        ),
        (
            Some(RopeScaling::Other {
                name: "yarn".into(),
            }),
            "of type `yarn`",
        ),
        (
            Some(RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 2.0,
                high_freq_factor: 4.0,
                original_max_positions: 8192,
            }),
            "fixes them at 1, 4 and 8192",
        ),
    ] {
        let e = megatron(&with(scaling)).unwrap_err().to_string();
        assert!(e.contains(words), "{e}");
    }
    // torchtitan: one flavor for Llama 3 and 3.1, noted for Llama 3.
    let titan = |m: &amp_core::model::Model| export(&p, m, &c, Engine::Torchtitan, &opts);
    assert!(titan(&m).is_ok());
    let notes = amp_export::export_notes(&m, &as_priced(Engine::Torchtitan), Engine::Torchtitan);
    assert!(
        notes.len() == 1 && notes[0].contains("as Llama 3.1 does"),
        "{notes:?}"
    );
    let m31 = with(llama3(8.0));
    assert!(titan(&m31).is_ok());
    assert!(
        amp_export::export_notes(&m31, &as_priced(Engine::Torchtitan), Engine::Torchtitan)
            .is_empty()
    );
    assert!(amp_export::export_notes(&m, &pm, Engine::Megatron).is_empty());
    // A plan priced with scatter/gather sends from tensor-parallel stages
    // runs Megatron Core's whole sends: said beside the files, not under
    // sequence parallelism (whose sends are split already).
    assert!(pm.pp() > 1 && pm.stages[0].tp() > 1);
    let mut sg = pm.clone();
    sg.setup.pipeline_send = amp_core::setup::PipelineSend::ScatterGather;
    let notes = amp_export::export_notes(&m, &sg, Engine::Megatron);
    assert!(
        notes.len() == 1 && notes[0].contains("carry 2 times the bytes amp priced"),
        "{notes:?}"
    );
    sg.setup.engine = Some(Engine::DeepSpeed);
    assert!(amp_export::export_notes(&m, &sg, Engine::DeepSpeed).is_empty());
    sg.setup.engine = Some(Engine::Megatron);
    sg.setup.sequence_parallel = true;
    assert!(amp_export::export_notes(&m, &sg, Engine::Megatron).is_empty());
    let e = titan(&with(llama3(32.0))).unwrap_err().to_string();
    assert!(e.contains("rotary rescaling llama3 (factor 32)"), "{e}");
}

#[test]
fn fp8_plans_export_to_megatron_alone() {
    // Megatron-LM's own FP8 recipe for Hopper (Transformer Engine, delayed
    // scaling), storage in bf16 as priced; DeepSpeed has no FP8 of its own
    // and torchtitan's (torchao's Float8Linear) is not what amp priced.
    let (mut p, m, c) = common::llama3_8b();
    p.setup.formats = Precision::Fp8.formats();
    p.setup.engine = Some(Engine::Megatron);
    let opts = ExportOptions::default();
    let files = export(&p, &m, &c, Engine::Megatron, &opts).unwrap();
    let a = megatron_args(&files);
    for flag in [
        "--bf16\n",
        "--fp8-format hybrid\n",
        "--fp8-amax-history-len 1024\n",
        "--fp8-amax-compute-algo max\n",
    ] {
        assert!(a.contains(flag), "{flag}: {a}");
    }
    assert!(!a.contains("--fp8-param-gather"), "{a}");
    // A plan priced for Megatron-LM goes nowhere else, and neither other
    // engine could run it: DeepSpeed has no FP8 of its own, and torchtitan's
    // is not what amp priced.
    let e = export(&p, &m, &c, Engine::DeepSpeed, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("priced as megatron runs it (fp8"), "{e}");
    assert_eq!(
        amp_export::engines_for(&p, &m, &c, &opts),
        vec![Engine::Megatron]
    );
    // Transformer Engine's FP8 products need tileable dimensions: 8,192
    // tokens a micro-batch pass, 8,191 do not.
    let mut odd = m.clone();
    odd.shape.as_mut().unwrap().seq_len = 8191;
    let e = export(&p, &odd, &c, Engine::Megatron, &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("8191 tokens per micro-batch on a rank (micro-batch 1 x sequence 8191) are not a multiple of 8")
            && e.contains("assert_dim_for_fp8_exec")
            && e.contains("none of megatron, deepspeed, torchtitan can run it"),
        "{e}"
    );
    // The same plan in bf16 goes to Megatron-LM without a tiling check.
    p.setup.formats = Precision::Bf16.formats();
    assert!(export(&p, &odd, &c, Engine::Megatron, &opts).is_ok());
}
