//! The analytic compute model against the per-layer times Sailor measured
//! (tests/data/sailor_blocks.json: the first transformer block of OPT-350,
//! GPT-Neo-2.7, OPT-30 and Sailor's LLAMA-3-8 on A100-40/80, V100-16,
//! GH200, RTX 2080 Ti, RTX 3090 and Titan RTX, micro-batches 1..128,
//! tensor parallelism 1..8).
//!
//! Sailor trains in FP32 storage (its llm_info.json counts 4 bytes per
//! parameter and activation) with materialised attention; on Ampere and
//! later GPUs PyTorch's matmuls run in TF32. The model is run with
//! `Precision::Tf32` (FP32 on Volta/Turing, which lack TF32) and explicit
//! attention, and with nothing else changed: no constant is fitted here.
//!
//! Sailor's layer times include the layer's tensor-parallel all-reduces
//! (two in forward, two in backward, of the block's output); the analytic
//! model predicts compute only, so the test adds all-reduce times from
//! Sailor's own measured intra-node bandwidth curves
//! (network/intra_node_bandwidths.json).

use std::collections::BTreeMap;

use amp_catalog::analytic::{layer_estimate, AnalyticOptions, AttentionImpl, Constants, Precision};
use amp_catalog::catalog;
use amp_catalog::zoo::Arch;
use serde_json::Value;

const DATA: &str = include_str!("data/sailor_blocks.json");

/// The models of Sailor's profiles, as Sailor describes them
/// (training/*.json and llm_info.json).
fn sailor_arch(model: &str) -> Arch {
    match model {
        // hidden 1024, 16 heads, sequence 2048, GPT-style block (12 h^2 + 13 h).
        "OPT-350" => Arch::gpt(model, 1024, 24, 16, 50272, 2050, 2048),
        // hidden 2560, 32 heads of 80, sequence 2048 (training/gpt-neo-2.7b.json).
        "GPT-Neo-2.7" => Arch::gpt(model, 2560, 32, 32, 50304, 2048, 2048),
        // hidden 7168, 56 heads, sequence 2048 (llm_info: blocks of 12 h^2 + 13 h).
        "OPT-30" => Arch::gpt(model, 7168, 48, 56, 50272, 2050, 2048),
        // llm_info: hidden 4096, sequence 8192, blocks of 16 h^2 weights
        // (attention 4 h^2 and a gated MLP of 3 h x 4 h), 32 heads.
        "LLAMA-3-8" => {
            let mut a = Arch::llama(model, 4096, 32, 32, 32, 16384, 50304, 8192);
            a.flash_attention = false;
            a
        }
        other => panic!("unknown Sailor model {other}"),
    }
}

/// GPU names of Sailor's files in the catalog. Sailor's "RTX-2080" nodes
/// have 11 GiB GPUs (cluster_config.json): RTX 2080 Ti.
fn sailor_gpu(name: &str) -> &str {
    match name {
        "RTX-2080" => "RTX-2080Ti",
        other => other,
    }
}

/// Sailor's all-reduce time over `n` GPUs of a node for `bytes`: 2 (n - 1)
/// sends of bytes / n at the fitted bandwidth of that message size.
fn allreduce_s(curves: &Value, gpu: &str, n: usize, bytes: f64) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    let by_n = curves[gpu].as_object().unwrap();
    let key = by_n
        .keys()
        .filter_map(|k| k.parse::<usize>().ok())
        .filter(|k| *k <= n)
        .max()
        .unwrap_or(2)
        .to_string();
    let entry = &by_n[&key];
    let coef: Vec<f64> = entry[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let max_gbs = entry[1].as_f64().unwrap() / 1e9;
    let msg = bytes / n as f64;
    let x = (msg / 1e6).log2();
    let gbs = (coef[0] * x * x + coef[1] * x + coef[2]).clamp(0.1, max_gbs);
    2.0 * (n as f64 - 1.0) * msg / 1e9 / gbs
}

struct Row {
    model: String,
    gpu: String,
    mb: usize,
    tp: usize,
    fwd: (f64, f64),
    bwd: (f64, f64),
}

fn predictions() -> Vec<Row> {
    let data: Value = serde_json::from_str(DATA).unwrap();
    let cat = catalog();
    let c = Constants::builtin();
    let opts = AnalyticOptions {
        precision: Precision::Tf32,
        attention: Some(AttentionImpl::Explicit),
        causal: true,
        engine: None,
        optimizer_step: None,
        cross_entropy: None,
        block_kernels: None,
        compiled: false,
    };
    let mut models = BTreeMap::new();
    let mut rows = Vec::new();
    for r in data["blocks"].as_array().unwrap() {
        let model = r["model"].as_str().unwrap().to_string();
        let sailor_name = r["gpu"].as_str().unwrap();
        let mb = r["micro_batch"].as_u64().unwrap() as usize;
        let tp = r["tp"].as_u64().unwrap() as usize;
        let m = models
            .entry(model.clone())
            .or_insert_with(|| sailor_arch(&model).build(None).unwrap());
        let gpu = cat.gpu(sailor_gpu(sailor_name)).unwrap();
        let est = layer_estimate(m, 1, gpu, tp, mb, &opts, &c);
        let sh = m.shape.as_ref().unwrap();
        let out_bytes = (mb as u64 * sh.seq_len * sh.hidden) as f64 * 4.0;
        let comm = 2.0 * allreduce_s(&data["intra_node_bandwidths"], sailor_name, tp, out_bytes);
        rows.push(Row {
            model,
            gpu: sailor_name.to_string(),
            mb,
            tp,
            fwd: (est.forward_s + comm, r["forward_s"].as_f64().unwrap()),
            bwd: (est.backward_s + comm, r["backward_s"].as_f64().unwrap()),
        });
    }
    rows
}

fn rel(p: (f64, f64)) -> f64 {
    (p.0 - p.1).abs() / p.1
}

#[test]
fn analytic_block_times_track_sailor_measurements() {
    let rows = predictions();
    let mut groups: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut all = Vec::new();
    for r in &rows {
        let (ef, eb) = (rel(r.fwd), rel(r.bwd));
        println!(
            "{:12} {:10} mb {:3} tp {}: fwd {:8.4} vs {:8.4} ({:+5.0}%)  bwd {:8.4} vs {:8.4} ({:+5.0}%)",
            r.model,
            r.gpu,
            r.mb,
            r.tp,
            r.fwd.0,
            r.fwd.1,
            (r.fwd.0 / r.fwd.1 - 1.0) * 100.0,
            r.bwd.0,
            r.bwd.1,
            (r.bwd.0 / r.bwd.1 - 1.0) * 100.0
        );
        let g = groups.entry((r.model.clone(), r.gpu.clone())).or_default();
        g.push(ef);
        g.push(eb);
        all.push(ef);
        all.push(eb);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!("\nmean relative error (forward and backward) per model and GPU:");
    for ((m, g), v) in &groups {
        println!(
            "  {m:12} {g:10} {:5.1}%  ({} times)",
            100.0 * mean(v),
            v.len()
        );
    }
    let mut sorted = all.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = sorted[sorted.len() / 2];
    println!(
        "overall: mean {:.1}%, median {:.1}% over {} times",
        100.0 * mean(&all),
        100.0 * median,
        all.len()
    );
    assert_eq!(rows.len(), 213);
    assert!(mean(&all) < 0.35, "mean error {:.3}", mean(&all));
}
