//! amp's default cost model ("amp"): every device priced as it is.
//!
//! The physics, stage by stage:
//!
//! - **Compute.** A stage's forward and backward time per micro-batch come
//!   from the profile of the GPU type that runs it, at the stage's
//!   tensor-parallel degree ([`Profile::layer_time`]). A tensor-parallel
//!   group is as slow as its slowest GPU, layer by layer (the ranks meet at
//!   every layer's all-reduces). Data-parallel replicas are separate
//!   pipelines until the gradient all-reduce, so a replica of fast GPUs is
//!   not slowed by a replica of slow ones until then
//!   ([`crate::schedule::simulate`]).
//! - **Profiles without backward times** (AMP's `.npy`, per sample) take
//!   backward = [`BACKWARD_FORWARD_RATIO`] x forward for the computation.
//!   Their entries at tp > 1 were measured on one node and include the
//!   layer's tensor-parallel all-reduces; the part above `t1 / tp` (`t1` the
//!   tp = 1 time of the same GPU type) is that communication, which the
//!   backward repeats once (two all-reduces forward, two backward) rather
//!   than doubling. Per-sample times were measured one sample at a time;
//!   part of such a time is per-launch latency that a larger micro-batch
//!   does not repeat: [`PER_SAMPLE_FIXED_FRACTION`] of the computation and
//!   [`PER_SAMPLE_TP_COMM_FIXED_FRACTION`] of the communication are paid
//!   once per micro-batch, the rest per sample.
//! - **Profiles with measured micro-batches and backward** (Sailor's) are
//!   used as measured, tensor-parallel communication included.
//! - **Compute-only entries** (amp-catalog's analytic model, `source =
//!   "analytic"`, [`crate::profile::ProfileEntry::includes_tp_comm`]) get
//!   the same per-block all-reduces as a derived degree (below), priced on
//!   the group's real links and not overlapped with compute (Megatron-LM's
//!   tensor-parallel all-reduces are synchronous).
//! - **Activation recomputation** ([`DeviceOptions::recompute`], full, as
//!   Megatron-LM's `--recompute-granularity full`): a transformer block's
//!   backward runs its forward again first, all-reduces included, so its
//!   backward time gains its forward time. Other layers (embedding,
//!   vocabulary projection and loss) are not recomputed. Memory follows
//!   [`crate::memory::MemoryOptions::recompute`], set from the same option.
//! - **A tensor-parallel degree the profile lacks** is derived from tp = 1:
//!   compute / tp, plus, per transformer block, two all-reduces forward and
//!   two backward of the block's output (`micro_batch x
//!   output_elems_per_sample x activation_bytes`), priced by
//!   [`collective::concurrent_allreduce_s`] on the group's real links.
//! - **Pipeline sends.** Each tensor-parallel rank of a stage sends the full
//!   activation (`output_elems_per_sample x micro_batch x
//!   activation_bytes`; a vocabulary projection's logits are split by
//!   tensor parallelism, so each rank sends its share) to the matching rank
//!   of the next stage, as DeepSpeed's pipeline engine with Megatron-LM
//!   does (no scatter/gather); the gradient comes back the same size. All
//!   replicas and ranks cross a cut at once and share NICs
//!   ([`collective::concurrent_p2p_s`]). With
//!   [`DeviceOptions::scatter_gather_sends`] (Megatron-LM's scatter/gather
//!   optimisation, SC'21 sec. 4.1) each rank sends only its `1 / tp` slice
//!   of a block's output and the receiving group all-gathers it over its
//!   own links.
//! - **Interleaved schedule** ([`Schedule::Interleaved`], `v` chunks per
//!   device): each stage's layers are split into `v` chunks of equal block
//!   counts ([`chunk_ranges`]); chunk k of stage j is virtual stage `k pp +
//!   j`, simulated exactly ([`crate::schedule::simulate`]). The plan's
//!   layer range of a stage is what its devices hold; Megatron-LM puts
//!   chunk k at model position `k pp + j`, which costs the same for a model
//!   of identical blocks (the embedding stays in device 0's first chunk and
//!   the vocabulary projection in the last device's last chunk either way).
//!   Sends from the last device's chunk k to the first device's chunk k + 1
//!   cross the wrap-around cut.
//! - **Identical replicas are simulated once**: replicas whose per-stage
//!   times are equal (same GPU types and tensor-parallel links) run the same
//!   timeline until the all-reduce, so one representative of each kind is
//!   simulated (timeline events carry the representative's replica index);
//!   layer costs are computed once per kind of tensor-parallel group (GPU
//!   types and ring links). A 16,384-GPU plan prices in milliseconds.
//! - **Data-parallel all-reduce** of every stage: one ring per
//!   tensor-parallel rank over the stage's replicas, `stage_params / tp x
//!   gradient_bytes`, the rings sharing NICs (with tensor parallelism over a
//!   whole node, the node's tp rings share its NICs, so each gets `1 / tp`
//!   of the node's network bandwidth: one 200 Gbit/s HCA per A100 on
//!   Megatron-LM's DGX A100 nodes). Weights tied across stages
//!   (GPT-2's embedding and vocabulary projection) can add an all-reduce of
//!   their gradient between the two stages ([`DeviceOptions::tied_allreduce`],
//!   off by default: the AMP measurements show no trace of it — with it the
//!   pp > 1 plans of the homogeneous run are over-predicted by 10-15 %).
//!   Not overlapped with backward by default (DeepSpeed's pipeline engine
//!   reduces after the last micro-batch, and overlap lowered the rank
//!   correlation on the AMP data from 0.985 to 0.965);
//!   [`DeviceOptions::overlap_dp_allreduce`] models a bucketed overlap.
//! - **Sends block their sender** by default
//!   ([`DeviceOptions::blocking_sends`]): DeepSpeed's send instructions and
//!   Megatron-LM's point-to-point calls wait for completion before the next
//!   pass. (Mean error: AMP 4.9 % blocking vs 4.5 % not; Sailor GH200
//!   8.4 % vs 9.3 %, with 2-byte elements.)
//! - **Element sizes** of activations, activation gradients and
//!   data-parallel gradients: the profile's training precision when it
//!   states one ([`crate::profile::Profile::precision`]; its times are only
//!   valid in that format), else [`DeviceOptions::activation_bytes`] and
//!   [`DeviceOptions::gradient_bytes`] (fp16). Sailor's GH200 runs trained
//!   in fp32 (4 bytes: `llm_info.json` records 4 bytes per output and
//!   parameter element, [`crate::sailor::training_precision`]); pricing
//!   their sends and all-reduces with 2-byte elements under-predicted the
//!   pipeline-parallel runs by 10-11 % (Sailor mean error 8.4 % -> 5.6 %
//!   with 4 bytes, AMP data unchanged).
//! - **Optimizer step**: the profile's `optimizer_s` where measured (max
//!   over the stage's GPU types), else [`OPTIMIZER_S_PER_PARAM`] per
//!   parameter held by a device.
//! - **Iteration time**: the event simulation of
//!   [`crate::schedule::simulate`] under the chosen schedule; the breakdown
//!   is the critical stage's (see [`crate::schedule::Simulation`]), its
//!   compute split into computation and tensor-parallel communication by
//!   the share of communication in that stage's per-micro-batch time.
//! - **Memory**: [`crate::memory::plan_memory`] and
//!   [`crate::memory::stage_memory_tables`].

use crate::cluster::Device;
use crate::cost::collective;
use crate::cost::{
    prefix_sums, Breakdown, Candidate, CostModel, Estimate, Inputs, StageTables, TailTables,
};
use crate::error::{AmpError, Result};
use crate::memory;
use crate::model::{LayerKind, Model};
use crate::plan::{Plan, Stage};
use crate::schedule::{simulate, IterationSpec, PipelineTimes, Simulation, Timeline};
use crate::setup::{OptimizerSharding, PipelineSend, Recompute, TrainingSetup};
use std::ops::Range;

/// Backward time over forward time of a layer's computation when the
/// profile has no backward: the backward pass computes two matrix products
/// (input and weight gradients) for each one of the forward. AMP assumes
/// the same (its "3 x forward" for forward plus backward). Sailor's
/// measured GH200 profiles give 2.3-2.5 at micro-batches of 8 and more.
pub const BACKWARD_FORWARD_RATIO: f64 = 2.0;

/// Share of a per-sample profiled computation time paid once per
/// micro-batch rather than per sample (kernel launches, latency-bound
/// small kernels at one sample). Chosen on the AMP homogeneous
/// measurements (T4, GPT-2, micro-batches 1-16): a grid over 0-0.3 with the
/// other constants of this module gave the best rank correlation and error
/// at 0.2. Only per-sample profiles use it.
pub const PER_SAMPLE_FIXED_FRACTION: f64 = 0.2;

/// Share of a per-sample profile's tensor-parallel communication paid once
/// per micro-batch: all-reduces of one sample's activations (2 MB for
/// GPT-2 medium) are latency-bound, a larger micro-batch sends more bytes
/// per launch. Chosen on the same AMP homogeneous grid (0.3-0.7; 0.6 best).
pub const PER_SAMPLE_TP_COMM_FIXED_FRACTION: f64 = 0.6;

/// Optimizer-step time per parameter held by a device when the profile has
/// none: mixed-precision Adam reads and writes about 36 bytes per parameter
/// (fp32 master weight, two moments, fp16 gradient and weight), memory
/// bound; at the ~250 GB/s a T4-class GPU achieves that is 0.15 ns per
/// parameter. Faster GPUs take less; without a catalog of memory bandwidths
/// one conservative figure serves all.
pub const OPTIMIZER_S_PER_PARAM: f64 = 1.5e-10;

/// Framework time of every forward or backward pass of a stage, seconds.
/// Zero: 1, 2, 3 and 5 ms were tried on the AMP homogeneous and Sailor
/// GH200 measurements and each made both worse (AMP mean error 4.9 % at 0,
/// 5.8 % at 1 ms; Sailor 8.4 % at 0, 8.3 % at 1 ms but worse maximum).
pub const PASS_OVERHEAD_S: f64 = 0.0;

/// Data-parallel communication volume of ZeRO stage 3 (FSDP) over a plain
/// all-reduce: the weights are all-gathered for the forward and again for
/// the backward, and the gradients reduce-scattered, three half-volume
/// collectives instead of two (Rajbhandari et al. 2020, sec. 7).
pub const ZERO3_COMM_FACTOR: f64 = 1.5;

/// Constants of the model that are not part of the training setup (the
/// setup travels with each plan, [`crate::Plan::setup`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceOptions {
    /// Sends occupy the sending stage until done (see
    /// [`IterationSpec::blocking_sends`]).
    pub blocking_sends: bool,
    /// All-reduce the gradients of weights tied across stages between the
    /// stages holding them.
    pub tied_allreduce: bool,
    /// Framework time per forward or backward pass of a stage.
    pub pass_overhead_s: f64,
    /// Price per-device memory and refuse splits that do not fit.
    pub price_memory: bool,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            blocking_sends: true,
            tied_allreduce: false,
            pass_overhead_s: PASS_OVERHEAD_S,
            price_memory: true,
        }
    }
}

/// The per-device cost model.
#[derive(Debug, Clone, Default)]
pub struct DeviceModel {
    pub options: DeviceOptions,
}

/// One layer's cost for one micro-batch on one tensor-parallel group.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LayerCost {
    pub forward_s: f64,
    pub backward_s: f64,
    /// Part of forward + backward spent in tensor-parallel all-reduces.
    pub tp_comm_s: f64,
}

impl LayerCost {
    fn max(self, o: LayerCost) -> LayerCost {
        LayerCost {
            forward_s: self.forward_s.max(o.forward_s),
            backward_s: self.backward_s.max(o.backward_s),
            tp_comm_s: self.tp_comm_s.max(o.tp_comm_s),
        }
    }
}

/// Per-stage quantities of one replica pipeline.
struct StageCost {
    forward_s: f64,
    backward_s: f64,
    tp_comm_s: f64,
}

/// What a tensor-parallel group's layer costs depend on besides the
/// micro-batch: its GPU types and the (bandwidth, latency) bits of its ring
/// hops in NCCL order.
type GroupKey = (Vec<String>, Vec<(u64, u64)>);

/// Layer costs at one micro-batch size, per (GPU type, tp) as profiled and
/// per kind of group.
#[derive(Default)]
struct Caches {
    types: Vec<(TypeKey, Option<Vec<LayerCost>>)>,
    groups: Vec<(GroupKey, Vec<LayerCost>)>,
}

/// (GPU type, tensor-parallel degree).
type TypeKey = (String, usize);

fn group_key(inputs: &Inputs, group: &[Device]) -> GroupKey {
    let mut types: Vec<String> = group
        .iter()
        .map(|d| inputs.cluster.nodes[d.node].gpu_type.clone())
        .collect();
    types.sort();
    types.dedup();
    let ring = collective::ring_order(group);
    let hops = (0..ring.len())
        .map(|i| {
            let l = collective::link(inputs.cluster, ring[i], ring[(i + 1) % ring.len()]);
            (l.bytes_per_s.to_bits(), l.latency_s.to_bits())
        })
        .collect();
    (types, hops)
}

/// Bytes of one element sent between stages or all-reduced inside a
/// tensor-parallel group (activation or activation gradient).
fn activation_bytes(setup: &TrainingSetup) -> f64 {
    setup.formats.sends.bytes()
}

/// Bytes of one gradient element in the data-parallel reduction.
fn gradient_bytes(setup: &TrainingSetup) -> f64 {
    setup.formats.gradients.bytes()
}

/// Whether a tensor-parallel stage sends `1 / tp` of a block's output per
/// rank: scatter/gather sends, or sequence parallelism (whose activations
/// between blocks are already split over the group).
fn split_sends(setup: &TrainingSetup) -> bool {
    setup.pipeline_send == PipelineSend::ScatterGather || setup.sequence_parallel
}

/// Data-parallel communication volume relative to a ring all-reduce of the
/// gradients: ZeRO-1/2 replace it by a reduce-scatter and an all-gather
/// (the same volume), ZeRO-3 adds a second all-gather of the weights.
fn dp_comm_factor(setup: &TrainingSetup) -> f64 {
    if setup.optimizer_sharding == OptimizerSharding::Zero3 {
        ZERO3_COMM_FACTOR
    } else {
        1.0
    }
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

impl DeviceModel {
    pub fn new(options: DeviceOptions) -> DeviceModel {
        DeviceModel { options }
    }

    fn missing(inputs: &Inputs, gpu: &str, tp: usize) -> AmpError {
        let have = inputs.profile.tp_degrees(gpu);
        if have.is_empty() {
            AmpError::MissingProfile(format!(
                "no profile for GPU type `{gpu}` (profiled: {:?}); profile it, or remove its nodes from the cluster",
                inputs.profile.gpu_types()
            ))
        } else {
            AmpError::MissingProfile(format!(
                "GPU type `{gpu}` has no profile at tensor-parallel degree {tp} nor at 1 to derive it from (profiled degrees: {have:?})"
            ))
        }
    }

    /// Computation-only forward and backward of `layer` at degree `tp` when
    /// the profile has that degree, with the tensor-parallel communication
    /// it includes: (forward, backward, communication in both).
    fn profiled(
        &self,
        inputs: &Inputs,
        gpu: &str,
        tp: usize,
        mbs: usize,
        layer: usize,
    ) -> Option<LayerCost> {
        let p = inputs.profile;
        let lt = p.layer_time(gpu, tp, mbs, layer)?;
        if let Some(b) = lt.backward_s {
            return Some(LayerCost {
                forward_s: lt.forward_s,
                backward_s: b,
                tp_comm_s: 0.0,
            });
        }
        let r = BACKWARD_FORWARD_RATIO;
        let Some(per_sample) = p
            .per_sample_forward(gpu, tp)
            .and_then(|f| f.get(layer).copied())
        else {
            return Some(LayerCost {
                forward_s: lt.forward_s,
                backward_s: r * lt.forward_s,
                tp_comm_s: 0.0,
            });
        };
        // Per-sample entry: split computation and communication, scale each
        // with its fixed share.
        let (c1, k1) = match (tp > 1).then(|| {
            p.per_sample_forward(gpu, 1)
                .and_then(|f| f.get(layer).copied())
        }) {
            Some(Some(t1)) => {
                let c = (t1 / tp as f64).min(per_sample);
                (c, per_sample - c)
            }
            _ => (per_sample, 0.0),
        };
        let m = mbs as f64;
        let c = c1 * (PER_SAMPLE_FIXED_FRACTION + (1.0 - PER_SAMPLE_FIXED_FRACTION) * m);
        let k = k1
            * (PER_SAMPLE_TP_COMM_FIXED_FRACTION + (1.0 - PER_SAMPLE_TP_COMM_FIXED_FRACTION) * m);
        Some(LayerCost {
            forward_s: c + k,
            backward_s: r * c + k,
            tp_comm_s: 2.0 * k,
        })
    }

    /// Layer costs of every layer for one GPU type at `tp`, when the profile
    /// has that degree.
    fn type_costs(
        &self,
        inputs: &Inputs,
        gpu: &str,
        tp: usize,
        mbs: usize,
    ) -> Option<Vec<LayerCost>> {
        if !inputs.profile.has(gpu, tp) {
            return None;
        }
        (0..inputs.model.num_layers())
            .map(|l| self.profiled(inputs, gpu, tp, mbs, l))
            .collect()
    }

    /// Costs of every layer for one micro-batch on the tensor-parallel
    /// group `group` (the max over its GPU types, layer by layer), with
    /// the tensor-parallel all-reduces of compute-only entries and the
    /// recomputed forward passes. Memoized per kind of group.
    fn group_costs(
        &self,
        inputs: &Inputs,
        setup: &TrainingSetup,
        group: &[Device],
        mbs: usize,
        caches: &mut Caches,
    ) -> Result<Vec<LayerCost>> {
        let key = group_key(inputs, group);
        if let Some((_, c)) = caches.groups.iter().find(|(k, _)| *k == key) {
            return Ok(c.clone());
        }
        let tp = group.len();
        let n = inputs.model.num_layers();
        let mut out = vec![LayerCost::default(); n];
        for gpu in &key.0 {
            let tkey = (gpu.clone(), tp);
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
                        self.add_block_allreduces(inputs, setup, group, mbs, &mut c);
                    }
                    c
                }
                None => self.derived_costs(inputs, setup, gpu, group, mbs)?,
            };
            for (o, c) in out.iter_mut().zip(costs) {
                *o = o.max(c);
            }
        }
        match setup.recompute {
            Recompute::Full => {
                for (c, layer) in out.iter_mut().zip(&inputs.model.layers) {
                    if layer.kind == LayerKind::TransformerBlock {
                        // The forward's share of the communication is half.
                        c.backward_s += c.forward_s;
                        c.tp_comm_s *= 1.5;
                    }
                }
            }
            Recompute::Selective => {
                // The attention core's share of a block's forward, rerun in
                // its backward; it holds no tensor-parallel all-reduce.
                let share = attention_core_share(inputs.model);
                for (c, layer) in out.iter_mut().zip(&inputs.model.layers) {
                    if layer.kind == LayerKind::TransformerBlock {
                        let comm_forward = c.tp_comm_s / 2.0;
                        c.backward_s += share * (c.forward_s - comm_forward).max(0.0);
                    }
                }
            }
            Recompute::None => {}
        }
        caches.groups.push((key, out.clone()));
        Ok(out)
    }

    /// Adds to every transformer block two all-reduces forward and two
    /// backward of its output (`micro_batch x output_elems_per_sample x
    /// activation bytes`) on `group`'s links.
    fn add_block_allreduces(
        &self,
        inputs: &Inputs,
        setup: &TrainingSetup,
        group: &[Device],
        mbs: usize,
        costs: &mut [LayerCost],
    ) {
        if group.len() < 2 {
            return;
        }
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
                    let t = collective::allreduce_s(inputs.cluster, group, bytes);
                    last = Some((elems, t));
                    t
                }
            };
            c.forward_s += 2.0 * comm;
            c.backward_s += 2.0 * comm;
            c.tp_comm_s += 4.0 * comm;
        }
    }

    /// A tensor-parallel degree the profile lacks: tp = 1 divided by tp plus
    /// the blocks' all-reduces on the group's links.
    fn derived_costs(
        &self,
        inputs: &Inputs,
        setup: &TrainingSetup,
        gpu: &str,
        group: &[Device],
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
            })
            .collect();
        self.add_block_allreduces(inputs, setup, group, mbs, &mut costs);
        Ok(costs)
    }

    /// Bytes one rank of a stage ending after `layer` sends per micro-batch.
    fn send_bytes(
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
    fn transfer_s(
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
                .map(|g| collective::allgather_s(inputs.cluster, g, full))
                .fold(0.0, f64::max);
        }
        t
    }

    /// Time of one send across the cut between two stages (each given as
    /// its replicas), every replica and rank sending at once.
    fn cut_s(&self, inputs: &Inputs, from: &[Vec<Device>], to: &[Vec<Device>], bytes: f64) -> f64 {
        let mut pairs = Vec::new();
        for (r, dst) in to.iter().enumerate() {
            let src = &from[r % from.len()];
            for (t, &d) in dst.iter().enumerate() {
                pairs.push((src[t % src.len()], d));
            }
        }
        collective::concurrent_p2p_s(inputs.cluster, &pairs, bytes)
    }

    /// Per-pipeline-rank all-reduce times, tied weights included.
    fn allreduce_times(&self, inputs: &Inputs, plan: &Plan) -> Vec<f64> {
        let model = inputs.model;
        let setup = &plan.setup;
        let g = gradient_bytes(setup);
        let mut out: Vec<f64> = plan
            .rank_stages()
            .iter()
            .enumerate()
            .map(|(j, s)| {
                let tp = s.tp();
                let rings: Vec<Vec<Device>> = (0..tp)
                    .map(|t| s.replicas.iter().map(|rep| rep[t]).collect())
                    .collect();
                let params: u64 = plan
                    .rank_layers(j)
                    .into_iter()
                    .map(|c| model.stage_params(c))
                    .sum();
                let bytes = params as f64 / tp as f64 * g;
                collective::concurrent_allreduce_s(inputs.cluster, &rings, bytes)
                    * dp_comm_factor(setup)
            })
            .collect();
        let pp = plan.pp().max(1);
        let stage_of = |l: usize| {
            plan.stages
                .iter()
                .position(|s| s.layers().contains(&l))
                .map(|i| i % pp)
        };
        for (l, layer) in model.layers.iter().enumerate() {
            let Some(t) = layer.tied_to.filter(|_| self.options.tied_allreduce) else {
                continue;
            };
            let (Some(a), Some(b)) = (stage_of(t), stage_of(l)) else {
                continue;
            };
            if a == b {
                continue;
            }
            let (sa, sb) = (&plan.stages[a], &plan.stages[b]);
            let mut groups = Vec::new();
            for (r, rep) in sa.replicas.iter().enumerate() {
                let other = &sb.replicas[r % sb.replicas.len()];
                for (k, &d) in rep.iter().enumerate() {
                    groups.push(vec![d, other[k % other.len()]]);
                }
            }
            let bytes = layer.params as f64 / sa.tp().max(sb.tp()) as f64 * g;
            let t = collective::concurrent_allreduce_s(inputs.cluster, &groups, bytes);
            out[a] += t;
            out[b] += t;
        }
        out
    }

    /// Optimizer step of one stage: measured where the profile has it, on
    /// the slowest of the stage's GPU types.
    fn optimizer_time(&self, inputs: &Inputs, plan: &Plan, rank: usize) -> f64 {
        let stage: &Stage = &plan.stages[rank];
        let chunks = plan.rank_layers(rank);
        let tp = stage.tp();
        let mut types: Vec<&str> = stage
            .devices()
            .map(|d| inputs.cluster.nodes[d.node].gpu_type.as_str())
            .collect();
        types.sort();
        types.dedup();
        let params: u64 = chunks
            .iter()
            .map(|c| inputs.model.stage_params(c.clone()))
            .sum();
        // Sharded optimizer state: each replica steps its share.
        let shard = if plan.setup.optimizer_sharding >= OptimizerSharding::Zero1 {
            stage.dp().max(1) as f64
        } else {
            1.0
        };
        let estimate = OPTIMIZER_S_PER_PARAM * params as f64 / tp as f64 / shard;
        types
            .into_iter()
            .map(|gpu| {
                let measured: Option<f64> = chunks
                    .iter()
                    .flat_map(|c| c.clone())
                    .map(|l| {
                        inputs.profile.optimizer_time(gpu, tp, l).or_else(|| {
                            inputs
                                .profile
                                .optimizer_time(gpu, 1, l)
                                .map(|o| o / tp as f64)
                        })
                    })
                    .sum();
                measured.map_or(estimate, |m| m / shard)
            })
            .fold(0.0, f64::max)
    }

    /// The iteration of `plan`, simulated event by event.
    pub fn simulate_plan(&self, inputs: &Inputs, plan: &Plan) -> Result<Simulation> {
        Ok(self.run(inputs, plan)?.0)
    }

    /// The simulation and the per-replica, per-stage costs it ran on.
    fn run(&self, inputs: &Inputs, plan: &Plan) -> Result<(Simulation, Vec<Vec<StageCost>>)> {
        plan.validate(inputs.model, inputs.cluster)?;
        let setup = &plan.setup;
        setup.check_profile(inputs.profile)?;
        let mbs = plan.micro_batch;
        let pp = plan.pp();
        let dp = plan.dp();
        let nv = plan.stages.len();
        // chunks[j][k]: layers of chunk k of pipeline rank j (virtual stage
        // k pp + j).
        let chunks: Vec<Vec<Range<usize>>> = (0..pp).map(|j| plan.rank_layers(j)).collect();
        let mut caches: Vec<(usize, Caches)> = Vec::new();
        // stage_costs[r][j] (all chunks); chunk_costs[r][c] = (forward,
        // backward) of virtual stage c.
        let mut stage_costs: Vec<Vec<StageCost>> =
            (0..dp).map(|_| Vec::with_capacity(pp)).collect();
        let mut chunk_costs: Vec<Vec<(f64, f64)>> = vec![vec![(0.0, 0.0); nv]; dp];
        let o = self.options.pass_overhead_s;
        for (j, s) in plan.rank_stages().iter().enumerate() {
            let tp = s.tp();
            if !caches.iter().any(|(t, _)| *t == tp) {
                caches.push((tp, Caches::default()));
            }
            let cache = &mut caches.iter_mut().find(|(t, _)| *t == tp).unwrap().1;
            for (r, rep) in s.replicas.iter().enumerate() {
                let costs = self.group_costs(inputs, setup, rep, mbs, cache)?;
                let mut total = StageCost {
                    forward_s: 0.0,
                    backward_s: 0.0,
                    tp_comm_s: 0.0,
                };
                for (k, range) in chunks[j].iter().enumerate() {
                    let c = &costs[range.clone()];
                    let f = o + c.iter().map(|x| x.forward_s).sum::<f64>();
                    let b = o + c.iter().map(|x| x.backward_s).sum::<f64>();
                    chunk_costs[r][k * pp + j] = (f, b);
                    total.forward_s += f;
                    total.backward_s += b;
                    total.tp_comm_s += c.iter().map(|x| x.tp_comm_s).sum::<f64>();
                }
                stage_costs[r].push(total);
            }
        }
        // Virtual cut c: from stage c mod pp (its chunk c / pp) to stage
        // (c + 1) mod pp, after the chunk's last layer.
        let transfer = |c: usize, forward: bool| {
            let (j, jn) = (c % pp, (c + 1) % pp);
            let last = chunks[j][c / pp].end - 1;
            let (a, b) = (&plan.stages[j].replicas, &plan.stages[jn].replicas);
            if forward {
                self.transfer_s(inputs, setup, a, b, last, mbs)
            } else {
                self.transfer_s(inputs, setup, b, a, last, mbs)
            }
        };
        let sends: Vec<f64> = (0..nv - 1).map(|c| transfer(c, true)).collect();
        let back: Vec<f64> = (0..nv - 1).map(|c| transfer(c, false)).collect();
        // One representative of each kind of replica pipeline.
        let mut reps: Vec<usize> = Vec::new();
        let mut pipelines: Vec<PipelineTimes> = Vec::new();
        for (r, cc) in chunk_costs.iter().enumerate() {
            let p = PipelineTimes {
                forward_s: cc.iter().map(|x| x.0).collect(),
                backward_s: cc.iter().map(|x| x.1).collect(),
                send_forward_s: sends.clone(),
                send_backward_s: back.clone(),
            };
            if !pipelines.contains(&p) {
                pipelines.push(p);
                reps.push(r);
            }
        }
        let tail = (0..pp)
            .map(|j| {
                let total: f64 = chunks[j]
                    .iter()
                    .map(|c| inputs.model.stage_params(c.clone()) as f64)
                    .sum();
                let first = inputs.model.layers[chunks[j][0].start].params as f64;
                if total > 0.0 {
                    (first / total).min(1.0)
                } else {
                    0.0
                }
            })
            .collect();
        let spec = IterationSpec {
            pipelines,
            num_micro_batches: plan.num_micro_batches,
            schedule: setup.schedule,
            allreduce_s: self.allreduce_times(inputs, plan),
            optimizer_s: (0..pp)
                .map(|j| self.optimizer_time(inputs, plan, j))
                .collect(),
            overlap_allreduce: setup.overlap_grad_reduce,
            allreduce_tail_fraction: tail,
            blocking_sends: self.options.blocking_sends,
        };
        let mut sim = simulate(&spec)?;
        for e in &mut sim.timeline.events {
            e.replica = reps[e.replica];
        }
        sim.critical_replica = reps[sim.critical_replica];
        Ok((sim, stage_costs))
    }

    /// The simulated timeline of one iteration of `plan`, for drawing.
    pub fn timeline(&self, inputs: &Inputs, plan: &Plan) -> Result<Timeline> {
        Ok(self.run(inputs, plan)?.0.timeline)
    }
}

impl CostModel for DeviceModel {
    fn name(&self) -> &'static str {
        "amp"
    }

    fn stage_tables(&self, inputs: &Inputs, c: &Candidate) -> Result<StageTables> {
        let grid = c.grid;
        let setup = c.setup;
        setup.check_profile(inputs.profile)?;
        let mbs = c.micro_batch;
        let n = inputs.model.num_layers();
        let mut cache = Caches::default();
        let mut compute_prefix = Vec::with_capacity(grid.pp);
        for j in 0..grid.pp {
            let mut per_layer = vec![0.0f64; n];
            for rep in grid.stage(j) {
                let costs = self.group_costs(inputs, setup, rep, mbs, &mut cache)?;
                for (p, c) in per_layer.iter_mut().zip(costs) {
                    *p = p.max(c.forward_s + c.backward_s);
                }
            }
            compute_prefix.push(prefix_sums(per_layer));
        }
        let cut = (0..grid.pp.saturating_sub(1))
            .map(|j| {
                // Layers of one kind and output size cost the same to send.
                let mut seen: Vec<((LayerKind, u64), f64)> = Vec::new();
                (0..n)
                    .map(|k| {
                        let l = &inputs.model.layers[k];
                        let key = (l.kind, l.output_elems_per_sample);
                        if let Some((_, t)) = seen.iter().find(|(x, _)| *x == key) {
                            return *t;
                        }
                        let (a, b) = (grid.stage(j), grid.stage(j + 1));
                        let t = self.transfer_s(inputs, setup, a, b, k, mbs)
                            + self.transfer_s(inputs, setup, b, a, k, mbs);
                        seen.push((key, t));
                        t
                    })
                    .collect()
            })
            .collect();
        let memory = self.options.price_memory.then(|| {
            memory::stage_memory_tables(
                inputs.model,
                inputs.cluster,
                grid,
                mbs,
                c.num_micro_batches,
                setup,
            )
        });
        // The all-reduce tail, linear in the stage's parameters (its
        // latency term and the optimizer step are left out: small, and the
        // simulation prices them for the final estimate).
        let probe = 1e9;
        let s_per_param = (0..grid.pp)
            .map(|j| {
                let stage = grid.stage(j);
                let rings: Vec<Vec<Device>> = (0..grid.tp)
                    .map(|t| stage.iter().map(|rep| rep[t]).collect())
                    .collect();
                let bytes = probe / grid.tp as f64 * gradient_bytes(setup);
                let t = collective::concurrent_allreduce_s(inputs.cluster, &rings, bytes)
                    - collective::concurrent_allreduce_s(inputs.cluster, &rings, 0.0);
                t * dp_comm_factor(setup) / probe
            })
            .collect();
        Ok(StageTables {
            compute_prefix,
            cut,
            memory,
            tail: Some(TailTables {
                s_per_param,
                params: inputs.model.param_table(),
            }),
            min_layers: 1,
        })
    }

    fn evaluate(&self, inputs: &Inputs, plan: &Plan) -> Result<Estimate> {
        let (sim, costs) = self.run(inputs, plan)?;
        let c = &costs[sim.critical_replica][sim.critical_stage];
        let busy = c.forward_s + c.backward_s;
        let comm_share = if busy > 0.0 {
            (c.tp_comm_s / busy).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let memory = if self.options.price_memory {
            memory::plan_memory(inputs.model, inputs.cluster, plan)
        } else {
            Vec::new()
        };
        Ok(Estimate {
            iteration_s: sim.timeline.iteration_s,
            breakdown: Breakdown {
                compute_s: sim.compute_s * (1.0 - comm_share),
                bubble_s: sim.bubble_s,
                pipeline_send_s: sim.send_s,
                tp_comm_s: sim.compute_s * comm_share,
                dp_allreduce_s: sim.allreduce_s,
                optimizer_s: sim.optimizer_s,
            },
            memory,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Cluster, Node};
    use crate::model::{Layer, Model};
    use crate::placement::{DeviceGrid, Placement};
    use crate::profile::{Profile, ProfileEntry};
    use crate::schedule::{EventKind, Schedule};
    use crate::setup::Precision;

    fn d(node: usize, gpu: usize) -> Device {
        Device { node, gpu }
    }

    /// Four blocks of 1000 parameters, 100 elements per sample.
    fn model() -> Model {
        let layer = |i: usize| Layer {
            name: format!("b{i}"),
            kind: LayerKind::TransformerBlock,
            params: 1000,
            output_elems_per_sample: 100,
            forward_flops_per_sample: None,
            tied_to: None,
            stored_activation_elems_per_sample: None,
        };
        Model {
            name: "m".into(),
            shape: None,
            layers: (0..4).map(layer).collect(),
        }
    }

    /// Node 0: two fast GPUs; node 1: two slow ones. 1e9 B/s everywhere.
    fn cluster() -> Cluster {
        let node = |gpu: &str| Node {
            gpu_type: gpu.into(),
            gpus: 2,
            intra_bytes_per_s: 1e9,
            inter_bytes_per_s: 1e9,
            nics: 1,
            gpu_memory_bytes: None,
            price_per_hour: None,
        };
        Cluster {
            name: "c".into(),
            nodes: vec![node("fast"), node("slow")],
            links: Vec::new(),
        }
    }

    fn entry(gpu: &str, tp: usize, f: f64, b: Option<f64>) -> ProfileEntry {
        ProfileEntry {
            gpu: gpu.into(),
            tp,
            micro_batch: Some(2),
            forward_s: vec![f; 4],
            backward_s: b.map(|b| vec![b; 4]),
            optimizer_s: None,
            source: None,
        }
    }

    fn time_only() -> DeviceModel {
        DeviceModel::new(DeviceOptions {
            price_memory: false,
            ..Default::default()
        })
    }

    fn plan(stages: Vec<(usize, usize, Vec<Vec<Device>>)>, b: usize) -> Plan {
        Plan {
            micro_batch: 2,
            num_micro_batches: b,
            stages: stages
                .into_iter()
                .map(|(first_layer, end_layer, replicas)| Stage {
                    first_layer,
                    end_layer,
                    replicas,
                })
                .collect(),
            setup: TrainingSetup::default(),
        }
    }

    fn durations(t: &Timeline, stage: usize, kind: EventKind) -> Vec<f64> {
        t.events
            .iter()
            .filter(|e| e.stage == stage && e.kind == kind)
            .map(|e| e.end_s - e.start_s)
            .collect()
    }

    fn all_close(got: Vec<f64>, want: f64, n: usize) {
        assert_eq!(got.len(), n, "{got:?}");
        assert!(
            got.iter().all(|g| (g - want).abs() < 1e-12),
            "{got:?} != {want}"
        );
    }

    #[test]
    fn each_stage_is_priced_on_its_own_gpus() {
        let (m, c) = (model(), cluster());
        let p = Profile {
            entries: vec![
                entry("fast", 1, 1.0, Some(2.0)),
                entry("slow", 1, 3.0, Some(6.0)),
            ],
            precision: None,
        };
        let inputs = Inputs {
            model: &m,
            cluster: &c,
            profile: &p,
        };
        // Stage 0 (layers 0..3) on a fast GPU, stage 1 (layer 3) on a slow one.
        let pl = plan(
            vec![(0, 3, vec![vec![d(0, 0)]]), (3, 4, vec![vec![d(1, 0)]])],
            2,
        );
        let t = time_only().timeline(&inputs, &pl).unwrap();
        all_close(durations(&t, 0, EventKind::Forward), 3.0, 2);
        all_close(durations(&t, 0, EventKind::Backward), 6.0, 2);
        all_close(durations(&t, 1, EventKind::Forward), 3.0, 2);
        all_close(durations(&t, 1, EventKind::Backward), 6.0, 2);
        // A tensor-parallel group mixing the types runs at the slow pace
        // (tp = 2 derived from tp = 1: 3 / 2 per layer plus the all-reduces).
        let pl = plan(vec![(0, 4, vec![vec![d(0, 0), d(1, 0)]])], 1);
        let t = time_only().timeline(&inputs, &pl).unwrap();
        // All-reduce of 2 x 100 x 2 = 400 bytes between the nodes:
        // 2 x 30us + 400 / (1e9 x 0.5).
        let ar = 2.0 * collective::INTER_NODE_LATENCY_S
            + 400.0 / (1e9 * collective::INTER_NODE_EFFICIENCY);
        let f = durations(&t, 0, EventKind::Forward)[0];
        assert!((f - 4.0 * (1.5 + 2.0 * ar)).abs() < 1e-12, "{f}");
    }

    #[test]
    fn per_sample_profiles_split_compute_and_tp_communication() {
        let (m, c) = (model(), cluster());
        let per_sample = |tp: usize, f: f64| ProfileEntry {
            micro_batch: None,
            backward_s: None,
            ..entry("fast", tp, f, None)
        };
        let p = Profile {
            entries: vec![per_sample(1, 1.0), per_sample(2, 0.8)],
            precision: None,
        };
        let inputs = Inputs {
            model: &m,
            cluster: &c,
            profile: &p,
        };
        let model = time_only();
        // A layer at tp 2, per sample: compute 1.0 / 2 = 0.5, communication
        // 0.3. Micro-batch 2: compute 0.5 x (0.2 + 0.8 x 2) = 0.9,
        // communication 0.3 x (0.6 + 0.4 x 2) = 0.42. Forward 1.32,
        // backward 2 x 0.9 + 0.42 = 2.22; four layers.
        let pl = plan(vec![(0, 4, vec![vec![d(0, 0), d(0, 1)]])], 1);
        let t = model.timeline(&inputs, &pl).unwrap();
        all_close(durations(&t, 0, EventKind::Forward), 4.0 * 1.32, 1);
        all_close(durations(&t, 0, EventKind::Backward), 4.0 * 2.22, 1);
        let e = model.evaluate(&inputs, &pl).unwrap();
        assert!(
            (e.breakdown.tp_comm_s - 4.0 * 0.84).abs() < 1e-9,
            "{:?}",
            e.breakdown
        );
        // Node 1 has no profile: a clear error.
        let pl = plan(
            vec![
                (0, 1, vec![vec![d(0, 0), d(0, 1)]]),
                (1, 4, vec![vec![d(1, 0), d(1, 1)]]),
            ],
            1,
        );
        let e = model.evaluate(&inputs, &pl).unwrap_err().to_string();
        assert!(e.contains("`slow`"), "{e}");
    }

    #[test]
    fn breakdown_adds_up_and_tables_match() {
        let (m, c) = (model(), cluster());
        let p = Profile {
            entries: vec![
                entry("fast", 1, 1.0, Some(2.0)),
                entry("slow", 1, 2.0, Some(4.0)),
            ],
            precision: None,
        };
        let inputs = Inputs {
            model: &m,
            cluster: &c,
            profile: &p,
        };
        let pl = plan(
            vec![
                (0, 2, vec![vec![d(0, 0)], vec![d(0, 1)]]),
                (2, 4, vec![vec![d(1, 0)], vec![d(1, 1)]]),
            ],
            4,
        );
        let e = time_only().evaluate(&inputs, &pl).unwrap();
        let b = &e.breakdown;
        let sum = b.compute_s
            + b.bubble_s
            + b.pipeline_send_s
            + b.tp_comm_s
            + b.dp_allreduce_s
            + b.optimizer_s;
        assert!(
            (sum - e.iteration_s).abs() < 1e-9,
            "{sum} vs {}",
            e.iteration_s
        );
        assert!(b.dp_allreduce_s > 0.0 && b.optimizer_s > 0.0);
        // The slow stage bounds the iteration from below: 4 x (2 + 4) x 2.
        assert!(e.iteration_s >= 48.0);
        let grid = DeviceGrid::new(&c, 1, 2, 2, &Placement::artifact_default(&c));
        let cand = Candidate {
            grid: &grid,
            setup: &TrainingSetup::default(),
            micro_batch: 2,
            num_micro_batches: 4,
        };
        let t = time_only().stage_tables(&inputs, &cand).unwrap();
        assert_eq!(t.compute_prefix[0][4], 12.0);
        assert_eq!(t.compute_prefix[1][4], 24.0);
        // A cut after any block: 2 x 100 x 2 bytes, both ways, two replicas
        // sharing each NIC: 2 x (30us + 400 x 2 / 0.5e9).
        let cut = 2.0
            * (collective::INTER_NODE_LATENCY_S
                + 800.0 / (1e9 * collective::INTER_NODE_EFFICIENCY));
        assert!((t.cut[0][1] - cut).abs() < 1e-15);
    }

    #[test]
    fn number_formats_size_sends_and_allreduces() {
        let (m, c) = (model(), cluster());
        let mut p = Profile {
            entries: vec![
                entry("fast", 1, 1.0, Some(2.0)),
                entry("slow", 1, 2.0, Some(4.0)),
            ],
            precision: None,
        };
        let grid = DeviceGrid::new(&c, 1, 2, 2, &Placement::artifact_default(&c));
        let fp32 = TrainingSetup {
            formats: Precision::Fp32.formats(),
            ..TrainingSetup::default()
        };
        let price = |p: &Profile, setup: &TrainingSetup| {
            let inputs = Inputs {
                model: &m,
                cluster: &c,
                profile: p,
            };
            let cand = Candidate {
                grid: &grid,
                setup,
                micro_batch: 2,
                num_micro_batches: 4,
            };
            let mut pl = plan(
                vec![
                    (0, 2, vec![vec![d(0, 0)], vec![d(0, 1)]]),
                    (2, 4, vec![vec![d(1, 0)], vec![d(1, 1)]]),
                ],
                4,
            );
            pl.setup = *setup;
            let model = time_only();
            Ok::<_, AmpError>((
                model.stage_tables(&inputs, &cand)?,
                model.allreduce_times(&inputs, &pl),
            ))
        };
        // 16-bit: 2 x 100 x 2 = 400 bytes per rank and cut; fp32 twice
        // that; two replicas sharing each NIC, both ways.
        let (t16, ar16) = price(&p, &TrainingSetup::default()).unwrap();
        p.precision = Some(Precision::Fp32);
        let (t32, ar32) = price(&p, &fp32).unwrap();
        let lat = collective::INTER_NODE_LATENCY_S;
        let bw = 1e9 * collective::INTER_NODE_EFFICIENCY;
        assert!((t16.cut[0][1] - 2.0 * (lat + 800.0 / bw)).abs() < 1e-15);
        assert!((t32.cut[0][1] - 2.0 * (lat + 1600.0 / bw)).abs() < 1e-15);
        // All-reduce of each stage's 2000 parameters over two replicas on
        // one node (1e9 B/s, 10 us steps): 2 x 10 us + bytes / 1e9.
        let intra = collective::INTRA_NODE_LATENCY_S;
        for (ar, bytes) in [(&ar16, 2000.0 * 2.0), (&ar32, 2000.0 * 4.0)] {
            for t in ar.iter() {
                assert!((t - (2.0 * intra + bytes / 1e9)).abs() < 1e-15, "{t}");
            }
        }
        // A profile measured in fp32 does not price a 16-bit setup.
        let e = price(&p, &TrainingSetup::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("measured in fp32"), "{e}");
        // fp16 and bf16 share their element size.
        p.precision = Some(Precision::Fp16);
        let (t16b, _) = price(&p, &TrainingSetup::default()).unwrap();
        assert_eq!(t16b.cut, t16.cut);
    }

    #[test]
    fn zero3_pays_one_and_a_half_all_reduces_and_selective_recompute_reruns_attention() {
        let (c, mut m) = (cluster(), model());
        m.shape = Some(crate::model::TransformerShape {
            hidden: 64,
            num_blocks: 4,
            seq_len: 128,
            vocab: 10,
            heads: 2,
        });
        let p = Profile {
            entries: vec![
                entry("fast", 1, 1.0, Some(2.0)),
                entry("slow", 1, 2.0, Some(4.0)),
            ],
            precision: None,
        };
        let inputs = Inputs {
            model: &m,
            cluster: &c,
            profile: &p,
        };
        let mut pl = plan(
            vec![
                (0, 2, vec![vec![d(0, 0)], vec![d(0, 1)]]),
                (2, 4, vec![vec![d(1, 0)], vec![d(1, 1)]]),
            ],
            4,
        );
        let plain = time_only().allreduce_times(&inputs, &pl);
        pl.setup.optimizer_sharding = OptimizerSharding::Zero3;
        let z3 = time_only().allreduce_times(&inputs, &pl);
        for (a, b) in plain.iter().zip(&z3) {
            assert!((b / a - ZERO3_COMM_FACTOR).abs() < 1e-12);
        }
        // s = 128, h = 64: the attention core is 128 / (384 + 128) = 1/4 of
        // a block's forward, rerun in its backward.
        pl.setup = TrainingSetup {
            recompute: Recompute::Selective,
            ..TrainingSetup::default()
        };
        let t = time_only().timeline(&inputs, &pl).unwrap();
        all_close(durations(&t, 0, EventKind::Backward), 2.0 * (2.0 + 0.25), 4);
    }

    #[test]
    fn analytic_entries_get_tp_allreduces_and_recompute_reruns_the_forward() {
        let (m, c) = (model(), cluster());
        let analytic = ProfileEntry {
            source: Some(crate::profile::ANALYTIC_SOURCE.into()),
            ..entry("fast", 2, 1.0, Some(2.0))
        };
        let measured = entry("fast", 2, 1.0, Some(2.0));
        let price = |e: &ProfileEntry, recompute: bool| {
            let mut pl = plan(vec![(0, 4, vec![vec![d(0, 0), d(0, 1)]])], 1);
            if recompute {
                pl.setup.recompute = Recompute::Full;
            }
            let p = Profile {
                entries: vec![e.clone()],
                precision: None,
            };
            let inputs = Inputs {
                model: &m,
                cluster: &c,
                profile: &p,
            };
            let t = time_only().timeline(&inputs, &pl).unwrap();
            (
                durations(&t, 0, EventKind::Forward)[0],
                durations(&t, 0, EventKind::Backward)[0],
            )
        };
        // Measured tp 2 times include the all-reduces: used as they are.
        assert_eq!(price(&measured, false), (4.0, 8.0));
        // Analytic ones do not: per block two all-reduces forward and two
        // backward of 2 x 100 x 2 = 400 bytes between two GPUs of a node,
        // 2 x 10 us + 2 x 1/2 x 400 / 1e9 each.
        let ar = 2.0 * collective::INTRA_NODE_LATENCY_S + 400.0 / 1e9;
        let (f, b) = price(&analytic, false);
        assert!((f - 4.0 * (1.0 + 2.0 * ar)).abs() < 1e-12, "{f}");
        assert!((b - 4.0 * (2.0 + 2.0 * ar)).abs() < 1e-12, "{b}");
        // Full recomputation: the backward reruns the forward first.
        let (f2, b2) = price(&analytic, true);
        assert_eq!(f2, f);
        assert!((b2 - (b + f)).abs() < 1e-12, "{b2}");
        assert_eq!(price(&measured, true), (4.0, 12.0));
    }

    /// Two stages of two replicas, two chunks per device: identical
    /// replicas are simulated once, every chunk is priced on its layers and
    /// the wrap-around cut (device 1 chunk 0 -> device 0 chunk 1) is an
    /// inter-node send.
    #[test]
    fn interleaved_plans_simulate_one_representative_replica() {
        let (m, c) = (model(), cluster());
        let p = Profile {
            entries: vec![
                entry("fast", 1, 1.0, Some(2.0)),
                entry("slow", 1, 3.0, Some(6.0)),
            ],
            precision: None,
        };
        let inputs = Inputs {
            model: &m,
            cluster: &c,
            profile: &p,
        };
        let il = TrainingSetup {
            schedule: Schedule::Interleaved { virtual_stages: 2 },
            ..TrainingSetup::default()
        };
        // Megatron-LM's order: virtual stage i on pipeline rank i mod 2.
        let (r0, r1) = (
            vec![vec![d(0, 0)], vec![d(0, 1)]],
            vec![vec![d(1, 0)], vec![d(1, 1)]],
        );
        let mut pl = plan(
            vec![
                (0, 1, r0.clone()),
                (1, 2, r1.clone()),
                (2, 3, r0),
                (3, 4, r1),
            ],
            4,
        );
        pl.setup = il;
        let dm = time_only();
        let t = dm.timeline(&inputs, &pl).unwrap();
        let fwd: Vec<_> = t
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Forward)
            .collect();
        // 2 devices x 2 chunks x 4 micro-batches, one replica.
        assert_eq!(fwd.len(), 16);
        assert!(fwd.iter().all(|e| e.replica == 0 && e.chunk.is_some()));
        all_close(durations(&t, 0, EventKind::Forward), 1.0, 8);
        all_close(durations(&t, 1, EventKind::Backward), 6.0, 8);
        // Two replicas cross every cut at once, sharing the NICs:
        // 30 us + 2 x 400 / 0.5e9, on the wrap-around cut too.
        let send =
            collective::INTER_NODE_LATENCY_S + 800.0 / (1e9 * collective::INTER_NODE_EFFICIENCY);
        let wrap: Vec<f64> = t
            .events
            .iter()
            .filter(|e| e.kind == EventKind::SendForward && e.stage == 1)
            .map(|e| e.end_s - e.start_s)
            .collect();
        all_close(wrap, send, 4);
        // The same plan with one replica per stage runs the same pipeline.
        let mut one = plan(
            vec![
                (0, 1, vec![vec![d(0, 0)]]),
                (1, 2, vec![vec![d(1, 0)]]),
                (2, 3, vec![vec![d(0, 0)]]),
                (3, 4, vec![vec![d(1, 0)]]),
            ],
            4,
        );
        one.setup = il;
        let e2 = dm.evaluate(&inputs, &pl).unwrap();
        let e1 = dm.evaluate(&inputs, &one).unwrap();
        let busy =
            |e: &Estimate| e.iteration_s - e.breakdown.dp_allreduce_s - e.breakdown.optimizer_s;
        assert!(busy(&e2) > busy(&e1), "sends share NICs with two replicas");
        assert!(e2.iteration_s > 0.0 && e1.iteration_s > 0.0);
    }

    #[test]
    fn scatter_gather_sends_a_slice_and_gathers_it() {
        let (m, c) = (model(), cluster());
        let p = Profile {
            entries: vec![
                entry("fast", 1, 1.0, Some(2.0)),
                entry("slow", 1, 1.0, Some(2.0)),
            ],
            precision: None,
        };
        let inputs = Inputs {
            model: &m,
            cluster: &c,
            profile: &p,
        };
        let grid = DeviceGrid::new(&c, 2, 1, 2, &Placement::artifact_default(&c));
        let cand = Candidate {
            grid: &grid,
            setup: &TrainingSetup::default(),
            micro_batch: 2,
            num_micro_batches: 4,
        };
        let sg_setup = TrainingSetup {
            pipeline_send: PipelineSend::ScatterGather,
            ..TrainingSetup::default()
        };
        let sg_cand = Candidate {
            grid: &grid,
            setup: &sg_setup,
            micro_batch: 2,
            num_micro_batches: 4,
        };
        let lat = collective::INTER_NODE_LATENCY_S;
        let bw = 1e9 * collective::INTER_NODE_EFFICIENCY;
        // Full sends: each of the 2 ranks sends 400 bytes through one NIC.
        let full = time_only().stage_tables(&inputs, &cand).unwrap();
        assert!((full.cut[0][1] - 2.0 * (lat + 2.0 * 400.0 / bw)).abs() < 1e-15);
        // Scatter/gather: 200 bytes each, then an all-gather of the 400
        // bytes inside the receiving node: 10 us + 1/2 x 400 / 1e9.
        let t = time_only().stage_tables(&inputs, &sg_cand).unwrap();
        let gather = collective::INTRA_NODE_LATENCY_S + 200.0 / 1e9;
        let want = 2.0 * (lat + 2.0 * 200.0 / bw + gather);
        assert!(
            (t.cut[0][1] - want).abs() < 1e-15,
            "{} vs {want}",
            t.cut[0][1]
        );
    }
}
