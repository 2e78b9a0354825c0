//! Fuzz target: the plan reader (bare plan, {plan: ...}, amp plan --json).
#![no_main]

use libfuzzer_sys::fuzz_target;

use amp_data::amp_artifact::Experiment;
use amp_core::cost::{device::DeviceModel, CostModel, Inputs};

fuzz_target!(|text: &str| {
    // The model record beside the plan (`made_for`), and how a model
    // differs from it.
    if let Ok(Some(record)) = amp_core::plan::ModelRecord::from_plan_json(text, "fuzz.json", Some(1)) {
        for d in record.differences(&Experiment::HetCluster.model()) {
            let _ = d.to_string();
        }
    }
    if let Ok(plan) = amp_core::Plan::from_json_any(text, "fuzz.json", Some(1)) {
        // A plan that passes validation against the AMP het-cluster
        // experiment is priced: pricing must not panic either.
        let e = Experiment::HetCluster;
        let (model, cluster, profile) = (e.model(), e.cluster(), e.profile());
        if plan.validate(&model, &cluster).is_ok() {
            let inputs = Inputs {
                model: &model,
                cluster: &cluster,
                profile: &profile,
            };
            let _ = DeviceModel::default().evaluate(&inputs, &plan);
        }
    }
});
