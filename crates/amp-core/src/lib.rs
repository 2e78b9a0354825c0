//! amp: find fast model-parallel training plans for a model on a cluster.
//!
//! Data flows one way: inputs ([`Model`], [`Cluster`], [`Profile`]) ->
//! candidate plans ([`search`]) -> cost ([`cost`]) -> ranked plans
//! ([`Plan`]). No I/O happens here: parsing functions take strings or bytes,
//! and the CLI reads files.
//!
//! The three entry points are [`plan()`], [`evaluate()`] and [`validate()`]; the
//! modules hold the pieces for finer control.
//!
//! ```
//! use amp_core::{cluster::builtin as clusters, model::builtin as models};
//!
//! // The AMP paper's GPT-2 on its mixed V100/T4 cluster.
//! let (model, cluster) = (models::amp_gpt2(), clusters::het_cluster());
//! // Per-sample forward times of every layer on both GPU types, at tp 1
//! // (a real profile comes from measurements: amp-data reads AMP's and
//! // Sailor's, the amp_planner profiler makes your own).
//! let times = |t: f64| vec![t.to_string(); 30].join(", ");
//! let profile = amp_core::Profile::from_toml_str(&format!(
//!     "[[entries]]\ngpu = \"V100-16GB\"\ntp = 1\nforward_s = [{}]\n\
//!      [[entries]]\ngpu = \"T4\"\ntp = 1\nforward_s = [{}]\n",
//!     times(0.002),
//!     times(0.005)
//! ), "profile.toml")?;
//! let found = amp_core::plan(&model, &cluster, &profile, 32, &amp_core::PlanOptions::default())?;
//! let best = &found.plans[0];
//! assert_eq!(best.tp * best.dp * best.pp, 16);
//!
//! // Re-price the winner on its own: same model, same answer.
//! let again = amp_core::evaluate(&model, &cluster, &profile, &best.plan)?;
//! assert_eq!(again.iteration_s, best.estimate.iteration_s);
//! # Ok::<(), amp_core::AmpError>(())
//! ```

#![deny(missing_docs)]

pub mod baseline;
pub mod cluster;
pub mod cost;
pub mod error;
pub mod fit;
pub mod limits;
pub mod memory;
pub mod model;
pub mod partition;
pub mod placement;
pub mod plan;
pub mod profile;
pub mod rank_order;
pub mod refine;
pub mod schedule;
pub mod search;
pub mod sensitivity;
pub mod setup;
pub mod setup_search;
pub mod strict;
pub mod subset_search;
pub mod type_tp_search;
pub mod uneven;
pub mod validate;

pub use cluster::{Cluster, ClusterDescription, Device, GpuDefinition, Node};
pub use cost::{Breakdown, DeviceMemory, Estimate};
pub use error::{AmpError, Result};
pub use model::{Layer, LayerKind, Model};
pub use plan::{Plan, Stage};
pub use profile::{Profile, ProfileEntry};
pub use search::{PlacementSearch, RankedPlan, SearchResult};
pub use setup::TrainingSetup;

use cost::device::DeviceModel;
use cost::Inputs;

/// Options of [`plan()`].
#[derive(Debug, Clone, Copy)]
pub struct PlanOptions {
    /// Which placements to try (default: all of them).
    pub placement: PlacementSearch,
    /// How the job trains; every plan found records it.
    pub setup: TrainingSetup,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            placement: PlacementSearch::Full,
            setup: TrainingSetup::default(),
        }
    }
}

/// Searches every plan of `model` on `cluster` for `global_batch` samples
/// per iteration and returns those that fit, fastest first, priced by amp's
/// per-device cost model.
///
/// ```
/// use amp_core::{cluster::builtin as clusters, model::builtin as models};
/// use amp_core::{PlacementSearch, PlanOptions};
///
/// let times = vec!["0.005"; 30].join(", ");
/// let profile = amp_core::Profile::from_toml_str(
///     &format!("[[entries]]\ngpu = \"T4\"\ntp = 1\nforward_s = [{times}]\n"),
///     "profile.toml",
/// )?;
/// let opts = PlanOptions { placement: PlacementSearch::Artifact, ..Default::default() };
/// let found = amp_core::plan(&models::amp_gpt2(), &clusters::homogeneous(), &profile, 32, &opts)?;
/// let times: Vec<f64> = found.plans.iter().map(|p| p.estimate.iteration_s).collect();
/// assert!(times.windows(2).all(|w| w[0] <= w[1]));
/// # Ok::<(), amp_core::AmpError>(())
/// ```
pub fn plan(
    model: &Model,
    cluster: &Cluster,
    profile: &Profile,
    global_batch: usize,
    options: &PlanOptions,
) -> Result<SearchResult> {
    let inputs = Inputs {
        model,
        cluster,
        profile,
    };
    search::search(
        &inputs,
        &DeviceModel::default(),
        &search::SearchOptions::new(global_batch, options.placement, options.setup),
    )
}

/// Prices one plan with amp's per-device cost model: iteration time, its
/// breakdown and the peak memory of every device.
///
/// ```
/// use amp_core::{cluster::builtin as clusters, model::builtin as models};
/// use amp_core::{placement::{DeviceGrid, Placement}, search::plan_from_grid};
///
/// let (model, cluster) = (models::amp_gpt2(), clusters::het_cluster());
/// let times = |t: f64| vec![t.to_string(); 30].join(", ");
/// let profile = amp_core::Profile::from_toml_str(&format!(
///     "[[entries]]\ngpu = \"V100-16GB\"\ntp = 1\nforward_s = [{}]\n\
///      [[entries]]\ngpu = \"T4\"\ntp = 1\nforward_s = [{}]\n",
///     times(0.002),
///     times(0.005)
/// ), "profile.toml")?;
/// // tp 1, dp 4, pp 4 in the artifact's rank order, split 7/7/6/10 layers, 8 micro-batches of 1.
/// let grid = DeviceGrid::new(&cluster, 1, 4, 4, &Placement::artifact_default(&cluster));
/// let plan = plan_from_grid(&grid, &[0, 7, 14, 20, 30], 1, 8, &Default::default());
/// let est = amp_core::evaluate(&model, &cluster, &profile, &plan)?;
/// assert!(est.iteration_s > 0.0);
/// assert_eq!(est.memory.len(), 16);
/// # Ok::<(), amp_core::AmpError>(())
/// ```
pub fn evaluate(
    model: &Model,
    cluster: &Cluster,
    profile: &Profile,
    plan: &Plan,
) -> Result<Estimate> {
    use cost::CostModel;
    DeviceModel::default().evaluate(
        &Inputs {
            model,
            cluster,
            profile,
        },
        plan,
    )
}

/// Predicts every run of a measured dataset with amp's per-device cost model
/// and scores the predictions (rank correlation, top-1 regret, errors,
/// failures).
///
/// ```
/// use amp_core::{cluster::builtin as clusters, model::builtin as models};
/// use amp_core::validate::{Dataset, Outcome, Run};
/// use amp_core::{placement::{DeviceGrid, Placement}, search::plan_from_grid};
///
/// let cluster = clusters::homogeneous();
/// let times = vec!["0.005"; 30].join(", ");
/// let profile = amp_core::Profile::from_toml_str(
///     &format!("[[entries]]\ngpu = \"T4\"\ntp = 1\nforward_s = [{times}]\n"),
///     "profile.toml",
/// )?;
/// let run = |dp: usize, pp: usize, b: &[usize], s: f64| Run {
///     name: format!("dp{dp} pp{pp}"),
///     cluster: cluster.clone(),
///     plan: plan_from_grid(&DeviceGrid::new(&cluster, 1, dp, pp, &Placement::artifact_default(&cluster)), b, 1, 32 / dp, &Default::default()),
///     outcome: Outcome::Completed(s),
///     measured_peak_bytes: None,
///     measured_grad_reduce_s: None,
///     profile: None,
/// };
/// // Two of the artifact's measured runs.
/// let data = Dataset {
///     name: "two runs".into(),
///     model: models::amp_gpt2(),
///     profile,
///     runs: vec![run(8, 2, &[0, 15, 30], 1.28), run(4, 4, &[0, 9, 15, 21, 30], 1.2)],
/// };
/// let report = amp_core::validate(&data);
/// assert_eq!(report.completed, 2);
/// # Ok::<(), amp_core::AmpError>(())
/// ```
pub fn validate(dataset: &validate::Dataset) -> validate::DatasetReport {
    validate::validate_dataset(dataset, &DeviceModel::default())
}
