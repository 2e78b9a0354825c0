//! `amp_planner._amp`: the native half of the `amp_planner` Python package.
//!
//! It adds no planning logic. `run` runs the `amp` command in-process
//! (`amp_cli::run`), so Python gets the CLI's numbers and messages exactly;
//! `model_info` returns amp's layer list for a model together with the
//! architecture it was built from, which the profiler turns into PyTorch
//! modules; `catalog_gpu` resolves a GPU name against the hardware catalog.
//! The Python package (`python/amp_planner`) wraps these three.

use std::path::Path;

use amp_catalog::zoo::{Arch, Family, Norm};
use amp_core::model::Model;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyRuntimeError};
use pyo3::prelude::*;
use serde_json::{json, Value};

create_exception!(
    _amp,
    AmpError,
    PyException,
    "An error reported by amp, with the message the `amp` command prints."
);

/// Runs the `amp` command line `args` (argv[0] first) in-process and returns
/// `(exit status, stdout, stderr)`.
#[pyfunction]
fn run(py: Python<'_>, args: Vec<String>) -> PyResult<(i32, String, String)> {
    let result = py.detach(move || {
        std::panic::catch_unwind(move || {
            let mut out: Vec<u8> = Vec::new();
            let mut err: Vec<u8> = Vec::new();
            let code = amp_cli::run(args, &mut out, &mut err);
            (code, out, err)
        })
    });
    match result {
        Ok((code, out, err)) => Ok((
            code,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )),
        Err(_) => Err(PyRuntimeError::new_err(
            "amp panicked; please report this with the arguments that caused it",
        )),
    }
}

fn norm_name(n: Norm) -> &'static str {
    match n {
        Norm::LayerNorm => "layer_norm",
        Norm::RmsNorm => "rms_norm",
    }
}

fn arch_json(a: &Arch) -> Value {
    let family = match a.family {
        Family::Decoder => json!({"kind": "decoder"}),
        Family::Bert => json!({"kind": "bert"}),
        Family::Vit {
            patch,
            image,
            channels,
            classes,
        } => json!({"kind": "vit", "patch": patch, "image": image,
                    "channels": channels, "classes": classes}),
    };
    json!({
        "name": a.name,
        "family": family,
        "hidden": a.hidden,
        "layers": a.layers,
        "heads": a.heads,
        "kv_heads": a.kv_heads,
        "head_dim": a.head_dim,
        "ffn": a.ffn,
        "gated": a.gated,
        "vocab": a.vocab,
        "positions": a.positions,
        "norm": norm_name(a.norm),
        "qkv_bias": a.qkv_bias,
        "qk_norm": a.qk_norm,
        "geglu": a.geglu,
        "post_norms": a.post_norms,
        "model_type": a.model_type,
        "out_bias": a.out_bias,
        "mlp_bias": a.mlp_bias,
        "tied": a.tied,
        "final_norm": a.final_norm,
        "embed_dim": a.embed_dim,
        "dropout": a.dropout,
        "flash_attention": a.flash_attention,
    })
}

/// The model `spec` names, read as `amp --model spec --seq seq` reads it, and
/// the transformer architecture it was built from (None for layer-list files
/// and AMP's own two models, which have none).
fn load(spec: &str, seq: Option<u64>) -> Result<(Model, Option<Arch>), String> {
    let path = Path::new(spec);
    if path.is_file() {
        let origin = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {origin}: {e}"))?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        return match ext.as_str() {
            "toml" => Model::from_toml_str(&text, &origin)
                .map(|m| (m, None))
                .map_err(|e| e.to_string()),
            "json" if text.contains("\"layers\"") => Model::from_json_str(&text, &origin)
                .map(|m| (m, None))
                .map_err(|e| e.to_string()),
            "json" => {
                let model = amp_catalog::model_from_hf_config(&text, &origin, seq)
                    .map_err(|e| e.to_string())?;
                let arch = amp_catalog::hf::arch_from_hf_config(&text, &origin)
                    .map_err(|e| e.to_string())?;
                Ok((model, Some(arch)))
            }
            other => Err(format!(
                "{origin}: unknown model file type `.{other}`; use a .toml or .json layer list"
            )),
        };
    }
    let model = match (seq, amp_core::model::builtin::by_name(spec)) {
        (None, Some(m)) => m,
        _ => amp_catalog::zoo_model(spec, seq)
            .map_err(|e| format!("{e} (or give a model file: no file `{spec}` exists)"))?,
    };
    Ok((model, amp_catalog::zoo::zoo_arch(spec)))
}

/// amp's layer list for `model` (a zoo name or a file path) at sequence
/// length `seq`, as JSON: `{"model": <amp's model format>, "arch": <the
/// transformer's shape and options, or null>}`.
#[pyfunction]
#[pyo3(signature = (model, seq=None))]
fn model_info(model: &str, seq: Option<u64>) -> PyResult<String> {
    let (m, arch) = load(model, seq).map_err(AmpError::new_err)?;
    let v = json!({"model": m, "arch": arch.as_ref().map(arch_json)});
    Ok(v.to_string())
}

/// The catalog's canonical name of the GPU `name` (any of its aliases);
/// raises AmpError with the nearest names when it is unknown.
#[pyfunction]
fn catalog_gpu(name: &str) -> PyResult<String> {
    amp_catalog::catalog()
        .gpu(name)
        .map(|g| g.name.clone())
        .map_err(|e| AmpError::new_err(e.to_string()))
}

/// Every GPU of the catalog as `(name, aliases, memory bytes)`.
#[pyfunction]
fn catalog_gpus() -> Vec<(String, Vec<String>, u64)> {
    amp_catalog::catalog()
        .gpus
        .iter()
        .map(|g| (g.name.clone(), g.aliases.clone(), g.memory_bytes()))
        .collect()
}

#[pymodule]
fn _amp(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("AmpError", m.py().get_type::<AmpError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(model_info, m)?)?;
    m.add_function(wrap_pyfunction!(catalog_gpu, m)?)?;
    m.add_function(wrap_pyfunction!(catalog_gpus, m)?)?;
    Ok(())
}
