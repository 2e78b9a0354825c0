//! The hand recipe amp is measured against: Megatron-LM's rule of thumb,
//! "tensor parallelism inside a node, pipeline parallelism across nodes,
//! layers split evenly", priced by the same cost model as amp's own plans.

use crate::cost::{CostModel, Inputs};
use crate::error::{AmpError, Result};
use crate::model::LayerKind;
use crate::placement::{DeviceGrid, Placement};
use crate::search::{divisors, plan_from_grid, RankedPlan};
use crate::setup::TrainingSetup;

/// The transformer blocks split as evenly as they go over `pp` stages
/// (the first stages take one more when they do not divide), the layers
/// before the first block with the first stage and every other layer with
/// the block before it; `None` when there are fewer blocks than stages.
pub fn even_split(model: &crate::model::Model, pp: usize) -> Option<Vec<usize>> {
    let blocks: Vec<usize> = (0..model.num_layers())
        .filter(|&l| model.layers[l].kind == LayerKind::TransformerBlock)
        .collect();
    let (n, pp) = (blocks.len(), pp.max(1));
    if n < pp {
        // No blocks (a layer list without kinds): split the layers evenly.
        if n == 0 && model.num_layers() >= pp {
            return Some(crate::partition::uniform_split(model.num_layers(), pp));
        }
        return None;
    }
    let per = crate::partition::uniform_split(n, pp);
    let mut b = vec![0];
    b.extend((1..pp).map(|j| blocks[per[j]]));
    b.push(model.num_layers());
    Some(b)
}

/// Megatron-LM's recipe on `inputs`: tp = the GPUs of the smallest node
/// (or the largest degree dividing them that splits the model's heads,
/// [`crate::model::Model::tp_refusal`]: a user of Megatron-LM must pick
/// one), micro-batch 1, the blocks split evenly, ranks in Megatron's order (tp
/// fastest, then dp, then pp, nodes as listed), and the fewest pipeline
/// stages that fit in memory with dp dividing the global batch. Errors with
/// [`AmpError::NoPlan`] when no pipeline depth fits.
pub fn megatron_heuristic(
    inputs: &Inputs,
    model: &dyn CostModel,
    global_batch: usize,
    setup: &TrainingSetup,
) -> Result<RankedPlan> {
    let cluster = inputs.cluster;
    let tp = divisors(cluster.min_gpus_per_node().max(1))
        .into_iter()
        .rev()
        .find(|&tp| inputs.model.tp_refusal(tp).is_none())
        .unwrap_or(1);
    let n = cluster.num_devices();
    if !n.is_multiple_of(tp) {
        return Err(AmpError::NoPlan(format!(
            "the Megatron-LM heuristic puts tp = {tp} (the smallest node) on every node, but the cluster's {n} GPUs are not a multiple of it"
        )));
    }
    let placement = Placement::artifact_default(cluster);
    let mut last_why = String::from("no pipeline depth was tried");
    for pp in divisors(n / tp) {
        let dp = n / tp / pp;
        if !global_batch.is_multiple_of(dp) {
            last_why = format!("pp {pp}: dp {dp} does not divide the global batch {global_batch}");
            continue;
        }
        let Some(bounds) = even_split(inputs.model, pp) else {
            last_why = format!("pp {pp}: more stages than transformer blocks");
            break;
        };
        let grid = DeviceGrid::new(cluster, tp, dp, pp, &placement);
        let b = global_batch / dp;
        let plan = plan_from_grid(&grid, &bounds, 1, b, setup);
        match model.evaluate(inputs, &plan) {
            Ok(estimate) => {
                if let Some((m, over)) = estimate.first_overflow() {
                    last_why = format!(
                        "pp {pp}: stage {} needs {:.1} GB more than its GPU has",
                        m.stage,
                        over / 1e9
                    );
                    continue;
                }
                return Ok(RankedPlan {
                    tp,
                    dp,
                    pp,
                    micro_batch: 1,
                    num_micro_batches: b,
                    placement,
                    plan,
                    estimate,
                });
            }
            Err(e) => last_why = format!("pp {pp}: {e}"),
        }
    }
    Err(AmpError::NoPlan(format!(
        "the Megatron-LM heuristic (tp {tp}, micro-batch 1, even split) finds no plan that fits; last: {last_why}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::builtin as clusters;
    use crate::cost::device::DeviceModel;
    use crate::model::builtin as models;
    use crate::profile::uniform_profile;
    use crate::search::{search, PlacementSearch, SearchOptions};

    #[test]
    fn even_split_of_blocks() {
        let m = models::amp_gpt2();
        // 24 blocks at layers 2..26 over 4 stages: 6 each.
        assert_eq!(even_split(&m, 4).unwrap(), vec![0, 8, 14, 20, 30]);
        // Over 5: 5, 5, 5, 5, 4 blocks.
        assert_eq!(even_split(&m, 5).unwrap(), vec![0, 7, 12, 17, 22, 30]);
        assert!(even_split(&m, 25).is_none());
    }

    #[test]
    fn the_heuristic_is_a_plan_of_the_searched_space_and_never_beats_it() {
        let profile = uniform_profile(30, &[("T4", 1, 0.004), ("T4", 4, 0.0015)]);
        let (model, cluster) = (models::amp_gpt2(), clusters::homogeneous());
        let inputs = Inputs {
            model: &model,
            cluster: &cluster,
            profile: &profile,
        };
        let dm = DeviceModel::default();
        let setup = TrainingSetup::default();
        let h = megatron_heuristic(&inputs, &dm, 32, &setup).unwrap();
        assert_eq!((h.tp, h.micro_batch), (4, 1));
        assert_eq!(h.tp * h.dp * h.pp, 16);
        let best = search(
            &inputs,
            &dm,
            &SearchOptions::new(32, PlacementSearch::Full, setup),
        )
        .unwrap();
        assert!(best.plans[0].estimate.iteration_s <= h.estimate.iteration_s);
    }
}
