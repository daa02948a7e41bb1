//! `agc boxes`: the library's boxes at other thresholds ([`Run::box_thresholds`]), printed as
//! a Markdown table.

use agc::train::report::{Table, fmt_auc};
use agc::train::run::Run;
use anyhow::Result;

use crate::cli::{BoxesArgs, SplitArg};

/// Prints each threshold's median IoU and share of fallbacks over the images of `--split`.
pub(crate) fn print(a: &BoxesArgs) -> Result<()> {
    let run = Run::open(&a.run, &agc::data::progress::silent())?;
    let own = run.config.boxes.k;
    let sweep = run.box_thresholds(&a.k, a.split.into())?;
    let images = match a.split {
        SplitArg::Train => "training",
        SplitArg::Test => "test",
        SplitArg::All => "training and test",
    };
    let rows = sweep
        .iter()
        .map(|t| {
            let k = if (t.k - own).abs() < 1e-12 {
                format!("{} (the run's)", t.k)
            } else {
                t.k.to_string()
            };
            let fallbacks = format!("{:.1} %", 100.0 * t.stats.fallback_rate);
            vec![k, fmt_auc(t.stats.iou_median), fallbacks]
        })
        .collect();
    let table = Table {
        header: ["k", "median IoU", "fallbacks"].map(String::from).to_vec(),
        rows,
    };
    println!(
        "{}: {} boxes of {images} images, each under each of the {} folds' ChipNets; IoU with \
         the true boxes squared, margin {}",
        a.run.display(),
        sweep.first().map_or(0, |t| t.stats.boxes),
        run.folds.k,
        run.config.boxes.margin
    );
    print!("{}", table.markdown());
    Ok(())
}
