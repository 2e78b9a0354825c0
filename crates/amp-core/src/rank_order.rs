//! How an engine numbers its ranks, and whether a placement can be launched
//! under that numbering.
//!
//! `torchrun` (and DeepSpeed's launcher) gives node `k` the ranks after
//! those of the nodes before it, one contiguous block per node, and local
//! rank `i` the `i`-th GPU of `CUDA_VISIBLE_DEVICES`. Node order and the
//! GPUs' order within a node are free; the blocks are not. So an engine
//! runs a placement exactly when, under one of its rank orders, each node's
//! devices hold one contiguous block of ranks. A search planned for an
//! engine keeps only such placements ([`crate::search`]), and the exports
//! build their launch from the same layout.

use crate::cluster::Device;
use crate::placement::DeviceGrid;
use crate::plan::Plan;

/// How an engine numbers ranks over (tp, dp, pp) coordinates. Tensor
/// parallelism is the fastest-varying axis in every engine amp exports to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankOrder {
    /// rank = tp + TP * (dp + DP * pp): Megatron-Core's default order
    /// "tp-cp-ep-dp-pp" (megatron/core/parallel_state.py,
    /// `initialize_model_parallel(order=...)`), DeepSpeed's
    /// `PipeModelDataParallelTopology` axes ['pipe', 'data', 'model']
    /// (deepspeed/runtime/pipe/topology.py) and torchtitan's mesh
    /// ["pp", "dp_replicate", "dp_shard", "cp", "tp"]
    /// (torchtitan/distributed/parallel_dims.py).
    TpDpPp,
    /// rank = tp + TP * (pp + PP * dp): Megatron's `--use-tp-pp-dp-mapping`
    /// ("tp-cp-ep-pp-dp", megatron/training/arguments.py).
    TpPpDp,
}

impl RankOrder {
    /// The order in words, fastest axis first.
    pub fn describe(self) -> &'static str {
        match self {
            RankOrder::TpDpPp => "tp fastest, then dp, then pp",
            RankOrder::TpPpDp => "tp fastest, then pp, then dp",
        }
    }

    /// The rank of tensor rank `tp` of replica `dp` of stage `pp`, of
    /// `sizes` = (TP, DP, PP).
    pub fn rank(self, tp: usize, dp: usize, pp: usize, sizes: (usize, usize, usize)) -> usize {
        let (n_tp, n_dp, n_pp) = sizes;
        match self {
            RankOrder::TpDpPp => tp + n_tp * (dp + n_dp * pp),
            RankOrder::TpPpDp => tp + n_tp * (pp + n_pp * dp),
        }
    }
}

/// One node of a launch, in node-rank order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRanks {
    /// Index of the node in the cluster.
    pub node: usize,
    /// GPU indices in local-rank order: local rank `i` runs on GPU
    /// `gpus[i]` (what `CUDA_VISIBLE_DEVICES` lists).
    pub gpus: Vec<usize>,
    /// Global rank of local rank 0.
    pub first_rank: usize,
}

/// A node whose devices do not hold one contiguous block of ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitNode {
    /// The order tried.
    pub order: RankOrder,
    /// The node.
    pub node: usize,
    /// The block of ranks it holds first ...
    pub first_rank: usize,
    /// ... to this one ...
    pub last_rank: usize,
    /// ... and a rank after others' blocks.
    pub stray_rank: usize,
}

/// The nodes in rank order under `order`, for the devices `device(t, r,
/// j)` of tensor rank `t` of replica `r` of stage `j`, of `sizes` = (TP,
/// DP, PP); or the first node whose devices do not hold one contiguous
/// block of ranks.
pub fn node_ranks(
    device: impl Fn(usize, usize, usize) -> Device,
    sizes: (usize, usize, usize),
    order: RankOrder,
) -> Result<Vec<NodeRanks>, SplitNode> {
    let (tp, dp, pp) = sizes;
    let mut by_rank = vec![Device { node: 0, gpu: 0 }; tp * dp * pp];
    for j in 0..pp {
        for r in 0..dp {
            for t in 0..tp {
                by_rank[order.rank(t, r, j, sizes)] = device(t, r, j);
            }
        }
    }
    // Runs of equal node along the rank list; each node's run, by node id,
    // so that a node met again is found without a scan (a 2,048-node grid
    // is checked for every placement the search tries).
    let mut nodes: Vec<NodeRanks> = Vec::new();
    let mut run_of = vec![None; by_rank.iter().map(|d| d.node + 1).max().unwrap_or(0)];
    for (rank, d) in by_rank.iter().enumerate() {
        match nodes.last_mut() {
            Some(last) if last.node == d.node => last.gpus.push(d.gpu),
            _ => {
                if let Some(i) = run_of[d.node] {
                    let prev: &NodeRanks = &nodes[i];
                    return Err(SplitNode {
                        order,
                        node: d.node,
                        first_rank: prev.first_rank,
                        last_rank: prev.first_rank + prev.gpus.len() - 1,
                        stray_rank: rank,
                    });
                }
                run_of[d.node] = Some(nodes.len());
                nodes.push(NodeRanks {
                    node: d.node,
                    gpus: vec![d.gpu],
                    first_rank: rank,
                });
            }
        }
    }
    Ok(nodes)
}

/// [`node_ranks`] of a plan's pipeline ranks (an interleaved plan's chunks
/// run on their rank's devices), whose stages and replicas run one tp
/// degree, `tp`.
pub fn plan_node_ranks(
    plan: &Plan,
    tp: usize,
    order: RankOrder,
) -> Result<Vec<NodeRanks>, SplitNode> {
    let stages = plan.rank_stages();
    node_ranks(
        |t, r, j| stages[j].replicas[r][t],
        (tp, plan.dp(), stages.len()),
        order,
    )
}

/// Whether some order of `orders` launches the grid's placement.
pub fn grid_launchable(grid: &DeviceGrid, orders: &[RankOrder]) -> bool {
    orders.iter().any(|&o| {
        node_ranks(
            |t, r, j| grid.devices[j][r][t],
            (grid.tp, grid.dp, grid.pp),
            o,
        )
        .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::builtin as clusters;
    use crate::placement::{Axis, AxisOrder, Placement};

    #[test]
    fn the_default_placement_launches_and_dp_outermost_only_under_tp_pp_dp() {
        let c = clusters::homogeneous();
        let default = DeviceGrid::new(&c, 2, 2, 4, &Placement::artifact_default(&c));
        assert!(grid_launchable(&default, &[RankOrder::TpDpPp]));
        // dp outermost, pp in the middle: a node's ranks are one replica's
        // pipeline, contiguous only under tp-pp-dp.
        let dp_outer = Placement {
            axis_order: AxisOrder([Axis::Dp, Axis::Pp, Axis::Tp]),
            node_order: vec![0, 1, 2, 3],
        };
        let g = DeviceGrid::new(&c, 1, 4, 4, &dp_outer);
        assert!(!grid_launchable(&g, &[RankOrder::TpDpPp]));
        assert!(grid_launchable(&g, &[RankOrder::TpPpDp]));
        let e = node_ranks(|t, r, j| g.devices[j][r][t], (1, 4, 4), RankOrder::TpDpPp).unwrap_err();
        // Node 0 holds replica 0's stages 0-3: ranks 0, 4, 8, 12.
        assert_eq!(
            (e.node, e.first_rank, e.last_rank, e.stray_rank),
            (0, 0, 0, 4)
        );
    }

    #[test]
    fn a_tp_group_across_nodes_launches_under_no_order() {
        // tp outermost: a tp pair's GPUs sit on two nodes, and tp is every
        // engine's fastest axis.
        let c = clusters::homogeneous();
        let p = Placement {
            axis_order: AxisOrder([Axis::Tp, Axis::Dp, Axis::Pp]),
            node_order: vec![0, 1, 2, 3],
        };
        let g = DeviceGrid::new(&c, 2, 8, 1, &p);
        assert!(!grid_launchable(
            &g,
            &[RankOrder::TpDpPp, RankOrder::TpPpDp]
        ));
    }
}
