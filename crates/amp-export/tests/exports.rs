//! Snapshots of every engine's export for a homogeneous and an uneven plan,
//! and the refusals.

mod common;

use amp_core::setup::{OptimizerSharding, Precision, Recompute};
use amp_export::{engines_for, export, Engine, ExportError, ExportOptions};

/// The plan as it must be priced to run on `engine`: torchtitan trains in
/// bf16 (not the AMP plans' fp16) and runs data parallelism beside tp or
/// pp only as FSDP.
fn for_engine(plan: &amp_core::plan::Plan, engine: Engine) -> amp_core::plan::Plan {
    let mut plan = plan.clone();
    if engine == Engine::Torchtitan {
        plan.setup.formats = Precision::Bf16.formats();
        if plan.dp() > 1 {
            plan.setup.optimizer_sharding = OptimizerSharding::Zero3;
        }
    }
    plan
}

fn snapshot_all(
    case: &str,
    plan: &amp_core::plan::Plan,
    model: &amp_core::model::Model,
    cluster: &amp_core::cluster::Cluster,
    opts: &ExportOptions,
) {
    for engine in Engine::ALL {
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
    snapshot_all("homogeneous", &p, &m, &c, &ExportOptions::default());
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
    snapshot_all("uneven", &p, &m, &c, &opts);
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
            // torchtitan has no fp16 training, which the plan records.
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
    for engine in Engine::ALL {
        let p = for_engine(&p, engine);
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
    let (p, m, c) = common::uneven_middle();
    let p = for_engine(&p, Engine::Torchtitan);
    let files = export(&p, &m, &c, Engine::Torchtitan, &ExportOptions::default()).unwrap();
    let job: toml::Value = toml::from_str(
        &files
            .iter()
            .find(|f| f.path == "job.toml")
            .unwrap()
            .contents,
    )
    .unwrap();
    let parts = job["parallelism"]["module_fqns_per_model_part"]
        .as_array()
        .unwrap();
    assert_eq!(parts.len(), 4);
    let blocks: Vec<usize> = parts
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .filter(|f| f.as_str().unwrap().starts_with("layers."))
                .count()
        })
        .collect();
    assert_eq!(blocks, vec![5, 6, 8, 5]);
    let all: Vec<&str> = parts
        .iter()
        .flat_map(|s| s.as_array().unwrap().iter().map(|f| f.as_str().unwrap()))
        .collect();
    for b in 0..24 {
        assert_eq!(
            all.iter().filter(|f| **f == format!("layers.{b}")).count(),
            1
        );
    }
    assert_eq!(all.first(), Some(&"tok_embeddings"));
    assert_eq!(all.last(), Some(&"output"));
    assert_eq!(job["training"]["local_batch_size"].as_integer(), Some(8));
    assert_eq!(job["training"]["global_batch_size"].as_integer(), Some(16));
    assert_eq!(
        job["parallelism"]["data_parallel_shard_degree"].as_integer(),
        Some(2)
    );
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
    let mut fp16 = p.clone();
    fp16.setup.formats = Precision::Fp16.formats();
    fp16.setup.optimizer_sharding = OptimizerSharding::Zero3;
    let e = export(&fp16, &m, &c, Engine::Torchtitan, &ExportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("fp16"), "{e}");
}

#[test]
fn exports_are_deterministic() {
    let (p, m, c) = common::uneven();
    for engine in Engine::ALL {
        let p = for_engine(&p, engine);
        let a = export(&p, &m, &c, engine, &ExportOptions::default()).unwrap();
        let b = export(&p, &m, &c, engine, &ExportOptions::default()).unwrap();
        assert_eq!(a, b);
    }
}
