//! Per-layer costs of one micro-batch on one tensor-parallel group: from the
//! profile as measured, derived for a degree it lacks, with the
//! tensor-parallel all-reduces of compute-only entries and recomputation.

use crate::cluster::Device;
use crate::cost::collective;
use crate::cost::Inputs;
use crate::error::{AmpError, Result};
use crate::model::{LayerKind, Model};
use crate::setup::{Precision, Recompute, TrainingSetup};

use super::*;

/// One layer's cost for one micro-batch on one tensor-parallel group.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LayerCost {
    /// Forward time of the layer for one micro-batch, seconds.
    pub forward_s: f64,
    /// Backward time of the layer for one micro-batch, seconds.
    pub backward_s: f64,
    /// Part of forward + backward spent in tensor-parallel all-reduces.
    pub tp_comm_s: f64,
    /// The forward's part of `tp_comm_s` (what a recomputed forward
    /// repeats).
    pub tp_comm_forward_s: f64,
}

impl LayerCost {
    fn max(self, o: LayerCost) -> LayerCost {
        LayerCost {
            forward_s: self.forward_s.max(o.forward_s),
            backward_s: self.backward_s.max(o.backward_s),
            tp_comm_s: self.tp_comm_s.max(o.tp_comm_s),
            tp_comm_forward_s: self.tp_comm_forward_s.max(o.tp_comm_forward_s),
        }
    }
}

/// What a tensor-parallel group's layer costs depend on besides the
/// micro-batch: its GPU types and the (bandwidth, latency) bits of its ring
/// hops in NCCL order.
pub(super) type GroupKey<'c> = (Vec<&'c str>, Vec<(u64, u64)>);

/// Layer costs at one micro-batch size, per (GPU type, tp) as profiled and
/// per kind of group.
#[derive(Default)]
pub(super) struct Caches<'c> {
    types: Vec<(TypeKey<'c>, Option<Vec<LayerCost>>)>,
    groups: Vec<(CostsKey<'c>, Vec<LayerCost>)>,
}

/// A group's key and its one-node twin's ([`one_node_twin`]): what its
/// layer costs depend on besides the setup and micro-batch size.
type CostsKey<'c> = (GroupKey<'c>, Option<GroupKey<'c>>);

/// (GPU type, tensor-parallel degree).
pub(super) type TypeKey<'c> = (&'c str, usize);

/// Groups' layer costs shared by the layouts of one search
/// ([`DeviceModel::layout_estimators`]): thousands of layouts meet a few
/// dozen kinds of group. A group's costs depend on its key (what
/// [`Caches`] holds them by within a plan), on that of the one-node group a
/// measured profile's degree stands for ([`one_node_twin`]: the group's
/// first node, which its key does not name), on the setup and on the
/// micro-batch size. A race prices a group twice, alike.
#[derive(Default)]
pub(super) struct GroupMemo<'c> {
    costs: Mutex<HashMap<GroupMemoKey<'c>, Arc<[LayerCost]>>>,
}

/// (setup, micro-batch size, group key, its one-node twin's key) of
/// [`GroupMemo`].
type GroupMemoKey<'c> = (TrainingSetup, usize, GroupKey<'c>, Option<GroupKey<'c>>);

impl<'c> GroupMemo<'c> {
    fn get(&self, key: &GroupMemoKey<'c>) -> Option<Arc<[LayerCost]>> {
        let map = self.costs.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).cloned()
    }

    fn insert(&self, key: GroupMemoKey<'c>, costs: &[LayerCost]) {
        let mut map = self.costs.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key).or_insert_with(|| costs.into());
    }
}

/// A tensor-parallel group among the groups of its stage that run their
/// collectives at the same time across nodes: (their rings, its index
/// among them). Their rings share the NICs of the nodes they span.
pub(super) type Among<'a> = Option<(&'a collective::ConcurrentRings, usize)>;

/// The rings of a stage's groups that span nodes, when two or more do (the
/// ones whose collectives meet on NICs), with each replica's index among
/// them. None, and nothing allocated, in the common case.
pub(super) fn spanning_groups(
    cluster: &Cluster,
    replicas: &[Vec<Device>],
) -> Option<(collective::ConcurrentRings, Vec<Option<usize>>)> {
    let spans = |g: &[Device]| g.iter().any(|d| d.node != g[0].node);
    if replicas.iter().filter(|r| spans(r)).count() < 2 {
        return None;
    }
    let mut groups = Vec::new();
    let index = replicas
        .iter()
        .map(|r| {
            spans(r).then(|| {
                groups.push(r.clone());
                groups.len() - 1
            })
        })
        .collect();
    Some((collective::ConcurrentRings::new(cluster, &groups), index))
}

/// The key of `group` ([`GroupKey`]): its GPU types and each hop of its
/// ring at its nominal rate, or with `among` at the rate it reaches among
/// the stage's other groups across nodes.
pub(super) fn group_key_among<'c>(
    inputs: &Inputs<'c>,
    group: &[Device],
    among: Among,
) -> GroupKey<'c> {
    let cluster: &'c Cluster = inputs.cluster;
    let mut types: Vec<&'c str> = group
        .iter()
        .map(|d| cluster.nodes[d.node].gpu_type.as_str())
        .collect();
    types.sort();
    types.dedup();
    // Nominal links: the key only tells groups apart, and the calibrated
    // efficiency scales every inter-node link alike.
    let net = collective::Network::new(inputs.cluster, 1.0);
    let bits = |(rate, latency): (f64, f64)| (rate.to_bits(), latency.to_bits());
    let hops = match among {
        Some((rings, i)) => rings.hops(&net, i).into_iter().map(bits).collect(),
        None => {
            let ring = collective::ring_order(group);
            (0..ring.len())
                .map(|i| {
                    let l = collective::link(&net, ring[i], ring[(i + 1) % ring.len()]);
                    bits((l.bytes_per_s, l.latency_s))
                })
                .collect()
        }
    };
    (types, hops)
}

/// [`group_key_among`] of a group alone.
pub(super) fn group_key<'c>(inputs: &Inputs<'c>, group: &[Device]) -> GroupKey<'c> {
    group_key_among(inputs, group, None)
}

/// Share of a transformer block's forward spent in the attention core (the
/// two batched products over the `s x s` scores), which selective
/// recomputation reruns: per token a block does `24 h^2 + 4 s h` FLOPs
/// (Korthikanti et al. 2022, sec. 6), the core `4 s h` of them, so the
/// share is `s / (6 h + s)`. Zero for models without a shape.
pub fn attention_core_share(model: &Model) -> f64 {
    match &model.shape {
        Some(sh) if sh.hidden > 0 => {
            let (s, h) = (sh.seq_len as f64, sh.hidden as f64);
            s / (6.0 * h + s)
        }
        _ => 0.0,
    }
}

/// Share of a transformer block's forward that torchtitan's per-op
/// selective checkpointing reruns before the block's backward
/// ([`crate::setup::TrainingSetup::per_op_selective`]): the FLOPs of the
/// matrix products it does not keep (every second one in forward order,
/// [`crate::model::Architecture::block_projections`], QKV fused as
/// torchtitan builds it) over those of all
/// the products and the causal attention kernel (`2 s` FLOPs per token and
/// query element: half of `4 s`, which it keeps). The elementwise kernels
/// it also reruns count at their FLOPs, next to nothing, so this is a
/// floor. `None` for a model without an architecture.
pub fn per_op_selective_share(model: &Model) -> Option<f64> {
    let arch = model.architecture()?;
    let sh = model.shape.as_ref().filter(|sh| sh.hidden > 0)?;
    let heads = if sh.heads > 0 {
        sh.heads
    } else {
        (sh.hidden / 64).max(1)
    };
    let flops = |p: &crate::model::Projection| (p.in_width * p.out_width) as f64;
    let products = arch.block_projections(sh.hidden, heads, true);
    let rerun: f64 = products.iter().skip(1).step_by(2).map(flops).sum();
    let all: f64 = products.iter().map(flops).sum();
    let attention = sh.seq_len as f64 * (heads * arch.head_dim) as f64;
    Some(rerun / (all + attention))
}

/// The group of the same size on one node (the first GPUs of `group`'s
/// first node) when `group` spans nodes: where a measured profile's
/// tensor-parallel degree was profiled (AMP and Sailor profile one node).
/// None when the group is on one node or that node is too small.
pub(super) fn one_node_twin(inputs: &Inputs, group: &[Device]) -> Option<Vec<Device>> {
    let first = group.first()?.node;
    if group.iter().all(|d| d.node == first) {
        return None;
    }
    let gpus = inputs.cluster.nodes.get(first)?.gpus;
    (gpus >= group.len()).then(|| {
        (0..group.len())
            .map(|gpu| Device { node: first, gpu })
            .collect()
    })
}

impl DeviceModel {
    pub(super) fn missing(inputs: &Inputs, gpu: &str, tp: usize) -> AmpError {
        let have = inputs.profile.tp_degrees(gpu);
        if have.is_empty() {
            AmpError::missing_profile(Some(gpu), None, format!(
                "no profile for GPU type `{gpu}` (profiled: {:?}); profile it, or remove its nodes from the cluster",
                inputs.profile.gpu_types()
            ))
        } else {
            AmpError::missing_profile(Some(gpu), Some(tp), format!(
                "GPU type `{gpu}` has no profile at tensor-parallel degree {tp} nor at 1 to derive it from (profiled degrees: {have:?})"
            ))
        }
    }

    /// Computation-only forward and backward of every layer for one GPU
    /// type at `tp`, with the tensor-parallel communication they include,
    /// when the profile has that degree.
    pub(super) fn type_costs(
        &self,
        inputs: &Inputs,
        gpu: &str,
        tp: usize,
        mbs: usize,
    ) -> Option<Vec<LayerCost>> {
        let p = inputs.profile;
        let n = inputs.model.num_layers();
        let times = p.layer_times(gpu, tp, mbs, n)?;
        let per_sample = p.per_sample_forward(gpu, tp);
        let per_sample_tp1 = if tp > 1 {
            p.per_sample_forward(gpu, 1)
        } else {
            None
        };
        Some(
            times
                .iter()
                .enumerate()
                .map(|(layer, lt)| {
                    // A layer with no work worth pricing (views, reshapes,
                    // the addition of a position table) takes no time,
                    // whatever its profile says: what a profiler that
                    // synchronizes after every layer records for one (the
                    // AMP artifact's) is its own overhead, which a training
                    // run's queued kernels overlap. The analytic model, and
                    // AMP's own cost model, price it the same.
                    if inputs.model.layers[layer].kind == LayerKind::Noop {
                        return LayerCost::default();
                    }
                    self.profiled(
                        tp,
                        mbs,
                        lt,
                        per_sample.and_then(|f| f.get(layer).copied()),
                        per_sample_tp1.and_then(|f| f.get(layer).copied()),
                    )
                })
                .collect(),
        )
    }

    /// One layer's profiled time `lt` at `tp` as a [`LayerCost`]: with its
    /// backward as measured, or derived from the forward. `per_sample` is
    /// its per-sample forward at `tp` and `per_sample_tp1` at tp 1, when the
    /// profile has such entries.
    fn profiled(
        &self,
        tp: usize,
        mbs: usize,
        lt: &crate::profile::LayerTime,
        per_sample: Option<f64>,
        per_sample_tp1: Option<f64>,
    ) -> LayerCost {
        if let Some(b) = lt.backward_s {
            return LayerCost {
                forward_s: lt.forward_s,
                backward_s: b,
                tp_comm_s: 0.0,
                tp_comm_forward_s: 0.0,
            };
        }
        let r = BACKWARD_FORWARD_RATIO;
        let Some(per_sample) = per_sample else {
            return LayerCost {
                forward_s: lt.forward_s,
                backward_s: r * lt.forward_s,
                tp_comm_s: 0.0,
                tp_comm_forward_s: 0.0,
            };
        };
        // Per-sample entry: split computation and communication, scale each
        // with its fixed share.
        let (c1, k1) = match per_sample_tp1 {
            Some(t1) if tp > 1 => {
                let c = (t1 / tp as f64).min(per_sample);
                (c, per_sample - c)
            }
            _ => (per_sample, 0.0),
        };
        let m = mbs as f64;
        let cal = &self.options.calibration;
        let fixed = cal.per_sample_fixed_fraction;
        let comm_fixed = cal.per_sample_tp_comm_fixed_fraction;
        let c = c1 * (fixed + (1.0 - fixed) * m);
        let k = k1 * (comm_fixed + (1.0 - comm_fixed) * m);
        LayerCost {
            forward_s: c + k,
            backward_s: r * c + k,
            tp_comm_s: 2.0 * k,
            tp_comm_forward_s: k,
        }
    }

    /// Costs of every layer for one micro-batch on the tensor-parallel
    /// group `group` (the max over its GPU types, layer by layer), with
    /// the tensor-parallel all-reduces of compute-only entries and the
    /// recomputed forward passes. Memoized per kind of group, in `caches`
    /// and, when given, in the search's `shared` memo.
    pub(super) fn group_costs<'k, 'c>(
        &self,
        inputs: &Inputs<'c>,
        setup: &TrainingSetup,
        (group, among): (&[Device], Among),
        mbs: usize,
        (caches, shared): (&'k mut Caches<'c>, Option<&GroupMemo<'c>>),
    ) -> Result<&'k [LayerCost]> {
        // A group across nodes whose profiled degree was measured on one
        // node pays what its links cost beyond its first node's: the two
        // keys together say what its costs depend on.
        let twin = one_node_twin(inputs, group).map(|t| group_key(inputs, &t));
        let key = (group_key_among(inputs, group, among), twin);
        if let Some(i) = caches.groups.iter().position(|(k, _)| *k == key) {
            return Ok(&caches.groups[i].1);
        }
        let shared_key = shared.map(|_| (*setup, mbs, key.0.clone(), key.1.clone()));
        if let (Some(m), Some(k)) = (shared, &shared_key) {
            if let Some(c) = m.get(k) {
                caches.groups.push((key, c.to_vec()));
                return Ok(&caches.groups[caches.groups.len() - 1].1);
            }
        }
        let tp = group.len();
        let n = inputs.model.num_layers();
        let mut out = vec![LayerCost::default(); n];
        for &gpu in &key.0 .0 {
            let tkey = (gpu, tp);
            let costs = match caches.types.iter().find(|(k, _)| *k == tkey) {
                Some((_, c)) => c.clone(),
                None => {
                    let c = self.type_costs(inputs, gpu, tp, mbs);
                    caches.types.push((tkey, c.clone()));
                    c
                }
            };
            let costs = match costs {
                Some(mut c) => {
                    if inputs.profile.compute_only(gpu, tp) {
                        self.add_block_allreduces(inputs, setup, (group, among), None, mbs, &mut c);
                    } else if let Some(one_node) = one_node_twin(inputs, group) {
                        // Measured on one node: a group across nodes pays
                        // the difference on its real links.
                        self.add_block_allreduces(
                            inputs,
                            setup,
                            (group, among),
                            Some(&one_node),
                            mbs,
                            &mut c,
                        );
                    }
                    c
                }
                None => self.derived_costs(inputs, setup, gpu, (group, among), mbs)?,
            };
            for (o, c) in out.iter_mut().zip(costs) {
                *o = o.max(c);
            }
        }
        match setup.recompute {
            Recompute::Full => {
                for (c, layer) in out.iter_mut().zip(&inputs.model.layers) {
                    if layer.kind == LayerKind::TransformerBlock {
                        c.backward_s += c.forward_s;
                        c.tp_comm_s += c.tp_comm_forward_s;
                    }
                }
            }
            Recompute::Selective => {
                let per_op = setup
                    .per_op_selective()
                    .then(|| per_op_selective_share(inputs.model))
                    .flatten();
                // torchtitan's per-op checkpointing reruns its share of the
                // products and the communication it does not keep (the
                // all-gathers of a sequence-parallel group, half the
                // forward's; all-reduces otherwise). Megatron-LM reruns the
                // attention core, which holds no tensor-parallel
                // all-reduce.
                let (share, rerun_comm) = match per_op {
                    Some(share) => (share, if setup.sequence_parallel { 0.5 } else { 1.0 }),
                    None => (attention_core_share(inputs.model), 0.0),
                };
                for (c, layer) in out.iter_mut().zip(&inputs.model.layers) {
                    if layer.kind == LayerKind::TransformerBlock {
                        let comm_forward = c.tp_comm_forward_s;
                        let comm = rerun_comm * comm_forward;
                        c.backward_s += share * (c.forward_s - comm_forward).max(0.0) + comm;
                        c.tp_comm_s += comm;
                    }
                }
            }
            Recompute::None => {}
        }
        if let (Some(m), Some(k)) = (shared, shared_key) {
            m.insert(k, &out);
        }
        caches.groups.push((key, out));
        Ok(&caches.groups[caches.groups.len() - 1].1)
    }

    /// Adds to every transformer block two all-reduces forward and two
    /// backward of its output (`micro_batch x output_elems_per_sample x
    /// activation bytes`) on `group`'s links ([`block_allreduce_s`]).
    ///
    /// With `already_paid`, only what the group's all-reduces cost beyond
    /// those of that group (a measurement's, alone on one node) is added.
    /// With `among`, the group's rings share NICs with those of the other
    /// groups of its stage that span nodes, which run the same layer's
    /// collectives at the same time.
    pub(super) fn add_block_allreduces(
        &self,
        inputs: &Inputs,
        setup: &TrainingSetup,
        (group, among): (&[Device], Among),
        already_paid: Option<&[Device]>,
        mbs: usize,
        costs: &mut [LayerCost],
    ) {
        if group.len() < 2 {
            return;
        }
        // Under Megatron-LM's `--tp-comm-overlap` each collective runs in
        // chunks beside the matrix product that consumes or produces it
        // (all-gather before QKV and the first MLP product, reduce-scatter
        // after the output and second MLP products, and their transposes in
        // the backward), so a pass exposes only what its matrix products
        // cannot cover: at most the pass's time less its attention core, the
        // part no collective runs beside. Measured profiles carry their own
        // communication; only what is priced here overlaps.
        let overlap_share = (setup.tp_comm_overlap && already_paid.is_none())
            .then(|| 1.0 - attention_core_share(inputs.model));
        let mut last: Option<(u64, f64)> = None;
        for (layer, c) in inputs.model.layers.iter().zip(costs) {
            if layer.kind != LayerKind::TransformerBlock {
                continue;
            }
            let elems = layer.output_elems_per_sample;
            let comm = match last {
                Some((e, t)) if e == elems => t,
                _ => {
                    let bytes = mbs as f64 * elems as f64 * activation_bytes(setup);
                    let net = self.network(inputs.cluster);
                    let paid = already_paid
                        .map_or(0.0, |g| block_allreduce_s(&net, setup, (g, None), bytes));
                    let t = (block_allreduce_s(&net, setup, (group, among), bytes) - paid).max(0.0);
                    last = Some((elems, t));
                    t
                }
            };
            let exposed = |pass_s: f64| match overlap_share {
                Some(share) => (2.0 * comm - share * pass_s).max(0.0),
                None => 2.0 * comm,
            };
            let (forward, backward) = (exposed(c.forward_s), exposed(c.backward_s));
            c.forward_s += forward;
            c.backward_s += backward;
            c.tp_comm_s += forward + backward;
            c.tp_comm_forward_s += forward;
        }
    }

    /// A tensor-parallel degree the profile lacks: tp = 1 divided by tp plus
    /// the blocks' all-reduces on the group's links.
    pub(super) fn derived_costs(
        &self,
        inputs: &Inputs,
        setup: &TrainingSetup,
        gpu: &str,
        (group, among): (&[Device], Among),
        mbs: usize,
    ) -> Result<Vec<LayerCost>> {
        let tp = group.len();
        let base = self
            .type_costs(inputs, gpu, 1, mbs)
            .ok_or_else(|| Self::missing(inputs, gpu, tp))?;
        let t = tp as f64;
        let mut costs: Vec<LayerCost> = base
            .into_iter()
            .map(|c| LayerCost {
                forward_s: c.forward_s / t,
                backward_s: c.backward_s / t,
                tp_comm_s: 0.0,
                tp_comm_forward_s: 0.0,
            })
            .collect();
        self.add_block_allreduces(inputs, setup, (group, among), None, mbs, &mut costs);
        Ok(costs)
    }
}

/// One of a transformer block's tensor-parallel all-reduces of `bytes`
/// (per GPU) over `group`: an all-reduce, or under sequence parallelism the
/// reduce-scatter and all-gather it splits into, the same traffic. Under
/// FP8 (Megatron-LM with Transformer Engine) the all-gathers carry FP8, 1
/// byte an element: a column-parallel layer gathers its input quantised by
/// the fused norm, and a row-parallel layer's backward its quantised output
/// gradient (`gather_along_first_dim(..., quantizer=...)` in
/// transformer_engine/pytorch/module/layernorm_linear.py and base.py's
/// `grad_output_preprocess`); the reduce-scatters stay 16-bit.
///
/// With `among`, priced among the stage's other groups across nodes
/// ([`Among`]).
pub(super) fn block_allreduce_s(
    net: &collective::Network,
    setup: &TrainingSetup,
    (group, among): (&[Device], Among),
    bytes: f64,
) -> f64 {
    // One ring collective of `phases` (2 an all-reduce, 1 either half).
    let ring = |bytes: f64, phases: f64| match among {
        Some((rings, i)) => rings.curve(net, i, phases).at(bytes),
        None if phases >= 2.0 => collective::allreduce_s(net, group, bytes),
        None => collective::allgather_s(net, group, bytes),
    };
    if setup.sequence_parallel && setup.formats.compute == Precision::Fp8 {
        // Its elements, 1 byte each; a reduce-scatter is an all-gather's
        // traffic.
        let fp8_bytes = bytes / activation_bytes(setup);
        ring(bytes, 1.0) + ring(fp8_bytes, 1.0)
    } else {
        ring(bytes, 2.0)
    }
}
