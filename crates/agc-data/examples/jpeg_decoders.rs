//! Times the JPEG decoders agc can use on the same files, one thread, for
//! `scripts/bench_jpeg_decoders.py` (docs/performance.md): jpeg-decoder at full size and with
//! DCT scaling to 1/2 and 1/4, and zune-jpeg at full size (it cannot scale). Prints one line per
//! decoder, `DECODER ms_per_image=…`, the best of three passes over the files.
//!
//! ```sh
//! cargo run --release -p agc-data --example jpeg_decoders -- a.jpg b.jpg ...
//! ```

use std::time::Instant;

use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

fn jpeg_decoder(bytes: &[u8], denominator: u16) -> anyhow::Result<usize> {
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info()?;
    let info = decoder.info().ok_or_else(|| anyhow::anyhow!("no header"))?;
    if denominator > 1 {
        decoder.scale(info.width / denominator, info.height / denominator)?;
    }
    Ok(decoder.decode()?.len())
}

fn zune(bytes: &[u8]) -> anyhow::Result<usize> {
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    Ok(decoder.decode()?.len())
}

/// One decoder: bytes in, the length of its output.
type Decode = fn(&[u8]) -> anyhow::Result<usize>;

fn main() -> anyhow::Result<()> {
    let files: Vec<Vec<u8>> = std::env::args()
        .skip(1)
        .map(std::fs::read)
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(!files.is_empty(), "give JPEG files to decode");
    let decoders: [(&str, Decode); 4] = [
        ("jpeg-decoder-full", |b| jpeg_decoder(b, 1)),
        ("jpeg-decoder-1/2", |b| jpeg_decoder(b, 2)),
        ("jpeg-decoder-1/4", |b| jpeg_decoder(b, 4)),
        ("zune-jpeg-full", zune),
    ];
    for (name, decode) in decoders {
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let started = Instant::now();
            for bytes in &files {
                std::hint::black_box(decode(bytes)?);
            }
            best = best.min(started.elapsed().as_secs_f64() * 1e3 / files.len() as f64);
        }
        println!("{name} ms_per_image={best:.1}");
    }
    Ok(())
}
