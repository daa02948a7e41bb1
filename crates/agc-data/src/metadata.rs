//! ISIC-layout metadata CSVs and the one-hot metadata encoder.
//!
//! Columns (ISIC 2020): `image_name`, `patient_id`, `sex`, `age_approx`,
//! `anatom_site_general_challenge`, and in training files `target` (0/1). Empty cells are
//! "unknown". Other columns (`diagnosis`, `benign_malignant`, …) are ignored, except the
//! synthetic generator's lesion box `lesion_x0, lesion_y0, lesion_x1, lesion_y1`, which is read
//! when present.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data_dir::check_image_name;
use crate::error::{DataError, Result};
use crate::fsutil::write_json;

/// Column names.
pub mod columns {
    /// The image's file stem.
    pub const IMAGE: &str = "image_name";
    /// The patient, for grouped folds.
    pub const PATIENT: &str = "patient_id";
    /// `male` / `female` / empty.
    pub const SEX: &str = "sex";
    /// Age in years, rounded to 5.
    pub const AGE: &str = "age_approx";
    /// Body site.
    pub const SITE: &str = "anatom_site_general_challenge";
    /// 0 (benign) or 1 (malignant).
    pub const TARGET: &str = "target";
    /// The synthetic lesion's true box in original pixels: left, top, right, bottom (exclusive).
    pub const LESION_BOX: [&str; 4] = ["lesion_x0", "lesion_y0", "lesion_x1", "lesion_y1"];
}

/// One row of a metadata CSV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The image's file stem (`ISIC_0052060` for `train/ISIC_0052060.jpg`).
    pub image_name: String,
    /// The patient, where known.
    pub patient_id: Option<String>,
    /// Sex, lower-case, where known.
    pub sex: Option<String>,
    /// Approximate age in years, where known.
    pub age: Option<f32>,
    /// Body site, lower-case, where known.
    pub site: Option<String>,
    /// The label, in training files.
    pub target: Option<u8>,
    /// The true lesion box `[x0, y0, x1, y1]` in original pixels, where the CSV has one.
    pub lesion_box: Option<[u32; 4]>,
}

/// The training or the test images: which columns their metadata file must have, and the
/// `split` column of a run's CSV files (`train`, `test`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training metadata: `target` is required.
    Train,
    /// Test metadata: no `target` needed (read if present).
    Test,
}

impl Split {
    /// Both, training first.
    pub const BOTH: [Self; 2] = [Self::Train, Self::Test];

    /// `train` or `test`: the CSV value, and the name of the data's image folder and CSV.
    pub fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Test => "test",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which columns a reader needs: a split's, or those of images to score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Columns {
    Split(Split),
    Score,
}

/// Reads a metadata CSV.
///
/// # Errors
/// An unreadable or malformed file, a missing required column (`image_name`, `sex`,
/// `age_approx`, `anatom_site_general_challenge`, and `target` for [`Split::Train`]), an
/// `image_name` that is not a plain file name (empty, `..`, a path; see
/// [`check_image_name`]), a duplicate `image_name`, an age that is not a number in `[0, 130]`, a target
/// other than 0 or 1, or a partial or invalid lesion box; each error names the file, the row and
/// the value.
pub fn read_metadata(path: &Path, split: Split) -> Result<Vec<Record>> {
    read_records(path, Columns::Split(split))
}

/// Reads a CSV of images to score with a trained run: only `image_name` is needed; `sex`,
/// `age_approx` and `anatom_site_general_challenge` are read where the file has them (unknown
/// otherwise), checked as [`read_metadata`] checks them; `target` is not read.
///
/// # Errors
/// As [`read_metadata`], but for the columns it does not need.
pub fn read_score_inputs(path: &Path) -> Result<Vec<Record>> {
    read_records(path, Columns::Score)
}

fn read_records(path: &Path, need: Columns) -> Result<Vec<Record>> {
    let mut table = Table::open(path)?;
    let image = table.require(columns::IMAGE)?;
    let [sex, age, site] = match need {
        Columns::Score => [columns::SEX, columns::AGE, columns::SITE].map(|c| table.optional(c)),
        Columns::Split(_) => [
            Some(table.require(columns::SEX)?),
            Some(table.require(columns::AGE)?),
            Some(table.require(columns::SITE)?),
        ],
    };
    let target = match need {
        Columns::Split(Split::Train) => Some(table.require(columns::TARGET)?),
        Columns::Split(Split::Test) => table.optional(columns::TARGET),
        Columns::Score => None,
    };
    let patient = table.optional(columns::PATIENT);
    let boxes: Vec<Option<usize>> = columns::LESION_BOX
        .iter()
        .map(|c| table.optional(c))
        .collect();

    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut records = Vec::new();
    for (row, cells) in table.rows() {
        let cells = cells?;
        let cell = |i: usize| cells.get(i).map_or("", |s| s.trim());
        let cell_of = |i: Option<usize>| i.map_or("", cell);
        let bad = |column: &str, value: &str, message: &str| DataError::BadValue {
            path: path.to_path_buf(),
            row,
            column: column.to_string(),
            value: value.to_string(),
            message: message.to_string(),
        };
        let name = cell(image).to_string();
        check_image_name(&name).map_err(|why| bad(columns::IMAGE, &name, why))?;
        remember(&mut seen, path, row, &name)?;
        let age = match cell_of(age) {
            "" => None,
            v => match v.parse::<f32>() {
                Ok(a) if (0.0..=130.0).contains(&a) => Some(a),
                _ => return Err(bad(columns::AGE, v, "not an age in years")),
            },
        };
        let target = match target.map(cell) {
            None | Some("") if need != Columns::Split(Split::Train) => None,
            Some(v) => Some(
                parse_target(v).ok_or_else(|| bad(columns::TARGET, v, "target must be 0 or 1"))?,
            ),
            None => None,
        };
        let lesion_box = parse_box(&boxes, &cell).map_err(|(column, value)| {
            bad(
                column,
                &value,
                "a lesion box needs four non-negative integers with x0 < x1 and y0 < y1",
            )
        })?;
        records.push(Record {
            image_name: name,
            patient_id: patient
                .map(cell)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            sex: lower(cell_of(sex)),
            age,
            site: lower(cell_of(site)),
            target,
            lesion_box,
        });
    }
    Ok(records)
}

/// Reads a labels file (`image_name,target`), such as a synthetic data set's test labels.
///
/// # Errors
/// As [`read_metadata`], for the two columns.
pub fn read_labels(path: &Path) -> Result<Vec<(String, u8)>> {
    let mut table = Table::open(path)?;
    let image = table.require(columns::IMAGE)?;
    let target = table.require(columns::TARGET)?;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut labels = Vec::new();
    for (row, cells) in table.rows() {
        let cells = cells?;
        let name = cells.get(image).unwrap_or("").trim().to_string();
        let value = cells.get(target).unwrap_or("").trim();
        let Some(t) = parse_target(value) else {
            return Err(DataError::BadValue {
                path: path.to_path_buf(),
                row,
                column: columns::TARGET.into(),
                value: value.into(),
                message: "target must be 0 or 1".into(),
            });
        };
        remember(&mut seen, path, row, &name)?;
        labels.push((name, t));
    }
    Ok(labels)
}

/// Records that `name` is in `row`; a name seen before is an error naming both rows.
fn remember(seen: &mut HashMap<String, usize>, path: &Path, row: usize, name: &str) -> Result<()> {
    if let Some(&first_row) = seen.get(name) {
        return Err(DataError::DuplicateImage {
            path: path.to_path_buf(),
            row,
            first_row,
            name: name.to_string(),
        });
    }
    seen.insert(name.to_string(), row);
    Ok(())
}

fn parse_target(v: &str) -> Option<u8> {
    match v {
        "0" | "0.0" => Some(0),
        "1" | "1.0" => Some(1),
        _ => None,
    }
}

fn lower(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_lowercase())
}

/// All four box cells, or none; otherwise the first bad column and its value.
fn parse_box<'a>(
    columns_at: &[Option<usize>],
    cell: &impl Fn(usize) -> &'a str,
) -> std::result::Result<Option<[u32; 4]>, (&'static str, String)> {
    let values: Vec<&str> = columns_at.iter().map(|c| c.map_or("", cell)).collect();
    if values.iter().all(|v| v.is_empty()) {
        return Ok(None);
    }
    let mut b = [0u32; 4];
    for (i, v) in values.iter().enumerate() {
        b[i] = v
            .parse()
            .map_err(|_| (columns::LESION_BOX[i], (*v).to_string()))?;
    }
    if b[0] >= b[2] || b[1] >= b[3] {
        return Err((columns::LESION_BOX[2], format!("{b:?}")));
    }
    Ok(Some(b))
}

/// A CSV file with its header, for reading columns by name.
struct Table {
    path: PathBuf,
    header: Vec<String>,
    reader: csv::Reader<std::fs::File>,
}

impl Table {
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(crate::error::io(path))?;
        let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(file);
        let header = reader
            .headers()
            .map_err(|e| DataError::Csv {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?
            .iter()
            .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            header,
            reader,
        })
    }

    fn optional(&self, column: &str) -> Option<usize> {
        self.header.iter().position(|h| h == column)
    }

    fn require(&self, column: &str) -> Result<usize> {
        self.optional(column)
            .ok_or_else(|| DataError::MissingColumn {
                path: self.path.clone(),
                column: column.to_string(),
                found: self.header.join(","),
            })
    }

    /// Data rows, numbered from 1.
    fn rows(&mut self) -> impl Iterator<Item = (usize, Result<csv::StringRecord>)> + '_ {
        let path = self.path.clone();
        self.reader.records().enumerate().map(move |(i, r)| {
            let r = r.map_err(|e| DataError::Csv {
                path: path.clone(),
                message: e.to_string(),
            });
            (i + 1, r)
        })
    }
}

/// One-hot encoding of sex, age and body site, each with an "unknown" slot.
///
/// The vocabulary is fitted on training metadata by default; values never seen while fitting
/// map to "unknown". Layout: `[sex…, sex unknown, age…, age unknown, site…, site unknown]`,
/// each vocabulary sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataEncoder {
    /// Known sexes.
    pub sexes: Vec<String>,
    /// Known ages, as written by [`age_key`].
    pub ages: Vec<String>,
    /// Known body sites.
    pub sites: Vec<String>,
}

/// The vocabulary key of an age: `70.0` → `"70"`, `42.5` → `"42.5"`.
pub fn age_key(age: f32) -> String {
    format!("{age}")
}

impl MetadataEncoder {
    /// Fits the vocabulary on `records` (the training metadata; add the test metadata to
    /// reproduce the SIIM-ISIC seed, which fitted on both).
    pub fn fit<'a>(records: impl IntoIterator<Item = &'a Record>) -> Self {
        let (mut sexes, mut ages, mut sites) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for r in records {
            sexes.extend(r.sex.clone());
            ages.extend(r.age.map(age_key));
            sites.extend(r.site.clone());
        }
        Self {
            sexes: sexes.into_iter().collect(),
            ages: ages.into_iter().collect(),
            sites: sites.into_iter().collect(),
        }
    }

    /// Length of an encoded vector.
    pub fn dim(&self) -> usize {
        self.sexes.len() + self.ages.len() + self.sites.len() + 3
    }

    /// Encodes one record: three ones, one per group.
    pub fn encode(&self, record: &Record) -> Vec<f32> {
        let mut v = vec![0.0f32; self.dim()];
        let mut offset = 0;
        let age = record.age.map(age_key);
        for (vocab, value) in [
            (&self.sexes, record.sex.as_deref()),
            (&self.ages, age.as_deref()),
            (&self.sites, record.site.as_deref()),
        ] {
            let slot = value
                .and_then(|x| vocab.iter().position(|k| k == x))
                .unwrap_or(vocab.len());
            v[offset + slot] = 1.0;
            offset += vocab.len() + 1;
        }
        v
    }

    /// The record's known values (sex, age, site) that are not in the vocabulary, and so go to
    /// their group's "unknown" slot, each with its CSV column ([`columns`]): `("sex", "alien")`.
    pub fn unseen_values(&self, record: &Record) -> Vec<(&'static str, String)> {
        let age = record.age.map(age_key);
        [
            (columns::SEX, &self.sexes, record.sex.as_deref()),
            (columns::AGE, &self.ages, age.as_deref()),
            (columns::SITE, &self.sites, record.site.as_deref()),
        ]
        .into_iter()
        .filter_map(|(column, vocab, value)| {
            value
                .filter(|x| !vocab.iter().any(|k| k == x))
                .map(|x| (column, x.to_string()))
        })
        .collect()
    }

    /// Writes the vocabulary as JSON, atomically.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }

    /// Reads a vocabulary written by [`MetadataEncoder::save`].
    ///
    /// # Errors
    /// If the file cannot be read or is not such a vocabulary.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(crate::error::io(path))?;
        serde_json::from_slice(&bytes).map_err(|e| DataError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_test_metadata() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/isic2020_test_metadata.csv")
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write test CSV");
        path
    }

    #[test]
    fn images_to_score_need_only_their_names_and_are_checked_as_metadata_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = write(dir.path(), "names.csv", "image_name\nISIC_1\nISIC_2\n");
        let records = read_score_inputs(&names).expect("names alone are enough");
        assert_eq!(records.len(), 2);
        assert_eq!((records[1].sex.as_ref(), records[1].age), (None, None));
        // Metadata where given (lower-cased), and a target column neither needed nor read.
        let some = write(
            dir.path(),
            "some.csv",
            "image_name,sex,age_approx,target\nISIC_1,MALE,45,maybe\nISIC_2,,,\n",
        );
        let records = read_score_inputs(&some).expect("partial metadata");
        assert_eq!(records[0].sex.as_deref(), Some("male"));
        assert_eq!((records[0].age, records[0].target), (Some(45.0), None));
        // The same checks as training metadata: ages, names, duplicates.
        for (text, expected) in [
            ("image_name,age_approx\nISIC_1,old\n", "\"old\""),
            ("image_name\n../x\n", "\"../x\""),
            ("image_name\nISIC_1\nISIC_1\n", "ISIC_1"),
        ] {
            let path = write(dir.path(), "bad.csv", text);
            let err = read_score_inputs(&path).expect_err(text).to_string();
            assert!(err.contains("bad.csv") && err.contains(expected), "{err}");
        }
        let nameless = write(dir.path(), "nameless.csv", "sex\nmale\n");
        assert!(read_score_inputs(&nameless).is_err());
        // Training metadata still needs its columns.
        assert!(read_metadata(&names, Split::Test).is_err());
    }

    #[test]
    fn reads_the_real_isic_2020_test_metadata() {
        let path = shared_test_metadata();
        if !path.exists() {
            // CI always has ../shared beside the clone; only a bare checkout may lack it.
            assert!(
                std::env::var_os("CI").is_none(),
                "{} is missing in CI",
                path.display()
            );
            eprintln!("skipped: {} not present", path.display());
            return;
        }
        let records = read_metadata(&path, Split::Test).expect("ISIC test metadata reads");
        assert_eq!(records.len(), 10_982);
        assert_eq!(records[0].image_name, "ISIC_0052060");
        assert_eq!(records[0].site, None, "empty cell is unknown");
        assert_eq!(records[1].site.as_deref(), Some("lower extremity"));
        assert_eq!(records.iter().filter(|r| r.site.is_none()).count(), 351);
        let patients: BTreeSet<_> = records
            .iter()
            .filter_map(|r| r.patient_id.as_ref())
            .collect();
        assert_eq!(patients.len(), 690);

        let encoder = MetadataEncoder::fit(&records);
        // 2 sexes, 17 ages (10..=90 by 5), 6 sites, each + unknown.
        assert_eq!(
            (encoder.sexes.len(), encoder.ages.len(), encoder.sites.len()),
            (2, 17, 6)
        );
        assert_eq!(encoder.dim(), 28);
        let torso = encoder
            .sites
            .iter()
            .position(|s| s == "torso")
            .expect("torso")
            + 3
            + 18;
        let mut torso_count = 0;
        for r in &records {
            let v = encoder.encode(r);
            assert!((v.iter().sum::<f32>() - 3.0).abs() < 1e-6);
            torso_count += usize::from(v[torso] > 0.5);
        }
        assert_eq!(torso_count, 5847);
    }

    #[test]
    fn unseen_values_map_to_unknown_and_the_vocabulary_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let train = write(
            dir.path(),
            "train.csv",
            "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,target,diagnosis\n\
             a,p1,male,45.0,torso,0,nevus\nb,p2,female,,head/neck,1,melanoma\n",
        );
        let records = read_metadata(&train, Split::Train).expect("reads");
        assert_eq!(records[1].age, None);
        assert_eq!(records[1].target, Some(1));
        let encoder = MetadataEncoder::fit(&records);
        assert_eq!(encoder.dim(), 2 + 1 + 1 + 1 + 2 + 1);
        let unseen = Record {
            image_name: "c".into(),
            patient_id: None,
            sex: Some("other".into()),
            age: Some(80.0),
            site: Some("palms/soles".into()),
            target: None,
            lesion_box: None,
        };
        // Every group falls in its unknown slot: indices 2, 4 and 7.
        assert_eq!(encoder.encode(&unseen), [0., 0., 1., 0., 1., 0., 0., 1.]);
        assert_eq!(
            encoder.unseen_values(&unseen),
            [
                ("sex", "other".to_string()),
                ("age_approx", "80".to_string()),
                ("anatom_site_general_challenge", "palms/soles".to_string()),
            ],
            "named, for the warning"
        );
        assert_eq!(encoder.unseen_values(&records[0]).len(), 0);
        assert_eq!(
            encoder.unseen_values(&records[1]).len(),
            0,
            "a missing age is not an unseen one"
        );
        let saved = dir.path().join("encoder.json");
        encoder.save(&saved).expect("save");
        assert_eq!(MetadataEncoder::load(&saved).expect("load"), encoder);
    }

    #[test]
    fn bad_csvs_name_the_file_row_and_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let header = "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,target\n";
        let cases = [
            (
                "missing.csv",
                "image_name,sex,age_approx,target\na,male,40,0\n",
                "missing column \"anatom_site_general_challenge\"",
            ),
            (
                "target.csv",
                &format!("{header}a,p,male,40,torso,0\nb,p,male,40,torso,yes\n") as &str,
                "row 2: column \"target\"",
            ),
            (
                "dup.csv",
                &format!("{header}a,p,male,40,torso,0\na,p,male,40,torso,1\n"),
                "row 2: duplicate image_name \"a\" (first seen in row 1)",
            ),
            (
                "age.csv",
                &format!("{header}a,p,male,forty,torso,0\n"),
                "row 1: column \"age_approx\"",
            ),
            (
                "ragged.csv",
                &format!("{header}a,p,male,40\n"),
                "ragged.csv",
            ),
            (
                "escape.csv",
                &format!("{header}../escape/target,p,male,40,torso,0\n"),
                "row 1: column \"image_name\": an image name is a file name, without a path \
                 separator (value \"../escape/target\")",
            ),
            (
                "dotdot.csv",
                &format!("{header}a,p,male,40,torso,0\n..,p,male,40,torso,0\n"),
                "row 2: column \"image_name\"",
            ),
            (
                "noname.csv",
                &format!("{header} ,p,male,40,torso,0\n"),
                "row 1: column \"image_name\": empty image name",
            ),
            (
                "empty_target.csv",
                &format!("{header}a,p,male,40,torso,\n"),
                "target must be 0 or 1",
            ),
        ];
        for (name, text, expected) in cases {
            let path = write(dir.path(), name, text);
            let err = read_metadata(&path, Split::Train)
                .expect_err(name)
                .to_string();
            assert!(err.contains(name), "{err}");
            assert!(err.contains(expected), "{name}: {err}");
        }
        let err = read_metadata(&dir.path().join("absent.csv"), Split::Test).expect_err("absent");
        assert!(err.to_string().contains("absent.csv"), "{err}");
    }

    #[test]
    fn lesion_box_columns_are_read_all_or_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let header = "image_name,sex,age_approx,anatom_site_general_challenge,target,lesion_x0,lesion_y0,lesion_x1,lesion_y1\n";
        let ok = write(
            dir.path(),
            "ok.csv",
            &format!("{header}a,,,,1,10,20,110,120\nb,,,,0,,,,\n"),
        );
        let records = read_metadata(&ok, Split::Train).expect("reads");
        assert_eq!(records[0].lesion_box, Some([10, 20, 110, 120]));
        assert_eq!(records[1].lesion_box, None);
        let partial = write(
            dir.path(),
            "partial.csv",
            &format!("{header}a,,,,1,10,,110,120\n"),
        );
        let err = read_metadata(&partial, Split::Train)
            .expect_err("partial box")
            .to_string();
        assert!(err.contains("row 1") && err.contains("lesion_y0"), "{err}");
    }

    #[test]
    fn labels_file_reads_and_rejects_bad_targets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = write(dir.path(), "labels.csv", "image_name,target\na,0\nb,1\n");
        assert_eq!(
            read_labels(&good).expect("reads"),
            [("a".to_string(), 0), ("b".to_string(), 1)]
        );
        let bad = write(dir.path(), "bad.csv", "image_name,target\na,2\n");
        assert!(
            read_labels(&bad)
                .expect_err("2 is no label")
                .to_string()
                .contains("row 1")
        );
    }
}
