//! Decoding images (with JPEG DCT scaling) and the centre-crop-and-resize of preprocessing.
//!
//! JPEGs much larger than the output are decoded at a reduced scale (1/2 or 1/4, chosen so the
//! shorter side stays at least `min_decode_factor × size`), as libjpeg's `scale_denom` and PIL's
//! `draft` do. Never at 1/8: jpeg-decoder's 1×1 IDCT truncates where libjpeg rounds, which
//! darkened red and blue by about 1 grey level on average (see [`MIN_DCT_SCALE`]). Then the
//! centre square is resized with a SIMD convolution resizer (bilinear with antialiasing, as PIL
//! and torchvision do). Other formats (PNG, greyscale, RGBA, 16-bit) go through the `image`
//! crate and are converted to 8-bit RGB.

use std::io::{BufReader, Read};
use std::path::Path;

use fast_image_resize::images::{CroppedImage, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

use crate::error::{DataError, Result};

/// Where the square that preprocessing resized came from in the original image.
///
/// The same rule as `agc_core::CentreCrop::centre_square` (agc-data knows no model, so the
/// training crate converts between the two): side = the shorter side, offset = half the
/// difference rounded half to even, as torchvision's `center_crop` computes it
/// (`int(round((w - side) / 2.0))`, Python's `round`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CropGeometry {
    /// Width of the original image.
    pub width: u32,
    /// Height of the original image.
    pub height: u32,
    /// Left edge of the square.
    pub x: u32,
    /// Top edge of the square.
    pub y: u32,
    /// Side of the square.
    pub side: u32,
}

impl CropGeometry {
    /// The centre square of a `width`×`height` image.
    pub fn centre_square(width: u32, height: u32) -> Self {
        let side = width.min(height);
        Self {
            width,
            height,
            x: centred_offset(width - side),
            y: centred_offset(height - side),
            side,
        }
    }
}

/// `spare / 2` rounded half to even, as Python's `round(spare / 2.0)` in torchvision's
/// `center_crop`: an odd spare ending in 3 (mod 4) rounds up, one ending in 1 rounds down.
fn centred_offset(spare: u32) -> u32 {
    spare / 2 + u32::from(spare % 4 == 3)
}

/// An image decoded to 8-bit RGB, possibly at a reduced scale.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The pixels, at `scale` of the original size.
    pub image: RgbImage,
    /// Width of the original image.
    pub width: u32,
    /// Height of the original image.
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

/// Decodes an image to 8-bit RGB. With `min_short_side`, a JPEG is decoded at the smallest DCT
/// scale (down to 1/[`MIN_DCT_SCALE`]) whose shorter side is still at least that.
///
/// # Errors
/// A missing, truncated or corrupt file, or a format the decoders do not know; the error names
/// the file.
pub fn decode(path: &Path, min_short_side: Option<u32>) -> Result<Decoded> {
    decode_with(path, |_, _| min_short_side)
}

/// [`decode`], with the smallest shorter side computed from the original's width and height
/// (read from the JPEG header, so the file is read once).
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
        && let Some(decoded) = decode_jpeg(&bytes, min_short_side).map_err(bad)?
    {
        return Ok(decoded);
    }
    let image = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?
        .decode()
        .map_err(|e| bad(e.to_string()))?;
    let image = image.to_rgb8();
    let (width, height) = image.dimensions();
    Ok(Decoded {
        image,
        width,
        height,
    })
}

/// Decodes a JPEG with DCT scaling; `Ok(None)` for pixel formats left to the `image` crate
/// (CMYK).
fn decode_jpeg(
    bytes: &[u8],
    min_short_side: impl Fn(u32, u32) -> Option<u32>,
) -> std::result::Result<Option<Decoded>, String> {
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info().map_err(|e| e.to_string())?;
    let info = decoder.info().ok_or("no JPEG header")?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    if width == 0 || height == 0 {
        return Err(format!("empty image {width}×{height}"));
    }
    if let Some(min) = min_short_side(width, height) {
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
            decoder
                .scale(at_least(width), at_least(height))
                .map_err(|e| e.to_string())?;
        }
    }
    let pixels = decoder.decode().map_err(|e| e.to_string())?;
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
    Ok(Some(Decoded {
        image,
        width,
        height,
    }))
}

/// Cuts the square `[x, y, side]` (in original coordinates) out of a decoded image and resizes
/// it to `out`×`out` with bilinear antialiasing, reading no pixel outside the square (as a
/// crop followed by a resize does in PIL and torchvision). The decoded image may be at a reduced
/// scale; the square is scaled with it and rounded to whole pixels there.
///
/// # Errors
/// If the square is empty or leaves the image.
pub fn crop_resize(decoded: &Decoded, [x, y, side]: [u32; 3], out: u32) -> Result<Vec<u8>> {
    let (w, h) = decoded.image.dimensions();
    let invalid = |message: String| DataError::Invalid {
        name: "crop",
        message,
    };
    if side == 0 || x + side > decoded.width || y + side > decoded.height {
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

/// Preprocesses one image: decode (DCT-scaled for large JPEGs), centre square crop, resize to
/// `size`. Returns the `size·size·3` RGB bytes and the crop geometry in the original.
///
/// # Errors
/// As [`decode`].
pub fn preprocess_image(
    path: &Path,
    size: u32,
    min_decode_factor: f64,
) -> Result<(Vec<u8>, CropGeometry)> {
    let min_side = (f64::from(size) * min_decode_factor).ceil() as u32;
    let decoded = decode(path, (min_decode_factor > 0.0).then_some(min_side))?;
    let crop = CropGeometry::centre_square(decoded.width, decoded.height);
    let pixels = crop_resize(&decoded, [crop.x, crop.y, crop.side], size)?;
    Ok((pixels, crop))
}

#[cfg(test)]
mod tests {
    use super::*;

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
