//! The hardware catalog: GPUs, links and cloud instances, read from the TOML
//! files under `data/` (compiled in). Every entry cites its source.

use serde::{Deserialize, Serialize};

use crate::{nearest, normalize, CatalogError};

const GPUS_TOML: &str = include_str!("../data/gpus.toml");
const LINKS_TOML: &str = include_str!("../data/links.toml");
const INSTANCES_TOML: &str = include_str!("../data/instances.toml");

/// One GPU model. Throughputs are dense (no sparsity) peaks in FLOP/s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub vendor: String,
    pub architecture: String,
    pub fp32_tflops: f64,
    #[serde(default)]
    pub fp32_matrix_tflops: Option<f64>,
    #[serde(default)]
    pub tf32_tflops: Option<f64>,
    pub fp16_tflops: f64,
    #[serde(default)]
    pub bf16_tflops: Option<f64>,
    #[serde(default)]
    pub fp8_tflops: Option<f64>,
    /// The datasheet's memory size (the marketed "GB" figure, physically
    /// GiB on HBM and GDDR cards).
    pub memory_gib: f64,
    /// Memory the driver gives the processes, MiB: NVML's `memory.total`
    /// (what `nvidia-smi` prints), less than the datasheet's where ECC
    /// takes its share (6.25% of GDDR with ECC on, as on a T4) or the
    /// driver reserves some. What a framework can allocate from; the CUDA
    /// context, NCCL and the allocator's cache come off it in the fitted
    /// `framework_reserve_bytes`. Source in `usable_memory_source`; absent
    /// where no such measurement is cited, and the datasheet figure stands.
    #[serde(default)]
    pub usable_memory_mib: Option<f64>,
    #[serde(default)]
    pub usable_memory_source: Option<String>,
    pub memory_bandwidth_gbs: f64,
    /// Usual GPU-to-GPU link of a server with this GPU (a link name).
    pub interconnect: String,
    #[serde(default)]
    pub sms: Option<u32>,
    /// Network bandwidth of one node of this GPU's reference multi-GPU
    /// server (all its NICs together), Gbit/s; the cluster shorthand's
    /// default when no `@BW` is given. Source in `node_network_source`.
    #[serde(default)]
    pub node_network_gbps: Option<f64>,
    #[serde(default)]
    pub node_network_source: Option<String>,
    /// NICs sharing `node_network_gbps` in that server (1 if absent), for
    /// [`amp_core::cluster::Node::nics`]; from the same source.
    #[serde(default)]
    pub node_nics: Option<usize>,
    /// Share of the tensor peak reachable with warp-level MMA (1 if absent).
    #[serde(default)]
    pub mma_sync_fraction: Option<f64>,
    pub source: String,
}

impl Gpu {
    /// Capacity a plan may use: the driver's figure where the catalog has
    /// one ([`Gpu::usable_memory_mib`]), else the datasheet's.
    pub fn memory_bytes(&self) -> u64 {
        match self.usable_memory_mib {
            Some(mib) => (mib * (1u64 << 20) as f64) as u64,
            None => (self.memory_gib * (1u64 << 30) as f64) as u64,
        }
    }

    pub fn memory_bytes_per_s(&self) -> f64 {
        self.memory_bandwidth_gbs * 1e9
    }

    /// Matrix (GEMM) peak in FLOP/s at `precision`; falls back to the
    /// nearest rate the GPU has (no BF16 on Volta/Turing: FP16 runs at the
    /// same rate; no TF32 before Ampere: FP32).
    pub fn matmul_peak_flops(&self, precision: crate::Precision) -> f64 {
        use crate::Precision::*;
        let fp32 = self.fp32_matrix_tflops.unwrap_or(self.fp32_tflops);
        let bf16 = self.bf16_tflops.unwrap_or(self.fp16_tflops);
        let t = match precision {
            Fp32 => fp32,
            Tf32 => self.tf32_tflops.unwrap_or(fp32),
            Fp16 => self.fp16_tflops,
            Bf16 => bf16,
            Fp8 => self.fp8_tflops.unwrap_or(bf16),
        };
        t * 1e12
    }

    /// Whether FlashAttention runs on this GPU at `precision`: 16-bit
    /// inputs on NVIDIA Ampere or later (FlashAttention-2, Transformer
    /// Engine's and cuDNN's fused attention all need sm80), which the
    /// catalog marks by a TF32 rate, or on AMD's CDNA2 and later (ROCm's
    /// FlashAttention-2 runs on MI200 and MI300), marked by a bf16 rate.
    /// Elsewhere PyTorch's SDPA runs its memory-efficient kernel, and
    /// Megatron-LM its unfused attention.
    pub fn runs_flash_attention(&self, precision: crate::Precision) -> bool {
        let generation = if self.vendor == "AMD" {
            self.bf16_tflops.is_some()
        } else {
            self.tf32_tflops.is_some()
        };
        precision.is_half() && generation
    }

    /// Why this GPU cannot train in `precision`, if it cannot. The catalog
    /// gives a bf16 or FP8 rate exactly where the hardware has tensor cores
    /// for it: bf16 from NVIDIA Ampere and AMD CDNA2 on, FP8 from NVIDIA
    /// Ada and Hopper and AMD CDNA3 on. Without them bf16 matrix products
    /// fall to slow non-tensor paths (or fail), and Transformer Engine
    /// refuses FP8, so [`Self::matmul_peak_flops`]'s fallback to the
    /// nearest rate would price a plan that does not run as priced. FP16
    /// and FP32 every GPU has; TF32 is FP32 where there is no TF32.
    pub fn lacks(&self, precision: crate::Precision) -> Option<String> {
        use crate::Precision::*;
        let (format, rate, generations) = match precision {
            Bf16 if self.bf16_tflops.is_none() => (
                "bf16",
                "bf16_tflops",
                "NVIDIA Ampere or AMD CDNA2 and later",
            ),
            Fp8 if self.fp8_tflops.is_none() => (
                "FP8",
                "fp8_tflops",
                "NVIDIA Ada, Hopper or AMD CDNA3 and later",
            ),
            _ => return None,
        };
        Some(format!(
            "{} ({}) has no {format} tensor cores ({generations} have them; the catalog gives no {rate} for it)",
            self.name, self.architecture
        ))
    }
}

/// A link type: per-endpoint, per-direction bandwidth and latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// "gpu" (inside a node) or "network".
    pub kind: String,
    pub bandwidth_gbps: f64,
    pub latency_us: f64,
    pub source: String,
}

impl Link {
    pub fn bytes_per_s(&self) -> f64 {
        self.bandwidth_gbps * amp_core::cluster::GBPS_TO_BYTES_PER_S
    }

    pub fn latency_s(&self) -> f64 {
        self.latency_us * 1e-6
    }
}

/// A cloud instance type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub provider: String,
    /// Canonical GPU name.
    pub gpu: String,
    pub gpus: usize,
    pub intra_link: String,
    /// GPU-to-GPU bandwidth inside the node, Gbit/s.
    pub intra_gbps: f64,
    pub inter_link: String,
    /// Network bandwidth of the whole node, Gbit/s.
    pub inter_gbps: f64,
    /// Network interfaces sharing `inter_gbps` (1 if absent), for
    /// [`amp_core::cluster::Node::nics`].
    #[serde(default)]
    pub nics: Option<usize>,
    /// On-demand price of the node, dollars per hour.
    pub price_per_hour: f64,
    pub source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuFile {
    gpu: Vec<Gpu>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkFile {
    link: Vec<Link>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceFile {
    instance: Vec<Instance>,
}

/// Everything the catalog knows.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    pub gpus: Vec<Gpu>,
    pub links: Vec<Link>,
    pub instances: Vec<Instance>,
}

/// The built-in catalog (parsed from the compiled-in data files).
pub fn catalog() -> Catalog {
    Catalog::builtin()
}

impl Catalog {
    /// Parses the compiled-in data. The files are part of the crate and
    /// checked by its tests, so failure here is a build defect.
    pub fn builtin() -> Catalog {
        Catalog::from_toml_strs(GPUS_TOML, LINKS_TOML, INSTANCES_TOML)
            .expect("the compiled-in catalog data parses (checked by tests)")
    }

    /// Parses and cross-checks catalog files (GPU, link and instance TOML).
    pub fn from_toml_strs(
        gpus: &str,
        links: &str,
        instances: &str,
    ) -> Result<Catalog, CatalogError> {
        let gpus: GpuFile =
            toml::from_str(gpus).map_err(|e| CatalogError::parse("gpus.toml", e))?;
        let links: LinkFile =
            toml::from_str(links).map_err(|e| CatalogError::parse("links.toml", e))?;
        let instances: InstanceFile =
            toml::from_str(instances).map_err(|e| CatalogError::parse("instances.toml", e))?;
        let c = Catalog {
            gpus: gpus.gpu,
            links: links.link,
            instances: instances.instance,
        };
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<(), CatalogError> {
        let mut seen = std::collections::BTreeMap::new();
        let groups: [(&str, Vec<(&str, &str)>); 3] = [
            (
                "GPU",
                self.gpus
                    .iter()
                    .flat_map(|g| names(&g.name, &g.aliases))
                    .collect(),
            ),
            (
                "link",
                self.links
                    .iter()
                    .flat_map(|l| names(&l.name, &l.aliases))
                    .collect(),
            ),
            (
                "instance",
                self.instances
                    .iter()
                    .flat_map(|i| names(&i.name, &i.aliases))
                    .collect(),
            ),
        ];
        for (what, list) in groups {
            seen.clear();
            for (alias, canonical) in list {
                if let Some(prev) = seen.insert(normalize(alias), canonical) {
                    if prev != canonical {
                        return Err(CatalogError::invalid(
                            format!("catalog {what} `{canonical}`"),
                            format!("name or alias `{alias}` is also a name of `{prev}`; make it unique"),
                        ));
                    }
                }
            }
        }
        for g in &self.gpus {
            let at = format!("gpus.toml: `{}`", g.name);
            for (what, v) in [
                ("fp32_tflops", g.fp32_tflops),
                ("fp16_tflops", g.fp16_tflops),
                ("memory_gib", g.memory_gib),
                ("memory_bandwidth_gbs", g.memory_bandwidth_gbs),
            ] {
                if !(v.is_finite() && v > 0.0) {
                    return Err(CatalogError::invalid(
                        at,
                        format!("{what} must be positive"),
                    ));
                }
            }
            if let Some(mib) = g.usable_memory_mib {
                if !(mib.is_finite() && mib > 0.0 && mib <= g.memory_gib * 1024.0) {
                    return Err(CatalogError::invalid(
                        at,
                        format!(
                            "usable_memory_mib = {mib} must be positive and at most the datasheet's memory_gib x 1024 = {}",
                            g.memory_gib * 1024.0
                        ),
                    ));
                }
                if g.usable_memory_source.is_none() {
                    return Err(CatalogError::invalid(
                        at,
                        "usable_memory_mib needs usable_memory_source (where the figure was measured)",
                    ));
                }
            }
            if self.link(&g.interconnect).is_err() {
                return Err(CatalogError::invalid(
                    at,
                    format!("interconnect `{}` is not in links.toml", g.interconnect),
                ));
            }
        }
        for i in &self.instances {
            let at = format!("instances.toml: `{}`", i.name);
            if !self.gpus.iter().any(|g| g.name == i.gpu) {
                return Err(CatalogError::invalid(
                    at,
                    format!("gpu `{}` is not a canonical GPU name", i.gpu),
                ));
            }
            for l in [&i.intra_link, &i.inter_link] {
                if self.link(l).is_err() {
                    return Err(CatalogError::invalid(
                        at,
                        format!("link `{l}` is not in links.toml"),
                    ));
                }
            }
            if i.gpus == 0 || !(i.intra_gbps > 0.0 && i.inter_gbps > 0.0 && i.price_per_hour > 0.0)
            {
                return Err(CatalogError::invalid(
                    at,
                    "gpus, bandwidths and price must be positive",
                ));
            }
        }
        Ok(())
    }

    /// This catalog with a cluster file's own GPUs added (its `[[gpus]]`,
    /// [`amp_core::GpuDefinition`]): each is the GPU its `like` names,
    /// renamed, with the figures the definition gives in place of that
    /// GPU's; the rest (architecture, warp-level MMA share, link) stay
    /// `like`'s. A definition that gives `memory_gib` gives the usable
    /// memory: the datasheet's driver figure is no longer the GPU's.
    /// `origin` names the file in errors.
    pub fn with_definitions(
        &self,
        definitions: &[amp_core::GpuDefinition],
        origin: &str,
    ) -> Result<Catalog, CatalogError> {
        let mut c = self.clone();
        for (i, d) in definitions.iter().enumerate() {
            let at = || format!("{origin}: gpus[{i}] `{}`", d.name);
            if let Ok(known) = c.gpu(&d.name) {
                let own = if self.gpu(&d.name).is_ok() {
                    format!("the catalog's `{}`", known.name)
                } else {
                    format!("the definition `{}` above", known.name)
                };
                return Err(CatalogError::invalid(
                    at(),
                    format!(
                        "the name is {own} (names match ignoring case, spaces, `-`, `_` and `.`); give this GPU a name of its own, e.g. `{}-custom`, and start it from the catalog's with like = \"{}\"",
                        d.name, d.like
                    ),
                ));
            }
            let base = self.gpu(&d.like).map_err(|e| {
                CatalogError::invalid(
                    at(),
                    format!("like: {e} (like names a catalog GPU, not another definition)"),
                )
            })?;
            let mut g = base.clone();
            g.name = d.name.clone();
            g.aliases = Vec::new();
            let mut given = Vec::new();
            for (field, v) in d.figures() {
                let Some(v) = v else { continue };
                given.push(format!("{field} = {v}"));
                match field {
                    "fp32_tflops" => g.fp32_tflops = v,
                    "tf32_tflops" => g.tf32_tflops = Some(v),
                    "fp16_tflops" => g.fp16_tflops = v,
                    "bf16_tflops" => g.bf16_tflops = Some(v),
                    "fp8_tflops" => g.fp8_tflops = Some(v),
                    "memory_gib" => {
                        g.memory_gib = v;
                        g.usable_memory_mib = None;
                        g.usable_memory_source = None;
                    }
                    "memory_bandwidth_gbs" => g.memory_bandwidth_gbs = v,
                    other => unreachable!("GpuDefinition::figures names {other}"),
                }
            }
            g.source = if given.is_empty() {
                format!("{origin}: as the catalog's {}", base.name)
            } else {
                format!(
                    "{origin}: the catalog's {} with {}",
                    base.name,
                    given.join(", ")
                )
            };
            c.gpus.push(g);
        }
        c.check()?;
        Ok(c)
    }

    /// A GPU by its name or any alias (case, spaces, hyphens, underscores
    /// and dots ignored).
    pub fn gpu(&self, name: &str) -> Result<&Gpu, CatalogError> {
        let n = normalize(name);
        self.gpus
            .iter()
            .find(|g| names(&g.name, &g.aliases).any(|(a, _)| normalize(a) == n))
            .ok_or_else(|| CatalogError::Unknown {
                what: "GPU",
                name: name.to_string(),
                suggestions: nearest(
                    name,
                    self.gpus.iter().flat_map(|g| names(&g.name, &g.aliases)),
                ),
                known: self.gpus.iter().map(|g| g.name.clone()).collect(),
            })
    }

    pub fn link(&self, name: &str) -> Result<&Link, CatalogError> {
        let n = normalize(name);
        self.links
            .iter()
            .find(|l| names(&l.name, &l.aliases).any(|(a, _)| normalize(a) == n))
            .ok_or_else(|| CatalogError::Unknown {
                what: "link",
                name: name.to_string(),
                suggestions: nearest(
                    name,
                    self.links.iter().flat_map(|l| names(&l.name, &l.aliases)),
                ),
                known: self.links.iter().map(|l| l.name.clone()).collect(),
            })
    }

    pub fn instance(&self, name: &str) -> Result<&Instance, CatalogError> {
        let n = normalize(name);
        self.instances
            .iter()
            .find(|i| names(&i.name, &i.aliases).any(|(a, _)| normalize(a) == n))
            .ok_or_else(|| CatalogError::Unknown {
                what: "instance type",
                name: name.to_string(),
                suggestions: nearest(
                    name,
                    self.instances
                        .iter()
                        .flat_map(|i| names(&i.name, &i.aliases)),
                ),
                known: self.instances.iter().map(|i| i.name.clone()).collect(),
            })
    }

    /// The canonical name of a GPU given by name or alias.
    pub fn canonical_gpu_name(&self, name: &str) -> Result<String, CatalogError> {
        self.gpu(name).map(|g| g.name.clone())
    }
}

fn names<'a>(name: &'a str, aliases: &'a [String]) -> impl Iterator<Item = (&'a str, &'a str)> {
    std::iter::once(name)
        .chain(aliases.iter().map(|a| a.as_str()))
        .map(move |a| (a, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_parses_and_has_the_required_entries() {
        let c = Catalog::from_toml_strs(GPUS_TOML, LINKS_TOML, INSTANCES_TOML).unwrap();
        for g in [
            "V100-16GB",
            "V100-32GB",
            "T4",
            "A10G",
            "L4",
            "L40S",
            "A100-40GB",
            "A100-80GB",
            "H100-SXM",
            "H100-PCIe",
            "H200",
            "GH200",
            "B200",
            "MI250X",
            "MI300X",
            "RTX-2080",
            "RTX-3090",
            "RTX-4090",
            "Titan-RTX",
        ] {
            let gpu = c.gpu(g).unwrap();
            assert_eq!(gpu.name, g);
            assert!(!gpu.source.is_empty());
        }
        for i in [
            "p3.8xlarge",
            "p3dn.24xlarge",
            "g4dn.12xlarge",
            "g5.48xlarge",
            "p4d.24xlarge",
            "p5.48xlarge",
            "a2-highgpu-8g",
            "a3-highgpu-8g",
            "ND A100 v4",
            "ND H100 v5",
        ] {
            assert!(c.instance(i).is_ok(), "{i}");
        }
        for l in [
            "NVLink2", "NVLink3", "NVLink4", "PCIe3", "PCIe4", "PCIe5", "IB-HDR", "IB-NDR", "EFA",
            "10GbE", "400GbE",
        ] {
            assert!(c.link(l).is_ok(), "{l}");
        }
    }

    fn definition(name: &str, like: &str) -> amp_core::GpuDefinition {
        amp_core::GpuDefinition {
            name: name.into(),
            like: like.into(),
            fp32_tflops: None,
            tf32_tflops: None,
            fp16_tflops: None,
            bf16_tflops: None,
            fp8_tflops: None,
            memory_gib: None,
            memory_bandwidth_gbs: None,
        }
    }

    #[test]
    fn a_cluster_files_gpu_is_its_like_with_the_figures_it_gives() {
        let c = catalog();
        let h100 = c.gpu("H100").unwrap().clone();
        let d = amp_core::GpuDefinition {
            bf16_tflops: Some(835.0),
            memory_gib: Some(96.0),
            memory_bandwidth_gbs: Some(2400.0),
            ..definition("H100-500W", "h100 sxm5")
        };
        let with = c.with_definitions(&[d], "c.toml").unwrap();
        assert_eq!(with.gpus.len(), c.gpus.len() + 1);
        let g = with.gpu("h100_500w").unwrap();
        assert_eq!(g.name, "H100-500W");
        assert!(g.aliases.is_empty());
        assert_eq!(g.matmul_peak_flops(crate::Precision::Bf16), 835e12);
        // What it does not give stays the catalog H100's.
        assert_eq!(g.fp16_tflops, h100.fp16_tflops);
        assert_eq!(g.mma_sync_fraction, h100.mma_sync_fraction);
        assert_eq!(g.architecture, h100.architecture);
        assert_eq!(g.memory_bytes_per_s(), 2400e9);
        // Its memory is the definition's, not the catalog H100's driver figure.
        assert_eq!(g.memory_bytes(), 96 << 30);
        assert_eq!(
            g.source,
            "c.toml: the catalog's H100-SXM with bf16_tflops = 835, memory_gib = 96, memory_bandwidth_gbs = 2400"
        );
        // The catalog itself is unchanged.
        assert!(c.gpu("H100-500W").is_err());
        assert_eq!(c.gpu("H100").unwrap(), &h100);
    }

    #[test]
    fn a_gpu_definition_that_cannot_stand_says_why() {
        let c = catalog();
        let err = |defs: &[amp_core::GpuDefinition]| {
            c.with_definitions(defs, "c.toml").unwrap_err().to_string()
        };
        let e = err(&[definition("h100 sxm5", "H100-SXM")]);
        assert!(
            e.contains("c.toml: gpus[0] `h100 sxm5`")
                && e.contains("the catalog's `H100-SXM`")
                && e.contains("a name of its own"),
            "{e}"
        );
        let e = err(&[definition("H100-500W", "H100-SXN")]);
        assert!(
            e.contains("like: unknown GPU `H100-SXN`; did you mean `H100-SXM`"),
            "{e}"
        );
        // like names the catalog's GPUs only, not another definition.
        let e = err(&[definition("A", "H200"), definition("B", "A")]);
        assert!(
            e.contains("gpus[1] `B`") && e.contains("not another definition"),
            "{e}"
        );
        let e = err(&[definition("my-gpu", "H200"), definition("My GPU", "T4")]);
        assert!(e.contains("the definition `my-gpu` above"), "{e}");
    }

    #[test]
    fn amp_and_sailor_names_are_aliases() {
        let c = catalog();
        for (alias, canonical) in [
            ("T4", "T4"),
            ("V100-16GB", "V100-16GB"),
            ("A100-40", "A100-40GB"),
            ("A100-80", "A100-80GB"),
            ("V100-16", "V100-16GB"),
            ("GH-96", "GH200"),
            ("RTX-2080", "RTX-2080"),
            ("RTX-3090", "RTX-3090"),
            ("Titan-RTX", "Titan-RTX"),
            ("h100", "H100-SXM"),
            ("a100 80gb", "A100-80GB"),
        ] {
            assert_eq!(c.canonical_gpu_name(alias).unwrap(), canonical, "{alias}");
        }
    }

    #[test]
    fn unknown_gpu_suggests_nearest() {
        let e = catalog().gpu("A100-80G").unwrap_err().to_string();
        assert!(
            e.contains("unknown GPU `A100-80G`") && e.contains("A100-80GB"),
            "{e}"
        );
        let e = catalog().gpu("H1000").unwrap_err().to_string();
        assert!(e.contains("H100"), "{e}");
    }

    #[test]
    fn duplicate_alias_is_rejected() {
        let gpus = GPUS_TOML.replace("aliases = [\"V100-32\"", "aliases = [\"V100-16\"");
        let e = Catalog::from_toml_strs(&gpus, LINKS_TOML, INSTANCES_TOML)
            .unwrap_err()
            .to_string();
        assert!(e.contains("V100-16") && e.contains("unique"), "{e}");
    }

    #[test]
    fn capacity_is_the_drivers_figure_where_known() {
        let c = catalog();
        // ECC holds 1/16 of a T4's GDDR6: 15,360 of 16,384 MiB.
        assert_eq!(c.gpu("T4").unwrap().memory_bytes(), 15360 << 20);
        assert_eq!(c.gpu("H100").unwrap().memory_bytes(), 81559 << 20);
        // No cited driver figure: the datasheet's.
        assert_eq!(c.gpu("A100-80GB").unwrap().memory_bytes(), 80 << 30);
        // More than the datasheet's, or without a source: refused.
        let over = GPUS_TOML.replace("usable_memory_mib = 15360", "usable_memory_mib = 17000");
        let e = Catalog::from_toml_strs(&over, LINKS_TOML, INSTANCES_TOML)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`T4`") && e.contains("at most the datasheet"),
            "{e}"
        );
        let i = GPUS_TOML.find("usable_memory_mib = 15360").unwrap();
        let line_end = GPUS_TOML[i..].find('\n').unwrap() + i + 1;
        let source_end = GPUS_TOML[line_end..].find('\n').unwrap() + line_end + 1;
        let unsourced = format!("{}{}", &GPUS_TOML[..line_end], &GPUS_TOML[source_end..]);
        let e = Catalog::from_toml_strs(&unsourced, LINKS_TOML, INSTANCES_TOML)
            .unwrap_err()
            .to_string();
        assert!(e.contains("usable_memory_source"), "{e}");
    }

    #[test]
    fn precision_fallbacks() {
        let c = catalog();
        let v100 = c.gpu("V100-16GB").unwrap();
        assert_eq!(v100.matmul_peak_flops(crate::Precision::Bf16), 125e12);
        assert_eq!(v100.matmul_peak_flops(crate::Precision::Tf32), 15.7e12);
        let h100 = c.gpu("H100").unwrap();
        assert_eq!(h100.matmul_peak_flops(crate::Precision::Fp8), 1979e12);
    }
}
