//! The cluster: nodes of GPUs and the links between them.
//!
//! Files give bandwidths in Gbit/s (what datasheets print); inside the
//! library every bandwidth is bytes per second and every latency seconds.

use serde::{Deserialize, Serialize};

use crate::error::{AmpError, Result};
use crate::limits;

/// One GPU: the node it sits in and its index inside that node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Device {
    /// Index of the node in [`Cluster::nodes`].
    pub node: usize,
    /// Index of the GPU inside its node, 0-based.
    pub gpu: usize,
}

/// One machine of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// GPU type name; profiles and catalogs are keyed by it.
    pub gpu_type: String,
    /// Number of GPUs in the node.
    pub gpus: usize,
    /// Bandwidth between two GPUs of this node, bytes/s.
    pub intra_bytes_per_s: f64,
    /// Network bandwidth of the node, all its NICs together, bytes/s.
    pub inter_bytes_per_s: f64,
    /// Network interfaces of the node (at least 1), each with an equal
    /// share of `inter_bytes_per_s`; see [`Node::nics_of_gpu`] for which
    /// GPU uses which. 1 (the default): one NIC that every GPU of the node
    /// shares, as in most PCIe servers and cloud VMs; one per GPU on DGX-like
    /// servers (8 HCAs for 8 A100s) and CSCS Alps' GH200 nodes (4 Slingshot
    /// NICs for 4 GPUs).
    #[serde(default = "one_nic")]
    pub nics: usize,
    /// Memory of one GPU, bytes, when known.
    pub gpu_memory_bytes: Option<u64>,
    /// Price of this node per hour, when known (dollars).
    pub price_per_hour: Option<f64>,
}

/// A cluster: its nodes (GPUs and bandwidths) and any pair-specific links
/// between them. Bandwidths are bytes/s; build one in code, from a file
/// ([`Cluster::from_toml_str`], [`Cluster::from_json_str`]) or from [`builtin`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// Name shown in reports.
    pub name: String,
    /// The machines, in order; [`Device::node`] indexes this list.
    pub nodes: Vec<Node>,
    /// Node pairs whose network link differs from the slower of their two
    /// nodes' bandwidths (nodes in different zones or sites, or measured
    /// pair-specific figures). Empty for most clusters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<NodeLink>,
}

/// The network bandwidth between two nodes (indices into
/// [`Cluster::nodes`], either order), all their NICs together, bytes/s.
/// Overrides the default `min(inter_bytes_per_s)` of the two nodes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NodeLink {
    /// The two nodes the link joins, indices into [`Cluster::nodes`], either order.
    pub nodes: [usize; 2],
    /// Bandwidth of the link, all NICs together, bytes/s.
    pub bytes_per_s: f64,
}

fn one_nic() -> usize {
    1
}

impl Node {
    /// The NICs GPU `gpu` of this node sends and receives through: NICs are
    /// spread evenly over the GPUs in index order, so with fewer NICs than
    /// GPUs consecutive GPUs share one (4 NICs for 8 GPUs: GPUs 0 and 1 use
    /// NIC 0), and with more each GPU has its own run of them (32 NICs for
    /// 8 GPUs: 4 each).
    pub fn nics_of_gpu(&self, gpu: usize) -> std::ops::Range<usize> {
        let (m, n) = (self.nics.max(1), self.gpus.max(1));
        let lo = (gpu * m / n).min(m - 1);
        let hi = ((gpu + 1) * m / n).clamp(lo + 1, m);
        lo..hi
    }
}

/// Bytes per second in one Gbit/s: files give bandwidths in Gbit/s, the library
/// works in bytes/s.
pub const GBPS_TO_BYTES_PER_S: f64 = 1e9 / 8.0;

impl Cluster {
    /// Total number of GPUs over all nodes.
    pub fn num_devices(&self) -> usize {
        self.nodes.iter().map(|n| n.gpus).sum()
    }

    /// Every GPU, node-major: node 0's GPUs first.
    pub fn devices(&self) -> Vec<Device> {
        self.nodes
            .iter()
            .enumerate()
            .flat_map(|(node, n)| (0..n.gpus).map(move |gpu| Device { node, gpu }))
            .collect()
    }

    /// The node that holds device `d`.
    pub fn node_of(&self, d: Device) -> &Node {
        &self.nodes[d.node]
    }

    /// Bandwidth of the link between two devices: the node's intra-node
    /// link when they share a node; else the network between their nodes,
    /// all NICs together: a [`NodeLink`] of that pair when the cluster has
    /// one, else the slower of the two nodes' network bandwidths. The one
    /// place that reads [`Cluster::links`]; how much of an inter-node link
    /// one flow gets (NICs, sharing) is the collectives' business
    /// ([`crate::cost::collective`]).
    pub fn link_bytes_per_s(&self, a: Device, b: Device) -> f64 {
        if a.node == b.node {
            return self.nodes[a.node].intra_bytes_per_s;
        }
        let pair = [a.node.min(b.node), a.node.max(b.node)];
        let key = |l: &NodeLink| [l.nodes[0].min(l.nodes[1]), l.nodes[0].max(l.nodes[1])];
        // Every pair's link, sorted (as the search leaves them): the pair's
        // place is known. Checked, so other lists fall through to the
        // searches below.
        let n = self.nodes.len();
        if self.links.len() == n * n.saturating_sub(1) / 2 {
            let [i, j] = pair;
            let at = i * (2 * n - i - 1) / 2 + (j - i - 1);
            if self.links.get(at).is_some_and(|l| key(l) == pair) {
                return self.links[at].bytes_per_s;
            }
        }
        // Links sorted by pair are found in O(log links); a hit is always
        // the pair's link, and a miss falls back to the scan, so links in
        // any order stay correct.
        if let Ok(i) = self.links.binary_search_by_key(&pair, key) {
            return self.links[i].bytes_per_s;
        }
        self.links
            .iter()
            .find(|l| key(l) == pair)
            .map(|l| l.bytes_per_s)
            .unwrap_or_else(|| {
                self.nodes[a.node]
                    .inter_bytes_per_s
                    .min(self.nodes[b.node].inter_bytes_per_s)
            })
    }

    /// A one-line description for reports: runs of alike nodes as
    /// `COUNTxGPUSxGPU`, with their NICs when more than one, joined by ` + `,
    /// and the number of pair links if any; e.g. `3x4xV100-16GB + 1x4xT4`.
    pub fn summary(&self) -> String {
        let mut parts: Vec<(usize, String)> = Vec::new();
        for n in &self.nodes {
            let mut k = format!("{}x{}", n.gpus, n.gpu_type);
            if n.nics > 1 {
                k.push_str(&format!(" ({} NICs)", n.nics));
            }
            match parts.last_mut() {
                Some((c, last)) if *last == k => *c += 1,
                _ => parts.push((1, k)),
            }
        }
        let mut s: Vec<String> = parts.iter().map(|(c, k)| format!("{c}x{k}")).collect();
        if !self.links.is_empty() {
            s.push(format!("{} pair link(s)", self.links.len()));
        }
        s.join(" + ")
    }

    /// The fewest GPUs on any node: the largest tensor-parallel degree that
    /// fits inside every node.
    pub(crate) fn min_gpus_per_node(&self) -> usize {
        self.nodes.iter().map(|n| n.gpus).min().unwrap_or(0)
    }

    /// The cluster of nodes `keep` (indices into [`Cluster::nodes`], in the
    /// order given): node `i` of the result is node `keep[i]` here, and the
    /// links between kept nodes follow them.
    pub fn subset(&self, keep: &[usize]) -> Cluster {
        let new_index = |old: usize| keep.iter().position(|&k| k == old);
        Cluster {
            name: self.name.clone(),
            nodes: keep.iter().map(|&k| self.nodes[k].clone()).collect(),
            links: self
                .links
                .iter()
                .filter_map(|l| {
                    Some(NodeLink {
                        nodes: [new_index(l.nodes[0])?, new_index(l.nodes[1])?],
                        bytes_per_s: l.bytes_per_s,
                    })
                })
                .collect(),
        }
    }

    /// The distinct GPU type names of the cluster, sorted.
    pub fn gpu_types(&self) -> Vec<String> {
        let mut t: Vec<String> = self.nodes.iter().map(|n| n.gpu_type.clone()).collect();
        t.sort();
        t.dedup();
        t
    }

    /// The distinct GPU type names of `devices`, sorted (devices on nodes
    /// the cluster lacks are passed over).
    pub fn gpu_types_of(&self, devices: impl Iterator<Item = Device>) -> Vec<String> {
        let mut t: Vec<String> = devices
            .filter_map(|d| self.nodes.get(d.node).map(|n| n.gpu_type.clone()))
            .collect();
        t.sort();
        t.dedup();
        t
    }

    /// Checks the cluster is usable and within [`crate::limits`]: at least one node,
    /// every node with GPUs, a GPU type name, NICs and positive finite bandwidths,
    /// and links naming existing node pairs once each. Errors name the offending
    /// node or link.
    pub fn validate(&self) -> Result<()> {
        if self.nodes.is_empty() {
            return Err(AmpError::invalid(
                format!("cluster `{}`", self.name),
                "no nodes; add at least one [[nodes]] entry",
            ));
        }
        if self.nodes.len() > limits::MAX_NODES {
            return Err(AmpError::invalid(
                format!("cluster `{}`", self.name),
                format!(
                    "has {} nodes, above the limit of {}",
                    self.nodes.len(),
                    limits::MAX_NODES
                ),
            ));
        }
        let mut total_gpus = 0usize;
        for (i, n) in self.nodes.iter().enumerate() {
            let at = format!("cluster `{}`, node {i}", self.name);
            if n.gpus == 0 {
                return Err(AmpError::invalid(
                    at,
                    "gpus = 0; a node needs at least one GPU",
                ));
            }
            limits::check_count(n.gpus as u64, 1, limits::MAX_GPUS_PER_NODE as u64)
                .map_err(|m| AmpError::invalid(&at, format!("gpus {m}")))?;
            limits::check_count(n.nics as u64, 1, limits::MAX_NICS_PER_NODE as u64)
                .map_err(|m| AmpError::invalid(&at, format!("nics {m}")))?;
            total_gpus += n.gpus;
            if total_gpus > limits::MAX_GPUS {
                return Err(AmpError::invalid(
                    format!("cluster `{}`", self.name),
                    format!(
                        "has more than {} GPUs, the limit (nodes 0..={i} already hold {total_gpus})",
                        limits::MAX_GPUS
                    ),
                ));
            }
            for (what, v) in [
                ("intra_gbps", n.intra_bytes_per_s),
                ("inter_gbps", n.inter_bytes_per_s),
            ] {
                if !(v.is_finite() && v > 0.0) {
                    return Err(AmpError::invalid(
                        at,
                        format!("{what} must be a positive number of Gbit/s"),
                    ));
                }
                limits::check_range(
                    v / GBPS_TO_BYTES_PER_S,
                    limits::MIN_GBPS,
                    limits::MAX_GBPS,
                    " Gbit/s",
                )
                .map_err(|m| AmpError::invalid(&at, format!("{what} {m}")))?;
            }
            if n.gpu_type.trim().is_empty() {
                return Err(AmpError::invalid(at, "gpu is empty; name the GPU type"));
            }
            if n.nics == 0 {
                return Err(AmpError::invalid(
                    at,
                    "nics = 0; a node has at least one network interface (omit nics for 1)",
                ));
            }
        }
        if self.links.len() > limits::MAX_LINKS {
            return Err(AmpError::invalid(
                format!("cluster `{}`", self.name),
                format!(
                    "has {} links, above the limit of {}",
                    self.links.len(),
                    limits::MAX_LINKS
                ),
            ));
        }
        let mut pairs = std::collections::HashMap::new();
        for (i, l) in self.links.iter().enumerate() {
            let at = format!("cluster `{}`, links[{i}]", self.name);
            let pair = (l.nodes[0].min(l.nodes[1]), l.nodes[0].max(l.nodes[1]));
            if let Some(first) = pairs.insert(pair, i) {
                return Err(AmpError::invalid(
                    at,
                    format!(
                        "links nodes {} and {} again (links[{first}] already does); give each pair once",
                        pair.0, pair.1
                    ),
                ));
            }
            let n = self.nodes.len();
            if l.nodes[0] >= n || l.nodes[1] >= n {
                return Err(AmpError::invalid(
                    at,
                    format!(
                        "nodes = {:?} but the cluster has nodes 0..{}; node indices count `count` repeats",
                        l.nodes,
                        n - 1
                    ),
                ));
            }
            if l.nodes[0] == l.nodes[1] {
                return Err(AmpError::invalid(
                    at,
                    "links a node to itself; a link joins two different nodes",
                ));
            }
            if !(l.bytes_per_s.is_finite() && l.bytes_per_s > 0.0) {
                return Err(AmpError::invalid(
                    at,
                    format!(
                        "gbps must be a positive number of Gbit/s, at most {}",
                        limits::MAX_GBPS
                    ),
                ));
            }
            limits::check_range(
                l.bytes_per_s / GBPS_TO_BYTES_PER_S,
                limits::MIN_GBPS,
                limits::MAX_GBPS,
                " Gbit/s",
            )
            .map_err(|m| AmpError::invalid(&at, format!("gbps {m}")))?;
        }
        Ok(())
    }

    /// Parses a cluster file written in TOML (Gbit/s bandwidths, GiB memory; see
    /// [`ClusterFile`]) and checks it; `origin` names the file in errors.
    /// The file's `[[gpus]]` definitions, if any, are not part of the
    /// cluster: [`ClusterDescription::from_toml_str`] keeps them.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Cluster> {
        ClusterDescription::from_toml_str(text, origin).map(|d| d.cluster)
    }

    /// Parses a cluster file written in JSON (same fields as the TOML form) and
    /// checks it; `origin` names the file in errors. As
    /// [`Cluster::from_toml_str`], without the file's `gpus`.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Cluster> {
        ClusterDescription::from_json_str(text, origin).map(|d| d.cluster)
    }

    /// The cluster in its file form (Gbit/s, GiB), ready to serialize as TOML or JSON.
    pub fn to_file(&self) -> ClusterFile {
        ClusterFile {
            name: Some(self.name.clone()),
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeFile {
                    gpu: n.gpu_type.clone(),
                    gpus: n.gpus,
                    intra_gbps: n.intra_bytes_per_s / GBPS_TO_BYTES_PER_S,
                    inter_gbps: n.inter_bytes_per_s / GBPS_TO_BYTES_PER_S,
                    nics: (n.nics != 1).then_some(n.nics),
                    gpu_memory_gib: n.gpu_memory_bytes.map(|b| b as f64 / GIB),
                    price_per_hour: n.price_per_hour,
                    count: None,
                })
                .collect(),
            links: self
                .links
                .iter()
                .map(|l| LinkFile {
                    nodes: l.nodes.to_vec(),
                    gbps: l.bytes_per_s / GBPS_TO_BYTES_PER_S,
                })
                .collect(),
            gpus: Vec::new(),
        }
    }
}

/// A cluster file as read: the cluster and the GPUs it defines for itself
/// (its `[[gpus]]`), which the hardware catalog (`amp_catalog`) adds to the
/// ones it knows before the analytic model prices them.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterDescription {
    /// The nodes and links.
    pub cluster: Cluster,
    /// The file's GPU definitions, in file order, checked as data (names,
    /// positive figures); whether `like` names a known GPU is the catalog's
    /// to say.
    pub gpus: Vec<GpuDefinition>,
}

impl ClusterDescription {
    /// Parses a cluster file written in TOML and checks it; `origin` names
    /// the file in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<ClusterDescription> {
        let file: ClusterFile = toml::from_str(text).map_err(|e| AmpError::parse(origin, e))?;
        file.into_description(origin)
    }

    /// Parses a cluster file written in JSON and checks it; `origin` names
    /// the file in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<ClusterDescription> {
        let file: ClusterFile = AmpError::json(text, origin)?;
        file.into_description(origin)
    }
}

/// A `[[gpus]]` entry: a GPU as this cluster has it, where the catalog's
/// figures are not the cluster's: a part run under a lower power limit, a
/// variant with other memory, a GPU the catalog lacks. It starts from the
/// catalog GPU `like` names and replaces the figures it gives; the rest
/// (architecture, warp-level MMA share, link) stay `like`'s. Nodes name it
/// by `name` in `gpu`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuDefinition {
    /// The name `[[nodes]]` entries use; not a name the catalog has.
    pub name: String,
    /// The catalog GPU (name or alias) whose figures it starts from.
    pub like: String,
    /// Dense FP32 (non-tensor) peak, TFLOP/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp32_tflops: Option<f64>,
    /// Dense TF32 tensor peak, TFLOP/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tf32_tflops: Option<f64>,
    /// Dense FP16 tensor peak, TFLOP/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp16_tflops: Option<f64>,
    /// Dense BF16 tensor peak, TFLOP/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bf16_tflops: Option<f64>,
    /// Dense FP8 tensor peak, TFLOP/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp8_tflops: Option<f64>,
    /// Memory of one GPU, GiB: what a plan may use (give what the driver
    /// reports, `nvidia-smi`'s total, where known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_gib: Option<f64>,
    /// Memory bandwidth, GB/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bandwidth_gbs: Option<f64>,
}

impl GpuDefinition {
    /// The figures the definition gives, by their file names.
    pub fn figures(&self) -> [(&'static str, Option<f64>); 7] {
        [
            ("fp32_tflops", self.fp32_tflops),
            ("tf32_tflops", self.tf32_tflops),
            ("fp16_tflops", self.fp16_tflops),
            ("bf16_tflops", self.bf16_tflops),
            ("fp8_tflops", self.fp8_tflops),
            ("memory_gib", self.memory_gib),
            ("memory_bandwidth_gbs", self.memory_bandwidth_gbs),
        ]
    }
}

const GIB: f64 = (1u64 << 30) as f64;

/// The cluster as written in TOML or JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Cluster name; optional in files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The `[[nodes]]` entries, in order; each may repeat with `count`.
    pub nodes: Vec<NodeFile>,
    /// Pair-specific network links, by node index after `count` expansion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkFile>,
    /// GPUs this cluster defines for itself (see [`GpuDefinition`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuDefinition>,
}

/// A `[[links]]` entry: the network bandwidth between two nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkFile {
    /// The two nodes, 0-based indices in file order after `count` expansion
    /// (exactly two; a list is read so that a wrong length is an error in
    /// TOML as in JSON).
    pub nodes: Vec<usize>,
    /// Bandwidth between them, all NICs together, Gbit/s.
    pub gbps: f64,
}

/// A `[[nodes]]` entry: one machine type (or `count` alike machines), with
/// bandwidths in Gbit/s and memory in GiB as datasheets give them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// GPU type name.
    pub gpu: String,
    /// GPUs in the node.
    pub gpus: usize,
    /// GPU-to-GPU bandwidth inside the node, Gbit/s.
    pub intra_gbps: f64,
    /// Network bandwidth of the node, all NICs together, Gbit/s.
    pub inter_gbps: f64,
    /// Network interfaces sharing `inter_gbps` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nics: Option<usize>,
    /// Memory of one GPU, GiB, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_gib: Option<f64>,
    /// Price of one such node per hour (dollars), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_hour: Option<f64>,
    /// Repeat this node `count` times (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
}

impl ClusterFile {
    /// [`ClusterFile::into_cluster`], keeping the file's GPU definitions,
    /// each checked: a name of its own (unique in the file), a `like`, and
    /// positive figures within [`crate::limits`].
    fn into_description(mut self, origin: &str) -> Result<ClusterDescription> {
        let gpus = std::mem::take(&mut self.gpus);
        if gpus.len() > limits::MAX_GPU_DEFINITIONS {
            return Err(AmpError::invalid(
                format!("{origin}: gpus"),
                format!(
                    "{} GPU definitions, more than the limit of {}; define only the GPUs the nodes use",
                    gpus.len(),
                    limits::MAX_GPU_DEFINITIONS
                ),
            ));
        }
        for (i, g) in gpus.iter().enumerate() {
            let at = || format!("{origin}: gpus[{i}]");
            if g.name.trim().is_empty() {
                return Err(AmpError::invalid(
                    at(),
                    "name is empty; give the GPU a name of its own, which [[nodes]] use as gpu",
                ));
            }
            if g.like.trim().is_empty() {
                return Err(AmpError::invalid(
                    at(),
                    format!(
                        "`{}`: like is empty; name the catalog GPU it starts from, e.g. like = \"H100-SXM\"",
                        g.name
                    ),
                ));
            }
            if let Some(j) = gpus[..i].iter().position(|h| h.name == g.name) {
                return Err(AmpError::invalid(
                    at(),
                    format!("`{}` is defined twice (gpus[{j}] too); keep one", g.name),
                ));
            }
            for (field, v) in g.figures() {
                let Some(v) = v else { continue };
                let (min, max) = if field == "memory_gib" {
                    (f64::MIN_POSITIVE, limits::MAX_GPU_MEMORY_GIB)
                } else {
                    (limits::MIN_GPU_RATE, limits::MAX_GPU_RATE)
                };
                limits::check_range(v, min, max, "")
                    .map_err(|m| AmpError::invalid(at(), format!("`{}`: {field} {m}", g.name)))?;
            }
        }
        Ok(ClusterDescription {
            cluster: self.into_cluster(origin)?,
            gpus,
        })
    }

    /// Expands `count`, converts Gbit/s to bytes/s and GiB to bytes, checks the
    /// result against [`crate::limits`] and returns the cluster; `origin` names
    /// the file in errors.
    pub(crate) fn into_cluster(self, origin: &str) -> Result<Cluster> {
        let mut nodes = Vec::new();
        for (i, n) in self.nodes.into_iter().enumerate() {
            let at = || format!("{origin}: nodes[{i}]");
            let count = n.count.unwrap_or(1);
            if count == 0 {
                return Err(AmpError::invalid(
                    at(),
                    "count = 0; remove the entry or set count >= 1",
                ));
            }
            // Checked before the nodes are made: a huge count must not
            // allocate.
            if count > limits::MAX_NODES - nodes.len().min(limits::MAX_NODES) {
                return Err(AmpError::invalid(
                    at(),
                    format!(
                        "count = {count} makes more than {} nodes, the limit",
                        limits::MAX_NODES
                    ),
                ));
            }
            // gpus = 0 is reported by `Cluster::validate`, with the node.
            limits::check_count(n.gpus as u64, 0, limits::MAX_GPUS_PER_NODE as u64)
                .map_err(|m| AmpError::invalid(at(), format!("gpus {m}")))?;
            if let Some(nics) = n.nics {
                limits::check_count(nics as u64, 1, limits::MAX_NICS_PER_NODE as u64)
                    .map_err(|m| AmpError::invalid(at(), format!("nics {m} (omit nics for 1)")))?;
            }
            for (field, v) in [("intra_gbps", n.intra_gbps), ("inter_gbps", n.inter_gbps)] {
                limits::check_range(v, limits::MIN_GBPS, limits::MAX_GBPS, " Gbit/s")
                    .map_err(|m| AmpError::invalid(at(), format!("{field} {m}")))?;
            }
            if let Some(m) = n.gpu_memory_gib {
                limits::check_f64(m, true, limits::MAX_GPU_MEMORY_GIB)
                    .map_err(|m| AmpError::invalid(at(), format!("gpu_memory_gib {m}")))?;
            }
            if let Some(p) = n.price_per_hour {
                limits::check_f64(p, false, 1e9)
                    .map_err(|m| AmpError::invalid(at(), format!("price_per_hour {m}")))?;
            }
            for _ in 0..count {
                nodes.push(Node {
                    gpu_type: n.gpu.clone(),
                    gpus: n.gpus,
                    intra_bytes_per_s: n.intra_gbps * GBPS_TO_BYTES_PER_S,
                    inter_bytes_per_s: n.inter_gbps * GBPS_TO_BYTES_PER_S,
                    nics: n.nics.unwrap_or(1),
                    gpu_memory_bytes: n.gpu_memory_gib.map(|g| (g * GIB) as u64),
                    price_per_hour: n.price_per_hour,
                });
            }
        }
        let mut links = Vec::with_capacity(self.links.len().min(limits::MAX_LINKS));
        for (i, l) in self.links.iter().enumerate() {
            let at = || format!("{origin}: links[{i}]");
            let [a, b] = l.nodes[..] else {
                return Err(AmpError::invalid(
                    at(),
                    format!(
                        "nodes = {:?} lists {} nodes; a link joins exactly two: nodes = [a, b]",
                        l.nodes,
                        l.nodes.len()
                    ),
                ));
            };
            limits::check_range(l.gbps, limits::MIN_GBPS, limits::MAX_GBPS, " Gbit/s")
                .map_err(|m| AmpError::invalid(at(), format!("gbps {m}")))?;
            links.push(NodeLink {
                nodes: [a, b],
                bytes_per_s: l.gbps * GBPS_TO_BYTES_PER_S,
            });
        }
        let cluster = Cluster {
            name: self.name.unwrap_or_else(|| origin.to_string()),
            nodes,
            links,
        };
        cluster.validate().map_err(|e| match e {
            AmpError::Invalid { location, message } => AmpError::Invalid {
                location: format!("{origin}: {location}"),
                message,
            },
            other => other,
        })?;
        Ok(cluster)
    }
}

/// The clusters of the AMP paper's experiments.
pub mod builtin {
    use super::*;

    /// GPU type name of the NVIDIA T4 (AWS g4dn).
    pub const T4: &str = "T4";
    /// GPU type name of the 16 GB NVIDIA V100 (AWS p3).
    pub const V100: &str = "V100-16GB";

    /// `mem_mib`: the memory the driver reports (nvidia-smi's total), as
    /// the catalog's `usable_memory_mib` gives it (a catalog test checks
    /// the two agree).
    fn node(gpu: &str, intra_gbps: f64, inter_gbps: f64, mem_mib: f64, price: f64) -> Node {
        Node {
            gpu_type: gpu.to_string(),
            gpus: 4,
            intra_bytes_per_s: intra_gbps * GBPS_TO_BYTES_PER_S,
            inter_bytes_per_s: inter_gbps * GBPS_TO_BYTES_PER_S,
            nics: 1,
            gpu_memory_bytes: Some((mem_mib * (1u64 << 20) as f64) as u64),
            price_per_hour: Some(price),
        }
    }

    /// g4dn.12xlarge: 4 x T4, 50 Gbit/s (AMP's measured figures), one NIC
    /// (one ENA interface) that the four GPUs share; 15,360 MiB per T4
    /// (16 GB of GDDR6 less the 6.25% ECC holds).
    pub fn g4dn_12xlarge() -> Node {
        node(T4, 50.0, 50.0, 15360.0, 3.912)
    }

    /// p3.8xlarge: 4 x V100-16GB with NVLink, 10 Gbit/s network through one
    /// shared NIC.
    pub fn p3_8xlarge() -> Node {
        node(V100, 170.0, 10.0, 16160.0, 12.24)
    }

    /// Four g4dn.12xlarge nodes: 16 T4 GPUs (the AMP paper's homogeneous cluster).
    pub fn homogeneous() -> Cluster {
        Cluster {
            name: "4x g4dn.12xlarge".into(),
            nodes: vec![g4dn_12xlarge(); 4],
            links: Vec::new(),
        }
    }

    /// Three p3.8xlarge and one g4dn.12xlarge: 12 V100s and 4 T4s (the AMP paper's
    /// heterogeneous cluster).
    pub fn het_cluster() -> Cluster {
        let mut nodes = vec![p3_8xlarge(); 3];
        nodes.push(g4dn_12xlarge());
        Cluster {
            name: "3x p3.8xlarge + 1x g4dn.12xlarge".into(),
            nodes,
            links: Vec::new(),
        }
    }

    /// Four p3.8xlarge nodes: 16 V100s (the cluster of the AMP paper's
    /// heterogeneous-model experiment).
    pub fn het_model() -> Cluster {
        Cluster {
            name: "4x p3.8xlarge".into(),
            nodes: vec![p3_8xlarge(); 4],
            links: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_cluster_expands_counts_and_converts_units() {
        let c = Cluster::from_toml_str(
            r#"
            [[nodes]]
            gpu = "V100-16GB"
            gpus = 4
            intra_gbps = 170
            inter_gbps = 10
            count = 3
            [[nodes]]
            gpu = "T4"
            gpus = 4
            intra_gbps = 50
            inter_gbps = 50
            "#,
            "c.toml",
        )
        .unwrap();
        assert_eq!(c.nodes.len(), 4);
        assert_eq!(c.num_devices(), 16);
        assert_eq!(c.nodes[0].inter_bytes_per_s, 10e9 / 8.0);
        let d = c.devices();
        assert_eq!(c.link_bytes_per_s(d[0], d[1]), 170e9 / 8.0);
        assert_eq!(c.link_bytes_per_s(d[0], d[15]), 10e9 / 8.0);
    }

    #[test]
    fn nics_are_spread_over_gpus() {
        let mut n = builtin::g4dn_12xlarge();
        assert_eq!(n.nics, 1);
        assert!((0..4).all(|g| n.nics_of_gpu(g) == (0..1)));
        n.gpus = 8;
        n.nics = 4;
        let v: Vec<_> = (0..8).map(|g| n.nics_of_gpu(g)).collect();
        assert_eq!(v, vec![0..1, 0..1, 1..2, 1..2, 2..3, 2..3, 3..4, 3..4]);
        n.nics = 32;
        assert_eq!(n.nics_of_gpu(0), 0..4);
        assert_eq!(n.nics_of_gpu(7), 28..32);
        n.nics = 3;
        let v: Vec<_> = (0..8).map(|g| n.nics_of_gpu(g)).collect();
        assert_eq!(v, vec![0..1, 0..1, 0..1, 1..2, 1..2, 1..2, 2..3, 2..3]);
    }

    #[test]
    fn links_override_a_node_pair_and_round_trip() {
        let text = r#"
            [[nodes]]
            gpu = "A"
            gpus = 4
            intra_gbps = 100
            inter_gbps = 200
            nics = 4
            count = 2
            [[nodes]]
            gpu = "B"
            gpus = 8
            intra_gbps = 100
            inter_gbps = 100
            [[links]]
            nodes = [2, 0]
            gbps = 8
            "#;
        let c = Cluster::from_toml_str(text, "c.toml").unwrap();
        assert_eq!(c.nodes[0].nics, 4);
        assert_eq!(c.nodes[2].nics, 1);
        assert_eq!(c.summary(), "2x4xA (4 NICs) + 1x8xB + 1 pair link(s)");
        assert_eq!(builtin::het_cluster().summary(), "3x4xV100-16GB + 1x4xT4");
        let d = |node, gpu| Device { node, gpu };
        assert_eq!(c.link_bytes_per_s(d(0, 0), d(2, 1)), 1e9);
        assert_eq!(c.link_bytes_per_s(d(2, 1), d(0, 3)), 1e9);
        assert_eq!(c.link_bytes_per_s(d(0, 0), d(1, 0)), 25e9);
        assert_eq!(c.link_bytes_per_s(d(1, 0), d(2, 0)), 12.5e9);
        let back = toml::to_string(&c.to_file()).unwrap();
        assert_eq!(
            Cluster::from_toml_str(&back, "c.toml").unwrap().links,
            c.links
        );
        let bad = text.replace("nodes = [2, 0]", "nodes = [3, 0]");
        let e = Cluster::from_toml_str(&bad, "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("links[0]") && e.contains("0..2"), "{e}");
        let bad = text.replace("nics = 4", "nics = 0");
        let e = Cluster::from_toml_str(&bad, "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nodes[0]") && e.contains("nics is 0"), "{e}");
    }

    /// A list of every pair's link is looked up by the pair's place, in
    /// any of the orders a cluster file may give it: sorted, reversed,
    /// each pair written either way round.
    #[test]
    fn every_pair_linked_finds_each_pairs_link_in_any_order() {
        let mut c = Cluster {
            name: "c".into(),
            nodes: (0..5)
                .map(|_| {
                    let mut n = builtin::g4dn_12xlarge();
                    n.inter_bytes_per_s = 1e12;
                    n
                })
                .collect(),
            links: Vec::new(),
        };
        let speed = |a: usize, b: usize| (10 * a.min(b) + a.max(b)) as f64 * 1e9;
        for a in 0..5 {
            for b in a + 1..5 {
                c.links.push(NodeLink {
                    nodes: if (a + b) % 2 == 0 { [a, b] } else { [b, a] },
                    bytes_per_s: speed(a, b),
                });
            }
        }
        let d = |node| Device { node, gpu: 0 };
        for order in 0..2 {
            if order == 1 {
                c.links.reverse();
            }
            for a in 0..5 {
                for b in 0..5 {
                    if a != b {
                        assert_eq!(c.link_bytes_per_s(d(a), d(b)), speed(a, b), "{a} {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn zero_gpus_is_a_clear_error() {
        let e = Cluster::from_toml_str(
            "[[nodes]]\ngpu = \"T4\"\ngpus = 0\nintra_gbps = 50\ninter_gbps = 50\n",
            "c.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("c.toml") && e.contains("gpus = 0"), "{e}");
    }

    #[test]
    fn unknown_field_is_reported() {
        let e = Cluster::from_toml_str(
            "[[nodes]]\ngpu = \"T4\"\ngpus = 1\nintra_gbps = 50\ninter_gbps = 50\nbandwidth = 3\n",
            "c.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bandwidth"), "{e}");
    }

    const WITH_GPUS: &str = r#"
        [[gpus]]
        name = "H100-500W"
        like = "H100-SXM"
        bf16_tflops = 835
        memory_bandwidth_gbs = 2400
        [[nodes]]
        gpu = "H100-500W"
        gpus = 8
        intra_gbps = 3600
        inter_gbps = 3200
    "#;

    #[test]
    fn gpu_definitions_are_kept_beside_the_cluster() {
        let d = ClusterDescription::from_toml_str(WITH_GPUS, "c.toml").unwrap();
        assert_eq!(d.gpus.len(), 1);
        let g = &d.gpus[0];
        assert_eq!(
            (g.name.as_str(), g.like.as_str()),
            ("H100-500W", "H100-SXM")
        );
        assert_eq!(g.bf16_tflops, Some(835.0));
        assert_eq!(g.memory_bandwidth_gbs, Some(2400.0));
        assert_eq!(g.fp16_tflops, None);
        assert_eq!(d.cluster.nodes[0].gpu_type, "H100-500W");
        // The cluster alone is the same with and without them; JSON reads
        // the same definitions.
        assert_eq!(
            Cluster::from_toml_str(WITH_GPUS, "c.toml").unwrap(),
            d.cluster
        );
        let json = serde_json::to_string(&ClusterFile {
            gpus: d.gpus.clone(),
            ..d.cluster.to_file()
        })
        .unwrap();
        assert_eq!(
            ClusterDescription::from_json_str(&json, "c.json").unwrap(),
            d
        );
    }

    #[test]
    fn bad_gpu_definitions_say_which_and_how_to_fix() {
        let err = |from: &str, to: &str| {
            assert!(WITH_GPUS.contains(from));
            ClusterDescription::from_toml_str(&WITH_GPUS.replacen(from, to, 1), "c.toml")
                .unwrap_err()
                .to_string()
        };
        let e = err("name = \"H100-500W\"", "name = \" \"");
        assert!(
            e.contains("c.toml: gpus[0]") && e.contains("name is empty"),
            "{e}"
        );
        let e = err("like = \"H100-SXM\"", "like = \"\"");
        assert!(
            e.contains("like is empty") && e.contains("like = \"H100-SXM\""),
            "{e}"
        );
        let e = err("bf16_tflops = 835", "bf16_tflops = 0");
        assert!(e.contains("`H100-500W`: bf16_tflops is 0"), "{e}");
        let e = err("memory_bandwidth_gbs = 2400", "memory_bandwidth_gbs = nan");
        assert!(e.contains("memory_bandwidth_gbs is NaN"), "{e}");
        let e = err("memory_bandwidth_gbs = 2400", "memory_bandwidth = 2400");
        assert!(e.contains("unknown field `memory_bandwidth`"), "{e}");
        let twice = WITH_GPUS.replacen(
            "[[nodes]]",
            "[[gpus]]\nname = \"H100-500W\"\nlike = \"H200\"\n[[nodes]]",
            1,
        );
        let e = ClusterDescription::from_toml_str(&twice, "c.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("gpus[1]") && e.contains("defined twice (gpus[0] too)"),
            "{e}"
        );
        // Bounded: a file cannot make the catalog's name checks quadratic.
        let many: String = (0..=limits::MAX_GPU_DEFINITIONS)
            .map(|i| format!("[[gpus]]\nname = \"g{i}\"\nlike = \"H200\"\n"))
            .collect();
        let e = ClusterDescription::from_toml_str(&(many + WITH_GPUS), "c.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("258 GPU definitions, more than the limit of 256"),
            "{e}"
        );
    }
}
