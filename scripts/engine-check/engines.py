"""One engine's own code run on one amp export; prints one JSON line.

    python engines.py ENGINE EXPORT_DIR

ENGINE is megatron, deepspeed or torchtitan. What is reported:

- params: the parameter count of the model the engine builds (on the meta
  device; Megatron-LM and torchtitan only, DeepSpeed builds the user's model);
- stages: for each pipeline rank, the transformer blocks the engine builds
  there (a list of block indices per model chunk);
- coords: for each global rank, the engine's (pp, dp, tp) coordinate;
- facts: numbers the engine derived (micro-batches, vocabulary padding, ...).

Anything the engine rejects is an exception, reported as "error". Nothing here
re-implements an engine rule: each value comes from the engine's functions.
"""

import json
import os
import re
import subprocess
import sys
import traceback


def megatron(out):
    mlm = os.environ.get("MEGATRON_LM")
    if not mlm:
        raise SystemExit("MEGATRON_LM is not set")
    sys.path.insert(0, mlm)
    argv = subprocess.run(
        ["bash", "-c", f'source "{out}/args.sh"; printf "%s\\n" "${{MEGATRON_ARGS[@]}}"'],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")[:-1]
    argv = [a.strip("'") for a in argv]
    header = open(f"{out}/args.sh").read()
    vocab = int(re.search(r"--vocab-size (\d+)", header).group(1))
    launch = open(f"{out}/launch.sh").read()
    # The environment launch.sh sets.
    for k, v in re.findall(r"^export (\w+)=(\S+)$", launch, re.M):
        os.environ[k] = v
    tp = int(argv[argv.index("--tensor-model-parallel-size") + 1])
    pp = int(argv[argv.index("--pipeline-model-parallel-size") + 1])
    world = int(os.environ["AMP_WORLD_SIZE"])
    os.environ.update(WORLD_SIZE=str(world), RANK="0", LOCAL_RANK="0")
    # A tokenizer-free run as args.sh suggests; Transformer Engine is CUDA-only,
    # so the model is built from Megatron-Core's local layer specs.
    extra = ["--tokenizer-type", "NullTokenizer", "--vocab-size", str(vocab),
             "--mock-data", "--train-iters", "1", "--transformer-impl", "local",
             "--use-cpu-initialization", "--no-gradient-accumulation-fusion", "--no-rope-fusion", "--no-persist-layer-norm"]
    sys.argv = ["pretrain_gpt.py"] + argv + extra
    import torch
    import megatron.training.arguments as A
    # validate_args asks the GPU's architecture (CUDA_DEVICE_MAX_CONNECTIONS
    # is required before Blackwell); answer Hopper, as on an H100.
    A.get_device_arch_version = lambda: 9
    args = A.parse_args()
    A.validate_args(args, {})
    from megatron.core.tokenizers.utils.build_tokenizer import vocab_size_with_padding
    from megatron.core.num_microbatches_calculator import init_num_microbatches_calculator, get_num_microbatches
    init_num_microbatches_calculator(0, None, args.global_batch_size, args.micro_batch_size,
                                     args.data_parallel_size)
    # NullTokenizer adds an end-of-document token.
    padded = vocab_size_with_padding(vocab + 1, args, logging_enabled=False)
    facts = {"num_microbatches": get_num_microbatches(), "dp": args.data_parallel_size,
             "padded_vocab": padded, "bf16": bool(args.bf16), "fp16": bool(args.fp16),
             "recompute": args.recompute_granularity,
             "vpp": args.virtual_pipeline_model_parallel_size,
             "attention_backend": getattr(args.attention_backend, "name", str(args.attention_backend))}
    from megatron.training.arguments import core_transformer_config_from_args
    from megatron.core.transformer.transformer_block import get_num_layers_to_build
    from megatron.core.transformer.transformer_layer import get_transformer_layer_offset
    config = core_transformer_config_from_args(args)
    # FP8 as the TransformerConfig holds it (Transformer Engine reads it).
    facts["fp8"] = [config.fp8, str(getattr(config.fp8_recipe, "value", config.fp8_recipe)),
                    config.fp8_amax_history_len, config.fp8_amax_compute_algo]
    # The overlaps and the gradients' format as the arguments resolved them.
    facts["tp_comm_overlap"] = bool(config.tp_comm_overlap)
    facts["overlap_grad_reduce"] = bool(args.overlap_grad_reduce)
    facts["grads_fp32"] = bool(args.accumulate_allreduce_grads_in_fp32)
    vpp = args.virtual_pipeline_model_parallel_size or 1
    stages = []
    for r in range(pp):
        chunks = []
        for v in range(vpp):
            vp = v if vpp > 1 else None
            layout = config.pipeline_model_parallel_layout
            if layout is not None:
                # A split Megatron-LM's layout argument gives (amp's export
                # writes one for splits the first/last-stage arguments cannot
                # say): Megatron-LM's own parse of it, its table of each
                # rank's and chunk's layers, read per rank, since
                # get_num_layers_to_build does not pass pp_rank on to the
                # layout, which then asks the running process for its rank.
                from megatron.core.transformer.enums import LayerType
                table = layout.layout
                n = table[r][v].count(LayerType.decoder)
                off = sum(table[q][w].count(LayerType.decoder)
                          for w in range(v + 1) for q in range(pp if w < v else r))
            else:
                n = get_num_layers_to_build(config, vp_stage=vp, pp_rank=r)
                off = get_transformer_layer_offset(config, vp_stage=vp, pp_rank=r)
            chunks.append(list(range(off, off + n)))
        stages.append(chunks)
    from megatron.core.parallel_state import RankGenerator
    order = "tp-cp-ep-pp-dp" if args.use_tp_pp_dp_mapping else "tp-cp-ep-dp-pp"
    gen = RankGenerator(tp=tp, ep=1, dp=args.data_parallel_size, pp=pp, cp=1, order=order)
    coords = {}
    for axis, key in (("pp", 0), ("dp", 1), ("tp", 2)):
        for group in gen.get_ranks(axis):
            for i, rank in enumerate(group):
                coords.setdefault(rank, [0, 0, 0])[key] = i
    # The whole model on one process (tp 1, pp 1) from the same arguments:
    # Megatron's own gpt_builder, as pretrain_gpt.py calls it.
    import torch.distributed as dist
    from megatron.core import parallel_state
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29555", rank=0, world_size=1)
    parallel_state.initialize_model_parallel(1, 1)
    one = A.parse_args()
    one.tensor_model_parallel_size = 1
    one.pipeline_model_parallel_size = 1
    one.decoder_first_pipeline_num_layers = None
    one.decoder_last_pipeline_num_layers = None
    one.pipeline_model_parallel_layout = None
    one.num_layers_per_virtual_pipeline_stage = None
    one.num_virtual_stages_per_pipeline_rank = None
    one.account_for_embedding_in_pipeline_split = False
    one.account_for_loss_in_pipeline_split = False
    one.recompute_granularity = args.recompute_granularity
    # No tensor-parallel group on one process: validate_args turns sequence
    # parallelism off at tp 1, then asserts that the overlap needs it.
    one.tp_comm_overlap = False
    one.world_size = 1
    os.environ["WORLD_SIZE"] = "1"
    A.validate_args(one, {})
    one.padded_vocab_size = padded
    from megatron.training import global_vars
    global_vars.set_args(one) if hasattr(global_vars, "set_args") else None
    sys.path.insert(0, mlm)
    from gpt_builders import gpt_builder
    cfg1 = core_transformer_config_from_args(one)
    cfg1.perform_initialization = False
    with torch.device("meta"):
        model = gpt_builder(one, True, True, config=cfg1)
    params = sum(p.numel() for p in model.parameters())
    # The rotary rescaling the built model applies: its lowest frequency
    # against the unscaled one (1 without rescaling, 1/factor with Llama
    # 3.1's), from Megatron-LM's own RotaryEmbedding.
    rope = getattr(model, "rotary_pos_emb", None)
    if rope is not None:
        inv = rope.inv_freq.float()
        dim = 2 * inv.numel()
        plain = 1.0 / (args.rotary_base ** ((dim - 2) / dim))
        facts["rope_scaling"] = [bool(args.use_rope_scaling),
                                 args.rope_scaling_factor if args.use_rope_scaling else None,
                                 round(float(inv[-1]) / plain, 6)]
    return {"params": params, "stages": stages, "coords": coords, "facts": facts}


def tied_check(ap):
    """The export's check of tied layers, run on DeepSpeed's own LayerSpec and
    TiedLayerSpec: a module tying exactly TIED passes; one tying nothing is
    refused when the plan ties layers. Returns (pairs, verdict)."""
    import torch
    from deepspeed.pipe import LayerSpec, TiedLayerSpec
    tied = {i for pair in ap.TIED for i in pair}
    ok = [TiedLayerSpec("shared", torch.nn.Identity) if i in tied else LayerSpec(torch.nn.Identity)
          for i in range(len(ap.LAYER_NAMES))]
    ap.check_tied(ok)
    if not ap.TIED:
        return (0, "none")
    plain = [LayerSpec(torch.nn.Identity) for _ in ap.LAYER_NAMES]
    try:
        ap.check_tied(plain)
    except ValueError:
        return (len(ap.TIED), "enforced")
    return (len(ap.TIED), "NOT enforced")


def deepspeed_check(out):
    # DeepSpeedConfig asks deepspeed.comm for this process's rank and the
    # mpu for the data-parallel size; on a CPU without a launcher there is no
    # communication backend (the CPU one JIT-builds an op), so the rank is
    # answered here and nothing else.
    import deepspeed.runtime.config as dsc
    dsc.dist.get_rank = lambda *a, **k: 0
    sys.path.insert(0, out)
    # A pipeline (or one stage under ZeRO 0/1) is a PipelineModule split at
    # PARTS (amp_pipeline.py); one stage under ZeRO-2/3 a plain module on
    # DeepSpeed's own engine (amp_plan.py), which the pipeline engine refuses.
    pipelined = os.path.exists(os.path.join(out, "amp_pipeline.py"))
    if pipelined:
        import amp_pipeline as ap
    else:
        import amp_plan as ap
    topo = ap.topology()

    class Mpu:
        def get_data_parallel_world_size(self):
            return topo.get_dim("data")

    from deepspeed.runtime.config import DeepSpeedConfig
    cfg = DeepSpeedConfig(f"{out}/ds_config.json", mpu=Mpu())
    facts = {"num_microbatches": cfg.gradient_accumulation_steps,
             "micro_batch": cfg.train_micro_batch_size_per_gpu,
             "train_batch": cfg.train_batch_size, "dp": topo.get_dim("data"),
             "bf16": bool(cfg.bfloat16_config.enabled) if hasattr(cfg, "bfloat16_config") else None,
             "fp16": bool(cfg.float16_config.enabled) if hasattr(cfg, "float16_config")
             else bool(cfg.fp16_enabled),
             # the all-reduce's dtype when the config names one (None: the
             # training format's, DeepSpeedEngine.communication_data_type)
             "communication_data_type": None if cfg.communication_data_type is None
             else str(cfg.communication_data_type),
             "zero_stage": cfg.zero_optimization_stage,
             # ZeRO's reduction overlap and buckets as DeepSpeed resolves them
             "overlap_comm": cfg.zero_config.overlap_comm,
             "reduce_bucket_size": cfg.zero_config.reduce_bucket_size,
             "prefetch_bucket_size": cfg.zero_config.prefetch_bucket_size,
             # how a tensor-parallel stage sends (PipelineEngine reads these)
             "pipe_partitioned": cfg.pipeline.get("pipe_partitioned"),
             "grad_partitioned": cfg.pipeline.get("grad_partitioned"),
             # what the export hands PipelineModule(activation_checkpoint_interval=...),
             # or asks a plain module to do
             "recompute": "full" if (ap.ACTIVATION_CHECKPOINT_INTERVAL == 1 if pipelined
                                     else ap.RECOMPUTE_EVERY_BLOCK) else None,
             "tied": tied_check(ap) if pipelined else (0, "plain module"),
             "module": "PipelineModule" if pipelined else "plain"}
    world = topo.world_size()
    coords = {}
    for r in range(world):
        c = topo.get_coord(r)
        coords[r] = [c.pipe, c.data, c.model]
    # Stage j holds layer-list entries PARTS[j]..PARTS[j+1]-1; a plain
    # module, every entry.
    names = ap.LAYER_NAMES
    parts = ap.PARTS if pipelined else [0, len(names)]
    stages = []
    for j in range(len(parts) - 1):
        blocks = [int(n[5:]) for n in names[parts[j]:parts[j + 1]] if re.fullmatch(r"block\d+", n)]
        stages.append([blocks])
    return {"params": None, "stages": stages, "coords": coords, "facts": facts}


def torchtitan(out):
    sys.path.insert(0, out)
    import torch
    from torchtitan.config.manager import ConfigManager
    cfg = ConfigManager().parse_args(["--module", "amp_torchtitan", "--config", "amp_plan"])
    spec = cfg.model_spec
    mc = spec.model
    mc.update_from_config(config=cfg)
    with torch.device("meta"):
        model = mc.build()
    params, _ = mc.get_nparams_and_flops(model, cfg.training.seq_len)
    par = cfg.parallelism
    world = int(os.environ["AMP_WORLD_SIZE"])
    dp = par.data_parallel_replicate_degree * max(par.data_parallel_shard_degree, 1)
    gbs = cfg.training.global_batch_size
    accumulation = gbs // (cfg.training.local_batch_size * dp)
    pp_micro = (cfg.training.local_batch_size // par.pipeline_parallel_microbatch_size
                if par.pipeline_parallel_degree > 1 else 1)
    facts = {"num_microbatches": accumulation * pp_micro, "dp": dp,
             "flavor": f"{spec.name} {spec.flavor}",
             "param_dtype": cfg.training.mixed_precision_param,
             "ac": type(cfg.activation_checkpoint).__qualname__ if cfg.activation_checkpoint else None,
             "optimizer_implementation": cfg.optimizer.implementation,
             "loss": type(cfg.loss).__qualname__,
             "tp": par.tensor_parallel_degree,
             "sequence_parallel": par.enable_sequence_parallel,
             "compile": list(cfg.compile.components) if cfg.compile.enable else None,
             "cuda_graphs": not cfg.training.disable_cuda_graphs}
    # The rotary rescaling every block's attention is configured with.
    ropes = {(r.scaling, r.scaling_factor if r.scaling == "llama" else None)
             for r in (l.attention.rope for l in mc.layers)}
    facts["rope_scaling"] = sorted(ropes, key=str)
    # Pipeline stages: the module names of each part, resolved on the model.
    stages = []
    parts = par.module_fqns_per_model_part or [[n for n, _ in model.named_children()]]
    for fqns in parts:
        blocks = []
        for f in fqns:
            if f == "layers":
                blocks += [int(k) for k in model.layers.keys()]
                continue
            model.get_submodule(f)  # raises on a name the model lacks
            if f.startswith("layers."):
                blocks.append(int(f.split(".")[1]))
        stages.append([blocks])
    # Rank coordinates from torchtitan's own device mesh, one fake process
    # group per rank.
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore
    from torchtitan.distributed.parallel_dims import ParallelDims
    coords = {}
    for r in range(world):
        dist.init_process_group("fake", store=FakeStore(), rank=r, world_size=world)
        pd = ParallelDims.from_config(par, world)
        pd.build_mesh()

        def idx(name):
            try:
                mesh = pd.get_mesh(name)
            except ValueError:  # a dimension of size 1 has no mesh
                return 0
            return mesh.mesh.flatten().tolist().index(r)
        coords[r] = [idx("pp"), idx("batch"), idx("tp")]
        dist.destroy_process_group()
    return {"params": params, "stages": stages, "coords": coords, "facts": facts}


def main():
    engine, out = sys.argv[1], sys.argv[2]
    fn = {"megatron": megatron, "deepspeed": deepspeed_check, "torchtitan": torchtitan}[engine]
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # engines print; keep stdout for the result
    try:
        res = fn(out)
        res["coords"] = {str(k): v for k, v in res["coords"].items()}
    except BaseException as e:  # noqa: BLE001 - any rejection is the result
        traceback.print_exc()
        res = {"error": f"{type(e).__name__}: {e}".strip()[:400]}
    real_stdout.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
