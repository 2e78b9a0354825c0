//! Fuzz target: amp's own runs file (`amp_data::runs_file::parse`). What it
//! accepts must hold the checks its readers rely on.
#![no_main]

use amp_core::validate::Outcome;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(spec) = amp_data::runs_file::parse(text, "runs.toml") {
        assert!(!spec.runs.is_empty() && spec.runs.len() <= amp_data::runs_file::MAX_RUNS);
        for r in &spec.runs {
            assert!(r.rank >= 1);
            match r.outcome {
                Outcome::Completed(s) => assert!(s.is_finite() && s > 0.0),
                Outcome::Failed => {
                    assert!(r.memory_used_bytes.is_none() && r.grad_reduce_s.is_none())
                }
            }
            if let Some(m) = r.memory_used_bytes {
                assert!(m.is_finite() && m > 0.0);
            }
            if let Some(g) = r.grad_reduce_s {
                assert!(g.is_finite() && g >= 0.0);
            }
        }
    }
});
