//! The AMP artifact's three experiments (NeurIPS 2022), as built-in data,
//! and its candidate CSVs (`predictions/*.csv`, `measured/*.csv`).

use amp_core::cluster::{builtin as clusters, Cluster};
use amp_core::error::{AmpError, Result};
use amp_core::model::{builtin as models, Model};
use amp_core::profile::Profile;

use crate::npy as amp_artifact;

/// One of the paper's experiments: 16 GPUs in 4 nodes of 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Experiment {
    /// GPT-2 on 4 x g4dn.12xlarge (T4), batch 32.
    Homogeneous,
    /// GPT-2 on 3 x p3.8xlarge (V100) + 1 x g4dn.12xlarge, batch 32.
    HetCluster,
    /// TransGAN on 4 x p3.8xlarge, batch 64.
    HetModel,
}

/// The artifact's profiles, embedded.
const NPY: &[(&str, &[u8])] = &[
    (
        "gpt2_G4_1.npy",
        include_bytes!("../data/amp-paper/gpt2_G4_1.npy"),
    ),
    (
        "gpt2_G4_2.npy",
        include_bytes!("../data/amp-paper/gpt2_G4_2.npy"),
    ),
    (
        "gpt2_G4_4.npy",
        include_bytes!("../data/amp-paper/gpt2_G4_4.npy"),
    ),
    (
        "gpt2_P3_1.npy",
        include_bytes!("../data/amp-paper/gpt2_P3_1.npy"),
    ),
    (
        "gpt2_P3_2.npy",
        include_bytes!("../data/amp-paper/gpt2_P3_2.npy"),
    ),
    (
        "gpt2_P3_4.npy",
        include_bytes!("../data/amp-paper/gpt2_P3_4.npy"),
    ),
    (
        "transgan_P3_1.npy",
        include_bytes!("../data/amp-paper/transgan_P3_1.npy"),
    ),
    (
        "transgan_P3_2.npy",
        include_bytes!("../data/amp-paper/transgan_P3_2.npy"),
    ),
    (
        "transgan_P3_4.npy",
        include_bytes!("../data/amp-paper/transgan_P3_4.npy"),
    ),
];

impl Experiment {
    pub const ALL: [Experiment; 3] = [
        Experiment::Homogeneous,
        Experiment::HetCluster,
        Experiment::HetModel,
    ];

    /// Name as the CLI takes it (`--example`).
    pub fn name(self) -> &'static str {
        match self {
            Experiment::Homogeneous => "homogeneous",
            Experiment::HetCluster => "het-cluster",
            Experiment::HetModel => "het-model",
        }
    }

    /// Name of the artifact's files (`het_cluster.csv`).
    pub fn file_stem(self) -> &'static str {
        match self {
            Experiment::Homogeneous => "homogeneous",
            Experiment::HetCluster => "het_cluster",
            Experiment::HetModel => "het_model",
        }
    }

    pub fn from_name(name: &str) -> Option<Experiment> {
        Experiment::ALL
            .into_iter()
            .find(|e| e.name() == name || e.file_stem() == name)
    }

    pub fn model(self) -> Model {
        match self {
            Experiment::HetModel => models::amp_transgan(),
            _ => models::amp_gpt2(),
        }
    }

    pub fn cluster(self) -> Cluster {
        match self {
            Experiment::Homogeneous => clusters::homogeneous(),
            Experiment::HetCluster => clusters::het_cluster(),
            Experiment::HetModel => clusters::het_model(),
        }
    }

    pub fn global_batch(self) -> usize {
        match self {
            Experiment::HetModel => 64,
            _ => 32,
        }
    }

    /// Model name in the artifact's profile files.
    pub fn profile_model(self) -> &'static str {
        match self {
            Experiment::HetModel => "transgan",
            _ => "gpt2",
        }
    }

    /// The embedded profiles of this experiment's model.
    pub fn profile(self) -> Profile {
        let files: Vec<(&str, &[u8])> = NPY.to_vec();
        profile_from_npy(&files, self.profile_model()).expect("embedded AMP profiles are valid")
    }
}

/// Builds a profile from the artifact's `.npy` files of one model (files
/// of other models are ignored).
pub fn profile_from_npy(files: &[(&str, &[u8])], model: &str) -> Result<Profile> {
    let mut profile = Profile::default();
    for (name, bytes) in files {
        let (m, entry) = amp_artifact::entry_from_npy(name, bytes)?;
        if m == model {
            profile.entries.push(entry);
        }
    }
    if profile.entries.is_empty() {
        return Err(AmpError::missing_profile(
            None,
            None,
            format!(
                "no `{model}_*.npy` file among the {} profile files given",
                files.len()
            ),
        ));
    }
    profile
        .entries
        .sort_by(|a, b| (a.gpu.as_str(), a.tp).cmp(&(b.gpu.as_str(), b.tp)));
    profile.validate(&format!("the `{model}_*.npy` profile files"))?;
    Ok(profile)
}

/// Outcome of a real run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measured {
    Seconds(f64),
    Failed,
}

/// One candidate row of an artifact CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactRow {
    pub micro_batch: usize,
    pub tp: usize,
    pub dp: usize,
    pub pp: usize,
    /// `[0, b1, ..., L]` in the artifact's layer indexing.
    pub boundaries: Vec<usize>,
    pub amp_predicted_s: Option<f64>,
    pub measured: Option<Measured>,
}

/// Parses `micro_batch,tp,dp,pp,stage_boundaries,amp_predicted_s[,measured_s]`
/// (an optional leading `rank` column is ignored; columns are found by name).
pub fn parse_csv(text: &str, origin: &str) -> Result<Vec<ArtifactRow>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| AmpError::parse(origin, e))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let need = |name: &str| {
        col(name).ok_or_else(|| {
            AmpError::invalid(
                origin,
                format!("missing column `{name}`; expected micro_batch,tp,dp,pp,stage_boundaries[,amp_predicted_s][,measured_s]"),
            )
        })
    };
    let (c_mbs, c_tp, c_dp, c_pp, c_b) = (
        need("micro_batch")?,
        need("tp")?,
        need("dp")?,
        need("pp")?,
        need("stage_boundaries")?,
    );
    let c_pred = col("amp_predicted_s");
    let c_meas = col("measured_s");
    let mut rows = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|e| AmpError::parse(format!("{origin}:{line}"), e))?;
        let at = |c: usize| rec.get(c).unwrap_or("");
        // Bounded so that products of them cannot overflow.
        let int = |c: usize, name: &str| -> Result<usize> {
            let max = if name == "micro_batch" {
                amp_core::limits::MAX_MICRO_BATCH
            } else {
                amp_core::limits::MAX_GPUS
            };
            match at(c).parse::<usize>() {
                Ok(v) if (1..=max).contains(&v) => Ok(v),
                _ => Err(AmpError::invalid(
                    format!("{origin}:{line}"),
                    format!("{name} = `{}` is not an integer in 1..={max}", at(c)),
                )),
            }
        };
        let boundaries: Vec<usize> = at(c_b)
            .split_whitespace()
            .map(|t| t.parse::<usize>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| {
                AmpError::invalid(
                    format!("{origin}:{line}"),
                    format!(
                        "stage_boundaries = `{}` must be integers separated by spaces",
                        at(c_b)
                    ),
                )
            })?;
        let pp = int(c_pp, "pp")?;
        if boundaries.len() != pp + 1
            || boundaries
                .last()
                .is_some_and(|&l| l > amp_core::limits::MAX_LAYERS)
            || boundaries.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(AmpError::invalid(
                format!("{origin}:{line}"),
                format!(
                    "stage_boundaries `{}` must be {} increasing layer indices for pp = {pp}",
                    at(c_b),
                    pp + 1
                ),
            ));
        }
        let float = |c: usize, name: &str| -> Result<f64> {
            match at(c).parse::<f64>() {
                Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
                _ => Err(AmpError::invalid(
                    format!("{origin}:{line}"),
                    format!("{name} = `{}` is not a positive number of seconds", at(c)),
                )),
            }
        };
        let amp_predicted_s = match c_pred {
            Some(c) if !at(c).is_empty() => Some(float(c, "amp_predicted_s")?),
            _ => None,
        };
        let measured = match c_meas {
            Some(c) if at(c).eq_ignore_ascii_case("failed") => Some(Measured::Failed),
            Some(c) if !at(c).is_empty() => Some(Measured::Seconds(float(c, "measured_s")?)),
            _ => None,
        };
        rows.push(ArtifactRow {
            micro_batch: int(c_mbs, "micro_batch")?,
            tp: int(c_tp, "tp")?,
            dp: int(c_dp, "dp")?,
            pp,
            boundaries,
            amp_predicted_s,
            measured,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_profiles_load() {
        let p = Experiment::HetCluster.profile();
        assert_eq!(p.entries.len(), 6);
        assert_eq!(p.per_sample_forward("T4", 1).unwrap().len(), 30);
        let t = Experiment::HetModel.profile();
        assert_eq!(t.per_sample_forward("V100-16GB", 4).unwrap().len(), 56);
    }

    #[test]
    fn csv_rows_parse() {
        let rows = parse_csv(
            "micro_batch,tp,dp,pp,stage_boundaries,amp_predicted_s,measured_s\n1,1,8,2,\"0 15 30\",1.2665,1.28\n2,1,16,1,\"0 30\",1.2443,failed\n",
            "m.csv",
        )
        .unwrap();
        assert_eq!(rows[0].boundaries, vec![0, 15, 30]);
        assert_eq!(rows[0].measured, Some(Measured::Seconds(1.28)));
        assert_eq!(rows[1].measured, Some(Measured::Failed));
    }

    #[test]
    fn bad_boundaries_name_the_line() {
        let e = parse_csv(
            "micro_batch,tp,dp,pp,stage_boundaries\n1,1,8,2,\"0 30\"\n",
            "m.csv",
        )
        .unwrap_err();
        assert!(e.to_string().contains("m.csv:2"), "{e}");
    }
}
