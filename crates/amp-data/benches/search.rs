//! Times the whole search of each AMP experiment (target: under 20 ms per
//! experiment) and of Sailor's heterogeneous scenarios on Sailor's own
//! profiles, model sizes and network curves (target: 0.2 s for A100 + V100,
//! 2 s for A100 + V100 + GH200 with 64 nodes each). Run with
//! `cargo bench -p amp-data --bench search`; the Sailor groups are skipped
//! when `../shared/data/sailor` is absent.

use amp_core::cluster::Cluster;
use amp_core::cost::amp_paper::{artifact_setup, AmpPaper, SplitRule};
use amp_core::cost::device::DeviceModel;
use amp_core::cost::{CostModel, Inputs};
use amp_core::search::{search, PlacementSearch, SearchOptions};
use amp_core::{Model, Profile};
use amp_data::amp_artifact::Experiment;
use amp_data::sailor::{self, GpuSpec, Network};
use criterion::{criterion_group, criterion_main, Criterion};
use std::collections::BTreeMap;
use std::path::PathBuf;

// The allocator the `amp` binary runs the search with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench_experiment(c: &mut Criterion, e: Experiment) {
    let (model, cluster, profile) = (e.model(), e.cluster(), e.profile());
    let inputs = Inputs {
        model: &model,
        cluster: &cluster,
        profile: &profile,
    };
    let configs: [(&str, Box<dyn CostModel>, PlacementSearch); 5] = [
        (
            "amp full-placement (default)",
            Box::new(DeviceModel::default()),
            PlacementSearch::Full,
        ),
        (
            "amp artifact-placement",
            Box::new(DeviceModel::default()),
            PlacementSearch::Artifact,
        ),
        (
            "amp-paper artifact-split artifact-placement",
            Box::new(AmpPaper {
                split: SplitRule::Artifact,
            }),
            PlacementSearch::Artifact,
        ),
        (
            "amp-paper exact-split artifact-placement",
            Box::new(AmpPaper {
                split: SplitRule::Exact,
            }),
            PlacementSearch::Artifact,
        ),
        (
            "amp-paper exact-split full-placement",
            Box::new(AmpPaper {
                split: SplitRule::Exact,
            }),
            PlacementSearch::Full,
        ),
    ];
    let mut group = c.benchmark_group(e.name());
    group.sample_size(20);
    for (name, model, placement) in configs.iter() {
        let opts = SearchOptions::new(e.global_batch(), *placement, artifact_setup());
        group.bench_function(*name, |b| {
            b.iter(|| search(&inputs, model.as_ref(), &opts).unwrap())
        });
    }
    group.finish();
}

/// Sailor's reference data, read once.
struct Sailor {
    dir: PathBuf,
    llm: String,
    profiles: String,
    gpus: BTreeMap<String, GpuSpec>,
    network: Network,
}

impl Sailor {
    fn load() -> Option<Sailor> {
        let dir = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/sailor"
        ));
        if !dir.is_dir() {
            eprintln!(
                "skipping the Sailor benchmarks: {} is absent",
                dir.display()
            );
            return None;
        }
        let read = |rel: &str| std::fs::read_to_string(dir.join(rel)).unwrap();
        Some(Sailor {
            llm: read("llm_info.json"),
            profiles: read("profiles.json"),
            gpus: sailor::parse_cluster_config(&read("cluster_config.json"), "cluster_config.json")
                .unwrap(),
            network: Network::parse(
                &read("network/intra_node_bandwidths.json"),
                "intra",
                &read("network/inter_node_bandwidths.json"),
                "inter",
            )
            .unwrap(),
            dir,
        })
    }

    /// Model and profile of `training/<file>`, and the runs' setup.
    fn model(&self, training_file: &str) -> (Model, Profile, amp_core::TrainingSetup) {
        let text = std::fs::read_to_string(self.dir.join("training").join(training_file)).unwrap();
        let t = sailor::parse_training(&text, training_file).unwrap();
        let (model, profile) = sailor::model_and_profile(
            &self.llm,
            "llm_info.json",
            &self.profiles,
            "profiles.json",
            &t,
        )
        .unwrap();
        let setup = sailor::training_setup(profile.precision);
        (model, profile, setup)
    }

    /// `count` nodes of `gpus` GPUs of each (Sailor GPU name, count), all in
    /// one zone, as `sailor::node_kinds_cluster` builds them (`amp plan
    /// --sailor-data`).
    fn cluster(&self, kinds: &[(&str, usize)], gpus: usize) -> Cluster {
        let kinds: Vec<(String, usize, usize)> = kinds
            .iter()
            .map(|&(g, n)| (g.to_string(), n, gpus))
            .collect();
        sailor::node_kinds_cluster(&kinds, &self.gpus, &self.network, sailor::DEFAULT_ZONE).unwrap()
    }
}

/// Sailor's heterogeneous scenario: OPT-350M and GPT-Neo-2.7B at global
/// batch 1024 on A100-40GB + V100-16GB nodes of 4 GPUs (32+96, 80+240 and
/// 128+384 GPUs), and OPT-350M on A100 + V100 + GH200, 64 nodes of each.
fn sailor_benches(c: &mut Criterion) {
    let Some(data) = Sailor::load() else {
        return;
    };
    let model = DeviceModel::default();
    let mut run = |group: &str, training: &str, kinds: &[(&str, usize)], samples: usize| {
        let (m, profile, setup) = data.model(training);
        let cluster = data.cluster(kinds, 4);
        let inputs = Inputs {
            model: &m,
            cluster: &cluster,
            profile: &profile,
        };
        let opts = SearchOptions {
            keep: 10,
            ..SearchOptions::new(1024, PlacementSearch::Full, setup)
        };
        let r = search(&inputs, &model, &opts).unwrap();
        eprintln!(
            "{group} {}: {} candidates, node orders {:?}, best {:.4} s (tp {} pp {} dp {} mbs {})",
            cluster.name,
            r.candidates,
            r.node_orders,
            r.plans[0].estimate.iteration_s,
            r.plans[0].tp,
            r.plans[0].pp,
            r.plans[0].dp,
            r.plans[0].micro_batch
        );
        let mut g = c.benchmark_group(group);
        g.sample_size(samples);
        g.bench_function(cluster.name.as_str(), |b| {
            b.iter(|| search(&inputs, &model, &opts).unwrap())
        });
        g.finish();
    };
    for (a100, v100) in [(8, 24), (20, 60), (32, 96)] {
        run(
            "sailor-opt-350m",
            "opt-350m.json",
            &[("A100-40", a100), ("V100-16", v100)],
            10,
        );
    }
    for (a100, v100) in [(8, 24), (20, 60), (32, 96)] {
        run(
            "sailor-gpt-neo-2.7b",
            "gpt-neo-2.7b.json",
            &[("A100-40", a100), ("V100-16", v100)],
            10,
        );
    }
    heuristic_loss(&data, &model);
    run(
        "sailor-three-types",
        "opt-350m.json",
        &[("A100-40", 64), ("V100-16", 64), ("GH-96", 64)],
        10,
    );
}

/// The classes-together heuristic against the exhaustive search where both
/// run: OPT-350M on A100 + V100 + GH200, 2 nodes of each with pair links (90
/// class orders; the heuristic is forced by a bound of 10 and tries 6).
fn heuristic_loss(data: &Sailor, model: &DeviceModel) {
    let (m, profile, setup) = data.model("opt-350m.json");
    let cluster = data.cluster(&[("A100-40", 2), ("V100-16", 2), ("GH-96", 2)], 4);
    let inputs = Inputs {
        model: &m,
        cluster: &cluster,
        profile: &profile,
    };
    let best = |max_node_orders: usize| {
        let opts = SearchOptions {
            keep: 1,
            max_node_orders,
            ..SearchOptions::new(1024, PlacementSearch::Full, setup)
        };
        let r = search(&inputs, model, &opts).unwrap();
        (r.plans[0].estimate.iteration_s, r.candidates, r.node_orders)
    };
    let (exact, n_exact, how_exact) = best(amp_core::search::MAX_NODE_ORDERS);
    let (heur, n_heur, how_heur) = best(10);
    eprintln!(
        "heuristic loss on {}: exhaustive {exact:.4} s ({n_exact} candidates, {how_exact:?}), classes together {heur:.4} s ({n_heur} candidates, {how_heur:?}): {:+.2}%",
        cluster.name,
        (heur / exact - 1.0) * 100.0
    );
}

fn benches(c: &mut Criterion) {
    for e in Experiment::ALL {
        bench_experiment(c, e);
    }
    sailor_benches(c);
}

criterion_group!(search_benches, benches);
criterion_main!(search_benches);
