//! Times the whole search of each AMP experiment (the target: under
//! 20 ms per experiment). Run with `cargo bench -p amp-core --bench search`.

use amp_core::cost::amp_paper::{artifact_setup, AmpPaper, SplitRule};
use amp_core::cost::device::DeviceModel;
use amp_core::cost::{CostModel, Inputs};
use amp_core::search::{search, PlacementSearch, SearchOptions};
use amp_data::amp_artifact::Experiment;
use criterion::{criterion_group, criterion_main, Criterion};

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

fn benches(c: &mut Criterion) {
    for e in Experiment::ALL {
        bench_experiment(c, e);
    }
}

criterion_group!(search_benches, benches);
criterion_main!(search_benches);
