//! The CSV artefacts of a run, one serde row type each, written and read here only, through
//! the `csv` crate: an image name holding a comma, a quote or a newline survives the round
//! trip, and a malformed file is an error naming the file and the row.

use std::path::Path;

use agc_core::Fallback;
use agc_data::Split;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// A row of `folds.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldRow {
    /// The training image.
    pub image_name: String,
    /// Its fold (0-based).
    pub fold: usize,
}

/// A row of a model's `oof.csv` (and `ensemble/oof.csv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OofRow {
    /// The training image.
    pub image_name: String,
    /// Its fold: the prediction comes from the model that did not train on it.
    pub fold: usize,
    /// Its label.
    pub target: u8,
    /// The predicted probability.
    pub prediction: f32,
}

/// A row of a model's `test.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestRow {
    /// The test image.
    pub image_name: String,
    /// The probability, averaged over the folds' models.
    pub prediction: f32,
}

/// A row of `submission.csv` (Kaggle's layout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmissionRow {
    /// The test image.
    pub image_name: String,
    /// The ensemble's probability.
    pub target: f32,
}

/// A row of `boxes.csv`: one image's attention box under one fold's ChipNet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoxRow {
    /// The fold whose ChipNet made the map.
    pub fold: usize,
    /// `train` or `test`.
    pub split: Split,
    /// The image.
    pub image_name: String,
    /// The threshold applied to the upsampled map (NaN for a map that was not finite).
    pub threshold: f32,
    /// Why the box is the whole image (`uniform`, `empty_mask`, `non_finite`), or empty.
    pub fallback: Option<Fallback>,
    /// The square box in the preprocessed image: left edge.
    pub box_x: usize,
    /// Top edge.
    pub box_y: usize,
    /// Side.
    pub box_side: usize,
    /// The same box in the original photograph: left edge.
    pub orig_x: usize,
    /// Top edge.
    pub orig_y: usize,
    /// Side.
    pub orig_side: usize,
    /// The true lesion box `[x0, y0, x1, y1)` in the original, where known.
    pub true_x0: Option<u32>,
    /// See `true_x0`.
    pub true_y0: Option<u32>,
    /// See `true_x0`.
    pub true_x1: Option<u32>,
    /// See `true_x0`.
    pub true_y1: Option<u32>,
    /// IoU of the original box with the squared true box, where known.
    pub iou: Option<f64>,
}

impl BoxRow {
    /// The true box, when all four coordinates are known.
    pub fn truth(&self) -> Option<[u32; 4]> {
        Some([self.true_x0?, self.true_y0?, self.true_x1?, self.true_y1?])
    }
}

/// One fold of `models/<model>/folds.json`: how its training went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldSummary {
    /// The fold.
    pub fold: usize,
    /// The epoch whose checkpoint is kept (1-based), if any.
    pub best_epoch: Option<usize>,
    /// Its validation AUC.
    pub best_valid_auc: Option<f64>,
    /// Epochs trained.
    pub epochs: usize,
    /// Why training stopped.
    pub stop_reason: String,
    /// Seconds of training.
    pub seconds: f64,
}

/// A row of `skipped.csv`: an image left out because it could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedRow {
    /// `train` or `test`.
    pub split: Split,
    /// The image.
    pub image_name: String,
    /// Why it was left out.
    pub reason: String,
}

/// A row of `agc predict`'s `predictions.csv`: one image's scores (a column per model of the
/// run, empty for a model the run does not have or an image that could not be read) and
/// attention box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionRow {
    /// The image (file stem, or the CSV's `image_name`).
    pub image_name: String,
    /// Width of the original, as a viewer shows it.
    pub width: Option<u32>,
    /// Height of the original.
    pub height: Option<u32>,
    /// The whole-image MetaResNet's probability (mean over the folds' models).
    pub resnet: Option<f32>,
    /// ChipNet's.
    pub chipnet: Option<f32>,
    /// AttnResNet's.
    pub attnresnet: Option<f32>,
    /// CropNet's, each fold's model on its own ChipNet's crop.
    pub cropnet: Option<f32>,
    /// The run's ensemble.
    pub ensemble: Option<f32>,
    /// The attention box (of the folds' mean map) in the original: left edge.
    pub box_x: Option<usize>,
    /// Top edge.
    pub box_y: Option<usize>,
    /// Side.
    pub box_side: Option<usize>,
    /// The threshold applied to the mean map.
    pub threshold: Option<f32>,
    /// Why the box is the whole centre square (`uniform`, `empty_mask`, `non_finite`), or
    /// empty.
    pub fallback: Option<Fallback>,
    /// Warnings, `; `-separated (an image smaller than the models' input, upscaled; metadata
    /// values the run never saw in training, scored as unknown), or why the image was left out.
    pub note: String,
}

/// A row of `attention/fold<k>.csv`: the map over the `G×G` grid, row-major, as columns
/// `a0..a{G²-1}`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionRow {
    /// `train` or `test`.
    pub split: Split,
    /// The image.
    pub image_name: String,
    /// The attention weights.
    pub map: Vec<f32>,
}

fn parse_error(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Writes `rows` to `path` atomically, with a header.
///
/// # Errors
/// An unwritable file.
pub fn write_rows<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows {
        writer.serialize(row).map_err(|e| parse_error(path, e))?;
    }
    let bytes = writer.into_inner().map_err(|e| parse_error(path, e))?;
    Ok(agc_data::fsutil::write_atomic(path, &bytes)?)
}

/// Reads every row of `path`.
///
/// # Errors
/// A missing file, or a row that does not parse (its line is named).
pub fn read_rows<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| parse_error(path, e))?;
    reader
        .deserialize()
        .map(|r| r.map_err(|e| parse_error(path, e)))
        .collect()
}

/// The header and every row of `path` as strings: for tables whose columns are not known in
/// advance (a data set's `signs.csv`, a predictions file to evaluate).
///
/// # Errors
/// A missing file, or a row that does not parse.
pub(crate) fn read_csv_rows(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| parse_error(path, e))?;
    let header = reader
        .headers()
        .map_err(|e| parse_error(path, e))?
        .iter()
        .map(String::from)
        .collect();
    let mut rows = Vec::new();
    for r in reader.records() {
        rows.push(
            r.map_err(|e| parse_error(path, e))?
                .iter()
                .map(String::from)
                .collect(),
        );
    }
    Ok((header, rows))
}

/// Writes `attention/fold<k>.csv` atomically.
///
/// # Errors
/// Maps of different sizes, or an unwritable file.
pub fn write_attention(path: &Path, rows: &[AttentionRow]) -> Result<()> {
    let cells = rows.first().map_or(0, |r| r.map.len());
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["split".to_string(), "image_name".to_string()];
    header.extend((0..cells).map(|i| format!("a{i}")));
    writer
        .write_record(&header)
        .map_err(|e| parse_error(path, e))?;
    for row in rows {
        if row.map.len() != cells {
            return Err(parse_error(
                path,
                format!(
                    "{}: a map of {} cells among maps of {cells}",
                    row.image_name,
                    row.map.len()
                ),
            ));
        }
        let mut record = vec![row.split.name().to_string(), row.image_name.clone()];
        record.extend(row.map.iter().map(f32::to_string));
        writer
            .write_record(&record)
            .map_err(|e| parse_error(path, e))?;
    }
    let bytes = writer.into_inner().map_err(|e| parse_error(path, e))?;
    Ok(agc_data::fsutil::write_atomic(path, &bytes)?)
}

/// Reads `attention/fold<k>.csv`.
///
/// # Errors
/// A missing file, or a row that does not parse (its line is named).
pub fn read_attention(path: &Path) -> Result<Vec<AttentionRow>> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| parse_error(path, e))?;
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| parse_error(path, e))?;
        let bad = |what: String| parse_error(path, format!("line {}: {what}", i + 2));
        if record.len() < 3 {
            return Err(bad(format!(
                "{} fields, expected split, image_name and a map",
                record.len()
            )));
        }
        let map = record
            .iter()
            .skip(2)
            .map(|v| v.parse::<f32>().map_err(|e| bad(format!("{v:?}: {e}"))))
            .collect::<Result<Vec<f32>>>()?;
        let split = match &record[0] {
            "train" => Split::Train,
            "test" => Split::Test,
            other => return Err(bad(format!("split {other:?} is neither train nor test"))),
        };
        rows.push(AttentionRow {
            split,
            image_name: record[1].to_string(),
            map,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWKWARD: &str = "ISIC, \"quoted\"\nname";

    #[test]
    fn splits_and_fallbacks_are_read_as_runs_write_them_and_others_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("boxes.csv");
        let header = "fold,split,image_name,threshold,fallback,box_x,box_y,box_side,orig_x,\
                      orig_y,orig_side,true_x0,true_y0,true_x1,true_y1,iou";
        std::fs::write(
            &path,
            format!("{header}\n0,train,a,0.5,,1,2,3,4,5,6,,,,,\n1,test,b,0.5,empty_mask,1,2,3,4,5,6,0,0,9,9,0.25\n"),
        )
        .expect("write");
        let rows: Vec<BoxRow> = read_rows(&path).expect("boxes.csv as runs write it");
        assert_eq!((rows[0].split, rows[0].fallback), (Split::Train, None));
        assert_eq!(
            (rows[1].split, rows[1].fallback),
            (Split::Test, Some(Fallback::EmptyMask))
        );
        std::fs::write(
            &path,
            format!("{header}\n0,valid,a,0.5,,1,2,3,4,5,6,,,,,\n"),
        )
        .expect("write");
        let err = read_rows::<BoxRow>(&path).expect_err("no such split");
        assert!(err.to_string().contains("valid"), "{err}");
        std::fs::write(
            &path,
            format!("{header}\n0,test,a,0.5,lost,1,2,3,4,5,6,,,,,\n"),
        )
        .expect("write");
        let err = read_rows::<BoxRow>(&path).expect_err("no such fallback");
        assert!(err.to_string().contains("lost"), "{err}");
    }

    #[test]
    fn awkward_image_names_survive_every_artefact() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("oof.csv");
        let rows = vec![
            OofRow {
                image_name: AWKWARD.into(),
                fold: 1,
                target: 1,
                prediction: 0.25,
            },
            OofRow {
                image_name: "plain".into(),
                fold: 0,
                target: 0,
                prediction: f32::NAN,
            },
        ];
        write_rows(&path, &rows).expect("write");
        let back: Vec<OofRow> = read_rows(&path).expect("read");
        assert_eq!(back[0], rows[0]);
        assert!(back[1].prediction.is_nan());
        let boxes = vec![BoxRow {
            fold: 0,
            split: Split::Test,
            image_name: AWKWARD.into(),
            threshold: 0.5,
            fallback: None,
            box_x: 1,
            box_y: 2,
            box_side: 3,
            orig_x: 4,
            orig_y: 5,
            orig_side: 6,
            true_x0: None,
            true_y0: None,
            true_x1: None,
            true_y1: None,
            iou: None,
        }];
        let path = dir.path().join("boxes.csv");
        write_rows(&path, &boxes).expect("write");
        assert_eq!(read_rows::<BoxRow>(&path).expect("read"), boxes);
        let att = vec![AttentionRow {
            split: Split::Train,
            image_name: AWKWARD.into(),
            map: vec![0.5, 0.25, 0.125, 0.125],
        }];
        let path = dir.path().join("att.csv");
        write_attention(&path, &att).expect("write");
        assert_eq!(read_attention(&path).expect("read"), att);
    }

    #[test]
    fn a_malformed_row_is_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("folds.csv");
        std::fs::write(&path, "image_name,fold\na,0\nb,x\n").expect("write");
        let err = read_rows::<FoldRow>(&path).expect_err("bad").to_string();
        assert!(
            err.contains("folds.csv") && err.contains("line: 3"),
            "{err}"
        );
    }
}
