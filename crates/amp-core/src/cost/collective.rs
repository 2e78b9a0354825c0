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
//!   [`Network::inter_node_efficiency`] (a fitted constant,
//!   [`crate::cost::Calibration`]); intra-node links run at their nominal rate;
//! - flows that leave (or enter) a node at the same time share its NICs
//!   ([`Node::nics`], each `inter_bytes_per_s / nics`). A point-to-point
//!   send goes through the NIC(s) of its GPU ([`Node::nics_of_gpu`]); a
//!   ring collective's hop out of (into) a node spreads over the NICs of
//!   all the ring's GPUs on that node, as NCCL's rings do with one channel
//!   per NIC (so one all-reduce over a whole 4-NIC node runs at the node's
//!   full bandwidth, while one GPU's send gets a quarter of it). A flow
//!   spread over `k` NICs puts `1 / k` of a flow's load on each; it runs at
//!   `NIC bandwidth / heaviest load` on either side, and at most at its
//!   node pair's link ([`Cluster::link_bytes_per_s`], which reads pair
//!   overrides) divided by the flows between that pair (`flow_bytes_per_s`,
//!   the one place that shares links). With one NIC per node this is the
//!   node's bandwidth divided by the flows through it.
//!
//! Ring collectives follow NCCL's ring: the group's devices are ordered by
//! (node, GPU), so each node is entered and left once per ring, and the ring
//! runs at the pace of its slowest hop. Their latency follows NCCL's own
//! tuning model (src/graph/tuning.cc): of a ring's steps (`2 (n-1)` for an
//! all-reduce over `n` GPUs, `n - 1` for either half) those that cross the
//! network (`2 m` of an all-reduce over `m` nodes, `m - 1` of a half) pay
//! [`INTER_NODE_LATENCY_S`], the others [`INTRA_NODE_LATENCY_S`]. An
//! all-reduce over several nodes may instead run NCCL's tree, as NCCL picks
//! whichever its model says is faster: latency `2 ((n/m - 1) alpha_intra +
//! floor(log2 m) alpha_inter)`, logarithmic in the nodes where the ring's is
//! linear, at [`TREE_BANDWIDTH_FRACTION`] of half the ring's bus bandwidth
//! (`2 bytes / (0.92 B)`, not `2 (n-1)/n bytes / B`). At scale (a
//! data-parallel ring over 2,048 nodes: 4,096 network steps, 123 ms of
//! latency per all-reduce) the tree wins; for large messages over few nodes
//! the ring does.

use crate::cluster::{Cluster, Device, Node};

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

/// Share of the ring's bus bandwidth NCCL's model gives its tree all-reduce
/// (`busBw * .92` in src/graph/tuning.cc, before the tree's algorithm
/// bandwidth halves it).
pub const TREE_BANDWIDTH_FRACTION: f64 = 0.92;

/// The cluster's links as the collectives price them: the cluster and the
/// achieved fraction of an inter-node link's nominal bandwidth.
#[derive(Debug, Clone, Copy)]
pub struct Network<'a> {
    /// The cluster whose links carry the traffic.
    pub cluster: &'a Cluster,
    /// Fraction of a NIC's (or pair link's) nominal bandwidth a collective
    /// achieves between nodes; intra-node links run at their nominal rate.
    /// Fitted ([`crate::cost::Calibration::inter_node_efficiency`]).
    pub inter_node_efficiency: f64,
}

impl<'a> Network<'a> {
    /// `cluster`'s links at `inter_node_efficiency` of their nominal rate
    /// between nodes.
    pub fn new(cluster: &'a Cluster, inter_node_efficiency: f64) -> Network<'a> {
        Network {
            cluster,
            inter_node_efficiency,
        }
    }
}

/// A link as a collective sees it: achieved bandwidth and latency per step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// Achieved bandwidth, bytes/s.
    pub bytes_per_s: f64,
    /// Latency of one step of a collective over this link, seconds.
    pub latency_s: f64,
}

/// The link between two devices, with achieved (not nominal) bandwidth.
pub fn link(net: &Network, a: Device, b: Device) -> Link {
    let nominal = net.cluster.link_bytes_per_s(a, b);
    if a.node == b.node {
        Link {
            bytes_per_s: nominal,
            latency_s: INTRA_NODE_LATENCY_S,
        }
    } else {
        Link {
            bytes_per_s: nominal * net.inter_node_efficiency,
            latency_s: INTER_NODE_LATENCY_S,
        }
    }
}

/// One inter-node flow: from node `from` out through NICs `out`, into node
/// `to` through NICs `inn` (sorted, distinct NIC indices of each node).
#[derive(Debug, Clone)]
struct Flow {
    from: usize,
    to: usize,
    out: NicSet,
    inn: NicSet,
    /// A device of each end, for the link between the nodes.
    ends: (Device, Device),
}

/// NIC indices of one node, sorted and distinct: one run (what one GPU, or
/// GPUs in a row, use: the common case, kept without a list) or a list.
#[derive(Debug, Clone)]
enum NicSet {
    Run(std::ops::Range<usize>),
    List(Vec<usize>),
}

impl NicSet {
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        let (run, list) = match self {
            NicSet::Run(r) => (r.clone(), &[][..]),
            NicSet::List(v) => (0..0, &v[..]),
        };
        run.chain(list.iter().copied())
    }

    fn len(&self) -> usize {
        match self {
            NicSet::Run(r) => r.len(),
            NicSet::List(v) => v.len(),
        }
    }
}

/// The NICs that `gpus` of node `node` use, sorted and distinct.
fn nics_of(node: &Node, gpus: impl Iterator<Item = usize> + Clone) -> NicSet {
    // GPUs in increasing order use runs that overlap or follow each other
    // or leave a gap: one run unless there is a gap.
    let mut run: Option<std::ops::Range<usize>> = None;
    for g in gpus.clone() {
        let r = node.nics_of_gpu(g);
        run = match run {
            None => Some(r),
            Some(u) if r.start >= u.start && r.start <= u.end => Some(u.start..u.end.max(r.end)),
            Some(_) => {
                let mut v: Vec<usize> = gpus.flat_map(|g| node.nics_of_gpu(g)).collect();
                v.sort_unstable();
                v.dedup();
                return NicSet::List(v);
            }
        };
    }
    NicSet::Run(run.unwrap_or(0..0))
}

/// Load of every NIC in each direction (a flow over `k` NICs adds `1 / k`
/// to each) and the number of flows between each ordered node pair.
#[derive(Debug, Default)]
struct NicLoad {
    out: KeyedSums<f64>,
    inn: KeyedSums<f64>,
    pairs: KeyedSums<usize>,
}

impl NicLoad {
    fn new<'f>(flows: impl IntoIterator<Item = &'f Flow>) -> NicLoad {
        let (mut out, mut inn, mut pairs) = (Vec::new(), Vec::new(), Vec::new());
        for f in flows {
            for j in f.out.iter() {
                out.push(((f.from, j), 1.0 / f.out.len() as f64));
            }
            for j in f.inn.iter() {
                inn.push(((f.to, j), 1.0 / f.inn.len() as f64));
            }
            pairs.push(((f.from, f.to), 1));
        }
        NicLoad {
            out: KeyedSums::new(out),
            inn: KeyedSums::new(inn),
            pairs: KeyedSums::new(pairs),
        }
    }
}

/// Sums of values by key, each summed in the order its entries came (a
/// stable sort keeps it, so sums are those of adding them one by one), found
/// by binary search: a sorted vector built once, not a tree of nodes (the
/// network pricing builds one per collective).
#[derive(Debug, Default)]
struct KeyedSums<V> {
    entries: Vec<((usize, usize), V)>,
}

impl<V: Copy + std::ops::AddAssign> KeyedSums<V> {
    fn new(mut raw: Vec<((usize, usize), V)>) -> KeyedSums<V> {
        raw.sort_by_key(|e| e.0);
        let mut entries: Vec<((usize, usize), V)> = Vec::with_capacity(raw.len());
        for (k, v) in raw {
            match entries.last_mut() {
                Some(last) if last.0 == k => last.1 += v,
                _ => entries.push((k, v)),
            }
        }
        KeyedSums { entries }
    }

    fn get(&self, key: (usize, usize)) -> Option<V> {
        self.entries
            .binary_search_by_key(&key, |e| e.0)
            .ok()
            .map(|i| self.entries[i].1)
    }
}

/// Achieved bandwidth of inter-node flow `f` among the concurrent flows
/// counted in `load`: its NICs' share on either side, at most its node
/// pair's link divided among the flows between that pair, times
/// [`Network::inter_node_efficiency`].
fn flow_bytes_per_s(net: &Network, load: &NicLoad, f: &Flow) -> f64 {
    let cluster = net.cluster;
    let side = |map: &KeyedSums<f64>, node: usize, nics: &NicSet| {
        let n = &cluster.nodes[node];
        let per_nic = n.inter_bytes_per_s / n.nics.max(1) as f64;
        let heaviest = nics
            .iter()
            .map(|j| map.get((node, j)).unwrap_or(1.0))
            .fold(0.0, f64::max);
        per_nic / heaviest.max(1e-300)
    };
    let pair = cluster.link_bytes_per_s(f.ends.0, f.ends.1)
        / load.pairs.get((f.from, f.to)).unwrap_or(1).max(1) as f64;
    side(&load.out, f.from, &f.out)
        .min(side(&load.inn, f.to, &f.inn))
        .min(pair)
        * net.inter_node_efficiency
}

/// NCCL's ring order: devices sorted by (node, GPU).
pub(crate) fn ring_order(devices: &[Device]) -> Vec<Device> {
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
pub fn allreduce_s(net: &Network, devices: &[Device], bytes: f64) -> f64 {
    concurrent_allreduce_s(net, &[devices.to_vec()], bytes)
}

/// Several ring all-reduces of `bytes` each, run at the same time (one per
/// tensor-parallel rank of a stage, for example): rings whose inter-node
/// hops leave or enter the same node share its NIC. Returns the time of the
/// slowest ring.
pub fn concurrent_allreduce_s(net: &Network, groups: &[Vec<Device>], bytes: f64) -> f64 {
    ring_collective_s(net, groups, bytes, 2.0)
}

/// Ring all-gather (or reduce-scatter, the same traffic) of a buffer of
/// `bytes` in total, each device holding `bytes / n`: `(n-1) alpha + (n-1)/n
/// * bytes / B`.
pub(crate) fn allgather_s(net: &Network, devices: &[Device], bytes: f64) -> f64 {
    ring_collective_s(net, &[devices.to_vec()], bytes, 1.0)
}

/// Reduce-scatter: the same traffic as an all-gather.
pub fn reduce_scatter_s(net: &Network, devices: &[Device], bytes: f64) -> f64 {
    allgather_s(net, devices, bytes)
}

/// The inter-node hops of a ring (in [`ring_order`], which it must be in),
/// each spread over the NICs of the ring's GPUs on its two nodes; `None`
/// for intra-node hops.
fn ring_flows(cluster: &Cluster, ring: &[Device]) -> Vec<Option<Flow>> {
    // A ring in (node, GPU) order holds each node's devices in one run:
    // the NICs of every run, found in one pass (not one pass per hop, which
    // was quadratic in the ring's length).
    let mut runs: Vec<(usize, NicSet)> = Vec::new();
    let mut start = 0;
    while start < ring.len() {
        let node = ring[start].node;
        let end = start + ring[start..].iter().take_while(|d| d.node == node).count();
        let nics = nics_of(&cluster.nodes[node], ring[start..end].iter().map(|d| d.gpu));
        runs.push((node, nics));
        start = end;
    }
    // The k-th inter-node hop leaves run k for the next run (the last hop
    // closes the ring back to the first).
    let mut k = 0;
    ring_hops(ring)
        .map(|(a, b)| {
            (a.node != b.node).then(|| {
                let (out, inn) = (&runs[k], &runs[(k + 1) % runs.len()]);
                debug_assert_eq!((out.0, inn.0), (a.node, b.node));
                k += 1;
                Flow {
                    from: a.node,
                    to: b.node,
                    out: out.1.clone(),
                    inn: inn.1.clone(),
                    ends: (a, b),
                }
            })
        })
        .collect()
}

/// The time of a collective as a function of its message size, for a fixed
/// set of devices: the slowest of several `fixed_s + factor * bytes /
/// bytes_per_s` (one per ring or send). Everything but the message size is
/// priced once, so a plan re-split many times (the split refinement) prices
/// its collectives once, not once per split.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostCurve {
    /// Each ring or send: the (fixed_s, factor, bytes_per_s) of its ring
    /// and, for an all-reduce over several nodes, of its tree (it takes the
    /// faster); duplicates and pieces never the slowest removed.
    pieces: Vec<Piece>,
    /// Zero for a message of no bytes (sends), instead of the latency
    /// (ring collectives).
    zero_when_empty: bool,
}

/// `fixed_s + factor * bytes / bytes_per_s`.
type Line = (f64, f64, f64);

/// One ring or send: its line, or for an all-reduce over several nodes the
/// faster of it and its tree's, `tree_fixed_s + 2 bytes /
/// (TREE_BANDWIDTH_FRACTION bytes_per_s)` (infinite `tree_fixed_s`: no
/// tree). Four numbers: a 16,384-GPU search keeps many.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Piece {
    ring: Line,
    tree_fixed_s: f64,
}

impl Piece {
    fn at(&self, bytes: f64) -> f64 {
        let (fixed, factor, bw) = self.ring;
        let ring = fixed + factor * bytes / bw;
        if self.tree_fixed_s.is_finite() {
            ring.min(self.tree_fixed_s + 2.0 * bytes / (TREE_BANDWIDTH_FRACTION * bw))
        } else {
            ring
        }
    }
}

impl CostCurve {
    fn new(mut pieces: Vec<Piece>, zero_when_empty: bool) -> CostCurve {
        pieces.sort_by(|x, y| {
            let (a, b) = (x.ring, y.ring);
            a.0.total_cmp(&b.0)
                .then(a.1.total_cmp(&b.1))
                .then(b.2.total_cmp(&a.2))
                .then(x.tree_fixed_s.total_cmp(&y.tree_fixed_s))
        });
        pieces.dedup();
        // A line no larger in fixed time and factor and no slower in
        // bandwidth than another is never the maximum: drop a piece so
        // dominated by a ring or send without a tree (a piece is never
        // above its own ring line), and a tree no faster than its own ring
        // at any size (only among few pieces: the check is quadratic).
        for p in pieces.iter_mut() {
            if p.tree_fixed_s >= p.ring.0 && 2.0 / TREE_BANDWIDTH_FRACTION >= p.ring.1 {
                p.tree_fixed_s = f64::INFINITY;
            }
        }
        if pieces.len() <= 64 {
            let all = pieces.clone();
            pieces.retain(|p| {
                !all.iter().any(|q| {
                    q != p
                        && q.tree_fixed_s.is_infinite()
                        && q.ring.0 >= p.ring.0
                        && q.ring.1 >= p.ring.1
                        && q.ring.2 <= p.ring.2
                })
            });
        }
        // Pieces of many pairs often come down to a few: a search's memo
        // keeps tens of thousands of curves (`DeviceModel`'s `NetMemo`).
        pieces.shrink_to_fit();
        CostCurve {
            pieces,
            zero_when_empty,
        }
    }

    /// Seconds for a message of `bytes`.
    pub fn at(&self, bytes: f64) -> f64 {
        if self.zero_when_empty && bytes <= 0.0 {
            return 0.0;
        }
        self.pieces.iter().map(|p| p.at(bytes)).fold(0.0, f64::max)
    }

    /// The slower of two curves at every size (collectives that all must
    /// finish).
    pub fn max(&self, other: &CostCurve) -> CostCurve {
        let mut pieces = self.pieces.clone();
        pieces.extend_from_slice(&other.pieces);
        CostCurve::new(pieces, self.zero_when_empty && other.zero_when_empty)
    }
}

/// [`concurrent_allreduce_s`] as a function of the message size.
pub fn concurrent_allreduce_curve(net: &Network, groups: &[Vec<Device>]) -> CostCurve {
    ring_collective_curve(net, groups, 2.0)
}

/// [`allgather_s`] as a function of the buffer size.
pub(crate) fn allgather_curve(net: &Network, devices: &[Device]) -> CostCurve {
    ring_collective_curve(net, &[devices.to_vec()], 1.0)
}

/// `phases` = 2 for all-reduce (reduce-scatter then all-gather), 1 for
/// either half.
fn ring_collective_s(net: &Network, groups: &[Vec<Device>], bytes: f64, phases: f64) -> f64 {
    ring_collective_curve(net, groups, phases).at(bytes)
}

fn ring_collective_curve(net: &Network, groups: &[Vec<Device>], phases: f64) -> CostCurve {
    let rings = ConcurrentRings::new(net.cluster, groups);
    let pieces = (0..groups.len())
        .filter(|&i| rings.rings[i].len() > 1)
        .map(|i| rings.piece(net, i, phases))
        .collect();
    CostCurve::new(pieces, false)
}

/// Ring collectives of several groups run at the same time (the replicas
/// of a stage, which run the same layer's collectives together): their
/// inter-node hops load the NICs of the nodes they span, counted once.
#[derive(Debug)]
pub(crate) struct ConcurrentRings {
    rings: Vec<Vec<Device>>,
    flows: Vec<Vec<Option<Flow>>>,
    load: NicLoad,
}

impl ConcurrentRings {
    pub(crate) fn new(cluster: &Cluster, groups: &[Vec<Device>]) -> ConcurrentRings {
        let rings: Vec<Vec<Device>> = groups.iter().map(|g| ring_order(g)).collect();
        // A group of one has no hops.
        let flows: Vec<Vec<Option<Flow>>> = rings
            .iter()
            .map(|r| {
                if r.len() > 1 {
                    ring_flows(cluster, r)
                } else {
                    Vec::new()
                }
            })
            .collect();
        let load = NicLoad::new(flows.iter().flatten().flatten());
        ConcurrentRings { rings, flows, load }
    }

    /// The ring collective of group `i` (`phases` as in
    /// [`ring_collective_s`]) at the rates the others leave its hops. Zero
    /// for a group of one.
    pub(crate) fn curve(&self, net: &Network, i: usize, phases: f64) -> CostCurve {
        let pieces = if self.rings[i].len() < 2 {
            Vec::new()
        } else {
            vec![self.piece(net, i, phases)]
        };
        CostCurve::new(pieces, false)
    }

    /// Group `i`'s piece (a ring of two or more).
    fn piece(&self, net: &Network, i: usize, phases: f64) -> Piece {
        ring_piece(net, &self.load, &self.rings[i], &self.flows[i], phases)
    }

    /// Each hop of group `i`'s ring as (bytes per second, latency) at those
    /// rates: what its time depends on, to tell groups apart by.
    pub(crate) fn hops(&self, net: &Network, i: usize) -> Vec<(f64, f64)> {
        ring_hops(&self.rings[i])
            .zip(&self.flows[i])
            .map(|((a, b), flow)| {
                let l = link(net, a, b);
                let rate = match flow {
                    Some(f) => flow_bytes_per_s(net, &self.load, f),
                    None => l.bytes_per_s,
                };
                (rate, l.latency_s)
            })
            .collect()
    }
}

/// The gradient all-reduces of pipeline stages whose rings cross the same
/// NICs, each priced with every such stage's rings running at once: per
/// stage, its all-reduce curve at those rates and the stages it shares a
/// NIC with (the schedule runs them as they overlap,
/// [`crate::schedule::CrowdedAllReduce`]). `stages[j]` holds stage j's
/// rings (one per tensor-parallel rank). `None` where no two stages' rings
/// leave or enter a node through one NIC, as when each node holds one
/// stage: then each stage's own curve holds.
pub(crate) fn crowded_reductions(
    net: &Network,
    stages: &[Vec<Vec<Device>>],
) -> Option<(Vec<CostCurve>, Vec<Vec<usize>>)> {
    let cluster = net.cluster;
    // Only stages whose rings span nodes use NICs; two of them must meet on
    // a node for any to share one.
    let spanning: Vec<Option<Vec<usize>>> = stages
        .iter()
        .map(|rings| {
            let mut nodes: Vec<usize> = rings.iter().flatten().map(|d| d.node).collect();
            nodes.sort_unstable();
            nodes.dedup();
            (nodes.len() > 1).then_some(nodes)
        })
        .collect();
    let mut on_node: Vec<usize> = spanning.iter().flatten().flatten().copied().collect();
    on_node.sort_unstable();
    if on_node.windows(2).all(|w| w[0] != w[1]) {
        return None;
    }
    let groups: Vec<Vec<Device>> = stages.iter().flatten().cloned().collect();
    let rings = ConcurrentRings::new(cluster, &groups);
    // Each stage's rings' indices among `groups`, and what their
    // inter-node hops share with others': (0, node, NIC) for a NIC, either
    // way, and (1, from, to) for the link between two nodes.
    let mut first = 0;
    let mut nics: Vec<Vec<(u8, usize, usize)>> = Vec::with_capacity(stages.len());
    let mut of_stage: Vec<std::ops::Range<usize>> = Vec::with_capacity(stages.len());
    for s in stages {
        let idx = first..first + s.len();
        first += s.len();
        let mut used: Vec<(u8, usize, usize)> = idx
            .clone()
            .flat_map(|i| rings.flows[i].iter().flatten())
            .flat_map(|f| {
                let out = f.out.iter().map(move |n| (0, f.from, n));
                let inn = f.inn.iter().map(move |n| (0, f.to, n));
                out.chain(inn).chain([(1, f.from, f.to)])
            })
            .collect();
        used.sort_unstable();
        used.dedup();
        nics.push(used);
        of_stage.push(idx);
    }
    let meets = |a: &[(u8, usize, usize)], b: &[(u8, usize, usize)]| {
        a.iter().any(|x| b.binary_search(x).is_ok())
    };
    let peers: Vec<Vec<usize>> = (0..stages.len())
        .map(|j| {
            (0..stages.len())
                .filter(|&k| k != j && meets(&nics[j], &nics[k]))
                .collect()
        })
        .collect();
    if peers.iter().all(|p| p.is_empty()) {
        return None;
    }
    let curves = of_stage
        .into_iter()
        .map(|idx| {
            let pieces = idx
                .filter(|&i| rings.rings[i].len() > 1)
                .map(|i| rings.piece(net, i, 2.0))
                .collect();
            CostCurve::new(pieces, false)
        })
        .collect();
    Some((curves, peers))
}

/// One ring's piece of a ring collective: its slowest hop among the flows
/// of `load`, its latencies, NCCL's tree beside it for an all-reduce over
/// several nodes.
fn ring_piece(
    net: &Network,
    load: &NicLoad,
    ring: &[Device],
    hops: &[Option<Flow>],
    phases: f64,
) -> Piece {
    let n = ring.len() as f64;
    let mut bw = f64::INFINITY;
    let (mut alpha_intra, mut alpha_inter): (f64, f64) = (0.0, 0.0);
    for ((a, b), flow) in ring_hops(ring).zip(hops) {
        let l = link(net, a, b);
        bw = bw.min(match flow {
            Some(f) => flow_bytes_per_s(net, load, f),
            None => l.bytes_per_s,
        });
        if flow.is_some() {
            alpha_inter = alpha_inter.max(l.latency_s);
        } else {
            alpha_intra = alpha_intra.max(l.latency_s);
        }
    }
    // Nodes of the ring: its inter-node hops (one per node when it
    // spans several).
    let m = hops.iter().filter(|h| h.is_some()).count() as f64;
    let steps = phases * (n - 1.0);
    let inter_steps = if m <= 1.0 {
        0.0
    } else if phases >= 2.0 {
        (2.0 * m).min(steps)
    } else {
        m - 1.0
    };
    let ring_line = (
        (steps - inter_steps) * alpha_intra + inter_steps * alpha_inter,
        steps / n,
        bw,
    );
    let tree_fixed_s = if phases >= 2.0 && m > 1.0 {
        let per_node = (n / m - 1.0).max(0.0);
        2.0 * (per_node * alpha_intra + m.log2().floor() * alpha_inter)
    } else {
        f64::INFINITY
    };
    Piece {
        ring: ring_line,
        tree_fixed_s,
    }
}

/// Point-to-point send of `bytes` from `a` to `b`: `alpha + bytes / B`.
/// Zero when `a == b` or `bytes == 0`.
pub fn p2p_s(net: &Network, a: Device, b: Device, bytes: f64) -> f64 {
    concurrent_p2p_s(net, &[(a, b)], bytes)
}

/// Several sends of `bytes` each at the same time (every tensor-parallel
/// rank and every replica crossing one pipeline cut): inter-node sends
/// through the same NIC share it (each send uses its GPUs' NICs). Returns
/// the time of the slowest send.
pub fn concurrent_p2p_s(net: &Network, pairs: &[(Device, Device)], bytes: f64) -> f64 {
    if bytes <= 0.0 {
        return 0.0;
    }
    concurrent_p2p_curve(net, pairs).at(bytes)
}

/// [`concurrent_p2p_s`] as a function of the message size.
pub fn concurrent_p2p_curve(net: &Network, pairs: &[(Device, Device)]) -> CostCurve {
    let cluster = net.cluster;
    let flow = |a: Device, b: Device| {
        (a.node != b.node).then(|| Flow {
            from: a.node,
            to: b.node,
            out: nics_of(&cluster.nodes[a.node], std::iter::once(a.gpu)),
            inn: nics_of(&cluster.nodes[b.node], std::iter::once(b.gpu)),
            ends: (a, b),
        })
    };
    let flows: Vec<Option<Flow>> = pairs.iter().map(|&(a, b)| flow(a, b)).collect();
    let load = NicLoad::new(flows.iter().flatten());
    let pieces = pairs
        .iter()
        .zip(&flows)
        .filter(|((a, b), _)| a != b)
        .map(|(&(a, b), f)| {
            let l = link(net, a, b);
            let bw = match f {
                Some(f) => flow_bytes_per_s(net, &load, f),
                None => l.bytes_per_s,
            };
            Piece {
                ring: (l.latency_s, 1.0, bw),
                tree_fixed_s: f64::INFINITY,
            }
        })
        .collect();
    CostCurve::new(pieces, true)
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
            nics: 1,
            gpu_memory_bytes: None,
            price_per_hour: None,
        };
        Cluster {
            name: "t".into(),
            nodes: vec![node(8e9), node(4e9)],
            links: Vec::new(),
        }
    }

    /// The tests' hand computations use half the nominal rate between nodes.
    fn net(c: &Cluster) -> Network<'_> {
        Network::new(c, 0.5)
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} != {b}");
    }

    #[test]
    fn allreduce_inside_a_node() {
        let c = cluster();
        // n = 4: 2*3*10us + 2*3/4 * 1e9 B / 100e9 B/s = 60us + 15ms.
        let t = allreduce_s(&net(&c), &[d(0, 0), d(0, 1), d(0, 2), d(0, 3)], 1e9);
        close(t, 60e-6 + 0.015);
        assert_eq!(allreduce_s(&net(&c), &[d(0, 0)], 1e9), 0.0);
    }

    #[test]
    fn allreduce_across_nodes_runs_at_the_slowest_hop() {
        let c = cluster();
        // Ring 0:0 -> 0:1 -> 1:0 -> 1:1 -> back; the inter-node hops run at
        // min(8, 4) GB/s * 0.5 = 2 GB/s. Of its 2*3 steps NCCL's model has
        // 2*2 cross the network (30us), the other 2 not (10us):
        // 120us + 20us + 1.5 * 1e9 / 2e9.
        let t = allreduce_s(&net(&c), &[d(1, 1), d(0, 0), d(1, 0), d(0, 1)], 1e9);
        close(t, 140e-6 + 0.75);
    }

    #[test]
    fn concurrent_rings_share_a_nic() {
        let c = cluster();
        // Two rings of 2, each across the nodes: each NIC carries 2 flows
        // out and 2 in, so each hop gets 2 GB/s / 2 = 1 GB/s.
        // 2*1*30us + 2*1/2 * 1e9 / 1e9 = 60us + 1 s.
        let t = concurrent_allreduce_s(
            &net(&c),
            &[vec![d(0, 0), d(1, 0)], vec![d(0, 1), d(1, 1)]],
            1e9,
        );
        close(t, 60e-6 + 1.0);
        // Rings inside nodes do not load the NIC.
        let t = concurrent_allreduce_s(
            &net(&c),
            &[vec![d(0, 0), d(1, 0)], vec![d(0, 1), d(0, 2)]],
            1e9,
        );
        close(t, 60e-6 + 0.5);
    }

    /// One ring among others ([`ConcurrentRings`]) is priced at the rates
    /// the others leave it, and the rates it reports are those it is priced
    /// at.
    #[test]
    fn a_ring_among_others_shares_their_nics() {
        let c = cluster();
        let n = net(&c);
        let groups = [vec![d(0, 0), d(1, 0)], vec![d(0, 1), d(1, 1)]];
        let both = ConcurrentRings::new(&c, &groups);
        for i in 0..2 {
            close(both.curve(&n, i, 2.0).at(1e9), 60e-6 + 1.0);
            close(both.curve(&n, i, 1.0).at(1e9), 30e-6 + 0.5);
            let rates: Vec<f64> = both.hops(&n, i).iter().map(|h| h.0).collect();
            assert_eq!(rates, vec![1e9, 1e9]);
        }
        // Alone, the rates of the slower NIC (4 GB/s at half): one ring.
        let alone = ConcurrentRings::new(&c, &groups[..1]);
        close(alone.curve(&n, 0, 2.0).at(1e9), 60e-6 + 0.5);
        // A ring inside a node is alone whatever the others do; a group of
        // one costs nothing.
        let inside = [groups[0].clone(), vec![d(0, 2), d(0, 3)]];
        close(
            ConcurrentRings::new(&c, &inside).curve(&n, 1, 2.0).at(1e9),
            allreduce_s(&n, &inside[1], 1e9),
        );
        let one = ConcurrentRings::new(&c, &[vec![d(0, 0)]]);
        assert_eq!(one.curve(&n, 0, 2.0).at(1e9), 0.0);
    }

    /// Two stages whose data-parallel rings cross the same two nodes'
    /// NICs are priced each beside the other, and meet; stages each inside
    /// a node, or on NICs of their own, do not.
    #[test]
    fn stages_whose_rings_cross_one_nic_crowd_it() {
        let c = cluster();
        let n = net(&c);
        // Stage j: one ring over GPU j of each node.
        let stages = vec![vec![vec![d(0, 0), d(1, 0)]], vec![vec![d(0, 1), d(1, 1)]]];
        let (curves, peers) = crowded_reductions(&n, &stages).unwrap();
        assert_eq!(peers, vec![vec![1], vec![0]]);
        for curve in &curves {
            // Half the slower NIC each: 1 GB/s, not 2.
            close(curve.at(1e9), 60e-6 + 1.0);
            close(
                concurrent_allreduce_curve(&n, &stages[0]).at(1e9),
                60e-6 + 0.5,
            );
        }
        // A third stage inside a node crowds nothing and meets no one.
        let mut three = stages.clone();
        three.push(vec![vec![d(0, 2), d(0, 3)]]);
        let (curves, peers) = crowded_reductions(&n, &three).unwrap();
        assert_eq!(peers, vec![vec![1], vec![0], vec![]]);
        close(curves[2].at(1e9), allreduce_s(&n, &three[2][0], 1e9));
        // Each stage on a node of its own: none meet.
        let inside = vec![vec![vec![d(0, 0), d(0, 1)]], vec![vec![d(1, 0), d(1, 1)]]];
        assert!(crowded_reductions(&n, &inside).is_none());
        // One NIC per GPU: they meet on the link between the two nodes,
        // which holds both, and each runs as it runs alone.
        let mut own = c.clone();
        for node in &mut own.nodes {
            node.nics = 4;
        }
        let own_net = net(&own);
        let (curves, peers) = crowded_reductions(&own_net, &stages).unwrap();
        assert_eq!(peers, vec![vec![1], vec![0]]);
        for (curve, s) in curves.iter().zip(&stages) {
            close(
                curve.at(1e9),
                concurrent_allreduce_curve(&own_net, s).at(1e9),
            );
        }
    }

    #[test]
    fn allgather_is_half_an_allreduce_of_traffic() {
        let c = cluster();
        // (n-1) alpha + (n-1)/n bytes / B = 30us + 0.5 * 1e9 / 2e9.
        close(
            allgather_s(&net(&c), &[d(0, 0), d(1, 0)], 1e9),
            30e-6 + 0.25,
        );
        close(
            reduce_scatter_s(&net(&c), &[d(0, 0), d(1, 0)], 1e9),
            30e-6 + 0.25,
        );
    }

    #[test]
    fn point_to_point() {
        let c = cluster();
        close(p2p_s(&net(&c), d(0, 0), d(0, 1), 1e9), 10e-6 + 0.01);
        close(p2p_s(&net(&c), d(0, 0), d(1, 0), 1e9), 30e-6 + 0.5);
        assert_eq!(p2p_s(&net(&c), d(0, 0), d(0, 0), 1e9), 0.0);
        assert_eq!(p2p_s(&net(&c), d(0, 0), d(1, 0), 0.0), 0.0);
        // Two sends out of node 0 at once share its NIC.
        let t = concurrent_p2p_s(&net(&c), &[(d(0, 0), d(1, 0)), (d(0, 1), d(1, 1))], 1e9);
        close(t, 30e-6 + 1.0);
    }

    /// Many alike sends keep one piece, and only its room: a search's memo
    /// holds tens of thousands of curves (a 768-GPU search held 4.9 GB
    /// when each kept room for every pair).
    #[test]
    fn alike_sends_keep_one_piece() {
        let c = cluster();
        let pairs: Vec<(Device, Device)> = (0..4).map(|g| (d(0, g), d(1, g))).collect();
        let curve = concurrent_p2p_curve(&net(&c), &pairs);
        assert_eq!(curve.pieces.len(), 1);
        assert_eq!(curve.pieces.capacity(), 1);
        // Four sends share node 1's NIC, the slower (4 GB/s x 0.5 / 4).
        close(curve.at(1e9), 30e-6 + 2.0);
    }

    /// Two nodes of 4 GPUs, 16 GB/s each, with `nics` NICs.
    fn nic_cluster(nics: usize) -> Cluster {
        let mut c = cluster();
        for n in &mut c.nodes {
            n.inter_bytes_per_s = 16e9;
            n.nics = nics;
        }
        c
    }

    #[test]
    fn one_gpu_sends_through_its_own_nic() {
        // Achieved: 0.5 x 16 GB/s = 8 GB/s for the node, 2 GB/s per NIC.
        let (one, four) = (nic_cluster(1), nic_cluster(4));
        // A lone send: the whole shared NIC, or one of four.
        close(p2p_s(&net(&one), d(0, 0), d(1, 0), 8e9), 30e-6 + 1.0);
        close(p2p_s(&net(&four), d(0, 0), d(1, 0), 8e9), 30e-6 + 4.0);
        // Four sends from four GPUs: a quarter of the node either way.
        let pairs: Vec<_> = (0..4).map(|g| (d(0, g), d(1, g))).collect();
        close(concurrent_p2p_s(&net(&one), &pairs, 8e9), 30e-6 + 4.0);
        close(concurrent_p2p_s(&net(&four), &pairs, 8e9), 30e-6 + 4.0);
        // Two sends from one GPU share its NIC; from GPUs 0 and 1 they don't.
        let same = [(d(0, 0), d(1, 0)), (d(0, 0), d(1, 1))];
        close(concurrent_p2p_s(&net(&four), &same, 8e9), 30e-6 + 8.0);
        let apart = [(d(0, 0), d(1, 0)), (d(0, 1), d(1, 1))];
        close(concurrent_p2p_s(&net(&four), &apart, 8e9), 30e-6 + 4.0);
        // Two NICs for four GPUs: GPUs 0 and 1 share NIC 0.
        close(
            concurrent_p2p_s(&net(&nic_cluster(2)), &apart, 8e9),
            30e-6 + 4.0,
        );
        let spread = [(d(0, 0), d(1, 0)), (d(0, 2), d(1, 2))];
        close(
            concurrent_p2p_s(&net(&nic_cluster(2)), &spread, 8e9),
            30e-6 + 2.0,
        );
    }

    #[test]
    fn a_ring_spreads_over_the_nics_of_its_gpus() {
        let all: Vec<Device> = (0..2).flat_map(|n| (0..4).map(move |g| d(n, g))).collect();
        // n = 8 over the node's full 8 GB/s achieved, 4 or 1 NICs alike:
        // of 2*7 steps, 2*2 cross the network (30us) and 10 do not (10us);
        // + 2*7/8 * 8e9 / 8e9. The tree (2 (3*10us + 1*30us) + 2 * 8e9 /
        // (0.92 * 8e9)) is slower.
        for nics in [1, 4] {
            close(
                allreduce_s(&net(&nic_cluster(nics)), &all, 8e9),
                4.0 * 30e-6 + 10.0 * 10e-6 + 1.75,
            );
        }
        // Four rings, one per GPU index (data parallelism across the two
        // nodes): each gets its own NIC, or a quarter of the shared one.
        let rings: Vec<Vec<Device>> = (0..4).map(|g| vec![d(0, g), d(1, g)]).collect();
        for nics in [1, 4] {
            close(
                concurrent_allreduce_s(&net(&nic_cluster(nics)), &rings, 8e9),
                2.0 * 30e-6 + 8e9 / 2e9,
            );
        }
        // One ring of one GPU per node gets one NIC of four.
        close(
            allreduce_s(&net(&nic_cluster(4)), &rings[0], 8e9),
            2.0 * 30e-6 + 8e9 / 2e9,
        );
    }

    /// NCCL's tree takes over where the ring's latency, linear in the
    /// nodes, outgrows the tree's lower bandwidth: one GPU on each of 1,024
    /// nodes, 1 GB/s achieved per NIC.
    #[test]
    fn a_tree_beats_the_ring_at_scale_and_not_for_large_messages() {
        let node = Node {
            gpu_type: "X".into(),
            gpus: 1,
            intra_bytes_per_s: 100e9,
            inter_bytes_per_s: 2e9,
            nics: 1,
            gpu_memory_bytes: None,
            price_per_hour: None,
        };
        let m = 1024usize;
        let c = Cluster {
            name: "wide".into(),
            nodes: vec![node; m],
            links: Vec::new(),
        };
        let group: Vec<Device> = (0..m).map(|n| d(n, 0)).collect();
        let (lat, bw) = (30e-6, 1e9);
        let ring = |bytes: f64| 2.0 * 1023.0 * lat + 2.0 * 1023.0 / 1024.0 * bytes / bw;
        // log2(1024) = 10 levels, each crossed twice.
        let tree = |bytes: f64| 2.0 * 10.0 * lat + 2.0 * bytes / (TREE_BANDWIDTH_FRACTION * bw);
        // 10 MB: ring 61.4 ms of latency + 20 ms; tree 0.6 ms + 21.7 ms.
        assert!(tree(1e7) < ring(1e7));
        close(allreduce_s(&net(&c), &group, 1e7), tree(1e7));
        // 10 GB: the ring's bandwidth wins.
        assert!(ring(1e10) < tree(1e10));
        close(allreduce_s(&net(&c), &group, 1e10), ring(1e10));
        // Half collectives have no tree.
        close(
            allgather_s(&net(&c), &group, 1e7),
            1023.0 * lat + 1023.0 / 1024.0 * 1e7 / bw,
        );
        // As a curve, the same.
        let curve = concurrent_allreduce_curve(&net(&c), std::slice::from_ref(&group));
        for bytes in [1e3, 1e7, 1e10] {
            close(curve.at(bytes), allreduce_s(&net(&c), &group, bytes));
        }
    }

    #[test]
    fn a_pair_link_caps_the_flows_between_its_nodes() {
        let mut c = nic_cluster(1);
        c.nodes.push(c.nodes[0].clone());
        // Nodes 0 and 2 are far apart: 2 GB/s between them (1 achieved).
        c.links.push(crate::cluster::NodeLink {
            nodes: [2, 0],
            bytes_per_s: 2e9,
        });
        close(p2p_s(&net(&c), d(0, 0), d(2, 0), 1e9), 30e-6 + 1.0);
        close(p2p_s(&net(&c), d(0, 0), d(1, 0), 1e9), 30e-6 + 0.125);
        // Two sends over the far link share it; one far and one near send
        // share only node 0's NIC (8 GB/s achieved, 4 each), and the far one
        // stays at its link's 1 GB/s.
        let far = [(d(0, 0), d(2, 0)), (d(0, 1), d(2, 1))];
        close(concurrent_p2p_s(&net(&c), &far, 1e9), 30e-6 + 2.0);
        let mixed = [(d(0, 0), d(2, 0)), (d(0, 1), d(1, 1))];
        close(concurrent_p2p_s(&net(&c), &mixed, 1e9), 30e-6 + 1.0);
        // A ring over all three nodes runs at its far hop (2 -> 0).
        let t = allreduce_s(&net(&c), &[d(0, 0), d(1, 0), d(2, 0)], 3e9);
        close(t, 4.0 * 30e-6 + 2.0 * 2.0 / 3.0 * 3e9 / 1e9);
    }

    #[test]
    fn gbps_units() {
        // 50 Gbit/s inside a node is 6.25 GB/s.
        let mut c = cluster();
        c.nodes[0].intra_bytes_per_s = 50.0 * GBPS_TO_BYTES_PER_S;
        close(p2p_s(&net(&c), d(0, 0), d(0, 1), 6.25e9), 10e-6 + 1.0);
    }

    /// The NICs of a set of GPUs are those of its GPUs, sorted and
    /// distinct, on nodes of 8 GPUs with 1 to 32 NICs, for every set of
    /// GPUs; a set of GPUs in a row is one run.
    #[test]
    fn nics_of_gpus_are_their_gpus_nics() {
        for nics in [1, 2, 3, 4, 8, 16, 32] {
            let node = Node {
                gpu_type: "X".into(),
                gpus: 8,
                intra_bytes_per_s: 1e9,
                inter_bytes_per_s: 1e9,
                nics,
                gpu_memory_bytes: None,
                price_per_hour: None,
            };
            for set in 1u32..256 {
                let gpus: Vec<usize> = (0..8).filter(|g| set >> g & 1 == 1).collect();
                let mut want: Vec<usize> = gpus.iter().flat_map(|&g| node.nics_of_gpu(g)).collect();
                want.sort_unstable();
                want.dedup();
                let got = nics_of(&node, gpus.iter().copied());
                assert_eq!(
                    got.iter().collect::<Vec<_>>(),
                    want,
                    "{nics} NICs, GPUs {gpus:?}"
                );
                assert_eq!(got.len(), want.len());
                let in_a_row = gpus.windows(2).all(|w| w[1] == w[0] + 1);
                if in_a_row {
                    assert!(matches!(got, NicSet::Run(_)), "{nics} NICs, GPUs {gpus:?}");
                }
                // Out of order, the same set.
                let got = nics_of(&node, gpus.iter().rev().copied());
                assert_eq!(
                    got.iter().collect::<Vec<_>>(),
                    want,
                    "{nics} NICs, GPUs {gpus:?} reversed"
                );
            }
        }
    }
}
