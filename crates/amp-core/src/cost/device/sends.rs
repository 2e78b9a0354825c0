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

    /// One micro-batch's activation (or its gradient) after `layer` from
    /// the groups `from` to the groups `to`: the send and, with
    /// scatter/gather, the receivers' all-gather of the whole activation.
    /// Zero between a stage and itself (chunks of one device).
    pub(super) fn transfer_s(
        &self,
        inputs: &Inputs,
        setup: &TrainingSetup,
        from: &[Vec<Device>],
        to: &[Vec<Device>],
        layer: usize,
        mbs: usize,
    ) -> f64 {
        if from == to {
            return 0.0;
        }
        let sender_tp = from.first().map_or(1, |g| g.len());
        let bytes = self.send_bytes(inputs, setup, layer, sender_tp, mbs);
        let mut t = self.cut_s(inputs, from, to, bytes);
        let l = &inputs.model.layers[layer];
        if split_sends(setup) && sender_tp > 1 && l.kind != LayerKind::VocabProjection {
            let full = l.output_elems_per_sample as f64 * mbs as f64 * activation_bytes(setup);
            t += to
                .iter()
                .map(|g| collective::allgather_s(&self.network(inputs.cluster), g, full))
                .fold(0.0, f64::max);
        }
        t
    }

    /// Time of one send across the cut between two stages (each given as
    /// its replicas), every replica and rank sending at once.
    pub(super) fn cut_s(
        &self,
        inputs: &Inputs,
        from: &[Vec<Device>],
        to: &[Vec<Device>],
        bytes: f64,
    ) -> f64 {
        let mut pairs = Vec::new();
        for (r, dst) in to.iter().enumerate() {
            let src = &from[r % from.len()];
            for (t, &d) in dst.iter().enumerate() {
                pairs.push((src[t % src.len()], d));
            }
        }
        collective::concurrent_p2p_s(&self.network(inputs.cluster), &pairs, bytes)
    }
}
