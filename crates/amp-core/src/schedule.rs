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
}

/// What a timeline event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Forward,
    Backward,
    /// Activation sent to the next stage.
    SendForward,
    /// Gradient sent to the previous stage.
    SendBackward,
    /// Data-parallel gradient all-reduce.
    AllReduce,
    Optimizer,
}

/// One interval of one stage's work in an iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub stage: usize,
    /// Micro-batch index, for compute and sends.
    pub micro_batch: Option<usize>,
    pub kind: EventKind,
    pub start_s: f64,
    pub end_s: f64,
}

/// One iteration of a plan, event by event, as the cost model simulated it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Timeline {
    pub num_stages: usize,
    pub num_micro_batches: usize,
    pub events: Vec<Event>,
    pub iteration_s: f64,
}
