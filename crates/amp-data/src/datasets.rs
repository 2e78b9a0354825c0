//! Validation datasets from a folder of measured runs, in the AMP or the
//! Sailor artifact's layout. Pure: the caller reads the folder into a
//! [`DatasetFiles`] (relative path -> bytes) and gets [`Dataset`]s back,
//! with notes on what was skipped or read leniently.

use std::collections::BTreeMap;

use amp_core::cost::amp_paper::artifact_setup;
use amp_core::error::{AmpError, Result};
use amp_core::placement::{DeviceGrid, Placement};
use amp_core::search::plan_from_grid;
use amp_core::validate::{Dataset, Outcome, Run};

use crate::amp_artifact::{parse_csv, profile_from_npy, Experiment, Measured};
use crate::sailor;

/// The files of one dataset folder: paths relative to it, `/`-separated.
#[derive(Debug, Clone, Default)]
pub struct DatasetFiles {
    /// How to name the folder in messages (its path).
    pub root: String,
    pub files: BTreeMap<String, Vec<u8>>,
}

/// A dataset and what its reader noted.
#[derive(Debug, Clone)]
pub struct LoadedDataset {
    pub dataset: Dataset,
    /// Rows or files skipped, and data read leniently, with where and why.
    pub notes: Vec<String>,
}

/// The file layouts [`datasets`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `measured/*.csv` (named after an experiment) and `profiles/*.npy`.
    Amp,
    /// `profiles.json`, `llm_info.json`, `training/*.json`,
    /// `cluster_config.json`, `network/*.json` and
    /// `measured/<cluster>/<model>/**/plan_config_*.json`.
    Sailor,
}

impl DatasetFiles {
    fn origin(&self, rel: &str) -> String {
        format!("{}/{rel}", self.root.trim_end_matches('/'))
    }

    fn text(&self, rel: &str) -> Result<&str> {
        let bytes = self.files.get(rel).ok_or_else(|| {
            AmpError::invalid(self.origin(rel), "missing; the dataset layout needs it")
        })?;
        std::str::from_utf8(bytes)
            .map_err(|e| AmpError::parse(self.origin(rel), format!("not UTF-8 text: {e}")))
    }

    /// Files directly under `dir` (no subfolders) ending in `.ext`.
    fn in_dir<'a>(&'a self, dir: &'a str, ext: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.files.keys().map(|k| k.as_str()).filter(move |k| {
            k.strip_prefix(dir)
                .and_then(|r| r.strip_prefix('/'))
                .is_some_and(|r| !r.contains('/') && r.to_ascii_lowercase().ends_with(ext))
        })
    }

    /// The layouts this folder holds.
    pub fn layouts(&self) -> Vec<Layout> {
        let mut v = Vec::new();
        if self.in_dir("measured", ".csv").next().is_some() {
            v.push(Layout::Amp);
        }
        if self.files.contains_key("profiles.json") && self.files.contains_key("llm_info.json") {
            v.push(Layout::Sailor);
        }
        v
    }
}

/// The datasets of a folder or, when it holds neither layout, of its
/// immediate subfolders (a folder of dataset folders); an error when none
/// is found.
pub fn find_datasets(files: &DatasetFiles) -> Result<Vec<LoadedDataset>> {
    if !files.layouts().is_empty() {
        return datasets(files);
    }
    let mut out = Vec::new();
    for sub in subfolders(files)
        .values()
        .filter(|s| !s.layouts().is_empty())
    {
        out.extend(datasets(sub)?);
    }
    if out.is_empty() {
        return datasets(files);
    }
    Ok(out)
}

/// The folder's immediate subfolders, by name, with their files.
fn subfolders(files: &DatasetFiles) -> BTreeMap<&str, DatasetFiles> {
    let mut subs: BTreeMap<&str, DatasetFiles> = BTreeMap::new();
    for (k, v) in &files.files {
        if let Some((first, rest)) = k.split_once('/') {
            subs.entry(first)
                .or_insert_with(|| DatasetFiles {
                    root: files.origin(first),
                    files: BTreeMap::new(),
                })
                .files
                .insert(rest.to_string(), v.clone());
        }
    }
    subs
}

/// Whether the folder, or one of its immediate subfolders, holds a layout
/// [`find_datasets`] reads.
pub fn holds_layouts(files: &DatasetFiles) -> bool {
    !files.layouts().is_empty() || subfolders(files).values().any(|s| !s.layouts().is_empty())
}

/// Every dataset of the folder, AMP-layout ones first; an error when the
/// folder holds neither layout.
pub fn datasets(files: &DatasetFiles) -> Result<Vec<LoadedDataset>> {
    let layouts = files.layouts();
    if layouts.is_empty() {
        return Err(AmpError::invalid(
            &files.root,
            "no dataset found; expected measured/*.csv with profiles/*.npy (AMP layout) or profiles.json, llm_info.json and measured/<cluster>/<model>/plan_config_*.json (Sailor layout)",
        ));
    }
    let mut out = Vec::new();
    for l in layouts {
        out.extend(match l {
            Layout::Amp => amp_datasets(files)?,
            Layout::Sailor => sailor_datasets(files)?,
        });
    }
    Ok(out)
}

/// The AMP-layout datasets: one per measured CSV, whose file name names the
/// experiment (and so the model, cluster and global batch); plans use the
/// CSV's stage boundaries, the artifact's default placement and its setup
/// (fp16, 1F1B, no recomputation).
fn amp_datasets(files: &DatasetFiles) -> Result<Vec<LoadedDataset>> {
    let npy: Vec<(&str, &[u8])> = files
        .in_dir("profiles", ".npy")
        .map(|k| (k.rsplit('/').next().unwrap_or(k), files.files[k].as_slice()))
        .collect();
    let mut out = Vec::new();
    for rel in files.in_dir("measured", ".csv") {
        let origin = files.origin(rel);
        let stem = rel
            .rsplit('/')
            .next()
            .unwrap_or(rel)
            .trim_end_matches(".csv")
            .to_string();
        let exp = Experiment::from_name(&stem).ok_or_else(|| {
            AmpError::invalid(
                &origin,
                "the file name must name an AMP experiment: homogeneous.csv, het_cluster.csv or het_model.csv",
            )
        })?;
        let mut notes = Vec::new();
        // The embedded profiles stand in only where the folder has none of
        // the model's: a file of its own that does not read is an error,
        // not a reason to price with other numbers than the user's.
        let prefix = format!("{}_", exp.profile_model());
        let own: Vec<(&str, &[u8])> = npy
            .iter()
            .copied()
            .filter(|(name, _)| name.starts_with(&prefix))
            .collect();
        let profile = match own.is_empty() {
            true => {
                notes.push(format!(
                    "no {}_*.npy in {}; used the embedded AMP profiles",
                    exp.profile_model(),
                    files.origin("profiles")
                ));
                exp.profile()
            }
            false => profile_from_npy(&own, exp.profile_model())
                .map_err(|e| in_folder(e, &files.origin("profiles")))?,
        };
        let (model, cluster, gb) = (exp.model(), exp.cluster(), exp.global_batch());
        let placement = Placement::artifact_default(&cluster);
        let mut runs = Vec::new();
        for (i, row) in parse_csv(files.text(rel)?, &origin)?
            .into_iter()
            .enumerate()
        {
            let at = format!("{origin}:{}", i + 2);
            let outcome = match row.measured {
                Some(Measured::Seconds(s)) => Outcome::Completed(s),
                Some(Measured::Failed) => Outcome::Failed,
                None => {
                    notes.push(format!("{at}: no measured_s; row skipped"));
                    continue;
                }
            };
            let n = cluster.num_devices();
            if row.tp * row.dp * row.pp != n {
                notes.push(format!(
                    "{at}: tp x dp x pp = {} but the cluster has {n} GPUs; row skipped",
                    row.tp * row.dp * row.pp
                ));
                continue;
            }
            if !gb.is_multiple_of(row.micro_batch * row.dp) {
                notes.push(format!(
                    "{at}: global batch {gb} is not a multiple of micro_batch x dp; row skipped"
                ));
                continue;
            }
            if row.boundaries.last() != Some(&model.num_layers())
                || row.boundaries.first() != Some(&0)
            {
                notes.push(format!(
                    "{at}: stage boundaries must run from 0 to {}; row skipped",
                    model.num_layers()
                ));
                continue;
            }
            let grid = DeviceGrid::new(&cluster, row.tp, row.dp, row.pp, &placement);
            let plan = plan_from_grid(
                &grid,
                &row.boundaries,
                row.micro_batch,
                gb / (row.micro_batch * row.dp),
                &artifact_setup(),
            );
            runs.push(Run {
                name: format!(
                    "{stem}:{} mbs{} tp{} dp{} pp{}",
                    i + 2,
                    row.micro_batch,
                    row.tp,
                    row.dp,
                    row.pp
                ),
                cluster: cluster.clone(),
                plan,
                outcome,
                measured_peak_bytes: None,
                measured_grad_reduce_s: None,
                profile: None,
            });
        }
        out.push(LoadedDataset {
            dataset: Dataset {
                name: format!("amp/{stem}"),
                model,
                profile,
                runs,
            },
            notes,
        });
    }
    Ok(out)
}

/// `e`, raised on a file named by its name alone, with the folder it is in.
fn in_folder(e: AmpError, folder: &str) -> AmpError {
    match e {
        AmpError::Parse { origin, message } => AmpError::Parse {
            origin: format!("{folder}/{origin}"),
            message,
        },
        AmpError::Invalid { location, message } => AmpError::Invalid {
            location: format!("{folder}/{location}"),
            message,
        },
        other => other,
    }
}

/// The shared files of a Sailor-layout folder, read: `profiles.json`,
/// `llm_info.json`, `training/*.json`, `cluster_config.json` (optional) and
/// the network curves. What pricing any of its plan files needs besides the
/// file itself.
#[derive(Debug, Clone)]
pub struct SailorFolder<'a> {
    files: &'a DatasetFiles,
    profiles: &'a str,
    llm: &'a str,
    /// `training/*.json` by the model name they give.
    pub training: BTreeMap<String, sailor::TrainingConfig>,
    /// The file each model's training settings came from.
    training_files: BTreeMap<String, String>,
    /// `cluster_config.json`: GPU memory per type (empty without the file).
    pub gpus: BTreeMap<String, sailor::GpuSpec>,
    pub network: sailor::Network,
}

/// A model of a Sailor folder: its layer list, profile and the training
/// setup of Sailor's runs.
#[derive(Debug, Clone)]
pub struct SailorModel {
    /// The name `training/*.json` and `llm_info.json` give it.
    pub name: String,
    pub model: amp_core::model::Model,
    pub profile: amp_core::profile::Profile,
    pub setup: amp_core::setup::TrainingSetup,
    /// What the files get wrong or leave out ([`sailor::model_notes`]),
    /// for the reader to pass on.
    pub notes: Vec<String>,
}

impl<'a> SailorFolder<'a> {
    /// The files [`SailorFolder::read`] needs (`training/*.json` and
    /// `cluster_config.json` may be absent).
    pub const REQUIRED_FILES: [&'static str; 4] = [
        "profiles.json",
        "llm_info.json",
        "network/intra_node_bandwidths.json",
        "network/inter_node_bandwidths.json",
    ];

    /// Reads the shared files of `files` (which need not hold any
    /// `measured/` run).
    pub fn read(files: &'a DatasetFiles) -> Result<SailorFolder<'a>> {
        let (mut training, mut training_files) = (BTreeMap::new(), BTreeMap::new());
        for rel in files.in_dir("training", ".json") {
            let t = sailor::parse_training(files.text(rel)?, &files.origin(rel))?;
            training_files.insert(t.model.clone(), rel.to_string());
            training.insert(t.model.clone(), t);
        }
        let gpus = match files.files.contains_key("cluster_config.json") {
            true => sailor::parse_cluster_config(
                files.text("cluster_config.json")?,
                &files.origin("cluster_config.json"),
            )?,
            false => BTreeMap::new(),
        };
        let (intra, inter) = (
            "network/intra_node_bandwidths.json",
            "network/inter_node_bandwidths.json",
        );
        let network = sailor::Network::parse(
            files.text(intra)?,
            &files.origin(intra),
            files.text(inter)?,
            &files.origin(inter),
        )?;
        Ok(SailorFolder {
            files,
            profiles: files.text("profiles.json")?,
            llm: files.text("llm_info.json")?,
            training,
            training_files,
            gpus,
            network,
        })
    }

    /// The model `name` means (matched loosely but uniquely to a
    /// `training/*.json`, [`sailor::match_model_name`]), with its profile
    /// and the setup of Sailor's runs.
    pub fn model(&self, name: &str) -> Result<SailorModel> {
        let t = sailor::match_model_name(name, self.training.keys().map(|k| k.as_str()))
            .and_then(|k| self.training.get(k))
            .ok_or_else(|| {
                AmpError::invalid(
                    &self.files.root,
                    format!(
                        "no training/*.json with \"model\": \"{name}\" (found: {}); add the model's training settings",
                        self.training.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )
            })?;
        let llm_origin = self.files.origin("llm_info.json");
        let profiles_origin = self.files.origin("profiles.json");
        let (model, profile) =
            sailor::model_and_profile(self.llm, &llm_origin, self.profiles, &profiles_origin, t)?;
        let training_origin = self.training_files.get(&t.model).map_or_else(
            || self.files.origin("training"),
            |rel| self.files.origin(rel),
        );
        let notes = sailor::model_notes(&model, t, &llm_origin, &training_origin);
        Ok(SailorModel {
            name: t.model.clone(),
            setup: sailor::training_setup(profile.precision),
            model,
            profile,
            notes,
        })
    }

    /// The cluster `spec` names in Sailor's node kinds
    /// ([`sailor::parse_node_kinds`]: `8x4xA100-40+24x4xV100-16`), with this
    /// folder's network curves and GPU memory, every node in Sailor's
    /// default zone ([`sailor::node_kinds_cluster`]).
    pub fn cluster(&self, spec: &str) -> Result<amp_core::cluster::Cluster> {
        let kinds = sailor::parse_node_kinds(spec)?;
        sailor::node_kinds_cluster(&kinds, &self.gpus, &self.network, sailor::DEFAULT_ZONE)
    }

    /// What the network files say of the cluster `spec` that cannot all
    /// hold ([`sailor::network_notes`]), for the reader to pass on.
    pub fn cluster_notes(&self, spec: &str) -> Result<Vec<String>> {
        let kinds = sailor::parse_node_kinds(spec)?;
        Ok(sailor::network_notes(
            &self.network,
            &kinds,
            sailor::DEFAULT_ZONE,
            &self.files.origin("network/inter_node_bandwidths.json"),
        ))
    }

    /// A plan file of `model`, read onto the nodes it names, with the setup
    /// of Sailor's runs.
    pub fn run(&self, text: &str, origin: &str, model: &SailorModel) -> Result<sailor::SailorRun> {
        let mut run =
            sailor::parse_plan_config(text, origin, &model.model, &self.gpus, &self.network)?;
        run.plan.setup = model.setup;
        Ok(run)
    }
}

/// The Sailor-layout datasets: one per `measured/<cluster>/<model>`
/// folder, the model matched to a `training/*.json` loosely but uniquely
/// ([`sailor::match_model_name`]); files that cannot be read as runs are
/// noted and skipped.
fn sailor_datasets(files: &DatasetFiles) -> Result<Vec<LoadedDataset>> {
    let folder = SailorFolder::read(files)?;
    // Group plan files by the first two folders under measured/.
    let mut groups: BTreeMap<(String, String), Vec<&str>> = BTreeMap::new();
    for rel in files.files.keys().map(|k| k.as_str()) {
        let Some(under) = rel.strip_prefix("measured/") else {
            continue;
        };
        let name = under.rsplit('/').next().unwrap_or(under);
        if !(name.starts_with("plan_config") && name.to_ascii_lowercase().ends_with(".json")) {
            continue;
        }
        let parts: Vec<&str> = under.split('/').collect();
        if parts.len() < 3 {
            return Err(AmpError::invalid(
                files.origin(rel),
                "expected measured/<cluster>/<model>/.../plan_config_*.json",
            ));
        }
        groups
            .entry((parts[0].to_string(), parts[1].to_string()))
            .or_default()
            .push(rel);
    }
    let mut out = Vec::new();
    for ((cluster_name, model_name), rels) in groups {
        let m = folder.model(&model_name)?;
        let mut notes: Vec<String> = m.notes.iter().map(|n| format!("note: {n}")).collect();
        if m.name != model_name {
            notes.push(format!(
                "note: measured/{cluster_name}/{model_name} read as model `{}` (its training/*.json)",
                m.name
            ));
        }
        let mut runs = Vec::new();
        for rel in rels {
            let origin = files.origin(rel);
            let text = files.text(rel)?;
            match folder.run(text, &origin, &m) {
                Ok(mut run) => {
                    notes.extend(run.warnings.drain(..).map(|w| format!("warning: {w}")));
                    runs.push(Run {
                        name: rel.trim_start_matches("measured/").to_string(),
                        cluster: run.cluster,
                        plan: run.plan,
                        // A run without a measured time did not complete.
                        outcome: run.measured_s.map_or(Outcome::Failed, Outcome::Completed),
                        measured_peak_bytes: run.max_mem_bytes,
                        measured_grad_reduce_s: run.grad_reduce_s,
                        profile: None,
                    });
                }
                Err(e) => notes.push(format!("skipped: {e}")),
            }
        }
        out.push(LoadedDataset {
            dataset: Dataset {
                name: format!("sailor/{cluster_name}/{model_name}"),
                model: m.model,
                profile: m.profile,
                runs,
            },
            notes,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> DatasetFiles {
        DatasetFiles {
            root: "d".into(),
            files: list
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    /// An AMP-layout folder in memory: rows become runs on the experiment's
    /// cluster, bad rows are noted, and a folder of folders is searched.
    #[test]
    fn amp_layout_from_bytes() {
        let csv = "micro_batch,tp,dp,pp,stage_boundaries,measured_s\n\
                   1,1,8,2,0 15 30,1.28\n\
                   1,1,4,4,0 9 15 21 30,failed\n\
                   1,2,2,2,0 15 30,1.0\n";
        let f = files(&[("measured/homogeneous.csv", csv)]);
        assert_eq!(f.layouts(), vec![Layout::Amp]);
        let d = datasets(&f).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].dataset.name, "amp/homogeneous");
        assert_eq!(d[0].dataset.runs.len(), 2);
        assert!(matches!(d[0].dataset.runs[1].outcome, Outcome::Failed));
        let notes = d[0].notes.join("\n");
        assert!(notes.contains("used the embedded AMP profiles"), "{notes}");
        assert!(notes.contains("d/measured/homogeneous.csv:4"), "{notes}");
        let nested = files(&[("a/measured/homogeneous.csv", csv)]);
        assert_eq!(find_datasets(&nested).unwrap().len(), 1);
        let e = find_datasets(&files(&[("x.json", "{}")])).unwrap_err();
        assert!(e.to_string().contains("no dataset found"), "{e}");
    }
}
