//! Decoding images (with JPEG DCT scaling) and the centre-crop-and-resize of preprocessing.
//!
//! JPEGs much larger than the output are decoded at a reduced scale (1/2 or 1/4, chosen so the
//! shorter side stays at least `min_decode_factor × size`), as libjpeg's `scale_denom` and PIL's
//! `draft` do. Never at 1/8: jpeg-decoder's 1×1 IDCT truncates where libjpeg rounds, which
//! darkened red and blue by about 1 grey level on average (see [`MIN_DCT_SCALE`]). Then the
//! centre square is resized with a SIMD convolution resizer (bilinear with antialiasing, as PIL
//! and torchvision do). Other formats (PNG, greyscale, RGBA, 16-bit) go through the `image`
//! crate and are converted to 8-bit RGB.
//!
//! EXIF orientation is applied as image viewers apply it (all eight values, JPEG APP1 and PNG
//! `eXIf`), after any DCT scaling: every size, square and box, here and downstream, is in the
//! pixels of the image as a viewer shows it. A malformed EXIF block counts as orientation 1.

use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use fast_image_resize::images::{CroppedImage, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, RgbImage};

use agc_core::{CentreCrop, Rect};

use crate::error::{DataError, Result};

/// An image decoded to 8-bit RGB, possibly at a reduced scale, turned upright by its EXIF
/// orientation.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The pixels, upright, at a reduced scale of the original or at full size.
    pub image: RgbImage,
    /// Width of the original image as a viewer shows it (the stored height for EXIF
    /// orientations 5–8).
    pub width: u32,
    /// Height of the original image as a viewer shows it.
    pub height: u32,
}

/// The smallest DCT scale agc decodes at, as a denominator: 1/4.
///
/// At 1/8 jpeg-decoder 0.3 reduces each 8×8 block to one pixel as `(dc·q + 1024) / 8`, dropping
/// the remainder where libjpeg rounds (`(x + 4) >> 3`): every plane comes out about 0.44 low,
/// which the colour conversion turns into red and blue about 1.1 and 1.5 grey levels low after
/// the resize to 224 (measured against PIL on a generated 6000×4000 photograph; at 1/4 the mean
/// error is below 0.2). Decoding at 1/4 instead costs little: entropy decoding, the same at
/// every scale, dominates.
pub const MIN_DCT_SCALE: u32 = 4;

/// The default of [`max_image_pixels`]: 178 956 970 pixels, twice Pillow's warning threshold
/// and where Pillow refuses (`Image.MAX_IMAGE_PIXELS · 2`). A 100-megapixel medium-format camera
/// stays below it (11 648 × 8 736 = 101.8 MP); a decompression bomb that claims 20 000 × 20 000
/// (400 MP, 1.2 GB of RGB) or 65 535 × 65 535 does not.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 178_956_970;

static MAX_IMAGE_PIXELS: AtomicU64 = AtomicU64::new(DEFAULT_MAX_IMAGE_PIXELS);

/// The most pixels (width × height, as the file's header claims them) an image may have:
/// larger ones are refused before any pixel is allocated, as an unreadable image is (listed,
/// and skippable with `--skip-bad-images`). Process-wide, like Pillow's `MAX_IMAGE_PIXELS`.
pub fn max_image_pixels() -> u64 {
    MAX_IMAGE_PIXELS.load(Ordering::Relaxed)
}

/// Sets [`max_image_pixels`] for the whole process (`agc --max-image-pixels`); 0 restores the
/// default.
pub fn set_max_image_pixels(pixels: u64) {
    let pixels = if pixels == 0 {
        DEFAULT_MAX_IMAGE_PIXELS
    } else {
        pixels
    };
    MAX_IMAGE_PIXELS.store(pixels, Ordering::Relaxed);
}

/// An error unless a `width`×`height` image is within [`max_image_pixels`].
fn check_pixels(width: u32, height: u32) -> std::result::Result<(), String> {
    let pixels = u64::from(width) * u64::from(height);
    let limit = max_image_pixels();
    if pixels > limit {
        return Err(format!(
            "its header claims {width}×{height} = {pixels} pixels, above the limit of {limit} \
             (a decompression bomb, or a larger photograph than any camera takes: raise \
             --max-image-pixels if it is real)"
        ));
    }
    Ok(())
}

/// Decodes an image to 8-bit RGB, upright by its EXIF orientation. With `min_short_side`, a
/// JPEG is decoded at the smallest DCT scale (down to 1/[`MIN_DCT_SCALE`]) whose shorter side is
/// still at least that.
///
/// # Errors
/// A missing, truncated or corrupt file, a format the decoders do not know, or an image whose
/// header claims more than [`max_image_pixels`] (refused before its pixels are allocated); the
/// error names the file.
pub fn decode(path: &Path, min_short_side: Option<u32>) -> Result<Decoded> {
    decode_with(path, |_, _| min_short_side)
}

/// [`decode`], with the smallest shorter side computed from the original's width and height
/// as a viewer shows it (read from the JPEG header, so the file is read once).
///
/// # Errors
/// As [`decode`].
pub fn decode_with(
    path: &Path,
    min_short_side: impl Fn(u32, u32) -> Option<u32>,
) -> Result<Decoded> {
    let bad = |message: String| DataError::Image {
        path: path.to_path_buf(),
        message,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| BufReader::new(f).read_to_end(&mut bytes))
        .map_err(|e| bad(e.to_string()))?;
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF])
        && let Some(decoded) = decode_jpeg(&bytes, path, min_short_side).map_err(bad)?
    {
        return Ok(decoded);
    }
    if bytes.starts_with(PNG_SIGNATURE) {
        return decode_png(&bytes, path).map_err(bad);
    }
    let mut decoder = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?
        .into_decoder()
        .map_err(|e| bad(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height).map_err(bad)?;
    // What is left to the image crate (a CMYK JPEG) has its APP1 read by the crate; it takes
    // a malformed one as no transform, as agc's JPEG and PNG paths do.
    let orientation = decoder.orientation().unwrap_or_else(|e| {
        tracing::debug!("{}: unreadable EXIF ({e}), orientation 1", path.display());
        Orientation::NoTransforms
    });
    let image = DynamicImage::from_decoder(decoder).map_err(|e| bad(e.to_string()))?;
    Ok(upright(image, orientation))
}

/// `image` turned by `orientation`, as 8-bit RGB, with its size as a viewer shows it.
fn upright(mut image: DynamicImage, orientation: Orientation) -> Decoded {
    image.apply_orientation(orientation);
    let image = image.into_rgb8();
    let (width, height) = image.dimensions();
    Decoded {
        image,
        width,
        height,
    }
}

/// The first bytes of every PNG file.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Decodes a PNG row by row straight into 8-bit RGB, then turns it upright by its eXIf
/// orientation. The conversion is the `image` crate's (palettes, low bit depths and `tRNS`
/// expanded, 16-bit samples rounded as `(v + 128) / 257`, alpha dropped, grey repeated), but the
/// peak memory is the RGB image and one row whatever the colour type: through the `image` crate
/// an RGBA PNG at the pixel limit held its RGBA and RGB copies at once (1.2 GB).
fn decode_png(bytes: &[u8], path: &Path) -> std::result::Result<Decoded, String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let (width, height) = (reader.info().width, reader.info().height);
    if width == 0 || height == 0 {
        return Err(format!("empty image {width}×{height}"));
    }
    check_pixels(width, height)?;
    let orientation = reader
        .info()
        .exif_metadata
        .as_deref()
        .map_or(Ok(Orientation::NoTransforms), exif_orientation)
        .unwrap_or_else(|why| {
            tracing::debug!("{}: malformed eXIf ({why}), orientation 1", path.display());
            Orientation::NoTransforms
        });
    let (colour, depth) = reader.output_color_type();
    let channels = colour.samples();
    let wide = depth == png::BitDepth::Sixteen;
    if !matches!(depth, png::BitDepth::Eight | png::BitDepth::Sixteen) {
        return Err(format!("unexpected bit depth {depth:?} after expansion"));
    }
    let stride = width as usize * 3;
    let len = stride * height as usize;
    let mut rgb = Vec::new();
    rgb.try_reserve_exact(len)
        .map_err(|_| format!("its {len} bytes of RGB could not be allocated"))?;
    rgb.resize(len, 0);
    let bytes_per_sample = if wide { 2 } else { 1 };
    let sample = |s: &[u8]| {
        if wide {
            // The image crate's u16 → u8: (v + 128) / 257, rounded.
            ((u32::from(u16::from_be_bytes([s[0], s[1]])) + 128) / 257) as u8
        } else {
            s[0]
        }
    };
    let mut line = Vec::with_capacity(stride);
    let mut rows = 0;
    while let Some(row) = reader.next_interlaced_row().map_err(|e| e.to_string())? {
        line.clear();
        for pixel in row.data().chunks_exact(channels * bytes_per_sample) {
            let at = |c: usize| sample(&pixel[c * bytes_per_sample..]);
            if channels >= 3 {
                line.extend_from_slice(&[at(0), at(1), at(2)]);
            } else {
                let grey = at(0);
                line.extend_from_slice(&[grey, grey, grey]);
            }
        }
        match row.interlace() {
            png::InterlaceInfo::Adam7(info) => {
                png::expand_interlaced_row(&mut rgb, stride, &line, info, 24);
            }
            png::InterlaceInfo::Null(_) => {
                let start = rows * stride;
                let target = rgb
                    .get_mut(start..start + line.len())
                    .ok_or("more rows than its header claims")?;
                target.copy_from_slice(&line);
            }
        }
        rows += 1;
    }
    let image = RgbImage::from_raw(width, height, rgb).ok_or("a short pixel buffer")?;
    Ok(upright(DynamicImage::ImageRgb8(image), orientation))
}

/// Decodes a JPEG with DCT scaling, then turns it upright by its EXIF orientation; `Ok(None)`
/// for pixel formats left to the `image` crate (CMYK).
fn decode_jpeg(
    bytes: &[u8],
    path: &Path,
    min_short_side: impl Fn(u32, u32) -> Option<u32>,
) -> std::result::Result<Option<Decoded>, String> {
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info().map_err(|e| e.to_string())?;
    let orientation = decoder
        .exif_data()
        .map_or(Ok(Orientation::NoTransforms), exif_orientation)
        .unwrap_or_else(|why| {
            tracing::debug!("{}: malformed EXIF ({why}), orientation 1", path.display());
            Orientation::NoTransforms
        });
    let info = decoder.info().ok_or("no JPEG header")?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    if width == 0 || height == 0 {
        return Err(format!("empty image {width}×{height}"));
    }
    check_pixels(width, height)?;
    // The original as a viewer shows it.
    let (shown_width, shown_height) = if swaps_sides(orientation) {
        (height, width)
    } else {
        (width, height)
    };
    let mut full = true;
    if let Some(min) = min_short_side(shown_width, shown_height) {
        // The decoder picks the smallest scale reaching the request in at least one axis: ask
        // for the shorter side at `min` and the longer one in proportion, and for no less than
        // 1/MIN_DCT_SCALE of each side.
        let short = width.min(height);
        if short > min {
            let at_least = |len: u32| {
                (u64::from(len) * u64::from(min))
                    .div_ceil(u64::from(short))
                    .max(u64::from(len.div_ceil(MIN_DCT_SCALE)))
                    .min(65_535) as u16
            };
            let scaled = decoder
                .scale(at_least(width), at_least(height))
                .map_err(|e| e.to_string())?;
            full = scaled == (info.width, info.height);
        }
    }
    let zune = full.then(|| full_size(bytes, width, height, info.pixel_format));
    let pixels = match zune.flatten() {
        Some(pixels) => pixels,
        None => decoder.decode().map_err(|e| e.to_string())?,
    };
    let info = decoder.info().ok_or("no JPEG header")?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let rgb = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => pixels,
        jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        jpeg_decoder::PixelFormat::L16 => pixels
            .chunks_exact(2)
            .flat_map(|b| [b[0], b[0], b[0]])
            .collect(),
        jpeg_decoder::PixelFormat::CMYK32 => return Ok(None),
    };
    let image = RgbImage::from_raw(w, h, rgb).ok_or("decoded buffer has the wrong size")?;
    // Orientation after scaling: the same transform, on fewer pixels.
    let mut image = DynamicImage::ImageRgb8(image);
    image.apply_orientation(orientation);
    Ok(Some(Decoded {
        image: image.into_rgb8(),
        width: shown_width,
        height: shown_height,
    }))
}

/// A baseline or progressive 8-bit JPEG of `width`×`height` decoded at full size by zune-jpeg,
/// which does that 1.3–1.6 times as fast as jpeg-decoder (docs/performance.md) but cannot scale:
/// RGB bytes for a colour image, luma for a grey one; `None` for anything else or any error, which
/// jpeg-decoder then decodes (or reports) as before.
fn full_size(
    bytes: &[u8],
    width: u32,
    height: u32,
    format: jpeg_decoder::PixelFormat,
) -> Option<Vec<u8>> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let colorspace = match format {
        jpeg_decoder::PixelFormat::RGB24 => ColorSpace::RGB,
        jpeg_decoder::PixelFormat::L8 => ColorSpace::Luma,
        _ => return None,
    };
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(colorspace)
        .set_max_width(width as usize)
        .set_max_height(height as usize)
        .set_strict_mode(true);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let pixels = decoder.decode().ok()?;
    let channels = colorspace.num_components();
    (pixels.len() == width as usize * height as usize * channels).then_some(pixels)
}

/// Whether an orientation turns the image a quarter (width and height trade places).
fn swaps_sides(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// The EXIF tag of the orientation.
const ORIENTATION_TAG: u16 = 0x0112;

/// The orientation (tag 0x0112 of IFD0) of a TIFF-structured EXIF block, what follows
/// `Exif\0\0` in a JPEG's APP1 segment; no tag is orientation 1. Both byte orders; every read
/// is bounds-checked.
///
/// # Errors
/// Why the block is malformed (no TIFF header, an offset outside the block, a tag that is not
/// one SHORT, a value outside 1–8); the caller takes that as orientation 1.
fn exif_orientation(tiff: &[u8]) -> std::result::Result<Orientation, String> {
    let big_endian = match tiff.get(..4) {
        Some(b"II*\0") => false,
        Some(b"MM\0*") => true,
        _ => return Err("no TIFF header".into()),
    };
    let bytes = |at: usize, n: usize| tiff.get(at..at.checked_add(n)?);
    let u16_at = |at: usize| {
        bytes(at, 2).map(|b| {
            let b = [b[0], b[1]];
            if big_endian {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }
        })
    };
    let u32_at = |at: usize| {
        bytes(at, 4).map(|b| {
            let b = [b[0], b[1], b[2], b[3]];
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        })
    };
    let outside = |what: &str| format!("{what} outside the {}-byte block", tiff.len());
    let ifd = u32_at(4).ok_or_else(|| outside("IFD0 offset"))?;
    let ifd = usize::try_from(ifd).map_err(|_| outside("IFD0"))?;
    let entries = u16_at(ifd).ok_or_else(|| outside("IFD0"))?;
    for i in 0..usize::from(entries) {
        let entry = ifd + 2 + 12 * i;
        let tag = u16_at(entry).ok_or_else(|| outside("an IFD0 entry"))?;
        if tag != ORIENTATION_TAG {
            continue;
        }
        let (kind, count) = (u16_at(entry + 2), u32_at(entry + 4));
        if (kind, count) != (Some(3), Some(1)) {
            return Err(format!(
                "orientation of type {kind:?} and count {count:?}, not one SHORT"
            ));
        }
        let value = u16_at(entry + 8).ok_or_else(|| outside("the orientation value"))?;
        return u8::try_from(value)
            .ok()
            .and_then(Orientation::from_exif)
            .ok_or_else(|| format!("orientation {value} is not 1–8"));
    }
    Ok(Orientation::NoTransforms)
}

/// Cuts the square `crop` (in pixels of the original as a viewer shows it, after EXIF
/// orientation) out of a decoded image and resizes it to `out`×`out` with bilinear
/// antialiasing, reading no pixel outside the square (as a crop followed by a resize does in PIL
/// and torchvision). The decoded image may be at a reduced scale; the square is scaled with it
/// and rounded to whole pixels there.
///
/// # Errors
/// If the square is empty or leaves the image.
pub fn crop_resize(decoded: &Decoded, crop: &CentreCrop, out: u32) -> Result<Vec<u8>> {
    let (w, h) = decoded.image.dimensions();
    let [x, y, side] = [crop.x, crop.y, crop.side].map(|v| u32::try_from(v).unwrap_or(u32::MAX));
    let invalid = |message: String| DataError::Invalid {
        name: "crop",
        message,
    };
    if side == 0
        || u64::from(x) + u64::from(side) > u64::from(decoded.width)
        || u64::from(y) + u64::from(side) > u64::from(decoded.height)
    {
        return Err(invalid(format!(
            "square x {x}, y {y}, side {side} is not inside the {}×{} image",
            decoded.width, decoded.height
        )));
    }
    // Scale the square into the decoded image's pixels.
    let scale = |v: u32, decoded_len: u32, original: u32| {
        (u64::from(v) * u64::from(decoded_len) + u64::from(original) / 2) / u64::from(original)
    };
    let (left, top) = (
        scale(x, w, decoded.width) as u32,
        scale(y, h, decoded.height) as u32,
    );
    let right = (scale(x + side, w, decoded.width) as u32).clamp(left + 1, w);
    let bottom = (scale(y + side, h, decoded.height) as u32).clamp(top + 1, h);
    let src = ImageRef::new(w, h, decoded.image.as_raw(), PixelType::U8x3)
        .map_err(|e| invalid(e.to_string()))?;
    let square = CroppedImage::new(&src, left, top, right - left, bottom - top)
        .map_err(|e| invalid(e.to_string()))?;
    let mut dst = Image::new(out, out, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new()
        .resize(&square, &mut dst, &options)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(dst.into_vec())
}

/// The centre square of a decoded image (in the original's upright pixels).
pub fn centre_of(decoded: &Decoded) -> CentreCrop {
    CentreCrop::centre_square(decoded.width as usize, decoded.height as usize)
}

/// The square `square` of a decoded image, or its centre square when `None`.
///
/// # Panics
/// If `square` is not a square.
pub fn square_in(decoded: &Decoded, square: Option<Rect>) -> CentreCrop {
    match square {
        None => centre_of(decoded),
        Some(square) => {
            CentreCrop::of_square(decoded.width as usize, decoded.height as usize, square)
        }
    }
}

/// Preprocesses one image: decode (DCT-scaled for large JPEGs), centre square crop, resize to
/// `size`. Returns the `size·size·3` RGB bytes and where the square lies in the original
/// (agc-core's [`CentreCrop`], placed as torchvision's `center_crop` places it).
///
/// # Errors
/// As [`decode`].
pub fn preprocess_image(
    path: &Path,
    size: u32,
    min_decode_factor: f64,
) -> Result<(Vec<u8>, CentreCrop)> {
    let min_side = (f64::from(size) * min_decode_factor).ceil() as u32;
    let decoded = decode(path, (min_decode_factor > 0.0).then_some(min_side))?;
    let crop = centre_of(&decoded);
    let pixels = crop_resize(&decoded, &crop, size)?;
    Ok((pixels, crop))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-32 (ISO 3309, as PNG and zlib use it) of a PNG chunk's type and data.
    fn png_crc(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A valid 8×8 image of `format` whose header then claims `width`×`height`.
    fn claiming(format: image::ImageFormat, width: u32, height: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        RgbImage::new(8, 8)
            .write_to(&mut std::io::Cursor::new(&mut bytes), format)
            .expect("encodes");
        if format == image::ImageFormat::Png {
            // IHDR follows the 8-byte signature: length, "IHDR", width, height, …, CRC.
            bytes[16..20].copy_from_slice(&width.to_be_bytes());
            bytes[20..24].copy_from_slice(&height.to_be_bytes());
            let crc = png_crc(&bytes[12..29]);
            bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        } else {
            // Baseline SOF0: FF C0, length, precision, height, width (16 bits each).
            let sof = bytes
                .windows(2)
                .position(|w| w == [0xFF, 0xC0])
                .expect("SOF0");
            let (w, h) = (
                u16::try_from(width).expect("u16"),
                u16::try_from(height).expect("u16"),
            );
            bytes[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
            bytes[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
        }
        bytes
    }

    #[test]
    fn an_image_claiming_more_pixels_than_the_limit_is_refused_from_its_header() {
        let dir = tempfile::tempdir().expect("tmp");
        for (format, name, [w, h]) in [
            (image::ImageFormat::Png, "bomb.png", [20_000, 20_000]),
            (image::ImageFormat::Jpeg, "bomb.jpg", [65_535, 65_535]),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, claiming(format, w, h)).expect("write");
            for min_side in [None, Some(224)] {
                let err = decode(&path, min_side)
                    .expect_err("over the limit")
                    .to_string();
                assert!(
                    err.contains(name)
                        && err.contains(&format!("{w}×{h}"))
                        && err.contains("--max-image-pixels"),
                    "{err}"
                );
            }
            // Under the limit the same header is an ordinary (here truncated) image.
            std::fs::write(&path, claiming(format, 9, 9)).expect("write");
            let err = decode(&path, None).map(|_| ()).map_err(|e| e.to_string());
            assert!(
                err.as_ref()
                    .err()
                    .is_none_or(|e| !e.contains("--max-image-pixels")),
                "{err:?}"
            );
        }
        assert!(check_pixels(13_000, 13_000).is_ok());
        assert!(check_pixels(14_000, 13_000).is_err());
    }

    fn gradient(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([
                (x * 255 / width) as u8,
                (y * 255 / height) as u8,
                ((x + y) % 256) as u8,
            ])
        })
    }

    #[test]
    fn large_jpeg_is_decoded_at_a_reduced_scale_with_original_geometry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.jpg");
        gradient(2400, 1600).save(&path).expect("save jpeg");
        let d = decode(&path, Some(448)).expect("decodes");
        assert_eq!((d.width, d.height), (2400, 1600));
        // 1/2 gives 800 ≥ 448, 1/4 would give 400 < 448.
        assert_eq!(d.image.dimensions(), (1200, 800));
        let full = decode(&path, None).expect("decodes");
        assert_eq!(full.image.dimensions(), (2400, 1600));
    }

    /// A skin-like photograph: smooth shading, a darker blob, and fine texture from a hash.
    fn photograph(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            let (u, v) = (
                f64::from(x) / f64::from(width),
                f64::from(y) / f64::from(height),
            );
            let shade = 0.8 + 0.2 * (3.0 * u + 1.0).cos() * (2.0 * v).cos();
            let blob = (-((u - 0.5).powi(2) + (v - 0.45).powi(2)) * 30.0).exp();
            let hash = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663)) % 1000;
            let texture = f64::from(hash) / 1000.0 * 12.0 - 6.0 + 8.0 * (f64::from(x) / 9.0).sin();
            let base = [224.0, 172.0, 150.0];
            let dark = [95.0, 60.0, 45.0];
            image::Rgb(std::array::from_fn(|c| {
                (base[c] * shade * (1.0 - blob) + dark[c] * blob + texture).clamp(0.0, 255.0) as u8
            }))
        })
    }

    #[test]
    fn a_very_large_jpeg_is_decoded_at_one_quarter_without_a_colour_bias() {
        // Short side 3 600 ≥ 8 × 448: without the cap this decodes at 1/8, whose truncating
        // 1×1 IDCT darkened red and blue by over a grey level on average.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("huge.jpg");
        let file = std::fs::File::create(&path).expect("create");
        image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 90)
            .encode_image(&photograph(3600, 3600))
            .expect("encode");
        let d = decode(&path, Some(448)).expect("decodes");
        assert_eq!(d.image.dimensions(), (900, 900), "1/4, not 1/8");

        // Reference: the same crop and resize from a full-scale decode.
        let (scaled, _) = preprocess_image(&path, 224, 2.0).expect("scaled");
        let (full, _) = preprocess_image(&path, 224, 0.0).expect("full");
        let pixels = f64::from(224 * 224);
        for c in 0..3 {
            let (mut abs, mut signed) = (0.0, 0.0);
            for (a, b) in scaled.chunks_exact(3).zip(full.chunks_exact(3)) {
                let d = f64::from(a[c]) - f64::from(b[c]);
                abs += d.abs();
                signed += d;
            }
            let (abs, signed) = (abs / pixels, signed / pixels);
            eprintln!("channel {c}: mean abs {abs:.3}, mean signed {signed:+.3}");
            assert!(
                abs <= 0.5 && signed.abs() <= 0.25,
                "channel {c}: mean abs {abs:.3}, mean signed {signed:+.3} grey levels"
            );
        }
    }

    /// A TIFF block whose IFD0 holds an unrelated tag and then the orientation.
    fn exif_block(orientation: u16, big_endian: bool) -> Vec<u8> {
        let u16b = |v: u16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let u32b = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut tiff = if big_endian {
            b"MM\0*".to_vec()
        } else {
            b"II*\0".to_vec()
        };
        tiff.extend(u32b(8));
        tiff.extend(u16b(2));
        // ImageWidth (0x0100), LONG, 1, 640; then Orientation (0x0112), SHORT, 1, value.
        for (tag, kind, value) in [
            (0x0100, 4, u32b(640)),
            (0x0112, 3, {
                let mut v = [0; 4];
                v[..2].copy_from_slice(&u16b(orientation));
                v
            }),
        ] {
            tiff.extend(u16b(tag));
            tiff.extend(u16b(kind));
            tiff.extend(u32b(1));
            tiff.extend(value);
        }
        tiff.extend(u32b(0));
        tiff
    }

    /// A JPEG with an APP1 `Exif` segment holding `tiff` spliced in right after SOI.
    fn with_app1(jpeg: &[u8], tiff: &[u8]) -> Vec<u8> {
        let mut payload = b"Exif\0\0".to_vec();
        payload.extend(tiff);
        let length = u16::try_from(payload.len() + 2).expect("small segment");
        let mut out = jpeg[..2].to_vec();
        out.extend([0xFF, 0xE1]);
        out.extend(length.to_be_bytes());
        out.extend(payload);
        out.extend(&jpeg[2..]);
        out
    }

    /// What a viewer shows for `stored` pixels tagged with EXIF `orientation`, written out pixel
    /// by pixel from the EXIF definitions (independent of the `image` crate's transforms).
    fn as_shown(stored: &RgbImage, orientation: u16) -> RgbImage {
        let (w, h) = stored.dimensions();
        let at = |x: u32, y: u32| *stored.get_pixel(x, y);
        match orientation {
            1 => stored.clone(),
            2 => RgbImage::from_fn(w, h, |x, y| at(w - 1 - x, y)),
            3 => RgbImage::from_fn(w, h, |x, y| at(w - 1 - x, h - 1 - y)),
            4 => RgbImage::from_fn(w, h, |x, y| at(x, h - 1 - y)),
            // Transpose; rotate 90° clockwise; transverse; rotate 90° anticlockwise.
            5 => RgbImage::from_fn(h, w, |x, y| at(y, x)),
            6 => RgbImage::from_fn(h, w, |x, y| at(y, h - 1 - x)),
            7 => RgbImage::from_fn(h, w, |x, y| at(w - 1 - y, h - 1 - x)),
            8 => RgbImage::from_fn(h, w, |x, y| at(w - 1 - y, x)),
            _ => unreachable!("eight orientations"),
        }
    }

    fn jpeg_bytes(image: &RgbImage) -> Vec<u8> {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .encode_image(image)
            .expect("encode");
        jpeg
    }

    #[test]
    fn full_size_jpegs_are_decoded_by_zune_jpeg_as_jpeg_decoder_would() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jpeg = jpeg_bytes(&photograph(320, 240));
        let path = dir.path().join("p.jpg");
        std::fs::write(&path, &jpeg).expect("write");
        let decoded = decode(&path, None).expect("full size");
        let zune = full_size(&jpeg, 320, 240, jpeg_decoder::PixelFormat::RGB24).expect("zune");
        assert_eq!(
            decoded.image.as_raw(),
            &zune,
            "the full-size path is zune-jpeg's"
        );
        let reference = jpeg_decoder::Decoder::new(&jpeg[..])
            .decode()
            .expect("jpeg-decoder");
        let diffs: Vec<u8> = zune
            .iter()
            .zip(&reference)
            .map(|(a, b)| a.abs_diff(*b))
            .collect();
        let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
        let max = diffs.iter().copied().max().unwrap_or(0);
        assert!(mean <= 0.5 && max <= 4, "mean {mean:.3}, max {max}");
    }

    #[test]
    fn every_exif_orientation_decodes_as_a_viewer_shows_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jpeg = jpeg_bytes(&photograph(80, 48));
        let upright_path = dir.path().join("upright.jpg");
        std::fs::write(&upright_path, &jpeg).expect("write");
        let stored = decode(&upright_path, None).expect("decodes").image;
        // 1/4 scale: 20×12 stored pixels.
        let stored_small = decode(&upright_path, Some(12)).expect("decodes").image;
        assert_eq!(stored_small.dimensions(), (20, 12));
        for orientation in 1..=8 {
            for big_endian in [false, true] {
                let path = dir.path().join(format!("o{orientation}{big_endian}.jpg"));
                std::fs::write(
                    &path,
                    with_app1(&jpeg, &exif_block(orientation, big_endian)),
                )
                .expect("write");
                let what = format!("orientation {orientation}, big endian {big_endian}");
                let full = decode(&path, None).expect("decodes");
                let shown = as_shown(&stored, orientation);
                assert_eq!(full.image, shown, "{what}");
                assert_eq!((full.width, full.height), shown.dimensions(), "{what}");

                // DCT-scaled: oriented after scaling, the original's size as shown.
                let small = decode(&path, Some(12)).expect("decodes");
                assert_eq!(small.image, as_shown(&stored_small, orientation), "{what}");
                assert_eq!((small.width, small.height), shown.dimensions(), "{what}");
            }
        }
    }

    #[test]
    fn squares_and_centre_crops_are_in_the_pixels_a_viewer_shows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jpeg = jpeg_bytes(&photograph(80, 48));
        let path = dir.path().join("turned.jpg");
        std::fs::write(&path, with_app1(&jpeg, &exif_block(6, false))).expect("write");
        let upright = dir.path().join("upright.jpg");
        std::fs::write(&upright, &jpeg).expect("write");

        let turned = decode(&path, Some(12)).expect("decodes");
        assert_eq!((turned.width, turned.height), (48, 80));
        // The bottom square of the portrait a viewer shows; outside the stored landscape.
        let bottom = CentreCrop::of_square(48, 80, Rect::square(0, 32, 48));
        let ours = crop_resize(&turned, &bottom, 16).expect("inside the shown image");
        let reference = Decoded {
            image: as_shown(&decode(&upright, Some(12)).expect("decodes").image, 6),
            width: 48,
            height: 80,
        };
        assert_eq!(ours, crop_resize(&reference, &bottom, 16).expect("crop"));
        let (_, crop) = preprocess_image(&path, 16, 2.0).expect("preprocess");
        assert_eq!(crop, CentreCrop::centre_square(48, 80));
    }

    #[test]
    fn a_garbage_exif_segment_is_orientation_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jpeg = jpeg_bytes(&photograph(40, 24));
        let upright_path = dir.path().join("upright.jpg");
        std::fs::write(&upright_path, &jpeg).expect("write");
        let upright = decode(&upright_path, None).expect("decodes");
        let mut bad_offset = exif_block(6, false);
        bad_offset[4..8].copy_from_slice(&1000u32.to_le_bytes());
        let mut bad_value = exif_block(6, true);
        bad_value[30..32].copy_from_slice(&9u16.to_be_bytes());
        let mut truncated = exif_block(6, false);
        truncated.truncate(24);
        assert!(
            exif_orientation(&bad_value).is_err_and(|e| e.contains("orientation 9")),
            "the value, not the layout, is what is wrong"
        );
        for (name, tiff) in [
            ("garbage", b"this is no TIFF header at all".to_vec()),
            ("empty", Vec::new()),
            ("offset", bad_offset),
            ("value", bad_value),
            ("truncated", truncated),
        ] {
            assert!(exif_orientation(&tiff).is_err(), "{name}");
            let path = dir.path().join(format!("{name}.jpg"));
            std::fs::write(&path, with_app1(&jpeg, &tiff)).expect("write");
            let decoded = decode(&path, None).expect("decodes");
            assert_eq!(decoded.image, upright.image, "{name}");
            assert_eq!((decoded.width, decoded.height), (40, 24), "{name}");
        }
    }

    #[test]
    fn a_png_exif_chunk_is_applied_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stored = photograph(30, 20);
        let mut png = Vec::new();
        stored
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .expect("encode");
        // eXIf right after IHDR (8-byte signature + 25-byte IHDR chunk).
        let tiff = exif_block(8, true);
        let mut chunk = u32::try_from(tiff.len())
            .expect("small")
            .to_be_bytes()
            .to_vec();
        let mut typed = b"eXIf".to_vec();
        typed.extend(&tiff);
        chunk.extend(&typed);
        chunk.extend(png_crc(&typed).to_be_bytes());
        let spliced: Vec<u8> = [&png[..33], &chunk, &png[33..]].concat();
        let path = dir.path().join("turned.png");
        std::fs::write(&path, spliced).expect("write");
        let decoded = decode(&path, None).expect("decodes");
        assert_eq!(decoded.image, as_shown(&stored, 8));
        assert_eq!((decoded.width, decoded.height), (20, 30));
    }

    proptest::proptest! {
        #[test]
        fn exif_parsing_never_panics(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            header in 0usize..3,
        ) {
            let mut tiff = [b"II*\0".to_vec(), b"MM\0*".to_vec(), Vec::new()][header].clone();
            tiff.extend(body);
            let _ = exif_orientation(&tiff);
        }
    }

    #[test]
    fn greyscale_rgba_and_16_bit_pngs_become_rgb() {
        let dir = tempfile::tempdir().expect("tempdir");
        let grey = dir.path().join("grey.png");
        image::GrayImage::from_pixel(40, 30, image::Luma([100]))
            .save(&grey)
            .expect("save");
        let rgba = dir.path().join("rgba.png");
        image::RgbaImage::from_pixel(40, 30, image::Rgba([10, 20, 30, 0]))
            .save(&rgba)
            .expect("save");
        let deep = dir.path().join("deep.png");
        image::ImageBuffer::<image::Rgb<u16>, _>::from_pixel(
            40,
            30,
            image::Rgb([65535u16, 0, 32896]),
        )
        .save(&deep)
        .expect("save");
        assert_eq!(
            decode(&grey, None).expect("grey").image.get_pixel(3, 3).0,
            [100, 100, 100]
        );
        assert_eq!(
            decode(&rgba, None).expect("rgba").image.get_pixel(3, 3).0,
            [10, 20, 30]
        );
        assert_eq!(
            decode(&deep, None).expect("16-bit").image.get_pixel(3, 3).0,
            [255, 0, 128]
        );
        let grey_jpg = dir.path().join("grey.jpg");
        image::GrayImage::from_pixel(64, 48, image::Luma([90]))
            .save(&grey_jpg)
            .expect("save");
        let px = decode(&grey_jpg, Some(16))
            .expect("grey jpeg")
            .image
            .get_pixel(2, 2)
            .0;
        assert!(
            px[0] == px[1] && px[1] == px[2] && px[0].abs_diff(90) <= 2,
            "{px:?}"
        );
    }

    #[test]
    fn corrupt_truncated_and_missing_images_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good.jpg");
        gradient(300, 200).save(&good).expect("save");
        let bytes = std::fs::read(&good).expect("read");
        let truncated = dir.path().join("truncated.jpg");
        std::fs::write(&truncated, &bytes[..bytes.len() / 3]).expect("write");
        let garbage = dir.path().join("garbage.jpg");
        std::fs::write(&garbage, b"this is not an image").expect("write");
        for path in [truncated, garbage, dir.path().join("missing.jpg")] {
            let err = decode(&path, None).expect_err("must fail").to_string();
            let name = path.file_name().and_then(|n| n.to_str()).expect("name");
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn centre_crop_resize_keeps_the_centre_square_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Left and right thirds red, centre square blue: the output is all blue.
        let path = dir.path().join("wide.png");
        RgbImage::from_fn(900, 300, |x, _| {
            if (300..600).contains(&x) {
                image::Rgb([0, 0, 255])
            } else {
                image::Rgb([255, 0, 0])
            }
        })
        .save(&path)
        .expect("save");
        let (pixels, crop) = preprocess_image(&path, 64, 2.0).expect("preprocess");
        assert_eq!((crop.x, crop.y, crop.side), (300, 0, 300));
        assert_eq!(pixels.len(), 64 * 64 * 3);
        assert!(
            pixels.chunks_exact(3).all(|p| p == [0, 0, 255]),
            "red leaked in"
        );
    }

    #[test]
    fn image_smaller_than_the_output_is_upsampled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("small.png");
        gradient(50, 40).save(&path).expect("save");
        let (pixels, crop) = preprocess_image(&path, 224, 2.0).expect("preprocess");
        assert_eq!(crop.side, 40);
        assert_eq!(pixels.len(), 224 * 224 * 3);
    }
}
