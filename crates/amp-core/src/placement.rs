//! Device placement: which GPU runs which (pipeline, data, tensor) rank.
//!
//! Ranks are laid out over a node-major device list, the way DeepSpeed and
//! Megatron-LM assign ranks to the GPUs of a hostfile. Two choices shape the
//! placement: the order of the three axes (which one varies fastest along
//! the device list) and the order of the nodes in that list (which decides,
//! on a mixed cluster, which GPU types serve which pipeline stages).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, Device, Node};

/// One of the three parallel axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Axis {
    /// Pipeline parallelism: stages of consecutive layers.
    Pp,
    /// Data parallelism: replicas over different samples.
    Dp,
    /// Tensor parallelism: each layer split over a group of GPUs.
    Tp,
}

/// Axis order from outermost (slowest-varying along the device list) to
/// innermost. `[Pp, Dp, Tp]` is the DeepSpeed/Megatron default used by the
/// AMP artifact: rank = tp_idx + tp * dp_idx + tp * dp * pp_idx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AxisOrder(pub [Axis; 3]);

impl AxisOrder {
    /// `[Pp, Dp, Tp]`: the DeepSpeed/Megatron-LM rank order, the artifact's.
    pub const DEFAULT: AxisOrder = AxisOrder([Axis::Pp, Axis::Dp, Axis::Tp]);

    /// All six axis orders, the default first.
    pub fn all() -> [AxisOrder; 6] {
        use Axis::*;
        [
            AxisOrder([Pp, Dp, Tp]),
            AxisOrder([Dp, Pp, Tp]),
            AxisOrder([Pp, Tp, Dp]),
            AxisOrder([Dp, Tp, Pp]),
            AxisOrder([Tp, Pp, Dp]),
            AxisOrder([Tp, Dp, Pp]),
        ]
    }

    /// The order as text, outermost first, e.g. `pp-dp-tp`.
    pub fn label(&self) -> String {
        self.0
            .iter()
            .map(|a| match a {
                Axis::Pp => "pp",
                Axis::Dp => "dp",
                Axis::Tp => "tp",
            })
            .collect::<Vec<_>>()
            .join("-")
    }
}

/// A placement: axis order plus node order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Placement {
    /// Which axis varies slowest and which fastest along the device list.
    pub axis_order: AxisOrder,
    /// Nodes in the order their GPUs appear in the rank list.
    pub node_order: Vec<usize>,
}

impl Placement {
    /// The artifact's default: ranks in DeepSpeed order over nodes as given.
    pub fn artifact_default(cluster: &Cluster) -> Placement {
        Placement {
            axis_order: AxisOrder::DEFAULT,
            node_order: (0..cluster.nodes.len()).collect(),
        }
    }

    /// A short description for reports: axis order and node order, e.g.
    /// `pp-dp-tp nodes 0,1,2,3`.
    pub fn summary(&self) -> String {
        let nodes: Vec<String> = self.node_order.iter().map(|n| n.to_string()).collect();
        format!("{} nodes {}", self.axis_order.label(), nodes.join(","))
    }
}

/// Devices of a uniform plan: `devices[pp][dp][tp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceGrid {
    /// Tensor-parallel degree: GPUs per layer group.
    pub tp: usize,
    /// Data-parallel degree: replicas.
    pub dp: usize,
    /// Pipeline-parallel degree: stages.
    pub pp: usize,
    /// `devices[pp][dp][tp]`: the GPU of each (stage, replica, tensor) rank.
    pub devices: Vec<Vec<Vec<Device>>>,
}

impl DeviceGrid {
    /// Lays the ranks of (tp, dp, pp) over the cluster. The product must
    /// equal the number of devices.
    pub fn new(
        cluster: &Cluster,
        tp: usize,
        dp: usize,
        pp: usize,
        placement: &Placement,
    ) -> DeviceGrid {
        // Each node's GPUs in index order, node by node: O(devices).
        let mut list = Vec::with_capacity(tp * dp * pp);
        for &n in &placement.node_order {
            list.extend((0..cluster.nodes[n].gpus).map(|gpu| Device { node: n, gpu }));
        }
        assert_eq!(
            list.len(),
            tp * dp * pp,
            "tp * dp * pp must equal the device count"
        );
        let size = |a: Axis| match a {
            Axis::Pp => pp,
            Axis::Dp => dp,
            Axis::Tp => tp,
        };
        let [outer, middle, inner] = placement.axis_order.0;
        let mut devices = vec![vec![vec![Device { node: 0, gpu: 0 }; tp]; dp]; pp];
        for (rank, device) in list.into_iter().enumerate() {
            let i_inner = rank % size(inner);
            let i_middle = (rank / size(inner)) % size(middle);
            let i_outer = rank / (size(inner) * size(middle));
            let mut idx = [0usize; 3];
            for (axis, i) in [(outer, i_outer), (middle, i_middle), (inner, i_inner)] {
                let slot = match axis {
                    Axis::Pp => 0,
                    Axis::Dp => 1,
                    Axis::Tp => 2,
                };
                idx[slot] = i;
            }
            devices[idx[0]][idx[1]][idx[2]] = device;
        }
        DeviceGrid {
            tp,
            dp,
            pp,
            devices,
        }
    }

    /// Devices of stage `j`, replica by replica.
    pub fn stage(&self, j: usize) -> &Vec<Vec<Device>> {
        &self.devices[j]
    }
}

/// The same node description as far as any cost model can tell (GPU type and
/// count, bandwidths, NICs, memory; the price is not a cost of a plan).
fn same_node_kind(a: &Node, b: &Node) -> bool {
    a.gpu_type == b.gpu_type
        && a.gpus == b.gpus
        && a.intra_bytes_per_s == b.intra_bytes_per_s
        && a.inter_bytes_per_s == b.inter_bytes_per_s
        && a.nics == b.nics
        && a.gpu_memory_bytes == b.gpu_memory_bytes
}

/// Class id of every node, numbered in order of first appearance: two nodes
/// share a class when swapping them changes no bandwidth anywhere, i.e. they
/// are the same kind of node and have the same bandwidth to every third
/// node ("twins"). All nodes of zone A linked alike to all nodes of zone B
/// are one class; a node whose links differ is apart.
///
/// A pair link equal to the default (the slower of the two nodes' networks)
/// is the same as no link and is ignored. Being twins is an equivalence
/// (if a~b and b~c, every link among the three is equal, so a~c), so each
/// node is compared with one member of each candidate class only; candidates
/// are bucketed by node kind and the multiset of their link bandwidths,
/// which twins share. O(nodes x classes per bucket x links per node).
pub fn node_classes(cluster: &Cluster) -> Vec<usize> {
    let n = cluster.nodes.len();
    // Pair links that differ from the default, per node, sorted by the other node.
    let mut adj: Vec<Vec<(usize, u64)>> = vec![Vec::new(); n];
    for l in &cluster.links {
        let [a, b] = l.nodes;
        if a >= n || b >= n || a == b {
            continue;
        }
        let default = cluster.nodes[a]
            .inter_bytes_per_s
            .min(cluster.nodes[b].inter_bytes_per_s);
        if l.bytes_per_s == default {
            continue;
        }
        adj[a].push((b, l.bytes_per_s.to_bits()));
        adj[b].push((a, l.bytes_per_s.to_bits()));
    }
    for row in &mut adj {
        row.sort_unstable();
        row.dedup_by_key(|e| e.0);
    }
    // Bandwidth to every node but `skip`, in node order.
    let without = |row: &[(usize, u64)], skip: usize| {
        row.iter()
            .copied()
            .filter(move |&(x, _)| x != skip)
            .collect::<Vec<_>>()
    };
    let twins = |a: usize, b: usize| {
        same_node_kind(&cluster.nodes[a], &cluster.nodes[b])
            && adj[a].len() == adj[b].len()
            && without(&adj[a], b) == without(&adj[b], a)
    };
    // Bucket: node kind (as the first node of that kind) and sorted bandwidths.
    let mut kinds: Vec<usize> = Vec::new();
    // (kind, sorted bandwidths) -> (first node, class) of each class in it.
    type Bucket = Vec<(usize, usize)>;
    let mut buckets: HashMap<(usize, Vec<u64>), Bucket> = HashMap::new();
    let mut next_class = 0;
    let mut classes = vec![0usize; n];
    for i in 0..n {
        let kind = match kinds
            .iter()
            .position(|&k| same_node_kind(&cluster.nodes[k], &cluster.nodes[i]))
        {
            Some(k) => k,
            None => {
                kinds.push(i);
                kinds.len() - 1
            }
        };
        let mut bws: Vec<u64> = adj[i].iter().map(|e| e.1).collect();
        bws.sort_unstable();
        let reps = buckets.entry((kind, bws)).or_default();
        match reps.iter().find(|&&(r, _)| twins(r, i)) {
            Some(&(_, c)) => classes[i] = c,
            None => {
                reps.push((i, next_class));
                classes[i] = next_class;
                next_class += 1;
            }
        }
    }
    classes
}

/// For each of `count` groups of stages (`group(i)`: the stages, each
/// replica by replica), the first group equal to it up to renaming nodes of
/// the same kind, keeping which devices share a node, each GPU's index in
/// its node and each replica's size (`i` itself when no earlier one is).
/// Without pair links a node is described by its kind alone, so such
/// renaming changes no bandwidth, NIC or memory: whatever a cost model
/// computes from the groups' devices is the same, and is computed once per
/// distinct group (a 32-stage pipeline over identical nodes prices one cut,
/// not 31). With pair links the renaming must also keep the links between
/// the group's own nodes and their order (rings run in node order, and a
/// ring's slowest hop depends on which nodes are neighbours): the group's
/// nodes are numbered in node order and their pairwise bandwidths are part
/// of what must match. Nothing outside a group's nodes enters its price, so
/// this is exact. On a cluster of fewer than 64 GPUs, and with pair links
/// for a group over more than 64 nodes (where finding a twin costs more
/// than pricing), every group stands alone.
pub fn first_alike<'a>(
    cluster: &Cluster,
    count: usize,
    group: impl Fn(usize) -> Vec<&'a Vec<Vec<Device>>>,
) -> Vec<usize> {
    first_alike_with(cluster, &NodeKinds::of(cluster), count, group)
}

/// [`first_alike`] with `kinds`, the cluster's [`NodeKinds`] (found once
/// for the many grids of a search).
pub fn first_alike_with<'a>(
    cluster: &Cluster,
    kinds: &NodeKinds,
    count: usize,
    group: impl Fn(usize) -> Vec<&'a Vec<Vec<Device>>>,
) -> Vec<usize> {
    firsts(&alike_keys(cluster, kinds, count, group))
}

/// What [`first_alike`] reads of a cluster, found once: each node's kind
/// by first appearance (none when the cluster is too small for sharing to
/// pay, or has too many kinds for it to be common).
#[derive(Debug, Clone)]
pub struct NodeKinds {
    kind: Vec<usize>,
    /// Every pair link's bandwidth is fixed by its two nodes' kinds
    /// ([`NodeKinds::with_links`]).
    links_by_kind: bool,
}

impl NodeKinds {
    /// The kinds of `cluster`'s nodes.
    pub fn of(cluster: &Cluster) -> NodeKinds {
        // Kinds of node by first appearance; too many kinds makes sharing
        // rare and the lookup slow, so give up (every group its own).
        const MAX_KINDS: usize = 64;
        // Below this many GPUs, pricing a cut costs less than finding its
        // twin.
        const MIN_DEVICES: usize = 64;
        let mut kinds: Vec<usize> = Vec::new();
        let mut kind = Vec::with_capacity(cluster.nodes.len());
        if cluster.num_devices() >= MIN_DEVICES {
            for (i, node) in cluster.nodes.iter().enumerate() {
                match kinds
                    .iter()
                    .position(|&k| same_node_kind(&cluster.nodes[k], node))
                {
                    Some(k) => kind.push(k),
                    None if kinds.len() < MAX_KINDS => {
                        kinds.push(i);
                        kind.push(kinds.len() - 1);
                    }
                    None => break,
                }
            }
        }
        if kind.len() < cluster.nodes.len() {
            kind.clear();
        }
        NodeKinds {
            kind,
            links_by_kind: false,
        }
    }

    /// [`NodeKinds::of`], and whether every pair of nodes is linked at a
    /// bandwidth fixed by the two nodes' kinds (Sailor's clusters: one
    /// curve per pair of zones and GPU kinds), as
    /// [`Cluster::link_bytes_per_s`] reads it. Then renaming nodes of a
    /// kind in node order changes no link, and keys need not list them: a
    /// pass over every pair of nodes, worth it once per search. Only when
    /// every pair has its link, in order (as the searches fill them in
    /// up to a million pairs), where each is found in O(1).
    pub fn with_links(cluster: &Cluster) -> NodeKinds {
        let mut k = NodeKinds::of(cluster);
        let kinds = k.kind.iter().max().map_or(0, |m| m + 1);
        let n = k.kind.len();
        let mut seen = vec![f64::NAN; kinds * kinds];
        k.links_by_kind = n > 0
            && !cluster.links.is_empty()
            && cluster.links.len() == n * (n - 1) / 2
            && (0..n).all(|a| {
                (a + 1..n).all(|b| {
                    let bw = cluster
                        .link_bytes_per_s(Device { node: a, gpu: 0 }, Device { node: b, gpu: 0 });
                    let (x, y) = (k.kind[a].min(k.kind[b]), k.kind[a].max(k.kind[b]));
                    let s = &mut seen[x * kinds + y];
                    if s.is_nan() {
                        *s = bw;
                    }
                    // Bit for bit: a NaN bandwidth matches nothing.
                    s.to_bits() == bw.to_bits()
                })
            });
        k
    }

    /// Whether every pair link's bandwidth is fixed by its nodes' kinds
    /// (found by [`NodeKinds::with_links`] only).
    pub fn links_follow_kinds(&self) -> bool {
        self.links_by_kind
    }
}

/// A group of stages up to renaming nodes ([`first_alike`]), built as
/// words: with pair links, the bandwidth of every pair of the group's
/// nodes (after their count); then per device its kind, renamed node and
/// GPU, each replica closed by its size (a word with the top bit set).
/// Equal keys of one cluster's groups mean equal prices. Hashed and first
/// compared by a fingerprint of the words: a key of a 512-GPU cut is
/// thousands of words, hashed once, not at every lookup. Kept packed
/// (`KeyPacker`): a search's memo holds tens of thousands of keys, and
/// a device's word is mostly the one before it plus one.
#[derive(Debug, Clone)]
pub struct GroupKey {
    packed: Box<[u8]>,
    fingerprint: u64,
}

/// Builds a [`GroupKey`] word by word, packed as it goes without loss
/// (equal packs, equal words): each word as the difference from the last
/// word of its class (top bit set or not), zigzag and LEB128 coded with the
/// class in its lowest bit. A replica's next GPU on the same node, and a
/// size like the last, take one byte each.
struct KeyPacker {
    packed: Vec<u8>,
    last: [u64; 2],
    fingerprint: u64,
    words: u64,
}

impl KeyPacker {
    fn with_capacity(bytes: usize) -> KeyPacker {
        KeyPacker {
            packed: Vec::with_capacity(bytes),
            last: [0; 2],
            fingerprint: 0,
            words: 0,
        }
    }

    fn push(&mut self, w: u64) {
        // A multiply-xorshift mix per word: cheap, and enough to spread
        // keys over buckets (equal keys are still checked byte by byte).
        let x = (self.fingerprint ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.fingerprint = x ^ (x >> 29);
        self.words += 1;
        let class = (w >> 63) as usize;
        let delta = w.wrapping_sub(self.last[class]) as i64;
        self.last[class] = w;
        // Zigzag: small magnitudes of either sign to small numbers; then
        // the class as the lowest bit (in a u128 where it needs 65 bits).
        let zigzag = ((delta << 1) ^ (delta >> 63)) as u64;
        if zigzag < 0x40 {
            self.packed.push((zigzag << 1) as u8 | class as u8);
            return;
        }
        let mut v = (u128::from(zigzag) << 1) | class as u128;
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.packed.push(byte);
                return;
            }
            self.packed.push(byte | 0x80);
        }
    }

    fn finish(self) -> GroupKey {
        GroupKey {
            packed: self.packed.into_boxed_slice(),
            fingerprint: self.fingerprint ^ self.words,
        }
    }
}

/// `words` packed as [`KeyPacker`] packs them.
#[cfg(test)]
fn pack_words(words: &[u64]) -> Box<[u8]> {
    let mut p = KeyPacker::with_capacity(words.len());
    for &w in words {
        p.push(w);
    }
    p.finish().packed
}

impl PartialEq for GroupKey {
    fn eq(&self, other: &GroupKey) -> bool {
        self.fingerprint == other.fingerprint && self.packed == other.packed
    }
}

impl Eq for GroupKey {}

impl std::hash::Hash for GroupKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.fingerprint);
    }
}

/// Bits of a key word for the GPU index and the renamed node; the kind
/// (at most 64 kinds) takes the bits above them, the top bit marks a
/// replica's end.
const GPU_BITS: u32 = 28;
const NODE_BITS: u32 = 29;

/// The [`GroupKey`] of each of `count` groups of `cluster`'s stages
/// (`kinds` its [`NodeKinds`]), `None` for a group that stands alone
/// ([`first_alike`]).
pub fn alike_keys<'a>(
    cluster: &Cluster,
    kinds: &NodeKinds,
    count: usize,
    group: impl Fn(usize) -> Vec<&'a Vec<Vec<Device>>>,
) -> Vec<Option<GroupKey>> {
    let kind = &kinds.kind;
    if kind.is_empty() {
        return vec![None; count];
    }
    let linked = !cluster.links.is_empty();
    // With pair links, a group over more nodes than this stands alone: its
    // key's pairwise bandwidths cost about what pricing it does.
    const MAX_LINKED_NODES: usize = 64;
    // Per node, its new name in the group at hand (`usize::MAX`: none
    // yet), reset after each group.
    let mut renamed = vec![usize::MAX; cluster.nodes.len()];
    let mut nodes: Vec<usize> = Vec::new();
    (0..count)
        .map(|i| {
            let stages = group(i);
            nodes.clear();
            // The links first, after their count, so that no key is
            // another's with its words split differently.
            let mut key = KeyPacker::with_capacity(64);
            if !linked {
                key.push(0);
            } else {
                // Numbered in node order, so that renaming keeps it.
                nodes.extend(
                    stages
                        .iter()
                        .flat_map(|s| s.iter().flatten().map(|d| d.node)),
                );
                nodes.sort_unstable();
                nodes.dedup();
                if nodes.len() > MAX_LINKED_NODES && !kinds.links_by_kind {
                    return None;
                }
                for (r, &n) in nodes.iter().enumerate() {
                    renamed[n] = r;
                }
                let listed = if kinds.links_by_kind {
                    &[][..]
                } else {
                    &nodes[..]
                };
                let pairs = listed.len() * listed.len().saturating_sub(1) / 2;
                key.push(pairs as u64);
                for (x, &a) in listed.iter().enumerate() {
                    for &b in &listed[x + 1..] {
                        let bw = cluster.link_bytes_per_s(
                            Device { node: a, gpu: 0 },
                            Device { node: b, gpu: 0 },
                        );
                        key.push(bw.to_bits());
                    }
                }
            }
            let mut fits = true;
            for replica in stages.into_iter().flatten() {
                for d in replica {
                    if renamed[d.node] == usize::MAX {
                        renamed[d.node] = nodes.len();
                        nodes.push(d.node);
                    }
                    let (n, g) = (renamed[d.node] as u64, d.gpu as u64);
                    fits &= n < 1 << NODE_BITS && g < 1 << GPU_BITS;
                    key.push((kind[d.node] as u64) << (NODE_BITS + GPU_BITS) | n << GPU_BITS | g);
                }
                key.push(1 << 63 | replica.len() as u64);
            }
            for &n in &nodes {
                renamed[n] = usize::MAX;
            }
            // Past the words' room (never on a cluster within the limits),
            // the group stands alone.
            fits.then(|| key.finish())
        })
        .collect()
}

/// Per key, the index of the first equal one (itself when none is; a
/// `None` key is equal to none).
pub fn firsts<K: Eq + std::hash::Hash>(keys: &[Option<K>]) -> Vec<usize> {
    // Few keys (a pipeline's cuts) are found by comparing, which stops at
    // the first difference; many by hashing them whole.
    const MAX_SCANNED: usize = 64;
    if keys.len() <= MAX_SCANNED {
        return (0..keys.len())
            .map(|i| match &keys[i] {
                Some(k) => (0..i).find(|&j| keys[j].as_ref() == Some(k)).unwrap_or(i),
                None => i,
            })
            .collect();
    }
    let mut first: HashMap<&K, usize> = HashMap::new();
    keys.iter()
        .enumerate()
        .map(|(i, k)| match k {
            Some(k) => *first.entry(k).or_insert(i),
            None => i,
        })
        .collect()
}

/// At most this many node orders are tried exhaustively; past it, the
/// heuristic of [`node_orders`] is used.
pub const MAX_NODE_ORDERS: usize = 720;

/// How the node orders of a search were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeOrderSearch {
    /// Every distinct order of the node classes.
    Exhaustive,
    /// Too many orders: each class kept together, the classes in every
    /// order (the first [`MAX_NODE_ORDERS`] orders when there are more).
    ClassesTogether,
}

/// Distinct orders of the nodes, up to swapping interchangeable nodes
/// ([`node_classes`]), and how they were chosen. The orders are the
/// multiset permutations of the nodes' class labels (never factorial over
/// the nodes), in lexicographic order, each class's nodes in index order,
/// when there are at most `max_orders`; otherwise the heuristic keeps each
/// class together and tries the classes in every order (at most
/// `max_orders` of them).
pub fn node_orders_bounded(
    cluster: &Cluster,
    max_orders: usize,
) -> (Vec<Vec<usize>>, NodeOrderSearch) {
    let classes = node_classes(cluster);
    let k = classes.iter().max().map_or(0, |m| m + 1);
    let mut counts = vec![0usize; k];
    for &c in &classes {
        counts[c] += 1;
    }
    let (seqs, how) = if multinomial_at_most(&counts, max_orders) {
        let mut seqs = Vec::new();
        class_sequences(
            &mut counts.clone(),
            &mut Vec::new(),
            classes.len(),
            &mut seqs,
        );
        (seqs, NodeOrderSearch::Exhaustive)
    } else {
        let mut seqs = Vec::new();
        let mut labels: Vec<usize> = (0..k).collect();
        permutations_lex(&mut labels, max_orders.max(1), &mut |perm| {
            let mut s = Vec::with_capacity(classes.len());
            for &c in perm {
                s.extend(std::iter::repeat_n(c, counts[c]));
            }
            seqs.push(s);
        });
        (seqs, NodeOrderSearch::ClassesTogether)
    };
    // Turn a class sequence into nodes: each class's nodes in index order.
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, &c) in classes.iter().enumerate() {
        members[c].push(i);
    }
    let orders = seqs
        .into_iter()
        .map(|seq| {
            let mut next = vec![0usize; k];
            seq.iter()
                .map(|&c| {
                    next[c] += 1;
                    members[c][next[c] - 1]
                })
                .collect()
        })
        .collect();
    (orders, how)
}

/// [`node_orders_bounded`] at [`MAX_NODE_ORDERS`].
pub fn node_orders(cluster: &Cluster) -> Vec<Vec<usize>> {
    node_orders_bounded(cluster, MAX_NODE_ORDERS).0
}

/// Whether the number of distinct orders of a multiset with these counts
/// (n! / prod c!) is at most `max`, computed as a product of binomials
/// that stops as soon as it passes `max` (so it never overflows).
fn multinomial_at_most(counts: &[usize], max: usize) -> bool {
    let max = max as u128;
    let mut total: u128 = 1;
    let mut placed: u128 = 0;
    for &c in counts {
        // total *= C(placed + c, c), one factor at a time: exact at each step.
        for i in 1..=c as u128 {
            placed += 1;
            total = total * placed / i;
            if total > max {
                return false;
            }
        }
    }
    true
}

/// Every distinct sequence with `counts[c]` copies of label `c`, in
/// lexicographic order.
fn class_sequences(
    counts: &mut [usize],
    cur: &mut Vec<usize>,
    len: usize,
    out: &mut Vec<Vec<usize>>,
) {
    if cur.len() == len {
        out.push(cur.clone());
        return;
    }
    for c in 0..counts.len() {
        if counts[c] > 0 {
            counts[c] -= 1;
            cur.push(c);
            class_sequences(counts, cur, len, out);
            cur.pop();
            counts[c] += 1;
        }
    }
}

/// Calls `f` with the first `max` permutations of `items` (sorted first) in
/// lexicographic order.
fn permutations_lex(items: &mut [usize], max: usize, f: &mut impl FnMut(&[usize])) {
    items.sort_unstable();
    for _ in 0..max {
        f(items);
        // Next permutation: the standard in-place step.
        let Some(i) = (1..items.len()).rev().find(|&i| items[i - 1] < items[i]) else {
            return;
        };
        let j = (i..items.len())
            .rev()
            .find(|&j| items[j] > items[i - 1])
            .unwrap();
        items.swap(i - 1, j);
        items[i..].reverse();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words a pack was made of, read back (the inverse of
    /// [`pack_words`], for its test).
    fn unpack_words(packed: &[u8]) -> Vec<u64> {
        let (mut words, mut last) = (Vec::new(), [0u64; 2]);
        let (mut v, mut shift) = (0u128, 0);
        for &b in packed {
            v |= u128::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                let class = (v & 1) as usize;
                let zigzag = (v >> 1) as u64;
                let delta = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
                last[class] = last[class].wrapping_add(delta as u64);
                words.push(last[class]);
                (v, shift) = (0, 0);
            }
        }
        words
    }

    /// Packing loses nothing (so equal packs mean equal words), on words of
    /// every size, both classes and the extremes; a replica's devices on
    /// one node and sizes like the last take a byte each.
    #[test]
    fn packed_keys_read_back_as_their_words() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for n in 0..200 {
            let words: Vec<u64> = (0..n % 40)
                .map(|k| match k % 4 {
                    0 => next(),
                    1 => next() >> (next() % 64),
                    2 => [0, u64::MAX, 1 << 63, (1 << 63) - 1][(next() % 4) as usize],
                    _ => 1 << 63 | (next() % 9),
                })
                .collect();
            assert_eq!(unpack_words(&pack_words(&words)), words);
        }
        // 64 GPUs of one kind on 8 renamed nodes, tp 1: 128 words.
        let words: Vec<u64> = (0..64u64)
            .flat_map(|d| [5 << 57 | (d / 8) << 28 | (d % 8), 1 << 63 | 1])
            .collect();
        let packed = pack_words(&words);
        assert_eq!(unpack_words(&packed), words);
        assert!(packed.len() < 2 * 64 + 8 * 5 + 16, "{} bytes", packed.len());
    }
    use crate::cluster::builtin;

    #[test]
    fn default_order_matches_deepspeed_ranks() {
        let c = builtin::homogeneous();
        let g = DeviceGrid::new(&c, 2, 2, 4, &Placement::artifact_default(&c));
        // rank = tp + 2 dp + 4 pp; node = rank / 4.
        for pp in 0..4 {
            for dp in 0..2 {
                for tp in 0..2 {
                    let rank = tp + 2 * dp + 4 * pp;
                    assert_eq!(
                        g.devices[pp][dp][tp],
                        Device {
                            node: rank / 4,
                            gpu: rank % 4
                        }
                    );
                }
            }
        }
    }

    #[test]
    fn node_order_moves_gpu_types_along_the_pipeline() {
        let c = builtin::het_cluster();
        let p = Placement {
            axis_order: AxisOrder::DEFAULT,
            node_order: vec![3, 0, 1, 2],
        };
        let g = DeviceGrid::new(&c, 1, 4, 4, &p);
        assert!(g.stage(0).iter().flatten().all(|d| d.node == 3));
        assert!(g.stage(3).iter().flatten().all(|d| d.node == 2));
    }

    #[test]
    fn tp_outermost_spreads_groups_across_nodes() {
        let c = builtin::homogeneous();
        let p = Placement {
            axis_order: AxisOrder([Axis::Tp, Axis::Dp, Axis::Pp]),
            node_order: vec![0, 1, 2, 3],
        };
        let g = DeviceGrid::new(&c, 4, 2, 2, &p);
        let nodes: Vec<usize> = g.devices[0][0].iter().map(|d| d.node).collect();
        assert_eq!(nodes, vec![0, 1, 2, 3]);
    }
}
