//! Communication primitives, priced on the cluster's real links. Every cost
//! model that needs a collective calls the one function here for it, so that
//! an all-reduce costs the same wherever it happens.
//!
//! Links come from [`Cluster::link_bytes_per_s`] (the nominal figure of the
//! cluster file: intra-node GPU link, or the slower of two NICs). Two
//! effects turn nominal into achieved time:
//!
//! - a latency per message step, [`INTRA_NODE_LATENCY_S`] or
//!   [`INTER_NODE_LATENCY_S`];
//! - the achieved fraction of an inter-node link,
//!   [`INTER_NODE_EFFICIENCY`]; intra-node links run at their nominal rate;
//! - flows that leave (or enter) the same node at the same time share its
//!   NIC: a concurrent set of collectives divides an inter-node link's
//!   bandwidth by the number of flows through the busiest NIC of that link.
//!
//! Ring collectives follow NCCL's ring: the group's devices are ordered by
//! (node, GPU), so each node is entered and left once per ring, and the ring
//! runs at the pace of its slowest hop.

use std::collections::BTreeMap;

use crate::cluster::{Cluster, Device};

/// Start-up latency of one message step between two GPUs of one node
/// (NVLink or PCIe through the host), seconds. NCCL's small-message
/// all-reduce latency inside a node is a few microseconds per step
/// (nccl-tests on PCIe and NVLink machines); 10 us is a round, conservative
/// figure.
pub const INTRA_NODE_LATENCY_S: f64 = 10e-6;

/// Start-up latency of one message step between two nodes, seconds: a
/// network round trip plus the transport's software overhead (TCP sockets or
/// RDMA), typically a few tens of microseconds.
pub const INTER_NODE_LATENCY_S: f64 = 30e-6;

/// Fraction of a NIC's nominal bandwidth a collective achieves between
/// nodes. NCCL over TCP sockets (AWS instances without EFA, the AMP paper's
/// clusters) typically reaches about half the line rate. Chosen on the AMP
/// homogeneous measurements (T4 cluster, 50 Gbit/s), where fits of 0.4-0.6
/// were equivalent and 0.5 gave the best ranking; the same value is used
/// for every cluster.
///
/// Cross-check on links given as measured figures (Sailor's GH200 curves,
/// from a standalone NCCL send/recv benchmark between otherwise idle
/// GPUs, 22.9 GB/s per GPU pair): in its training runs the recorded
/// gradient all-reduce times (`red_grads` of the plan files, 0.077 s for
/// 32 fp32 OPT-350 replicas, 0.104 s for 16) and the pipeline-parallel
/// runs' per-micro-batch cost are also consistent with about half the
/// benchmark rate (0.072 s and 0.069 s predicted at 0.5; at 1.0 the
/// four-stage runs come out 10-11 % fast), and Sailor's own
/// simulator notes a factor of 2 for NCCL's lack of bidirectional
/// transfers. So 0.5 applies to measured figures too.
pub const INTER_NODE_EFFICIENCY: f64 = 0.5;

/// A link as a collective sees it: achieved bandwidth and latency per step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    pub bytes_per_s: f64,
    pub latency_s: f64,
}

/// The link between two devices, with achieved (not nominal) bandwidth.
pub fn link(cluster: &Cluster, a: Device, b: Device) -> Link {
    let nominal = cluster.link_bytes_per_s(a, b);
    if a.node == b.node {
        Link {
            bytes_per_s: nominal,
            latency_s: INTRA_NODE_LATENCY_S,
        }
    } else {
        Link {
            bytes_per_s: nominal * INTER_NODE_EFFICIENCY,
            latency_s: INTER_NODE_LATENCY_S,
        }
    }
}

/// Counts, per node, the inter-node flows leaving and entering it.
#[derive(Debug, Default)]
struct NicLoad {
    out: BTreeMap<usize, usize>,
    inn: BTreeMap<usize, usize>,
}

impl NicLoad {
    fn add(&mut self, from: Device, to: Device) {
        if from.node != to.node {
            *self.out.entry(from.node).or_default() += 1;
            *self.inn.entry(to.node).or_default() += 1;
        }
    }

    /// Flows sharing the busier NIC of hop `from -> to` (1 for intra-node).
    fn sharing(&self, from: Device, to: Device) -> usize {
        if from.node == to.node {
            return 1;
        }
        let o = self.out.get(&from.node).copied().unwrap_or(1);
        let i = self.inn.get(&to.node).copied().unwrap_or(1);
        o.max(i).max(1)
    }
}

/// NCCL's ring order: devices sorted by (node, GPU).
pub fn ring_order(devices: &[Device]) -> Vec<Device> {
    let mut r = devices.to_vec();
    r.sort();
    r
}

/// Hops of a ring in order, the last closing it.
fn ring_hops(ring: &[Device]) -> impl Iterator<Item = (Device, Device)> + '_ {
    (0..ring.len()).map(move |i| (ring[i], ring[(i + 1) % ring.len()]))
}

/// Ring all-reduce of `bytes` (per device) over one group of devices, alone
/// on the network: `2 (n-1) alpha + 2 (n-1)/n * bytes / B`, with `B` the
/// slowest hop's achieved bandwidth and `alpha` the largest hop latency.
/// Zero for a group of one.
pub fn allreduce_s(cluster: &Cluster, devices: &[Device], bytes: f64) -> f64 {
    concurrent_allreduce_s(cluster, &[devices.to_vec()], bytes)
}

/// Several ring all-reduces of `bytes` each, run at the same time (one per
/// tensor-parallel rank of a stage, for example): rings whose inter-node
/// hops leave or enter the same node share its NIC. Returns the time of the
/// slowest ring.
pub fn concurrent_allreduce_s(cluster: &Cluster, groups: &[Vec<Device>], bytes: f64) -> f64 {
    ring_collective_s(cluster, groups, bytes, 2.0)
}

/// Ring all-gather (or reduce-scatter, the same traffic) of a buffer of
/// `bytes` in total, each device holding `bytes / n`: `(n-1) alpha + (n-1)/n
/// * bytes / B`.
pub fn allgather_s(cluster: &Cluster, devices: &[Device], bytes: f64) -> f64 {
    ring_collective_s(cluster, &[devices.to_vec()], bytes, 1.0)
}

/// Reduce-scatter: the same traffic as an all-gather.
pub fn reduce_scatter_s(cluster: &Cluster, devices: &[Device], bytes: f64) -> f64 {
    allgather_s(cluster, devices, bytes)
}

/// `phases` = 2 for all-reduce (reduce-scatter then all-gather), 1 for
/// either half.
fn ring_collective_s(cluster: &Cluster, groups: &[Vec<Device>], bytes: f64, phases: f64) -> f64 {
    let rings: Vec<Vec<Device>> = groups.iter().map(|g| ring_order(g)).collect();
    let mut load = NicLoad::default();
    for ring in rings.iter().filter(|r| r.len() > 1) {
        for (a, b) in ring_hops(ring) {
            load.add(a, b);
        }
    }
    let mut worst: f64 = 0.0;
    for ring in rings.iter().filter(|r| r.len() > 1) {
        let n = ring.len() as f64;
        let mut bw = f64::INFINITY;
        let mut alpha: f64 = 0.0;
        for (a, b) in ring_hops(ring) {
            let l = link(cluster, a, b);
            bw = bw.min(l.bytes_per_s / load.sharing(a, b) as f64);
            alpha = alpha.max(l.latency_s);
        }
        let t = phases * (n - 1.0) * alpha + phases * (n - 1.0) / n * bytes / bw;
        worst = worst.max(t);
    }
    worst
}

/// Point-to-point send of `bytes` from `a` to `b`: `alpha + bytes / B`.
/// Zero when `a == b` or `bytes == 0`.
pub fn p2p_s(cluster: &Cluster, a: Device, b: Device, bytes: f64) -> f64 {
    concurrent_p2p_s(cluster, &[(a, b)], bytes)
}

/// Several sends of `bytes` each at the same time (every tensor-parallel
/// rank and every replica crossing one pipeline cut): inter-node flows
/// leaving or entering the same node share its NIC. Returns the time of the
/// slowest send.
pub fn concurrent_p2p_s(cluster: &Cluster, pairs: &[(Device, Device)], bytes: f64) -> f64 {
    if bytes <= 0.0 {
        return 0.0;
    }
    let mut load = NicLoad::default();
    for &(a, b) in pairs {
        load.add(a, b);
    }
    pairs
        .iter()
        .filter(|(a, b)| a != b)
        .map(|&(a, b)| {
            let l = link(cluster, a, b);
            l.latency_s + bytes * load.sharing(a, b) as f64 / l.bytes_per_s
        })
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Node, GBPS_TO_BYTES_PER_S};

    fn d(node: usize, gpu: usize) -> Device {
        Device { node, gpu }
    }

    /// Two nodes of 4 GPUs: 100 GB/s inside a node, 8 GB/s NIC (node 0) and
    /// 4 GB/s NIC (node 1).
    fn cluster() -> Cluster {
        let node = |inter: f64| Node {
            gpu_type: "X".into(),
            gpus: 4,
            intra_bytes_per_s: 100e9,
            inter_bytes_per_s: inter,
            gpu_memory_bytes: None,
            price_per_hour: None,
        };
        Cluster {
            name: "t".into(),
            nodes: vec![node(8e9), node(4e9)],
        }
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} != {b}");
    }

    #[test]
    fn allreduce_inside_a_node() {
        let c = cluster();
        // n = 4: 2*3*10us + 2*3/4 * 1e9 B / 100e9 B/s = 60us + 15ms.
        let t = allreduce_s(&c, &[d(0, 0), d(0, 1), d(0, 2), d(0, 3)], 1e9);
        close(t, 60e-6 + 0.015);
        assert_eq!(allreduce_s(&c, &[d(0, 0)], 1e9), 0.0);
    }

    #[test]
    fn allreduce_across_nodes_runs_at_the_slowest_hop() {
        let c = cluster();
        // Ring 0:0 -> 0:1 -> 1:0 -> 1:1 -> back; the inter-node hops run at
        // min(8, 4) GB/s * 0.5 = 2 GB/s; alpha = 30us.
        // 2*3*30us + 1.5 * 1e9 / 2e9 = 180us + 0.75 s.
        let t = allreduce_s(&c, &[d(1, 1), d(0, 0), d(1, 0), d(0, 1)], 1e9);
        close(t, 180e-6 + 0.75);
    }

    #[test]
    fn concurrent_rings_share_a_nic() {
        let c = cluster();
        // Two rings of 2, each across the nodes: each NIC carries 2 flows
        // out and 2 in, so each hop gets 2 GB/s / 2 = 1 GB/s.
        // 2*1*30us + 2*1/2 * 1e9 / 1e9 = 60us + 1 s.
        let t = concurrent_allreduce_s(&c, &[vec![d(0, 0), d(1, 0)], vec![d(0, 1), d(1, 1)]], 1e9);
        close(t, 60e-6 + 1.0);
        // Rings inside nodes do not load the NIC.
        let t = concurrent_allreduce_s(&c, &[vec![d(0, 0), d(1, 0)], vec![d(0, 1), d(0, 2)]], 1e9);
        close(t, 60e-6 + 0.5);
    }

    #[test]
    fn allgather_is_half_an_allreduce_of_traffic() {
        let c = cluster();
        // (n-1) alpha + (n-1)/n bytes / B = 30us + 0.5 * 1e9 / 2e9.
        close(allgather_s(&c, &[d(0, 0), d(1, 0)], 1e9), 30e-6 + 0.25);
        close(reduce_scatter_s(&c, &[d(0, 0), d(1, 0)], 1e9), 30e-6 + 0.25);
    }

    #[test]
    fn point_to_point() {
        let c = cluster();
        close(p2p_s(&c, d(0, 0), d(0, 1), 1e9), 10e-6 + 0.01);
        close(p2p_s(&c, d(0, 0), d(1, 0), 1e9), 30e-6 + 0.5);
        assert_eq!(p2p_s(&c, d(0, 0), d(0, 0), 1e9), 0.0);
        assert_eq!(p2p_s(&c, d(0, 0), d(1, 0), 0.0), 0.0);
        // Two sends out of node 0 at once share its NIC.
        let t = concurrent_p2p_s(&c, &[(d(0, 0), d(1, 0)), (d(0, 1), d(1, 1))], 1e9);
        close(t, 30e-6 + 1.0);
    }

    #[test]
    fn gbps_units() {
        // 50 Gbit/s inside a node is 6.25 GB/s.
        let mut c = cluster();
        c.nodes[0].intra_bytes_per_s = 50.0 * GBPS_TO_BYTES_PER_S;
        close(p2p_s(&c, d(0, 0), d(0, 1), 6.25e9), 10e-6 + 1.0);
    }
}
