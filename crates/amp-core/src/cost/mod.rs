//! Cost models: what a plan's iteration costs.
//!
//! Every cost model answers two questions through [`CostModel`]:
//! - for the partitioner, per-stage tables ([`StageTables`]) that price any
//!   split of the layers of one candidate in O(1) per stage;
//! - for ranking and `amp eval`, the full [`Estimate`] of a concrete
//!   [`Plan`].
//!
//! The search treats models as interchangeable; the physics of each lives in
//! its own module.

pub mod amp_paper;
pub mod calibration;
pub mod collective;
pub mod device;

use serde::{Deserialize, Serialize};

pub use calibration::Calibration;

use crate::cluster::{Cluster, Device};
use crate::error::Result;
use crate::model::{Model, ParamTable};
use crate::partition::SplitCosts;
use crate::placement::DeviceGrid;
use crate::plan::Plan;
use crate::profile::Profile;

/// What every cost model reads.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The model: its layers, parameters and activation sizes.
    pub model: &'a Model,
    /// The cluster the plan runs on.
    pub cluster: &'a Cluster,
    /// Measured per-layer times for the cluster's GPU types.
    pub profile: &'a Profile,
}

/// Where an iteration's time goes, seconds. The parts are the critical-path
/// contributions of each kind, so they add up to `iteration_s`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    /// Forward and backward compute on the critical path, without idle time.
    pub compute_s: f64,
    /// Idle time of the pipeline (fill and drain, waiting for slower stages).
    pub bubble_s: f64,
    /// Activation and gradient sends between stages on the critical path.
    pub pipeline_send_s: f64,
    /// Tensor-parallel all-reduces inside layers.
    pub tp_comm_s: f64,
    /// Data-parallel traffic not hidden behind the passes: the gradient
    /// all-reduce (ZeRO's collectives) after the last backward, or, where
    /// FSDP2 gathers and reduces at every micro-batch (torchtitan without a
    /// pipeline), what of that traffic the computation does not hide.
    pub dp_allreduce_s: f64,
    /// Optimizer step.
    pub optimizer_s: f64,
}

/// Predicted peak memory of one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceMemory {
    /// The device this entry describes.
    pub device: Device,
    /// Index of the pipeline stage the device serves.
    pub stage: usize,
    /// Model weights held on the device, bytes.
    pub weights_bytes: f64,
    /// Gradients held on the device, bytes.
    pub gradients_bytes: f64,
    /// Optimizer state held on the device, bytes.
    pub optimizer_bytes: f64,
    /// Activations held at the peak, bytes; or, when larger, the optimizer
    /// step's temporaries (PyTorch's foreach Adam), which exist only after
    /// every activation is freed. With every block recomputed under eager
    /// autocast the blocks' 16-bit casts count here, not in the weights:
    /// they live only at the forward's end and in their own backward; so
    /// does a layer's new weight gradient where eager PyTorch accumulates
    /// over micro-batches.
    pub activations_bytes: f64,
    /// Framework reserve, workspace and other fixed costs, with what the
    /// model keeps on every GPU outside its layers
    /// ([`crate::model::Model::resident_bytes_per_device`]).
    pub other_bytes: f64,
    /// Peak memory of the device, bytes: the sum of the parts above.
    pub peak_bytes: f64,
    /// Memory of the GPU, bytes, when the cluster gives it; `None` means the fit is not checked.
    pub capacity_bytes: Option<f64>,
}

impl DeviceMemory {
    /// Bytes over capacity, when it does not fit.
    pub fn overflow_bytes(&self) -> Option<f64> {
        let cap = self.capacity_bytes?;
        (self.peak_bytes > cap).then_some(self.peak_bytes - cap)
    }
}

/// A cost model's verdict on one plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Predicted time of one training iteration, seconds.
    pub iteration_s: f64,
    /// Where `iteration_s` goes.
    pub breakdown: Breakdown,
    /// Per-device peak memory; empty when the cost model has no memory model.
    pub memory: Vec<DeviceMemory>,
}

impl Estimate {
    /// The first device that does not fit, if any.
    pub fn first_overflow(&self) -> Option<(&DeviceMemory, f64)> {
        self.memory
            .iter()
            .find_map(|m| m.overflow_bytes().map(|o| (m, o)))
    }
}

/// Tables that price any split of one candidate's layers.
#[derive(Debug, Clone, PartialEq)]
pub struct StageTables {
    /// `compute_prefix[j][l]`: time per micro-batch of layers `0..l` when run
    /// by the devices of stage `j` (length `num_layers + 1` each).
    pub compute_prefix: Vec<Vec<f64>>,
    /// `cut[j][k]`: time to pass layer `k`'s output from stage `j` to `j+1`
    /// per micro-batch (forward activation plus backward gradient).
    pub cut: Vec<Vec<f64>>,
    /// Optional memory constraint: what stage `j`'s fullest device holds
    /// for any range of layers, against what fits
    /// ([`StageMemoryTables::fits`]).
    pub memory: Option<StageMemoryTables>,
    /// Optional tail after the last micro-batch, proportional to the
    /// stage's weights (the gradient all-reduce): `tail_s_per_param[j]`
    /// seconds per parameter on stage j, applied to `params`.
    pub tail: Option<TailTables>,
    /// Fewest layers a stage may hold (the model chunks of an interleaved
    /// schedule each need one); 1 otherwise.
    pub min_layers: usize,
}

/// Per-stage data of [`StageTables::tail`]: a tail time proportional to the
/// parameters a stage holds (the gradient all-reduce after the last micro-batch).
#[derive(Debug, Clone, PartialEq)]
pub struct TailTables {
    /// `s_per_param[j]`: tail seconds per parameter held on stage `j`.
    pub s_per_param: Vec<f64>,
    /// Parameters of any layer range, with tied layers counted once per stage.
    pub params: ParamTable,
}

/// Per-stage data of [`StageTables::memory`]: what a stage's fullest device
/// holds for a given range of layers, against what it can hold.
#[derive(Debug, Clone, PartialEq)]
pub struct StageMemoryTables {
    /// `prefix_bytes[j][l]`: bytes that layers `0..l` put on stage `j`'s fullest
    /// device (length `num_layers + 1` each).
    pub prefix_bytes: Vec<Vec<f64>>,
    /// `fixed_bytes[j]`: bytes stage `j` holds whatever its layers.
    pub fixed_bytes: Vec<f64>,
    /// The largest workspace of any range of layers (a layer's backward
    /// transient of a micro-batch, the loss's included: one layer's at a
    /// time), held through the passes on top of the rest.
    pub workspace: RangeMax,
    /// `capacity_bytes[j]`: bytes that fit on stage `j`'s fullest device.
    pub capacity_bytes: Vec<f64>,
    /// The optimizer step's own peak, when it can be the device's peak
    /// (the temporaries of PyTorch's foreach Adam; the gradients eager
    /// PyTorch holds only from its backward on), the same for every stage,
    /// activations freed. `None` when the passes always hold more.
    pub step: Option<StepTables>,
    /// Weights two layers share: the prefixes count them in both, a stage
    /// holding both holds them once.
    pub shared: Vec<SharedWeights>,
    /// Where blocks hold their 16-bit weights only through the forward and
    /// their own backward (eager autocast, every block recomputed): the
    /// forward's end, a peak of the passes beside the workspace's; `None`
    /// elsewhere.
    pub forward_end: Option<ForwardEndTables>,
    /// Where a stage's passes run with its gradients already there (eager
    /// PyTorch accumulating over micro-batches): each layer's backward
    /// holds its new weight gradient beside them before adding it, a
    /// workspace of its own (`memory::accumulation_bytes`); under
    /// torchtitan every backward, FSDP2 reducing the layer's unit; `None`
    /// elsewhere.
    pub accumulation: Option<AccumulationTables>,
}

/// The accumulation workspace ([`StageMemoryTables::accumulation`]): each
/// layer's, and which stages accumulate.
#[derive(Debug, Clone, PartialEq)]
pub struct AccumulationTables {
    /// The largest accumulation workspace of any range of layers.
    pub workspace: RangeMax,
    /// `loss_freed[l]`: what the loss of layers `0..l` has freed of the
    /// prefixes when a layer's backward writes its weight gradient
    /// (`memory::loss_freed_before_gradients`), bytes.
    pub loss_freed: Vec<f64>,
    /// `stages[j]`: whether stage `j`'s passes run with its gradients there.
    pub stages: Vec<bool>,
}

/// The forward's end where blocks drop their casts
/// ([`StageMemoryTables::forward_end`]): beside the passes' other bytes,
/// every cast and the loss's forward workspace. The passes' prefixes leave
/// those casts out, and [`StageMemoryTables::workspace`] holds each
/// block's own beside its backward's workspace.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardEndTables {
    /// `casts[l]`: the casts of layers `0..l`, bytes.
    pub casts: Vec<f64>,
    /// The largest forward workspace of any range of layers (the loss's).
    pub workspace: RangeMax,
}

/// What a stage holds through the optimizer step ([`StageMemoryTables::step`]):
/// its model states and, beside them, the larger of the step's temporaries
/// and what the end of the backward holds briefly (a tied weight's second
/// gradient, [`SharedWeights::step_transient_bytes`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StepTables {
    /// `states[l]`: the model states of layers `0..l`.
    pub states: Vec<f64>,
    /// `temporaries[l]`: the step's temporaries of layers `0..l`.
    pub temporaries: Vec<f64>,
    /// `backward_end[l]`: what the end of the backward holds of layers
    /// `0..l` beside the states: their 16-bit casts, where the loop runs
    /// its backward inside autocast
    /// ([`crate::setup::TrainingSetup::backward_in_autocast`]), and the copy
    /// DeepSpeed ZeRO-2 flattens their gradients into before it all-reduces
    /// them, where a rank's fit one bucket; `None` where neither is.
    pub backward_end: Option<Vec<f64>>,
    /// Bytes every stage holds at the end of the backward whatever its
    /// layers, beside [`Self::backward_end`] (DeepSpeed ZeRO-1's second
    /// reduction bucket).
    pub end_buffer: f64,
    /// The flat copy DeepSpeed's pipeline engine without ZeRO makes of a
    /// bucket of gradients to all-reduce them, beside
    /// [`Self::backward_end`]; `None` where there is none.
    pub reduction_copy: Option<ReductionCopyTables>,
    /// Bytes every stage holds whatever its layers.
    pub fixed: f64,
}

/// DeepSpeed's flat copy of a stage's gradients at its data-parallel
/// reduction ([`crate::memory`]'s `reduction_copy_bytes`): the bytes of
/// a range's gradients up to one bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct ReductionCopyTables {
    /// `bytes[l]`: the copy of layers `0..l`'s gradients, were it one bucket.
    pub bytes: Vec<f64>,
    /// The copy of one full bucket.
    pub cap_bytes: f64,
}

/// Weights a layer shares with an earlier one ([`crate::model::Layer::tied_to`]),
/// as [`StageMemoryTables`] take them off a stage that holds both layers.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedWeights {
    /// The later layer.
    pub layer: usize,
    /// The earlier layer it shares them with.
    pub tied_to: usize,
    /// Bytes the prefixes count twice through the passes.
    pub bytes: f64,
    /// The same through the optimizer step, model states.
    pub step_bytes: f64,
    /// The same through the optimizer step, its temporaries.
    pub step_temporaries_bytes: f64,
    /// What a stage holding both layers holds at the end of the backward
    /// beside its states, or 0: eager PyTorch's second gradient of the tied
    /// weights (the embedding's, before it is added to the projection's).
    pub step_transient_bytes: f64,
    /// Bytes [`ReductionCopyTables::bytes`] counts twice.
    pub reduction_copy_bytes: f64,
}

/// Sums of [`SharedWeights`] over the ties a range holds both ends of.
#[derive(Debug, Default)]
struct SharedBytes {
    passes: f64,
    step: f64,
    step_temporaries: f64,
    step_transient: f64,
    reduction_copy: f64,
}

impl StageMemoryTables {
    /// Whether stage `j` holding layers `first..end` fits: through the
    /// forward and backward passes and, if it has its own peak, through
    /// the optimizer step. Both only grow with the range.
    pub fn fits(&self, j: usize, first: usize, end: usize) -> bool {
        // `peak_bytes(j, first, end) <= cap`, the range's workspace looked up
        // only when the largest of all does not decide it (the partitioner
        // asks this of every range; most are far from the capacity).
        let cap = self.capacity_bytes[j];
        let shared = self.shared_bytes(first, end);
        let rest = self.bytes_but_workspace(j, first, end);
        (rest + self.largest_workspace() - shared.passes <= cap
            || rest + self.passes_workspace(j, first, end) - shared.passes <= cap)
            && self
                .step_bytes(first, end, &shared)
                .is_none_or(|b| b <= cap)
    }

    /// What stage `j` holding layers `first..end` holds at its peak: through
    /// the passes or, if it has a peak of its own, through the optimizer
    /// step, whichever holds more.
    pub fn peak_bytes(&self, j: usize, first: usize, end: usize) -> f64 {
        let passes = self.passes_bytes(j, first, end);
        self.step_bytes(first, end, &self.shared_bytes(first, end))
            .map_or(passes, |step| passes.max(step))
    }

    /// What stage `j` holding layers `first..end` holds at its peak through
    /// the forward and backward passes.
    pub fn passes_bytes(&self, j: usize, first: usize, end: usize) -> f64 {
        self.bytes_but_workspace(j, first, end) + self.passes_workspace(j, first, end)
            - self.shared_bytes(first, end).passes
    }

    /// What layers `first..end` of stage `j` hold beside the passes'
    /// prefixes: the largest workspace or, where blocks drop their casts,
    /// the forward's end, or where the stage accumulates gradients, the
    /// largest accumulation workspace, whichever holds more.
    fn passes_workspace(&self, j: usize, first: usize, end: usize) -> f64 {
        let workspace = self.workspace.max(first, end);
        let workspace = match &self.forward_end {
            None => workspace,
            Some(f) => workspace.max(f.casts[end] - f.casts[first] + f.workspace.max(first, end)),
        };
        match &self.accumulation {
            Some(a) if a.stages[j] => workspace
                .max(a.workspace.max(first, end) - (a.loss_freed[end] - a.loss_freed[first])),
            _ => workspace,
        }
    }

    /// [`Self::passes_workspace`] of every layer: at least any range's.
    fn largest_workspace(&self) -> f64 {
        let workspace = self.workspace.largest();
        let workspace = match &self.forward_end {
            None => workspace,
            Some(f) => {
                workspace.max(f.casts.last().copied().unwrap_or(0.0) + f.workspace.largest())
            }
        };
        match &self.accumulation {
            Some(a) => workspace.max(a.workspace.largest()),
            None => workspace,
        }
    }

    /// The passes' bytes of stage `j` holding layers `first..end` but its
    /// workspace, shared weights counted twice.
    fn bytes_but_workspace(&self, j: usize, first: usize, end: usize) -> f64 {
        self.fixed_bytes[j] + self.prefix_bytes[j][end] - self.prefix_bytes[j][first]
    }

    /// The optimizer step's peak of layers `first..end` (`shared`: their
    /// [`Self::shared_bytes`]), where it has a peak of its own.
    fn step_bytes(&self, first: usize, end: usize, shared: &SharedBytes) -> Option<f64> {
        self.step.as_ref().map(|t| {
            let temporaries = t.temporaries[end] - t.temporaries[first] - shared.step_temporaries;
            let backward_end = t.end_buffer
                + match &t.backward_end {
                    Some(c) => shared.step_transient + (c[end] - c[first]),
                    None => shared.step_transient,
                }
                + t.reduction_copy.as_ref().map_or(0.0, |r| {
                    (r.bytes[end] - r.bytes[first] - shared.reduction_copy).min(r.cap_bytes)
                });
            t.fixed + t.states[end] - t.states[first] - shared.step + temporaries.max(backward_end)
        })
    }

    /// What tied weights make the tables count twice for layers
    /// `first..end`, and what a stage holding both ends holds briefly.
    fn shared_bytes(&self, first: usize, end: usize) -> SharedBytes {
        let mut b = SharedBytes::default();
        for s in &self.shared {
            if first <= s.tied_to && s.layer < end {
                b.passes += s.bytes;
                b.step += s.step_bytes;
                b.step_temporaries += s.step_temporaries_bytes;
                b.step_transient += s.step_transient_bytes;
                b.reduction_copy += s.reduction_copy_bytes;
            }
        }
        b
    }

    /// Whether some split of `num_layers` layers into these stages, each
    /// of at least `min_layers` layers, fits in memory: exactly the splits
    /// [`StageTables`] allows (`any_split_fits`).
    pub fn any_split_fits(&self, num_layers: usize, min_layers: usize) -> bool {
        any_split_fits(
            self.fixed_bytes.len(),
            num_layers,
            min_layers,
            |j, first, end| self.fits(j, first, end),
        )
    }
}

/// Whether some split of `num_layers` layers into `num_stages` stages in
/// order, each of at least `min_layers` layers, has every stage `j` with
/// `fits(j, first, end)` for its layers `first..end`. `fits` must only
/// turn false as a range grows (a stage's bytes only grow with its
/// layers): then the ends reachable after each stage are swept with two
/// pointers, linear in stages x layers.
pub(crate) fn any_split_fits(
    num_stages: usize,
    num_layers: usize,
    min_layers: usize,
    fits: impl Fn(usize, usize, usize) -> bool,
) -> bool {
    let n = num_layers;
    let min = min_layers.max(1);
    let mut reachable = vec![false; n + 1];
    reachable[0] = true;
    // +1 at the first end reachable from a start, -1 after the last.
    let mut delta = vec![0i64; n + 2];
    for j in 0..num_stages {
        delta.fill(0);
        let mut hi = 0;
        for first in 0..n {
            if !reachable[first] || first + min > n {
                continue;
            }
            hi = hi.max(first + min - 1);
            while hi < n && fits(j, first, hi + 1) {
                hi += 1;
            }
            if hi >= first + min {
                delta[first + min] += 1;
                delta[hi + 1] -= 1;
            }
        }
        let (mut open, mut any) = (0, false);
        for (end, r) in reachable.iter_mut().enumerate() {
            open += delta[end];
            *r = open > 0;
            any |= *r;
        }
        // No end reachable: no later stage can start.
        if !any {
            return false;
        }
    }
    reachable[n]
}

impl SplitCosts for StageTables {
    /// Time of stage `j` holding `first..end`, or infinity when it does not
    /// fit in memory.
    fn stage_s(&self, j: usize, first: usize, end: usize) -> f64 {
        if end - first < self.min_layers {
            return f64::INFINITY;
        }
        if let Some(m) = &self.memory {
            if !m.fits(j, first, end) {
                return f64::INFINITY;
            }
        }
        self.compute_prefix[j][end] - self.compute_prefix[j][first]
    }

    fn tail_s(&self, j: usize, first: usize, end: usize) -> f64 {
        match &self.tail {
            Some(t) => t.s_per_param[j] * t.params.stage_params(first, end),
            None => 0.0,
        }
    }

    fn cut_s(&self, j: usize, last_layer: usize) -> f64 {
        self.cut[j][last_layer]
    }

    fn remaining_floors_s(&self, num_layers: usize) -> Vec<f64> {
        // Each layer at its cheapest stage position, summed from the back.
        let mut floors = vec![0.0; num_layers + 1];
        for k in (0..num_layers).rev() {
            let cheapest = self
                .compute_prefix
                .iter()
                .map(|p| p[k + 1] - p[k])
                .fold(f64::INFINITY, f64::min);
            floors[k] = floors[k + 1] + cheapest;
        }
        floors
    }
}

/// One uniform candidate as the search hands it to a cost model.
#[derive(Debug, Clone)]
pub struct Candidate<'g> {
    /// The devices of the candidate, arranged by tensor, data and pipeline axis.
    pub grid: &'g DeviceGrid,
    /// The training setup every plan of the candidate records.
    pub setup: &'g crate::setup::TrainingSetup,
    /// Samples per micro-batch.
    pub micro_batch: usize,
    /// Micro-batches per iteration, per data-parallel replica.
    pub num_micro_batches: usize,
}

/// A cost model: prices split candidates for the partitioner and whole plans
/// for ranking; the search is generic over it.
pub trait CostModel: Sync {
    /// Short name, as given to `--cost-model`.
    fn name(&self) -> &'static str;

    /// The fitted constants this model prices with, `None` for a model
    /// without any (its memory, where asked, is then priced with
    /// [`Calibration::FITTED`]'s reserve).
    fn calibration(&self) -> Option<Calibration> {
        None
    }

    /// Tables for the partitioner. Errors when the inputs cannot price this
    /// candidate (e.g. no profile for its tensor-parallel degree).
    fn stage_tables(&self, inputs: &Inputs, candidate: &Candidate) -> Result<StageTables>;

    /// [`Self::stage_tables`] for candidates asked one after another that
    /// mostly share a grid and setup (differing in their micro-batches):
    /// what does not depend on the micro-batch (the device model's
    /// network) is priced once per grid and setup met in a row.
    fn grid_tables<'a>(&'a self, inputs: &'a Inputs<'a>) -> Box<dyn GridTables<'a> + 'a> {
        Box::new(PlainGridTables {
            model: self,
            inputs,
        })
    }

    /// A split this model insists on instead of the exact partition (the
    /// amp-paper mode's reproduction of the artifact's partitioner).
    fn preferred_split(
        &self,
        _inputs: &Inputs,
        _candidate: &Candidate,
        _tables: &StageTables,
    ) -> Option<Vec<usize>> {
        None
    }

    /// Whether the search keeps this model's split as found: true when the
    /// partitioner's objective is the model's full estimate, or the model
    /// insists on its own split. False (the default) makes the search
    /// refine the leading plans' splits under [`CostModel::evaluate`]
    /// ([`crate::refine`]).
    fn split_is_final(&self) -> bool {
        false
    }

    /// The full estimate of a plan.
    fn evaluate(&self, inputs: &Inputs, plan: &Plan) -> Result<Estimate>;

    /// The estimate of `plan` when it fits in memory, `None` when some
    /// device would be over capacity: [`CostModel::evaluate`] and
    /// [`Estimate::first_overflow`] together. A model that can tell the fit
    /// first overrides this to skip pricing the time of plans that do not
    /// fit (the search's path: most of Llama-3.1-405B's candidates).
    fn evaluate_if_fits(&self, inputs: &Inputs, plan: &Plan) -> Result<Option<Estimate>> {
        let e = self.evaluate(inputs, plan)?;
        Ok(e.first_overflow().is_none().then_some(e))
    }

    /// An estimator for plans on `plan`'s layout (the same devices per
    /// stage and setup) that differ from it in where the stages split, the
    /// micro-batch size or the replicas' micro-batch counts (the split
    /// refinement's re-splits, the rebalancing's deals, a layout's
    /// micro-batch sizes): the same estimates as [`CostModel::evaluate`]
    /// and [`CostModel::evaluate_if_fits`], with what does not depend on
    /// those (the device model's collectives on a 16,384-GPU plan) priced
    /// once. Plans on other layouts are priced in full. Errors when `plan`
    /// itself is invalid.
    fn layout_estimator<'a>(
        &'a self,
        inputs: &'a Inputs<'a>,
        plan: &Plan,
    ) -> Result<LayoutEstimator<'a>> {
        let _ = plan;
        Ok(Box::new(Plain {
            model: self,
            inputs,
        }))
    }

    /// Makes [`CostModel::layout_estimator`]s for the many layouts of one
    /// search on `inputs`, sharing what they have in common (the device
    /// model: the network prices of groups of devices alike up to renaming
    /// nodes). The same estimates as estimators made one by one.
    fn layout_estimators<'a>(
        &'a self,
        inputs: &'a Inputs<'a>,
    ) -> Box<dyn LayoutEstimators<'a> + 'a> {
        Box::new(PlainLayoutEstimators {
            model: self,
            inputs,
        })
    }
}

/// What [`CostModel::layout_estimators`] returns.
pub trait LayoutEstimators<'a>: Sync {
    /// [`CostModel::layout_estimator`] of `plan`.
    fn layout_estimator(&self, plan: &Plan) -> Result<LayoutEstimator<'a>>;

    /// [`CostModel::grid_tables`], sharing what the search's grids have in
    /// common (the device model: which of a cluster's nodes are alike).
    fn grid_tables(&self) -> Box<dyn GridTables<'a> + 'a>;
}

/// Layout estimators made one by one, nothing shared.
struct PlainLayoutEstimators<'a, M: ?Sized> {
    model: &'a M,
    inputs: &'a Inputs<'a>,
}

impl<'a, M: CostModel + ?Sized> LayoutEstimators<'a> for PlainLayoutEstimators<'a, M> {
    fn layout_estimator(&self, plan: &Plan) -> Result<LayoutEstimator<'a>> {
        self.model.layout_estimator(self.inputs, plan)
    }

    fn grid_tables(&self) -> Box<dyn GridTables<'a> + 'a> {
        self.model.grid_tables(self.inputs)
    }
}

/// Estimates of plans on one layout ([`CostModel::layout_estimator`]).
pub trait PlanEstimator: Send + Sync {
    /// [`CostModel::evaluate`] of `plan`.
    fn estimate(&self, plan: &Plan) -> Result<Estimate>;
    /// [`CostModel::evaluate_if_fits`] of `plan`.
    fn estimate_if_fits(&self, plan: &Plan) -> Result<Option<Estimate>>;

    /// `None` when `plan` does not fit in memory, else a lower bound on
    /// its iteration time, found without pricing it in full where the model
    /// can (the default prices it: its time is its own bound). For searches
    /// that simulate only plans that may beat the ones they keep.
    fn lower_bound_if_fits(&self, plan: &Plan) -> Result<Option<f64>> {
        Ok(self.estimate_if_fits(plan)?.map(|e| e.iteration_s))
    }

    /// `false` only when no split of `plan`'s layers over its stages (the
    /// same devices, setup, micro-batch size and deal) fits in memory, so
    /// [`Self::lower_bound_if_fits`] gives `None` for every one: for
    /// searches that split a candidate only when some split may fit. The
    /// default cannot tell (`true`).
    fn some_split_may_fit(&self, _plan: &Plan) -> bool {
        true
    }

    /// [`Self::estimate_if_fits`], its per-device memory left out where
    /// the model can leave it (empty): for searches that compare many
    /// plans' times and keep few, whose memory [`Self::with_memory`] then
    /// fills in. The default keeps it.
    fn time_if_fits(&self, plan: &Plan) -> Result<Option<Estimate>> {
        self.estimate_if_fits(plan)
    }

    /// [`Self::time_if_fits`], or `None` also when `plan` is proven slower
    /// than `limit_s` without pricing it in full (a lower bound, as
    /// [`Self::lower_bound_if_fits`]): for searches that keep a plan only
    /// when it is faster than `limit_s`. The default prices it.
    fn time_if_fits_under(&self, plan: &Plan, _limit_s: f64) -> Result<Option<Estimate>> {
        self.time_if_fits(plan)
    }

    /// `estimate`, [`Self::time_if_fits`] of `plan`, with the per-device
    /// memory [`Self::estimate_if_fits`] gives: the same estimate.
    fn with_memory(&self, _plan: &Plan, estimate: Estimate) -> Estimate {
        estimate
    }
}

/// The partitioner's tables of candidates asked one after another
/// ([`CostModel::grid_tables`]).
pub trait GridTables<'a> {
    /// [`CostModel::stage_tables`] of `candidate`.
    fn stage_tables(&mut self, candidate: &Candidate) -> Result<StageTables>;

    /// [`CostModel::layout_estimator`] of `plan`, reusing what the tables
    /// priced when `plan` lies on the last grid and setup asked (the device
    /// model's network).
    fn layout_estimator(&mut self, plan: &Plan) -> Result<LayoutEstimator<'a>>;
}

/// A model's own tables, nothing shared between candidates.
struct PlainGridTables<'a, M: ?Sized> {
    model: &'a M,
    inputs: &'a Inputs<'a>,
}

impl<'a, M: CostModel + ?Sized> GridTables<'a> for PlainGridTables<'a, M> {
    fn stage_tables(&mut self, candidate: &Candidate) -> Result<StageTables> {
        self.model.stage_tables(self.inputs, candidate)
    }

    fn layout_estimator(&mut self, plan: &Plan) -> Result<LayoutEstimator<'a>> {
        self.model.layout_estimator(self.inputs, plan)
    }
}

/// What [`CostModel::layout_estimator`] returns.
pub type LayoutEstimator<'a> = Box<dyn PlanEstimator + 'a>;

/// A model's own estimates, nothing shared between plans.
struct Plain<'a, M: ?Sized> {
    model: &'a M,
    inputs: &'a Inputs<'a>,
}

impl<M: CostModel + ?Sized> PlanEstimator for Plain<'_, M> {
    fn estimate(&self, plan: &Plan) -> Result<Estimate> {
        self.model.evaluate(self.inputs, plan)
    }

    fn estimate_if_fits(&self, plan: &Plan) -> Result<Option<Estimate>> {
        self.model.evaluate_if_fits(self.inputs, plan)
    }
}

/// The largest of any range of values in two reads (a sparse table: the
/// largest of each power-of-two run), for tables the partitioner asks of
/// every range.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeMax {
    /// `runs[k][i]`: the largest of values `i..i + 2^k`.
    runs: Vec<Vec<f64>>,
    /// The largest of all (0 when there are none).
    largest: f64,
}

impl RangeMax {
    /// The table of `values`.
    pub fn new(values: Vec<f64>) -> RangeMax {
        let n = values.len();
        let largest = values.iter().copied().fold(0.0, f64::max);
        let mut runs = vec![values];
        let mut width = 1;
        while 2 * width <= n {
            let last = runs.last().expect("one level at least");
            let next = (0..=n - 2 * width)
                .map(|i| last[i].max(last[i + width]))
                .collect();
            runs.push(next);
            width *= 2;
        }
        RangeMax { runs, largest }
    }

    /// The largest of all values, at least 0: a bound on any range's.
    pub fn largest(&self) -> f64 {
        self.largest
    }

    /// The largest of values `first..end`; 0 for an empty range.
    pub fn max(&self, first: usize, end: usize) -> f64 {
        if end <= first {
            return 0.0;
        }
        let k = (usize::BITS - 1 - (end - first).leading_zeros()) as usize;
        self.runs[k][first].max(self.runs[k][end - (1 << k)])
    }
}

/// Prefix sums of `values`, with a leading 0.
pub(crate) fn prefix_sums(values: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let values = values.into_iter();
    let mut out = Vec::with_capacity(values.size_hint().0 + 1);
    out.push(0.0);
    let mut acc = 0.0;
    for v in values {
        acc += v;
        out.push(acc);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Whether some split of `n` layers into the tables' stages fits, by
    /// trying every split.
    fn brute_force_fits(m: &StageMemoryTables, n: usize, min: usize) -> bool {
        fn rec(m: &StageMemoryTables, j: usize, first: usize, n: usize, min: usize) -> bool {
            let pp = m.fixed_bytes.len();
            if j == pp {
                return first == n;
            }
            (first + min..=n).any(|end| m.fits(j, first, end) && rec(m, j + 1, end, n, min))
        }
        rec(m, 0, 0, n, min)
    }

    proptest! {
        #[test]
        fn range_max_is_the_largest_of_the_range(
            values in proptest::collection::vec(-5.0f64..5.0, 0..40),
            a in 0usize..41,
            b in 0usize..41,
        ) {
            let (first, end) = (a.min(b).min(values.len()), a.max(b).min(values.len()));
            let want = if first < end {
                values[first..end].iter().copied().fold(f64::NEG_INFINITY, f64::max)
            } else {
                0.0
            };
            prop_assert_eq!(RangeMax::new(values.clone()).max(first, end), want);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn any_split_fits_matches_brute_force(
            n in 1usize..=8,
            pp in 1usize..=4,
            min in 1usize..=2,
            bytes in proptest::collection::vec(proptest::collection::vec(0.0f64..10.0, 8), 4),
            fixed in proptest::collection::vec(0.0f64..5.0, 4),
            cap in proptest::collection::vec(0.0f64..30.0, 4),
            step_bytes in proptest::collection::vec(0.0f64..10.0, 8),
            step_temporaries in proptest::collection::vec(0.0f64..3.0, 8),
            with_step in proptest::bool::ANY,
            end_buffer in 0.0f64..2.0,
            transient in 0.0f64..10.0,
            tie in proptest::option::of((0usize..8, 0usize..8, 0.0f64..=1.0)),
            workspace in proptest::collection::vec(0.0f64..5.0, 8),
            backward_end in proptest::option::of(
                proptest::collection::vec(0.0f64..3.0, 8),
            ),
            reduction_copy in proptest::option::of((
                proptest::collection::vec(0.0f64..3.0, 8),
                0.0f64..6.0,
            )),
            accumulation in proptest::option::of((
                proptest::collection::vec(0.0f64..6.0, 8),
                proptest::collection::vec(proptest::bool::ANY, 4),
                proptest::collection::vec(0.0f64..=1.0, 8),
            )),
            forward_end in proptest::option::of((
                proptest::collection::vec(0.0f64..3.0, 8),
                proptest::collection::vec(0.0f64..5.0, 8),
            )),
        ) {
            // A tie as `stage_memory_tables` makes one: at most what both
            // ends put on any stage, so a range's bytes still grow with it.
            let shared = tie
                .filter(|&(a, b, _)| a != b && a.max(b) < n)
                .map(|(a, b, share)| {
                    let (t, l) = (a.min(b), a.max(b));
                    let least = |x: &[f64]| x[t].min(x[l]);
                    SharedWeights {
                        layer: l,
                        tied_to: t,
                        bytes: share * (0..pp).map(|j| least(&bytes[j])).fold(f64::INFINITY, f64::min),
                        step_bytes: share * least(&step_bytes),
                        step_temporaries_bytes: share * least(&step_temporaries),
                        step_transient_bytes: transient,
                        reduction_copy_bytes: reduction_copy
                            .as_ref()
                            .map_or(0.0, |(r, _)| share * least(r)),
                    }
                })
                .into_iter()
                .collect();
            let m = StageMemoryTables {
                prefix_bytes: (0..pp).map(|j| prefix_sums(bytes[j][..n].iter().copied())).collect(),
                fixed_bytes: fixed[..pp].to_vec(),
                capacity_bytes: cap[..pp].to_vec(),
                step: with_step.then(|| StepTables {
                    states: prefix_sums(step_bytes[..n].iter().copied()),
                    temporaries: prefix_sums(step_temporaries[..n].iter().copied()),
                    backward_end: backward_end
                        .as_ref()
                        .map(|c| prefix_sums(c[..n].iter().copied())),
                    end_buffer,
                    reduction_copy: reduction_copy.as_ref().map(|(r, cap)| ReductionCopyTables {
                        bytes: prefix_sums(r[..n].iter().copied()),
                        cap_bytes: *cap,
                    }),
                    fixed: fixed[0] / 2.0,
                }),
                shared,
                workspace: RangeMax::new(workspace[..n].to_vec()),
                // What the loss frees, as `stage_memory_tables` makes it: a
                // share of what its layer puts on every stage.
                accumulation: accumulation.map(|(workspace, stages, loss)| AccumulationTables {
                    workspace: RangeMax::new(workspace[..n].to_vec()),
                    loss_freed: prefix_sums((0..n).map(|l| {
                        loss[l] * (0..pp).map(|j| bytes[j][l]).fold(f64::INFINITY, f64::min)
                    })),
                    stages: stages[..pp].to_vec(),
                }),
                forward_end: forward_end.map(|(casts, workspace)| ForwardEndTables {
                    casts: prefix_sums(casts[..n].iter().copied()),
                    workspace: RangeMax::new(workspace[..n].to_vec()),
                }),
            };
            prop_assert_eq!(m.any_split_fits(n, min), brute_force_fits(&m, n, min));
        }
    }
}
