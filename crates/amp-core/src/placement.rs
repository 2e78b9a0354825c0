//! Device placement: which GPU runs which (pipeline, data, tensor) rank.
//!
//! Ranks are laid out over a node-major device list, the way DeepSpeed and
//! Megatron-LM assign ranks to the GPUs of a hostfile. Two choices shape the
//! placement: the order of the three axes (which one varies fastest along
//! the device list) and the order of the nodes in that list (which decides,
//! on a mixed cluster, which GPU types serve which pipeline stages).

use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, Device};

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
        let by_node = cluster.devices();
        let mut list = Vec::with_capacity(by_node.len());
        for &n in &placement.node_order {
            list.extend(by_node.iter().filter(|d| d.node == n));
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

#[cfg(test)]
mod tests {
    use super::*;
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
