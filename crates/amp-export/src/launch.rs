//! What every engine export shares: the rank order that realises a plan's
//! placement, the host list, `torchrun` command lines, and the mapping of
//! the plan's layer list onto transformer blocks.

use amp_core::cluster::Cluster;
use amp_core::model::{LayerKind, Model, TransformerShape};
use amp_core::plan::Plan;
use amp_core::rank_order::plan_node_ranks;

use crate::{EngineResult, ExportOptions, Refusal};

pub(crate) use amp_core::rank_order::RankOrder;

/// One node of a launch, in node-rank order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LaunchNode {
    /// Index of the node in the cluster.
    pub node: usize,
    pub host: String,
    /// GPU indices in local-rank order: local rank `i` runs on GPU
    /// `gpus[i]` (what `CUDA_VISIBLE_DEVICES` lists).
    pub gpus: Vec<usize>,
    /// Global rank of local rank 0.
    pub first_rank: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Launch {
    pub order: RankOrder,
    pub tp: usize,
    pub nodes: Vec<LaunchNode>,
    pub world_size: usize,
}

/// How many replicas run each number of micro-batches, the most first
/// ("32 replicas run 17, 48 run 10"): a plan has hundreds of replicas and
/// a few shares.
fn micro_batch_shares(counts: &[usize]) -> String {
    let mut shares: Vec<(usize, usize)> = Vec::new();
    for &m in counts {
        match shares.iter_mut().find(|(v, _)| *v == m) {
            Some((_, n)) => *n += 1,
            None => shares.push((m, 1)),
        }
    }
    shares.sort_by_key(|s| std::cmp::Reverse(s.0));
    shares
        .iter()
        .enumerate()
        .map(|(k, &(m, n))| {
            let who = match (k, n) {
                (0, 1) => "1 replica runs".to_string(),
                (0, _) => format!("{n} replicas run"),
                (_, 1) => "1 runs".to_string(),
                _ => format!("{n} run"),
            };
            format!("{who} {m}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tensor-parallel degree shared by all stages and replicas, or the
/// refusal. The engines also give every replica the same micro-batches, so
/// plans with uneven replicas are refused here too.
pub(crate) fn uniform_tp(plan: &Plan, engine: &str) -> EngineResult<usize> {
    if plan.is_uneven() {
        return Err(Refusal::Unsupported(format!(
            "its replicas run different numbers of micro-batches ({}); {engine} gives every data-parallel replica the same share of the batch. Plan with even replicas (amp plan without --uneven-dp) to export to {engine}",
            micro_batch_shares(&plan.replica_micro_batches)
        )));
    }
    match plan.uniform_tp() {
        Some(tp) => Ok(tp),
        None => {
            let degrees: Vec<String> = plan
                .stages
                .iter()
                .enumerate()
                .map(|(j, s)| format!("stage {j}: tp {}", s.tp_label()))
                .collect();
            Err(Refusal::Unsupported(format!(
                "stages or replicas use different tensor-parallel degrees ({}); {engine} uses one tensor-parallel degree for every pipeline stage and replica",
                degrees.join(", ")
            )))
        }
    }
}

/// Finds a node order and per-node GPU order under which the engine's rank
/// numbering puts every (stage, replica, tp rank) of the plan on the device
/// the plan chose. `torchrun` gives node `k` (`--node_rank k`) the ranks
/// after those of nodes `0..k`, local rank `i` on the `i`-th GPU of
/// `CUDA_VISIBLE_DEVICES`; so the plan is realisable exactly when each
/// node's devices hold one contiguous block of ranks.
pub(crate) fn realise(
    plan: &Plan,
    opts: &ExportOptions,
    orders: &[RankOrder],
    engine: &str,
) -> EngineResult<Launch> {
    let tp = uniform_tp(plan, engine)?;
    let mut why = Vec::new();
    for &order in orders {
        match plan_node_ranks(plan, tp, order) {
            Ok(nodes) => {
                return Ok(Launch {
                    order,
                    tp,
                    nodes: nodes
                        .into_iter()
                        .map(|n| LaunchNode {
                            node: n.node,
                            host: opts.host(n.node),
                            gpus: n.gpus,
                            first_rank: n.first_rank,
                        })
                        .collect(),
                    world_size: tp * plan.dp() * plan.pp(),
                })
            }
            Err(s) => why.push(format!(
                "with {engine}'s rank order ({}) node {} ({}) would hold ranks {}-{} and rank {}, but torchrun gives each node one contiguous block of ranks",
                order.describe(),
                s.node,
                opts.host(s.node),
                s.first_rank,
                s.last_rank,
                s.stray_rank
            )),
        }
    }
    Err(Refusal::Unsupported(format!(
        "the placement cannot be launched: {}",
        why.join("; and ")
    )))
}

impl Launch {
    /// `host slots=N` lines in node-rank order (the MPI/DeepSpeed hostfile
    /// format; deepspeed/launcher/runner.py `_parse_hostfile` reads
    /// `^(\S+)\s+slots=(\d+)` and skips lines starting with `#`).
    pub(crate) fn hostfile(&self, cluster: &Cluster) -> String {
        let mut s =
            String::from("# Hosts in node-rank order; slots = GPUs this plan uses on the host.\n");
        for n in &self.nodes {
            s.push_str(&format!(
                "# node_rank {}: cluster node {} ({}), ranks {}-{}, GPUs {}\n",
                self.nodes
                    .iter()
                    .position(|m| m.node == n.node)
                    .unwrap_or(0),
                n.node,
                cluster.nodes[n.node].gpu_type,
                n.first_rank,
                n.first_rank + n.gpus.len() - 1,
                join(&n.gpus, ",")
            ));
        }
        for n in &self.nodes {
            s.push_str(&format!("{} slots={}\n", n.host, n.gpus.len()));
        }
        s
    }

    /// A bash `case` over NODE_RANK running `torchrun` with the right
    /// device order on each node. `program` is what follows torchrun's own
    /// flags.
    ///
    /// torchrun flags (torch/distributed/run.py): `--nnodes`, `--node_rank`,
    /// `--nproc_per_node`, `--master_addr`, `--master_port`.
    pub(crate) fn torchrun_case(&self, opts: &ExportOptions, program: &str) -> String {
        let master = &self.nodes[0].host;
        let mut s = String::new();
        s.push_str("NODE_RANK=\"${1:?usage: launch.sh NODE_RANK (0..");
        s.push_str(&format!("{})}}\"\n", self.nodes.len() - 1));
        s.push_str("case \"$NODE_RANK\" in\n");
        for (k, n) in self.nodes.iter().enumerate() {
            s.push_str(&format!(
                "  {k})  # on {}: ranks {}-{}\n",
                n.host,
                n.first_rank,
                n.first_rank + n.gpus.len() - 1
            ));
            s.push_str(&format!(
                "    CUDA_VISIBLE_DEVICES={} torchrun --nnodes {} --node_rank {k} --nproc_per_node {} --master_addr {master} --master_port {} {program}\n    ;;\n",
                join(&n.gpus, ","),
                self.nodes.len(),
                n.gpus.len(),
                opts.master_port,
            ));
        }
        s.push_str("  *) echo \"NODE_RANK must be 0..");
        s.push_str(&format!(
            "{}\" >&2; exit 2 ;;\nesac\n",
            self.nodes.len() - 1
        ));
        s
    }

    /// Whether every node runs its GPUs in ascending index order (what the
    /// `deepspeed` launcher's `--include host:slots` gives: it sorts the
    /// slots, deepspeed/launcher/runner.py `parse_node_config_list`).
    pub(crate) fn ascending(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| n.gpus.windows(2).all(|w| w[0] < w[1]))
    }
}

pub(crate) fn join<T: ToString>(items: &[T], sep: &str) -> String {
    items
        .iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(sep)
}

/// The plan's layer list seen as a GPT: transformer blocks per stage.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BlockSplit {
    pub shape: TransformerShape,
    /// Transformer blocks on each stage.
    pub blocks: Vec<usize>,
    /// Index (0-based, over blocks only) of the first block of each stage.
    pub first_block: Vec<usize>,
}

/// Maps the plan's stages onto transformer blocks, checking what an engine
/// built around a GPT model (Megatron-LM's `GPTModel`, torchtitan's
/// decoder models) needs: a transformer shape, only blocks between the
/// first and the last block, the embedding on the first stage and the
/// output projection on the last. The other entries of the layer list
/// (dropout, transposes, final norm, loss) go with whatever stage holds them.
pub(crate) fn block_split(plan: &Plan, model: &Model, engine: &str) -> EngineResult<BlockSplit> {
    let Some(shape) = model.shape.clone() else {
        return Err(Refusal::Unsupported(format!(
            "model `{}` has no transformer shape (hidden, num_blocks, seq_len, vocab, heads); {engine} builds a GPT from its shape, so give the model a [shape]",
            model.name
        )));
    };
    // Layers of other kinds (dropout, transposes, the final norm, the loss)
    // are GPT glue when they sit before the first or after the last block;
    // between blocks they would be something a GPT does not have.
    let is_block = |l: &amp_core::model::Layer| l.kind == LayerKind::TransformerBlock;
    let first = model.layers.iter().position(is_block);
    let last_block = model.layers.iter().rposition(is_block);
    if let (Some(a), Some(b)) = (first, last_block) {
        if let Some((i, l)) = model
            .layers
            .iter()
            .enumerate()
            .find(|(i, l)| *i > a && *i < b && l.kind == LayerKind::Other)
        {
            return Err(Refusal::Unsupported(format!(
                "model `{}` has layer {i} (`{}`) of kind `other` between its transformer blocks, which {engine}'s GPT model does not have",
                model.name, l.name
            )));
        }
    }
    let last = plan.pp() - 1;
    let mut blocks = vec![0usize; plan.pp()];
    for (j, s) in plan.stages.iter().enumerate() {
        for i in s.layers() {
            let l = &model.layers[i];
            match l.kind {
                LayerKind::TransformerBlock => blocks[j] += 1,
                LayerKind::Embedding if j != 0 => {
                    return Err(Refusal::Unsupported(format!(
                        "stage {j} holds the embedding (layer {i}, `{}`), but {engine} keeps the embedding on the first pipeline stage",
                        l.name
                    )))
                }
                LayerKind::VocabProjection if j != last => {
                    return Err(Refusal::Unsupported(format!(
                        "stage {j} holds the vocabulary projection (layer {i}, `{}`) but is not the last stage; {engine} keeps the output layer on the last pipeline stage",
                        l.name
                    )))
                }
                _ => {}
            }
        }
    }
    let total: usize = blocks.iter().sum();
    if total as u64 != shape.num_blocks {
        return Err(Refusal::Unsupported(format!(
            "model `{}` lists {total} transformer-block layers but its shape says num_blocks = {}; fix the model so that they agree",
            model.name, shape.num_blocks
        )));
    }
    let mut first_block = Vec::with_capacity(blocks.len());
    let mut acc = 0;
    for &b in &blocks {
        first_block.push(acc);
        acc += b;
    }
    Ok(BlockSplit {
        shape,
        blocks,
        first_block,
    })
}

/// Checks that the shape gives heads the width divides into (whether tp
/// divides them is the plan's check, `Model::tp_refusal`).
pub(crate) fn check_heads(shape: &TransformerShape) -> EngineResult<()> {
    if shape.heads == 0 {
        return Err(Refusal::Unsupported(
            "the model shape has heads = 0; set the number of attention heads".to_string(),
        ));
    }
    // Heads (and key/value heads, and the MLP width) dividing by tp is
    // checked with the plan (`Model::tp_refusal` in `Plan::validate`).
    if !shape.hidden.is_multiple_of(shape.heads) {
        return Err(Refusal::Unsupported(format!(
            "hidden size {} is not a multiple of the {} heads",
            shape.hidden, shape.heads
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use amp_core::cluster::builtin as clusters;
    use amp_core::placement::{Axis, AxisOrder, DeviceGrid, Placement};
    use amp_core::search::plan_from_grid;

    /// Sailor's kind of deal: 80 replicas, two shares.
    #[test]
    fn micro_batch_shares_count_replicas_per_share() {
        let counts: Vec<usize> = [17; 32].into_iter().chain([10; 48]).collect();
        assert_eq!(micro_batch_shares(&counts), "32 replicas run 17, 48 run 10");
        assert_eq!(micro_batch_shares(&[3, 4, 3]), "1 replica runs 4, 2 run 3");
    }

    fn plan(tp: usize, dp: usize, pp: usize, p: &Placement) -> Plan {
        let c = clusters::homogeneous();
        let g = DeviceGrid::new(&c, tp, dp, pp, p);
        let b: Vec<usize> = (0..=pp).map(|j| j * 30 / pp).collect();
        plan_from_grid(&g, &b, 1, 4, &Default::default())
    }

    #[test]
    fn default_placement_is_node_major_identity() {
        let c = clusters::homogeneous();
        let p = plan(2, 2, 4, &Placement::artifact_default(&c));
        let l = realise(&p, &ExportOptions::default(), &[RankOrder::TpDpPp], "x").unwrap();
        assert_eq!(l.nodes.len(), 4);
        for (k, n) in l.nodes.iter().enumerate() {
            assert_eq!(n.node, k);
            assert_eq!(n.gpus, vec![0, 1, 2, 3]);
            assert_eq!(n.first_rank, 4 * k);
        }
    }

    #[test]
    fn node_order_becomes_node_rank_order() {
        let c = clusters::het_cluster();
        let pl = Placement {
            axis_order: AxisOrder::DEFAULT,
            node_order: vec![3, 0, 1, 2],
        };
        let g = DeviceGrid::new(&c, 1, 4, 4, &pl);
        let p = plan_from_grid(&g, &[0, 8, 15, 22, 30], 1, 4, &Default::default());
        let l = realise(&p, &ExportOptions::default(), &[RankOrder::TpDpPp], "x").unwrap();
        let order: Vec<usize> = l.nodes.iter().map(|n| n.node).collect();
        assert_eq!(order, vec![3, 0, 1, 2]);
    }

    #[test]
    fn pp_fastest_placement_is_refused_or_remapped() {
        // dp outermost, pp in the middle: ranks of a node are one replica's
        // pipeline, contiguous only under tp-pp-dp.
        let pl = Placement {
            axis_order: AxisOrder([Axis::Dp, Axis::Pp, Axis::Tp]),
            node_order: vec![0, 1, 2, 3],
        };
        let p = plan(1, 4, 4, &pl);
        let e = realise(&p, &ExportOptions::default(), &[RankOrder::TpDpPp], "x").unwrap_err();
        let Refusal::Unsupported(msg) = e else {
            panic!()
        };
        assert!(msg.contains("contiguous block of ranks"), "{msg}");
        let l = realise(
            &p,
            &ExportOptions::default(),
            &[RankOrder::TpDpPp, RankOrder::TpPpDp],
            "x",
        )
        .unwrap();
        assert_eq!(l.order, RankOrder::TpPpDp);
    }

    #[test]
    fn in_node_permutation_is_found() {
        // tp innermost but dp across nodes: with pp outermost and tp=2, dp=2
        // each node holds two tp pairs of one stage.
        let pl = Placement {
            axis_order: AxisOrder([Axis::Pp, Axis::Tp, Axis::Dp]),
            node_order: vec![0, 1, 2, 3],
        };
        let p = plan(2, 2, 4, &pl);
        let l = realise(&p, &ExportOptions::default(), &[RankOrder::TpDpPp], "x").unwrap();
        // rank order (tp fastest) walks gpu 0, 2 (tp pair of replica 0), then 1, 3.
        assert_eq!(l.nodes[0].gpus, vec![0, 2, 1, 3]);
        assert!(!l.ascending());
    }
}
