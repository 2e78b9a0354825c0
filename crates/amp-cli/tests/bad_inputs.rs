//! Bad input, table-driven: every reader and every subcommand, each case
//! asserting the exit status and the key words of the message. Run in
//! process through `amp_cli::run` (what the binary calls), plus the binary
//! itself for a closed or full standard output.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{amp, stderr, stdout};

/// One case: input files (name, contents) written to a fresh directory,
/// the command line (`{d}` stands for that directory), the exit status and
/// words the error must contain (all of them, case-sensitive).
struct Case {
    name: &'static str,
    files: &'static [(&'static str, &'static str)],
    args: &'static str,
    status: i32,
    words: &'static [&'static str],
}

/// A runs file on the homogeneous example's model and cluster, then `extra`.
macro_rules! runs {
    ($($extra:expr),*) => {
        concat!("model = \"gpt2-amp\"\ncluster = \"homogeneous\"\n" $(, $extra)*)
    };
}

macro_rules! cluster {
    ($($extra:expr),*) => {
        concat!("[[nodes]]\ngpu = \"T4\"\ngpus = 4\nintra_gbps = 50\ninter_gbps = 50\n" $(, $extra)*)
    };
}

macro_rules! model {
    ($($extra:expr),*) => {
        concat!("name = \"m\"\n[[layers]]\nname = \"e\"\nkind = \"embedding\"\nparams = 1000\noutput_elems_per_sample = 10\n" $(, $extra)*)
    };
}

macro_rules! profile30 {
    ($field:expr, $value:expr) => {
        concat!(
            "[[entries]]\ngpu = \"T4\"\ntp = 1\nforward_s = [0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001,0.001]\n",
            $field, " = ", $value, "\n"
        )
    };
}

const PLAN_OK: &str = r#"{"micro_batch": 1, "num_micro_batches": 8, "stages": [{"first_layer": 0, "end_layer": 30, "replicas": [[{"node": 0, "gpu": 0}]]}]}"#;

/// `amp plan` on a model file (`{d}/m.toml`) and a small cluster.
const PLAN_M: &str = "plan --model {d}/m.toml --cluster 1x4xT4 --global-batch 8 -q";
/// `amp plan` on a cluster file (`{d}/c.toml`) and a zoo model.
const PLAN_C: &str = "plan --model gpt2 --cluster {d}/c.toml --global-batch 8 -q";
const PLAN_CJ: &str = "plan --model gpt2 --cluster {d}/c.json --global-batch 8 -q";
const PLAN_HF: &str = "plan --model {d}/config.json --cluster 1x4xT4 --global-batch 8 -q";
const PLAN_P: &str =
    "plan --model gpt2-amp --cluster homogeneous --profile {d}/p.toml --global-batch 32 -q";
const PLAN_PJ: &str =
    "plan --model gpt2-amp --cluster homogeneous --profile {d}/p.json --global-batch 32 -q";
/// A one-stage Sailor plan_config on one GH200 node.
const SAILOR_PLAN: &str = r#"{"zone": "us-central1-a", "pipeline_list": [{"num_stages": 1, "layers_per_stage": [[0, 1]], "tmp_per_stage": [[[[["GH-96", 4, "us-central1-a"]], 4]]], "dp": [1]}], "mbs": 1, "gbs": 8}"#;
const EVAL: &str = "eval {d}/plan.json --example homogeneous";
const EXPORT: &str = "export {d}/plan.json --example homogeneous --to megatron --out {d}/out";

const CASES: &[Case] = &[
    // ---- cluster TOML ----
    Case { name: "link with three nodes", files: &[("c.toml", cluster!("count = 3\n[[links]]\nnodes = [0, 1, 2]\ngbps = 5\n"))], args: PLAN_C, status: 1, words: &["c.toml", "links[0]", "exactly two"] },
    Case { name: "link with one node", files: &[("c.toml", cluster!("count = 3\n[[links]]\nnodes = [0]\ngbps = 5\n"))], args: PLAN_C, status: 1, words: &["links[0]", "exactly two"] },
    Case { name: "repeated link", files: &[("c.toml", cluster!("count = 3\n[[links]]\nnodes = [0, 1]\ngbps = 5\n[[links]]\nnodes = [0, 1]\ngbps = 7\n"))], args: PLAN_C, status: 1, words: &["links[1]", "again", "links[0]"] },
    Case { name: "repeated link, reversed", files: &[("c.toml", cluster!("count = 3\n[[links]]\nnodes = [0, 2]\ngbps = 5\n[[links]]\nnodes = [2, 0]\ngbps = 7\n"))], args: PLAN_C, status: 1, words: &["links[1]", "again"] },
    Case { name: "link to itself", files: &[("c.toml", cluster!("count = 2\n[[links]]\nnodes = [1, 1]\ngbps = 5\n"))], args: PLAN_C, status: 1, words: &["links[0]", "itself"] },
    Case { name: "link to a missing node", files: &[("c.toml", cluster!("count = 2\n[[links]]\nnodes = [0, 9]\ngbps = 5\n"))], args: PLAN_C, status: 1, words: &["links[0]", "nodes 0..1"] },
    Case { name: "link of 0 Gbit/s", files: &[("c.toml", cluster!("count = 2\n[[links]]\nnodes = [0, 1]\ngbps = 0\n"))], args: PLAN_C, status: 1, words: &["links[0]", "gbps", "is 0"] },
    Case { name: "link of NaN Gbit/s", files: &[("c.toml", cluster!("count = 2\n[[links]]\nnodes = [0, 1]\ngbps = nan\n"))], args: PLAN_C, status: 1, words: &["links[0]", "gbps", "NaN"] },
    Case { name: "link of infinite Gbit/s", files: &[("c.toml", cluster!("count = 2\n[[links]]\nnodes = [0, 1]\ngbps = inf\n"))], args: PLAN_C, status: 1, words: &["links[0]", "gbps", "infinite"] },
    Case { name: "node with 0 GPUs", files: &[("c.toml", "[[nodes]]\ngpu = \"T4\"\ngpus = 0\nintra_gbps = 50\ninter_gbps = 50\n")], args: PLAN_C, status: 1, words: &["c.toml", "node 0", "gpus = 0"] },
    Case { name: "node with 65 GPUs", files: &[("c.toml", "[[nodes]]\ngpu = \"T4\"\ngpus = 65\nintra_gbps = 50\ninter_gbps = 50\n")], args: PLAN_C, status: 1, words: &["nodes[0]", "gpus", "limit of 64"] },
    Case { name: "node count 0", files: &[("c.toml", cluster!("count = 0\n"))], args: PLAN_C, status: 1, words: &["nodes[0]", "count = 0"] },
    Case { name: "node count 10^9", files: &[("c.toml", cluster!("count = 1000000000\n"))], args: PLAN_C, status: 1, words: &["nodes[0]", "count = 1000000000", "limit"] },
    Case { name: "too many GPUs in all", files: &[("c.toml", "[[nodes]]\ngpu = \"T4\"\ngpus = 64\nintra_gbps = 50\ninter_gbps = 50\ncount = 2000\n")], args: PLAN_C, status: 1, words: &["more than 65536 GPUs"] },
    Case { name: "0 NICs", files: &[("c.toml", cluster!("nics = 0\n"))], args: PLAN_C, status: 1, words: &["nodes[0]", "nics", "at least 1"] },
    Case { name: "10^6 NICs", files: &[("c.toml", cluster!("nics = 1000000\n"))], args: PLAN_C, status: 1, words: &["nodes[0]", "nics", "limit of 64"] },
    Case { name: "negative bandwidth", files: &[("c.toml", "[[nodes]]\ngpu = \"T4\"\ngpus = 4\nintra_gbps = -1\ninter_gbps = 50\n")], args: PLAN_C, status: 1, words: &["nodes[0]", "intra_gbps is negative (-1 Gbit/s); give a non-negative number"] },
    Case { name: "NaN bandwidth", files: &[("c.toml", "[[nodes]]\ngpu = \"T4\"\ngpus = 4\nintra_gbps = 50\ninter_gbps = nan\n")], args: PLAN_C, status: 1, words: &["nodes[0]", "inter_gbps", "NaN"] },
    Case { name: "huge bandwidth, said readably", files: &[("c.toml", "[[nodes]]\ngpu = \"T4\"\ngpus = 4\nintra_gbps = 1e300\ninter_gbps = 50\n")], args: PLAN_C, status: 1, words: &["intra_gbps is 1e300 Gbit/s, above the limit of 1000000 Gbit/s"] },
    Case { name: "bandwidth below a megabit", files: &[("c.toml", "[[nodes]]\ngpu = \"T4\"\ngpus = 4\nintra_gbps = 1e-300\ninter_gbps = 50\n")], args: PLAN_C, status: 1, words: &["nodes[0]", "intra_gbps is 1e-300 Gbit/s, below the floor of 0.001 Gbit/s"] },
    Case { name: "link below a megabit", files: &[("c.toml", cluster!("count = 2\n[[links]]\nnodes = [0, 1]\ngbps = 0.0001\n"))], args: PLAN_C, status: 1, words: &["links[0]", "gbps is 0.0001 Gbit/s, below the floor of 0.001 Gbit/s"] },
    Case { name: "GPU rate below a GFLOP/s", files: &[("c.toml", "[[gpus]]\nname = \"slow\"\nlike = \"T4\"\nfp16_tflops = 1e-30\n[[nodes]]\ngpu = \"slow\"\ngpus = 4\nintra_gbps = 50\ninter_gbps = 50\n")], args: PLAN_C, status: 1, words: &["gpus[0]", "`slow`: fp16_tflops is 1e-30, below the floor of 0.001"] },
    Case { name: "GPU memory too close to 0", files: &[("c.toml", "[[nodes]]\ngpu = \"T4\"\ngpus = 4\nintra_gbps = 50\ninter_gbps = 50\ngpu_memory_gib = 1e-320\n")], args: PLAN_C, status: 1, words: &["gpu_memory_gib is 1e-320, too close to 0"] },
    Case { name: "shorthand bandwidth below a megabit", files: &[], args: "plan --model gpt2 --cluster 2x8xH100@0.0001Gbps --global-batch 8", status: 1, words: &["`0.0001Gbps`", "below the floor of 0.001 Gbit/s"] },
    Case { name: "0 GiB of GPU memory", files: &[("c.toml", cluster!("gpu_memory_gib = 0\n"))], args: PLAN_C, status: 1, words: &["nodes[0]", "gpu_memory_gib", "is 0"] },
    Case { name: "empty GPU name", files: &[("c.toml", "[[nodes]]\ngpu = \" \"\ngpus = 4\nintra_gbps = 50\ninter_gbps = 50\n")], args: PLAN_C, status: 1, words: &["gpu is empty"] },
    Case { name: "no nodes", files: &[("c.toml", "name = \"x\"\nnodes = []\n")], args: PLAN_C, status: 1, words: &["no nodes"] },
    Case { name: "duplicate key in cluster TOML", files: &[("c.toml", cluster!("gpus = 8\n"))], args: PLAN_C, status: 1, words: &["c.toml", "cannot parse", "duplicate key"] },
    Case { name: "unknown field in cluster TOML", files: &[("c.toml", cluster!("gpu_count = 8\n"))], args: PLAN_C, status: 1, words: &["c.toml", "unknown field `gpu_count`"] },
    Case { name: "wrong type in cluster TOML", files: &[("c.toml", "[[nodes]]\ngpu = \"T4\"\ngpus = \"four\"\nintra_gbps = 50\ninter_gbps = 50\n")], args: PLAN_C, status: 1, words: &["c.toml", "cannot parse", "gpus"] },
    // ---- cluster JSON ----
    Case { name: "duplicate key in cluster JSON", files: &[("c.json", r#"{"nodes": [{"gpu": "T4", "gpus": 4, "gpus": 8, "intra_gbps": 50, "inter_gbps": 50}]}"#)], args: PLAN_CJ, status: 1, words: &["c.json", "duplicate"] },
    Case { name: "duplicate top-level key in cluster JSON", files: &[("c.json", r#"{"name": "a", "name": "b", "nodes": [{"gpu": "T4", "gpus": 4, "intra_gbps": 50, "inter_gbps": 50}]}"#)], args: PLAN_CJ, status: 1, words: &["c.json", "duplicate"] },
    Case { name: "link with three nodes in JSON", files: &[("c.json", r#"{"nodes": [{"gpu": "T4", "gpus": 4, "intra_gbps": 50, "inter_gbps": 50, "count": 3}], "links": [{"nodes": [0, 1, 2], "gbps": 5}]}"#)], args: PLAN_CJ, status: 1, words: &["links[0]", "exactly two"] },
    Case { name: "negative GPUs in JSON", files: &[("c.json", r#"{"nodes": [{"gpu": "T4", "gpus": -4, "intra_gbps": 50, "inter_gbps": 50}]}"#)], args: PLAN_CJ, status: 1, words: &["c.json", "cannot parse", "-4"] },
    Case { name: "cluster JSON that is not JSON", files: &[("c.json", "nodes: [T4]")], args: PLAN_CJ, status: 1, words: &["c.json", "cannot parse"] },
    Case { name: "cluster file of unknown type", files: &[("c.yaml", "nodes: []")], args: "plan --model gpt2 --cluster {d}/c.yaml --global-batch 8", status: 1, words: &["unknown cluster file type `.yaml`"] },
    // ---- cluster shorthand ----
    Case { name: "shorthand with 0 nodes", files: &[], args: "plan --model gpt2 --cluster 0x8xH100 --global-batch 8", status: 1, words: &["node count is 0"] },
    Case { name: "shorthand with 0 GPUs per node", files: &[], args: "plan --model gpt2 --cluster 1x0xH100 --global-batch 8", status: 1, words: &["GPUs per node is 0"] },
    Case { name: "shorthand node counts overflowing", files: &[], args: "plan --model gpt2 --cluster 18446744073709551615x8xH100@100Gbps+1x8xH100@100Gbps --global-batch 8", status: 1, words: &["more than 16384 nodes"] },
    Case { name: "shorthand with 10^9 nodes", files: &[], args: "plan --model gpt2 --cluster 1000000000x8xH100@100Gbps --global-batch 8", status: 1, words: &["more than 16384 nodes"] },
    Case { name: "shorthand with 65 GPUs per node", files: &[], args: "plan --model gpt2 --cluster 1x65xH100 --global-batch 8", status: 1, words: &["65 GPUs per node", "limit of 64"] },
    Case { name: "shorthand count too long for a number", files: &[], args: "plan --model gpt2 --cluster 99999999999999999999999x8xH100 --global-batch 8", status: 1, words: &["shorthand", "node count"] },
    Case { name: "shorthand unknown GPU", files: &[], args: "plan --model gpt2 --cluster 1x8xH1000 --global-batch 8", status: 1, words: &["unknown", "H1000"] },
    Case { name: "shorthand bad bandwidth", files: &[], args: "plan --model gpt2 --cluster 2x8xH100@fastGbps --global-batch 8", status: 1, words: &["bandwidth", "number"] },
    Case { name: "shorthand stray plus", files: &[], args: "plan --model gpt2 --cluster 1x8xH100+ --global-batch 8", status: 1, words: &["is empty"] },
    // ---- model layer list ----
    Case { name: "empty layer list", files: &[("m.toml", "name = \"m\"\nlayers = []\n")], args: PLAN_M, status: 1, words: &["m.toml", "layer list is empty"] },
    Case { name: "resident bytes above the limit", files: &[("m.toml", "name = \"m\"\nresident_bytes_per_device = 2000000000000000\n[[layers]]\nname = \"e\"\nkind = \"embedding\"\nparams = 1000\noutput_elems_per_sample = 10\n")], args: PLAN_M, status: 1, words: &["m.toml", "model `m`", "resident_bytes_per_device is 2000000000000000, above the limit"] },
    Case { name: "negative resident bytes", files: &[("m.toml", "name = \"m\"\nresident_bytes_per_device = -1\n[[layers]]\nname = \"e\"\nkind = \"embedding\"\nparams = 1000\noutput_elems_per_sample = 10\n")], args: PLAN_M, status: 1, words: &["m.toml", "line 2", "expected u64"] },
    Case { name: "replicated share without its whole", files: &[("m.toml", model!("replicated_activation_elems_per_sample = 5\n"))], args: PLAN_M, status: 1, words: &["m.toml", "layers[0]", "replicated_activation_elems_per_sample = 5 is a share of stored_activation_elems_per_sample", "give stored_activation_elems_per_sample too"] },
    Case { name: "replicated share above its whole", files: &[("m.toml", model!("backward_transient_elems_per_sample = 4\nreplicated_backward_transient_elems_per_sample = 5\n"))], args: PLAN_M, status: 1, words: &["m.toml", "replicated_backward_transient_elems_per_sample = 5 is above backward_transient_elems_per_sample = 4"] },
    Case { name: "tied to a later layer", files: &[("m.toml", model!("tied_to = 0\n"))], args: PLAN_M, status: 1, words: &["m.toml", "tied_to = 0", "earlier layer"] },
    Case { name: "NaN FLOPs", files: &[("m.toml", model!("forward_flops_per_sample = nan\n"))], args: PLAN_M, status: 1, words: &["m.toml", "layers[0]", "forward_flops_per_sample", "NaN"] },
    Case { name: "infinite FLOPs", files: &[("m.toml", model!("forward_flops_per_sample = inf\n"))], args: PLAN_M, status: 1, words: &["m.toml", "forward_flops_per_sample", "infinite"] },
    Case { name: "negative FLOPs", files: &[("m.toml", model!("forward_flops_per_sample = -1e9\n"))], args: PLAN_M, status: 1, words: &["forward_flops_per_sample", "negative"] },
    Case { name: "huge parameter count", files: &[("m.toml", "name = \"m\"\n[[layers]]\nname = \"e\"\nkind = \"embedding\"\nparams = 9000000000000000000\noutput_elems_per_sample = 10\n")], args: PLAN_M, status: 1, words: &["m.toml", "params", "limit"] },
    Case { name: "huge output", files: &[("m.toml", "name = \"m\"\n[[layers]]\nname = \"e\"\nkind = \"embedding\"\nparams = 1\noutput_elems_per_sample = 9000000000000000000\n")], args: PLAN_M, status: 1, words: &["output_elems_per_sample", "limit"] },
    Case { name: "unknown layer kind", files: &[("m.toml", "name = \"m\"\n[[layers]]\nname = \"e\"\nkind = \"attention\"\nparams = 1\noutput_elems_per_sample = 10\n")], args: PLAN_M, status: 1, words: &["m.toml", "unknown variant `attention`"] },
    Case { name: "missing field", files: &[("m.toml", "name = \"m\"\n[[layers]]\nname = \"e\"\nkind = \"embedding\"\nparams = 1\n")], args: PLAN_M, status: 1, words: &["m.toml", "missing field `output_elems_per_sample`"] },
    Case { name: "duplicate key in model TOML", files: &[("m.toml", model!("params = 5\n"))], args: PLAN_M, status: 1, words: &["m.toml", "duplicate key"] },
    Case { name: "duplicate key in model JSON", files: &[("m.json", r#"{"name": "m", "layers": [{"name": "e", "kind": "embedding", "params": 1, "params": 2, "output_elems_per_sample": 10}]}"#)], args: "plan --model {d}/m.json --cluster 1x4xT4 --global-batch 8", status: 1, words: &["m.json", "duplicate"] },
    Case { name: "model file of unknown type", files: &[("m.txt", "layers")], args: "plan --model {d}/m.txt --cluster 1x4xT4 --global-batch 8", status: 1, words: &["unknown model file type `.txt`"] },
    // ---- Hugging Face config ----
    Case { name: "HF config with 0 heads", files: &[("config.json", r#"{"model_type": "gpt2", "n_embd": 768, "n_head": 0, "n_layer": 12}"#)], args: PLAN_HF, status: 1, words: &["config.json", "n_head", "is 0"] },
    Case { name: "HF config with 2^62 layers", files: &[("config.json", r#"{"model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_layer": 4611686018427387904}"#)], args: PLAN_HF, status: 1, words: &["config.json", "n_layer", "limit"] },
    Case { name: "HF config with 9000 layers", files: &[("config.json", r#"{"model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_layer": 9000}"#)], args: PLAN_HF, status: 1, words: &["config.json", "number of layers 9000", "limit"] },
    Case { name: "HF config with a huge hidden size", files: &[("config.json", r#"{"model_type": "llama", "hidden_size": 16000000, "num_attention_heads": 1, "num_hidden_layers": 2, "intermediate_size": 10, "vocab_size": 10}"#)], args: PLAN_HF, status: 1, words: &["config.json", "hidden size", "limit"] },
    Case { name: "HF config heads not dividing hidden", files: &[("config.json", r#"{"model_type": "gpt2", "n_embd": 770, "n_head": 12, "n_layer": 2}"#)], args: PLAN_HF, status: 1, words: &["config.json", "not divisible"] },
    Case { name: "HF config of a Mixture-of-Experts model", files: &[("config.json", r#"{"model_type": "mixtral", "hidden_size": 4096, "num_local_experts": 8}"#)], args: PLAN_HF, status: 1, words: &["`mixtral` is not supported", "Mixture-of-Experts", "`num_local_experts` = 8", "supported model types"] },
    Case { name: "HF config without its width", files: &[("config.json", r#"{"model_type": "opt", "num_attention_heads": 16, "num_hidden_layers": 2}"#)], args: PLAN_HF, status: 1, words: &["config.json", "missing `hidden_size`", "a config of model type `opt` must give it"] },
    Case { name: "HF config of unsupported type", files: &[("config.json", r#"{"model_type": "mamba"}"#)], args: PLAN_HF, status: 1, words: &["config.json", "`mamba` is not supported"] },
    Case { name: "HF config with a duplicate key", files: &[("config.json", r#"{"model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_layer": 12, "n_layer": 24}"#)], args: PLAN_HF, status: 1, words: &["config.json", "duplicate key `n_layer`"] },
    Case { name: "HF config with a string size", files: &[("config.json", r#"{"model_type": "gpt2", "n_embd": "768", "n_head": 12, "n_layer": 12}"#)], args: PLAN_HF, status: 1, words: &["n_embd", "non-negative integer"] },
    Case { name: "HF config with a negative size", files: &[("config.json", r#"{"model_type": "gpt2", "n_embd": -768, "n_head": 12, "n_layer": 12}"#)], args: PLAN_HF, status: 1, words: &["n_embd", "non-negative integer"] },
    Case { name: "HF config, sequence beyond positions", files: &[("config.json", r#"{"model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_layer": 2}"#)], args: "plan --model {d}/config.json --seq 4096 --cluster 1x4xT4 --global-batch 8", status: 1, words: &["sequence length 4096", "learned positions"] },
    // ---- zoo names and --seq ----
    Case { name: "unknown zoo model", files: &[], args: "plan --model gpt7 --cluster 1x4xT4 --global-batch 8", status: 1, words: &["unknown", "gpt7"] },
    Case { name: "AMP's GPT-2 with another --seq", files: &[], args: "plan --model gpt2-amp --seq 2048 --cluster homogeneous --global-batch 8", status: 1, words: &["gpt2-amp", "fixed sequence length", "--seq"] },
    Case { name: "an example at another --seq", files: &[], args: "plan --example het-cluster --seq 2048", status: 1, words: &["--example het-cluster", "fixed sequence length (1024), not 2048", "leave --seq out"] },
    Case { name: "the TransGAN example with a --seq", files: &[], args: "plan --example het-model --seq 64", status: 1, words: &["--example het-model", "no sequence length", "leave --seq out"] },
    Case { name: "--seq 0", files: &[], args: "plan --model gpt2 --seq 0 --cluster 1x4xT4 --global-batch 8", status: 1, words: &["sequence length 0"] },
    Case { name: "--seq 0 on a rotary zoo model (no file hint)", files: &[], args: "plan --model llama3-8b --seq 0 --cluster 1x4xT4 --global-batch 8", status: 1, words: &["sequence length 0", "give a positive sequence length\n"] },
    Case { name: "HF config with a partial rotary embedding", files: &[("config.json", r#"{"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192, "num_attention_heads": 32, "num_hidden_layers": 32, "vocab_size": 200064, "partial_rotary_factor": 0.75}"#)], args: PLAN_HF, status: 1, words: &["config.json: `partial_rotary_factor`", "0.75", "whole heads"] },
    Case { name: "--seq above the limit", files: &[], args: "plan --model llama3-8b --seq 1073741824 --cluster 1x4xT4 --global-batch 8", status: 1, words: &["--seq 1073741824", "limit"] },
    Case { name: "--seq not a number", files: &[], args: "plan --model gpt2 --seq many --cluster 1x4xT4 --global-batch 8", status: 2, words: &["--seq", "many"] },
    // ---- profiles ----
    Case { name: "a valid measured-micro-batch profile plans", files: &[("p.toml", profile30!("micro_batch", "1"))], args: "plan --model gpt2-amp --cluster homogeneous --profile {d}/p.toml --global-batch 32 -q", status: 0, words: &[] },
    Case { name: "profile tp = 0 refused", files: &[("p.toml", "[[entries]]\ngpu = \"T4\"\ntp = 0\nforward_s = [0.1]\n")], args: PLAN_P, status: 1, words: &["p.toml", "entries[0]", "tp is 0"] },
    Case { name: "profile micro_batch = 0", files: &[("p.toml", profile30!("micro_batch", "0"))], args: PLAN_P, status: 1, words: &["p.toml", "entries[0]", "micro_batch is 0"] },
    Case { name: "profile NaN time", files: &[("p.toml", "[[entries]]\ngpu = \"T4\"\ntp = 1\nforward_s = [0.1, nan]\n")], args: PLAN_P, status: 1, words: &["p.toml", "forward_s[1]", "NaN"] },
    Case { name: "profile time of 1e308 s", files: &[("p.toml", "[[entries]]\ngpu = \"T4\"\ntp = 1\nforward_s = [1e308]\n")], args: PLAN_P, status: 1, words: &["p.toml", "forward_s[0]", "limit"] },
    Case { name: "profile negative time", files: &[("p.toml", "[[entries]]\ngpu = \"T4\"\ntp = 1\nforward_s = [-0.1]\n")], args: PLAN_P, status: 1, words: &["forward_s[0]", "negative"] },
    Case { name: "profile infinite backward", files: &[("p.toml", profile30!("backward_s", "[inf]"))], args: PLAN_P, status: 1, words: &["backward_s[0]", "infinite"] },
    Case { name: "profile repeated entry", files: &[("p.toml", "[[entries]]\ngpu = \"T4\"\ntp = 1\nforward_s = [0.1]\n[[entries]]\ngpu = \"T4\"\ntp = 1\nforward_s = [0.2]\n")], args: PLAN_P, status: 1, words: &["p.toml", "entries[1]", "repeats entries[0]"] },
    Case { name: "profile tp above the limit", files: &[("p.toml", "[[entries]]\ngpu = \"T4\"\ntp = 1000\nforward_s = [0.1]\n")], args: PLAN_P, status: 1, words: &["tp is 1000", "limit"] },
    Case { name: "profile with the wrong layer count", files: &[("p.toml", "[[entries]]\ngpu = \"T4\"\ntp = 1\nforward_s = [0.1, 0.2]\n")], args: PLAN_P, status: 1, words: &["2 layer times", "30 layers"] },
    Case { name: "profile JSON duplicate key", files: &[("p.json", r#"{"entries": [{"gpu": "T4", "tp": 1, "tp": 2, "forward_s": [0.1]}]}"#)], args: PLAN_PJ, status: 1, words: &["p.json", "duplicate"] },
    Case { name: "profile JSON negative tp", files: &[("p.json", r#"{"entries": [{"gpu": "T4", "tp": -1, "forward_s": [0.1]}]}"#)], args: PLAN_PJ, status: 1, words: &["p.json", "cannot parse"] },
    Case { name: "profile of unknown type", files: &[("p.csv", "gpu,tp")], args: "plan --model gpt2-amp --cluster homogeneous --profile {d}/p.csv --global-batch 32", status: 1, words: &["unknown profile type `.csv`"] },
    Case { name: "profile not covering a GPU type", files: &[("p.toml", "[[entries]]\ngpu = \"V100-16GB\"\ntp = 1\nforward_s = [0.1]\n")], args: "plan --model {d}/m.toml --cluster 1x4xT4 --profile {d}/p.toml --no-analytic --global-batch 8", status: 1, words: &["m.toml"] },
    Case { name: "two profile files with one entry", files: &[("a.toml", "[[entries]]\ngpu = \"T4\"\ntp = 1\nforward_s = [0.1]\n"), ("b.toml", "[[entries]]\ngpu = \"T4\"\ntp = 1\nforward_s = [0.2]\n"), ("m.toml", model!())], args: "plan --model {d}/m.toml --cluster 1x4xT4 --profile {d}/a.toml --profile {d}/b.toml --global-batch 8", status: 1, words: &["two --profile files", "same GPU"] },
    Case { name: "garbage .npy", files: &[("gpt2_G4_1.npy", "not numpy")], args: "plan --model gpt2-amp --cluster homogeneous --profile {d}/gpt2_G4_1.npy --global-batch 32", status: 1, words: &["gpt2_G4_1.npy", "cannot parse"] },
    Case { name: ".npy with a bad name", files: &[("weights.npy", "x")], args: "plan --model gpt2-amp --cluster homogeneous --profile {d}/weights.npy --global-batch 32", status: 1, words: &["weights.npy", "not an AMP profile name"] },
    Case { name: ".npy with tp 0 in its name", files: &[("gpt2_G4_0.npy", "x")], args: "plan --model gpt2-amp --cluster homogeneous --profile {d}/gpt2_G4_0.npy --global-batch 32", status: 1, words: &["gpt2_G4_0.npy", "tensor-parallel degree 0"] },
    Case { name: "profile directory without .npy", files: &[("x.txt", "")], args: "plan --model gpt2-amp --cluster homogeneous --profile {d} --global-batch 32", status: 1, words: &["no .npy profile files"] },
    // ---- plan JSON: eval and export ----
    Case { name: "plan with a duplicate key", files: &[("plan.json", r#"{"micro_batch": 1, "micro_batch": 8, "num_micro_batches": 8, "stages": []}"#)], args: EVAL, status: 1, words: &["plan.json", "duplicate key `micro_batch`"] },
    Case { name: "plan with micro_batch 0", files: &[("plan.json", r#"{"micro_batch": 0, "num_micro_batches": 8, "stages": [{"first_layer": 0, "end_layer": 30, "replicas": [[{"node": 0, "gpu": 0}]]}]}"#)], args: EVAL, status: 1, words: &["plan.json", "at least 1"] },
    Case { name: "plan with 10^7 micro-batches", files: &[("plan.json", r#"{"micro_batch": 1, "num_micro_batches": 10000000, "stages": [{"first_layer": 0, "end_layer": 30, "replicas": [[{"node": 0, "gpu": 0}]]}]}"#)], args: EVAL, status: 1, words: &["num_micro_batches = 10000000", "limit"] },
    Case { name: "plan whose batch overflows", files: &[("plan.json", r#"{"micro_batch": 4611686018427387904, "num_micro_batches": 4, "stages": [{"first_layer": 0, "end_layer": 30, "replicas": [[{"node": 0, "gpu": 0}]]}]}"#)], args: EVAL, status: 1, words: &["plan.json", "limit"] },
    Case { name: "export of a plan whose batch overflows", files: &[("plan.json", r#"{"micro_batch": 16777216, "num_micro_batches": 4096, "stages": [{"first_layer": 0, "end_layer": 30, "replicas": [[{"node": 0, "gpu": 0}]]}]}"#)], args: EXPORT, status: 1, words: &["plan.json", "samples per iteration"] },
    Case { name: "plan using a device twice", files: &[("plan.json", r#"{"micro_batch": 1, "num_micro_batches": 8, "stages": [{"first_layer": 0, "end_layer": 10, "replicas": [[{"node": 0, "gpu": 0}]]}, {"first_layer": 10, "end_layer": 30, "replicas": [[{"node": 0, "gpu": 0}]]}]}"#)], args: EVAL, status: 1, words: &["used twice"] },
    Case { name: "plan on a missing device", files: &[("plan.json", r#"{"micro_batch": 1, "num_micro_batches": 8, "stages": [{"first_layer": 0, "end_layer": 30, "replicas": [[{"node": 7, "gpu": 0}]]}]}"#)], args: EVAL, status: 1, words: &["node 7", "not in the cluster"] },
    Case { name: "plan missing layers", files: &[("plan.json", r#"{"micro_batch": 1, "num_micro_batches": 8, "stages": [{"first_layer": 0, "end_layer": 20, "replicas": [[{"node": 0, "gpu": 0}]]}]}"#)], args: EVAL, status: 1, words: &["stages end at layer 20", "30 layers"] },
    Case { name: "plan with negative micro-batch", files: &[("plan.json", r#"{"micro_batch": -1, "num_micro_batches": 8, "stages": []}"#)], args: EVAL, status: 1, words: &["plan.json", "cannot parse"] },
    Case { name: "plan with a wrong type deep inside", files: &[("plan.json", r#"{"micro_batch": 1, "num_micro_batches": 8, "stages": [{"first_layer": 0, "end_layer": 30, "replicas": [[{"node": 0, "gpu": "zero"}]]}]}"#)], args: EVAL, status: 1, words: &["plan.json", "cannot parse", "`stages[0].replicas[0][0].gpu`", "expected usize"] },
    Case { name: "plan of a plan list with a wrong type", files: &[("plan.json", r#"{"schema_version": 2, "plans": [{"micro_batch": 1, "num_micro_batches": 8, "stages": []}, {"micro_batch": "two", "num_micro_batches": 8, "stages": []}]}"#)], args: "eval {d}/plan.json --example homogeneous --rank 2", status: 1, words: &["plan.json", "`plans[1].micro_batch`"] },
    Case { name: "plan made for an unknown kernel", files: &[("plan.json", r#"{"micro_batch": 1, "num_micro_batches": 8, "stages": [{"first_layer": 0, "end_layer": 30, "replicas": [[{"node": 0, "gpu": 0}]]}], "made_for": {"model": "gpt2-amp", "gelu": "magic"}}"#)], args: EVAL, status: 1, words: &["plan.json", "`made_for`, at `gelu`", "unknown variant `magic`"] },
    Case { name: "plan rank beyond the file", files: &[("plan.json", r#"{"schema_version": 1, "plans": [{"micro_batch": 1, "num_micro_batches": 8, "stages": [{"first_layer": 0, "end_layer": 30, "replicas": [[{"node": 0, "gpu": 0}]]}]}]}"#)], args: "eval {d}/plan.json --example homogeneous --rank 5", status: 1, words: &["plan.json", "rank 5", "1 plans"] },
    Case { name: "plan that is not JSON", files: &[("plan.json", "{micro_batch: 1}")], args: EVAL, status: 1, words: &["plan.json", "cannot parse"] },
    Case { name: "plan without stages", files: &[("plan.json", r#"{"micro_batch": 1, "num_micro_batches": 8}"#)], args: EVAL, status: 1, words: &["no `stages` field"] },
    Case { name: "plan with a misspelt setup", files: &[("plan.json", r#"{"micro_batch": 1, "num_micro_batches": 8, "stages": [{"first_layer": 0, "end_layer": 30, "replicas": [[{"node": 0, "gpu": 0}]]}], "setpu": {"recompute": "full"}}"#)], args: EVAL, status: 1, words: &["plan.json", "unknown field `setpu`", "did you mean `setup`?"] },
    Case { name: "bf16 on profiled GPUs without it", files: &[], args: "plan --example het-cluster --precision bf16", status: 1, words: &["precision bf16", "T4 (Turing) has no bf16 tensor cores", "--precision fp16"] },
    Case { name: "a host named twice", files: &[], args: "plan --example homogeneous --emit deepspeed --out {d}/ds --hosts a,b,a,c", status: 1, words: &["--hosts names host `a` twice", "nodes 0 and 2", "one host per cluster node"] },
    Case { name: "a hostfile naming a host twice", files: &[("hosts", "hostA slots=4\nhostB slots=4\nhostA slots=4\nhostC slots=4\n")], args: "plan --example homogeneous --emit deepspeed --out {d}/ds --hostfile {d}/hosts", status: 1, words: &["names host `hostA` twice", "nodes 0 and 2"] },
    Case { name: "plan file missing", files: &[], args: "eval {d}/nowhere.json --example homogeneous", status: 1, words: &["cannot read", "nowhere.json"] },
    Case { name: "export with nothing to do", files: &[("plan.json", PLAN_OK)], args: "export {d}/plan.json --example homogeneous", status: 1, words: &["nothing to do"] },
    Case { name: "export with --out but no --to", files: &[("plan.json", PLAN_OK)], args: "export {d}/plan.json --example homogeneous --out {d}/o", status: 2, words: &["--to"] },
    // ---- command-line numbers and flags ----
    Case { name: "--global-batch 0", files: &[], args: "plan --model gpt2 --cluster 1x4xT4 --global-batch 0", status: 1, words: &["--global-batch 0", "outside"] },
    Case { name: "--global-batch 2^40", files: &[], args: "plan --model gpt2 --cluster 1x4xT4 --global-batch 1099511627776", status: 1, words: &["--global-batch 1099511627776", "outside"] },
    Case { name: "--global-batch 10^9+7", files: &[], args: "plan --model gpt2 --cluster 1x4xT4 --global-batch 1000000007", status: 1, words: &["outside"] },
    Case { name: "--global-batch negative", files: &[], args: "plan --model gpt2 --cluster 1x4xT4 --global-batch -1", status: 2, words: &["'-1'"] },
    Case { name: "uneven replicas under the artifact's equations", files: &[], args: "plan --example het-cluster --cost-model amp-paper --uneven-dp", status: 1, words: &["--uneven-dp does not apply to --cost-model amp-paper", "drop it"] },
    Case { name: "bf16 on GPUs without bf16", files: &[], args: "plan --model gpt2 --cluster 1x4xV100 --global-batch 8 --precision bf16 -q", status: 1, words: &["precision bf16: V100-16GB (Volta) has no bf16 tensor cores", "plan it with --precision fp16"] },
    Case { name: "bf16 on T4s under torchtitan", files: &[], args: "plan --model llama3-8b --cluster 1x4xT4 --global-batch 8 --precision bf16 --engine torchtitan -q", status: 1, words: &["T4 (Turing) has no bf16 tensor cores", "plan it with --precision fp32"] },
    Case { name: "fp16 on T4s under torchtitan", files: &[], args: "plan --model llama3-8b --cluster 1x4xT4 --global-batch 8 --precision fp16 --engine torchtitan -q", status: 1, words: &["torchtitan trains in bf16 or fp32", "no bf16 tensor cores", "plan it with --precision fp32"] },
    Case { name: "tp comm overlap without sequence parallelism", files: &[], args: "plan --model llama3-8b --cluster 1x8xH100 --global-batch 8 --engine megatron --tp-comm-overlap -q", status: 1, words: &["only under sequence parallelism", "--sequence-parallel"] },
    Case { name: "tp comm overlap off Megatron-LM", files: &[], args: "plan --model llama3-8b --cluster 1x8xH100 --global-batch 8 --engine torchtitan --sequence-parallel --tp-comm-overlap -q", status: 1, words: &["Megatron-LM's `--tp-comm-overlap`", "not torchtitan's", "target megatron"] },
    Case { name: "bf16 gradients off Megatron-LM", files: &[], args: "plan --model llama3-8b --cluster 1x8xH100 --global-batch 8 --grad-reduce-in-bf16 -q", status: 1, words: &["--grad-reduce-in-bf16 is Megatron-LM's flag", "--engine megatron"] },
    Case { name: "bf16 gradients under fp16", files: &[], args: "plan --model llama3-8b --cluster 1x8xH100 --global-batch 8 --engine megatron --precision fp16 --grad-reduce-in-bf16 -q", status: 1, words: &["needs --precision bf16 or fp8", "fp16 already"] },
    Case { name: "FP8 on GPUs without FP8", files: &[], args: "plan --model llama3-8b --cluster 1x8xA100-80GB --global-batch 8 --precision fp8 --engine megatron -q", status: 1, words: &["precision fp8: A100-80GB (Ampere) has no FP8 tensor cores", "plan it with --precision bf16"] },
    Case { name: "FP8 without Megatron-LM", files: &[], args: "plan --model llama3-8b --cluster 1x8xH100 --global-batch 8 --precision fp8 -q", status: 1, words: &["FP8 is priced as Megatron-LM trains it", "not for plain PyTorch", "`--engine megatron`"] },
    Case { name: "a budget on a cluster without prices", files: &[], args: "plan --model gpt2 --cluster 1x4xT4 --global-batch 8 --max-usd-per-hour 10", status: 1, words: &["a budget needs a price per hour", "price_per_hour"] },
    Case { name: "a budget that is not a number", files: &[], args: "plan --example het-cluster --max-usd-per-hour nan", status: 2, words: &["finite number of dollars above 0"] },
    Case { name: "a budget below every set of GPUs", files: &[], args: "plan --example het-cluster --max-usd-per-hour 0.5", status: 1, words: &["no plan costs at most $0.50 per hour", "raise --max-usd-per-hour"] },
    Case { name: "--global-batch 10^6 on 4 GPUs", files: &[], args: "plan --model gpt2 --cluster 1x4xT4 --global-batch 1000000 -q", status: 1, words: &["could not be priced", "4096 micro-batches"] },
    Case { name: "--top 0", files: &[], args: "plan --example homogeneous --top 0 -q", status: 1, words: &["--top"] },
    Case { name: "interleaved:0", files: &[], args: "plan --example homogeneous --schedule interleaved:0", status: 2, words: &["interleaved:V"] },
    Case { name: "interleaved too deep", files: &[], args: "plan --example homogeneous --schedule interleaved:100000", status: 2, words: &["interleaved:V"] },
    Case { name: "unknown subcommand", files: &[], args: "train --example homogeneous", status: 2, words: &["unrecognized subcommand"] },
    Case { name: "only a tp that splits no head fits the sizes", files: &[], args: "plan --model llama-3.2-1b --seq 1024 --cluster 5x7xH100@100Gbps --global-batch 64 -q", status: 1, words: &["no (tp, dp, pp) for 35 GPUs, 19 layers and global batch 64", "the sizes allow tp 7 alone", "tp 7 does not divide", "--subsets"] },
    Case { name: "plan without a model", files: &[], args: "plan --cluster 1x4xT4 --global-batch 8", status: 2, words: &["--model"] },
    Case { name: "unknown flag", files: &[], args: "plan --example homogeneous --fastest", status: 2, words: &["--fastest"] },
    Case { name: "validate a missing directory", files: &[], args: "validate {d}/none", status: 1, words: &["no such file or directory", "runs.toml"] },
    Case { name: "validate a folder of nothing amp reads", files: &[("e/notes.txt", "")], args: "validate {d}/e", status: 1, words: &["no measured runs found", "runs.toml", "AMP artifact's layout"] },
    // ---- amp's own runs file ----
    Case { name: "runs file: a run with two outcomes", files: &[("r/plan.json", PLAN_OK), ("r/runs.toml", runs!("[[run]]\nplan = \"plan.json\"\niteration_s = 1.5\nout_of_memory = true\n"))], args: "validate {d}/r", status: 1, words: &["runs.toml, run 1 (plan `plan.json`)", "both `iteration_s` and `out_of_memory = true`"] },
    Case { name: "runs file: a run with no outcome", files: &[("r/plan.json", PLAN_OK), ("r/runs.toml", runs!("[[run]]\nplan = \"plan.json\"\n"))], args: "fit {d}/r", status: 1, words: &["run 1", "records no outcome", "iteration_s"] },
    Case { name: "runs file: a negative time", files: &[("r/plan.json", PLAN_OK), ("r/runs.toml", runs!("[[run]]\nplan = \"plan.json\"\niteration_s = -2.0\n"))], args: "validate {d}/r/runs.toml", status: 1, words: &["run 1", "`iteration_s = -2` must be a positive number"] },
    Case { name: "runs file: a reduction longer than its iteration", files: &[("r/plan.json", PLAN_OK), ("r/runs.toml", runs!("[[run]]\nplan = \"plan.json\"\niteration_s = 1.5\ngrad_reduce_s = 2.0\n"))], args: "validate {d}/r", status: 1, words: &["run 1", "`grad_reduce_s = 2` is longer than the iteration", "`iteration_s = 1.5`"] },
    Case { name: "runs file: a reading above the GPU's memory", files: &[("r/plan.json", PLAN_OK), ("r/runs.toml", runs!("[[run]]\nplan = \"plan.json\"\niteration_s = 1.5\nmemory_used_mib = 15500000.0\n"))], args: "validate {d}/r", status: 1, words: &["run 1 (plan `plan.json`)", "`memory_used_mib = 15500000` is more than any GPU of the plan holds (15360 MiB)", "in MiB"] },
    Case { name: "runs file: memory of a run out of memory", files: &[("r/plan.json", PLAN_OK), ("r/runs.toml", runs!("[[run]]\nplan = \"plan.json\"\nout_of_memory = true\nmemory_used_mib = 15000.0\n"))], args: "validate {d}/r", status: 1, words: &["no steady-state readings", "memory_used_mib"] },
    Case { name: "runs file: a misspelt key", files: &[("r/plan.json", PLAN_OK), ("r/runs.toml", runs!("[[run]]\nplan = \"plan.json\"\niteration = 1.5\n"))], args: "validate {d}/r", status: 1, words: &["runs.toml: not an amp runs file", "unknown field `iteration`", "Your own runs"] },
    Case { name: "runs file: a repeated key", files: &[("r/plan.json", PLAN_OK), ("r/runs.toml", runs!("[[run]]\nplan = \"plan.json\"\niteration_s = 1.5\niteration_s = 1.6\n"))], args: "validate {d}/r", status: 1, words: &["not an amp runs file", "duplicate key"] },
    Case { name: "runs file: no runs", files: &[("r/runs.toml", runs!())], args: "validate {d}/r", status: 1, words: &["no [[run]] tables"] },
    Case { name: "runs file: a plan file that is not there", files: &[("r/runs.toml", runs!("[[run]]\nplan = \"gone.json\"\niteration_s = 1.5\n"))], args: "validate {d}/r", status: 1, words: &["run 1 (plan `gone.json`)", "cannot read", "gone.json"] },
    Case { name: "runs file: a plan off the cluster", files: &[("r/plan.json", r#"{"micro_batch": 1, "num_micro_batches": 8, "stages": [{"first_layer": 0, "end_layer": 30, "replicas": [[{"node": 9, "gpu": 0}]]}]}"#), ("r/runs.toml", runs!("[[run]]\nplan = \"plan.json\"\niteration_s = 1.5\n"))], args: "validate {d}/r", status: 1, words: &["run 1", "cannot run model `gpt2-amp`", "not in the cluster"] },
    Case { name: "runs file: an unknown attention kernel", files: &[("r/runs.toml", "model = \"gpt2\"\ncluster = \"1x4xT4\"\nattention = \"flash\"\n[[run]]\nplan = \"p.json\"\niteration_s = 1.0\n")], args: "validate {d}/r", status: 1, words: &["`attention = \"flash\"` is not one of fused, explicit"] },
    Case { name: "runs file: an unknown setup flag", files: &[("r/plan.json", PLAN_OK), ("r/runs.toml", runs!("[setup]\noptimiser = \"fused\"\n[[run]]\nplan = \"plan.json\"\niteration_s = 1.5\n"))], args: "validate {d}/r", status: 1, words: &["runs.toml [setup]", "'--optimiser'", "training-setup flags without the dashes"] },
    Case { name: "runs file: a setup value amp does not know", files: &[("r/plan.json", PLAN_OK), ("r/runs.toml", runs!("[setup]\noptimizer_step = \"fast\"\n[[run]]\nplan = \"plan.json\"\niteration_s = 1.5\n"))], args: "validate {d}/r", status: 1, words: &["runs.toml [setup]", "unknown optimizer step `fast`"] },
    Case { name: "runs file: an unknown model", files: &[("r/runs.toml", "model = \"gpt9\"\ncluster = \"1x4xT4\"\n[[run]]\nplan = \"p.json\"\niteration_s = 1.0\n")], args: "validate {d}/r", status: 1, words: &["reading the model, cluster and profiles it names", "gpt9"] },
    Case { name: "validate a CSV of no experiment", files: &[("ds/measured/mine.csv", "micro_batch,tp\n")], args: "validate {d}/ds", status: 1, words: &["mine.csv", "must name an AMP experiment"] },
    Case { name: "validate a broken CSV", files: &[("ds/measured/homogeneous.csv", "micro_batch,tp,dp,pp,stage_boundaries,measured_s\nx,1,1,1,0 30,1\n")], args: "validate {d}/ds", status: 1, words: &["homogeneous.csv"] },
    Case { name: "validate an AMP folder whose profile does not read", files: &[("ds/measured/homogeneous.csv", "micro_batch,tp,dp,pp,stage_boundaries,measured_s\n1,1,8,2,0 15 30,1.28\n"), ("ds/profiles/gpt2_G4_1.npy", "not numpy")], args: "validate {d}/ds", status: 1, words: &["profiles/gpt2_G4_1.npy", "cannot parse"] },
    Case { name: "validate with an unknown cost model", files: &[], args: "validate {d} --cost-model magic", status: 1, words: &["unknown cost model `magic`"] },
    Case { name: "Sailor plan priced as an amp plan", files: &[("plan.json", SAILOR_PLAN)], args: EVAL, status: 1, words: &["plan.json", "is a Sailor plan_config", "--sailor-data DIR"] },
    Case { name: "Sailor plan with a folder that is not Sailor's", files: &[("plan.json", SAILOR_PLAN)], args: "eval {d}/plan.json --sailor-data {d} --model OPT-350", status: 1, words: &["--sailor-data", "not a Sailor data folder", "missing"] },
    Case { name: "amp plan with a folder that is not Sailor's", files: &[], args: "plan --sailor-data {d} --model OPT-350 --cluster 2x4xA100-40 --global-batch 8 -q", status: 1, words: &["--sailor-data", "not a Sailor data folder", "missing"] },
    Case { name: "amp plan with a Sailor folder one of whose files does not read", files: &[("s/profiles.json", "{}"), ("s/llm_info.json", "{}"), ("s/network/intra_node_bandwidths.json", "{}"), ("s/network/inter_node_bandwidths.json", "{}"), ("s/training/t.json", r#"{"model": 3}"#)], args: "plan --sailor-data {d}/s --model OPT-350 --cluster 2x4xA100-40 --global-batch 8 -q", status: 1, words: &["--sailor-data", "cannot be read", "t.json"] },
    Case { name: "Sailor training file with a width past amp's limits", files: &[("s/profiles.json", "{}"), ("s/llm_info.json", "{}"), ("s/network/intra_node_bandwidths.json", "{}"), ("s/network/inter_node_bandwidths.json", "{}"), ("s/training/t.json", r#"{"model": "OPT-350", "hidden_size": 4000000000, "sequence_length": 2048, "num_layers": 24, "vocab_size": 50272}"#)], args: "plan --sailor-data {d}/s --model OPT-350 --cluster 2x4xA100-40 --global-batch 8 -q", status: 1, words: &["t.json", "`hidden_size` 4000000000 is above the limit of 262144"] },
    Case { name: "Sailor plan priced on a --cluster", files: &[("plan.json", SAILOR_PLAN)], args: "eval {d}/plan.json --sailor-data {d} --cluster 2x4xA100-40", status: 1, words: &["--cluster does not apply to a Sailor plan", "drop --cluster"] },
    Case { name: "--zone with an engine", files: &[("plan.json", PLAN_OK)], args: "export {d}/plan.json --example homogeneous --to megatron --out {d}/out --zone x", status: 1, words: &["--zone applies only to --to sailor"] },
    Case { name: "export to Sailor on GPUs it has no name for", files: &[("plan.json", PLAN_OK)], args: "export {d}/plan.json --example homogeneous --to sailor --out {d}/out", status: 1, words: &["cannot export for Sailor", "`T4`", "no Sailor name"] },
    Case { name: "validate a Sailor layout with a duplicate key", files: &[("s/profiles.json", "{}"), ("s/llm_info.json", "{}"), ("s/measured/x", ""), ("s/training/t.json", r#"{"model": "a", "model": "b"}"#)], args: "validate {d}/s", status: 1, words: &["t.json", "duplicate key `model`"] },
];

fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (name, contents) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
    }
}

fn case_dir(i: usize) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("amp-bad-inputs-{}/{i}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn every_bad_input_gets_its_status_and_message() {
    assert!(CASES.len() >= 80, "{} cases", CASES.len());
    let mut failures = Vec::new();
    for (i, c) in CASES.iter().enumerate() {
        let dir = case_dir(i);
        write_files(&dir, c.files);
        let d = dir.display().to_string();
        let mut args = vec!["amp".to_string()];
        args.extend(c.args.split_whitespace().map(|a| a.replace("{d}", &d)));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = amp_cli::run(&args, &mut out, &mut err);
        let err = String::from_utf8_lossy(&err).to_string();
        let missing: Vec<&str> = c
            .words
            .iter()
            .copied()
            .filter(|w| !err.contains(w))
            .collect();
        if status != c.status || !missing.is_empty() {
            failures.push(format!(
                "case {i} `{}`: status {status} (expected {}), missing {missing:?} in:\n{err}",
                c.name, c.status
            ));
        }
        if c.status == 1 && !err.starts_with("error: ") {
            failures.push(format!("case {i} `{}`: no `error:` line:\n{err}", c.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The tests that start the binary run one after another in this one test:
/// a child started by another test thread while a pipe is being set up
/// could hold the pipe's read end open.
#[test]
fn the_binary_on_closed_and_full_outputs() {
    closed_stdout_ends_quietly_in_every_subcommand();
    full_stdout_is_one_clear_error();
    run_uses_the_given_writers_and_clap_statuses();
}

/// `amp ... | head -1` : every subcommand ends quietly with 141 when its
/// reader has gone.
fn closed_stdout_ends_quietly_in_every_subcommand() {
    let plan = common::tmp("bad-inputs-plan.json", PLAN_OK);
    let plan = plan.display().to_string();
    let out_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("amp-bad-inputs-out-{}", std::process::id()));
    let out_dir = out_dir.display().to_string();
    // A small AMP-layout dataset of its own: the test needs no shared data.
    let data_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("amp-bad-inputs-data-{}", std::process::id()));
    std::fs::create_dir_all(data_dir.join("measured")).unwrap();
    std::fs::write(
        data_dir.join("measured/homogeneous.csv"),
        "micro_batch,tp,dp,pp,stage_boundaries,measured_s\n1,1,8,2,0 15 30,1.28\n1,1,4,4,0 9 15 21 30,1.2\n",
    )
    .unwrap();
    let data = data_dir.display().to_string();
    let commands: Vec<Vec<&str>> = vec![
        vec![
            "plan",
            "--example",
            "het-cluster",
            "--json",
            "--top",
            "1000",
            "-q",
        ],
        vec!["plan", "--example", "het-cluster", "-q"],
        vec!["eval", &plan, "--example", "homogeneous", "--json"],
        vec!["eval", &plan, "--example", "homogeneous"],
        vec![
            "export",
            &plan,
            "--example",
            "homogeneous",
            "--to",
            "megatron",
            "--out",
            &out_dir,
        ],
        vec!["validate", &data, "--runs"],
        vec!["--help"],
    ];
    for args in commands {
        let o = Command::new(env!("CARGO_BIN_EXE_amp"))
            .args(&args)
            .stdout(closed_pipe())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(141), "{args:?}: {}", stderr(&o));
        assert!(o.stderr.is_empty(), "{args:?}: {}", stderr(&o));
    }
}

/// The write end of a pipe whose reader has already gone: the read end
/// belongs to a `true` process that has exited. (Closing the reader after
/// starting amp would race with amp's writes on a busy machine.)
fn closed_pipe() -> Stdio {
    let mut reader = Command::new("true")
        .stdin(Stdio::piped())
        .spawn()
        .expect("`true` runs");
    let writer = reader.stdin.take().unwrap();
    reader.wait().unwrap();
    Stdio::from(writer)
}

/// `amp ... > /dev/full`: one clear error, status 1.
fn full_stdout_is_one_clear_error() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    for args in [
        vec!["plan", "--example", "homogeneous", "--json", "-q"],
        vec!["plan", "--example", "homogeneous", "-q"],
        vec!["--version"],
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_amp"))
            .args(&args)
            .stdout(full)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let e = stderr(&o);
        assert!(
            e.starts_with("error: cannot write the output"),
            "{args:?}: {e}"
        );
        assert!(e.contains("No space left"), "{args:?}: {e}");
        assert!(!e.contains("panicked"), "{e}");
    }
}

/// The library entry point answers like the binary: help on `out` with 0,
/// usage errors on `err` with clap's 2.
fn run_uses_the_given_writers_and_clap_statuses() {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(amp_cli::run(["amp", "--help"], &mut out, &mut err), 0);
    assert!(String::from_utf8_lossy(&out).contains("Usage: amp"));
    assert!(err.is_empty());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(
        amp_cli::run(["amp", "plan", "--nope"], &mut out, &mut err),
        2
    );
    assert!(out.is_empty());
    assert!(String::from_utf8_lossy(&err).contains("--nope"));
    let o = amp(&["plan", "--nope"]);
    assert_eq!(o.status.code(), Some(2));
    let o = amp(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("amp "), "{}", stdout(&o));
}
