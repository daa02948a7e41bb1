//! A data directory in the SIIM-ISIC layout: `train.csv`, `test.csv`, `train/<image_name>.jpg`,
//! `test/<image_name>.jpg` (the image folders can be named explicitly).

use std::path::{Component, Path, PathBuf};

use crate::cache::CacheJob;
use crate::error::{DataError, Result};
use crate::metadata::{Record, Split, read_metadata};

/// Extensions tried, in order, for an image named in a CSV.
pub const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "JPG", "PNG"];

/// Where the parts of a data directory are, when they are not in the default places.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataDirOptions {
    /// The training images (default `<root>/train`).
    pub train_images: Option<PathBuf>,
    /// The test images (default `<root>/test`).
    pub test_images: Option<PathBuf>,
    /// Read `test.csv` too (an error if it is missing).
    pub with_test: bool,
}

/// A data directory's metadata and image folders.
#[derive(Debug, Clone)]
pub struct DataDir {
    /// The directory.
    pub root: PathBuf,
    /// The training images' folder.
    pub train_images: PathBuf,
    /// The test images' folder.
    pub test_images: PathBuf,
    /// `train.csv`.
    pub train: Vec<Record>,
    /// `test.csv` (empty unless asked for).
    pub test: Vec<Record>,
}

impl DataDir {
    /// Reads `train.csv` (and `test.csv` with `with_test`).
    ///
    /// # Errors
    /// A missing directory, CSV or image folder, or a CSV error (see [`read_metadata`]).
    pub fn open(root: &Path, options: &DataDirOptions) -> Result<Self> {
        if !root.is_dir() {
            return Err(DataError::Io {
                path: root.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such data directory"),
            });
        }
        let train_images = options
            .train_images
            .clone()
            .unwrap_or_else(|| root.join("train"));
        let test_images = options
            .test_images
            .clone()
            .unwrap_or_else(|| root.join("test"));
        let folder = |dir: &Path| -> Result<()> {
            if dir.is_dir() {
                Ok(())
            } else {
                Err(DataError::Io {
                    path: dir.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no such image folder",
                    ),
                })
            }
        };
        folder(&train_images)?;
        let train = read_metadata(&root.join("train.csv"), Split::Train)?;
        let test = if options.with_test {
            folder(&test_images)?;
            read_metadata(&root.join("test.csv"), Split::Test)?
        } else {
            Vec::new()
        };
        Ok(Self {
            root: root.to_path_buf(),
            train_images,
            test_images,
            train,
            test,
        })
    }

    /// The records and image folder of a split.
    pub fn split(&self, split: Split) -> (&[Record], &Path) {
        match split {
            Split::Train => (&self.train, &self.train_images),
            Split::Test => (&self.test, &self.test_images),
        }
    }

    /// The file of image `name` in `folder`: the first of [`IMAGE_EXTENSIONS`] that exists, or
    /// the `.jpg` path (so that reading it reports the missing file by name).
    ///
    /// This is where image names become paths; `name` must have passed [`check_image_name`]
    /// (every CSV reader does that, naming the row), so the path stays inside `folder`.
    pub fn image_path(folder: &Path, name: &str) -> PathBuf {
        debug_assert!(
            check_image_name(name).is_ok(),
            "unchecked image name {name:?}"
        );
        IMAGE_EXTENSIONS
            .iter()
            .map(|ext| folder.join(format!("{name}.{ext}")))
            .find(|p| p.is_file())
            .unwrap_or_else(|| folder.join(format!("{name}.jpg")))
    }

    /// One preprocessing job (centre square) per image of a split, in CSV order.
    pub fn jobs(&self, split: Split) -> Vec<CacheJob> {
        let (records, folder) = self.split(split);
        records
            .iter()
            .map(|r| CacheJob {
                name: r.image_name.clone(),
                path: Self::image_path(folder, &r.image_name),
                square: None,
            })
            .collect()
    }

    /// The images of a split that are missing from its folder.
    pub fn missing_images(&self, split: Split) -> Vec<PathBuf> {
        self.jobs(split)
            .into_iter()
            .map(|j| j.path)
            .filter(|p| !p.is_file())
            .collect()
    }
}

/// Whether `name` can name an image in a folder: a plain file name, not empty, with no path
/// separator (`/` or `\`), not `.` or `..`, not absolute and without a drive prefix. ISIC names
/// (`ISIC_0052060`) always are; anything else would let a CSV read a file outside the images
/// folder (`../escape/target`).
///
/// # Errors
/// Why the name is not a plain file name, to be reported with the file, row and value.
pub fn check_image_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty image name");
    }
    if name.contains(['/', '\\']) {
        return Err("an image name is a file name, without a path separator");
    }
    if name.contains('\0') {
        return Err("an image name cannot contain a NUL character");
    }
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(_)), None) => Ok(()),
        _ => Err("an image name is a plain file name, not `.`, `..`, absolute or a drive"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_file_names_are_image_names() {
        for good in [
            "ISIC_0052060",
            "synth_0001",
            "a.b",
            "..a",
            "a..",
            "naïve name",
        ] {
            assert_eq!(check_image_name(good), Ok(()), "{good:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../escape/target",
            "sub/name",
            "/etc/passwd",
            "..\\escape",
            "a\0b",
        ] {
            assert!(check_image_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn finds_images_by_extension_and_reports_missing_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("imgs")).expect("mkdir");
        std::fs::write(
            root.join("train.csv"),
            "image_name,sex,age_approx,anatom_site_general_challenge,target\na,male,40,torso,0\nb,,,,1\nc,,,,0\n",
        )
        .expect("write");
        image::RgbImage::new(8, 8)
            .save(root.join("imgs/a.jpg"))
            .expect("save");
        image::RgbImage::new(8, 8)
            .save(root.join("imgs/b.png"))
            .expect("save");
        let options = DataDirOptions {
            train_images: Some(root.join("imgs")),
            ..DataDirOptions::default()
        };
        let data = DataDir::open(root, &options).expect("opens");
        let jobs = data.jobs(Split::Train);
        assert_eq!(jobs[1].path, root.join("imgs/b.png"));
        assert_eq!(data.missing_images(Split::Train), [root.join("imgs/c.jpg")]);

        let err = DataDir::open(root, &DataDirOptions::default()).expect_err("no train/ folder");
        assert!(err.to_string().contains("train"), "{err}");
        let err = DataDir::open(
            root,
            &DataDirOptions {
                with_test: true,
                ..options
            },
        )
        .expect_err("no test");
        assert!(err.to_string().contains("test"), "{err}");
    }
}
