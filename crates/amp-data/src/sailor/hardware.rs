//! The GPU catalog (`cluster_config.json`) and the network curves (`network/*.json`): bandwidth by message size, NICs per node, links between node kinds.

use std::collections::BTreeMap;

use serde_json::Value;

use amp_core::cluster::{Cluster, Node, NodeLink};
use amp_core::error::{AmpError, Result};

use super::*;

/// One GPU type of `cluster_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSpec {
    pub gpus_per_node: usize,
    pub memory_bytes: u64,
}

/// `cluster_config.json`: GPU type -> GPUs per node and memory per GPU.
/// Entries that are not objects (the `zone` string) are skipped.
pub fn parse_cluster_config(text: &str, origin: &str) -> Result<BTreeMap<String, GpuSpec>> {
    let root: Value = AmpError::json(text, origin)?;
    let mut out = BTreeMap::new();
    for (gpu, v) in as_object(&root, origin)? {
        let Some(o) = v.as_object() else { continue };
        let at = format!("{origin}: {gpu}");
        let g = o
            .get("gpus_per_node")
            .ok_or_else(|| AmpError::invalid(&at, "missing gpus_per_node"))?;
        let m = o
            .get("mem_per_gpu")
            .ok_or_else(|| AmpError::invalid(&at, "missing mem_per_gpu"))?;
        let g = as_f64(g, &at)?;
        let m = as_f64(m, &at)?;
        if g < 1.0 || m <= 0.0 {
            return Err(AmpError::invalid(
                at,
                "gpus_per_node and mem_per_gpu must be positive",
            ));
        }
        out.insert(
            gpu.clone(),
            GpuSpec {
                gpus_per_node: g as usize,
                memory_bytes: m as u64,
            },
        );
    }
    Ok(out)
}

/// One fitted curve: bandwidth in GB/s = a x^2 + b x + c with x =
/// log2(message bytes / 1e6), capped at `max_bytes_per_s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandwidthCurve {
    pub coeffs: [f64; 3],
    pub max_bytes_per_s: f64,
}

/// Message size at which [`Network`] turns a curve into one bandwidth for
/// a [`Cluster`] link: 64 MB, the order of the data-parallel gradient
/// buckets and large pipeline/tensor-parallel messages that dominate
/// communication time in training (small messages are latency-bound and
/// rare). A documented choice, not a fit.
pub const REFERENCE_MESSAGE_BYTES: f64 = 64e6;

impl BandwidthCurve {
    fn parse(v: &Value, at: &str) -> Result<BandwidthCurve> {
        let bad = || AmpError::invalid(at, "expected [[a, b, c], max_bytes_per_s]");
        let arr = v.as_array().filter(|a| a.len() == 2).ok_or_else(bad)?;
        let c = arr[0].as_array().filter(|a| a.len() == 3).ok_or_else(bad)?;
        let coeffs = [as_f64(&c[0], at)?, as_f64(&c[1], at)?, as_f64(&c[2], at)?];
        let max_bytes_per_s = as_f64(&arr[1], at)?;
        if max_bytes_per_s <= 0.0 {
            return Err(AmpError::invalid(at, "the bandwidth cap must be positive"));
        }
        Ok(BandwidthCurve {
            coeffs,
            max_bytes_per_s,
        })
    }

    /// Bandwidth for a message of `bytes`, bytes/s: the curve, capped, and
    /// never below 1 % of the cap (the quadratic can turn down outside the
    /// fitted range).
    pub fn bytes_per_s(&self, bytes: f64) -> f64 {
        let x = (bytes.max(1.0) / 1e6).log2();
        let [a, b, c] = self.coeffs;
        let gbs = a * x * x + b * x + c;
        (gbs * 1e9).clamp(0.01 * self.max_bytes_per_s, self.max_bytes_per_s)
    }
}

/// The network curves: intra-node per GPU type and group size, inter-node
/// per (zone, GPU type, GPUs per node) pair.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Network {
    pub intra: BTreeMap<String, BTreeMap<usize, BandwidthCurve>>,
    pub inter: BTreeMap<(String, String, usize, String, String, usize), BandwidthCurve>,
}

impl Network {
    pub fn parse(
        intra: &str,
        intra_origin: &str,
        inter: &str,
        inter_origin: &str,
    ) -> Result<Network> {
        let mut net = Network::default();
        let root: Value = AmpError::json(intra, intra_origin)?;
        for (gpu, by_n) in as_object(&root, intra_origin)? {
            let at = format!("{intra_origin}: {gpu}");
            let mut m = BTreeMap::new();
            for (n, c) in numeric_entries(as_object(by_n, &at)?, &at)? {
                m.insert(n, BandwidthCurve::parse(c, &format!("{at}.{n}"))?);
            }
            net.intra.insert(gpu.clone(), m);
        }
        let root: Value = AmpError::json(inter, inter_origin)?;
        for (z1, a) in as_object(&root, inter_origin)? {
            let at1 = format!("{inter_origin}: {z1}");
            for (g1, b) in as_object(a, &at1)? {
                let at2 = format!("{at1}.{g1}");
                for (n1, c) in numeric_entries(as_object(b, &at2)?, &at2)? {
                    let at3 = format!("{at2}.{n1}");
                    for (z2, d) in as_object(c, &at3)? {
                        let at4 = format!("{at3}.{z2}");
                        for (g2, e) in as_object(d, &at4)? {
                            let at5 = format!("{at4}.{g2}");
                            for (n2, curve) in numeric_entries(as_object(e, &at5)?, &at5)? {
                                let key = (z1.clone(), g1.clone(), n1, z2.clone(), g2.clone(), n2);
                                net.inter.insert(
                                    key,
                                    BandwidthCurve::parse(curve, &format!("{at5}.{n2}"))?,
                                );
                            }
                        }
                    }
                }
            }
        }
        Ok(net)
    }

    /// Intra-node curve of `gpus` GPUs of `gpu`: the exact group size, else
    /// the largest measured group not above it, else the smallest.
    pub fn intra_curve(&self, gpu: &str, gpus: usize) -> Option<&BandwidthCurve> {
        let m = self.intra.get(gpu)?;
        m.range(..=gpus)
            .next_back()
            .or_else(|| m.iter().next())
            .map(|(_, c)| c)
    }

    /// Inter-node curve between two nodes of the same zone, type and size:
    /// the exact entry, else the largest measured node size not above
    /// `gpus`; when the zone has none, the same from the first zone (in
    /// name order) that has this GPU type (a machine's own network does not
    /// depend on where it stands).
    pub fn inter_curve(&self, zone: &str, gpu: &str, gpus: usize) -> Option<&BandwidthCurve> {
        let in_zone = |zone: &str| {
            self.inter
                .iter()
                .filter(|((z1, g1, n1, z2, g2, n2), _)| {
                    z1 == zone && g1 == gpu && z2 == zone && g2 == gpu && n1 == n2
                })
                .filter(|((_, _, n, _, _, _), _)| *n <= gpus)
                .max_by_key(|((_, _, n, _, _, _), _)| *n)
                .map(|(_, c)| c)
        };
        in_zone(zone).or_else(|| {
            let zones: std::collections::BTreeSet<&String> = self
                .inter
                .keys()
                .filter(|(z1, g1, _, z2, g2, _)| z1 == z2 && g1 == gpu && g2 == gpu)
                .map(|(z, ..)| z)
                .collect();
            zones.into_iter().find_map(|z| in_zone(z))
        })
    }

    /// Number of NICs of a node of `gpus` GPUs of type `gpu` in `zone`, from
    /// how the inter-node curves grow with the GPUs per node: the curves for
    /// k GPUs per node give what k GPUs of each node reach together, so
    /// their ratio to the 1-GPU curve at [`REFERENCE_MESSAGE_BYTES`] counts
    /// the independent interfaces. Rule: the divisor of `gpus` nearest that
    /// ratio on a log scale (the smaller on a tie), 1 when either curve is
    /// missing. Sailor's data: GH-96 (CSCS Clariden, 4 Slingshot NICs per
    /// node) 4.00 -> 4; A100-40 and V100-16 VMs of 4 GPUs 3.1-4.2 -> 4 and of
    /// 2 GPUs 1.5-1.9 -> 2 (the cloud scales a VM's network with its size);
    /// Titan-RTX, RTX-2080 and RTX-3090 servers 1.0 -> 1 (one NIC for 8 GPUs).
    pub fn nics(&self, zone: &str, gpu: &str, gpus: usize) -> usize {
        let (Some(k), Some(one)) = (
            self.inter_curve(zone, gpu, gpus),
            self.inter_curve(zone, gpu, 1),
        ) else {
            return 1;
        };
        let r = k.bytes_per_s(REFERENCE_MESSAGE_BYTES) / one.bytes_per_s(REFERENCE_MESSAGE_BYTES);
        if !(r.is_finite() && r > 0.0) {
            return 1;
        }
        (1..=gpus.max(1))
            .filter(|d| gpus.max(1).is_multiple_of(*d))
            .min_by(|a, b| {
                let da = ((*a as f64).ln() - r.ln()).abs();
                let db = ((*b as f64).ln() - r.ln()).abs();
                da.total_cmp(&db).then(a.cmp(b))
            })
            .unwrap_or(1)
    }

    /// Curve between a node of (`z1`, `g1`, `n1`) and one of (`z2`, `g2`,
    /// `n2`): the entry listed either way (the smaller at
    /// [`REFERENCE_MESSAGE_BYTES`] when both are: traffic flows both
    /// ways), else the entry of the same zones and types with the largest
    /// node sizes not above `n1` and `n2`.
    pub fn pair_curve(
        &self,
        (z1, g1, n1): (&str, &str, usize),
        (z2, g2, n2): (&str, &str, usize),
    ) -> Option<&BandwidthCurve> {
        let find = |za: &str, ga: &str, na: usize, zb: &str, gb: &str, nb: usize| {
            self.inter
                .iter()
                .filter(|((x1, h1, m1, x2, h2, m2), _)| {
                    x1 == za && h1 == ga && x2 == zb && h2 == gb && *m1 <= na && *m2 <= nb
                })
                .max_by_key(|((_, _, m1, _, _, m2), _)| (*m1, *m2))
                .map(|(_, c)| c)
        };
        let ab = find(z1, g1, n1, z2, g2, n2);
        let ba = find(z2, g2, n2, z1, g1, n1);
        match (ab, ba) {
            (Some(x), Some(y)) => Some(
                if y.bytes_per_s(REFERENCE_MESSAGE_BYTES) < x.bytes_per_s(REFERENCE_MESSAGE_BYTES) {
                    y
                } else {
                    x
                },
            ),
            (x, y) => x.or(y),
        }
    }
}

/// How much more an entry for fewer GPUs per node may give a node pair than
/// the entry for their own GPUs before [`network_notes`] calls the two a
/// contradiction: more pairs sending at once never make a link slower, and
/// 2x leaves room for measurement noise. A documented choice, not a fit.
pub const CONTRADICTION_FACTOR: f64 = 2.0;

/// Where the inter-node curves contradict themselves for the node pairs of
/// `kinds` ((Sailor GPU name, nodes, GPUs per node), as [`parse_node_kinds`]
/// reads them) in `zone`: an entry for k GPUs per node is k pairs of GPUs
/// sending at once between the two nodes (Sailor's
/// `profiling/networking/test_sendrecv.py`), so fewer GPUs per node cannot
/// reach more than [`CONTRADICTION_FACTOR`] times what the nodes' own GPU
/// count reaches. amp prices the pair with the entry for the nodes' own
/// GPUs ([`Network::pair_curve`]); each note says so, naming `origin` (the
/// inter-node file). Sailor's data: Titan-RTX and RTX-2080 servers of 8
/// GPUs, 2.86 GB/s with 2 or 4 GPUs per node, 0.11 GB/s with 8.
pub fn network_notes(
    network: &Network,
    kinds: &[(String, usize, usize)],
    zone: &str,
    origin: &str,
) -> Vec<String> {
    let mut notes = Vec::new();
    for (i, (a, a_nodes, a_gpus)) in kinds.iter().enumerate() {
        for (j, (b, _, b_gpus)) in kinds.iter().enumerate().skip(i) {
            // A kind with itself: only where two of its nodes talk.
            if j == i && *a_nodes < 2 {
                continue;
            }
            let bw = |ka: usize, kb: usize| {
                network
                    .pair_curve((zone, a, ka), (zone, b, kb))
                    .map(|c| c.bytes_per_s(REFERENCE_MESSAGE_BYTES))
            };
            let Some(own) = bw(*a_gpus, *b_gpus) else {
                continue;
            };
            // Entries of this pair with fewer GPUs per node on both sides.
            let fewer: std::collections::BTreeSet<usize> = network
                .inter
                .keys()
                .filter(|(z1, g1, n1, z2, g2, n2)| {
                    z1 == zone
                        && z2 == zone
                        && n1 == n2
                        && *n1 < (*a_gpus).min(*b_gpus)
                        && ((g1 == a && g2 == b) || (g1 == b && g2 == a))
                })
                .map(|k| k.2)
                .collect();
            let worst = fewer
                .iter()
                .filter_map(|&k| bw(k, k).map(|x| (k, x)))
                .filter(|&(_, x)| x > CONTRADICTION_FACTOR * own)
                .max_by(|x, y| x.1.total_cmp(&y.1).then(y.0.cmp(&x.0)));
            if let Some((k, fast)) = worst {
                notes.push(format!(
                    "{origin}: `{a}` and `{b}` nodes reach {:.2} GB/s with {k} GPUs per node sending but {:.2} GB/s with {} (at {} MB); an entry for k GPUs is k pairs sending at once, so both cannot hold. amp prices these nodes' links with the entry for their own GPUs; Sailor's simulator takes a sending group's size",
                    fast / 1e9,
                    own / 1e9,
                    (*a_gpus).min(*b_gpus),
                    REFERENCE_MESSAGE_BYTES / 1e6,
                ));
            }
        }
    }
    notes
}

/// Reads a cluster of Sailor's node kinds: `NODESxGPUSxTYPE` terms joined
/// by `+` (`8x4xA100-40+24x4xV100-16`), TYPE Sailor's GPU name or amp's
/// catalog name for it ([`sailor_gpu_name`]). Returns (Sailor GPU name,
/// nodes, GPUs per node) per term.
pub fn parse_node_kinds(spec: &str) -> Result<Vec<(String, usize, usize)>> {
    let usage =
        "write the cluster as NODESxGPUSxTYPE terms joined by `+`, e.g. 8x4xA100-40+24x4xV100-16";
    let mut out = Vec::new();
    for term in spec.split('+') {
        let parts: Vec<&str> = term.trim().splitn(3, 'x').collect();
        let count = |s: &str, what: &str| {
            s.trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| {
                    AmpError::invalid(
                        format!("cluster term `{term}`"),
                        format!("{what} `{s}` is not a positive whole number; {usage}"),
                    )
                })
        };
        let [nodes, gpus, gpu] = parts[..] else {
            return Err(AmpError::invalid(
                format!("cluster term `{term}`"),
                format!("is not NODESxGPUSxTYPE; {usage}"),
            ));
        };
        let (nodes, gpus) = (
            count(nodes, "the node count")?,
            count(gpus, "the GPUs per node")?,
        );
        if nodes > amp_core::limits::MAX_NODES || gpus > amp_core::limits::MAX_GPUS_PER_NODE {
            return Err(AmpError::invalid(
                format!("cluster term `{term}`"),
                format!(
                    "is above the limits of {} nodes and {} GPUs per node",
                    amp_core::limits::MAX_NODES,
                    amp_core::limits::MAX_GPUS_PER_NODE
                ),
            ));
        }
        let name = sailor_gpu_name(gpu).ok_or_else(|| {
            let known: Vec<&str> = GPU_NAMES.iter().map(|(_, s)| *s).collect();
            AmpError::invalid(
                format!("cluster term `{term}`"),
                format!(
                    "`{gpu}` is not a GPU type of Sailor's data; it knows {}",
                    known.join(", ")
                ),
            )
        })?;
        out.push((name.to_string(), nodes, gpus));
    }
    Ok(out)
}

/// The cluster of `kinds` ((Sailor GPU name, nodes, GPUs per node), as
/// [`parse_node_kinds`] reads them), every node in `zone`, built as
/// [`sailor_nodes_cluster`] builds a measured run's nodes.
pub fn node_kinds_cluster(
    kinds: &[(String, usize, usize)],
    gpus: &BTreeMap<String, GpuSpec>,
    network: &Network,
    zone: &str,
) -> Result<Cluster> {
    let slots: Vec<(&str, usize, &str)> = kinds
        .iter()
        .flat_map(|(gpu, count, per_node)| {
            (0..*count).map(move |_| (gpu.as_str(), *per_node, zone))
        })
        .collect();
    let name = kinds
        .iter()
        .map(|(g, n, k)| format!("{n}x{k}x{g}"))
        .collect::<Vec<_>>()
        .join("+");
    sailor_nodes_cluster(&slots, gpus, network, name).map_err(|e| AmpError::invalid("cluster", e))
}

/// A cluster of one node per (Sailor GPU name, GPUs, zone) slot: each
/// node's bandwidths from its curves at [`REFERENCE_MESSAGE_BYTES`], its
/// NICs from [`Network::nics`], its memory from `gpus`, and a pair link
/// between every two nodes of different kinds from their pair's curve (none
/// needed inside one zone). The one builder of Sailor nodes: for measured
/// runs ([`parse_plan_config`]) and for `amp plan --sailor-data`. The error
/// names the missing curve.
pub fn sailor_nodes_cluster(
    slots: &[(&str, usize, &str)],
    gpus: &BTreeMap<String, GpuSpec>,
    network: &Network,
    name: String,
) -> std::result::Result<Cluster, String> {
    let mut nodes = Vec::with_capacity(slots.len());
    for &(gpu, per_node, zone) in slots {
        let inter = network
            .inter_curve(zone, gpu, per_node)
            .map(|c| c.bytes_per_s(REFERENCE_MESSAGE_BYTES));
        let intra = network
            .intra_curve(gpu, per_node)
            .map(|c| c.bytes_per_s(REFERENCE_MESSAGE_BYTES));
        let inter = match (inter, slots.len()) {
            (Some(b), _) => b,
            // A single node never uses its network.
            (None, 1) => intra.unwrap_or(1e9),
            (None, _) => {
                return Err(format!(
                    "no inter-node bandwidth curve for `{gpu}` nodes of {per_node} GPUs in zone `{zone}` (nor in another zone) in the network files"
                ))
            }
        };
        nodes.push(Node {
            gpu_type: gpu.to_string(),
            gpus: per_node,
            intra_bytes_per_s: intra.unwrap_or(inter),
            inter_bytes_per_s: inter,
            nics: network.nics(zone, gpu, per_node),
            gpu_memory_bytes: gpus.get(gpu).map(|s| s.memory_bytes),
            price_per_hour: None,
        });
    }
    let mut links = Vec::new();
    // A pair's curve depends only on the two kinds: found once per pair of
    // kinds (a few), not once per node pair (8,128 on 128 nodes, each a
    // scan of the network file's entries).
    type Kind<'s> = (&'s str, usize, &'s str);
    let mut known: Vec<((Kind, Kind), Option<f64>)> = Vec::new();
    for (i, a) in slots.iter().enumerate() {
        for (j, b) in slots.iter().enumerate().skip(i + 1) {
            if a == b {
                continue;
            }
            let found = match known.iter().find(|(k, _)| *k == (*a, *b)) {
                Some((_, bw)) => *bw,
                None => {
                    let bw = network
                        .pair_curve((a.2, a.0, a.1), (b.2, b.0, b.1))
                        .map(|c| c.bytes_per_s(REFERENCE_MESSAGE_BYTES));
                    known.push(((*a, *b), bw));
                    bw
                }
            };
            match found {
                Some(bytes_per_s) => links.push(NodeLink {
                    nodes: [i, j],
                    bytes_per_s,
                }),
                None if a.2 == b.2 => {}
                None => {
                    return Err(format!(
                        "no inter-node bandwidth curve between `{}` nodes of {} GPUs in zone `{}` and `{}` nodes of {} GPUs in zone `{}` in the network files",
                        a.0, a.1, a.2, b.0, b.1, b.2
                    ))
                }
            }
        }
    }
    Ok(Cluster { name, nodes, links })
}
