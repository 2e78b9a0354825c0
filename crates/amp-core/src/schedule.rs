//! Pipeline schedules and their timelines.
//!
//! The timeline types are shared by the cost model (which simulates the
//! schedule to price a plan) and the report (which draws it).

use serde::{Deserialize, Serialize};

/// Order of forward and backward passes in a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// One forward, one backward: stage j keeps at most pp - j micro-batches
    /// in flight (PipeDream-Flush, Megatron-LM's default).
    #[default]
    #[serde(rename = "1f1b")]
    OneFOneB,
    /// All forwards, then all backwards.
    GPipe,
    /// Megatron-LM's interleaved 1F1B (Narayanan et al., SC'21, sec. 2.2):
    /// every device holds `virtual_stages` model chunks; chunk k of
    /// pipeline rank j is virtual stage `k * pp + j` of a `pp *
    /// virtual_stages`-stage pipeline. With `virtual_stages = 1` it is
    /// [`Schedule::OneFOneB`]. Serialized as
    /// `{"interleaved-1f1b": {"virtual_stages": v}}`.
    #[serde(rename = "interleaved-1f1b")]
    Interleaved {
        /// Model chunks per device (at least 1).
        virtual_stages: usize,
    },
}

/// One forward or backward pass of one model chunk of one micro-batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pass {
    /// Forward pass when true, backward pass otherwise.
    pub forward: bool,
    /// Model chunk on the device (0 unless interleaved).
    pub chunk: usize,
    /// Index of the micro-batch, from 0.
    pub micro_batch: usize,
}

/// What a timeline event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Forward pass of a micro-batch through the stage.
    Forward,
    /// Backward pass of a micro-batch through the stage.
    Backward,
    /// Activation sent to the next stage.
    SendForward,
    /// Gradient sent to the previous stage.
    SendBackward,
    /// Data-parallel gradient all-reduce.
    AllReduce,
    /// The optimizer step after the last backward pass.
    Optimizer,
}

/// One interval of one stage's work in an iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Pipeline stage (rank) the event ran on.
    pub stage: usize,
    /// Data-parallel replica whose pipeline ran this event (0 for the
    /// all-reduce and optimizer, which belong to the whole stage).
    #[serde(default)]
    pub replica: usize,
    /// Micro-batch index, for compute and sends.
    pub micro_batch: Option<usize>,
    /// Model chunk of an interleaved schedule (virtual stage `chunk * pp +
    /// stage`) for compute and sends; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<usize>,
    /// What the event is.
    pub kind: EventKind,
    /// Start of the event, seconds from the start of the iteration.
    pub start_s: f64,
    /// End of the event, seconds from the start of the iteration.
    pub end_s: f64,
}

/// One iteration of a plan, event by event, as the cost model simulated it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Timeline {
    /// Number of pipeline stages (ranks) in the timeline.
    pub num_stages: usize,
    /// Micro-batches each replica runs in the iteration (the largest
    /// count when replicas run different numbers).
    pub num_micro_batches: usize,
    /// Every event of every stage and replica.
    pub events: Vec<Event>,
    /// Length of the iteration, seconds: the end of the last event.
    pub iteration_s: f64,
}

/// What one pipeline stage does in a simulated iteration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageWork {
    /// The stage (pipeline rank).
    pub stage: usize,
    /// Forward and backward passes of the stage's busiest replica, seconds
    /// (the tensor-parallel communication inside them included).
    pub passes_s: f64,
    /// End of the stage's last event (its optimizer step), seconds.
    pub end_s: f64,
}

impl Timeline {
    /// Each stage's work, in stage order. The iteration's time breakdown
    /// ([`crate::Breakdown`]) describes the stage that ends it, which in a
    /// 1F1B pipeline is the first: its bubble holds its wait for every
    /// other stage, so a reader needs the busiest stage beside it.
    pub fn stage_work(&self) -> Vec<StageWork> {
        let mut passes: Vec<Vec<f64>> = vec![Vec::new(); self.num_stages];
        let mut end_s = vec![0.0_f64; self.num_stages];
        for e in self.events.iter().filter(|e| e.stage < self.num_stages) {
            end_s[e.stage] = end_s[e.stage].max(e.end_s);
            if matches!(e.kind, EventKind::Forward | EventKind::Backward) {
                let per_replica = &mut passes[e.stage];
                if per_replica.len() <= e.replica {
                    per_replica.resize(e.replica + 1, 0.0);
                }
                per_replica[e.replica] += e.end_s - e.start_s;
            }
        }
        (0..self.num_stages)
            .map(|stage| StageWork {
                stage,
                passes_s: passes[stage].iter().copied().fold(0.0, f64::max),
                end_s: end_s[stage],
            })
            .collect()
    }
}

/// The stage whose last event ends the iteration (the first of ties), as
/// the cost model's breakdown picks it, from [`Timeline::stage_work`];
/// `None` without events.
pub fn ending_stage(work: &[StageWork]) -> Option<usize> {
    let end = work
        .iter()
        .map(|w| w.end_s)
        .fold(f64::NEG_INFINITY, f64::max);
    work.iter().position(|w| w.end_s == end && end.is_finite())
}

/// The stage whose passes take longest (the first of ties), from
/// [`Timeline::stage_work`]; `None` without events.
pub fn busiest_stage(work: &[StageWork]) -> Option<usize> {
    let most = work.iter().map(|w| w.passes_s).fold(0.0, f64::max);
    work.iter().position(|w| w.passes_s == most && most > 0.0)
}

impl Schedule {
    /// Model chunks per device: `virtual_stages` when interleaved, else 1.
    pub fn virtual_stages(self) -> usize {
        match self {
            Schedule::Interleaved { virtual_stages } => virtual_stages.max(1),
            _ => 1,
        }
    }

    /// The order in which stage `stage` of a `pp`-stage pipeline runs the
    /// forward (`true`) and backward (`false`) passes of `b` micro-batches
    /// (chunks left out; see [`Schedule::passes`]).
    ///
    /// 1F1B (PipeDream-Flush, Megatron-LM, DeepSpeed's `TrainSchedule`):
    /// stage j first runs `min(pp - j - 1, b)` forwards, then alternates one
    /// forward and one backward while forwards remain, then drains the
    /// remaining backwards. GPipe: every forward, then every backward, both
    /// in micro-batch order.
    pub fn stage_order(self, stage: usize, pp: usize, b: usize) -> Vec<(bool, usize)> {
        self.passes(stage, pp, b)
            .into_iter()
            .map(|p| (p.forward, p.micro_batch))
            .collect()
    }

    /// The passes device `stage` of a `pp`-device pipeline runs, in order.
    ///
    /// Interleaved (`v` > 1 chunks), as Megatron-LM's
    /// `forward_backward_pipelining_with_interleaving`: the device runs `b
    /// v` forward and `b v` backward passes. Its k-th forward is chunk `(k
    /// mod pp v) / pp` of micro-batch `(k / pp v) pp + k mod pp` (micro-batches
    /// go in groups of pp through chunk 0, then the same group through
    /// chunk 1, ...); its k-th backward the same with the chunks in reverse
    /// (`v - 1 - ...`). Warm-up: `(pp - stage - 1) 2 + (v - 1) pp` forwards,
    /// capped at `b v` (Megatron Core's `get_pp_rank_microbatches`); then one forward and
    /// one backward alternate; then the remaining backwards. Needs `b` to be
    /// a multiple of `pp` (checked by [`simulate`]).
    pub fn passes(self, stage: usize, pp: usize, b: usize) -> Vec<Pass> {
        let mut ops = Vec::with_capacity(2 * b * self.virtual_stages());
        let pass = |forward: bool, micro_batch: usize| Pass {
            forward,
            chunk: 0,
            micro_batch,
        };
        match self {
            Schedule::GPipe => {
                ops.extend((0..b).map(|i| pass(true, i)));
                ops.extend((0..b).map(|i| pass(false, i)));
            }
            Schedule::Interleaved { virtual_stages } if virtual_stages > 1 => {
                let v = virtual_stages;
                let total = b * v;
                let group = pp * v;
                let at = |k: usize, forward: bool| {
                    let in_group = k % group;
                    let chunk = in_group / pp;
                    Pass {
                        forward,
                        chunk: if forward { chunk } else { v - 1 - chunk },
                        micro_batch: (k / group) * pp + in_group % pp,
                    }
                };
                // Megatron Core's `get_pp_rank_microbatches`: every rank
                // warms up this many chunk forwards, all of them only where
                // that reaches the total (no special case for `b == pp`,
                // which pre-Core Megatron-LM ran all forwards first).
                let warmup = ((pp - stage - 1) * 2 + (v - 1) * pp).min(total);
                ops.extend((0..warmup).map(|k| at(k, true)));
                for k in 0..total - warmup {
                    ops.push(at(k + warmup, true));
                    ops.push(at(k, false));
                }
                ops.extend((total - warmup..total).map(|k| at(k, false)));
            }
            Schedule::OneFOneB | Schedule::Interleaved { .. } => {
                let warmup = (pp - stage - 1).min(b);
                ops.extend((0..warmup).map(|i| pass(true, i)));
                let (mut f, mut bw) = (warmup, 0);
                while bw < b {
                    if f < b {
                        ops.push(pass(true, f));
                        f += 1;
                    }
                    ops.push(pass(false, bw));
                    bw += 1;
                }
            }
        }
        ops
    }
}

/// One data-parallel replica's pipeline: what each of its stages costs per
/// micro-batch and what each cut costs per send. Stages are virtual stages
/// under an interleaved schedule: `pp v` of them, virtual stage `c` run by
/// device stage `c mod pp` (its chunk `c / pp`); `v = 1` otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineTimes {
    /// Forward time of one micro-batch on each (virtual) stage.
    pub forward_s: Vec<f64>,
    /// Backward time of one micro-batch on each (virtual) stage.
    pub backward_s: Vec<f64>,
    /// `send_forward_s[c]`: one micro-batch's activations from (virtual)
    /// stage c to c + 1 (`pp v - 1` entries).
    pub send_forward_s: Vec<f64>,
    /// `send_backward_s[c]`: one micro-batch's gradients from (virtual)
    /// stage c + 1 back to c (`pp v - 1` entries).
    pub send_backward_s: Vec<f64>,
    /// Micro-batches this replica runs in the iteration (replicas may run
    /// different numbers: uneven data parallelism).
    pub num_micro_batches: usize,
}

/// Everything one simulated iteration needs.
#[derive(Debug, Clone, PartialEq)]
pub struct IterationSpec {
    /// One pipeline per data-parallel replica, all with the same number of
    /// stages. Replicas run independently until the gradient all-reduce, so
    /// identical replicas may be given once.
    pub pipelines: Vec<PipelineTimes>,
    /// Order of the forward and backward passes.
    pub schedule: Schedule,
    /// Per stage: data-parallel gradient all-reduce (0 without replicas).
    pub allreduce_s: Vec<f64>,
    /// Per stage: optimizer step.
    pub optimizer_s: Vec<f64>,
    /// Overlap the all-reduce with the last backward pass (see
    /// [`simulate`]).
    pub overlap_allreduce: bool,
    /// Per stage, used with `overlap_allreduce`: the fraction of the
    /// stage's gradient bytes that only exists once the last backward pass
    /// has finished (the gradients of its first layer, computed last).
    pub allreduce_tail_fraction: Vec<f64>,
    /// A send also occupies its sender's stream until it completes, as in
    /// DeepSpeed's pipeline engine (send instructions block) and
    /// Megatron-LM's blocking point-to-point calls.
    pub blocking_sends: bool,
    /// Neighbouring stages exchange in lockstep, as DeepSpeed's
    /// `TrainSchedule` runs 1F1B ([`crate::setup::StageExchange::Lockstep`];
    /// see [`simulate`]). 1F1B only.
    pub lockstep: bool,
    /// Every rank waits at a barrier over the whole job after its last
    /// backward pass, before reducing its gradients and stepping (Sailor's
    /// DeepSpeed fork: [`crate::setup::TrainingSetup::grad_reduce_barrier`]).
    /// Not with `overlap_allreduce`.
    pub barrier_before_allreduce: bool,
    /// Stages whose all-reduces share NICs, where some do: while they
    /// overlap in time each runs slower than `allreduce_s` ([`simulate`]).
    pub crowded_allreduce: Option<CrowdedAllReduce>,
}

/// Gradient all-reduces of stages that cross the same NICs
/// ([`IterationSpec::crowded_allreduce`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CrowdedAllReduce {
    /// Per stage: its all-reduce's seconds with every one of its peers'
    /// running all along (at least its `allreduce_s`).
    pub crowded_s: Vec<f64>,
    /// Per stage: the other stages whose all-reduces share a NIC with it.
    pub peers: Vec<Vec<usize>>,
}

impl CrowdedAllReduce {
    /// How long each stage's all-reduce takes when stage j's starts at
    /// `start_s[j]` and takes `alone_s[j]` by itself: it progresses at the
    /// rate the peers then running leave it, interpolated between running
    /// alone and with every peer by how many of its `k` peers run (`n`:
    /// `alone + (crowded - alone) n / k`; exact for equal flows through one
    /// NIC, which each get `1 / (n + 1)` of it). A stage without time takes
    /// none.
    fn durations_s(&self, start_s: &[f64], alone_s: &[f64]) -> Vec<f64> {
        let pp = alone_s.len();
        // An all-reduce without a finite price is left as it is (the
        // search drops such a plan).
        if alone_s
            .iter()
            .chain(&self.crowded_s)
            .any(|x| !x.is_finite())
        {
            return alone_s.to_vec();
        }
        // Share of each all-reduce left, and its end once done.
        let mut left: Vec<f64> = alone_s
            .iter()
            .map(|&a| if a > 0.0 { 1.0 } else { 0.0 })
            .collect();
        let mut end_s = start_s.to_vec();
        let mut t = (0..pp)
            .filter(|&j| left[j] > 0.0)
            .map(|j| start_s[j])
            .fold(f64::INFINITY, f64::min);
        // Each turn ends an all-reduce or starts some: at most 2 pp turns.
        for _ in 0..2 * pp + 2 {
            let running = |j: usize| left[j] > 0.0 && start_s[j] <= t;
            let rate: Vec<f64> = (0..pp)
                .map(|j| {
                    if !running(j) {
                        return 0.0;
                    }
                    let k = self.peers[j].len();
                    let n = self.peers[j].iter().filter(|&&p| running(p)).count();
                    let extra = if k == 0 {
                        0.0
                    } else {
                        (self.crowded_s[j] - alone_s[j]).max(0.0) * n as f64 / k as f64
                    };
                    1.0 / (alone_s[j] + extra)
                })
                .collect();
            let next_start = (0..pp)
                .filter(|&j| left[j] > 0.0 && start_s[j] > t)
                .map(|j| start_s[j])
                .fold(f64::INFINITY, f64::min);
            // The first to end at these rates (the lowest index of a tie).
            let mut first: Option<(f64, usize)> = None;
            for j in (0..pp).filter(|&j| rate[j] > 0.0) {
                let dt = left[j] / rate[j];
                if first.is_none_or(|(best, _)| dt < best) {
                    first = Some((dt, j));
                }
            }
            match first {
                Some((dt, ending)) if t + dt <= next_start => {
                    for j in 0..pp {
                        left[j] = (left[j] - rate[j] * dt).max(0.0);
                    }
                    t += dt;
                    left[ending] = 0.0;
                    end_s[ending] = t;
                    for j in 0..pp {
                        if rate[j] > 0.0 && left[j] <= 1e-12 {
                            left[j] = 0.0;
                            end_s[j] = t;
                        }
                    }
                }
                _ if next_start.is_finite() => {
                    for j in 0..pp {
                        left[j] = (left[j] - rate[j] * (next_start - t)).max(0.0);
                    }
                    t = next_start;
                    // One that would end within rounding of the start ends
                    // there, not at no time.
                    for j in 0..pp {
                        if rate[j] > 0.0 && left[j] <= 1e-12 {
                            left[j] = 0.0;
                            end_s[j] = t;
                        }
                    }
                }
                _ => break,
            }
        }
        (0..pp).map(|j| end_s[j] - start_s[j]).collect()
    }
}

/// A simulated iteration and where its time goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulation {
    /// The timeline of every stage and replica.
    pub timeline: Timeline,
    /// The stage whose end (after its optimizer step) ends the iteration.
    pub critical_stage: usize,
    /// The replica of that stage whose last backward pass ends latest.
    pub critical_replica: usize,
    /// Forward and backward time of the critical stage (busy time, all its
    /// chunks).
    pub compute_s: f64,
    /// Time the critical stage waits before its last backward pass ends,
    /// minus the sends counted in `send_s`.
    pub bubble_s: f64,
    /// Pipeline sends on the critical path into the critical stage's last
    /// backward pass (at most the stage's waiting time).
    pub send_s: f64,
    /// Part of the critical stage's all-reduce after its last backward.
    pub allreduce_s: f64,
    /// Optimizer-step time of the critical stage, seconds.
    pub optimizer_s: f64,
}

fn check_len(what: &str, got: usize, want: usize) -> crate::Result<()> {
    if got != want {
        return Err(crate::AmpError::invalid(
            "schedule simulation",
            format!("{what} has {got} entries, expected {want}"),
        ));
    }
    Ok(())
}

/// Simulates one training iteration, event by event.
///
/// Every device stage of every replica pipeline runs its passes strictly in
/// the order of [`Schedule::passes`]. A pass starts when its stage is free
/// and its input is there: the forward of micro-batch i on (virtual) stage
/// c needs the forward of i on c - 1 and that activation's send; the
/// backward of i on c needs the backward of i on c + 1 and that gradient's
/// send (on the last virtual stage, its own forward of i). A send starts
/// when its pass ends and the link of its cut and direction is free: sends
/// on one cut and direction go one at a time, in the order they are made,
/// without occupying either stage's compute (unless `blocking_sends`).
/// Under an interleaved schedule the cuts are those between devices j and
/// j + 1 and the one from the last device back to the first (chunk k to
/// chunk k + 1).
///
/// In lockstep (DeepSpeed's `TrainSchedule`, 1F1B only) the pipeline runs
/// `2 (b + pp - 1)` steps. Stage j runs the forward of micro-batch i in step
/// `2 i + j` and its backward in step `2 i + 2 pp - 1 - j`, so neighbours
/// are out of phase: in each step, every stage j in a backward step pairs
/// with stage j + 1, which is in a forward step. The pair first meets (both
/// must have finished their previous step), then the gradient of the
/// backward j is about to run and the activation of the forward j has just
/// run cross the cut one after the other, then each stage runs its pass.
/// Sends hold both stages; nothing else shares their link.
///
/// Then each stage reduces its gradients over its replicas and steps the
/// optimizer. Without overlap the all-reduce starts when the stage's last
/// backward has ended on every replica. With overlap (bucketed all-reduce as
/// in PyTorch DDP), it starts when the last backward pass starts on the
/// last replica to reach it, runs for `allreduce_s`, and cannot end before
/// the last backward has ended plus `allreduce_tail_fraction` of
/// `allreduce_s` (the bucket produced last). Earlier micro-batches do not
/// overlap: their gradients are accumulated, not reduced. The optimizer
/// step starts after the all-reduce (or the last backward). With a barrier
/// before the all-reduce, every stage's all-reduce and optimizer step wait
/// for the last backward of every stage and replica (the wait counts as
/// bubble). The iteration ends when the last stage's optimizer step does.
pub fn simulate(spec: &IterationSpec) -> crate::Result<Simulation> {
    if spec.pipelines.is_empty() || spec.pipelines.iter().any(|p| p.num_micro_batches == 0) {
        return Err(crate::AmpError::invalid(
            "schedule simulation",
            "needs at least one pipeline and one micro-batch on each",
        ));
    }
    // The largest count: the timeline's, and the capacity of the tables.
    let b_max = spec
        .pipelines
        .iter()
        .map(|p| p.num_micro_batches)
        .max()
        .unwrap_or(0);
    let v = spec.schedule.virtual_stages();
    let nv = spec.pipelines[0].forward_s.len();
    if nv == 0 || !nv.is_multiple_of(v) {
        return Err(crate::AmpError::invalid(
            "schedule simulation",
            format!("a pipeline has {nv} stages, which is not a positive multiple of the {v} virtual stages per device"),
        ));
    }
    let pp = nv / v;
    if let Some(b) = spec
        .pipelines
        .iter()
        .map(|p| p.num_micro_batches)
        .find(|b| v > 1 && !b.is_multiple_of(pp))
    {
        return Err(crate::AmpError::invalid(
            "schedule simulation",
            format!("the interleaved schedule runs micro-batches in groups of pp = {pp}, but there are {b}; choose a micro-batch size that makes the number of micro-batches a multiple of {pp}"),
        ));
    }
    for p in &spec.pipelines {
        check_len("forward_s", p.forward_s.len(), nv)?;
        check_len("backward_s", p.backward_s.len(), nv)?;
        check_len("send_forward_s", p.send_forward_s.len(), nv - 1)?;
        check_len("send_backward_s", p.send_backward_s.len(), nv - 1)?;
    }
    check_len("allreduce_s", spec.allreduce_s.len(), pp)?;
    check_len("optimizer_s", spec.optimizer_s.len(), pp)?;
    if let Some(c) = &spec.crowded_allreduce {
        check_len("crowded_s", c.crowded_s.len(), pp)?;
        check_len("peers", c.peers.len(), pp)?;
        if c.peers.iter().flatten().any(|&k| k >= pp) {
            return Err(crate::AmpError::invalid(
                "schedule simulation",
                format!("a stage's all-reduce peers name a stage past the {pp} stages"),
            ));
        }
    }
    if spec.overlap_allreduce {
        check_len(
            "allreduce_tail_fraction",
            spec.allreduce_tail_fraction.len(),
            pp,
        )?;
    }
    if spec.barrier_before_allreduce && spec.overlap_allreduce {
        return Err(crate::AmpError::invalid(
            "schedule simulation",
            "an all-reduce after a barrier cannot overlap the last backward",
        ));
    }
    if spec.lockstep && spec.schedule != Schedule::OneFOneB {
        return Err(crate::AmpError::invalid(
            "schedule simulation",
            "the lockstep exchange is DeepSpeed's 1F1B; other schedules exchange with blocking sends",
        ));
    }
    // Pass orders per micro-batch count (one count unless uneven); a
    // lockstep pipeline follows DeepSpeed's steps instead.
    let mut orders_of: Vec<(usize, Vec<Vec<Pass>>)> = Vec::new();
    for p in spec.pipelines.iter().filter(|_| !spec.lockstep) {
        let b = p.num_micro_batches;
        if !orders_of.iter().any(|(k, _)| *k == b) {
            orders_of.push((b, (0..pp).map(|j| spec.schedule.passes(j, pp, b)).collect()));
        }
    }
    let chunk_of = |c: usize| (v > 1).then_some(c / pp);

    let mut events: Vec<Event> = Vec::with_capacity(spec.pipelines.len() * nv * b_max * 4);
    // Binding predecessor of every event, for the critical path.
    let mut preds: Vec<Option<usize>> = Vec::with_capacity(events.capacity());
    // Per replica and stage: (start, end, event) of the last backward.
    let mut last_bwd: Vec<Vec<(f64, f64, usize)>> = Vec::with_capacity(spec.pipelines.len());

    for (r, p) in spec.pipelines.iter().enumerate() {
        if spec.lockstep {
            last_bwd.push(lockstep_pipeline(p, r, &mut events, &mut preds));
            continue;
        }
        let b = p.num_micro_batches;
        let orders = &orders_of.iter().find(|(k, _)| *k == b).unwrap().1;
        let mut next = vec![0usize; pp];
        let mut free = vec![(0.0f64, None::<usize>); pp];
        // Links by the device cut they cross: cut j joins device j and
        // (j + 1) mod pp (the last one wraps around, used when v > 1).
        let mut link_f = vec![(0.0f64, None::<usize>); pp];
        let mut link_b = vec![(0.0f64, None::<usize>); pp];
        // Event index of: forward of (c, i); arrival of i's activation at c
        // (the send from c - 1); arrival of i's gradient at c (from c + 1).
        // Flat tables indexed by `c * b + i` (one allocation each: the
        // refinement simulates thousands of small pipelines).
        let mut fwd = vec![None::<usize>; nv * b];
        let mut act_in = vec![None::<usize>; nv * b];
        let mut grad_in = vec![None::<usize>; nv * b];
        let mut stage_last = vec![(0.0, 0.0, 0usize); pp];
        let mut progress = true;
        while progress {
            progress = false;
            for j in 0..pp {
                while let Some(&op) = orders[j].get(next[j]) {
                    let (is_fwd, i) = (op.forward, op.micro_batch);
                    let c = op.chunk * pp + j;
                    // The input this pass waits for: None = not there yet,
                    // Some(None) = nothing to wait for.
                    let dep: Option<Option<usize>> = if is_fwd {
                        if c == 0 {
                            Some(None)
                        } else {
                            act_in[c * b + i].map(Some)
                        }
                    } else if c == nv - 1 {
                        fwd[c * b + i].map(Some)
                    } else {
                        grad_in[c * b + i].map(Some)
                    };
                    let Some(dep) = dep else { break };
                    let dep_end = dep.map_or(0.0, |e| events[e].end_s);
                    let (start, pred) = if dep_end > free[j].0 {
                        (dep_end, dep)
                    } else {
                        (free[j].0, free[j].1.or(dep))
                    };
                    let dur = if is_fwd {
                        p.forward_s[c]
                    } else {
                        p.backward_s[c]
                    };
                    let idx = events.len();
                    events.push(Event {
                        stage: j,
                        replica: r,
                        micro_batch: Some(i),
                        chunk: chunk_of(c),
                        kind: if is_fwd {
                            EventKind::Forward
                        } else {
                            EventKind::Backward
                        },
                        start_s: start,
                        end_s: start + dur,
                    });
                    preds.push(pred);
                    free[j] = (start + dur, Some(idx));
                    next[j] += 1;
                    progress = true;
                    // Its send, if the pass feeds another stage: (cut,
                    // link, duration, kind, virtual stage sent from).
                    let send = if is_fwd && c + 1 < nv {
                        Some((
                            j,
                            &mut link_f[j],
                            p.send_forward_s[c],
                            EventKind::SendForward,
                        ))
                    } else if !is_fwd && c > 0 {
                        let cut = (c - 1) % pp;
                        Some((
                            cut,
                            &mut link_b[cut],
                            p.send_backward_s[c - 1],
                            EventKind::SendBackward,
                        ))
                    } else {
                        None
                    };
                    if is_fwd {
                        fwd[c * b + i] = Some(idx);
                    } else {
                        stage_last[j] = (start, start + dur, idx);
                    }
                    if let Some((cut, link, dur, kind)) = send {
                        let ready = start
                            + if is_fwd {
                                p.forward_s[c]
                            } else {
                                p.backward_s[c]
                            };
                        let (s, pred) = if link.0 > ready {
                            (link.0, link.1)
                        } else {
                            (ready, Some(idx))
                        };
                        let sidx = events.len();
                        events.push(Event {
                            stage: cut,
                            replica: r,
                            micro_batch: Some(i),
                            chunk: chunk_of(c),
                            kind,
                            start_s: s,
                            end_s: s + dur,
                        });
                        preds.push(pred);
                        *link = (s + dur, Some(sidx));
                        if spec.blocking_sends {
                            free[j] = (s + dur, Some(sidx));
                        }
                        if is_fwd {
                            act_in[(c + 1) * b + i] = Some(sidx);
                        } else {
                            grad_in[(c - 1) * b + i] = Some(sidx);
                        }
                    }
                }
            }
        }
        if (0..pp).any(|j| next[j] != orders[j].len()) {
            return Err(crate::AmpError::invalid(
                "schedule simulation",
                "the schedule deadlocked; this is a bug in amp, please report it",
            ));
        }
        last_bwd.push(stage_last);
    }

    // Gradient all-reduce and optimizer step of every stage.
    let mut stage_end = vec![0.0f64; pp];
    let mut bwd_end = vec![0.0f64; pp];
    let mut ar_end = vec![0.0f64; pp];
    // The barrier, if any: the last backward of all.
    let barrier_end = last_bwd
        .iter()
        .flat_map(|s| s.iter().map(|x| x.1))
        .fold(0.0, f64::max);
    for j in 0..pp {
        bwd_end[j] = last_bwd.iter().map(|s| s[j].1).fold(0.0, f64::max);
    }
    let end_of = |j: usize| {
        if spec.barrier_before_allreduce {
            barrier_end
        } else {
            bwd_end[j]
        }
    };
    let last_start_of = |j: usize| last_bwd.iter().map(|s| s[j].0).fold(0.0, f64::max);
    // Each stage's all-reduce as long as it takes beside those it meets at
    // shared NICs. Not where it overlaps the last backward, whose buckets
    // leave through the pass and whose tail is what the others meet: the
    // crowding of such reductions is not priced.
    let allreduce_s = match &spec.crowded_allreduce {
        Some(c) if !spec.overlap_allreduce => {
            let start: Vec<f64> = (0..pp).map(end_of).collect();
            c.durations_s(&start, &spec.allreduce_s)
        }
        _ => spec.allreduce_s.clone(),
    };
    for j in 0..pp {
        let end = end_of(j);
        let last_start = last_start_of(j);
        let ar = allreduce_s[j];
        let mut t = end;
        if ar > 0.0 {
            let (start, finish) = if spec.overlap_allreduce {
                let tail = spec.allreduce_tail_fraction[j].clamp(0.0, 1.0);
                (last_start, (last_start + ar).max(end + tail * ar))
            } else {
                (end, end + ar)
            };
            events.push(Event {
                stage: j,
                replica: 0,
                micro_batch: None,
                chunk: None,
                kind: EventKind::AllReduce,
                start_s: start,
                end_s: finish,
            });
            preds.push(None);
            t = finish.max(end);
        }
        ar_end[j] = t;
        let opt = spec.optimizer_s[j];
        if opt > 0.0 {
            events.push(Event {
                stage: j,
                replica: 0,
                micro_batch: None,
                chunk: None,
                kind: EventKind::Optimizer,
                start_s: t,
                end_s: t + opt,
            });
            preds.push(None);
        }
        stage_end[j] = t + opt;
    }
    let iteration_s = stage_end.iter().copied().fold(0.0, f64::max);
    let cs = (0..pp).find(|&j| stage_end[j] == iteration_s).unwrap_or(0);
    let cr = (0..last_bwd.len())
        .find(|&r| last_bwd[r][cs].1 == bwd_end[cs])
        .unwrap_or(0);
    let p = &spec.pipelines[cr];
    let compute_s = p.num_micro_batches as f64
        * (0..v)
            .map(|k| p.forward_s[k * pp + cs] + p.backward_s[k * pp + cs])
            .sum::<f64>();
    let idle = (bwd_end[cs] - compute_s).max(0.0);
    // Sends on the critical path into the stage's last backward.
    let mut sends = 0.0;
    let mut at = Some(last_bwd[cr][cs].2);
    while let Some(e) = at {
        if matches!(
            events[e].kind,
            EventKind::SendForward | EventKind::SendBackward
        ) {
            sends += events[e].end_s - events[e].start_s;
        }
        at = preds[e];
    }
    let send_s = sends.min(idle);
    // Waiting at the barrier after the last backward (0 without one).
    let barrier_wait = if spec.barrier_before_allreduce {
        barrier_end - bwd_end[cs]
    } else {
        0.0
    };
    Ok(Simulation {
        timeline: Timeline {
            num_stages: pp,
            num_micro_batches: b_max,
            events,
            iteration_s,
        },
        critical_stage: cs,
        critical_replica: cr,
        compute_s,
        bubble_s: idle - send_s + barrier_wait,
        send_s,
        allreduce_s: ar_end[cs] - bwd_end[cs] - barrier_wait,
        optimizer_s: spec.optimizer_s[cs],
    })
}

/// One replica's pipeline in lockstep (see [`simulate`]): pushes its events
/// and their binding predecessors, and returns each stage's last backward
/// as (start, end, event).
fn lockstep_pipeline(
    p: &PipelineTimes,
    replica: usize,
    events: &mut Vec<Event>,
    preds: &mut Vec<Option<usize>>,
) -> Vec<(f64, f64, usize)> {
    let pp = p.forward_s.len();
    let b = p.num_micro_batches as i64;
    let steps = 2 * (b + pp as i64 - 1);
    // Per stage: when it is free and the event that freed it.
    let mut free = vec![(0.0f64, None::<usize>); pp];
    let mut last = vec![(0.0, 0.0, 0usize); pp];
    let valid = |i: i64| (0..b).contains(&i);
    // Micro-batch of stage j's pass in step t, and whether it is a forward
    // (DeepSpeed's `_step_to_micro_batch`); invalid ids are idle steps.
    let pass_of = |t: i64, j: usize| -> (i64, bool) {
        let j = j as i64;
        if (t - j) % 2 == 0 {
            ((t - j) / 2, true)
        } else {
            ((t - 2 * pp as i64 + 1 + j) / 2, false)
        }
    };
    let mut push = |e: Event, pred: Option<usize>| {
        events.push(e);
        preds.push(pred);
        events.len() - 1
    };
    for t in 0..steps {
        // Exchanges: stage j in a backward step with stage j + 1.
        for j in 0..pp.saturating_sub(1) {
            let (grad, forward) = pass_of(t, j);
            if forward {
                continue;
            }
            // The activation of j's previous step, a forward.
            let act = pass_of(t - 1, j).0;
            if !valid(grad) && !valid(act) {
                continue;
            }
            let (mut at, mut pred) = if free[j + 1].0 > free[j].0 {
                free[j + 1]
            } else {
                free[j]
            };
            for (i, kind, dur) in [
                (grad, EventKind::SendBackward, p.send_backward_s[j]),
                (act, EventKind::SendForward, p.send_forward_s[j]),
            ] {
                if !valid(i) {
                    continue;
                }
                let e = Event {
                    stage: j,
                    replica,
                    micro_batch: Some(i as usize),
                    chunk: None,
                    kind,
                    start_s: at,
                    end_s: at + dur,
                };
                let idx = push(e, pred);
                (at, pred) = (at + dur, Some(idx));
            }
            free[j] = (at, pred);
            free[j + 1] = (at, pred);
        }
        // Passes.
        for j in 0..pp {
            let (i, forward) = pass_of(t, j);
            if !valid(i) {
                continue;
            }
            let dur = if forward {
                p.forward_s[j]
            } else {
                p.backward_s[j]
            };
            let start = free[j].0;
            let e = Event {
                stage: j,
                replica,
                micro_batch: Some(i as usize),
                chunk: None,
                kind: if forward {
                    EventKind::Forward
                } else {
                    EventKind::Backward
                },
                start_s: start,
                end_s: start + dur,
            };
            let idx = push(e, free[j].1);
            free[j] = (start + dur, Some(idx));
            if !forward {
                last[j] = (start, start + dur, idx);
            }
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two all-reduces through one NIC: each alone 1 s, together 2 s. They
    /// share it while both run, whenever they start.
    #[test]
    fn crowded_all_reduces_slow_each_other_while_they_overlap() {
        let c = CrowdedAllReduce {
            crowded_s: vec![2.0, 2.0],
            peers: vec![vec![1], vec![0]],
        };
        let alone = [1.0, 1.0];
        let close = |a: &[f64], b: &[f64]| {
            assert!(
                a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12),
                "{a:?} != {b:?}"
            );
        };
        close(&c.durations_s(&[0.0, 0.0], &alone), &[2.0, 2.0]);
        // Half of the first alone, then both at half speed until it ends
        // at 1.5 s; the second has half left, alone.
        close(&c.durations_s(&[0.0, 0.5], &alone), &[1.5, 1.5]);
        close(&c.durations_s(&[0.0, 1.0], &alone), &[1.0, 1.0]);
        close(&c.durations_s(&[3.0, 0.0], &alone), &[1.0, 1.0]);
        // A stage without an all-reduce takes none, and slows no one.
        close(&c.durations_s(&[0.0, 0.0], &[1.0, 0.0]), &[1.0, 0.0]);
        // One that would end within rounding of another's start still
        // takes its time (it took none before the review of 2026-12-07).
        let a = 2.5160502965249965;
        let near = CrowdedAllReduce {
            crowded_s: vec![2.0 * a, 2.0],
            peers: vec![vec![1], vec![0]],
        };
        let got = near.durations_s(&[0.19822625391562432, 2.7142765504406206], &[a, 1.0]);
        assert!(got[0] >= a - 1e-9 && got[1] >= 1.0 - 1e-9, "{got:?}");
        // An all-reduce without a finite price is left as it is.
        let d = c.durations_s(&[0.0, 0.0], &[f64::INFINITY, 1.0]);
        assert!(d[0].is_infinite() && d[1] == 1.0, "{d:?}");
        // Three stages, the third alone: its peers' crowding is theirs.
        let three = CrowdedAllReduce {
            crowded_s: vec![3.0, 3.0, 1.0],
            peers: vec![vec![1], vec![0], vec![]],
        };
        close(
            &three.durations_s(&[0.0, 0.0, 0.0], &[1.0, 1.0, 1.0]),
            &[3.0, 3.0, 1.0],
        );
        // In the simulation: after a barrier both start together.
        let mut s = long_second_allreduce();
        s.allreduce_s = vec![1.0, 1.0];
        s.barrier_before_allreduce = true;
        let base = simulate(&s).unwrap().timeline.iteration_s;
        s.crowded_allreduce = Some(c.clone());
        let crowded = simulate(&s).unwrap();
        assert!((crowded.timeline.iteration_s - base - 1.0).abs() < 1e-12);
        assert!((crowded.allreduce_s - 2.0).abs() < 1e-12);
        s.crowded_allreduce = Some(CrowdedAllReduce {
            crowded_s: vec![2.0],
            peers: vec![vec![1]],
        });
        assert!(simulate(&s).is_err());
    }
    use proptest::prelude::*;

    fn spec(
        f: &[f64],
        bw: &[f64],
        sf: &[f64],
        sb: &[f64],
        b: usize,
        schedule: Schedule,
    ) -> IterationSpec {
        let pp = f.len();
        IterationSpec {
            pipelines: vec![PipelineTimes {
                forward_s: f.to_vec(),
                backward_s: bw.to_vec(),
                send_forward_s: sf.to_vec(),
                send_backward_s: sb.to_vec(),
                num_micro_batches: b,
            }],
            schedule,
            allreduce_s: vec![0.0; pp],
            optimizer_s: vec![0.0; pp],
            overlap_allreduce: false,
            allreduce_tail_fraction: vec![0.0; pp],
            blocking_sends: false,
            lockstep: false,
            barrier_before_allreduce: false,
            crowded_allreduce: None,
        }
    }

    fn makespan(s: &IterationSpec) -> f64 {
        simulate(s).unwrap().timeline.iteration_s
    }

    #[test]
    fn one_f_one_b_order() {
        let s = Schedule::OneFOneB;
        assert_eq!(
            s.stage_order(0, 2, 3),
            vec![
                (true, 0),
                (true, 1),
                (false, 0),
                (true, 2),
                (false, 1),
                (false, 2)
            ]
        );
        assert_eq!(
            s.stage_order(1, 2, 3),
            vec![
                (true, 0),
                (false, 0),
                (true, 1),
                (false, 1),
                (true, 2),
                (false, 2)
            ]
        );
        // Warm-up is capped by the number of micro-batches.
        assert_eq!(s.stage_order(0, 4, 1), vec![(true, 0), (false, 0)]);
        assert_eq!(
            Schedule::GPipe.stage_order(0, 2, 2),
            vec![(true, 0), (true, 1), (false, 0), (false, 1)]
        );
    }

    /// pp = 2, B = 3, stage 0: forward 1, backward 2; stage 1: forward 2,
    /// backward 4; free sends. 1F1B by hand:
    /// s0: F0 [0,1] F1 [1,2]; s1: F0 [1,3] B0 [3,7];
    /// s0: B0 [7,9]; s1: F1 [7,9] B1 [9,13]; s0: F2 [9,10] B1 [13,15];
    /// s1: F2 [13,15] B2 [15,19]; s0: B2 [19,21]. Makespan 21 =
    /// (B - 1) x 6 + (3 + 6), the closed form.
    /// GPipe: s0 F [0,3]; s1 F0 [1,3] F1 [3,5] F2 [5,7] B0 [7,11] B1 [11,15]
    /// B2 [15,19]; s0 B0 [11,13] B1 [15,17] B2 [19,21]: also 21.
    #[test]
    fn two_stages_of_different_speeds() {
        let s = spec(
            &[1.0, 2.0],
            &[2.0, 4.0],
            &[0.0],
            &[0.0],
            3,
            Schedule::OneFOneB,
        );
        let sim = simulate(&s).unwrap();
        assert_eq!(sim.timeline.iteration_s, 21.0);
        let ends: Vec<(EventKind, usize, usize, f64)> = sim
            .timeline
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Forward | EventKind::Backward))
            .map(|e| (e.kind, e.stage, e.micro_batch.unwrap(), e.end_s))
            .collect();
        assert!(ends.contains(&(EventKind::Forward, 1, 1, 9.0)));
        assert!(ends.contains(&(EventKind::Backward, 0, 1, 15.0)));
        assert!(ends.contains(&(EventKind::Forward, 0, 2, 10.0)));
        // Stage 0 ends last: busy 3 x 3 = 9, waiting 12.
        assert_eq!(sim.critical_stage, 0);
        assert_eq!(sim.compute_s, 9.0);
        assert_eq!(sim.bubble_s, 12.0);
        // The stage that ends the iteration is not the one that works most:
        // stage 1 runs 3 x 6 = 18 of the 21.
        let work = sim.timeline.stage_work();
        assert_eq!(
            work.iter()
                .map(|w| (w.passes_s, w.end_s))
                .collect::<Vec<_>>(),
            vec![(9.0, 21.0), (18.0, 19.0)]
        );
        assert_eq!(ending_stage(&work), Some(0));
        assert_eq!(busiest_stage(&work), Some(1));
        assert_eq!(ending_stage(&Timeline::default().stage_work()), None);
        assert_eq!(busiest_stage(&Timeline::default().stage_work()), None);
        let g = spec(&[1.0, 2.0], &[2.0, 4.0], &[0.0], &[0.0], 3, Schedule::GPipe);
        assert_eq!(makespan(&g), 21.0);
    }

    /// Slow first stage: forward 2 / backward 4 on stage 0, 1 / 2 on
    /// stage 1, B = 3.
    /// 1F1B: s0 F0 [0,2] F1 [2,4]; s1 F0 [2,3] B0 [3,5]; s0 B0 [5,9] F2
    /// [9,11]; s1 F1 [5,6] B1 [6,8] F2 [11,12] B2 [12,14]; s0 B1 [11,15]
    /// B2 [15,19]: 19, less than the closed form's 2 x 6 + 9 = 21.
    /// GPipe: s0 F [0,6]; s1 F2 [6,7], B0 [7,9] B1 [9,11] B2 [11,13]; s0 B0
    /// [9,13] B1 [13,17] B2 [17,21]: 21.
    #[test]
    fn gpipe_and_1f1b_differ() {
        assert_eq!(
            makespan(&spec(
                &[2.0, 1.0],
                &[4.0, 2.0],
                &[0.0],
                &[0.0],
                3,
                Schedule::OneFOneB
            )),
            19.0
        );
        assert_eq!(
            makespan(&spec(
                &[2.0, 1.0],
                &[4.0, 2.0],
                &[0.0],
                &[0.0],
                3,
                Schedule::GPipe
            )),
            21.0
        );
    }

    /// pp = 2, B = 2, every pass forward 1 / backward 2, sends 0.5 each way.
    /// s0 F0 [0,1] (send [1,1.5]) F1 [1,2]; s1 F0 [1.5,2.5] B0 [2.5,4.5]
    /// (send [4.5,5]) F1 [4.5,5.5] B1 [5.5,7.5] (send [7.5,8]); s0 B0 [5,7]
    /// B1 [8,10]. Makespan 10 = (B - 1) x 3 + 6 + 1.
    #[test]
    fn sends_delay_the_next_stage() {
        let s = spec(
            &[1.0, 1.0],
            &[2.0, 2.0],
            &[0.5],
            &[0.5],
            2,
            Schedule::OneFOneB,
        );
        let sim = simulate(&s).unwrap();
        assert_eq!(sim.timeline.iteration_s, 10.0);
        let sends = sim
            .timeline
            .events
            .iter()
            .filter(|e| e.kind == EventKind::SendForward)
            .count();
        assert_eq!(sends, 2);
        // Stage 0 ends last: busy 6, waiting 4, of which the critical path
        // B1 (s0) <- send [7.5,8] <- B1 (s1) <- F1 (s1) <- B0 (s1) <- send
        // [1,1.5] <- F0 (s0) holds sends of 1 in total.
        assert_eq!(sim.critical_stage, 0);
        assert_eq!(sim.send_s, 1.0);
        assert_eq!(sim.bubble_s, 3.0);
    }

    /// DeepSpeed's lockstep exchange, step by step (see [`simulate`]).
    #[test]
    fn lockstep_by_hand() {
        // Two stages, forward 1, backward 2, each transfer 0.5, two
        // micro-batches; DeepSpeed's six steps:
        // 0: stage 0 F0 [0, 1]
        // 1: they meet at 1, activation 0 [1, 1.5]; stage 1 F0 [1.5, 2.5]
        // 2: stage 0 F1 [1.5, 2.5]; stage 1 B0 [2.5, 4.5]
        // 3: they meet at 4.5, gradient 0 [4.5, 5], activation 1 [5, 5.5];
        //    stage 0 B0 [5.5, 7.5], stage 1 F1 [5.5, 6.5]
        // 4: stage 1 B1 [6.5, 8.5]
        // 5: they meet at 8.5, gradient 1 [8.5, 9]; stage 0 B1 [9, 11]
        // With blocking sends stage 1 need not wait for stage 0 to take
        // its gradient: 10.5.
        let mut s = spec(
            &[1.0, 1.0],
            &[2.0, 2.0],
            &[0.5],
            &[0.5],
            2,
            Schedule::OneFOneB,
        );
        s.blocking_sends = true;
        assert_eq!(makespan(&s), 10.5);
        s.lockstep = true;
        let sim = simulate(&s).unwrap();
        assert_eq!(sim.timeline.iteration_s, 11.0);
        let at = |stage: usize, m: usize, kind: EventKind| {
            let e = sim
                .timeline
                .events
                .iter()
                .find(|e| e.stage == stage && e.micro_batch == Some(m) && e.kind == kind)
                .unwrap();
            (e.start_s, e.end_s)
        };
        assert_eq!(at(0, 1, EventKind::SendForward), (5.0, 5.5));
        assert_eq!(at(0, 0, EventKind::SendBackward), (4.5, 5.0));
        assert_eq!(at(1, 1, EventKind::Forward), (5.5, 6.5));
        assert_eq!(at(0, 1, EventKind::Backward), (9.0, 11.0));
        // Stage 0 is critical: 6 of compute; on its path every transfer
        // (activations 0 and 1, gradients 0 and 1), 3 of waiting besides.
        assert_eq!(sim.critical_stage, 0);
        assert_eq!((sim.compute_s, sim.send_s, sim.bubble_s), (6.0, 2.0, 3.0));
        // Lockstep is DeepSpeed's 1F1B only.
        s.schedule = Schedule::GPipe;
        assert!(simulate(&s).is_err());
    }

    /// A send occupies its link: with forward sends of 3 and forward passes
    /// of 1, the second activation waits for the first to clear the link.
    /// s0 F0 [0,1] send [1,4], F1 [1,2] send [4,7]; s1 F0 [4,5] B0 [5,6]
    /// F1 [7,8] B1 [8,9]; s0 B0 [6,7] B1 [9,10]. Makespan 10.
    #[test]
    fn sends_on_one_link_queue() {
        let s = spec(
            &[1.0, 1.0],
            &[1.0, 1.0],
            &[3.0],
            &[0.0],
            2,
            Schedule::OneFOneB,
        );
        let sim = simulate(&s).unwrap();
        assert_eq!(sim.timeline.iteration_s, 10.0);
        let second = sim
            .timeline
            .events
            .iter()
            .find(|e| e.kind == EventKind::SendForward && e.micro_batch == Some(1))
            .unwrap();
        assert_eq!((second.start_s, second.end_s), (4.0, 7.0));
    }

    #[test]
    fn single_micro_batch_and_single_stage() {
        // B = 1: one pass through and back: 1 + 0.5 + 2 + 4 + 0.5 + 2.
        assert_eq!(
            makespan(&spec(
                &[1.0, 2.0],
                &[2.0, 4.0],
                &[0.5],
                &[0.5],
                1,
                Schedule::OneFOneB
            )),
            10.0
        );
        // pp = 1: B x (f + b).
        assert_eq!(
            makespan(&spec(&[1.0], &[2.0], &[], &[], 4, Schedule::OneFOneB)),
            12.0
        );
        assert_eq!(
            makespan(&spec(&[1.0], &[2.0], &[], &[], 4, Schedule::GPipe)),
            12.0
        );
    }

    /// Two stages, two micro-batches, forward 1 and backward 2, free sends;
    /// stage 1: F0 [1,2] B0 [2,4] F1 [4,5] B1 [5,7]; stage 0 ends at 9.
    /// Stage 1's all-reduce (5) is longer than stage 0's (1); optimizer
    /// steps 0.5.
    fn long_second_allreduce() -> IterationSpec {
        let mut s = spec(
            &[1.0, 1.0],
            &[2.0, 2.0],
            &[0.0],
            &[0.0],
            2,
            Schedule::OneFOneB,
        );
        s.allreduce_s = vec![1.0, 5.0];
        s.optimizer_s = vec![0.5, 0.5];
        s
    }

    /// When `sim`'s events of `kind` start, in timeline order.
    fn starts_of(sim: &Simulation, kind: EventKind) -> Vec<f64> {
        sim.timeline
            .events
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.start_s)
            .collect()
    }

    #[test]
    fn a_barrier_holds_every_allreduce_until_the_last_backward_of_all() {
        let mut s = long_second_allreduce();
        // Stage 1's last backward ends at 7, stage 0's at 9.
        s.barrier_before_allreduce = true;
        let sim = simulate(&s).unwrap();
        assert_eq!(starts_of(&sim, EventKind::AllReduce), vec![9.0, 9.0]);
        assert_eq!(sim.timeline.iteration_s, 9.0 + 5.0 + 0.5);
        assert_eq!(sim.critical_stage, 1);
        // The 2 s at the barrier are idle time, not all-reduce.
        assert_eq!(sim.allreduce_s, 5.0);
        let total = sim.compute_s + sim.bubble_s + sim.send_s + sim.allreduce_s + sim.optimizer_s;
        assert!((total - sim.timeline.iteration_s).abs() < 1e-12);
        // Without data parallelism the optimizer steps wait too.
        s.allreduce_s = vec![0.0, 0.0];
        let sim = simulate(&s).unwrap();
        assert_eq!(sim.timeline.iteration_s, 9.5);
        assert_eq!(starts_of(&sim, EventKind::Optimizer), vec![9.0, 9.0]);
        // A reduction after a barrier cannot overlap the backward.
        s.overlap_allreduce = true;
        s.allreduce_tail_fraction = vec![0.0, 0.0];
        assert!(simulate(&s)
            .unwrap_err()
            .to_string()
            .contains("cannot overlap"));
    }

    #[test]
    fn allreduce_and_optimizer_follow_the_last_backward() {
        let mut s = long_second_allreduce();
        let sim = simulate(&s).unwrap();
        let b1 = sim
            .timeline
            .events
            .iter()
            .filter(|e| e.stage == 1 && e.kind == EventKind::Backward)
            .map(|e| e.end_s)
            .fold(0.0, f64::max);
        assert_eq!(b1, 7.0);
        assert_eq!(sim.timeline.iteration_s, 7.0 + 5.0 + 0.5);
        assert_eq!(sim.critical_stage, 1);
        assert_eq!(sim.allreduce_s, 5.0);
        let total = sim.compute_s + sim.bubble_s + sim.send_s + sim.allreduce_s + sim.optimizer_s;
        assert!((total - sim.timeline.iteration_s).abs() < 1e-12);
        // Overlapped: starts with the last backward (at 5), ends at
        // max(5 + 5, 7 + 0.2 x 5) = 10.
        s.overlap_allreduce = true;
        s.allreduce_tail_fraction = vec![0.2, 0.2];
        let sim = simulate(&s).unwrap();
        assert_eq!(sim.timeline.iteration_s, 10.0 + 0.5);
        assert_eq!(sim.allreduce_s, 3.0);
    }

    #[test]
    fn replicas_wait_for_the_slowest_before_the_allreduce() {
        let mut s = spec(&[1.0], &[1.0], &[], &[], 2, Schedule::OneFOneB);
        let mut slow = s.pipelines[0].clone();
        slow.forward_s = vec![2.0];
        s.pipelines.push(slow);
        s.allreduce_s = vec![1.0];
        let sim = simulate(&s).unwrap();
        // Slow replica: 2 x (2 + 1) = 6, then the all-reduce.
        assert_eq!(sim.timeline.iteration_s, 7.0);
        assert_eq!(sim.critical_replica, 1);
    }

    #[test]
    fn bad_lengths_are_errors() {
        let s = spec(&[1.0, 1.0], &[1.0], &[0.0], &[0.0], 2, Schedule::OneFOneB);
        assert!(simulate(&s).unwrap_err().to_string().contains("backward_s"));
    }

    /// Megatron-LM's interleaved order, pp = 2, v = 2, B = 4 (by hand from
    /// schedules.py): device 0 warms up (2 - 0 - 1) x 2 + (2 - 1) x 2 = 4
    /// chunk forwards, device 1 warms up 2.
    #[test]
    fn interleaved_order() {
        let s = Schedule::Interleaved { virtual_stages: 2 };
        let show = |j: usize| -> Vec<(char, usize, usize)> {
            s.passes(j, 2, 4)
                .into_iter()
                .map(|p| (if p.forward { 'F' } else { 'B' }, p.chunk, p.micro_batch))
                .collect()
        };
        let (f, b) = ('F', 'B');
        assert_eq!(
            show(0),
            vec![
                (f, 0, 0),
                (f, 0, 1),
                (f, 1, 0),
                (f, 1, 1),
                (f, 0, 2),
                (b, 1, 0),
                (f, 0, 3),
                (b, 1, 1),
                (f, 1, 2),
                (b, 0, 0),
                (f, 1, 3),
                (b, 0, 1),
                (b, 1, 2),
                (b, 1, 3),
                (b, 0, 2),
                (b, 0, 3),
            ]
        );
        assert_eq!(
            show(1),
            vec![
                (f, 0, 0),
                (f, 0, 1),
                (f, 1, 0),
                (b, 1, 0),
                (f, 1, 1),
                (b, 1, 1),
                (f, 0, 2),
                (b, 0, 0),
                (f, 0, 3),
                (b, 0, 1),
                (f, 1, 2),
                (b, 1, 2),
                (f, 1, 3),
                (b, 1, 3),
                (b, 0, 2),
                (b, 0, 3),
            ]
        );
        // One chunk: plain 1F1B.
        assert_eq!(
            Schedule::Interleaved { virtual_stages: 1 }.stage_order(0, 2, 3),
            Schedule::OneFOneB.stage_order(0, 2, 3)
        );
        assert_eq!(s.virtual_stages(), 2);
        assert_eq!(Schedule::GPipe.virtual_stages(), 1);
    }

    /// The same case simulated, every chunk forward 1 and backward 2, free
    /// sends. By hand (virtual stages c0 = d0 chunk 0, c1 = d1 chunk 0,
    /// c2 = d0 chunk 1, c3 = d1 chunk 1):
    /// d0: F(c0,0) [0,1] F(c0,1) [1,2] F(c2,0) [2,3] F(c2,1) [3,4]
    ///     F(c0,2) [4,5] B(c2,0) [6,8] F(c0,3) [8,9] B(c2,1) [9,11]
    ///     F(c2,2) [11,12] B(c0,0) [12,14] F(c2,3) [14,15] B(c0,1) [15,17]
    ///     B(c2,2) [18,20] B(c2,3) [21,23] B(c0,2) [23,25] B(c0,3) [25,27];
    /// d1: F(c1,0) [1,2] F(c1,1) [2,3] F(c3,0) [3,4] B(c3,0) [4,6]
    ///     F(c3,1) [6,7] B(c3,1) [7,9] F(c1,2) [9,10] B(c1,0) [10,12]
    ///     F(c1,3) [12,13] B(c1,1) [13,15] F(c3,2) [15,16] B(c3,2) [16,18]
    ///     F(c3,3) [18,19] B(c3,3) [19,21] B(c1,2) [21,23] B(c1,3) [23,25].
    /// Makespan 27 = B v (f + b) + (pp - 1)(f + b) = 24 + 3, against 30 for
    /// plain 1F1B with the two chunks merged (f = 2, b = 4).
    #[test]
    fn interleaved_by_hand() {
        let s = spec(
            &[1.0; 4],
            &[2.0; 4],
            &[0.0; 3],
            &[0.0; 3],
            4,
            Schedule::Interleaved { virtual_stages: 2 },
        );
        let s = IterationSpec {
            allreduce_s: vec![0.0; 2],
            optimizer_s: vec![0.0; 2],
            allreduce_tail_fraction: vec![0.0; 2],
            ..s
        };
        let sim = simulate(&s).unwrap();
        assert_eq!(sim.timeline.iteration_s, 27.0);
        let at = |stage: usize, chunk: usize, m: usize, kind: EventKind| {
            let e = sim
                .timeline
                .events
                .iter()
                .find(|e| {
                    e.stage == stage
                        && e.chunk == Some(chunk)
                        && e.micro_batch == Some(m)
                        && e.kind == kind
                })
                .unwrap();
            (e.start_s, e.end_s)
        };
        assert_eq!(at(0, 1, 0, EventKind::Backward), (6.0, 8.0));
        assert_eq!(at(1, 0, 2, EventKind::Forward), (9.0, 10.0));
        assert_eq!(at(1, 1, 3, EventKind::Forward), (18.0, 19.0));
        assert_eq!(at(0, 0, 3, EventKind::Backward), (25.0, 27.0));
        assert_eq!(sim.critical_stage, 0);
        assert_eq!(sim.compute_s, 24.0);
        assert_eq!(sim.bubble_s, 3.0);
        let merged = spec(&[2.0; 2], &[4.0; 2], &[0.0], &[0.0], 4, Schedule::OneFOneB);
        assert_eq!(makespan(&merged), 30.0);
        // Sends: 3 virtual cuts x 4 micro-batches each way; the wrap-around
        // cut (device 1 chunk 0 -> device 0 chunk 1) is cut 1.
        let mut s2 = s.clone();
        s2.pipelines[0].send_forward_s = vec![0.5; 3];
        s2.pipelines[0].send_backward_s = vec![0.5; 3];
        let sim2 = simulate(&s2).unwrap();
        let sends: Vec<&Event> = sim2
            .timeline
            .events
            .iter()
            .filter(|e| e.kind == EventKind::SendForward)
            .collect();
        assert_eq!(sends.len(), 12);
        assert_eq!(
            sends
                .iter()
                .filter(|e| e.stage == 1 && e.chunk == Some(0))
                .count(),
            4
        );
        assert!(sim2.timeline.iteration_s > 27.0);
        // B not a multiple of pp: a clear error.
        let mut bad = s.clone();
        bad.pipelines[0].num_micro_batches = 3;
        let e = simulate(&bad).unwrap_err().to_string();
        assert!(e.contains("multiple of 2"), "{e}");
    }

    /// Replicas with different micro-batch counts run their own schedules
    /// until the all-reduce: the iteration is the longer one's.
    #[test]
    fn replicas_run_their_own_micro_batch_counts() {
        let one = |b| {
            spec(
                &[1.0, 2.0],
                &[2.0, 4.0],
                &[0.5],
                &[0.5],
                b,
                Schedule::OneFOneB,
            )
        };
        let mut both = one(2);
        both.pipelines.push(one(5).pipelines[0].clone());
        let sim = simulate(&both).unwrap();
        assert_eq!(sim.timeline.num_micro_batches, 5);
        assert_eq!(sim.timeline.iteration_s, makespan(&one(5)));
        assert_eq!(sim.critical_replica, 1);
        let count = |r: usize| {
            sim.timeline
                .events
                .iter()
                .filter(|e| e.replica == r && e.kind == EventKind::Backward)
                .count()
        };
        assert_eq!((count(0), count(1)), (4, 10));
        both.pipelines[0].num_micro_batches = 0;
        assert!(simulate(&both).is_err());
    }

    fn arb_pipeline() -> impl Strategy<Value = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, usize)> {
        (1usize..5, 1usize..7).prop_flat_map(|(pp, b)| {
            (
                prop::collection::vec(0.1f64..3.0, pp),
                prop::collection::vec(0.1f64..5.0, pp),
                prop::collection::vec(0.0f64..2.0, pp - 1),
                prop::collection::vec(0.0f64..2.0, pp - 1),
                Just(b),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Lower bound: stage j cannot start before micro-batch 0 reaches
        /// it, must do B x (f_j + b_j) of work, and its last gradient must
        /// then travel back to stage 0. Upper bound: everything serial.
        /// Uniform stages without sends give the closed form exactly.
        #[test]
        fn makespan_within_bounds((f, bw, sf, sb, b) in arb_pipeline()) {
            let pp = f.len();
            for schedule in [Schedule::OneFOneB, Schedule::GPipe] {
                let sim = simulate(&spec(&f, &bw, &sf, &sb, b, schedule)).unwrap();
                let t = sim.timeline.iteration_s;
                let mut lower: f64 = 0.0;
                for j in 0..pp {
                    let before: f64 = (0..j).map(|i| f[i] + sf[i] + bw[i] + sb[i]).sum();
                    lower = lower.max(before + b as f64 * (f[j] + bw[j]));
                }
                let serial: f64 = b as f64 * (f.iter().sum::<f64>() + bw.iter().sum::<f64>() + sf.iter().sum::<f64>() + sb.iter().sum::<f64>());
                prop_assert!(t >= lower - 1e-9, "{t} < {lower}");
                prop_assert!(t <= serial + 1e-9, "{t} > {serial}");
                let parts = sim.compute_s + sim.bubble_s + sim.send_s + sim.allreduce_s + sim.optimizer_s;
                prop_assert!((parts - t).abs() < 1e-9);
                // The timeline names the stage the breakdown describes, and
                // that stage's passes are the breakdown's compute.
                let work = sim.timeline.stage_work();
                prop_assert_eq!(ending_stage(&work), Some(sim.critical_stage));
                prop_assert!((work[sim.critical_stage].passes_s - sim.compute_s).abs() < 1e-9);
                for j in 0..pp {
                    prop_assert!((work[j].passes_s - b as f64 * (f[j] + bw[j])).abs() < 1e-9);
                }
                // Each stage runs one pass at a time.
                for j in 0..pp {
                    let mut ev: Vec<&Event> = sim.timeline.events.iter()
                        .filter(|e| e.stage == j && matches!(e.kind, EventKind::Forward | EventKind::Backward))
                        .collect();
                    prop_assert_eq!(ev.len(), 2 * b);
                    ev.sort_by(|a, c| a.start_s.total_cmp(&c.start_s));
                    for w in ev.windows(2) {
                        prop_assert!(w[1].start_s >= w[0].end_s - 1e-12);
                    }
                }
            }
            let uniform = simulate(&spec(&vec![f[0]; pp], &vec![bw[0]; pp], &vec![0.0; pp - 1], &vec![0.0; pp - 1], b, Schedule::OneFOneB)).unwrap();
            let closed = (b + pp - 1) as f64 * (f[0] + bw[0]);
            prop_assert!((uniform.timeline.iteration_s - closed).abs() < 1e-9);
            // Lockstep adds constraints to blocking sends (the receiver must
            // be there, both transfers hold both stages), never removes one;
            // without sends, uniform stages meet exactly when 1F1B has them
            // meet.
            let mut blocking = spec(&f, &bw, &sf, &sb, b, Schedule::OneFOneB);
            blocking.blocking_sends = true;
            let lock = IterationSpec { lockstep: true, ..blocking.clone() };
            let (tb, sim) = (simulate(&blocking).unwrap().timeline.iteration_s, simulate(&lock).unwrap());
            let tl = sim.timeline.iteration_s;
            prop_assert!(tl >= tb - 1e-9, "lockstep {tl} < blocking {tb}");
            let parts = sim.compute_s + sim.bubble_s + sim.send_s + sim.allreduce_s + sim.optimizer_s;
            prop_assert!((parts - tl).abs() < 1e-9);
            for j in 0..pp {
                let mut ev: Vec<&Event> = sim.timeline.events.iter().filter(|e| e.stage == j && matches!(e.kind, EventKind::Forward | EventKind::Backward)).collect();
                prop_assert_eq!(ev.len(), 2 * b);
                ev.sort_by(|a, c| a.start_s.total_cmp(&c.start_s));
                for w in ev.windows(2) {
                    prop_assert!(w[1].start_s >= w[0].end_s - 1e-12);
                }
            }
            let sends = (0..pp - 1).map(|c| sf[c] + sb[c]).sum::<f64>() * b as f64;
            let mut zero = lock.clone();
            zero.pipelines[0].forward_s = vec![f[0]; pp];
            zero.pipelines[0].backward_s = vec![bw[0]; pp];
            zero.pipelines[0].send_forward_s = vec![0.0; pp - 1];
            zero.pipelines[0].send_backward_s = vec![0.0; pp - 1];
            prop_assert!((simulate(&zero).unwrap().timeline.iteration_s - closed).abs() < 1e-9);
            // ... and every transfer is one event.
            let sent: f64 = sim.timeline.events.iter().filter(|e| matches!(e.kind, EventKind::SendForward | EventKind::SendBackward)).map(|e| e.end_s - e.start_s).sum();
            prop_assert!((sent - sends).abs() < 1e-9);
            // Interleaved, v chunks of uniform time per device, B a multiple
            // of pp: the bubble shrinks to (pp - 1) chunk times.
            for v in 2..4 {
                let bi = pp * b;
                let nv = pp * v;
                let mut s = spec(&vec![f[0]; nv], &vec![bw[0]; nv], &vec![0.0; nv - 1], &vec![0.0; nv - 1], bi, Schedule::Interleaved { virtual_stages: v });
                s.allreduce_s = vec![0.0; pp];
                s.optimizer_s = vec![0.0; pp];
                s.allreduce_tail_fraction = vec![0.0; pp];
                let sim = simulate(&s).unwrap();
                let closed = (bi * v + pp - 1) as f64 * (f[0] + bw[0]);
                prop_assert!((sim.timeline.iteration_s - closed).abs() < 1e-9, "v {v} pp {pp} b {bi}: {} vs {closed}", sim.timeline.iteration_s);
                let parts = sim.compute_s + sim.bubble_s + sim.send_s + sim.allreduce_s + sim.optimizer_s;
                prop_assert!((parts - sim.timeline.iteration_s).abs() < 1e-9);
            }
        }
    }
}
