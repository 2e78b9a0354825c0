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
/// Slowest link amp accepts, Gbit/s (a megabit per second, a hundredth of
/// the slowest network any training job runs over): below it no plan's
/// times mean anything, and at 1e-300 they overflow.
pub const MIN_GBPS: f64 = 1e-3;
/// Memory of one GPU, GiB.
pub const MAX_GPU_MEMORY_GIB: f64 = 1e6;
/// A GPU's peak rate in a cluster file's GPU definition: TFLOP/s, or GB/s of
/// memory bandwidth (a thousand times today's largest of either).
pub const MAX_GPU_RATE: f64 = 1e7;
/// The slowest such rate amp accepts (a GFLOP/s, a MB/s: a thousandth of
/// the slowest GPU anyone trains on).
pub const MIN_GPU_RATE: f64 = 1e-3;
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
    check_range(v, if positive { f64::MIN_POSITIVE } else { 0.0 }, max, "")
}

/// `Err(message)` when `v` is not a finite number in `min..=max`, `min`
/// at least 0; a `min` above 0 is a floor a positive `v` must reach
/// (`f64::MIN_POSITIVE`: any positive number of normal size). `unit`
/// follows each bound in the message (` Gbit/s`, or empty).
pub fn check_range(v: f64, min: f64, max: f64, unit: &str) -> Result<(), String> {
    if v.is_nan() {
        return Err("is NaN; give a number".into());
    }
    if !v.is_finite() {
        return Err(format!(
            "is infinite; give a finite number (at most {}{unit})",
            show(max)
        ));
    }
    if v < 0.0 {
        return Err(format!(
            "is negative ({}{unit}); give a non-negative number",
            show(v)
        ));
    }
    if min > 0.0 && v == 0.0 {
        return Err("is 0; give a positive number".into());
    }
    if v < min && min == f64::MIN_POSITIVE {
        return Err(format!(
            "is {}, too close to 0; give a positive number",
            show(v)
        ));
    }
    if v < min {
        return Err(format!(
            "is {}{unit}, below the floor of {}{unit}",
            show(v),
            show(min)
        ));
    }
    if v > max {
        return Err(format!(
            "is {}{unit}, above the limit of {}{unit}",
            show(v),
            show(max)
        ));
    }
    Ok(())
}

/// `v` as a user wrote it, readably: plain for everyday magnitudes,
/// scientific beyond them (`1e300`, not three hundred digits).
pub fn show(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || (1e-4..1e9).contains(&a) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_outside_their_range_are_named_readably() {
        assert_eq!(
            check_range(1e-300, MIN_GBPS, MAX_GBPS, " Gbit/s").unwrap_err(),
            "is 1e-300 Gbit/s, below the floor of 0.001 Gbit/s"
        );
        assert_eq!(
            check_range(1e308, MIN_GBPS, MAX_GBPS, "").unwrap_err(),
            "is 1e308, above the limit of 1000000"
        );
        assert_eq!(
            check_f64(1e-320, true, 1.0).unwrap_err(),
            "is 1e-320, too close to 0; give a positive number"
        );
        assert_eq!(
            check_f64(0.0, true, 1.0).unwrap_err(),
            "is 0; give a positive number"
        );
        assert!(check_f64(0.0, false, 1.0).is_ok());
        assert!(check_range(MIN_GBPS, MIN_GBPS, MAX_GBPS, "").is_ok());
        assert!(check_range(f64::NAN, 0.0, 1.0, "")
            .unwrap_err()
            .contains("NaN"));
        assert_eq!(
            check_range(-1.0, MIN_GBPS, MAX_GBPS, " Gbit/s").unwrap_err(),
            "is negative (-1 Gbit/s); give a non-negative number"
        );
        assert_eq!(show(2.5), "2.5");
        assert_eq!(show(1e9), "1e9");
        assert_eq!(show(-3e-7), "-3e-7");
    }
}
