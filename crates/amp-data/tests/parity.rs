//! Parity with the AMP artifact: amp's `amp-paper` cost model reproduces the
//! artifact's own predictions (`../shared/data/amp-paper/predictions`).

use std::path::PathBuf;

use amp_core::cost::amp_paper::{artifact_setup, AmpPaper, SplitRule};
use amp_core::cost::{CostModel, Inputs};
use amp_core::placement::{DeviceGrid, Placement};
use amp_core::search::{plan_from_grid, search, PlacementSearch, SearchOptions};
use amp_data::amp_artifact::{parse_csv, ArtifactRow, Experiment};

fn predictions(e: Experiment) -> Option<Vec<ArtifactRow>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/amp-paper/predictions")
        .join(format!("{}.csv", e.file_stem()));
    let Ok(text) = std::fs::read_to_string(&path) else {
        // CI lays shared/ beside the clone: missing data fails there.
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is absent but CI is set",
            path.display()
        );
        return None;
    };
    Some(parse_csv(&text, &path.display().to_string()).unwrap())
}

struct Setup {
    model: amp_core::model::Model,
    cluster: amp_core::cluster::Cluster,
    profile: amp_core::profile::Profile,
}

impl Setup {
    fn new(e: Experiment) -> Setup {
        Setup {
            model: e.model(),
            cluster: e.cluster(),
            profile: e.profile(),
        }
    }
    fn inputs(&self) -> Inputs<'_> {
        Inputs {
            model: &self.model,
            cluster: &self.cluster,
            profile: &self.profile,
        }
    }
}

/// Our amp-paper price of an artifact row, with the artifact's boundaries.
fn price_row(s: &Setup, e: Experiment, row: &ArtifactRow) -> f64 {
    let grid = DeviceGrid::new(
        &s.cluster,
        row.tp,
        row.dp,
        row.pp,
        &Placement::artifact_default(&s.cluster),
    );
    let b = e.global_batch() / (row.dp * row.micro_batch);
    let plan = plan_from_grid(
        &grid,
        &row.boundaries,
        row.micro_batch,
        b,
        &artifact_setup(),
    );
    AmpPaper::default()
        .evaluate(&s.inputs(), &plan)
        .unwrap()
        .iteration_s
}

fn check_costs(e: Experiment, tolerance: f64) {
    let Some(rows) = predictions(e) else {
        eprintln!("skipping: ../shared/data not found");
        return;
    };
    let s = Setup::new(e);
    let mut worst: f64 = 0.0;
    for row in &rows {
        let ours = price_row(&s, e, row);
        let theirs = row.amp_predicted_s.unwrap();
        let err = (ours - theirs).abs() / theirs;
        worst = worst.max(err);
        assert!(
            err <= tolerance,
            "{}: mbs {} tp {} dp {} pp {} {:?}: ours {ours:.4} artifact {theirs:.4} ({:.2}%)",
            e.name(),
            row.micro_batch,
            row.tp,
            row.dp,
            row.pp,
            row.boundaries,
            err * 100.0
        );
    }
    eprintln!(
        "{}: {} candidates, worst relative error {:.3}%",
        e.name(),
        rows.len(),
        worst * 100.0
    );
}

#[test]
fn homogeneous_costs_match_within_1_percent() {
    check_costs(Experiment::Homogeneous, 0.01);
}

#[test]
fn het_cluster_costs_match_within_1_percent() {
    check_costs(Experiment::HetCluster, 0.01);
}

#[test]
fn het_model_costs_match_within_5_percent() {
    check_costs(Experiment::HetModel, 0.05);
}

fn artifact_search(
    s: &Setup,
    e: Experiment,
    split: SplitRule,
) -> Vec<amp_core::search::RankedPlan> {
    search(
        &s.inputs(),
        &AmpPaper { split },
        &SearchOptions::new(
            e.global_batch(),
            PlacementSearch::Artifact,
            artifact_setup(),
        ),
    )
    .unwrap()
    .plans
}

/// The exact partition never does worse than the artifact's, priced the same way.
fn check_exact_never_worse(e: Experiment) {
    let Some(rows) = predictions(e) else { return };
    let s = Setup::new(e);
    let ours = artifact_search(&s, e, SplitRule::Exact);
    assert_eq!(ours.len(), rows.len(), "same candidate set");
    let mut better = 0;
    for row in &rows {
        let p = ours
            .iter()
            .find(|p| {
                (p.tp, p.dp, p.pp, p.micro_batch) == (row.tp, row.dp, row.pp, row.micro_batch)
            })
            .unwrap_or_else(|| panic!("candidate {row:?} missing"));
        let theirs = price_row(&s, e, row);
        assert!(
            p.estimate.iteration_s <= theirs * (1.0 + 1e-9),
            "{row:?}: ours {} > artifact split {theirs}",
            p.estimate.iteration_s
        );
        if p.estimate.iteration_s < theirs * (1.0 - 1e-6) {
            better += 1;
        }
    }
    eprintln!(
        "{}: exact partition strictly better on {better} of {} candidates",
        e.name(),
        rows.len()
    );
}

#[test]
fn exact_partition_never_worse_homogeneous() {
    check_exact_never_worse(Experiment::Homogeneous);
}

#[test]
fn exact_partition_never_worse_het_cluster() {
    check_exact_never_worse(Experiment::HetCluster);
}

#[test]
fn exact_partition_never_worse_het_model() {
    check_exact_never_worse(Experiment::HetModel);
}

fn check_top10(e: Experiment) {
    let Some(rows) = predictions(e) else { return };
    let s = Setup::new(e);
    let ours: Vec<_> = artifact_search(&s, e, SplitRule::Artifact)
        .iter()
        .take(10)
        .map(|p| (p.micro_batch, p.tp, p.dp, p.pp))
        .collect();
    let theirs: Vec<_> = rows
        .iter()
        .take(10)
        .map(|r| (r.micro_batch, r.tp, r.dp, r.pp))
        .collect();
    assert_eq!(ours, theirs, "top-10 (mbs, tp, dp, pp) of {}", e.name());
}

#[test]
fn top10_matches_homogeneous() {
    check_top10(Experiment::Homogeneous);
}

#[test]
fn top10_matches_het_cluster() {
    check_top10(Experiment::HetCluster);
}

/// With the artifact's partitioner, amp finds the artifact's own split for
/// every GPT-2 candidate (and so its cost, within 1%). For TransGAN, amp's
/// model carries the real activation sizes where the artifact assumed
/// 82,944 elements at every cut, and applies the GPT-2 single-micro-batch
/// rule (the artifact's TransGAN rule counts the input layer as a block):
/// there the test asks for the artifact's cost within 5% and reports how
/// many splits agree.
fn check_artifact_partitioner(e: Experiment, exact: bool) {
    let Some(rows) = predictions(e) else { return };
    let s = Setup::new(e);
    let ours = artifact_search(&s, e, SplitRule::Artifact);
    let (tolerance, mut same) = (if exact { 0.01 } else { 0.05 }, 0);
    for row in &rows {
        let p = ours
            .iter()
            .find(|p| {
                (p.tp, p.dp, p.pp, p.micro_batch) == (row.tp, row.dp, row.pp, row.micro_batch)
            })
            .unwrap();
        let theirs = row.amp_predicted_s.unwrap();
        let err = (p.estimate.iteration_s - theirs).abs() / theirs;
        assert!(
            err < tolerance,
            "{row:?}: ours {} {:?}",
            p.estimate.iteration_s,
            p.plan.boundaries()
        );
        if exact {
            assert_eq!(p.plan.boundaries(), row.boundaries, "{row:?}");
        }
        same += usize::from(p.plan.boundaries() == row.boundaries);
    }
    eprintln!(
        "{}: artifact split reproduced on {same} of {} candidates",
        e.name(),
        rows.len()
    );
}

#[test]
fn artifact_splits_reproduced_homogeneous() {
    check_artifact_partitioner(Experiment::Homogeneous, true);
}

#[test]
fn artifact_splits_reproduced_het_cluster() {
    check_artifact_partitioner(Experiment::HetCluster, true);
}

#[test]
fn artifact_partitioner_close_on_het_model() {
    check_artifact_partitioner(Experiment::HetModel, false);
}
