//! Validation of a cost model against measured runs: rank correlation,
//! top-1 regret, time and peak-memory errors, and feasibility verdicts.

use serde::Serialize;

use crate::cluster::Cluster;
use crate::cost::{CostModel, Inputs};
use crate::memory::plan_memory;
use crate::model::Model;
use crate::plan::Plan;
use crate::profile::Profile;

/// What happened when a plan was run for real.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Completed; measured iteration time, seconds.
    Completed(f64),
    /// Did not complete (out of memory or crash).
    Failed,
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Where it comes from (file and row), for reports.
    pub name: String,
    /// The cluster the run used.
    pub cluster: Cluster,
    /// The plan the run executed.
    pub plan: Plan,
    /// What happened: completed with its iteration time, or failed.
    pub outcome: Outcome,
    /// Measured memory per GPU, bytes, when recorded: the device reading
    /// at its fullest (`nvidia-smi`'s `memory.used`: the CUDA context,
    /// NCCL's buffers and all the caching allocator holds, as Sailor
    /// records `max_mem`), compared with the predicted peak plus the
    /// allocator's cache ([`crate::cost::Calibration::allocator_cache_bytes`]).
    pub measured_peak_bytes: Option<f64>,
    /// Measured time of the data-parallel gradient reduction in the
    /// iteration, seconds, when recorded (Sailor's `red_grads`).
    pub measured_grad_reduce_s: Option<f64>,
    /// The times to price this run with, when they are not the dataset's:
    /// amp's runs files fill each run's profile from the analytic model
    /// at its own micro-batch and in its own setup, as `amp eval` does.
    pub profile: Option<Profile>,
}

/// Runs of one model with one profile.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Name of the dataset, for reports.
    pub name: String,
    /// The model every run trains.
    pub model: Model,
    /// Measured per-layer times the cost model prices the runs with.
    pub profile: Profile,
    /// The measured runs.
    pub runs: Vec<Run>,
}

/// The verdict on one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    /// The run's name, as in [`Run::name`].
    pub name: String,
    /// Tensor-parallel degree, when every stage uses the same one.
    pub tp: Option<usize>,
    /// Data-parallel degree.
    pub dp: usize,
    /// Pipeline-parallel degree.
    pub pp: usize,
    /// Samples per micro-batch.
    pub micro_batch: usize,
    /// Measured iteration time, seconds; `None` when the run failed.
    pub measured_s: Option<f64>,
    /// Whether the run failed.
    pub failed: bool,
    /// Predicted iteration time; `None` when the cost model could not price
    /// the plan (see `error`).
    pub predicted_s: Option<f64>,
    /// Measured memory per GPU, bytes, when recorded (a device reading,
    /// see [`Run::measured_peak_bytes`]).
    pub measured_peak_bytes: Option<f64>,
    /// Predicted peak memory of the fullest device, bytes, when the model
    /// prices memory: what must fit in its capacity.
    pub predicted_peak_bytes: Option<f64>,
    /// What a device reading of the fullest device would show, bytes: the
    /// predicted peak plus the allocator's cache. Compared with
    /// `measured_peak_bytes`.
    pub predicted_reading_bytes: Option<f64>,
    /// Whether the cost model predicts some device runs out of memory.
    pub predicted_infeasible: bool,
    /// Measured and predicted gradient reduction on the critical path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured_grad_reduce_s: Option<f64>,
    /// Predicted critical-path gradient reduction, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_grad_reduce_s: Option<f64>,
    /// Why the cost model could not price the run, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Mean and maximum of absolute relative errors.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ErrorStats {
    /// Number of (predicted, measured) pairs.
    pub count: usize,
    /// Mean absolute relative error, `|predicted - measured| / measured` (0.1 = 10 %).
    pub mean: f64,
    /// Largest absolute relative error.
    pub max: f64,
}

/// The scores of a cost model on one dataset: rank correlation, top-1 regret,
/// time and memory errors, feasibility verdicts, and one [`RunReport`] per run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetReport {
    /// Name of the dataset.
    pub name: String,
    /// Name of the cost model scored ([`CostModel::name`]).
    pub cost_model: String,
    /// The dataset's model (empty when not known, as from [`summarize`]).
    pub model: String,
    /// The runs' distinct clusters in [`Cluster::summary`] form, sorted.
    pub clusters: Vec<String>,
    /// Number of runs.
    pub runs: usize,
    /// Runs that completed.
    pub completed: usize,
    /// Runs that failed.
    pub failed: usize,
    /// Runs the cost model could not price.
    pub unpriced: usize,
    /// Spearman rank correlation of predicted and measured times, when
    /// computable. Over completed, priced runs. (Memory errors and
    /// feasibility cover every run: they do not need the time model.)
    pub spearman: Option<f64>,
    /// Kendall's tau-b of predicted and measured times over the same runs,
    /// when computable.
    pub kendall_tau_b: Option<f64>,
    /// Measured time of the run predicted fastest among those predicted
    /// feasible, over the best measured time; `None` when no run qualifies
    /// or the chosen run failed (then `top1_failed`).
    pub top1_regret: Option<f64>,
    /// Whether the run predicted fastest failed.
    pub top1_failed: bool,
    /// Relative error of predicted iteration times over completed, priced runs.
    pub time_error: Option<ErrorStats>,
    /// Relative error of the predicted device reading (peak plus the
    /// allocator's cache) where memory was measured.
    pub memory_error: Option<ErrorStats>,
    /// Phase-level error of the gradient reduction, where measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_reduce_error: Option<ErrorStats>,
    /// Completed runs the model calls infeasible (should be 0).
    pub completed_predicted_infeasible: usize,
    /// Failed runs the model calls infeasible (should be all of them when
    /// they failed for memory).
    pub failed_predicted_infeasible: usize,
    /// Files or rows the loader could not turn into runs, with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// One verdict per run, in dataset order.
    pub details: Vec<RunReport>,
}

/// Ranks (1-based) with ties given their average rank.
pub(crate) fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = r;
        }
        i = j + 1;
    }
    ranks
}

fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// Spearman's rank correlation (Pearson on average ranks, so ties are
/// handled); `None` with fewer than two points or a constant series.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    pearson(&average_ranks(x), &average_ranks(y))
}

/// Kendall's tau-b: (concordant - discordant) / sqrt((n0 - n1)(n0 - n2)),
/// n1 and n2 the pairs tied in x and in y.
pub fn kendall_tau_b(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    let (mut c, mut d, mut tx, mut ty, mut n0) = (0i64, 0i64, 0i64, 0i64, 0i64);
    for i in 0..x.len() {
        for j in i + 1..x.len() {
            n0 += 1;
            let a = (x[i] - x[j])
                .partial_cmp(&0.0)
                .unwrap_or(std::cmp::Ordering::Equal) as i64;
            let b = (y[i] - y[j])
                .partial_cmp(&0.0)
                .unwrap_or(std::cmp::Ordering::Equal) as i64;
            if a == 0 {
                tx += 1;
            }
            if b == 0 {
                ty += 1;
            }
            if a * b > 0 {
                c += 1;
            } else if a * b < 0 {
                d += 1;
            }
        }
    }
    let den = (((n0 - tx) * (n0 - ty)) as f64).sqrt();
    (den > 0.0).then(|| (c - d) as f64 / den)
}

/// Mean and max of |predicted - measured| / measured.
pub(crate) fn error_stats(pairs: &[(f64, f64)]) -> Option<ErrorStats> {
    if pairs.is_empty() {
        return None;
    }
    let errs: Vec<f64> = pairs.iter().map(|(p, m)| ((p - m) / m).abs()).collect();
    Some(ErrorStats {
        count: errs.len(),
        mean: errs.iter().sum::<f64>() / errs.len() as f64,
        max: errs.iter().cloned().fold(0.0, f64::max),
    })
}

/// Top-1 regret: among `candidates` (predicted, measured) pairs, with
/// `measured = None` for a failed run, the measured time of the smallest
/// prediction over `best_measured_s`, the best time measured on any run.
/// `Err(())` when the predicted-fastest run failed; `None` when there is no
/// candidate or no measured time.
pub fn top1_regret(
    candidates: &[(f64, Option<f64>)],
    best_measured_s: f64,
) -> Option<Result<f64, ()>> {
    // First of the smallest predictions (stable on ties).
    let chosen = candidates
        .iter()
        .fold(None::<&(f64, Option<f64>)>, |acc, p| match acc {
            Some(a) if a.0 <= p.0 => Some(a),
            _ => Some(p),
        })?;
    if !(best_measured_s.is_finite() && best_measured_s > 0.0) {
        return None;
    }
    Some(match chosen.1 {
        Some(m) => Ok(m / best_measured_s),
        None => Err(()),
    })
}

/// Prices every run of `dataset` with `cost` and compares with the
/// measurements. Peak memory comes from the estimate when the cost model
/// has a memory model, else from [`plan_memory`] under the plan's setup; a run is
/// predicted infeasible when some device overflows.
pub fn validate_dataset(dataset: &Dataset, cost: &dyn CostModel) -> DatasetReport {
    let calibration = cost
        .calibration()
        .unwrap_or(crate::cost::Calibration::FITTED);
    let mut details = Vec::with_capacity(dataset.runs.len());
    for run in &dataset.runs {
        let inputs = Inputs {
            model: &dataset.model,
            cluster: &run.cluster,
            profile: run.profile.as_ref().unwrap_or(&dataset.profile),
        };
        let (measured_s, failed) = match run.outcome {
            Outcome::Completed(s) => (Some(s), false),
            Outcome::Failed => (None, true),
        };
        let mut r = RunReport {
            name: run.name.clone(),
            tp: run.plan.uniform_tp(),
            dp: run.plan.dp(),
            pp: run.plan.pp(),
            micro_batch: run.plan.micro_batch,
            measured_s,
            failed,
            predicted_s: None,
            measured_peak_bytes: run.measured_peak_bytes,
            predicted_peak_bytes: None,
            predicted_reading_bytes: None,
            predicted_infeasible: false,
            measured_grad_reduce_s: run.measured_grad_reduce_s,
            predicted_grad_reduce_s: None,
            error: None,
        };
        let memory = match cost.evaluate(&inputs, &run.plan) {
            Ok(est) => {
                r.predicted_s = Some(est.iteration_s);
                r.predicted_grad_reduce_s = Some(est.breakdown.dp_allreduce_s);
                est.memory
            }
            Err(e) => {
                r.error = Some(e.to_string());
                Vec::new()
            }
        };
        // Memory does not depend on the time model: fall back to the memory
        // model, with the model's reserve (the fitted one for a model
        // without constants), when the cost model has none or could not
        // price the run.
        let memory = if memory.is_empty() {
            plan_memory(
                &dataset.model,
                &run.cluster,
                &run.plan,
                calibration.framework_reserve_bytes,
            )
        } else {
            memory
        };
        r.predicted_peak_bytes = memory.iter().map(|m| m.peak_bytes).reduce(f64::max);
        r.predicted_reading_bytes = r
            .predicted_peak_bytes
            .map(|b| b + calibration.allocator_cache_bytes);
        r.predicted_infeasible = memory.iter().any(|m| m.overflow_bytes().is_some());
        details.push(r);
    }
    let mut report = summarize(&dataset.name, cost.name(), details);
    name_inputs(&mut report, dataset);
    report
}

/// Fills `report`'s model and clusters from `dataset`, which
/// [`summarize`] leaves out.
pub(crate) fn name_inputs(report: &mut DatasetReport, dataset: &Dataset) {
    report.model = dataset.model.name.clone();
    report.clusters = dataset.runs.iter().map(|r| r.cluster.summary()).collect();
    report.clusters.sort();
    report.clusters.dedup();
}

/// Metrics over per-run verdicts.
pub fn summarize(name: &str, cost_model: &str, details: Vec<RunReport>) -> DatasetReport {
    let priced: Vec<&RunReport> = details.iter().filter(|r| r.predicted_s.is_some()).collect();
    let done: Vec<(f64, f64)> = priced
        .iter()
        .filter_map(|r| Some((r.predicted_s?, r.measured_s?)))
        .collect();
    let (pred, meas): (Vec<f64>, Vec<f64>) = done.iter().cloned().unzip();
    let feasible: Vec<(f64, Option<f64>)> = priced
        .iter()
        .filter(|r| !r.predicted_infeasible && (r.measured_s.is_some() || r.failed))
        .map(|r| (r.predicted_s.unwrap(), r.measured_s))
        .collect();
    let best = meas.iter().cloned().fold(f64::INFINITY, f64::min);
    let regret = top1_regret(&feasible, best);
    let mem: Vec<(f64, f64)> = details
        .iter()
        .filter_map(|r| Some((r.predicted_reading_bytes?, r.measured_peak_bytes?)))
        .collect();
    DatasetReport {
        name: name.to_string(),
        cost_model: cost_model.to_string(),
        model: String::new(),
        clusters: Vec::new(),
        runs: details.len(),
        completed: details.iter().filter(|r| r.measured_s.is_some()).count(),
        failed: details.iter().filter(|r| r.failed).count(),
        unpriced: details.len() - priced.len(),
        spearman: spearman(&pred, &meas),
        kendall_tau_b: kendall_tau_b(&pred, &meas),
        top1_regret: regret.and_then(|r| r.ok()),
        top1_failed: matches!(regret, Some(Err(()))),
        time_error: error_stats(&done),
        memory_error: error_stats(&mem),
        grad_reduce_error: error_stats(
            &details
                .iter()
                .filter(|r| r.measured_s.is_some())
                .filter_map(|r| Some((r.predicted_grad_reduce_s?, r.measured_grad_reduce_s?)))
                .collect::<Vec<_>>(),
        ),
        completed_predicted_infeasible: details
            .iter()
            .filter(|r| r.measured_s.is_some() && r.predicted_infeasible)
            .count(),
        failed_predicted_infeasible: details
            .iter()
            .filter(|r| r.failed && r.predicted_infeasible)
            .count(),
        notes: Vec::new(),
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn ranks_average_ties() {
        assert_eq!(
            average_ranks(&[10.0, 20.0, 20.0, 5.0]),
            vec![2.0, 3.5, 3.5, 1.0]
        );
    }

    #[test]
    fn spearman_hand_computed() {
        // Perfect and reversed orders.
        assert!(close(
            spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]).unwrap(),
            1.0
        ));
        assert!(close(
            spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap(),
            -1.0
        ));
        // x ranks 1,2,3,4; y = [1, 3, 2, 4]: d^2 = 0+1+1+0 = 2,
        // rho = 1 - 6*2/(4*15) = 0.8.
        assert!(close(
            spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap(),
            0.8
        ));
        // With a tie: x ranks 1, 2.5, 2.5, 4; y ranks 1, 2, 3, 4. Pearson on
        // ranks: dx = -1.5, 0, 0, 1.5; dy = -1.5, -0.5, 0.5, 1.5;
        // sxy = 4.5, sxx = 4.5, syy = 5 -> 4.5 / sqrt(22.5).
        let r = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!(close(r, 4.5 / 22.5f64.sqrt()), "{r}");
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn kendall_tau_b_hand_computed() {
        // y = [1, 3, 2, 4]: 6 pairs, one discordant: (5 - 1)/6.
        assert!(close(
            kendall_tau_b(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap(),
            4.0 / 6.0
        ));
        // x = [1, 2, 2, 3], y = [1, 2, 3, 4]: 6 pairs, 1 tied in x, 5
        // concordant, 0 discordant: 5 / sqrt(5 * 6).
        let t = kendall_tau_b(&[1.0, 2.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!(close(t, 5.0 / 30f64.sqrt()), "{t}");
    }

    #[test]
    fn regret_and_errors() {
        // Predicted fastest (0.9) measured 1.2; best measured 1.0.
        assert_eq!(
            top1_regret(&[(1.0, Some(1.0)), (0.9, Some(1.2)), (2.0, Some(3.0))], 1.0),
            Some(Ok(1.2))
        );
        assert_eq!(
            top1_regret(&[(1.0, Some(1.0)), (0.5, None)], 1.0),
            Some(Err(()))
        );
        assert_eq!(top1_regret(&[], 1.0), None);
        let e = error_stats(&[(1.1, 1.0), (0.8, 1.0)]).unwrap();
        assert!(close(e.mean, 0.15) && close(e.max, 0.2));
    }

    fn report(pred: Option<f64>, meas: Option<f64>, infeasible: bool) -> RunReport {
        RunReport {
            name: "r".into(),
            tp: Some(1),
            dp: 1,
            pp: 1,
            micro_batch: 1,
            measured_s: meas,
            failed: meas.is_none(),
            predicted_s: pred,
            measured_peak_bytes: None,
            measured_grad_reduce_s: None,
            predicted_grad_reduce_s: None,
            predicted_peak_bytes: None,
            predicted_reading_bytes: None,
            predicted_infeasible: infeasible,
            error: None,
        }
    }

    #[test]
    fn failure_classification() {
        let r = summarize(
            "d",
            "m",
            vec![
                report(Some(1.0), Some(1.0), false),
                report(Some(2.0), Some(2.5), true),
                report(Some(0.5), None, true),
                report(Some(3.0), None, false),
                report(None, Some(1.0), false),
            ],
        );
        assert_eq!((r.runs, r.completed, r.failed, r.unpriced), (5, 3, 2, 1));
        assert_eq!(r.completed_predicted_infeasible, 1);
        assert_eq!(r.failed_predicted_infeasible, 1);
        // The fastest feasible prediction is 1.0 (0.5 is infeasible), and
        // the best measured time among priced runs 1.0.
        assert_eq!(r.top1_regret, Some(1.0));
        assert!(!r.top1_failed);
        let t = r.time_error.unwrap();
        assert_eq!(t.count, 2);
        assert!(close(t.mean, 0.1) && close(t.max, 0.2));
    }
}
