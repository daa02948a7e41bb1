//! Runs a ChipNet on an image, or on every image of a folder, and prints its 7×7 attention map,
//! the whole image's ResNet embedding (its first values), and the square crop box the map
//! gives, in the 224×224 input and in the original image.
//!
//!     cargo run --release --example chipnet_box -- [IMAGE|FOLDER] [--weights RESNET18.pth]
//!
//! Without IMAGE it draws a 1200×900 test image with a dark spot at a known place. The ChipNet
//! here is untrained (a torchvision ResNet-18 backbone if `--weights` is given, else random), so
//! its attention follows the chips' raw features rather than a learnt notion of "lesion": the
//! example shows the mechanics (tiling, attention, box, mapping to the original); `agc pipeline`
//! trains the model that makes the box meaningful.

use std::path::PathBuf;

use agc::core::{BoxConfig, CentreCrop, ChipNetConfig, LoadOptions, ResNetConfig, attention_boxes};
use anyhow::{Context, bail};
use burn::prelude::*;
use image::{RgbImage, imageops::FilterType};

const SIZE: usize = 224;
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

fn main() -> anyhow::Result<()> {
    let (image_path, weights) = parse_args()?;
    let device = Device::flex();
    let mut model = ChipNetConfig::new(ResNetConfig::resnet18()).init(&device);
    if let Some(path) = &weights {
        let report = model
            .backbone
            .load_torchvision(path, &LoadOptions::default())?;
        println!(
            "backbone: {} tensors from {}",
            report.applied,
            path.display()
        );
    } else {
        println!("backbone: ResNet-18, random weights (pass --weights for torchvision's)");
    }
    let files: Vec<PathBuf> = match &image_path {
        Some(dir) if dir.is_dir() => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .with_context(|| format!("{}: cannot list the folder", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| agc::data::data_dir::IMAGE_EXTENSIONS.contains(&e))
                })
                .collect();
            files.sort();
            files
        }
        Some(file) => vec![file.clone()],
        None => Vec::new(),
    };
    if files.is_empty() {
        if let Some(dir) = &image_path {
            bail!("{}: no JPEG or PNG images", dir.display());
        }
        return describe(&model, &test_image(), "built-in test image", &device);
    }
    for path in &files {
        // Decoded as agc's preprocessing decodes: EXIF orientation applied, as viewers show it.
        let original = agc::data::decode(path, None)
            .with_context(|| format!("{}: cannot read the image", path.display()))?
            .image;
        describe(&model, &original, &path.display().to_string(), &device)?;
    }
    Ok(())
}

/// Prints what `model` makes of one image: embedding, attention, box.
fn describe(
    model: &agc::core::ChipNet,
    original: &RgbImage,
    name: &str,
    device: &Device,
) -> anyhow::Result<()> {
    let (width, height) = (original.width() as usize, original.height() as usize);
    println!("\n== {name} ({width}×{height})");

    // Centre square crop → 224×224 → ImageNet normalisation.
    let crop = CentreCrop::centre_square(width, height);
    let square = image::imageops::crop_imm(
        original,
        crop.x as u32,
        crop.y as u32,
        crop.side as u32,
        crop.side as u32,
    )
    .to_image();
    let resized = image::imageops::resize(&square, SIZE as u32, SIZE as u32, FilterType::Triangle);
    let input = to_tensor(&resized, device);
    let embedding: Vec<f32> = model
        .backbone
        .embed(input.clone())
        .into_data()
        .convert::<f32>()
        .iter::<f32>()
        .collect();
    println!(
        "whole-image embedding ({} values): {:.4?} ...",
        embedding.len(),
        &embedding[..4]
    );
    let out = model.forward(input);
    let attention = out.attention;
    println!("\nattention over the 7×7 chips (sums to 1):");
    let values = attention
        .clone()
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    for row in values.chunks(7) {
        println!(
            "  {}",
            row.iter()
                .map(|v| format!("{v:.4}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }

    let found = attention_boxes(attention, [SIZE, SIZE], &BoxConfig::new())
        .pop()
        .context("one image gives one box")?;
    let b = found.square;
    println!("\nthreshold (mean + 1.5·std): {:.5}", found.threshold);
    match found.fallback {
        Some(why) => println!("fallback to the whole image: {}", why.as_str()),
        None => println!(
            "tight box in 224²: x {}..{}, y {}..{}",
            found.tight.map_or(0, |t| t.x0),
            found.tight.map_or(0, |t| t.x1),
            found.tight.map_or(0, |t| t.y0),
            found.tight.map_or(0, |t| t.y1)
        ),
    }
    println!(
        "attention box in 224²: x {}..{}, y {}..{} (side {})",
        b.x0,
        b.x1,
        b.y0,
        b.y1,
        b.width()
    );
    let o = crop.map_box(b, SIZE);
    println!(
        "attention box in the original: x {}..{}, y {}..{} (side {})",
        o.x0,
        o.x1,
        o.y0,
        o.y1,
        o.width()
    );
    println!("logit: {:.4}", out.logit.into_scalar::<f32>());
    Ok(())
}

fn parse_args() -> anyhow::Result<(Option<PathBuf>, Option<PathBuf>)> {
    let mut args = std::env::args().skip(1);
    let (mut image, mut weights) = (None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--weights" => weights = Some(args.next().context("--weights needs a file")?.into()),
            "-h" | "--help" => {
                println!("usage: chipnet_box [IMAGE|FOLDER] [--weights RESNET18.pth|.safetensors]");
                std::process::exit(0);
            }
            flag if flag.starts_with('-') => bail!("unknown flag {flag}"),
            path => image = Some(path.into()),
        }
    }
    Ok((image, weights))
}

/// A skin-toned 1200×900 image with a dark, irregular spot left of and above the centre.
fn test_image() -> RgbImage {
    RgbImage::from_fn(1200, 900, |x, y| {
        let (dx, dy) = (x as f32 - 480.0, y as f32 - 330.0);
        let r = (dx * dx + dy * dy).sqrt();
        let edge = 70.0 + 12.0 * (dy.atan2(dx) * 5.0).sin();
        if r < edge {
            image::Rgb([70, 40, 30])
        } else {
            let shade = 1.0 - 0.15 * ((x as f32 / 1200.0) - 0.5).abs();
            image::Rgb([
                (225.0 * shade) as u8,
                (180.0 * shade) as u8,
                (160.0 * shade) as u8,
            ])
        }
    })
}

/// An RGB image as a normalised `[1, 3, h, w]` tensor.
fn to_tensor(img: &RgbImage, device: &Device) -> Tensor<4> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = vec![0.0f32; 3 * h * w];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            data[c * h * w + y as usize * w + x as usize] =
                (f32::from(p[c]) / 255.0 - MEAN[c]) / STD[c];
        }
    }
    Tensor::from_data(TensorData::new(data, [1, 3, h, w]), device)
}
