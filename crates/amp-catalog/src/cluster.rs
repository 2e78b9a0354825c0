//! The cluster shorthand: `4xp3.8xlarge+1xg4dn.12xlarge` (COUNTxINSTANCE) or
//! `2x8xH100+4x8xA100-80GB@100Gbps` (`NODESxGPUSxGPU[@BANDWIDTH]`), terms
//! joined by `+`. Instances bring their GPUs, bandwidths and price from the
//! catalog; a GPU term takes its intra-node bandwidth from the GPU's usual
//! interconnect and its network bandwidth from `@BANDWIDTH` (required when
//! the cluster has more than one node). `@BANDWIDTH` after an instance
//! overrides the instance's network bandwidth.

use amp_core::cluster::{Cluster, Node, GBPS_TO_BYTES_PER_S};

use crate::hardware::Catalog;
use crate::CatalogError;

/// Parses the shorthand into a cluster with canonical GPU names, memory per
/// GPU and (for instances) price per node-hour.
pub fn parse_cluster(spec: &str) -> Result<Cluster, CatalogError> {
    parse_cluster_with(&Catalog::builtin(), spec)
}

struct Term {
    text: String,
    count: usize,
    node: Node,
    has_bandwidth: bool,
}

pub fn parse_cluster_with(catalog: &Catalog, spec: &str) -> Result<Cluster, CatalogError> {
    let spec_trim = spec.trim();
    if spec_trim.is_empty() {
        return Err(CatalogError::invalid(
            "cluster shorthand",
            "is empty; write e.g. `4xp3.8xlarge` or `2x8xH100@400Gbps`",
        ));
    }
    let mut terms = Vec::new();
    for raw in spec_trim.split('+') {
        terms.push(parse_term(catalog, raw.trim())?);
    }
    // Counted with a bound before any node is made: a huge or overflowing
    // count is an error, not an allocation.
    let mut total_nodes: usize = 0;
    for t in &terms {
        total_nodes = total_nodes
            .checked_add(t.count)
            .filter(|&n| n <= amp_core::limits::MAX_NODES)
            .ok_or_else(|| {
                CatalogError::invalid(
                    format!("cluster shorthand term `{}`", t.text),
                    format!(
                        "makes more than {} nodes, the limit",
                        amp_core::limits::MAX_NODES
                    ),
                )
            })?;
        if t.node.gpus > amp_core::limits::MAX_GPUS_PER_NODE {
            return Err(CatalogError::invalid(
                format!("cluster shorthand term `{}`", t.text),
                format!(
                    "{} GPUs per node is above the limit of {}",
                    t.node.gpus,
                    amp_core::limits::MAX_GPUS_PER_NODE
                ),
            ));
        }
    }
    let mut nodes = Vec::new();
    for t in terms {
        if total_nodes > 1 && !t.has_bandwidth {
            return Err(CatalogError::invalid(
                format!("cluster shorthand term `{}`", t.text),
                format!(
                    "a GPU term needs the network bandwidth of its nodes when the cluster has several nodes; append it, e.g. `{}@100Gbps`",
                    t.text
                ),
            ));
        }
        nodes.extend(std::iter::repeat_n(t.node, t.count));
    }
    let cluster = Cluster {
        name: spec_trim.to_string(),
        nodes,
        links: Vec::new(),
    };
    cluster
        .validate()
        .map_err(|e| CatalogError::invalid("cluster shorthand", e.to_string()))?;
    Ok(cluster)
}

fn leading_count(s: &str) -> Option<(usize, &str)> {
    let digits = s.chars().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let rest = &s[digits..];
    let rest = rest.strip_prefix('x').or_else(|| rest.strip_prefix('X'))?;
    let n = s[..digits].parse().ok()?;
    Some((n, rest))
}

fn parse_term(catalog: &Catalog, term: &str) -> Result<Term, CatalogError> {
    let at = format!("cluster shorthand term `{term}`");
    if term.is_empty() {
        return Err(CatalogError::invalid(at, "is empty; remove the stray `+`"));
    }
    let (body, bandwidth) = match term.split_once('@') {
        Some((b, bw)) => (b.trim(), Some(parse_bandwidth(bw.trim(), &at)?)),
        None => (term, None),
    };
    let Some((count, rest)) = leading_count(body) else {
        return Err(CatalogError::invalid(
            at,
            "must start with a node count, e.g. `4xp3.8xlarge` or `2x8xH100@400Gbps`",
        ));
    };
    if count == 0 {
        return Err(CatalogError::invalid(at, "node count is 0; use at least 1"));
    }
    if let Some((gpus, gpu_name)) = leading_count(rest) {
        if gpus == 0 {
            return Err(CatalogError::invalid(
                at,
                "GPUs per node is 0; use at least 1",
            ));
        }
        let gpu = catalog.gpu(gpu_name.trim())?;
        let link = catalog.link(&gpu.interconnect)?;
        let intra = link.bytes_per_s();
        // Without @BW, the network of the GPU's reference server (a DGX or
        // the like, cited in gpus.toml) when the catalog knows one.
        let network = gpu.node_network_gbps.map(|g| g * GBPS_TO_BYTES_PER_S);
        return Ok(Term {
            text: term.to_string(),
            count,
            node: Node {
                gpu_type: gpu.name.clone(),
                gpus,
                intra_bytes_per_s: intra,
                inter_bytes_per_s: bandwidth.or(network).unwrap_or(intra),
                // The reference server's NICs go with its bandwidth; a given
                // @BW is one shared interface.
                nics: match (bandwidth, network) {
                    (None, Some(_)) => gpu.node_nics.unwrap_or(1),
                    _ => 1,
                },
                gpu_memory_bytes: Some(gpu.memory_bytes()),
                price_per_hour: None,
            },
            has_bandwidth: bandwidth.is_some() || network.is_some(),
        });
    }
    match catalog.instance(rest.trim()) {
        Ok(inst) => {
            let gpu = catalog.gpu(&inst.gpu)?;
            Ok(Term {
                text: term.to_string(),
                count,
                node: Node {
                    gpu_type: gpu.name.clone(),
                    gpus: inst.gpus,
                    intra_bytes_per_s: inst.intra_gbps * GBPS_TO_BYTES_PER_S,
                    inter_bytes_per_s: bandwidth.unwrap_or(inst.inter_gbps * GBPS_TO_BYTES_PER_S),
                    nics: inst.nics.unwrap_or(1),
                    gpu_memory_bytes: Some(gpu.memory_bytes()),
                    price_per_hour: Some(inst.price_per_hour),
                },
                has_bandwidth: true,
            })
        }
        Err(e) => {
            if let Ok(gpu) = catalog.gpu(rest.trim()) {
                return Err(CatalogError::invalid(
                    at,
                    format!(
                        "`{}` is a GPU, not an instance type; write NODESxGPUSxGPU, e.g. `1x{count}x{}`",
                        rest.trim(),
                        gpu.name
                    ),
                ));
            }
            Err(e)
        }
    }
}

/// `100Gbps`, `100 Gbit/s`, `100Gb/s`, `100G`, `1.6Tbps` (bits) or `25GB/s`
/// (bytes); returns bytes per second.
fn parse_bandwidth(text: &str, at: &str) -> Result<f64, CatalogError> {
    let num_len = text
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map(|(i, _)| i)
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(num_len);
    let value: f64 = num.parse().map_err(|_| {
        CatalogError::invalid(
            at,
            format!("bandwidth `{text}` does not start with a number; write e.g. `@100Gbps`"),
        )
    })?;
    let unit = unit.trim();
    let bytes_per_s = match unit {
        "Gbps" | "gbps" | "Gbit/s" | "Gb/s" | "G" | "g" | "Gbit" => value * 1e9 / 8.0,
        "Tbps" | "tbps" | "Tbit/s" | "Tb/s" | "T" => value * 1e12 / 8.0,
        "Mbps" | "mbps" | "Mbit/s" | "Mb/s" => value * 1e6 / 8.0,
        "GB/s" | "GBps" => value * 1e9,
        _ => {
            return Err(CatalogError::invalid(
                at,
                format!(
                "bandwidth unit `{unit}` in `{text}` is not known; use Gbps, Tbps, Mbps or GB/s"
            ),
            ))
        }
    };
    if !(bytes_per_s.is_finite() && bytes_per_s > 0.0) {
        return Err(CatalogError::invalid(
            at,
            format!("bandwidth `{text}` must be positive"),
        ));
    }
    let gbps = bytes_per_s * 8.0 / 1e9;
    if gbps < amp_core::limits::MIN_GBPS {
        return Err(CatalogError::invalid(
            at,
            format!(
                "bandwidth `{text}` is below the floor of {} Gbit/s (1Mbps); write e.g. `@100Gbps`",
                amp_core::limits::MIN_GBPS
            ),
        ));
    }
    Ok(bytes_per_s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use amp_core::cluster::builtin;

    #[test]
    fn instance_shorthand_reproduces_the_amp_het_cluster() {
        let c = parse_cluster("3xp3.8xlarge+1xg4dn.12xlarge").unwrap();
        let b = builtin::het_cluster();
        assert_eq!(c.nodes.len(), 4);
        for (n, m) in c.nodes.iter().zip(&b.nodes) {
            assert_eq!(n.gpu_type, m.gpu_type);
            assert_eq!(n.gpus, m.gpus);
            assert!((n.intra_bytes_per_s - m.intra_bytes_per_s).abs() < 1.0);
            assert!((n.inter_bytes_per_s - m.inter_bytes_per_s).abs() < 1.0);
            assert_eq!(n.gpu_memory_bytes, m.gpu_memory_bytes);
            assert_eq!(n.price_per_hour, m.price_per_hour);
        }
    }

    #[test]
    fn gpu_shorthand_uses_the_interconnect_and_bandwidth() {
        // No bandwidth given: the reference server's network (DGX H100:
        // 8 x 400 Gb/s).
        let c = parse_cluster("2x8xH100+4x8xA100-80GB@100Gbps").unwrap();
        assert_eq!(c.nodes[0].inter_bytes_per_s, 3200e9 / 8.0);
        // A GPU with no reference network needs one when nodes talk.
        let e = parse_cluster("2x4xT4").unwrap_err();
        assert!(e.to_string().contains("2x4xT4@100Gbps"), "{e}");
        let c = parse_cluster("2x8xH100@400Gbps + 4x8xA100-80GB@100Gbps").unwrap();
        assert_eq!(c.nodes.len(), 6);
        assert_eq!(c.num_devices(), 48);
        assert_eq!(c.nodes[0].gpu_type, "H100-SXM");
        assert_eq!(c.nodes[0].intra_bytes_per_s, 450e9);
        assert_eq!(c.nodes[0].inter_bytes_per_s, 50e9);
        assert_eq!(c.nodes[2].gpu_type, "A100-80GB");
        assert_eq!(c.nodes[2].intra_bytes_per_s, 300e9);
        assert_eq!(c.nodes[2].inter_bytes_per_s, 12.5e9);
        assert_eq!(c.nodes[2].gpu_memory_bytes, Some(80 << 30));
        // One node needs no network bandwidth.
        let c = parse_cluster("1x8xH200").unwrap();
        assert_eq!(c.nodes[0].gpu_type, "H200");
    }

    #[test]
    fn sailor_names_resolve_to_canonical_names() {
        let c = parse_cluster("2x4xGH-96@200Gbps+1x4xA100-40@25GB/s").unwrap();
        assert_eq!(c.nodes[0].gpu_type, "GH200");
        assert_eq!(c.nodes[2].gpu_type, "A100-40GB");
        assert_eq!(c.nodes[2].inter_bytes_per_s, 25e9);
    }

    #[test]
    fn errors_are_specific() {
        let e = parse_cluster("4xp3.8xlarg").unwrap_err().to_string();
        assert!(
            e.contains("unknown instance type `p3.8xlarg`") && e.contains("p3.8xlarge"),
            "{e}"
        );
        let e = parse_cluster("2x8xH10@100Gbps").unwrap_err().to_string();
        assert!(e.contains("unknown GPU `H10`") && e.contains("H100"), "{e}");
        let e = parse_cluster("8xH100").unwrap_err().to_string();
        assert!(e.contains("1x8xH100-SXM"), "{e}");
        let e = parse_cluster("p3.8xlarge").unwrap_err().to_string();
        assert!(e.contains("node count"), "{e}");
        let e = parse_cluster("2x8xH100@fast").unwrap_err().to_string();
        assert!(e.contains("number"), "{e}");
        let e = parse_cluster("2x8xH100@100Qbps").unwrap_err().to_string();
        assert!(e.contains("Qbps"), "{e}");
        let e = parse_cluster("0xp3.8xlarge").unwrap_err().to_string();
        assert!(e.contains("count is 0"), "{e}");
        let e = parse_cluster("1xp3.8xlarge++1xg4dn.12xlarge")
            .unwrap_err()
            .to_string();
        assert!(e.contains("stray"), "{e}");
        assert!(parse_cluster("  ").is_err());
    }
}
