//! Plans and timelines the export and report tests share.
#![allow(dead_code)]

use amp_core::cluster::{builtin as clusters, Cluster, Device};
use amp_core::cost::{Breakdown, DeviceMemory, Estimate};
use amp_core::model::{builtin as models, Model};
use amp_core::placement::{AxisOrder, DeviceGrid, Placement};
use amp_core::plan::{Plan, Stage};
use amp_core::schedule::{Event, EventKind, Timeline};
use amp_core::search::plan_from_grid;

pub fn gpt2() -> Model {
    models::amp_gpt2()
}

/// GPT-2 (30 entries, 24 blocks) on 4 x 4 T4: tp 2, dp 2, pp 4, six
/// blocks per stage.
pub fn homogeneous() -> (Plan, Model, Cluster) {
    let c = clusters::homogeneous();
    let g = DeviceGrid::new(&c, 2, 2, 4, &Placement::artifact_default(&c));
    (
        plan_from_grid(
            &g,
            &[0, 8, 14, 20, 30],
            2,
            4,
            &amp_core::cost::amp_paper::artifact_setup(),
        ),
        gpt2(),
        c,
    )
}

/// GPT-2 on 3 x p3.8xlarge + 1 x g4dn.12xlarge with the T4 node first
/// (node order 3, 0, 1, 2): blocks 5/7/7/5.
pub fn uneven() -> (Plan, Model, Cluster) {
    let c = clusters::het_cluster();
    let p = Placement {
        axis_order: AxisOrder::DEFAULT,
        node_order: vec![3, 0, 1, 2],
    };
    let g = DeviceGrid::new(&c, 2, 2, 4, &p);
    (
        plan_from_grid(
            &g,
            &[0, 7, 14, 21, 30],
            1,
            8,
            &amp_core::cost::amp_paper::artifact_setup(),
        ),
        gpt2(),
        c,
    )
}

/// Blocks 5/6/8/5: the middle stages differ.
pub fn uneven_middle() -> (Plan, Model, Cluster) {
    let (mut p, m, c) = uneven();
    p.stages[1].end_layer = 13;
    p.stages[2].first_layer = 13;
    (p, m, c)
}

fn d(node: usize, gpu: usize) -> Device {
    Device { node, gpu }
}

/// Stage 0 on the T4 node with tensor parallelism 2, stage 1 on a V100 node
/// without: a plan only a per-stage engine can run.
pub fn mixed_tp() -> (Plan, Model, Cluster) {
    let c = clusters::het_cluster();
    let p = Plan {
        micro_batch: 1,
        num_micro_batches: 8,
        replica_micro_batches: Vec::new(),
        stages: vec![
            Stage {
                first_layer: 0,
                end_layer: 12,
                replicas: vec![vec![d(3, 0), d(3, 1)], vec![d(3, 2), d(3, 3)]],
            },
            Stage {
                first_layer: 12,
                end_layer: 30,
                replicas: vec![vec![d(0, 0)], vec![d(0, 1)]],
            },
        ],
        setup: amp_core::cost::amp_paper::artifact_setup(),
    };
    (p, gpt2(), c)
}

/// A large plan: 64 nodes of 4 GPUs, tp 4, dp 8, pp 8 (256 GPUs).
pub fn large() -> (Plan, Model, Cluster) {
    let mut c = clusters::homogeneous();
    c.nodes = vec![clusters::g4dn_12xlarge(); 64];
    c.name = "64x g4dn.12xlarge".into();
    let g = DeviceGrid::new(&c, 4, 8, 8, &Placement::artifact_default(&c));
    let m = models::gpt2(48, 2048, 1024, 50304);
    // 54 entries: blocks are 2..50; 6 blocks per stage.
    let mut b = vec![0];
    for j in 1..8 {
        b.push(2 + 6 * j);
    }
    b.push(54);
    (
        plan_from_grid(&g, &b, 1, 32, &amp_core::cost::amp_paper::artifact_setup()),
        m,
        c,
    )
}

/// An event built through serde so that the test does not depend on which
/// optional fields (such as the replica) the shared type has.
fn ev(
    stage: usize,
    micro_batch: Option<usize>,
    kind: EventKind,
    start_s: f64,
    end_s: f64,
) -> Event {
    serde_json::from_value(serde_json::json!({
        "stage": stage,
        "micro_batch": micro_batch,
        "kind": kind,
        "start_s": start_s,
        "end_s": end_s,
    }))
    .expect("an event")
}

/// One 1F1B iteration simulated from per-stage forward/backward times and
/// a fixed send time: each op starts when its stage is free and its input
/// has arrived. Then a data-parallel all-reduce and the optimizer per stage.
pub fn one_f_one_b(pp: usize, m: usize, fwd_s: &[f64], bwd_s: &[f64], send_s: f64) -> Timeline {
    #[derive(Clone, Copy)]
    enum Op {
        F(usize),
        B(usize),
    }
    let orders: Vec<Vec<Op>> = (0..pp)
        .map(|j| {
            let warm = (pp - j - 1).min(m);
            let mut o: Vec<Op> = (0..warm).map(Op::F).collect();
            let mut f = warm;
            let mut b = 0;
            while b < m {
                if f < m {
                    o.push(Op::F(f));
                    f += 1;
                }
                o.push(Op::B(b));
                b += 1;
            }
            o
        })
        .collect();
    let mut f_end = vec![vec![f64::NAN; m]; pp];
    let mut b_end = vec![vec![f64::NAN; m]; pp];
    let mut next = vec![0usize; pp];
    let mut free = vec![0.0f64; pp];
    let mut events = Vec::new();
    let mut progress = true;
    while progress {
        progress = false;
        for j in 0..pp {
            while next[j] < orders[j].len() {
                let op = orders[j][next[j]];
                let ready = match op {
                    Op::F(_) if j == 0 => Some(0.0),
                    Op::F(i) => (!f_end[j - 1][i].is_nan()).then(|| f_end[j - 1][i] + send_s),
                    Op::B(i) if j == pp - 1 => (!f_end[j][i].is_nan()).then_some(f_end[j][i]),
                    Op::B(i) => (!b_end[j + 1][i].is_nan()).then(|| b_end[j + 1][i] + send_s),
                };
                let Some(ready) = ready else { break };
                let start = ready.max(free[j]);
                let (kind, i, dur) = match op {
                    Op::F(i) => (EventKind::Forward, i, fwd_s[j]),
                    Op::B(i) => (EventKind::Backward, i, bwd_s[j]),
                };
                let end = start + dur;
                events.push(ev(j, Some(i), kind, start, end));
                match op {
                    Op::F(i) => {
                        f_end[j][i] = end;
                        if j + 1 < pp {
                            events.push(ev(j, Some(i), EventKind::SendForward, end, end + send_s));
                        }
                    }
                    Op::B(i) => {
                        b_end[j][i] = end;
                        if j > 0 {
                            events.push(ev(j, Some(i), EventKind::SendBackward, end, end + send_s));
                        }
                    }
                }
                free[j] = end;
                next[j] += 1;
                progress = true;
            }
        }
    }
    let mut iteration = 0.0f64;
    for (j, &done) in free.iter().enumerate() {
        let ar = done + 2.0 * send_s;
        events.push(ev(j, None, EventKind::AllReduce, done, ar));
        events.push(ev(j, None, EventKind::Optimizer, ar, ar + send_s));
        iteration = iteration.max(ar + send_s);
    }
    Timeline {
        num_stages: pp,
        num_micro_batches: m,
        events,
        iteration_s: iteration,
    }
}

/// An estimate with memory for every device of `plan`, from simple made-up
/// per-stage figures (the report draws whatever it is given).
pub fn estimate(plan: &Plan, cluster: &Cluster, iteration_s: f64) -> Estimate {
    let mut memory = Vec::new();
    for (j, s) in plan.stages.iter().enumerate() {
        for dev in s.devices() {
            let w = 1.0e9 + 0.2e9 * j as f64;
            memory.push(DeviceMemory {
                device: dev,
                stage: j,
                weights_bytes: w,
                gradients_bytes: w,
                optimizer_bytes: 2.0 * w,
                activations_bytes: 3.0e9 / (j + 1) as f64,
                other_bytes: 0.8e9,
                peak_bytes: 4.0 * w + 3.0e9 / (j + 1) as f64 + 0.8e9,
                capacity_bytes: cluster.nodes[dev.node].gpu_memory_bytes.map(|b| b as f64),
            });
        }
    }
    Estimate {
        iteration_s,
        breakdown: Breakdown {
            compute_s: 0.6 * iteration_s,
            bubble_s: 0.2 * iteration_s,
            pipeline_send_s: 0.05 * iteration_s,
            tp_comm_s: 0.05 * iteration_s,
            dp_allreduce_s: 0.07 * iteration_s,
            optimizer_s: 0.03 * iteration_s,
        },
        memory,
    }
}

/// Llama-3-8B (zoo, sequence 8192: 35 entries) on 2 x 8 H100: tp 2, dp 4,
/// pp 2, 16 blocks per stage.
pub fn llama3_8b() -> (Plan, Model, Cluster) {
    let c = amp_catalog::parse_cluster("2x8xH100").unwrap();
    let m = amp_catalog::zoo_model("llama-3-8b", Some(8192)).unwrap();
    let g = DeviceGrid::new(&c, 2, 4, 2, &Placement::artifact_default(&c));
    (
        plan_from_grid(&g, &[0, 17, 35], 1, 8, &Default::default()),
        m,
        c,
    )
}
