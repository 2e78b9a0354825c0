//! The largest inputs amp accepts, in one place.
//!
//! Every number a user gives (in a file, a shorthand or on the command line)
//! is checked against these bounds where it enters, before anything is
//! built from it, so that every input inside them plans in bounded time and
//! memory and no arithmetic on them can overflow. Inputs outside them are
//! refused with an error naming the field and the bound. The bounds are far
//! above the largest real training jobs (Llama 3 405B: 16,384 GPUs, 126
//! layers, 2,048 sequences per batch).

/// GPUs in a cluster, all nodes together.
pub const MAX_GPUS: usize = 65_536;
/// Nodes in a cluster (after `count` expansion).
pub const MAX_NODES: usize = 16_384;
/// GPUs in one node.
pub const MAX_GPUS_PER_NODE: usize = 64;
/// Network interfaces of one node.
pub const MAX_NICS_PER_NODE: usize = 64;
/// Pair-specific links in a cluster.
pub const MAX_LINKS: usize = 65_536;
/// GPU definitions in one cluster file (`[[gpus]]`): a cluster has a
/// handful of GPU kinds.
pub const MAX_GPU_DEFINITIONS: usize = 256;
/// Bandwidth of any link, Gbit/s (a petabit per second).
pub const MAX_GBPS: f64 = 1e6;
/// Memory of one GPU, GiB.
pub const MAX_GPU_MEMORY_GIB: f64 = 1e6;
/// A GPU's peak rate in a cluster file's GPU definition: TFLOP/s, or GB/s of
/// memory bandwidth (a thousand times today's largest of either).
pub const MAX_GPU_RATE: f64 = 1e7;
/// Bytes a model keeps on every GPU besides its layers
/// ([`crate::model::Model::resident_bytes_per_device`]): a GPU's memory at
/// its limit, 1e6 GiB.
pub const MAX_RESIDENT_BYTES: u64 = 1_000_000 << 30;
/// Layers in a model's layer list.
pub const MAX_LAYERS: usize = 8_192;
/// Pipeline stages times layers of one candidate: the partitioner's tables
/// (time, send and memory per stage and layer) and its dynamic program hold
/// this many cells, so the search skips (and says so) candidates above it.
/// 1,024 x 1,024, the most any candidate needed when models had at most
/// 1,024 layers: an 8,192-layer list is searched up to pp 128.
pub const MAX_STAGE_LAYER_CELLS: usize = 1 << 20;
/// Parameters of one layer (10 trillion).
pub const MAX_LAYER_PARAMS: u64 = 10_000_000_000_000;
/// Elements of one layer's output, or its stored activations, per sample.
pub const MAX_LAYER_ELEMS: u64 = 1 << 40;
/// Forward FLOPs of one layer for one sample.
pub const MAX_LAYER_FLOPS: f64 = 1e21;
/// A profiled time of one layer, seconds (a day).
pub const MAX_LAYER_TIME_S: f64 = 86_400.0;
/// Samples per iteration, over all replicas.
pub const MAX_GLOBAL_BATCH: usize = 1 << 24;
/// Micro-batches per iteration of one replica: candidates needing more are
/// skipped by the search, plans with more are refused.
pub const MAX_MICRO_BATCHES: usize = 4_096;
/// Samples in one micro-batch (and the micro-batch of a profile entry).
pub const MAX_MICRO_BATCH: usize = 1 << 24;
/// Tensor-parallel degree of a profile entry.
pub const MAX_TP: usize = MAX_GPUS_PER_NODE;
/// Entries in a profile.
pub const MAX_PROFILE_ENTRIES: usize = 65_536;
/// Sequence length of a transformer, tokens.
pub const MAX_SEQ: u64 = 1 << 20;
/// Hidden size, FFN size and head dimension of a transformer.
pub const MAX_HIDDEN: u64 = 1 << 18;
/// Attention heads (and key/value heads) of a transformer.
pub const MAX_HEADS: u64 = 1 << 12;
/// Vocabulary size of a transformer.
pub const MAX_VOCAB: u64 = 1 << 24;
/// Model chunks per device of an interleaved schedule.
pub const MAX_VIRTUAL_STAGES: usize = MAX_LAYERS;

/// `Err(message)` when `v` is not a finite number in `0..=max` (or
/// `0<..=max` when `positive`).
pub fn check_f64(v: f64, positive: bool, max: f64) -> Result<(), String> {
    if v.is_nan() {
        return Err("is NaN; give a number".into());
    }
    if !v.is_finite() {
        return Err(format!("is infinite; give a finite number (at most {max})"));
    }
    if v < 0.0 {
        return Err(format!("is negative ({v}); give a non-negative number"));
    }
    if positive && v == 0.0 {
        return Err("is 0; give a positive number".into());
    }
    if v > max {
        return Err(format!("is {v}, above the limit of {max}"));
    }
    Ok(())
}

/// `Err(message)` when `v` is not in `min..=max`.
pub(crate) fn check_count(v: u64, min: u64, max: u64) -> Result<(), String> {
    if v < min {
        return Err(if v == 0 {
            format!("is 0; it must be at least {min}")
        } else {
            format!("is {v}; it must be at least {min}")
        });
    }
    if v > max {
        return Err(format!("is {v}, above the limit of {max}"));
    }
    Ok(())
}
