//! DeepSpeed: `ds_config.json`, the pipeline partition as explicit stage
//! boundaries, the hostfile and the launch line.
//!
//! Config keys: DeepSpeed's configuration reference
//! (deepspeedai/DeepSpeed docs/_pages/config-json.md, deepspeed.ai/docs/config-json)
//! and their names in deepspeed/runtime/constants.py (`TRAIN_BATCH_SIZE`,
//! `TRAIN_MICRO_BATCH_SIZE_PER_GPU`, `GRADIENT_ACCUMULATION_STEPS`, `FP16`,
//! `BFLOAT16`) and deepspeed/runtime/zero/config.py (`zero_optimization.stage`).

use amp_core::cluster::Cluster;
use amp_core::memory::{
    DEEPSPEED_MAX_REUSE_DISTANCE_ELEMS, DEEPSPEED_PREFETCH_BUCKET_ELEMS,
    DEEPSPEED_REDUCE_BUCKET_ELEMS,
};
use amp_core::model::Model;
use amp_core::plan::Plan;
use amp_core::schedule::Schedule;
use amp_core::setup::Engine;
use serde_json::json;

use crate::launch;
use crate::{EngineOptions, EngineResult, ExportFile, Precision, Recompute, Refusal};

const ENGINE: &str = "DeepSpeed";

pub(crate) fn export(
    plan: &Plan,
    model: &Model,
    cluster: &Cluster,
    opts: &EngineOptions,
) -> EngineResult<Vec<ExportFile>> {
    if opts.schedule != Schedule::OneFOneB {
        return Err(Refusal::Unsupported(
            "the plan was priced with the GPipe schedule; DeepSpeed's pipeline engine runs its 1F1B-style TrainSchedule (deepspeed/runtime/pipe/schedule.py)".into(),
        ));
    }
    if opts.recompute == Recompute::Selective {
        return Err(Refusal::Unsupported(
            "selective recomputation: DeepSpeed's PipelineModule checkpoints whole layers (activation_checkpoint_interval, deepspeed/runtime/pipe/module.py)".into(),
        ));
    }
    if opts.precision == Some(Precision::Fp8) {
        return Err(Refusal::Unsupported(
            "FP8 training: DeepSpeed has none of its own (its config's precisions are fp16 and bf16); amp prices FP8 as Megatron-LM runs Transformer Engine".into(),
        ));
    }
    let tp = launch::uniform_tp(plan, ENGINE)?;
    // PipeModelDataParallelTopology(num_pp, num_mp, num_dp): axes
    // ['pipe', 'data', 'model'], model (tensor) parallel fastest
    // (deepspeed/runtime/pipe/topology.py).
    let launch = launch::realise(plan, opts, Engine::DeepSpeed.rank_orders(), ENGINE)?;
    let precision = opts.precision.unwrap_or(Precision::Fp16);
    let zero_stage = opts.zero_stage();

    // ZeRO-2 and -3 run on DeepSpeed's own engine, not its pipeline engine,
    // which asserts a stage below 2: a one-stage plan that shards gradients
    // or weights is a plain module, as amp prices it (gathers and reductions
    // at every micro-batch).
    let setup = plan.setup.on_engine(Engine::DeepSpeed);
    let pipelined = !setup.reduces_every_micro_batch(plan.pp());
    let mut cfg = json!({
        "train_batch_size": plan.global_batch(),
        "train_micro_batch_size_per_gpu": plan.micro_batch,
        "gradient_accumulation_steps": plan.num_micro_batches,
        "zero_optimization": { "stage": zero_stage },
    });
    if !pipelined {
        // What amp priced, stated rather than left to DeepSpeed's defaults
        // (deepspeed/runtime/zero/config.py): ZeRO-2 reduces on the
        // computation's stream unless `overlap_comm`, ZeRO-3 beside it (its
        // default); the buckets amp's memory holds.
        let zero = &mut cfg["zero_optimization"];
        zero["overlap_comm"] = json!(setup.reductions_beside_passes());
        zero["reduce_bucket_size"] = json!(DEEPSPEED_REDUCE_BUCKET_ELEMS as u64);
        if zero_stage >= 3 {
            zero["stage3_prefetch_bucket_size"] = json!(DEEPSPEED_PREFETCH_BUCKET_ELEMS as u64);
            zero["stage3_max_reuse_distance"] = json!(DEEPSPEED_MAX_REUSE_DISTANCE_ELEMS as u64);
        }
    }
    if pipelined {
        // How a tensor-parallel stage sends, as the plan was priced: each
        // rank's partition, all-gathered by the receivers (DeepSpeed's
        // default), or the whole activation from every rank
        // (deepspeed/runtime/pipe/engine.py, `is_pipe_partitioned`).
        cfg["pipeline"] = json!({
            "pipe_partitioned": opts.partitioned_sends,
            "grad_partitioned": opts.partitioned_sends,
        });
    }
    if opts.fp32_allreduce {
        // The plan was priced with fp32 all-reduce bytes: `allreduce_bucket`
        // casts each bucket to `communication_data_type`
        // (deepspeed/runtime/engine.py; `fp32_allreduce: true` in the
        // DeepSpeed of 2020 the AMP artifact ran).
        cfg["communication_data_type"] = json!("fp32");
    }
    match precision {
        Precision::Fp16 => cfg["fp16"] = json!({ "enabled": true }),
        Precision::Bf16 => cfg["bf16"] = json!({ "enabled": true }),
        Precision::Fp32 | Precision::Tf32 | Precision::Fp8 => {}
    }
    let ds_config = serde_json::to_string_pretty(&cfg).expect("json values serialize") + "\n";
    let (helper, py) = if pipelined {
        (
            "amp_pipeline.py",
            pipeline_module_py(plan, model, opts, tp, zero_stage),
        )
    } else {
        (
            "amp_plan.py",
            plain_module_py(plan, model, opts, tp, zero_stage),
        )
    };

    let program = format!(
        "{} --deepspeed --deepspeed_config ds_config.json",
        opts.deepspeed_script
    );
    let mut sh = String::from("#!/usr/bin/env bash\n");
    sh.push_str("# DeepSpeed launch for this plan. `--deepspeed --deepspeed_config` are the training script's\n");
    sh.push_str("# arguments added by deepspeed.add_config_arguments (deepspeed/__init__.py).\n");
    sh.push_str("set -euo pipefail\ncd \"$(dirname \"$0\")\"\n");
    if launch.ascending() {
        let include: Vec<String> = launch
            .nodes
            .iter()
            .map(|n| format!("{}:{}", n.host, launch::join(&n.gpus, ",")))
            .collect();
        sh.push_str("# Run once, on the first host. The deepspeed launcher (deepspeed/launcher/runner.py) numbers\n");
        sh.push_str("# ranks in hostfile order, each host's --include slots in ascending order.\n");
        sh.push_str(&format!(
            "deepspeed --hostfile hostfile --include {} --master_addr {} --master_port {} {program}\n",
            include.join("@"),
            launch.nodes[0].host,
            opts.master_port
        ));
    } else {
        sh.push_str("# The placement needs GPUs of a node in a non-ascending order, which the deepspeed launcher\n");
        sh.push_str("# cannot give (it sorts --include slots, deepspeed/launcher/runner.py parse_node_config_list).\n");
        sh.push_str("# Launch with torchrun instead (deepspeed.init_distributed reads RANK/LOCAL_RANK/WORLD_SIZE);\n");
        sh.push_str("# run on every node: bash launch.sh NODE_RANK\n");
        sh.push_str(&launch.torchrun_case(opts, &program));
    }
    debug_assert_eq!(launch.tp, tp);

    Ok(vec![
        ExportFile::new("ds_config.json", ds_config),
        ExportFile::new(helper, py),
        ExportFile::new("hostfile", launch.hostfile(cluster)),
        ExportFile::new("launch.sh", sh),
    ])
}

/// `amp_plan.py` of a one-stage plan under ZeRO-2 or -3: the plan's
/// degrees and rank order for a plain module under `deepspeed.initialize`.
fn plain_module_py(
    plan: &Plan,
    model: &Model,
    opts: &EngineOptions,
    tp: usize,
    zero_stage: u8,
) -> String {
    let names: Vec<String> = model.layers.iter().map(|l| py_str(&l.name)).collect();
    format!(
        r#""""An amp plan for DeepSpeed without a pipeline: ZeRO stage {z}.

DeepSpeed's pipeline engine refuses ZeRO-2 and -3 (PipelineEngine asserts
"ZeRO-2 and ZeRO-3 are incompatible with pipeline parallelism",
deepspeed/runtime/pipe/engine.py), so this plan runs a plain torch.nn.Module,
not a PipelineModule: deepspeed.initialize(model=..., config="ds_config.json")
returns DeepSpeed's own engine, which amp priced (every micro-batch gathers
{gathers}and reduces the gradients over the {dp} data-parallel ranks).
{blocks}
ds_config.json keys (deepspeed.ai/docs/config-json, deepspeed/runtime/constants.py):
  train_batch_size = micro-batch x gradient_accumulation_steps x data-parallel size
    ({g} = {mb} x {nmb} x {dp})
  train_micro_batch_size_per_gpu = {mb}
  gradient_accumulation_steps = {nmb} (micro-batches per iteration)
  fp16.enabled / bf16.enabled: the numeric format
  communication_data_type = "fp32" (when present): 16-bit gradients reduced as fp32
  zero_optimization.stage = {z}
"""
from deepspeed.runtime.pipe.topology import PipeModelDataParallelTopology

LAYER_NAMES = [{names}]
PIPELINE_PARALLEL = 1
TENSOR_PARALLEL = {tp}  # > 1 needs a model with tensor-parallel layers (e.g. Megatron-DeepSpeed)
DATA_PARALLEL = {dp}
ZERO_STAGE = {z}
# Priced with every block recomputed when True: the model must checkpoint each
# block (torch.utils.checkpoint or deepspeed.checkpointing.checkpoint around it,
# as Megatron-DeepSpeed's --checkpoint-activations does); DeepSpeed's engine
# recomputes nothing by itself.
RECOMPUTE_EVERY_BLOCK = {recompute}


def topology():
    """Ranks: tensor fastest, then data (axes ['pipe', 'data', 'model'], one stage)."""
    return PipeModelDataParallelTopology(
        num_pp=PIPELINE_PARALLEL, num_mp=TENSOR_PARALLEL, num_dp=DATA_PARALLEL)
"#,
        z = zero_stage,
        gathers = if zero_stage >= 3 { "the weights " } else { "" },
        blocks = blocks_priced_note(model, opts.eager_blocks),
        g = plan.global_batch(),
        mb = plan.micro_batch,
        nmb = plan.num_micro_batches,
        dp = plan.dp(),
        names = names.join(", "),
        recompute = if opts.recompute == Recompute::Full {
            "True"
        } else {
            "False"
        },
    )
}

/// `amp_pipeline.py`: the plan's split as a PipelineModule.
fn pipeline_module_py(
    plan: &Plan,
    model: &Model,
    opts: &EngineOptions,
    tp: usize,
    zero_stage: u8,
) -> String {
    let parts = plan.boundaries();
    let tied: Vec<String> = model
        .layers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.tied_to.map(|t| format!("({i}, {t})")))
        .collect();
    let names: Vec<String> = model.layers.iter().map(|l| py_str(&l.name)).collect();
    let mut py = String::new();
    py.push_str(&format!(
        r#""""Pipeline partition of an amp plan for DeepSpeed.

Stage j runs layers PARTS[j]..PARTS[j+1]-1 of the model's layer list
({n} entries, listed in LAYER_NAMES). Build your PipelineModule from the same
layer list, in the same order, each pair of layers in TIED (weights shared, as
priced) as TiedLayerSpecs of one key. The last stage's pipe buffers keep up to
two earlier micro-batches' outputs (priced, for a language model, as fp32
logits: its last layer casting them to fp32, as Megatron-DeepSpeed's pipe
models do).
{blocks}
DeepSpeed's PipelineModule(partition_method=...) accepts "uniform",
"parameters" and "type:<regex>" (deepspeed/runtime/pipe/module.py,
PipelineModule._partition_layers); none takes explicit boundaries, so
AmpPipelineModule sets `self.parts` (the attribute those methods fill) itself.

ds_config.json keys (deepspeed.ai/docs/config-json, deepspeed/runtime/constants.py):
  train_batch_size = micro-batch x gradient_accumulation_steps x data-parallel size
    ({g} = {mb} x {nmb} x {dp})
  train_micro_batch_size_per_gpu = {mb}
  gradient_accumulation_steps = {nmb} (micro-batches per iteration)
  fp16.enabled / bf16.enabled: the numeric format
  communication_data_type = "fp32" (when present): 16-bit gradients all-reduced as fp32
  zero_optimization.stage = {z} (pipeline parallelism works with ZeRO 0 and 1 only,
    PipelineModule docstring)
"""
from deepspeed.pipe import PipelineModule, TiedLayerSpec
from deepspeed.runtime.pipe.topology import PipeModelDataParallelTopology

PARTS = [{parts}]
LAYER_NAMES = [{names}]
# (layer, the earlier layer whose weights it shares), as priced: the pipeline engine all-reduces
# such a weight's gradient between the stages that hold it (allreduce_tied_weight_gradients) when
# both layers are TiedLayerSpecs of one key. AmpPipelineModule checks that the module ties these.
TIED = [{tied}]
PIPELINE_PARALLEL = {pp}
TENSOR_PARALLEL = {tp}  # > 1 needs a model with tensor-parallel layers (e.g. Megatron-DeepSpeed)
DATA_PARALLEL = {dp}
ACTIVATION_CHECKPOINT_INTERVAL = {aci}  # PipelineModule(activation_checkpoint_interval=...)


def topology():
    """Ranks: tensor fastest, then data, then pipe (axes ['pipe', 'data', 'model'])."""
    return PipeModelDataParallelTopology(
        num_pp=PIPELINE_PARALLEL, num_mp=TENSOR_PARALLEL, num_dp=DATA_PARALLEL)


class AmpPipelineModule(PipelineModule):
    """A PipelineModule split at PARTS: build it with topology=topology()."""

    def _partition_layers(self, method="uniform"):
        if len(self._layer_specs) != PARTS[-1]:
            raise ValueError(
                f"the plan splits {{PARTS[-1]}} layers but the module has {{len(self._layer_specs)}}")
        check_tied(self._layer_specs)
        if self._topo.get_dim("pipe") != len(PARTS) - 1:
            raise ValueError("the topology's pipe dimension differs from the plan's stages")
        self.parts = list(PARTS)
        stage_id = self._topo.get_coord(self.global_rank).pipe
        self._set_bounds(start=self.parts[stage_id], stop=self.parts[stage_id + 1])
"#,
        n = model.layers.len(),
        g = plan.global_batch(),
        mb = plan.micro_batch,
        nmb = plan.num_micro_batches,
        dp = plan.dp(),
        pp = plan.pp(),
        z = zero_stage,
        parts = launch::join(&parts, ", "),
        names = names.join(", "),
        tied = tied.join(", "),
        aci = if opts.recompute == Recompute::Full { 1 } else { 0 },
        blocks = blocks_priced_note(model, opts.eager_blocks),
    ));
    py.push_str(CHECK_TIED_PY);
    py
}

/// What the generated files say of the blocks amp priced, for a model
/// with an architecture (whose activations amp counts itself; a layer
/// list's own counts are priced as given): an engine's fused kernels, or
/// Hugging Face's eager code (`--block-kernels eager`; both measured on
/// the CPU by `scripts/engine-check/deepspeed_pipeline.py`, which ends with
/// what one eager block saves).
fn blocks_priced_note(model: &Model, eager: bool) -> &'static str {
    match (model.architecture().is_some(), eager) {
        (false, _) => "",
        (true, false) => BLOCKS_PRICED_NOTE,
        (true, true) => EAGER_BLOCKS_PRICED_NOTE,
    }
}

const BLOCKS_PRICED_NOTE: &str = "
Memory was priced for blocks with fused kernels, as Megatron-DeepSpeed's are
(fused norms and MLP, flash attention). Hugging Face's eager blocks keep more
for their backward (fp32 copies in their RMSNorm, every MLP intermediate: more
than twice as much for a Llama block): with them, plan with
--block-kernels eager.
";

const EAGER_BLOCKS_PRICED_NOTE: &str = "
Memory was priced for Hugging Face's eager blocks (--block-kernels eager): the
fp32 copies their RMSNorm keeps, every MLP intermediate and the gradients
their MLP's backward holds. Blocks with fused kernels keep less. Their
attention was priced as the model's default attn_implementation runs it:
\"sdpa\", where Hugging Face has it, keeps no attention scores, also in fp32
and before Ampere; built with attn_implementation=\"eager\" such blocks keep
the scores too.
";

/// The check of the module's tied layers against the plan's (`TIED`),
/// which `AmpPipelineModule._partition_layers` runs before it splits.
const CHECK_TIED_PY: &str = r#"

def check_tied(specs):
    """Raise unless the module ties exactly the layers the plan ties (TIED)."""
    tied = {i for pair in TIED for i in pair}
    for layer, owner in TIED:
        a, b = specs[owner], specs[layer]
        if not (isinstance(a, TiedLayerSpec) and isinstance(b, TiedLayerSpec) and a.key == b.key):
            raise ValueError(
                f"the plan ties layer {layer} ({LAYER_NAMES[layer]}) to layer {owner} "
                f"({LAYER_NAMES[owner]}): build both with TiedLayerSpec and one key, so the engine "
                "all-reduces their gradient as priced")
    extra = [i for i, s in enumerate(specs) if isinstance(s, TiedLayerSpec) and i not in tied]
    if extra:
        raise ValueError(
            f"layers {extra} are TiedLayerSpecs, but the plan ties none of them: describe the "
            "model's shared weights (a layer's tied_to) and plan again, or build them with LayerSpec")
"#;

/// A Python string literal for any text.
fn py_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn python_strings_are_escaped() {
        assert_eq!(super::py_str("a\"b\\c\né"), "\"a\\\"b\\\\c\\u000a\\u00e9\"");
    }
}
