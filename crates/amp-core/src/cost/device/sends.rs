//! Pipeline sends between stages: bytes per rank under the setup's send
//! mode, the concurrent sends of a cut, the receivers' all-gather.

use crate::cluster::Device;
use crate::cost::collective;
use crate::cost::Inputs;
use crate::model::LayerKind;
use crate::setup::TrainingSetup;

use super::*;

impl DeviceModel {
    /// Bytes one rank of a stage ending after `layer` sends per micro-batch.
    pub(super) fn send_bytes(
        &self,
        inputs: &Inputs,
        setup: &TrainingSetup,
        layer: usize,
        sender_tp: usize,
        mbs: usize,
    ) -> f64 {
        let l = &inputs.model.layers[layer];
        let mut elems = l.output_elems_per_sample as f64;
        if l.kind == LayerKind::VocabProjection || split_sends(setup) {
            elems /= sender_tp.max(1) as f64;
        }
        elems * mbs as f64 * activation_bytes(setup)
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
        let net = self.network(inputs.cluster);
        let gather = (split_sends(setup) && sender_tp > 1).then(|| {
            to.iter()
                .map(|g| collective::allgather_curve(&net, g))
                .fold(collective::CostCurve::default(), |a, c| a.max(&c))
        });
        Some(TransferCurves {
            sender_tp,
            send: collective::concurrent_p2p_curve(&net, &self.cut_pairs(from, to)),
            gather,
        })
    }

    /// The transfer of the activation after `layer`, from its curves.
    pub(super) fn transfer_at(
        &self,
        inputs: &Inputs,
        setup: &TrainingSetup,
        curves: &TransferCurves,
        layer: usize,
        mbs: usize,
    ) -> f64 {
        let bytes = self.send_bytes(inputs, setup, layer, curves.sender_tp, mbs);
        let mut t = if bytes <= 0.0 {
            0.0
        } else {
            curves.send.at(bytes)
        };
        let l = &inputs.model.layers[layer];
        if let Some(gather) = &curves.gather {
            if l.kind != LayerKind::VocabProjection {
                let full = l.output_elems_per_sample as f64 * mbs as f64 * activation_bytes(setup);
                t += gather.at(full);
            }
        }
        t
    }

    /// The (sender, receiver) pairs of a cut: receiver group `r` hears from
    /// sender group `r mod senders`, rank by rank.
    fn cut_pairs(&self, from: &[Vec<Device>], to: &[Vec<Device>]) -> Vec<(Device, Device)> {
        let mut pairs = Vec::new();
        for (r, dst) in to.iter().enumerate() {
            let src = &from[r % from.len()];
            for (t, &d) in dst.iter().enumerate() {
                pairs.push((src[t % src.len()], d));
            }
        }
        pairs
    }
}

/// A transfer between two fixed sets of groups
/// ([`DeviceModel::transfer_curves`]), as functions of the message size.
#[derive(Debug, Clone)]
pub(super) struct TransferCurves {
    /// Tensor-parallel degree of the sending groups (the smallest, when
    /// they differ).
    sender_tp: usize,
    /// The concurrent sends of one rank's share.
    send: collective::CostCurve,
    /// The receivers' all-gather of the whole activation, with
    /// scatter/gather sends from a tensor-parallel group.
    gather: Option<collective::CostCurve>,
}
