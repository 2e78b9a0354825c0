//! Prints analytic per-block forward/backward times and achieved TFLOP/s of
//! GPT blocks on a GPU: `cargo run -p amp-catalog --example analytic_table -- H200`.
use amp_catalog::analytic::{layer_estimate, AnalyticOptions, Constants};
use amp_catalog::catalog;
use amp_catalog::zoo::Arch;

fn main() {
    let gpu_name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "H200".to_string());
    let cat = catalog();
    let gpu = match cat.gpu(&gpu_name) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let c = Constants::builtin();
    let opts = AnalyticOptions::default();
    println!("{} ({:?}), per block, seq 2048", gpu.name, opts.precision);
    for h in [768u64, 1024, 2048, 4096, 8192] {
        let m = Arch::gpt("gpt", h, 2, h / 64, 50257, 2048, 2048)
            .build(None)
            .unwrap();
        for tp in [1usize, 2, 4, 8] {
            for mb in [1usize, 4, 16] {
                let e = layer_estimate(&m, 1, gpu, tp, mb, &opts, &c);
                let flops = m.layers[1].forward_flops_per_sample.unwrap() * mb as f64 / tp as f64;
                println!(
                    "h {h:5} tp {tp} mb {mb:2}: fwd {:8.3} ms ({:5.0} TF/s) bwd {:8.3} ms ({:5.0} TF/s) adam {:.3} ms",
                    e.forward_s * 1e3,
                    flops / e.forward_s / 1e12,
                    e.backward_s * 1e3,
                    2.0 * flops / e.backward_s / 1e12,
                    e.optimizer_s * 1e3
                );
            }
        }
    }
}
