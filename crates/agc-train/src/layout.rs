//! Where every file of a run directory lives. The names are the run's on-disk format (other
//! tools, resumed runs and older runs read them), so they are written here once and every
//! step asks [`RunLayout`] for its paths. A leaf: it knows the model names and the checkpoint
//! extension, nothing else of the crate.
//!
//! ```text
//! RUN/config.json, folds.csv, metadata_encoder.json, skipped.csv
//! RUN/models/<model>/fold<k>/       state.json, best.bpk, last.bpk, optim.*.bpk, predictions.json
//! RUN/models/<model>/{oof,test}.csv, folds.json
//! RUN/attention/fold<k>.csv, RUN/boxes.csv
//! RUN/crops/fold<k>/, crops/oracle/ {train,test}.npy
//! RUN/ensemble/{oof,test}.csv, RUN/baselines/metadata/{oof,test}.csv, RUN/submission.csv
//! RUN/metrics.json, report.md, report.html, roc_oof.png, roc_test.png, overlays/grid.png
//! RUN/steps.json, RUN/locks/<name>.lock
//! ```

use std::path::{Path, PathBuf};

use agc_data::Split;

use crate::checkpoint;
use crate::model::ModelKind;

/// The out-of-fold ROC figure, relative to the report's folder (`report.md` links it).
pub const ROC_OOF_PNG: &str = "roc_oof.png";
/// The test ROC figure, relative to the report's folder.
pub const ROC_TEST_PNG: &str = "roc_test.png";
/// The attention overlay grid, relative to the report's folder.
pub const OVERLAY_GRID_PNG: &str = "overlays/grid.png";
/// The Markdown report, relative to its folder.
pub const REPORT_MD: &str = "report.md";
/// The browser report, relative to its folder.
pub const REPORT_HTML: &str = "report.html";

/// Every path of a run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLayout {
    root: PathBuf,
}

/// Whose boxes a crop cache was cut by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crops {
    /// Fold `k`'s ChipNet's attention boxes (what that fold's CropNet trains on).
    Fold(usize),
    /// The true lesion boxes (the oracle CropNet).
    Oracle,
}

/// A folder of out-of-fold and test predictions (a model's, the ensemble's, the baseline's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictionFiles {
    /// The folder.
    pub dir: PathBuf,
    /// `oof.csv`: one row per training image.
    pub oof: PathBuf,
    /// `test.csv`: one row per test image; written last, so its presence says the folder is
    /// complete.
    pub test: PathBuf,
}

impl PredictionFiles {
    fn in_dir(dir: PathBuf) -> Self {
        Self {
            oof: dir.join("oof.csv"),
            test: dir.join("test.csv"),
            dir,
        }
    }
}

/// The files of one model's training on one fold (`models/<model>/fold<k>/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldLayout {
    dir: PathBuf,
}

impl FoldLayout {
    /// The files of the fold trained in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `state.json`: the history and where training stands; written last of each epoch.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// `predictions.json`: the validation and test predictions of the best epoch.
    pub fn predictions(&self) -> PathBuf {
        self.dir.join("predictions.json")
    }

    /// The weights of the best validation AUC.
    pub fn best(&self) -> PathBuf {
        self.dir.join(format!("best.{}", checkpoint::EXTENSION))
    }

    /// The weights after the last finished epoch.
    pub fn last(&self) -> PathBuf {
        self.dir.join(format!("last.{}", checkpoint::EXTENSION))
    }
}

impl RunLayout {
    /// The layout of the run in `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The run directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config.json`: the resolved configuration; its presence says the run is prepared.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }

    /// `folds.csv`: each training image's fold.
    pub fn folds(&self) -> PathBuf {
        self.root.join("folds.csv")
    }

    /// `metadata_encoder.json`: the metadata encoding, fitted on the training records.
    pub fn metadata_encoder(&self) -> PathBuf {
        self.root.join("metadata_encoder.json")
    }

    /// `skipped.csv`: the unreadable images left out.
    pub fn skipped(&self) -> PathBuf {
        self.root.join("skipped.csv")
    }

    /// `steps.json`: seconds each finished step took.
    pub fn steps(&self) -> PathBuf {
        self.root.join("steps.json")
    }

    /// `locks/<name>.lock`: the claim of a step or fold.
    pub fn lock(&self, name: &str) -> PathBuf {
        self.root.join("locks").join(format!("{name}.lock"))
    }

    /// `models/<model>/`.
    pub fn model_dir(&self, kind: ModelKind) -> PathBuf {
        self.root.join("models").join(kind.name())
    }

    /// `models/<model>/fold<k>/`.
    pub fn fold(&self, kind: ModelKind, fold: usize) -> FoldLayout {
        FoldLayout::new(self.model_dir(kind).join(format!("fold{fold}")))
    }

    /// The best checkpoint of `kind` on fold `fold`.
    pub fn best_checkpoint(&self, kind: ModelKind, fold: usize) -> PathBuf {
        self.fold(kind, fold).best()
    }

    /// `models/<model>/{oof,test}.csv`.
    pub fn model_predictions(&self, kind: ModelKind) -> PredictionFiles {
        PredictionFiles::in_dir(self.model_dir(kind))
    }

    /// `models/<model>/folds.json`: each fold's best epoch, AUC, epochs and seconds.
    pub fn fold_summary(&self, kind: ModelKind) -> PathBuf {
        self.model_dir(kind).join("folds.json")
    }

    /// `ensemble/{oof,test}.csv`.
    pub fn ensemble_predictions(&self) -> PredictionFiles {
        PredictionFiles::in_dir(self.root.join("ensemble"))
    }

    /// `baselines/metadata/{oof,test}.csv`: the metadata-only baseline.
    pub fn baseline_predictions(&self) -> PredictionFiles {
        PredictionFiles::in_dir(self.root.join("baselines").join("metadata"))
    }

    /// `submission.csv`: the ensemble's test predictions in Kaggle's layout.
    pub fn submission(&self) -> PathBuf {
        self.root.join("submission.csv")
    }

    /// `attention/fold<k>.csv`: every attention map of fold `fold`'s ChipNet.
    pub fn attention(&self, fold: usize) -> PathBuf {
        self.root.join("attention").join(format!("fold{fold}.csv"))
    }

    /// `boxes.csv`: every image's box under every fold; written last of the crop step.
    pub fn boxes(&self) -> PathBuf {
        self.root.join("boxes.csv")
    }

    /// `crops/fold<k>/` or `crops/oracle/`.
    pub fn crops(&self, which: Crops) -> PathBuf {
        let name = match which {
            Crops::Fold(k) => format!("fold{k}"),
            Crops::Oracle => "oracle".into(),
        };
        self.root.join("crops").join(name)
    }

    /// The crop cache of `split` (`train` or `test`) in [`RunLayout::crops`].
    pub fn crop_cache(&self, which: Crops, split: Split) -> PathBuf {
        self.crops(which).join(format!("{split}.npy"))
    }

    /// `metrics.json`: every model's scores, the ensemble's weights, the boxes' statistics.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.json")
    }

    /// `report.md`.
    pub fn report_md(&self) -> PathBuf {
        self.root.join(REPORT_MD)
    }

    /// `report.html`.
    pub fn report_html(&self) -> PathBuf {
        self.root.join(REPORT_HTML)
    }

    /// `overlays/`: the attention overlay grids.
    pub fn overlays(&self) -> PathBuf {
        self.root.join("overlays")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_keep_the_on_disk_names() {
        let run = RunLayout::new("RUN");
        let rel = |p: PathBuf| {
            p.strip_prefix("RUN")
                .expect("inside the run")
                .to_string_lossy()
                .replace('\\', "/")
        };
        assert_eq!(rel(run.config()), "config.json");
        assert_eq!(rel(run.metadata_encoder()), "metadata_encoder.json");
        assert_eq!(rel(run.boxes()), "boxes.csv");
        assert_eq!(rel(run.lock("resnet.fold0")), "locks/resnet.fold0.lock");
        assert_eq!(
            rel(run.best_checkpoint(ModelKind::Chipnet, 2)),
            "models/chipnet/fold2/best.bpk"
        );
        assert_eq!(
            rel(run.fold(ModelKind::Resnet, 0).state()),
            "models/resnet/fold0/state.json"
        );
        assert_eq!(
            rel(run.model_predictions(ModelKind::Cropnet).test),
            "models/cropnet/test.csv"
        );
        assert_eq!(
            rel(run.baseline_predictions().oof),
            "baselines/metadata/oof.csv"
        );
        assert_eq!(
            rel(run.crop_cache(Crops::Fold(1), Split::Train)),
            "crops/fold1/train.npy"
        );
        assert_eq!(rel(run.crops(Crops::Oracle)), "crops/oracle");
        assert_eq!(rel(run.attention(3)), "attention/fold3.csv");
        assert_eq!(rel(run.overlays().join("x")), "overlays/x");
        assert_eq!(rel(run.root().join(OVERLAY_GRID_PNG)), "overlays/grid.png");
    }
}
