//! The README's plan-quality table: on the AMP paper's three experiments,
//! amp's best plan (setup and subset search included) next to the best plan
//! of AMP's own space and Megatron-LM's hand recipe, all priced by amp's
//! model. Reproduce with
//! `amp plan --example EXP --search-setup all --subsets --compare`.

mod common;

use common::amp_json;

fn report(example: &str) -> serde_json::Value {
    amp_json(&[
        "plan",
        "--example",
        example,
        "--search-setup",
        "all",
        "--subsets",
        "--compare",
        "--json",
        "--top",
        "1",
        "-q",
    ])
}

fn near(got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 5e-4 * want.max(1.0),
        "{got} vs {want}"
    );
}

#[test]
fn amp_beats_both_baselines_by_the_readme_margins() {
    // (example, amp's best s, AMP's space s, Megatron-LM heuristic s)
    for (example, best, amp_space, megatron) in [
        ("homogeneous", 1.1016, 1.2820, 2.8557),
        ("het-cluster", 1.1290, 1.1369, 4.3784),
        ("het-model", 1.4440, 1.4440, 4.1690),
    ] {
        let v = report(example);
        let t = v["plans"][0]["predicted_iteration_s"].as_f64().unwrap();
        near(t, best);
        let b = v["baselines"].as_array().unwrap();
        let amp_space_s = b[0]["predicted_iteration_s"].as_f64().unwrap();
        let megatron_s = b[1]["predicted_iteration_s"].as_f64().unwrap();
        assert_eq!(b[1]["name"], "Megatron-LM heuristic");
        near(amp_space_s, amp_space);
        near(megatron_s, megatron);
        // amp searches a superset of both: never worse.
        assert!(t <= amp_space_s && t <= megatron_s, "{example}");
    }
}
