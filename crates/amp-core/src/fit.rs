//! Fitting the default cost model's [`Calibration`] to measured runs, and
//! the honest report of what the fit buys.
//!
//! **What is fitted, on what.** The six constants of [`Calibration`], on
//! the datasets given (`amp fit DIRS...`): the time constants minimise the
//! mean, over datasets, of each dataset's mean relative time error on its
//! completed runs (each dataset weighs the same however many runs it has);
//! the memory reserve minimises, summed over datasets, the share of runs
//! whose fit is called wrong (a completed run predicted not to fit, or a
//! failed run predicted to fit), which is what it decides; then, the
//! reserve held, the allocator's cache minimises the summed mean relative
//! error of the predicted device readings where memory was measured. Each
//! memory constant is fitted on the measurements of the quantity it stands
//! for: an out-of-memory verdict does not see the cache, a reading does.
//! Time and memory constants do not interact (memory does not depend on
//! time constants, nor time on memory), so they are fitted apart.
//!
//! **How.** Each constant takes values on a fixed grid ([`GRID`]). The
//! inter-node efficiency is tried at every grid value; for each, the other
//! time constants are fitted by coordinate descent from
//! [`Calibration::NEUTRAL`]: each constant in turn moves to its best grid
//! value with the others held, until a whole round changes nothing (at most
//! [`MAX_ROUNDS`]); the efficiency with the least loss wins. The
//! reserve, then the cache, are fitted by trying every grid value. A constant leaves
//! its current (at first neutral) value only for a strictly lower loss, and
//! among equal losses the value nearest neutral wins, so a constant the
//! data says nothing about (the per-sample fractions on data without
//! per-sample profiles) stays neutral. Coordinate descent can stop at a local optimum; the result is
//! deterministic.
//!
//! **What is reported** ([`fit_report`]): for every dataset, its figures
//! with neutral constants, with the constants fitted on all datasets
//! (in-sample), and with the constants fitted on all the *other* datasets
//! (leave-one-set-out: the figure to expect on hardware amp was not fitted
//! on).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::cost::device::{DeviceModel, DeviceOptions};
use crate::cost::{Calibration, CostModel};
use crate::validate::{
    name_inputs, summarize, validate_dataset, Dataset, DatasetReport, RunReport,
};

/// The grid of each constant: `(first, step, last)` multiples, so that
/// values are exact decimal fractions.
pub struct Grid {
    /// Values of [`Calibration::per_sample_fixed_fraction`]: 0, 0.05, ..., 0.5.
    pub per_sample_fixed_fraction: (u32, u32, f64),
    /// Values of [`Calibration::per_sample_tp_comm_fixed_fraction`]: 0, 0.1, ..., 1.
    pub per_sample_tp_comm_fixed_fraction: (u32, u32, f64),
    /// Values of [`Calibration::inter_node_efficiency`]: 0.25, 0.3, ..., 1.
    pub inter_node_efficiency: (u32, u32, f64),
    /// Values of [`Calibration::framework_reserve_bytes`]: 0, 0.25 GB, ..., 8 GB.
    pub framework_reserve_bytes: (u32, u32, f64),
    /// Values of [`Calibration::allocator_cache_bytes`]: 0, 0.25 GB, ..., 8 GB.
    pub allocator_cache_bytes: (u32, u32, f64),
    /// Values of [`Calibration::host_staging_s_per_gb`]: 0, 0.01, ..., 0.5
    /// s per GB (from no cost to a 2 GB/s host).
    pub host_staging_s_per_gb: (u32, u32, f64),
}

/// Each constant's grid, as `(first k, last k, unit)`: values `k x unit`.
pub const GRID: Grid = Grid {
    per_sample_fixed_fraction: (0, 10, 0.05),
    per_sample_tp_comm_fixed_fraction: (0, 10, 0.1),
    inter_node_efficiency: (5, 20, 0.05),
    framework_reserve_bytes: (0, 32, 0.25e9),
    allocator_cache_bytes: (0, 32, 0.25e9),
    host_staging_s_per_gb: (0, 50, 0.01),
};

/// One fitted constant: its name, where it sits in a [`Calibration`], and
/// its grid.
type Constant = (
    &'static str,
    fn(&mut Calibration) -> &mut f64,
    (u32, u32, f64),
);

/// The six constants in [`Calibration`]'s order: what [`at_grid_edge`] and
/// [`uninformed`] go through.
const CONSTANTS: [Constant; 6] = [
    (
        "per_sample_fixed_fraction",
        |c| &mut c.per_sample_fixed_fraction,
        GRID.per_sample_fixed_fraction,
    ),
    (
        "per_sample_tp_comm_fixed_fraction",
        |c| &mut c.per_sample_tp_comm_fixed_fraction,
        GRID.per_sample_tp_comm_fixed_fraction,
    ),
    (
        "inter_node_efficiency",
        |c| &mut c.inter_node_efficiency,
        GRID.inter_node_efficiency,
    ),
    (
        "framework_reserve_bytes",
        |c| &mut c.framework_reserve_bytes,
        GRID.framework_reserve_bytes,
    ),
    (
        "allocator_cache_bytes",
        |c| &mut c.allocator_cache_bytes,
        GRID.allocator_cache_bytes,
    ),
    (
        "host_staging_s_per_gb",
        |c| &mut c.host_staging_s_per_gb,
        GRID.host_staging_s_per_gb,
    ),
];

/// The constants of `cal` that sit at the end of their grid away from
/// neutral, as (name, value): the data wanted a value past what the grid
/// allows, so the constant likely stands in for an effect the model lacks
/// (the inter-node efficiency at its floor of 0.25 on Sailor's GH200 runs
/// alone). A neutral value at a grid's end (0 for the shares and memories,
/// 1 for the efficiency) is not one.
pub fn at_grid_edge(cal: &Calibration) -> Vec<(&'static str, f64)> {
    CONSTANTS
        .into_iter()
        .filter_map(|(name, field, grid)| {
            let (mut c, mut n) = (*cal, Calibration::NEUTRAL);
            let (v, neutral) = (*field(&mut c), *field(&mut n));
            let g = values(grid);
            (v != neutral && (v == g[0] || v == g[g.len() - 1])).then_some((name, v))
        })
        .collect()
}

/// Rounds of coordinate descent at most.
pub const MAX_ROUNDS: usize = 10;

/// Grid values `k x unit` for `k` in `first..=last`, computed as
/// `k / (1 / unit)` where that is an integer so that 0.2 is the same double
/// as the literal.
fn values((first, last, unit): (u32, u32, f64)) -> Vec<f64> {
    let inv = 1.0 / unit;
    (first..=last)
        .map(|k| {
            if (inv - inv.round()).abs() < 1e-9 {
                k as f64 / inv.round()
            } else {
                k as f64 * unit
            }
        })
        .collect()
}

/// The losses a calibration is fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Loss {
    /// Mean over datasets with completed runs of their mean relative time
    /// error; `None` when no dataset has one.
    pub time: Option<f64>,
    /// Sum over datasets of the share of runs whose fit is called wrong.
    pub verdicts: f64,
    /// Sum over datasets of the mean relative error of the predicted
    /// device readings, where memory was measured.
    pub memory: f64,
}

fn model_with(base: &DeviceOptions, calibration: Calibration) -> DeviceModel {
    DeviceModel::new(DeviceOptions {
        calibration,
        ..base.clone()
    })
}

/// Scores of `calibration` on every dataset.
pub fn reports(
    datasets: &[&Dataset],
    base: &DeviceOptions,
    calibration: Calibration,
) -> Vec<DatasetReport> {
    let model = model_with(base, calibration);
    datasets
        .iter()
        .map(|d| validate_dataset(d, &model))
        .collect()
}

/// The fit's losses of a set of reports.
pub fn loss(reports: &[DatasetReport]) -> Loss {
    let times: Vec<f64> = reports
        .iter()
        .filter_map(|r| r.time_error.map(|e| e.mean))
        .collect();
    let time = (!times.is_empty()).then(|| times.iter().sum::<f64>() / times.len() as f64);
    let verdicts = reports
        .iter()
        .map(|r| {
            let wrong =
                r.completed_predicted_infeasible + (r.failed - r.failed_predicted_infeasible);
            wrong as f64 / r.runs.max(1) as f64
        })
        .sum();
    let memory = reports
        .iter()
        .map(|r| r.memory_error.map_or(0.0, |e| e.mean))
        .sum();
    Loss {
        time,
        verdicts,
        memory,
    }
}

/// A fitted calibration and how it was reached.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fit {
    /// The fitted constants.
    pub calibration: Calibration,
    /// Names of the datasets fitted on.
    pub fitted_on: Vec<String>,
    /// The losses at the fitted constants.
    pub loss: Loss,
    /// Calibrations priced.
    pub evaluations: usize,
}

/// Every run's verdict under each calibration asked for, computed once per
/// calibration: the fit asks for the same calibration many times (every
/// loss of a coordinate descent, the memory passes), and the fits of
/// [`leave_one_run_out`] ask for the same ones again with one run set
/// aside, which changes only how the verdicts are summed.
struct Pricer<'a> {
    datasets: &'a [&'a Dataset],
    base: &'a DeviceOptions,
    /// `None` over [`MAX_CACHED_RUNS`] runs: the fit then prices each
    /// calibration every time it is asked for, as it did before the cache.
    cache: Option<Mutex<HashMap<[u64; 6], Arc<Verdicts>>>>,
}

/// Most runs whose verdicts `Pricer` keeps for every calibration: the
/// given sets' 67 runs over the 4,535 calibrations of `amp fit
/// --leave-one-run-out` take 98 MB; 256 runs would take about 400 MB.
pub const MAX_CACHED_RUNS: usize = 256;

/// Most runs [`leave_one_run_out`] fits without (one fit each, every fit
/// pricing all the others).
pub const MAX_LEAVE_ONE_RUN_OUT_RUNS: usize = MAX_CACHED_RUNS;

/// Per-run verdicts of every dataset, in dataset and run order.
type Verdicts = Vec<Vec<RunReport>>;

/// A run set aside: (dataset, run) indices.
type Skip = Option<(usize, usize)>;

impl<'a> Pricer<'a> {
    fn new(datasets: &'a [&'a Dataset], base: &'a DeviceOptions) -> Self {
        let runs: usize = datasets.iter().map(|d| d.runs.len()).sum();
        Pricer {
            datasets,
            base,
            cache: (runs <= MAX_CACHED_RUNS).then(|| Mutex::new(HashMap::new())),
        }
    }

    fn key(c: &Calibration) -> [u64; 6] {
        [
            c.per_sample_fixed_fraction,
            c.per_sample_tp_comm_fixed_fraction,
            c.inter_node_efficiency,
            c.framework_reserve_bytes,
            c.allocator_cache_bytes,
            c.host_staging_s_per_gb,
        ]
        .map(f64::to_bits)
    }

    /// Every dataset's per-run verdicts under `c`.
    fn details(&self, c: Calibration) -> Arc<Verdicts> {
        let price = || {
            Arc::new(
                reports(self.datasets, self.base, c)
                    .into_iter()
                    .map(|r| r.details)
                    .collect::<Vec<_>>(),
            )
        };
        let Some(cache) = &self.cache else {
            return price();
        };
        let key = Self::key(&c);
        if let Some(d) = cache.lock().expect("pricer cache").get(&key) {
            return Arc::clone(d);
        }
        // Priced outside the lock: two threads may price the same
        // calibration at once, with the same result.
        let d = price();
        cache
            .lock()
            .expect("pricer cache")
            .entry(key)
            .or_insert(d)
            .clone()
    }

    /// The scores [`reports`] gives under `c`, without the run `skip` (a
    /// dataset left with no run is left out).
    fn reports(&self, c: Calibration, skip: Skip) -> Vec<DatasetReport> {
        let details = self.details(c);
        let name = model_with(self.base, c).name();
        self.datasets
            .iter()
            .zip(details.iter())
            .enumerate()
            .filter_map(|(i, (d, runs))| {
                let kept: Vec<RunReport> = runs
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| skip != Some((i, j)))
                    .map(|(_, r)| r.clone())
                    .collect();
                (!kept.is_empty()).then(|| summarize(&d.name, name, kept))
            })
            .collect()
    }
}

/// Picks, among `candidates` (a grid, ascending), the value with the least
/// loss, keeping `current` unless another is strictly better, and among
/// equal losses the one nearest `neutral`.
fn best_value(
    candidates: &[f64],
    current: f64,
    neutral: f64,
    mut loss_at: impl FnMut(f64) -> f64,
) -> f64 {
    let current_loss = loss_at(current);
    let mut best = (current, current_loss);
    for &v in candidates {
        if v == current {
            continue;
        }
        let l = loss_at(v);
        let better = l < best.1 - 1e-12
            || ((l - best.1).abs() <= 1e-12
                && best.0 != current
                && (v - neutral).abs() < (best.0 - neutral).abs());
        if better {
            best = (v, l);
        }
    }
    best.0
}

/// Fits the calibration on `datasets` (see the module documentation).
pub fn fit(datasets: &[&Dataset], base: &DeviceOptions) -> Fit {
    fit_with(&Pricer::new(datasets, base), None)
}

/// [`fit`] on the pricer's datasets without the run `skip`.
fn fit_with(pricer: &Pricer, skip: Skip) -> Fit {
    let neutral = Calibration::NEUTRAL;
    let mut cal = neutral;
    let mut evaluations = 0usize;
    let time_loss = |c: Calibration, evaluations: &mut usize| {
        *evaluations += 1;
        loss(&pricer.reports(c, skip)).time.unwrap_or(0.0)
    };
    type Field = fn(&mut Calibration) -> &mut f64;
    // The constants that stand for one mechanism each: fitted by
    // coordinate descent for each value of the inter-node efficiency.
    let time_fields: [(Field, Vec<f64>, f64); 3] = [
        (
            |c| &mut c.per_sample_fixed_fraction,
            values(GRID.per_sample_fixed_fraction),
            neutral.per_sample_fixed_fraction,
        ),
        (
            |c| &mut c.per_sample_tp_comm_fixed_fraction,
            values(GRID.per_sample_tp_comm_fixed_fraction),
            neutral.per_sample_tp_comm_fixed_fraction,
        ),
        (
            |c| &mut c.host_staging_s_per_gb,
            values(GRID.host_staging_s_per_gb),
            neutral.host_staging_s_per_gb,
        ),
    ];
    let descend = |efficiency: f64| {
        let mut evaluations = 0usize;
        let mut c = Calibration {
            inter_node_efficiency: efficiency,
            ..neutral
        };
        for _ in 0..MAX_ROUNDS {
            let before = c;
            for (field, grid, neutral_value) in &time_fields {
                let current = *field(&mut c);
                let v = best_value(grid, current, *neutral_value, |v| {
                    let mut t = c;
                    *field(&mut t) = v;
                    time_loss(t, &mut evaluations)
                });
                *field(&mut c) = v;
            }
            if c == before {
                break;
            }
        }
        let l = time_loss(c, &mut evaluations);
        (c, l, evaluations)
    };
    // The efficiency prices every transfer between nodes, so any phase
    // slower than priced can pull it, and it trades against the other
    // constants along a valley (on Sailor's runs: a slow network or slow
    // host-staged receives) where a descent one constant at a time stops
    // wherever it enters. Every value of it is tried, from neutral down,
    // each with its own descent; the least loss wins, ties to the nearest
    // neutral.
    let mut efficiencies = values(GRID.inter_node_efficiency);
    efficiencies.reverse();
    use rayon::prelude::*;
    let fits: Vec<(Calibration, f64, usize)> =
        efficiencies.par_iter().map(|&e| descend(e)).collect();
    let mut best: Option<(Calibration, f64)> = None;
    for (c, l, n) in fits {
        evaluations += n;
        if best.is_none_or(|(_, b)| l < b - 1e-12) {
            best = Some((c, l));
        }
    }
    cal = best.map_or(cal, |(c, _)| c);
    // Verdicts depend only on the reserve, readings on the reserve and the
    // cache: one pass over each grid, the reserve first, each on the loss
    // of what it stands for.
    type MemoryField = (Field, Vec<f64>, f64, fn(&Loss) -> f64);
    let memory_fields: [MemoryField; 2] = [
        (
            |c| &mut c.framework_reserve_bytes,
            values(GRID.framework_reserve_bytes),
            neutral.framework_reserve_bytes,
            |l| l.verdicts,
        ),
        (
            |c| &mut c.allocator_cache_bytes,
            values(GRID.allocator_cache_bytes),
            neutral.allocator_cache_bytes,
            |l| l.memory,
        ),
    ];
    for (field, grid, neutral_value, of) in &memory_fields {
        let v = best_value(grid, *neutral_value, *neutral_value, |v| {
            evaluations += 1;
            let mut c = cal;
            *field(&mut c) = v;
            of(&loss(&pricer.reports(c, skip)))
        });
        *field(&mut cal) = v;
    }
    let reports = pricer.reports(cal, skip);
    Fit {
        calibration: cal,
        // Every dataset but one whose only run is set aside.
        fitted_on: pricer
            .datasets
            .iter()
            .enumerate()
            .filter(|&(i, d)| !(skip.is_some_and(|(k, _)| k == i) && d.runs.len() == 1))
            .map(|(_, d)| d.name.clone())
            .collect(),
        loss: loss(&reports),
        evaluations,
    }
}

/// Each dataset's figures when every run is predicted with the constants
/// fitted on all the other runs, its own set's included (leave-one-run-out
/// cross-validation): what fitting on a cluster's runs buys for a plan of
/// that cluster not yet run. One fit per run; the fits share the pricing
/// of every calibration they visit. The caller keeps the runs to
/// [`MAX_LEAVE_ONE_RUN_OUT_RUNS`] (beyond it the fits are priced apart, each
/// as slow as a whole `amp fit`).
pub fn leave_one_run_out(datasets: &[&Dataset], base: &DeviceOptions) -> Vec<DatasetReport> {
    use rayon::prelude::*;
    let pricer = Pricer::new(datasets, base);
    let held_out: Vec<(usize, usize)> = datasets
        .iter()
        .enumerate()
        .flat_map(|(i, d)| (0..d.runs.len()).map(move |j| (i, j)))
        .collect();
    let verdicts: Vec<RunReport> = held_out
        .par_iter()
        .map(|&(i, j)| {
            let c = fit_with(&pricer, Some((i, j))).calibration;
            pricer.details(c)[i][j].clone()
        })
        .collect();
    let name = model_with(base, Calibration::NEUTRAL).name();
    datasets
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let runs: Vec<RunReport> = held_out
                .iter()
                .zip(&verdicts)
                .filter(|((k, _), _)| *k == i)
                .map(|(_, r)| r.clone())
                .collect();
            let mut r = summarize(&d.name, name, runs);
            name_inputs(&mut r, d);
            r
        })
        .collect()
}

/// The constants no run of `datasets` depends on: moving one from neutral
/// to the far end of its grid changes nothing its loss reads (the time of
/// a completed run for the time constants, an out-of-memory verdict for
/// the reserve, a device reading for the allocator's cache), so the fit
/// keeps it neutral for want of data, not because the data says neutral.
/// For example, runs on one node say nothing of the inter-node
/// efficiency, runs without host-staged receives nothing of their cost.
pub fn uninformed(datasets: &[&Dataset], base: &DeviceOptions) -> Vec<&'static str> {
    let pricer = Pricer::new(datasets, base);
    let neutral = Calibration::NEUTRAL;
    let at_neutral = pricer.details(neutral);
    let end = |grid: (u32, u32, f64), neutral: f64| -> f64 {
        let v = values(grid);
        // The grid end farthest from neutral: the largest effect.
        let (lo, hi) = (v[0], v[v.len() - 1]);
        if (hi - neutral).abs() >= (lo - neutral).abs() {
            hi
        } else {
            lo
        }
    };
    CONSTANTS
        .into_iter()
        .filter(|(name, field, grid)| {
            let mut c = neutral;
            let n = *field(&mut c);
            *field(&mut c) = end(*grid, n);
            let moved = pricer.details(c);
            let read = |r: &RunReport| match *name {
                "framework_reserve_bytes" => (r.measured_s.is_some() || r.failed)
                    .then_some(r.predicted_infeasible as u8 as f64),
                "allocator_cache_bytes" => r.measured_peak_bytes.and(r.predicted_reading_bytes),
                _ => r.measured_s.and(r.predicted_s),
            };
            at_neutral
                .iter()
                .flatten()
                .zip(moved.iter().flatten())
                .all(|(a, b)| read(a) == read(b))
        })
        .map(|(name, _, _)| name)
        .collect()
}

/// One dataset's figures under the three calibrations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetFigures {
    /// The dataset.
    pub name: String,
    /// Its scores with [`Calibration::NEUTRAL`].
    pub neutral: DatasetReport,
    /// Its scores with the constants fitted on every dataset, itself included.
    pub in_sample: DatasetReport,
    /// Its scores with the constants fitted on every other dataset.
    pub leave_one_set_out: DatasetReport,
    /// The constants fitted without it.
    pub leave_one_set_out_calibration: Calibration,
    /// Its scores with each run predicted by the constants fitted on every
    /// other run ([`leave_one_run_out`]), when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leave_one_run_out: Option<DatasetReport>,
}

/// The fit on all `datasets`, and each dataset's neutral, in-sample and
/// leave-one-set-out figures, and with `by_run` its leave-one-run-out
/// figures. With a single dataset there is nothing to leave it out for: its
/// leave-one-set-out figures are the neutral ones.
pub fn fit_report(
    datasets: &[&Dataset],
    base: &DeviceOptions,
    by_run: bool,
) -> (Fit, Vec<SetFigures>) {
    let all = fit(datasets, base);
    let mut by_run = if by_run {
        leave_one_run_out(datasets, base)
            .into_iter()
            .map(Some)
            .collect()
    } else {
        vec![None; datasets.len()]
    };
    let figures = datasets
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let others: Vec<&Dataset> = datasets
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, d)| *d)
                .collect();
            let loso = fit(&others, base).calibration;
            let one = |c| reports(&[*d], base, c).remove(0);
            SetFigures {
                name: d.name.clone(),
                neutral: one(Calibration::NEUTRAL),
                in_sample: one(all.calibration),
                leave_one_set_out: one(loso),
                leave_one_set_out_calibration: loso,
                leave_one_run_out: by_run[i].take(),
            }
        })
        .collect();
    (all, figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cluster::builtin as clusters;
    use crate::model::builtin as models;
    use crate::placement::{DeviceGrid, Placement};
    use crate::profile::uniform_profile;
    use crate::search::plan_from_grid;
    use crate::validate::{Outcome, Run};

    /// Runs whose "measurements" are the model's own predictions under
    /// `truth`: the fit must find `truth` back, with zero loss.
    fn synthetic(truth: Calibration) -> Dataset {
        let cluster = clusters::homogeneous();
        let profile = uniform_profile(30, &[("T4", 1, 0.004)]);
        let model = models::amp_gpt2();
        let truth_model = model_with(&DeviceOptions::default(), truth);
        let mut runs = Vec::new();
        for (dp, pp, bounds) in [
            (16, 1, vec![0, 30]),
            (8, 2, vec![0, 15, 30]),
            (4, 4, vec![0, 9, 15, 21, 30]),
        ] {
            for mbs in [1, 2] {
                let grid =
                    DeviceGrid::new(&cluster, 1, dp, pp, &Placement::artifact_default(&cluster));
                // Megatron-LM's loss, as the AMP artifact's GPT-2 ran: every
                // run fits a T4 at the truth's reserve.
                // Receives through the host, as Sailor's engine makes them:
                // the pipelined runs pin the staging cost.
                let setup = crate::setup::TrainingSetup {
                    cross_entropy: Some(crate::setup::CrossEntropy::Megatron),
                    pipeline_receive: crate::setup::PipelineReceive::HostStaged,
                    ..Default::default()
                };
                let plan = plan_from_grid(&grid, &bounds, mbs, 32 / dp / mbs, &setup);
                let inputs = crate::cost::Inputs {
                    model: &model,
                    cluster: &cluster,
                    profile: &profile,
                };
                use crate::cost::CostModel;
                let est = truth_model.evaluate(&inputs, &plan).unwrap();
                let peak = est.memory.iter().map(|m| m.peak_bytes).fold(0.0, f64::max);
                if dp == 16 && mbs == 1 {
                    // Verdicts that pin the reserve: on GPUs of exactly the
                    // truth's peak the run completes, on 0.1 GB less it
                    // fails; only a reserve in (truth - 0.1 GB, truth]
                    // calls both right.
                    for (gap, outcome) in [
                        (0.0, Outcome::Completed(est.iteration_s)),
                        (0.1e9, Outcome::Failed),
                    ] {
                        let mut small = cluster.clone();
                        for n in &mut small.nodes {
                            n.gpu_memory_bytes = Some((peak - gap).ceil() as u64);
                        }
                        runs.push(Run {
                            name: format!("dp{dp} pp{pp} mbs{mbs} on {} GB less", gap / 1e9),
                            cluster: small,
                            plan: plan.clone(),
                            outcome,
                            measured_peak_bytes: None,
                            measured_grad_reduce_s: None,
                            profile: None,
                        });
                    }
                }
                runs.push(Run {
                    name: format!("dp{dp} pp{pp} mbs{mbs}"),
                    cluster: cluster.clone(),
                    plan,
                    outcome: Outcome::Completed(est.iteration_s),
                    // A device reading: the peak and the allocator's cache.
                    measured_peak_bytes: Some(peak + truth.allocator_cache_bytes),
                    measured_grad_reduce_s: None,
                    profile: None,
                });
            }
        }
        Dataset {
            name: "synthetic".into(),
            model,
            profile,
            runs,
        }
    }

    #[test]
    fn the_fit_finds_known_constants_back() {
        let truth = Calibration {
            per_sample_fixed_fraction: 0.3,
            // tp is 1 everywhere: the data says nothing of it, so it must
            // come back neutral, not at the truth.
            per_sample_tp_comm_fixed_fraction: 0.5,
            inter_node_efficiency: 0.7,
            framework_reserve_bytes: 1e9,
            allocator_cache_bytes: 1.5e9,
            host_staging_s_per_gb: 0.05,
        };
        let data = synthetic(truth);
        let f = fit(&[&data], &DeviceOptions::default());
        assert_eq!(
            f.calibration,
            Calibration {
                per_sample_tp_comm_fixed_fraction: 0.0,
                ..truth
            }
        );
        assert!(f.loss.time.unwrap() < 1e-9 && f.loss.memory < 1e-9 && f.loss.verdicts == 0.0);
        // Of what it kept neutral, only the tp share is for want of data.
        assert_eq!(
            uninformed(&[&data], &DeviceOptions::default()),
            vec!["per_sample_tp_comm_fixed_fraction"]
        );
        // Neutral constants are measurably worse on the same data.
        let neutral = loss(&reports(
            &[&data],
            &DeviceOptions::default(),
            Calibration::NEUTRAL,
        ));
        assert!(neutral.time.unwrap() > 0.01 && neutral.memory > 0.01);
        assert!(neutral.verdicts > 0.0);
    }

    #[test]
    fn leaving_one_run_out_predicts_each_from_the_others() {
        // Runs made under known constants: with any one run set aside the
        // others still pin them, so every held-out run is predicted
        // exactly, and the report lists every run once, in order.
        let truth = Calibration {
            per_sample_fixed_fraction: 0.3,
            per_sample_tp_comm_fixed_fraction: 0.0,
            inter_node_efficiency: 0.7,
            framework_reserve_bytes: 0.0,
            allocator_cache_bytes: 1.5e9,
            host_staging_s_per_gb: 0.05,
        };
        let mut data = synthetic(truth);
        data.runs.retain(|r| !r.name.contains("GB less"));
        let base = DeviceOptions::default();
        let r = leave_one_run_out(&[&data], &base);
        assert_eq!(r.len(), 1);
        let names: Vec<&str> = r[0].details.iter().map(|d| d.name.as_str()).collect();
        let want: Vec<&str> = data.runs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, want);
        assert!(r[0].time_error.unwrap().max < 1e-9, "{:?}", r[0].time_error);
        assert!(r[0].memory_error.unwrap().max < 1e-9);
        // The pricer's summaries are `reports`' to the bit.
        let sets = [&data];
        let pricer = Pricer::new(&sets, &base);
        let full = reports(&[&data], &base, truth).remove(0);
        let cached = pricer.reports(truth, None).remove(0);
        assert_eq!(cached.time_error, full.time_error);
        assert_eq!(cached.details, full.details);
        // One run set aside is one fewer in the sums.
        assert_eq!(pricer.reports(truth, Some((0, 0)))[0].runs, full.runs - 1);
        // A single run set aside leaves nothing to fit on: neutral.
        let mut one = data.clone();
        one.runs.truncate(1);
        let sets1 = [&one];
        let p1 = Pricer::new(&sets1, &base);
        let f = fit_with(&p1, Some((0, 0)));
        assert_eq!(f.calibration, Calibration::NEUTRAL);
        assert!(f.fitted_on.is_empty());
    }

    #[test]
    fn without_verdicts_the_readings_go_to_the_cache() {
        // Every run completes on a T4 and none is near its capacity: the
        // verdicts say nothing of the reserve, which stays neutral, and the
        // readings are the peak plus reserve and cache together.
        let truth = Calibration {
            per_sample_fixed_fraction: 0.3,
            per_sample_tp_comm_fixed_fraction: 0.0,
            inter_node_efficiency: 0.7,
            framework_reserve_bytes: 1e9,
            allocator_cache_bytes: 1.5e9,
            host_staging_s_per_gb: 0.0,
        };
        let mut data = synthetic(truth);
        data.runs.retain(|r| !r.name.contains("GB less"));
        let f = fit(&[&data], &DeviceOptions::default());
        assert_eq!(f.calibration.framework_reserve_bytes, 0.0);
        assert_eq!(f.calibration.allocator_cache_bytes, 2.5e9);
        assert!(f.loss.memory < 1e-9);
        // The completed runs still bound the reserve from above (at 8 GB
        // some would be called out of memory), so it is not named as
        // uninformed: neutral is what the data allows, not a default.
        assert!(
            !uninformed(&[&data], &DeviceOptions::default()).contains(&"framework_reserve_bytes")
        );
    }

    #[test]
    fn constants_at_a_grid_end_away_from_neutral_are_named() {
        assert!(at_grid_edge(&Calibration::NEUTRAL).is_empty());
        assert!(at_grid_edge(&Calibration::FITTED).is_empty());
        let floor = Calibration {
            inter_node_efficiency: 0.25,
            allocator_cache_bytes: 8e9,
            per_sample_fixed_fraction: 0.3,
            ..Calibration::NEUTRAL
        };
        assert_eq!(
            at_grid_edge(&floor),
            vec![
                ("inter_node_efficiency", 0.25),
                ("allocator_cache_bytes", 8e9)
            ]
        );
    }

    #[test]
    fn grid_values_are_the_literals() {
        let v = values(GRID.per_sample_fixed_fraction);
        assert_eq!(v.len(), 11);
        assert_eq!(v[4], 0.2);
        assert_eq!(values(GRID.per_sample_tp_comm_fixed_fraction)[6], 0.6);
        let e = values(GRID.inter_node_efficiency);
        assert_eq!((e[0], e[5], *e.last().unwrap()), (0.25, 0.5, 1.0));
        assert_eq!(values(GRID.framework_reserve_bytes)[18], 4.5e9);
        assert_eq!(values(GRID.allocator_cache_bytes)[6], 1.5e9);
    }

    #[test]
    fn best_value_prefers_current_then_neutral() {
        let grid = [0.0, 0.5, 1.0];
        // Flat loss: stays where it is.
        assert_eq!(best_value(&grid, 0.5, 0.0, |_| 1.0), 0.5);
        // Strictly better elsewhere: moves.
        assert_eq!(best_value(&grid, 0.5, 0.0, |v| (v - 1.0).abs()), 1.0);
        // Two equal bests away from current: the one nearer neutral.
        assert_eq!(
            best_value(&grid, 0.5, 1.0, |v| if v == 0.5 { 2.0 } else { 1.0 }),
            1.0
        );
        assert_eq!(
            best_value(&grid, 0.5, 0.0, |v| if v == 0.5 { 2.0 } else { 1.0 }),
            0.0
        );
    }
}
