//! Fuzzing on stable Rust: every parser of a file agc reads from outside, fed mutations of a
//! seed corpus of real-world breakage (`tests/fixtures/fuzz/`, written by
//! `scripts/make_fuzz_corpus.py`; the configuration and the image cache are written here from
//! the current types). For every case: no panic, no single allocation above [`BUDGET`], and an
//! error that names the file.
//!
//! CI runs a short pass (`PROPTEST_CASES`, default 256 cases per target). A long run, as in
//! docs/robustness.md:
//!
//!     PROPTEST_CASES=100000 cargo test --test fuzz -- --test-threads 1
//!
//! The targets: the image decoders with their pixel limit (JPEG with DCT scaling and EXIF,
//! PNG, whatever the magic says), the CSV readers (train, test, labels, predictions), the
//! configuration reader, the image cache (`.npy`) and the weight loaders (safetensors and
//! `.pth`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use agc::core::ResNetConfig;
use agc::core::weights::LoadOptions;
use agc::data::imageio::{self, Decoded};
use agc::data::metadata::{Split, read_labels, read_metadata};
use agc::data::{ImageCache, npy};
use agc::train::run::PipelineConfig;
use agc::train::scores::evaluate_file;
use proptest::prelude::*;
use proptest::sample::Index;

/// The largest single allocation a case may make: the images of this test are limited to
/// [`MAX_PIXELS`], whose RGB buffer and the decoder's planes fit many times over, while a
/// header that claims more than the limit must be refused before its pixels are allocated.
const BUDGET: usize = 64 << 20;

/// The pixel limit of this test (`--max-image-pixels`): 4 MP, so that a claimed size the
/// limit lets through still decodes quickly from a few hundred bytes of noise.
const MAX_PIXELS: u64 = 1 << 22;

/// The system allocator, recording the largest single allocation of the process, whichever
/// thread makes it (a parser may allocate on threads of its own).
struct Watched;

/// The largest allocation since [`check`] last reset it.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

/// Held by [`check`] while it watches, so that the cases of the targets, which the test
/// harness runs on several threads, are watched one at a time.
static WATCH: Mutex<()> = Mutex::new(());

fn note(size: usize) {
    LARGEST.fetch_max(size, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` with the same arguments; the bookkeeping
// allocates nothing. (A global allocator can only be written as an unsafe trait impl: the one
// place this test needs `unsafe`.)
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Watched {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as the caller's contract for `GlobalAlloc::alloc`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as the caller's contract for `GlobalAlloc::alloc_zeroed`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as the caller's contract for `GlobalAlloc::dealloc`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as the caller's contract for `GlobalAlloc::realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Watched = Watched;

/// Runs `parse` on `path` and checks the properties: the largest allocation within the budget,
/// and an error that names the file. (A panic fails the case by itself.)
fn check<T, E: std::fmt::Display>(path: &Path, parse: impl FnOnce(&Path) -> Result<T, E>) {
    // A case that failed while watching poisons the lock; the next one can watch all the same.
    let _watching = WATCH.lock().unwrap_or_else(PoisonError::into_inner);
    LARGEST.store(0, Ordering::Relaxed);
    let result = parse(path);
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= BUDGET,
        "{}: one allocation of {largest} bytes, above the budget of {BUDGET}",
        path.display()
    );
    if let Err(e) = result {
        let message = format!("{e:#}");
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("file name");
        assert!(
            message.contains(name),
            "the error does not name the file {name}: {message}"
        );
    }
}

/// One change to a file's bytes; positions are drawn relative to the current length.
#[derive(Debug, Clone)]
enum Mutation {
    /// Flip one bit.
    Flip(Index, u8),
    /// Set one byte.
    Set(Index, u8),
    /// Write a large big- and little-endian-looking value (0xFFFF, 0x7FFF_FFFF, ...) over two
    /// or four bytes: a claimed width, length or offset.
    Large(Index, usize),
    /// Cut the file there.
    Truncate(Index),
    /// Insert bytes there.
    Insert(Index, Vec<u8>),
    /// Repeat a stretch of the file after itself.
    Repeat(Index, u8),
    /// Write a troublesome token of text there (a huge or negative number, NaN, a quote, a
    /// separator): the text formats' counterpart of [`Mutation::Large`].
    Token(Index, usize),
}

const TOKENS: [&str; 12] = [
    "99999999999999999999",
    "4294967296",
    "18446744073709551615",
    "-1",
    "1e309",
    "NaN",
    "\"",
    ",",
    "\n",
    "\u{0}",
    "(65535, 65535, 65535, 3)",
    "\u{e9}\u{1F600}",
];

const LARGE: [&[u8]; 6] = [
    &[0xFF, 0xFF],
    &[0x7F, 0xFF, 0xFF, 0xFF],
    &[0xFF, 0xFF, 0xFF, 0x7F],
    &[0x00, 0x00],
    &[0x80, 0x00, 0x00, 0x00],
    &[0xFF, 0xFF, 0xFF, 0xFF],
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        2 => (any::<Index>(), 0..LARGE.len()).prop_map(|(i, k)| Mutation::Large(i, k)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1u8..64).prop_map(|(i, n)| Mutation::Repeat(i, n)),
        2 => (any::<Index>(), 0..TOKENS.len()).prop_map(|(i, k)| Mutation::Token(i, k)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            if let Mutation::Insert(_, b) = m {
                bytes.extend_from_slice(b);
            }
            continue;
        }
        let n = bytes.len();
        match m {
            Mutation::Flip(i, bit) => bytes[i.index(n)] ^= 1 << bit,
            Mutation::Set(i, b) => bytes[i.index(n)] = *b,
            Mutation::Large(i, k) => {
                let at = i.index(n);
                for (j, b) in LARGE[*k].iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + j) {
                        *slot = *b;
                    }
                }
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(n)),
            Mutation::Insert(i, b) => {
                let at = i.index(n + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Token(i, k) => {
                let at = i.index(n);
                // Over a number where there is one (up to the next non-digit), else inserted.
                let end = bytes[at..]
                    .iter()
                    .position(|b| !b.is_ascii_digit())
                    .map_or(n, |p| at + p);
                bytes.splice(at..end, TOKENS[*k].bytes());
            }
            Mutation::Repeat(i, len) => {
                let at = i.index(n);
                let end = (at + usize::from(*len)).min(n);
                let stretch = bytes[at..end].to_vec();
                bytes.splice(end..end, stretch);
            }
        }
    }
    bytes
}

fn corpus(folder: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(folder);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("corpus file"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: an empty corpus", dir.display());
    files
}

/// A mutated corpus file, written under a fresh temporary folder with the seed's file name
/// (the loaders go by extension).
struct Case {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn case((name, bytes): &(String, Vec<u8>), mutations: &[Mutation]) -> Case {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join(format!("fuzzed-{name}"));
    std::fs::write(&path, mutate(bytes.clone(), mutations)).expect("write case");
    Case { _dir: dir, path }
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 0..6)
}

fn decode_checked(path: &Path, min_short_side: Option<u32>) -> agc::data::Result<Decoded> {
    let decoded = imageio::decode(path, min_short_side)?;
    let pixels = u64::from(decoded.image.width()) * u64::from(decoded.image.height());
    assert!(
        pixels <= MAX_PIXELS,
        "{}: {pixels} pixels decoded",
        path.display()
    );
    Ok(decoded)
}

/// The configuration every run writes, as the seed of the configuration reader.
fn config_seed() -> (String, Vec<u8>) {
    let config = PipelineConfig::cpu(PathBuf::from("data"));
    let json = serde_json::to_vec_pretty(&config).expect("config as JSON");
    ("config.json".into(), json)
}

/// A small image cache (`[3, 4, 4, 3]` uint8 and its index), as the seeds of the cache reader.
fn cache_seeds() -> Vec<(String, Vec<u8>)> {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("train.npy");
    let pixels: Vec<u8> = (0..3 * 4 * 4 * 3).map(|i| (i * 7 % 256) as u8).collect();
    npy::write_u8(&path, &[3, 4, 4, 3], &pixels).expect("write cache");
    let index = "image_name,width,height,crop_x,crop_y,crop_side,skipped\n\
                 ISIC_1,40,30,5,0,30,\nISIC_2,30,40,0,5,30,\nISIC_3,8,8,0,0,8,unreadable\n";
    vec![
        (
            "train.npy".into(),
            std::fs::read(&path).expect("read cache"),
        ),
        ("train.index.csv".into(), index.as_bytes().to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn image_decoders(pick: Index, m in mutations(), scaled: bool) {
        imageio::set_max_image_pixels(MAX_PIXELS);
        let seeds = corpus("image");
        let c = case(&seeds[pick.index(seeds.len())], &m);
        check(&c.path, |p| decode_checked(p, scaled.then_some(16)));
    }

    #[test]
    fn csv_readers(pick: Index, m in mutations()) {
        let seeds = corpus("csv");
        let c = case(&seeds[pick.index(seeds.len())], &m);
        check(&c.path, |p| read_metadata(p, Split::Train));
        check(&c.path, |p| read_metadata(p, Split::Test));
        check(&c.path, read_labels);
        // As predictions, against the labels of the train.csv seed.
        let dir = tempfile::tempdir().expect("temporary folder");
        let labels = dir.path().join("labels.csv");
        std::fs::write(&labels, &seeds.iter().find(|(n, _)| n == "train.csv")
            .expect("train.csv seed").1).expect("write labels");
        check(&c.path, |p| evaluate_file(p, &labels));
    }

    #[test]
    fn configuration_reader(m in mutations()) {
        let c = case(&config_seed(), &m);
        check(&c.path, |p| PipelineConfig::read(p).and_then(|config| {
            // A file that reads must also validate (or refuse) without a panic.
            config.validate().map(|()| config).map_err(|e| {
                agc::train::TrainError::Parse { path: p.to_path_buf(), message: e.to_string() }
            })
        }));
    }

    #[test]
    fn image_cache(pick: Index, m in mutations()) {
        // Both files of a cache, one of them mutated.
        let seeds = cache_seeds();
        let pick = pick.index(seeds.len());
        let dir = tempfile::tempdir().expect("temporary folder");
        for (i, (name, bytes)) in seeds.iter().enumerate() {
            let bytes = if i == pick { mutate(bytes.clone(), &m) } else { bytes.clone() };
            std::fs::write(dir.path().join(name), bytes).expect("write cache");
        }
        check(&dir.path().join(&seeds[pick].0), |_| {
            ImageCache::open(&dir.path().join("train.npy")).map(|cache| {
                // Every image of a cache that opens can be read.
                for i in 0..cache.len() {
                    let _ = cache.image(i);
                }
            })
        });
    }

    #[test]
    fn weight_loaders(pick: Index, m in mutations(), unused: bool) {
        let seeds = corpus("weights");
        let c = case(&seeds[pick.index(seeds.len())], &m);
        let device = agc::Device::flex();
        let mut model = ResNetConfig::new([1, 1, 1, 1])
            .with_width(2)
            .with_num_classes(Some(1))
            .init(&device);
        let options = LoadOptions { allow_unused: unused, ..LoadOptions::default() };
        check(&c.path, |p| model.load_torchvision(p, &options));
    }
}

/// The property can fail: an allocation above the budget is caught.
#[test]
#[should_panic(expected = "above the budget")]
fn an_allocation_above_the_budget_fails_the_case() {
    check(Path::new("any.jpg"), |_| {
        let v = vec![1u8; BUDGET + 1];
        Ok::<_, String>(v.len())
    });
}

/// The unmutated corpus parses where it should and is refused where it should: the fuzz
/// targets start from files that exercise the paths they mean to.
#[test]
fn the_seed_corpus_reaches_the_parsers() {
    imageio::set_max_image_pixels(MAX_PIXELS);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    for (name, readable) in [
        ("exif-rotated.jpg", true),
        ("progressive.jpg", true),
        ("cmyk.jpg", true),
        ("exif-rotated.png", true),
        ("grey-alpha.png", true),
        ("grey16.png", true),
        ("one-bit.png", true),
        ("palette-trns.png", true),
        ("rgb16-interlaced.png", true),
        ("rgba16.png", true),
        ("rgba8-interlaced.png", true),
        ("truncated.png", false),
        ("claims-huge.png", false),
        ("claims-huge.jpg", false),
        ("wrong-magic.jpg", false),
        ("empty.jpg", false),
    ] {
        let result = imageio::decode(&dir.join("image").join(name), None);
        assert_eq!(result.is_ok(), readable, "{name}: {:?}", result.err());
    }
    // EXIF orientation 6 turns the 40×24 photograph upright: 24×40.
    let rotated = imageio::decode(&dir.join("image/exif-rotated.jpg"), None).expect("decode");
    assert_eq!((rotated.image.width(), rotated.image.height()), (24, 40));
    // eXIf orientation 8 turns the stored 24×40 PNG: 40×24.
    let rotated = imageio::decode(&dir.join("image/exif-rotated.png"), None).expect("decode");
    assert_eq!((rotated.image.width(), rotated.image.height()), (40, 24));
    let huge = imageio::decode(&dir.join("image/claims-huge.png"), None).expect_err("a bomb");
    assert!(format!("{huge}").contains("20000×20000"), "{huge}");
    assert_eq!(
        read_metadata(&dir.join("csv/train.csv"), Split::Train)
            .expect("train")
            .len(),
        4
    );
    assert_eq!(
        read_metadata(&dir.join("csv/test.csv"), Split::Test)
            .expect("test")
            .len(),
        2
    );
    let device = agc::Device::flex();
    for name in ["w2.pth", "w2.safetensors"] {
        let mut model = ResNetConfig::new([1, 1, 1, 1])
            .with_width(2)
            .with_num_classes(Some(1))
            .init(&device);
        let report = model
            .load_torchvision(dir.join("weights").join(name), &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            report.applied > 0 && report.unused.is_empty(),
            "{name}: {report:?}"
        );
    }
}

/// agc decodes PNGs row by row into RGB (to bound its memory); every PNG of the corpus that the
/// `image` crate reads comes out as that crate's RGB, whatever its colour type, bit depth or
/// interlacing, and every one it refuses is refused.
#[test]
fn png_rows_give_the_image_crates_pixels() {
    imageio::set_max_image_pixels(MAX_PIXELS);
    let mut compared = 0;
    for (name, bytes) in corpus("image") {
        let png = Path::new(&name)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if !png || name.starts_with("claims-huge") {
            continue;
        }
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join(&name);
        std::fs::write(&path, &bytes).expect("write");
        let ours = imageio::decode(&path, None);
        match image::load_from_memory(&bytes) {
            Ok(theirs) => {
                let mut theirs = theirs;
                // The image crate leaves orientation to the caller; agc applies eXIf's.
                if name.starts_with("exif-") {
                    theirs = theirs.rotate270();
                }
                let ours = ours.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(ours.image, theirs.into_rgb8(), "{name}");
                compared += 1;
            }
            Err(_) => assert!(
                ours.is_err(),
                "{name}: the image crate refuses it, agc reads it"
            ),
        }
    }
    assert!(compared >= 8, "only {compared} PNGs compared");
}
