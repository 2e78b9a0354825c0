//! Pipeline sends between stages: bytes per rank under the setup's send
//! mode, the concurrent sends of a cut, the receivers' all-gather.

use crate::cluster::Device;
use crate::cost::collective;
use crate::cost::Inputs;
use crate::model::LayerKind;
use crate::plan::Plan;
use crate::setup::{PipelineReceive, TrainingSetup};
use std::ops::Range;

/// Bytes per element of a host-staged receive's buffer: Sailor's
/// `reconstruct_tensor` allocates it as `torch.float32`.
const HOST_STAGING_BYTES: f64 = 4.0;

use super::*;

impl DeviceModel {
    /// Bytes one rank of a stage ending after `layer` sends per micro-batch:
    /// its shard of a vocabulary projection's output (split over the
    /// sender's `sender_tp` ranks), else the whole activation, or one of its
    /// `pieces` under scatter/gather; a `forward` send adds the layer's
    /// [`crate::model::Layer::forward_send_extra_bytes`] whole (DeepSpeed
    /// partitions only the activation).
    pub(super) fn send_bytes(
        &self,
        inputs: &Inputs,
        setup: &TrainingSetup,
        (layer, forward): (usize, bool),
        (sender_tp, pieces): (usize, usize),
        mbs: usize,
    ) -> f64 {
        let l = &inputs.model.layers[layer];
        let mut elems = l.output_elems_per_sample as f64;
        if l.kind == LayerKind::VocabProjection {
            elems /= sender_tp.max(1) as f64;
        } else if split_sends(setup) {
            elems /= pieces.max(1) as f64;
        }
        let extra = if forward {
            l.forward_send_extra_bytes as f64
        } else {
            0.0
        };
        elems * mbs as f64 * pipeline_send_bytes(setup) + extra
    }

    /// Adds host-staged receives to `passes` (the setup's
    /// [`crate::setup::PipelineReceive::HostStaged`]): every virtual stage
    /// but the first rebuilds the activation it receives at the start of
    /// its forward pass, every one but the last the gradient at the start
    /// of its backward, each in a host fp32 buffer of the whole tensor
    /// (whatever the sends' format or the tensor-parallel degree), at
    /// [`crate::cost::Calibration::host_staging_s_per_gb`].
    pub(super) fn add_receive_staging(
        &self,
        inputs: &Inputs,
        plan: &Plan,
        chunks: &[Vec<Range<usize>>],
        passes: &mut Passes,
    ) {
        let s_per_byte = self.options.calibration.host_staging_s_per_gb / 1e9;
        if plan.setup.pipeline_receive != PipelineReceive::HostStaged || s_per_byte <= 0.0 {
            return;
        }
        let (pp, nv) = (chunks.len(), plan.stages.len());
        // Virtual cut c follows the last layer of virtual stage c.
        let cut_s: Vec<f64> = (0..nv.saturating_sub(1))
            .map(|c| {
                let last = chunks[c % pp][c / pp].end - 1;
                let elems = inputs.model.layers[last].output_elems_per_sample as f64;
                elems * plan.micro_batch as f64 * HOST_STAGING_BYTES * s_per_byte
            })
            .collect();
        for (chunk_costs, stage_costs) in passes.chunk_costs.iter_mut().zip(&mut passes.stage_costs)
        {
            for (v, (f, b)) in chunk_costs.iter_mut().enumerate() {
                let received_f = if v > 0 { cut_s[v - 1] } else { 0.0 };
                let received_b = cut_s.get(v).copied().unwrap_or(0.0);
                *f += received_f;
                *b += received_b;
                let total = &mut stage_costs[v % pp];
                total.forward_s += received_f;
                total.backward_s += received_b;
                total.staging_s += received_f + received_b;
            }
        }
    }

    /// One micro-batch's activation (or its gradient) from the groups
    /// `from` to the groups `to`, as a function of the layer it follows
    /// ([`Self::transfer_at`]): the send and, with scatter/gather, the
    /// receivers' all-gather of the whole activation. `None` between a
    /// stage and itself (chunks of one device), which costs nothing.
    pub(super) fn transfer_curves(
        &self,
        inputs: &Inputs,
        setup: &TrainingSetup,
        from: &[Vec<Device>],
        to: &[Vec<Device>],
    ) -> Option<TransferCurves> {
        if from == to {
            return None;
        }
        // Senders at mixed tp degrees: priced at the largest share (the
        // smallest degree) for every pair, an upper bound.
        let sender_tp = from.iter().map(Vec::len).min().unwrap_or(1);
        let split = split_sends(setup);
        let (pairs, pieces) = cut_pairs(from, to, split);
        let net = self.network(inputs.cluster);
        let gather = (split && pieces > 1 && receivers_gather(setup)).then(|| {
            // Groups on one node alike gather alike ([`one_node_group`]),
            // and the slower of a curve and itself is that curve: each
            // such group once.
            let mut seen: Vec<OneNodeGroup> = Vec::new();
            let mut gather = collective::CostCurve::default();
            for g in to {
                if let Some(k) = one_node_group(inputs.cluster, g) {
                    if seen.contains(&k) {
                        continue;
                    }
                    seen.push(k);
                }
                gather = gather.max(&collective::allgather_curve(&net, g));
            }
            gather
        });
        Some(TransferCurves {
            sender_tp,
            pieces,
            send: collective::concurrent_p2p_curve(&net, &pairs),
            gather,
        })
    }

    /// The transfer of the activation after `layer` (`forward`) or of its
    /// gradient, from its curves.
    pub(super) fn transfer_at(
        &self,
        inputs: &Inputs,
        setup: &TrainingSetup,
        curves: &TransferCurves,
        (layer, forward): (usize, bool),
        mbs: usize,
    ) -> f64 {
        let bytes = self.send_bytes(
            inputs,
            setup,
            (layer, forward),
            (curves.sender_tp, curves.pieces),
            mbs,
        );
        let mut t = if bytes <= 0.0 {
            0.0
        } else {
            curves.send.at(bytes)
        };
        let l = &inputs.model.layers[layer];
        if let Some(gather) = &curves.gather {
            if l.kind != LayerKind::VocabProjection {
                let full =
                    l.output_elems_per_sample as f64 * mbs as f64 * pipeline_send_bytes(setup);
                t += gather.at(full);
            }
        }
        t
    }
}

/// The (sender, receiver) pairs of a cut, and into how many pieces
/// scatter/gather cuts the activation. Receiver group `r` hears from sender
/// group `r mod senders`. Whole copies (`split` false): every receiving
/// rank gets the activation from the sending rank of its index (mod the
/// sender's degree). Scatter/gather: one copy crosses, in as many pieces as
/// the larger of the two groups has ranks, piece `t` from sending rank `t`
/// to receiving rank `t` (each mod its degree), so a tp-4 stage feeding a
/// tp-1 one sends four quarters into it, and a tp-1 stage feeding a tp-4
/// one a quarter to each rank, which then all-gather. With groups of
/// several sizes the pieces are the fewest any pair of groups needs (the
/// largest piece, an upper bound).
fn cut_pairs(
    from: &[Vec<Device>],
    to: &[Vec<Device>],
    split: bool,
) -> (Vec<(Device, Device)>, usize) {
    let mut pairs = Vec::new();
    let mut pieces = usize::MAX;
    for (r, dst) in to.iter().enumerate() {
        let src = &from[r % from.len()];
        let n = if split {
            src.len().max(dst.len())
        } else {
            dst.len()
        };
        pieces = pieces.min(if split { n } else { 1 });
        for t in 0..n {
            pairs.push((src[t % src.len()], dst[t % dst.len()]));
        }
    }
    (pairs, pieces.max(1))
}

/// A transfer between two fixed sets of groups
/// ([`DeviceModel::transfer_curves`]), as functions of the message size.
#[derive(Debug, Clone)]
pub(super) struct TransferCurves {
    /// Tensor-parallel degree of the sending groups (the smallest, when
    /// they differ): a vocabulary projection's output is split over it.
    sender_tp: usize,
    /// Pieces the activation crosses the cut in ([`cut_pairs`]).
    pieces: usize,
    /// The concurrent sends of one rank's share.
    send: collective::CostCurve,
    /// The receivers' all-gather of the whole activation, with
    /// scatter/gather sends from a tensor-parallel group.
    pub(super) gather: Option<collective::CostCurve>,
}
