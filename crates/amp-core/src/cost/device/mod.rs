//! amp's default cost model ("amp"): every device priced as it is.
//!
//! The physics, stage by stage:
//!
//! - **Compute.** A stage's forward and backward time per micro-batch come
//!   from the profile of the GPU type that runs it, at the stage's
//!   tensor-parallel degree ([`crate::profile::Profile::layer_time`]). A tensor-parallel
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
//!   does not repeat: [`Calibration::per_sample_fixed_fraction`] of the
//!   computation and [`Calibration::per_sample_tp_comm_fixed_fraction`] of
//!   the communication are paid once per micro-batch, the rest per sample
//!   (fitted constants, [`crate::cost::Calibration`]).
//! - **Profiles with measured micro-batches and backward** (Sailor's) are
//!   used as measured, tensor-parallel communication included.
//! - **Layers of no work** (kind `Noop`: views, reshapes, a position
//!   table's addition) take no time whatever their profile says: a
//!   profiler that synchronizes after every layer (the AMP artifact's)
//!   records its own overhead for them, which a run's queued kernels
//!   overlap; the analytic model and AMP's own model price them so.
//! - **Compute-only entries** (amp-catalog's analytic model, `source =
//!   "analytic"`, and single-device slice measurements, `source = "slice:
//!   ..."`, [`crate::profile::ProfileEntry::includes_tp_comm`]) get
//!   the same per-block all-reduces as a derived degree (below), priced on
//!   the group's real links and not overlapped with compute (Megatron-LM's
//!   tensor-parallel all-reduces are synchronous).
//! - **Activation recomputation** (the setup's `recompute`; full, as
//!   Megatron-LM's `--recompute-granularity full`): a transformer block's
//!   backward runs its forward again first, all-reduces included, so its
//!   backward time gains its forward time. Other layers (embedding,
//!   vocabulary projection and loss) are not recomputed. Selective
//!   recomputation reruns the attention core only, its share of a block's
//!   forward from the shape ([`attention_core_share`]); torchtitan's
//!   per-op selective checkpointing reruns every second matrix product, the
//!   elementwise kernels and the all-gathers ([`per_op_selective_share`]).
//!   Memory follows the same setup ([`crate::memory`]).
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
//!   ([`collective::concurrent_p2p_s`]). With the setup's scatter-gather
//!   sends or sequence parallelism (Megatron-LM's scatter/gather
//!   optimisation, SC'21 sec. 4.1) each rank sends only its `1 / tp` slice
//!   of a block's output and the receiving group all-gathers it over its
//!   own links.
//! - **Interleaved schedule** (`interleaved:V` in the plan's
//!   [`TrainingSetup`]): the plan lists the `pp x v` virtual stages in model
//!   order and pipeline rank j runs virtual stages `j, j + pp, ...`, as
//!   Megatron-LM builds them ([`crate::Plan`]); each is simulated exactly
//!   ([`crate::schedule::simulate`]). Sends from the last rank's chunk k to
//!   the first rank's chunk k + 1 cross the wrap-around cut.
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
//!   Megatron-LM's DGX A100 nodes). Stages whose rings leave a node
//!   through one NIC (several stages on a node, data parallelism across
//!   nodes) slow each other while their all-reduces overlap
//!   (`collective::crowded_reductions`, run by the schedule as
//!   [`crate::schedule::CrowdedAllReduce`]). Weights tied across stages
//!   (GPT-2's embedding and vocabulary projection) add an all-reduce of
//!   their gradient between the stages that hold them, one pair per
//!   (replica, tp rank), as DeepSpeed's pipeline engine runs it before the
//!   data-parallel reduction, in the gradients' own format (not widened by
//!   `fp32_allreduce`, which casts only the data-parallel buckets;
//!   `allreduce_tied_weight_gradients`, the AMP
//!   artifact's `GPT2ModelPipe` ties with `TiedLayerSpec`) and Megatron-LM
//!   in its embedding group ([`DeviceOptions::tied_allreduce`], on by
//!   default; until the 2026-12-03 refit it was off, a default chosen by
//!   looking at the AMP error it was reported with).
//!   Not overlapped with backward by default (DeepSpeed's pipeline engine
//!   reduces after the last micro-batch, and overlap lowered the rank
//!   correlation on the AMP data from 0.985 to 0.965);
//!   the setup's `overlap_grad_reduce` models a bucketed overlap. Under
//!   ZeRO-3 the weights are all-gathered twice besides the gradient
//!   reduce-scatter, each half an all-reduce of its bytes; torchtitan's
//!   FSDP2 gathers once per iteration in a pipeline, and without one
//!   gathers and reduces every unit at every micro-batch, overlapped with
//!   the computation (`sharded.rs`).
//! - **Sends block their sender** by default
//!   ([`DeviceOptions::blocking_sends`]): DeepSpeed's send instructions and
//!   Megatron-LM's point-to-point calls wait for completion before the next
//!   pass. (Mean error: AMP 4.9 % blocking vs 4.5 % not; Sailor GH200
//!   8.4 % vs 9.3 %, with 2-byte elements.) Under DeepSpeed
//!   ([`crate::setup::StageExchange::Lockstep`], the given sets' engine)
//!   neighbouring stages also meet before each exchange and send one
//!   direction at a time ([`crate::schedule::simulate`]).
//! - **Element sizes** of activations, activation gradients and
//!   data-parallel gradients: the setup's number formats (`sends`,
//!   `gradients`); a profile measured in another format is refused
//!   ([`TrainingSetup::check_profile`]). Sailor's GH200 runs kept fp32
//!   weights and residual stream (`llm_info.json` records 4 bytes per
//!   output and parameter element, `amp_data::sailor::training_setup`); pricing
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

use crate::cluster::Cluster;
use crate::cluster::Device;
use crate::cost::collective::{self, Network};
use crate::cost::{
    prefix_sums, Breakdown, Calibration, Candidate, CostModel, Estimate, GridTables, Inputs,
    LayoutEstimator, LayoutEstimators, PlanEstimator, StageTables, TailTables,
};
use crate::error::Result;
use crate::memory;
use crate::model::LayerKind;
use crate::placement::DeviceGrid;
use crate::plan::Plan;
use crate::schedule::{simulate, IterationSpec, PipelineTimes, Simulation, Timeline};
use crate::setup::{PipelineSend, StageExchange, TrainingSetup};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

/// Backward time over forward time of a layer's computation when the
/// profile has no backward: the backward pass computes two matrix products
/// (input and weight gradients) for each one of the forward. AMP assumes
/// the same (its "3 x forward" for forward plus backward). Sailor's
/// measured GH200 profiles give 2.3-2.5 at micro-batches of 8 and more.
pub const BACKWARD_FORWARD_RATIO: f64 = 2.0;

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
pub(crate) const PASS_OVERHEAD_S: f64 = 0.0;

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
    /// The fitted constants ([`Calibration::FITTED`] by default).
    pub calibration: Calibration,
    /// Let the search re-split the leading plans under the full estimate
    /// ([`crate::refine`]; on by default). Off, the partitioner's splits
    /// stand, as before the refinement existed (what its tests compare
    /// against).
    pub refine_splits: bool,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            blocking_sends: true,
            tied_allreduce: true,
            pass_overhead_s: PASS_OVERHEAD_S,
            price_memory: true,
            calibration: Calibration::FITTED,
            refine_splits: true,
        }
    }
}

/// The per-device cost model.
#[derive(Debug, Clone, Default)]
pub struct DeviceModel {
    /// Which effects the model prices: blocking sends, tied all-reduces,
    /// per-pass overhead, memory.
    pub options: DeviceOptions,
}

/// (forward, backward) time of one micro-batch through a virtual stage.
type PassTimes = (f64, f64);

/// A plan's passes ([`DeviceModel::pass_times`]), priced once per kind of
/// replica: replicas whose groups cost alike at every pipeline rank (the
/// same entry of [`ComputePrices::layer_costs`]).
struct Passes {
    /// Per replica, its kind: an index into the two below.
    kind_of: Vec<usize>,
    /// Per kind, the (forward, backward) time of one micro-batch through
    /// each virtual stage.
    chunk_costs: Vec<Vec<PassTimes>>,
    /// Per kind, each pipeline rank's totals over its chunks.
    stage_costs: Vec<Vec<StageCost>>,
}

/// Relative rounding allowed between a lower bound
/// ([`DeviceModel::iteration_lower_bound_s`]) and the simulated time it
/// bounds, far above what summing the same times in another order gives.
pub(crate) const BOUND_ROUNDING: f64 = 1e-9;

/// What a plan's simulation and its lower bound are made of
/// ([`DeviceModel::plan_times`]).
struct PlanTimes {
    /// `chunks[j][k]`: layers of chunk k of pipeline rank j.
    chunks: Vec<Vec<Range<usize>>>,
    passes: Passes,
    /// One micro-batch's transfer across each virtual cut, forward.
    sends: Vec<f64>,
    /// The same, backward.
    back: Vec<f64>,
}

impl Passes {
    /// Each (kind, micro-batches) of `plan`'s replicas once, with the first
    /// replica of it, in replica order: (replica, kind, micro-batches).
    fn distinct(&self, plan: &Plan) -> Vec<(usize, usize, usize)> {
        let mut out: Vec<(usize, usize, usize)> = Vec::new();
        for (r, &kind) in self.kind_of.iter().enumerate() {
            let m = plan.micro_batches_of(r);
            if !out.iter().any(|&(_, k, n)| (k, n) == (kind, m)) {
                out.push((r, kind, m));
            }
        }
        out
    }
}

/// Per-stage quantities of one replica pipeline.
struct StageCost {
    forward_s: f64,
    backward_s: f64,
    tp_comm_s: f64,
    /// Host-staged receives inside the passes
    /// ([`DeviceModel::add_receive_staging`]).
    staging_s: f64,
}

/// Bytes of one element all-reduced inside a tensor-parallel group, or
/// sent between stages unless the residual stream is wider
/// ([`pipeline_send_bytes`]) (activation or activation gradient).
pub(super) fn activation_bytes(setup: &TrainingSetup) -> f64 {
    setup.formats.sends.bytes()
}

/// Bytes of one element of a pipeline send: the residual stream between
/// blocks, fp32 under eager autocast
/// ([`crate::setup::NumberFormats::residual_stream`]), else the sends'
/// format. Tensor-parallel all-reduces sum a block's 16-bit branch outputs
/// ([`activation_bytes`]).
pub(super) fn pipeline_send_bytes(setup: &TrainingSetup) -> f64 {
    let f = &setup.formats;
    f.sends.bytes().max(f.residual_stream_bytes())
}

/// Bytes of one gradient element in the data-parallel reduction.
pub(super) fn gradient_bytes(setup: &TrainingSetup) -> f64 {
    setup.formats.gradient_reduction_bytes()
}

/// Whether a tensor-parallel stage sends `1 / tp` of a block's output per
/// rank: scatter/gather sends, or sequence parallelism (whose activations
/// between blocks are already split over the group).
pub(super) fn split_sends(setup: &TrainingSetup) -> bool {
    setup.pipeline_send == PipelineSend::ScatterGather || setup.sequence_parallel
}

/// Whether the receiving group all-gathers what [`split_sends`] split:
/// scatter/gather sends do, sequence parallelism does not (the next block
/// takes its input split over the group and gathers it itself, already
/// priced with the block's collectives; Megatron-LM's SC'21 scatter/gather
/// was also skipped under sequence parallelism).
pub(super) fn receivers_gather(setup: &TrainingSetup) -> bool {
    setup.pipeline_send == PipelineSend::ScatterGather && !setup.sequence_parallel
}

/// How a cut's sends are made, as one index of a memo: whole copies, split
/// and gathered, split without a gather.
pub(super) fn send_mode(setup: &TrainingSetup) -> usize {
    match (split_sends(setup), receivers_gather(setup)) {
        (false, _) => 0,
        (true, true) => 1,
        (true, false) => 2,
    }
}

impl DeviceModel {
    /// A device model with the given options.
    pub fn new(options: DeviceOptions) -> DeviceModel {
        DeviceModel { options }
    }

    /// `cluster`'s links at the calibrated inter-node efficiency.
    pub(crate) fn network<'a>(&self, cluster: &'a Cluster) -> Network<'a> {
        Network::new(cluster, self.options.calibration.inter_node_efficiency)
    }

    /// The iteration of `plan`, simulated event by event.
    pub fn simulate_plan(&self, inputs: &Inputs, plan: &Plan) -> Result<Simulation> {
        Ok(self.run(inputs, plan)?.0)
    }

    /// What `plan`'s computation costs whatever its split and deal, for
    /// [`Self::run_priced`].
    fn compute_prices(&self, inputs: &Inputs, plan: &Plan) -> Result<ComputePrices> {
        self.compute_prices_with(inputs, plan, None, None)
    }

    /// [`Self::compute_prices`], the optimizer step's kinds taken from
    /// `steps` when given (those of a plan on the same devices: they do
    /// not depend on the micro-batch size), each group's costs looked up in
    /// `shared` first (and priced into it when missing).
    fn compute_prices_with<'c>(
        &self,
        inputs: &Inputs<'c>,
        plan: &Plan,
        steps: Option<Arc<StepKinds>>,
        shared: Option<&GroupMemo<'c>>,
    ) -> Result<ComputePrices> {
        let mut caches: Vec<(usize, Caches)> = Vec::new();
        let mut layer_costs: Vec<Vec<LayerCost>> = Vec::new();
        let mut group_costs = Vec::new();
        // (GPU type, tp, link) of a group on one node -> its costs' index.
        let mut on_one_node: HashMap<OneNodeGroup, usize> = HashMap::new();
        let step_kinds = steps.unwrap_or_else(|| {
            Arc::new(
                plan.rank_stages()
                    .iter()
                    .map(|s| Self::step_kinds(inputs, s))
                    .collect(),
            )
        });
        for s in plan.rank_stages() {
            let mut of_stage = Vec::with_capacity(s.replicas.len());
            let mut before: Option<(&[Device], usize)> = None;
            let spanning = spanning_groups(inputs.cluster, &s.replicas);
            for (k, rep) in s.replicas.iter().enumerate() {
                // On the nodes of the one before: the same costs.
                if let Some((_, k)) = before.filter(|(b, _)| on_same_nodes(b, rep)) {
                    of_stage.push(k);
                    continue;
                }
                // Replicas of a stage may differ in tp (caches are per tp).
                let tp = rep.len();
                let one_node = one_node_group(inputs.cluster, rep);
                if let Some(&k) = one_node.and_then(|g| on_one_node.get(&g)) {
                    before = Some((rep, k));
                    of_stage.push(k);
                    continue;
                }
                if !caches.iter().any(|(t, _)| *t == tp) {
                    caches.push((tp, Caches::default()));
                }
                let cache = &mut caches.iter_mut().find(|(t, _)| *t == tp).unwrap().1;
                let among = spanning
                    .as_ref()
                    .and_then(|(rings, index)| Some((rings, index[k]?)));
                let costs = self.group_costs(
                    inputs,
                    &plan.setup,
                    (rep, among),
                    plan.micro_batch,
                    (cache, shared),
                )?;
                let k = match layer_costs.iter().position(|c| *c == costs) {
                    Some(k) => k,
                    None => {
                        layer_costs.push(costs.to_vec());
                        layer_costs.len() - 1
                    }
                };
                if let Some(g) = one_node {
                    on_one_node.insert(g, k);
                }
                before = Some((rep, k));
                of_stage.push(k);
            }
            group_costs.push(of_stage);
        }
        Ok(ComputePrices {
            layer_costs,
            group_costs,
            step_kinds,
        })
    }

    /// The network prices of `plan`'s devices.
    fn net_prices(&self, inputs: &Inputs, plan: &Plan) -> NetPrices {
        self.net_prices_with(inputs, plan, None)
    }

    /// [`Self::net_prices`], each group of devices looked up in `memo`
    /// first (and priced into it when missing).
    fn net_prices_with(&self, inputs: &Inputs, plan: &Plan, memo: Option<&NetMemo>) -> NetPrices {
        let pp = plan.pp();
        let nv = plan.stages.len();
        let ranks = plan.rank_stages();
        // Virtual cut c runs from pipeline rank c mod pp to the next: an
        // interleaved plan's pp x v - 1 cuts join only pp pairs of ranks,
        // and cuts alike up to renaming nodes cost the same: each distinct
        // one is priced once.
        let kinds = NetMemo::kinds_of(memo, inputs.cluster);
        let keys = crate::placement::alike_keys(inputs.cluster, &kinds, ranks.len(), |j| {
            vec![&ranks[j].replicas, &ranks[(j + 1) % pp].replicas]
        });
        let cut_first = crate::placement::firsts(&keys);
        let mode = send_mode(&plan.setup);
        let mut priced: Vec<((usize, bool), Option<TransferCurves>)> = Vec::new();
        let mut curves = |c: usize, forward: bool| {
            let j = cut_first[c % pp];
            if let Some((_, k)) = priced.iter().find(|(key, _)| *key == (j, forward)) {
                return k.clone();
            }
            let (a, b) = (&ranks[j].replicas, &ranks[(j + 1) % pp].replicas);
            let (from, to) = if forward { (a, b) } else { (b, a) };
            let price = || self.transfer_curves(inputs, &plan.setup, from, to);
            let k = match (memo, &keys[j]) {
                (Some(m), Some(key)) => m.cut(key, forward, mode, price),
                _ => price(),
            };
            priced.push(((j, forward), k.clone()));
            k
        };
        let sends = (0..nv.saturating_sub(1)).map(|c| curves(c, true)).collect();
        let back = (0..nv.saturating_sub(1))
            .map(|c| curves(c, false))
            .collect();
        let stages: Vec<&Vec<Vec<Device>>> = ranks.iter().map(|s| &s.replicas).collect();
        NetPrices {
            sends,
            back,
            allreduce: self.allreduce_curves_with(inputs, plan, memo, &kinds),
            tied: TiedCurves::default(),
            crowded: self.crowded_curves(inputs, &stages),
        }
    }

    /// Simulates `plan`: the simulation and the per-replica, per-stage
    /// costs it ran on.
    fn run(&self, inputs: &Inputs, plan: &Plan) -> Result<(Simulation, Passes)> {
        plan.validate(inputs.model, inputs.cluster)?;
        let compute = self.compute_prices(inputs, plan)?;
        self.run_priced(inputs, plan, &compute, &self.net_prices(inputs, plan))
    }

    /// Simulates a valid `plan`, its computation priced by `compute` and its
    /// network by `net` (its own, or those of a plan on the same devices
    /// per stage with the same setup; `compute` also with the same
    /// micro-batch size).
    fn run_priced(
        &self,
        inputs: &Inputs,
        plan: &Plan,
        compute: &ComputePrices,
        net: &NetPrices,
    ) -> Result<(Simulation, Passes)> {
        plan.setup.check_profile(inputs.profile)?;
        let times = self.plan_times(inputs, plan, compute, net);
        self.simulate_times(inputs, plan, compute, net, times)
    }

    /// What `plan`'s simulation and its lower bound read ([`PlanTimes`]).
    fn plan_times(
        &self,
        inputs: &Inputs,
        plan: &Plan,
        compute: &ComputePrices,
        net: &NetPrices,
    ) -> PlanTimes {
        let chunks: Vec<Vec<Range<usize>>> = (0..plan.pp()).map(|j| plan.rank_layers(j)).collect();
        let mut passes = self.pass_times(plan, compute, &chunks);
        self.add_receive_staging(inputs, plan, &chunks, &mut passes);
        let (sends, back) = self.send_times(inputs, plan, net, &chunks);
        PlanTimes {
            chunks,
            passes,
            sends,
            back,
        }
    }

    /// [`Self::run_priced`] from `plan`'s [`Self::plan_times`].
    fn simulate_times(
        &self,
        inputs: &Inputs,
        plan: &Plan,
        compute: &ComputePrices,
        net: &NetPrices,
        times: PlanTimes,
    ) -> Result<(Simulation, Passes)> {
        let setup = &plan.setup;
        let pp = plan.pp();
        let PlanTimes {
            chunks,
            passes,
            sends,
            back,
        } = times;
        // One representative of each kind of replica pipeline.
        let mut reps: Vec<usize> = Vec::new();
        let mut pipelines: Vec<PipelineTimes> = Vec::new();
        // A replica of a (kind, micro-batches) met is the pipeline of the
        // first (the pipelines are made of nothing else).
        for (r, kind, num_micro_batches) in passes.distinct(plan) {
            let cc = &passes.chunk_costs[kind];
            let p = PipelineTimes {
                forward_s: cc.iter().map(|x| x.0).collect(),
                backward_s: cc.iter().map(|x| x.1).collect(),
                send_forward_s: sends.clone(),
                send_backward_s: back.clone(),
                num_micro_batches,
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
            schedule: setup.schedule,
            allreduce_s: self.reduction_times(inputs, plan, compute, net, &passes),
            optimizer_s: (0..pp)
                .map(|j| self.optimizer_time(inputs, plan, j, &compute.step_kinds[j]))
                .collect(),
            overlap_allreduce: sharded::bucketed_overlap(setup, pp),
            allreduce_tail_fraction: tail,
            blocking_sends: self.options.blocking_sends && !setup.sends_overlap_passes(),
            lockstep: setup.stage_exchange() == StageExchange::Lockstep,
            barrier_before_allreduce: setup.grad_reduce_barrier,
            crowded_allreduce: self.crowded_allreduce(inputs, plan, net),
        };
        let mut sim = simulate(&spec)?;
        for e in &mut sim.timeline.events {
            e.replica = reps[e.replica];
        }
        sim.critical_replica = reps[sim.critical_replica];
        Ok((sim, passes))
    }

    /// The (forward, backward) time of one micro-batch's pass through each
    /// virtual stage, and each pipeline rank's totals over its chunks, per
    /// kind of replica ([`Passes`]). `chunks[j][k]`: layers of chunk k of
    /// pipeline rank j (virtual stage k pp + j).
    fn pass_times(
        &self,
        plan: &Plan,
        compute: &ComputePrices,
        chunks: &[Vec<Range<usize>>],
    ) -> Passes {
        let (pp, dp, nv) = (chunks.len(), plan.dp(), plan.stages.len());
        let groups = &compute.group_costs;
        // Replicas whose groups cost alike at every rank pass alike: the
        // first of each kind is priced.
        let mut firsts: Vec<usize> = Vec::new();
        let kind_of: Vec<usize> = (0..dp)
            .map(|r| {
                let alike = |&f: &usize| groups.iter().all(|g| g[f] == g[r]);
                firsts.iter().position(alike).unwrap_or_else(|| {
                    firsts.push(r);
                    firsts.len() - 1
                })
            })
            .collect();
        let o = self.options.pass_overhead_s;
        let mut chunk_costs: Vec<Vec<PassTimes>> = Vec::with_capacity(firsts.len());
        let mut stage_costs: Vec<Vec<StageCost>> = Vec::with_capacity(firsts.len());
        for &r in &firsts {
            let mut passes = vec![(0.0, 0.0); nv];
            let mut totals = Vec::with_capacity(pp);
            for (j, of_rank) in chunks.iter().enumerate() {
                let costs = &compute.layer_costs[groups[j][r]];
                let mut total = StageCost {
                    forward_s: 0.0,
                    backward_s: 0.0,
                    tp_comm_s: 0.0,
                    staging_s: 0.0,
                };
                for (k, range) in of_rank.iter().enumerate() {
                    let c = &costs[range.clone()];
                    let f = o + c.iter().map(|x| x.forward_s).sum::<f64>();
                    let b = o + c.iter().map(|x| x.backward_s).sum::<f64>();
                    passes[k * pp + j] = (f, b);
                    total.forward_s += f;
                    total.backward_s += b;
                    total.tp_comm_s += c.iter().map(|x| x.tp_comm_s).sum::<f64>();
                }
                totals.push(total);
            }
            chunk_costs.push(passes);
            stage_costs.push(totals);
        }
        Passes {
            kind_of,
            chunk_costs,
            stage_costs,
        }
    }

    /// The forward and backward send time across each virtual cut of `plan`
    /// (`chunks` as in [`Self::pass_times`]).
    fn send_times(
        &self,
        inputs: &Inputs,
        plan: &Plan,
        net: &NetPrices,
        chunks: &[Vec<Range<usize>>],
    ) -> (Vec<f64>, Vec<f64>) {
        let (pp, nv) = (chunks.len(), plan.stages.len());
        // Virtual cut c: from stage c mod pp (its chunk c / pp) to stage
        // (c + 1) mod pp, after the chunk's last layer.
        let transfer = |c: usize, forward: bool| {
            let last = chunks[c % pp][c / pp].end - 1;
            let curves = if forward { &net.sends[c] } else { &net.back[c] };
            curves.as_ref().map_or(0.0, |k| {
                self.transfer_at(inputs, &plan.setup, k, (last, forward), plan.micro_batch)
            })
        };
        let sends = (0..nv - 1).map(|c| transfer(c, true)).collect();
        let back = (0..nv - 1).map(|c| transfer(c, false)).collect();
        (sends, back)
    }

    /// A lower bound on the simulated iteration time of a valid `plan`
    /// under the one-chunk schedules (`None` for interleaved ones), without
    /// simulating: every stage runs its passes one at a time, and a stage's
    /// first pass waits for a micro-batch's forwards and sends through the
    /// stages before it, so the last backward of stage j on replica r (the
    /// last pass of any schedule) ends no earlier than those plus all of
    /// j's `m_r` forwards and backwards, with blocking sends all its
    /// sends but that backward's own, and in lockstep what it receives
    /// too. Stage 0's last backward ends no
    /// earlier than that plus the sends and backwards back through stages
    /// j-1..0. Each stage then adds its optimizer step, and its all-reduce
    /// when not overlapped. Links shared by sends only add to this.
    fn iteration_lower_bound_s(
        &self,
        inputs: &Inputs,
        plan: &Plan,
        compute: &ComputePrices,
        net: &NetPrices,
    ) -> Option<f64> {
        if plan.setup.virtual_stages() != 1 {
            return None;
        }
        let times = self.plan_times(inputs, plan, compute, net);
        self.lower_bound_of(inputs, plan, compute, net, &times)
    }

    /// [`Self::iteration_lower_bound_s`] from `plan`'s [`Self::plan_times`].
    fn lower_bound_of(
        &self,
        inputs: &Inputs,
        plan: &Plan,
        compute: &ComputePrices,
        net: &NetPrices,
        times: &PlanTimes,
    ) -> Option<f64> {
        if plan.setup.virtual_stages() != 1 {
            return None;
        }
        let pp = plan.pp();
        let (passes, sends, back) = (&times.passes, &times.sends, &times.back);
        // In lockstep a stage also holds every transfer it receives: before
        // its last backward, all b gradients from the next stage and the
        // activations after the first from the previous one.
        let lockstep = plan.setup.stage_exchange() == StageExchange::Lockstep;
        let blocking = if self.options.blocking_sends || lockstep {
            1.0
        } else {
            0.0
        };
        // last[j]: the bound on stage j's last backward over all replicas.
        let mut last = vec![0.0f64; pp];
        // Each (kind, micro-batches) of replica once: the others repeat it.
        for (_, kind, m) in passes.distinct(plan) {
            let (cc, m) = (&passes.chunk_costs[kind], m as f64);
            // Forwards and sends into stage j; backwards and sends from it
            // back to stage 0.
            let (mut before_f, mut before_b) = (0.0, 0.0);
            for (j, &(f, b)) in cc.iter().enumerate() {
                let send_f = sends.get(j).copied().unwrap_or(0.0);
                let send_b = if j > 0 { back[j - 1] } else { 0.0 };
                let received = if lockstep {
                    m * back.get(j).copied().unwrap_or(0.0)
                        + if j > 0 { (m - 1.0) * sends[j - 1] } else { 0.0 }
                } else {
                    0.0
                };
                let busy = before_f
                    + m * (f + b)
                    + blocking * (m * send_f + (m - 1.0) * send_b)
                    + received;
                last[j] = last[j].max(busy);
                last[0] = last[0].max(busy + before_b);
                before_f += f + send_f;
                before_b += b + back.get(j).copied().unwrap_or(0.0);
            }
        }
        let allreduce = (!sharded::bucketed_overlap(&plan.setup, pp))
            .then(|| self.reduction_times(inputs, plan, compute, net, passes));
        (0..pp)
            .map(|j| {
                last[j]
                    + allreduce.as_ref().map_or(0.0, |a| a[j])
                    + self.optimizer_time(inputs, plan, j, &compute.step_kinds[j])
            })
            .reduce(f64::max)
    }

    /// The simulated timeline of one iteration of `plan`, for drawing.
    pub fn timeline(&self, inputs: &Inputs, plan: &Plan) -> Result<Timeline> {
        Ok(self.run(inputs, plan)?.0.timeline)
    }
}

/// (GPU type, size, intra-node link bits) of a tensor-parallel group on one
/// node.
type OneNodeGroup<'c> = (&'c str, usize, u64);

/// What prices `group` when it lies on one node: a group on one node costs
/// what any group of its size on a node of the same GPU type and
/// intra-node link does (its group key, see `group_key`, is made of those
/// alone). `None` for a group across nodes (or none).
fn one_node_group<'c>(cluster: &'c Cluster, group: &[Device]) -> Option<OneNodeGroup<'c>> {
    let n = group.first()?.node;
    if !group.iter().all(|d| d.node == n) {
        return None;
    }
    let node = &cluster.nodes[n];
    Some((
        node.gpu_type.as_str(),
        group.len(),
        node.intra_bytes_per_s.to_bits(),
    ))
}

/// Whether groups `a` and `b` lie on the same nodes, position by
/// position: then they cost the same to compute on (their GPU types and
/// links, all a group's compute costs depend on, are their nodes';
/// `layer_costs::group_key` is made of those alone).
fn on_same_nodes(a: &[Device], b: &[Device]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.node == y.node)
}

/// [`CostModel::grid_tables`] of the device model: the network of the last
/// grid and setup met, kept for the next candidate on them.
struct DeviceGridTables<'a> {
    model: &'a DeviceModel,
    inputs: &'a Inputs<'a>,
    /// The grid (its devices, stage by stage) and setup `GridNet` holds
    /// for, and the network priced, if it was needed.
    last: Option<(GridDevices, TrainingSetup, Option<GridNet>)>,
    /// What the search's grids share: the cluster's kinds of node, found
    /// once ([`NetMemo::kinds_of`]). The grids' prices are their own.
    memo: Option<Arc<NetMemo>>,
    /// Groups' layer costs shared by the search's grids and layouts.
    groups: Option<Arc<GroupMemo<'a>>>,
}

/// A grid's devices: per stage, per replica.
type GridDevices = Vec<Vec<Vec<Device>>>;

/// A cut's forward and backward transfers (`None`: nothing crosses).
type CutCurves = (Option<TransferCurves>, Option<TransferCurves>);

impl<'a> GridTables<'a> for DeviceGridTables<'a> {
    fn stage_tables(&mut self, c: &Candidate) -> Result<StageTables> {
        let same = self.last.as_ref().is_some_and(|(stages, setup, _)| {
            setup == c.setup
                && stages.len() == c.grid.pp
                && (0..c.grid.pp).all(|j| *c.grid.stage(j) == stages[j])
        });
        if !same {
            let stages = (0..c.grid.pp).map(|j| c.grid.stage(j).clone()).collect();
            self.last = Some((stages, *c.setup, None));
        }
        let net = &mut self.last.as_mut().expect("set above").2;
        let kinds = NetMemo::kinds_of(self.memo.as_deref(), self.inputs.cluster);
        self.model
            .stage_tables_with(self.inputs, c, net, (&kinds, self.groups.as_deref()))
    }

    fn layout_estimator(&mut self, plan: &Plan) -> Result<LayoutEstimator<'a>> {
        let mut estimator = self.model.device_layout_estimator(self.inputs, plan)?;
        estimator.groups = self.groups.clone();
        // A one-chunk plan on the last grid and setup: the tables' network
        // is the plan's.
        if let Some((stages, setup, Some(net))) = &self.last {
            if plan.stages.len() == stages.len()
                && plan.setup == *setup
                && plan.setup.virtual_stages() == 1
                && plan
                    .stages
                    .iter()
                    .zip(stages)
                    .all(|(s, r)| s.replicas == *r)
            {
                let _ = estimator.net.set(net.net_prices());
            }
        }
        Ok(Box::new(estimator))
    }
}

/// What the partitioner's tables of one grid and setup need from the
/// network, whatever the micro-batch ([`DeviceModel::grid_net`]).
struct GridNet {
    /// Per cut, the first cut alike to it (itself when it is the first).
    cut_first: Vec<usize>,
    /// Per cut first of its kind, its forward and backward transfers.
    cuts: Vec<Option<CutCurves>>,
    /// Per stage, its gradient all-reduce as a function of message size.
    allreduce: Vec<collective::CostCurve>,
    /// Per stage, its gradient all-reduce in seconds per parameter.
    s_per_param: Vec<f64>,
    /// Tied weights' all-reduces, shared by the plans built on the grid.
    tied: TiedCurves,
    /// Ranks' all-reduces through shared NICs ([`NetPrices::crowded`]).
    crowded: Option<Arc<CrowdedCurves>>,
}

impl GridNet {
    /// The network prices of a one-chunk plan on this grid and setup.
    fn net_prices(&self) -> NetPrices {
        let cut = |j: usize| {
            self.cuts[self.cut_first[j]]
                .as_ref()
                .expect("the first cut of each kind is priced")
        };
        let n = self.cut_first.len();
        NetPrices {
            sends: (0..n).map(|j| cut(j).0.clone()).collect(),
            back: (0..n).map(|j| cut(j).1.clone()).collect(),
            allreduce: self.allreduce.clone(),
            tied: self.tied.clone(),
            crowded: self.crowded.clone(),
        }
    }
}

impl DeviceModel {
    /// [`CostModel::stage_tables`] of `c`, its grid's network priced into
    /// `net` on first need and read from it after (candidates on one grid
    /// and setup share it).
    fn stage_tables_with<'c>(
        &self,
        inputs: &Inputs<'c>,
        c: &Candidate,
        net: &mut Option<GridNet>,
        (kinds, shared): (&crate::placement::NodeKinds, Option<&GroupMemo<'c>>),
    ) -> Result<StageTables> {
        let grid = c.grid;
        let setup = c.setup;
        setup.check_profile(inputs.profile)?;
        let mbs = c.micro_batch;
        let n = inputs.model.num_layers();
        let mut cache = Caches::default();
        let mut compute_prefix = Vec::with_capacity(grid.pp);
        // Groups on one node alike cost the same ([`one_node_group`]): each
        // once per stage (the max over a stage's replicas does not change).
        let mut seen: Vec<OneNodeGroup> = Vec::new();
        for j in 0..grid.pp {
            let mut per_layer = vec![0.0f64; n];
            seen.clear();
            let mut before: Option<&[Device]> = None;
            let spanning = spanning_groups(inputs.cluster, grid.stage(j));
            for (k, rep) in grid.stage(j).iter().enumerate() {
                // On the nodes of the one before: the same costs.
                if before.is_some_and(|b| on_same_nodes(b, rep)) {
                    continue;
                }
                before = Some(rep);
                if let Some(g) = one_node_group(inputs.cluster, rep) {
                    if seen.contains(&g) {
                        continue;
                    }
                    seen.push(g);
                }
                let among = spanning
                    .as_ref()
                    .and_then(|(rings, index)| Some((rings, index[k]?)));
                let costs =
                    self.group_costs(inputs, setup, (rep, among), mbs, (&mut cache, shared))?;
                for (p, c) in per_layer.iter_mut().zip(costs) {
                    *p = p.max(c.forward_s + c.backward_s);
                }
            }
            compute_prefix.push(prefix_sums(per_layer));
        }
        let memory = self.options.price_memory.then(|| {
            memory::stage_memory_tables(
                inputs.model,
                inputs.cluster,
                grid,
                mbs,
                c.num_micro_batches,
                setup,
                self.options.calibration.framework_reserve_bytes,
            )
        });
        if let Some(m) = &memory {
            if !m.any_split_fits(n, 1) {
                // No split fits: the partitioner finds none whatever the
                // times, so the network (the costly part on large
                // clusters) is not priced.
                return Ok(StageTables {
                    compute_prefix,
                    cut: vec![vec![0.0; n]; grid.pp.saturating_sub(1)],
                    memory,
                    tail: None,
                    min_layers: 1,
                });
            }
        }
        let net = net.get_or_insert_with(|| self.grid_net(inputs, grid, setup, kinds));
        let at = |curves: &Option<TransferCurves>, k: usize, forward: bool| {
            curves.as_ref().map_or(0.0, |c| {
                self.transfer_at(inputs, setup, c, (k, forward), mbs)
            })
        };
        let mut cut: Vec<Vec<f64>> = net
            .cuts
            .iter()
            .map(|curves| {
                let Some((forward, backward)) = curves else {
                    return Vec::new();
                };
                // Layers of one kind and output size cost the same to send.
                let mut seen: Vec<((LayerKind, u64, u64), f64)> = Vec::new();
                (0..n)
                    .map(|k| {
                        let l = &inputs.model.layers[k];
                        let key = (
                            l.kind,
                            l.output_elems_per_sample,
                            l.forward_send_extra_bytes,
                        );
                        if let Some((_, t)) = seen.iter().find(|(x, _)| *x == key) {
                            return *t;
                        }
                        let t = at(forward, k, true) + at(backward, k, false);
                        seen.push((key, t));
                        t
                    })
                    .collect()
            })
            .collect();
        for j in 0..cut.len() {
            if net.cut_first[j] < j {
                cut[j] = cut[net.cut_first[j]].clone();
            }
        }
        let s_per_param = net.s_per_param.clone();
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

    /// The network of `grid` under `setup` as the partitioner's tables
    /// read it: each distinct cut's transfer curves and each stage's
    /// all-reduce per parameter (cuts and stages alike up to renaming
    /// identical nodes cost the same: each distinct one is priced once).
    fn grid_net(
        &self,
        inputs: &Inputs,
        grid: &DeviceGrid,
        setup: &TrainingSetup,
        kinds: &crate::placement::NodeKinds,
    ) -> GridNet {
        let cut_first = crate::placement::first_alike_with(
            inputs.cluster,
            kinds,
            grid.pp.saturating_sub(1),
            |j| vec![grid.stage(j), grid.stage(j + 1)],
        );
        let cuts = (0..grid.pp.saturating_sub(1))
            .map(|j| {
                (cut_first[j] == j).then(|| {
                    let (a, b) = (grid.stage(j), grid.stage(j + 1));
                    (
                        self.transfer_curves(inputs, setup, a, b),
                        self.transfer_curves(inputs, setup, b, a),
                    )
                })
            })
            .collect();
        // The all-reduce tail, linear in the stage's parameters (its
        // latency term and the optimizer step are left out: small, and the
        // simulation prices them for the final estimate).
        let probe = 1e9;
        let stage_first = crate::placement::first_alike_with(inputs.cluster, kinds, grid.pp, |j| {
            vec![grid.stage(j)]
        });
        let mut allreduce: Vec<collective::CostCurve> = Vec::with_capacity(grid.pp);
        for j in 0..grid.pp {
            let curve = if stage_first[j] < j {
                allreduce[stage_first[j]].clone()
            } else {
                let rings = step::data_parallel_rings(grid.stage(j));
                collective::concurrent_allreduce_curve(&self.network(inputs.cluster), &rings)
            };
            allreduce.push(curve);
        }
        // The once-per-iteration traffic: a plan that reduces at every
        // micro-batch has one stage, whose split the tail does not choose.
        // Each stage's alone, where stages' all-reduces cross shared NICs
        // too: the simulation runs them as they overlap, which a tail of
        // one stage cannot say (priced all running, the splits chosen on
        // the test instances of `refine.rs` got worse).
        let per_rank = probe / grid.tp as f64;
        let s_per_param = allreduce
            .iter()
            .map(|curve| {
                let at = |params| sharded::once_per_iteration_s(curve, setup, params);
                (at(per_rank) - at(0.0)) / probe
            })
            .collect();
        let stages: Vec<&Vec<Vec<Device>>> = (0..grid.pp).map(|j| grid.stage(j)).collect();
        GridNet {
            cut_first,
            cuts,
            allreduce,
            s_per_param,
            tied: TiedCurves::default(),
            crowded: self.crowded_curves(inputs, &stages),
        }
    }
}

impl CostModel for DeviceModel {
    fn name(&self) -> &'static str {
        "amp"
    }

    fn calibration(&self) -> Option<Calibration> {
        Some(self.options.calibration)
    }

    fn stage_tables(&self, inputs: &Inputs, c: &Candidate) -> Result<StageTables> {
        let kinds = crate::placement::NodeKinds::of(inputs.cluster);
        self.stage_tables_with(inputs, c, &mut None, (&kinds, None))
    }

    fn grid_tables<'a>(&'a self, inputs: &'a Inputs<'a>) -> Box<dyn GridTables<'a> + 'a> {
        Box::new(DeviceGridTables {
            model: self,
            inputs,
            last: None,
            memo: None,
            groups: None,
        })
    }

    fn split_is_final(&self) -> bool {
        !self.options.refine_splits
    }

    fn evaluate_if_fits(&self, inputs: &Inputs, plan: &Plan) -> Result<Option<Estimate>> {
        let Some(memory) = self.fitting_memory(inputs, plan)? else {
            return Ok(None);
        };
        let compute = self.compute_prices(inputs, plan)?;
        let net = self.net_prices(inputs, plan);
        self.estimate_with_memory(inputs, plan, &compute, &net, memory)
            .map(Some)
    }

    fn evaluate(&self, inputs: &Inputs, plan: &Plan) -> Result<Estimate> {
        plan.validate(inputs.model, inputs.cluster)?;
        let compute = self.compute_prices(inputs, plan)?;
        let net = self.net_prices(inputs, plan);
        self.estimate_with_memory(inputs, plan, &compute, &net, self.memory(inputs, plan))
    }

    fn layout_estimator<'a>(
        &'a self,
        inputs: &'a Inputs<'a>,
        plan: &Plan,
    ) -> Result<LayoutEstimator<'a>> {
        Ok(Box::new(self.device_layout_estimator(inputs, plan)?))
    }

    fn layout_estimators<'a>(
        &'a self,
        inputs: &'a Inputs<'a>,
    ) -> Box<dyn LayoutEstimators<'a> + 'a> {
        Box::new(SharedLayoutEstimators {
            model: self,
            inputs,
            memo: Arc::new(NetMemo::default()),
            groups: Arc::new(GroupMemo::default()),
        })
    }
}

/// [`CostModel::layout_estimators`] of the device model: layout
/// estimators sharing one [`NetMemo`] and one [`GroupMemo`].
struct SharedLayoutEstimators<'a> {
    model: &'a DeviceModel,
    inputs: &'a Inputs<'a>,
    memo: Arc<NetMemo>,
    groups: Arc<GroupMemo<'a>>,
}

impl<'a> LayoutEstimators<'a> for SharedLayoutEstimators<'a> {
    fn layout_estimator(&self, plan: &Plan) -> Result<LayoutEstimator<'a>> {
        let mut e = self.model.device_layout_estimator(self.inputs, plan)?;
        e.memo = Some(self.memo.clone());
        e.groups = Some(self.groups.clone());
        Ok(Box::new(e))
    }

    fn grid_tables(&self) -> Box<dyn GridTables<'a> + 'a> {
        Box::new(DeviceGridTables {
            model: self.model,
            inputs: self.inputs,
            last: None,
            memo: Some(self.memo.clone()),
            groups: Some(self.groups.clone()),
        })
    }
}

impl DeviceModel {
    /// [`CostModel::layout_estimator`], its network not priced yet.
    fn device_layout_estimator<'a>(
        &'a self,
        inputs: &'a Inputs<'a>,
        plan: &Plan,
    ) -> Result<DeviceLayoutEstimator<'a>> {
        plan.validate(inputs.model, inputs.cluster)?;
        Ok(DeviceLayoutEstimator {
            model: self,
            inputs,
            stages: plan.stages.iter().map(|s| s.replicas.clone()).collect(),
            capacities: memory::replica_capacities(inputs.cluster, plan),
            setup: plan.setup,
            net: OnceLock::new(),
            compute: Mutex::new(Vec::new()),
            split_check: OnceLock::new(),
            memo: None,
            groups: None,
        })
    }
}

/// [`CostModel::layout_estimator`] of the device model: the network of the
/// layout priced once, on first use (a layout none of whose plans fits
/// never prices it), and the computation once per micro-batch size.
struct DeviceLayoutEstimator<'a> {
    model: &'a DeviceModel,
    inputs: &'a Inputs<'a>,
    /// Devices of each stage's replicas, which the prices hold for.
    stages: Vec<Vec<Vec<Device>>>,
    /// What each replica's GPUs hold ([`memory::replica_capacities`]).
    capacities: Vec<Vec<f64>>,
    setup: TrainingSetup,
    net: OnceLock<NetPrices>,
    /// Computation prices per micro-batch size met.
    compute: Mutex<Vec<(usize, Arc<ComputePrices>)>>,
    /// What [`PlanEstimator::some_split_may_fit`] reads of the layout,
    /// found on first use.
    split_check: OnceLock<Option<memory::SplitMemoryCheck>>,
    /// Network prices shared with the other layouts of a search.
    memo: Option<Arc<NetMemo>>,
    /// Groups' layer costs shared with the other layouts of a search.
    groups: Option<Arc<GroupMemo<'a>>>,
}

/// Network prices shared by the layouts of one search on one cluster
/// ([`DeviceModel::layout_estimators`]): groups of devices alike up to
/// renaming nodes ([`crate::placement::alike_keys`]) cost the same in any
/// layout, so each is priced once (the per-type search's 530 layouts of
/// OPT-350M on 512 GPUs hold about 4,100 distinct cuts and stages, 1,800
/// up to renaming). A race prices a group twice, alike.
#[derive(Default)]
struct NetMemo {
    kinds: OnceLock<crate::placement::NodeKinds>,
    /// Per cut (its two stages in pipeline order), its transfers by
    /// direction and send mode: whole, split and gathered, split alone
    /// ([`NetMemo::slot`], [`send_mode`]).
    cuts: Mutex<HashMap<GroupKey, [Option<Option<TransferCurves>>; 6]>>,
    /// Per stage, its gradient all-reduce.
    allreduce: Mutex<HashMap<GroupKey, collective::CostCurve>>,
}

use crate::placement::GroupKey;

impl NetMemo {
    /// The kinds of `cluster`'s nodes, from `memo` when there is one.
    fn kinds_of<'m>(
        memo: Option<&'m NetMemo>,
        cluster: &Cluster,
    ) -> std::borrow::Cow<'m, crate::placement::NodeKinds> {
        match memo {
            Some(m) => std::borrow::Cow::Borrowed(
                m.kinds
                    .get_or_init(|| crate::placement::NodeKinds::with_links(cluster)),
            ),
            None => std::borrow::Cow::Owned(crate::placement::NodeKinds::of(cluster)),
        }
    }

    /// A cut's transfer by direction and send mode ([`send_mode`]).
    fn slot(forward: bool, mode: usize) -> usize {
        usize::from(forward) * 3 + mode
    }

    fn cut(
        &self,
        key: &GroupKey,
        forward: bool,
        mode: usize,
        price: impl FnOnce() -> Option<TransferCurves>,
    ) -> Option<TransferCurves> {
        let lock = || self.cuts.lock().unwrap_or_else(|e| e.into_inner());
        let at = Self::slot(forward, mode);
        if let Some(Some(c)) = lock().get(key).map(|s| &s[at]) {
            return c.clone();
        }
        // Priced outside the lock.
        let c = price();
        lock().entry(key.clone()).or_default()[at]
            .get_or_insert(c)
            .clone()
    }

    fn allreduce(
        &self,
        key: &GroupKey,
        price: impl FnOnce() -> collective::CostCurve,
    ) -> collective::CostCurve {
        let lock = || self.allreduce.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = lock().get(key) {
            return c.clone();
        }
        let c = price();
        lock().entry(key.clone()).or_insert(c).clone()
    }
}

impl DeviceLayoutEstimator<'_> {
    /// Whether the prices hold for `plan`: same devices per stage and setup.
    fn holds_for(&self, plan: &Plan) -> bool {
        plan.stages.len() == self.stages.len()
            && plan
                .stages
                .iter()
                .zip(&self.stages)
                .all(|(s, r)| s.replicas == *r)
            && plan.setup == self.setup
    }

    /// The prices of a valid `plan` of this layout.
    fn prices(&self, plan: &Plan) -> Result<(Arc<ComputePrices>, &NetPrices)> {
        let (m, inputs) = (self.model, self.inputs);
        let net = self
            .net
            .get_or_init(|| m.net_prices_with(inputs, plan, self.memo.as_deref()));
        let memo = |v: &Vec<(usize, Arc<ComputePrices>)>| {
            v.iter()
                .find(|(b, _)| *b == plan.micro_batch)
                .map(|(_, c)| c.clone())
        };
        let (known, steps) = {
            let v = self.compute.lock().unwrap_or_else(|e| e.into_inner());
            // Any size's optimizer-step kinds are this one's.
            (memo(&v), v.first().map(|(_, c)| c.step_kinds.clone()))
        };
        let compute = match known {
            Some(c) => c,
            None => {
                // Priced outside the lock; a race prices it twice, alike.
                let c =
                    Arc::new(m.compute_prices_with(inputs, plan, steps, self.groups.as_deref())?);
                let mut v = self.compute.lock().unwrap_or_else(|e| e.into_inner());
                match memo(&v) {
                    Some(c) => c,
                    None => {
                        v.push((plan.micro_batch, c.clone()));
                        c
                    }
                }
            }
        };
        Ok((compute, net))
    }

    /// [`DeviceModel::check`] of a plan of this layout: its devices are
    /// the layout's, validated when the estimator was made.
    fn check(&self, plan: &Plan) -> Result<()> {
        plan.validate_on_validated_devices(self.inputs.model)?;
        plan.setup.check_profile(self.inputs.profile)
    }

    /// Whether every device holds a checked `plan` of this layout
    /// ([`DeviceModel::memory_if_fits`] without the per-device list); true
    /// without a memory model.
    fn holds(&self, plan: &Plan) -> bool {
        let m = self.model;
        !m.options.price_memory
            || memory::plan_fits_within(
                self.inputs.model,
                plan,
                m.options.calibration.framework_reserve_bytes,
                &self.capacities,
            )
    }

    /// [`DeviceModel::fitting_memory`] of `plan`, of this layout.
    fn fitting_memory(&self, plan: &Plan) -> Result<Option<Vec<crate::cost::DeviceMemory>>> {
        self.check(plan)?;
        Ok(self.model.memory_if_fits(self.inputs, plan))
    }
}

impl PlanEstimator for DeviceLayoutEstimator<'_> {
    fn some_split_may_fit(&self, plan: &Plan) -> bool {
        let m = self.model;
        if !m.options.price_memory {
            return true;
        }
        // A plan of this layout (the search's own): checked in tests only,
        // comparing every device is a cost of its own on large layouts.
        debug_assert!(self.holds_for(plan));
        let reserve = m.options.calibration.framework_reserve_bytes;
        let check = self.split_check.get_or_init(|| {
            memory::SplitMemoryCheck::new(self.inputs.model, plan, reserve, &self.capacities)
        });
        check.as_ref().is_none_or(|c| c.some_split_may_fit(plan))
        // None fits: still `true` for a plan the model refuses, which
        // keeps its error (checked only then: most candidates are not
        // refused).
        || self.check(plan).is_err()
    }

    fn estimate(&self, plan: &Plan) -> Result<Estimate> {
        if !self.holds_for(plan) {
            return self.model.evaluate(self.inputs, plan);
        }
        plan.validate_on_validated_devices(self.inputs.model)?;
        let (compute, net) = self.prices(plan)?;
        let memory = self.model.memory(self.inputs, plan);
        self.model
            .estimate_with_memory(self.inputs, plan, &compute, net, memory)
    }

    fn estimate_if_fits(&self, plan: &Plan) -> Result<Option<Estimate>> {
        if !self.holds_for(plan) {
            return self.model.evaluate_if_fits(self.inputs, plan);
        }
        let Some(memory) = self.fitting_memory(plan)? else {
            return Ok(None);
        };
        let (compute, net) = self.prices(plan)?;
        self.model
            .estimate_with_memory(self.inputs, plan, &compute, net, memory)
            .map(Some)
    }

    fn time_if_fits(&self, plan: &Plan) -> Result<Option<Estimate>> {
        // Nothing is slower than no limit.
        self.time_if_fits_under(plan, f64::INFINITY)
    }

    fn time_if_fits_under(&self, plan: &Plan, limit_s: f64) -> Result<Option<Estimate>> {
        if !self.holds_for(plan) {
            return self.model.evaluate_if_fits(self.inputs, plan);
        }
        self.check(plan)?;
        if !self.holds(plan) {
            return Ok(None);
        }
        let (compute, net) = self.prices(plan)?;
        self.model
            .time_under(self.inputs, plan, &compute, net, limit_s)
    }

    fn with_memory(&self, plan: &Plan, mut estimate: Estimate) -> Estimate {
        // A plan of another layout came with its memory.
        if estimate.memory.is_empty() {
            estimate.memory = self.model.memory(self.inputs, plan);
        }
        estimate
    }

    fn lower_bound_if_fits(&self, plan: &Plan) -> Result<Option<f64>> {
        if !self.holds_for(plan) {
            return Ok(self
                .model
                .evaluate_if_fits(self.inputs, plan)?
                .map(|e| e.iteration_s));
        }
        self.check(plan)?;
        if !self.holds(plan) {
            return Ok(None);
        }
        let (compute, net) = self.prices(plan)?;
        match self
            .model
            .iteration_lower_bound_s(self.inputs, plan, &compute, net)
        {
            Some(bound) => Ok(Some(bound)),
            // No bound for this schedule: the time itself.
            None => Ok(Some(
                self.model
                    .estimate_with_memory(self.inputs, plan, &compute, net, Vec::new())?
                    .iteration_s,
            )),
        }
    }
}

impl DeviceModel {
    /// Checks `plan` valid and priceable on `inputs`.
    fn check(&self, inputs: &Inputs, plan: &Plan) -> Result<()> {
        plan.validate(inputs.model, inputs.cluster)?;
        plan.setup.check_profile(inputs.profile)
    }

    /// The per-device memory of `plan` (checked valid and priceable), `None`
    /// when some device does not hold it.
    fn fitting_memory(
        &self,
        inputs: &Inputs,
        plan: &Plan,
    ) -> Result<Option<Vec<crate::cost::DeviceMemory>>> {
        self.check(inputs, plan)?;
        Ok(self.memory_if_fits(inputs, plan))
    }

    /// The per-device memory of a checked `plan`, `None` when some device
    /// does not hold it.
    fn memory_if_fits(
        &self,
        inputs: &Inputs,
        plan: &Plan,
    ) -> Option<Vec<crate::cost::DeviceMemory>> {
        let memory = self.memory(inputs, plan);
        (!memory.iter().any(|m| m.overflow_bytes().is_some())).then_some(memory)
    }

    /// Per-device peak memory of a valid `plan`; empty without a memory
    /// model.
    fn memory(&self, inputs: &Inputs, plan: &Plan) -> Vec<crate::cost::DeviceMemory> {
        if self.options.price_memory {
            memory::plan_memory(
                inputs.model,
                inputs.cluster,
                plan,
                self.options.calibration.framework_reserve_bytes,
            )
        } else {
            Vec::new()
        }
    }

    /// The estimate of a valid `plan` priced by `compute` and `net` (see
    /// [`Self::run_priced`]), its memory already computed.
    fn estimate_with_memory(
        &self,
        inputs: &Inputs,
        plan: &Plan,
        compute: &ComputePrices,
        net: &NetPrices,
        memory: Vec<crate::cost::DeviceMemory>,
    ) -> Result<Estimate> {
        let (sim, passes) = self.run_priced(inputs, plan, compute, net)?;
        Ok(Self::estimate_of(&sim, &passes, memory))
    }

    /// [`Self::estimate_with_memory`] with no memory, or `None` when a
    /// lower bound ([`Self::iteration_lower_bound_s`]) proves `plan` slower
    /// than `limit_s` (it is then not simulated).
    fn time_under(
        &self,
        inputs: &Inputs,
        plan: &Plan,
        compute: &ComputePrices,
        net: &NetPrices,
        limit_s: f64,
    ) -> Result<Option<Estimate>> {
        plan.setup.check_profile(inputs.profile)?;
        let times = self.plan_times(inputs, plan, compute, net);
        // The bound may exceed the time it bounds by rounding (a different
        // order of the same sums): proven slower only beyond that.
        if limit_s.is_finite()
            && self
                .lower_bound_of(inputs, plan, compute, net, &times)
                .is_some_and(|bound| bound > limit_s * (1.0 + BOUND_ROUNDING))
        {
            return Ok(None);
        }
        let (sim, passes) = self.simulate_times(inputs, plan, compute, net, times)?;
        Ok(Some(Self::estimate_of(&sim, &passes, Vec::new())))
    }

    /// The estimate of a simulation, its passes and per-device `memory`.
    fn estimate_of(
        sim: &Simulation,
        passes: &Passes,
        memory: Vec<crate::cost::DeviceMemory>,
    ) -> Estimate {
        let c = &passes.stage_costs[passes.kind_of[sim.critical_replica]][sim.critical_stage];
        let busy = c.forward_s + c.backward_s;
        let share = |part: f64| {
            if busy > 0.0 {
                (part / busy).clamp(0.0, 1.0)
            } else {
                0.0
            }
        };
        let (comm_share, staging_share) = (share(c.tp_comm_s), share(c.staging_s));
        Estimate {
            iteration_s: sim.timeline.iteration_s,
            breakdown: Breakdown {
                compute_s: sim.compute_s * (1.0 - comm_share - staging_share).max(0.0),
                bubble_s: sim.bubble_s,
                // A host-staged receive is part of the receive, though
                // the receiving pass pays it.
                pipeline_send_s: sim.send_s + sim.compute_s * staging_share,
                tp_comm_s: sim.compute_s * comm_share,
                dp_allreduce_s: sim.allreduce_s,
                optimizer_s: sim.optimizer_s,
            },
            memory,
        }
    }
}

/// What one plan's computation costs whatever its split and deal: every
/// re-split of the plan (same devices per stage, setup and micro-batch
/// size) shares it ([`CostModel::layout_estimator`]).
struct ComputePrices {
    /// Distinct per-layer costs of the plan's tensor-parallel groups.
    layer_costs: Vec<Vec<LayerCost>>,
    /// `group_costs[j][r]`: index in `layer_costs` of pipeline rank `j`'s
    /// replica `r`.
    group_costs: Vec<Vec<usize>>,
    /// Per pipeline rank, each (GPU type, tp) of its groups once: what its
    /// optimizer step is priced on ([`DeviceModel::optimizer_time`]).
    step_kinds: Arc<StepKinds>,
}

/// Per pipeline rank, each (GPU type, tp) of its groups once
/// ([`ComputePrices::step_kinds`]).
type StepKinds = Vec<Vec<step::StepKind>>;

/// The network costs of one plan's devices as functions of message size:
/// the same for every split, micro-batch size and deal.
struct NetPrices {
    /// `sends[c]`: the forward transfer across virtual cut `c` (`None`
    /// within one device group).
    sends: Vec<Option<TransferCurves>>,
    /// `back[c]`: the backward transfer across virtual cut `c`.
    back: Vec<Option<TransferCurves>>,
    /// `allreduce[j]`: pipeline rank j's gradient all-reduce.
    allreduce: Vec<collective::CostCurve>,
    /// All-reduces of tied weights' gradients between two ranks.
    tied: TiedCurves,
    /// Where ranks' gradient all-reduces cross the same NICs, each rank's
    /// with all those running at once, and which ranks meet whose
    /// ([`collective::crowded_reductions`]).
    crowded: Option<Arc<CrowdedCurves>>,
}

/// Per pipeline rank, its gradient all-reduce with every rank it shares a
/// NIC with running at once, and those ranks.
type CrowdedCurves = (Vec<collective::CostCurve>, Vec<Vec<usize>>);

/// The all-reduce of a tied weight's gradient between pipeline ranks `a`
/// and `b` of one layout, as a function of message size: priced on first
/// need and shared by every plan of the layout (which pair holds a tied
/// layer can depend on the split). A pure function of the layout, so the
/// order in which threads fill it does not change any price.
#[derive(Clone, Default)]
struct TiedCurves(Arc<Mutex<Vec<TiedCurve>>>);

/// A pair of pipeline ranks and the all-reduce curve between them.
type TiedCurve = ((usize, usize), collective::CostCurve);

impl TiedCurves {
    /// Seconds to all-reduce `bytes` between ranks `a` and `b`, the curve
    /// made by `price` the first time the pair is met.
    fn at(
        &self,
        pair: (usize, usize),
        bytes: f64,
        price: impl FnOnce() -> collective::CostCurve,
    ) -> f64 {
        let lock = || self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = lock().iter().find(|(k, _)| *k == pair) {
            return c.at(bytes);
        }
        // Priced outside the lock (a ring over every replica, while other
        // threads read the curves met); a race prices it twice, alike.
        let curve = price();
        let mut known = lock();
        match known.iter().find(|(k, _)| *k == pair) {
            Some((_, c)) => c.at(bytes),
            None => {
                let t = curve.at(bytes);
                known.push((pair, curve));
                t
            }
        }
    }
}

mod layer_costs;
mod sends;
mod sharded;
mod step;

use sends::TransferCurves;

pub use layer_costs::{attention_core_share, per_op_selective_share, LayerCost};
use layer_costs::{spanning_groups, Caches, GroupMemo};

#[cfg(test)]
mod tests;
