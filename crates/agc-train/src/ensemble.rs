//! Ensembles: weighted averages of model predictions, with weights given or fitted on the
//! out-of-fold predictions (never on test labels).

use serde::{Deserialize, Serialize};

use crate::metrics::roc_auc;
use crate::model::ModelKind;

/// A member of an ensemble and its weight. Written as `["resnet", 0.5]`, as configurations
/// have always written them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "(ModelKind, f64)", into = "(ModelKind, f64)")]
pub struct EnsembleMember {
    /// The model.
    pub model: ModelKind,
    /// Its weight (the weights of an ensemble need not sum to 1 where given; they do where
    /// used).
    pub weight: f64,
}

impl EnsembleMember {
    /// `model` with `weight`.
    pub fn new(model: ModelKind, weight: f64) -> Self {
        Self { model, weight }
    }
}

impl EnsembleMember {
    /// Members written `model=weight,model=weight` (as `agc ensemble --members` takes them).
    ///
    /// # Errors
    /// A part without `=`, an unknown model or a weight that is not a number, named.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, String> {
        text.split(',').map(str::parse).collect()
    }
}

impl std::str::FromStr for EnsembleMember {
    type Err = String;

    /// `model=weight`.
    fn from_str(part: &str) -> Result<Self, String> {
        let (name, w) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected model=weight"))?;
        let model: ModelKind = name.trim().parse()?;
        let weight: f64 = w
            .trim()
            .parse()
            .map_err(|e| format!("{part:?}: the weight is not a number ({e})"))?;
        Ok(Self { model, weight })
    }
}

impl std::fmt::Display for EnsembleMember {
    /// `resnet 0.50`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:.2}", self.model, self.weight)
    }
}

impl From<(ModelKind, f64)> for EnsembleMember {
    fn from((model, weight): (ModelKind, f64)) -> Self {
        Self { model, weight }
    }
}

impl From<EnsembleMember> for (ModelKind, f64) {
    fn from(m: EnsembleMember) -> Self {
        (m.model, m.weight)
    }
}

/// The weighted average of several models' predictions for the same images; weights are
/// normalised to sum to 1.
///
/// # Panics
/// If there are no models, the weights do not match the models, a weight is negative or all
/// are zero, or the models predict different numbers of images.
pub fn weighted_average(predictions: &[&[f32]], weights: &[f64]) -> Vec<f32> {
    assert!(
        !predictions.is_empty(),
        "an ensemble needs at least one model"
    );
    assert_eq!(predictions.len(), weights.len(), "one weight per model");
    assert!(
        weights.iter().all(|&w| w >= 0.0),
        "weights must be non-negative: {weights:?}"
    );
    let total: f64 = weights.iter().sum();
    assert!(total > 0.0, "weights must not all be zero");
    let n = predictions[0].len();
    assert!(
        predictions.iter().all(|p| p.len() == n),
        "every model must predict the same images"
    );
    (0..n)
        .map(|i| {
            predictions
                .iter()
                .zip(weights)
                .map(|(p, w)| f64::from(p[i]) * w / total)
                .sum::<f64>() as f32
        })
        .collect()
}

/// The weights, on a grid of step `1 / steps` over the simplex, whose average of the
/// out-of-fold predictions has the highest AUC; ties go to the most even weights. `None` when
/// the AUC is undefined (one class) or there is no model.
///
/// The grid has `C(steps + models − 1, models − 1)` points: 21 for two models at `steps = 20`,
/// 231 for three.
pub fn fit_weights(oof: &[&[f32]], labels: &[u8], steps: usize) -> Option<(Vec<f64>, f64)> {
    if oof.is_empty() || steps == 0 {
        return None;
    }
    let mut best: Option<(Vec<f64>, f64, f64)> = None;
    for counts in compositions(steps, oof.len()) {
        let weights: Vec<f64> = counts.iter().map(|&c| c as f64 / steps as f64).collect();
        let auc = roc_auc(&weighted_average(oof, &weights), labels)?;
        let spread: f64 = weights
            .iter()
            .map(|w| (w - 1.0 / weights.len() as f64).powi(2))
            .sum();
        let better = best
            .as_ref()
            .is_none_or(|(_, a, s)| auc > *a + 1e-12 || ((auc - a).abs() <= 1e-12 && spread < *s));
        if better {
            best = Some((weights, auc, spread));
        }
    }
    best.map(|(w, auc, _)| (w, auc))
}

/// Which rule set an ensemble's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightRule {
    /// The configured weights: out of fold they beat (or tie) every member alone.
    Given,
    /// Fitted on the out-of-fold predictions, because the configured weights lost to a member
    /// alone out of fold.
    Fitted,
    /// Fitted on the out-of-fold predictions, as the configuration asked (`fit_ensemble`).
    FittedOnRequest,
}

/// How an ensemble's weights were chosen, with the out-of-fold AUCs that decided it
/// (`metrics.json`'s `ensemble_choice`, and a sentence of the report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleChoice {
    /// The rule that set the weights used.
    pub rule: WeightRule,
    /// The configured weights (normalised), where they do not all vanish, and their OOF AUC.
    pub given: Option<(Vec<f64>, f64)>,
    /// The weights fitted on the OOF predictions ([`fit_weights`]) and their OOF AUC.
    pub fitted: (Vec<f64>, f64),
    /// The member with the best OOF AUC alone (its index among the members) and that AUC.
    pub best_member: (usize, f64),
}

impl EnsembleChoice {
    /// The weights used.
    pub fn weights(&self) -> &[f64] {
        match (&self.rule, &self.given) {
            (WeightRule::Given, Some((w, _))) => w,
            _ => &self.fitted.0,
        }
    }

    /// The OOF AUC of the weights used.
    pub fn oof_auc(&self) -> f64 {
        match (&self.rule, &self.given) {
            (WeightRule::Given, Some((_, auc))) => *auc,
            _ => self.fitted.1,
        }
    }

    /// One sentence for a report: which weights were used and why, with both OOF AUCs;
    /// `names` are the members' names in order.
    pub fn describe(&self, names: &[&str]) -> String {
        let weights = |w: &[f64]| -> String {
            names
                .iter()
                .zip(w)
                .map(|(n, w)| format!("{n} {w:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (best, best_auc) = self.best_member;
        let best = names.get(best).copied().unwrap_or("?");
        let fitted = format!(
            "fitted on the out-of-fold predictions ({}; OOF AUC {:.4})",
            weights(&self.fitted.0),
            self.fitted.1
        );
        let given = self
            .given
            .as_ref()
            .map(|(w, auc)| format!("the given weights ({}; OOF AUC {auc:.4})", weights(w)));
        match (self.rule, given) {
            (WeightRule::Given, Some(given)) => format!(
                "Ensemble: {given}, which are not below {best} alone out of fold (OOF AUC \
                 {best_auc:.4}); weights {fitted} were not needed."
            ),
            (WeightRule::Fitted, Some(given)) => format!(
                "Ensemble: weights {fitted}, because {given} lost to {best} alone out of fold \
                 (OOF AUC {best_auc:.4})."
            ),
            (_, given) => format!(
                "Ensemble: weights {fitted}, as configured (fit_ensemble){}; {best} alone: OOF \
                 AUC {best_auc:.4}.",
                given.map_or(String::new(), |g| format!(", instead of {g}"))
            ),
        }
    }
}

/// Chooses an ensemble's weights so that, out of fold, it never loses to its best member: the
/// `given` weights where their OOF AUC is at least every member's alone, else the weights
/// fitted on the OOF predictions (whose grid holds every member alone, so they cannot lose to
/// one); the fitted ones always when `fit` is set. `None` when an AUC is undefined (one class)
/// or there is no member.
///
/// # Panics
/// If `given` does not hold one weight per member, or a weight is negative.
pub fn choose_weights(
    oof: &[&[f32]],
    labels: &[u8],
    given: &[f64],
    fit: bool,
) -> Option<EnsembleChoice> {
    assert_eq!(oof.len(), given.len(), "one given weight per member");
    let fitted = fit_weights(oof, labels, 20)?;
    let best_member = oof
        .iter()
        .enumerate()
        .map(|(i, p)| roc_auc(p, labels).map(|auc| (i, auc)))
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .fold(None, |best: Option<(usize, f64)>, (i, auc)| match best {
            Some((_, b)) if b >= auc => best,
            _ => Some((i, auc)),
        })?;
    let total: f64 = given.iter().sum();
    let given = if total > 0.0 {
        let weights: Vec<f64> = given.iter().map(|w| w / total).collect();
        let auc = roc_auc(&weighted_average(oof, &weights), labels)?;
        Some((weights, auc))
    } else {
        None
    };
    let rule = match &given {
        _ if fit => WeightRule::FittedOnRequest,
        Some((_, auc)) if *auc >= best_member.1 => WeightRule::Given,
        _ => WeightRule::Fitted,
    };
    Some(EnsembleChoice {
        rule,
        given,
        fitted,
        best_member,
    })
}

/// Every way of writing `total` as an ordered sum of `parts` non-negative integers.
fn compositions(total: usize, parts: usize) -> Vec<Vec<usize>> {
    if parts == 1 {
        return vec![vec![total]];
    }
    (0..=total)
        .flat_map(|first| {
            compositions(total - first, parts - 1)
                .into_iter()
                .map(move |mut rest| {
                    rest.insert(0, first);
                    rest
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_from_the_command_line_and_bad_ones_are_named() {
        let w = EnsembleMember::parse_list("resnet=0.3, cropnet=0.7").expect("parse");
        assert_eq!(
            w,
            [
                EnsembleMember::new(ModelKind::Resnet, 0.3),
                EnsembleMember::new(ModelKind::Cropnet, 0.7)
            ]
        );
        assert_eq!(w[1].to_string(), "cropnet 0.70");
        let err = EnsembleMember::parse_list("resnet").expect_err("no weight");
        assert!(err.contains("resnet"), "{err}");
        assert!(EnsembleMember::parse_list("vgg=1").is_err());
        let err = EnsembleMember::parse_list("resnet=x").expect_err("no number");
        assert!(err.contains("\"resnet=x\""), "{err}");
        // Configurations write a member as [model, weight], as they always have.
        let json = serde_json::to_string(&w).expect("json");
        assert_eq!(json, r#"[["resnet",0.3],["cropnet",0.7]]"#);
        let back: Vec<EnsembleMember> = serde_json::from_str(&json).expect("read back");
        assert_eq!(back, w);
    }

    #[test]
    fn weighted_average_normalises_the_weights() {
        let a = [0.2f32, 0.8];
        let b = [0.6f32, 0.4];
        let avg = weighted_average(&[&a, &b], &[1.0, 3.0]);
        assert!(
            (avg[0] - 0.5).abs() < 1e-6 && (avg[1] - 0.5).abs() < 1e-6,
            "{avg:?}"
        );
    }

    #[test]
    fn fitted_weights_prefer_the_informative_model() {
        // Model a ranks the positives perfectly, model b is noise.
        let labels = [0u8, 0, 0, 1, 1, 0, 1, 0];
        let a = [0.1f32, 0.2, 0.3, 0.9, 0.8, 0.25, 0.7, 0.15];
        let b = [0.9f32, 0.1, 0.8, 0.2, 0.3, 0.7, 0.1, 0.6];
        let (w, auc) = fit_weights(&[&a, &b], &labels, 20).expect("both classes");
        assert!((auc - 1.0).abs() < 1e-12);
        assert!(w[0] > w[1], "{w:?}");
        // Two equally good copies: the even split wins the tie.
        let (w, _) = fit_weights(&[&a, &a], &labels, 20).expect("both classes");
        assert_eq!(w, [0.5, 0.5]);
    }

    #[test]
    fn given_weights_that_lose_to_a_member_out_of_fold_give_way_to_fitted_ones() {
        // a ranks the positives perfectly; b is anti-informative, so 0.5/0.5 is below a.
        let labels = [0u8, 0, 0, 1, 1, 0, 1, 0];
        let a = [0.1f32, 0.2, 0.3, 0.9, 0.8, 0.25, 0.7, 0.15];
        let b = [0.9f32, 0.8, 0.7, 0.1, 0.2, 0.6, 0.3, 0.95];
        let half = roc_auc(&weighted_average(&[&a, &b], &[0.5, 0.5]), &labels).expect("auc");
        assert!(half < 1.0, "{half}");
        let c = choose_weights(&[&a, &b], &labels, &[0.5, 0.5], false).expect("defined");
        assert_eq!(c.rule, WeightRule::Fitted);
        assert_eq!(c.best_member, (0, 1.0));
        assert!(c.oof_auc() >= c.best_member.1, "{c:?}");
        assert!(c.weights()[0] > c.weights()[1], "{c:?}");
        let text = c.describe(&["resnet", "cropnet"]);
        assert!(text.contains("lost to resnet alone"), "{text}");
    }

    #[test]
    fn given_weights_that_beat_every_member_out_of_fold_are_kept() {
        // Each model ranks one half of the positives well and the two complement each other.
        let labels = [0u8, 0, 0, 0, 1, 1, 1, 1];
        let a = [0.2f32, 0.3, 0.6, 0.1, 0.9, 0.8, 0.4, 0.5];
        let b = [0.6f32, 0.1, 0.2, 0.3, 0.5, 0.4, 0.9, 0.8];
        let (auc_a, auc_b) = (
            roc_auc(&a, &labels).expect("auc"),
            roc_auc(&b, &labels).expect("auc"),
        );
        let c = choose_weights(&[&a, &b], &labels, &[1.0, 1.0], false).expect("defined");
        assert_eq!(c.rule, WeightRule::Given, "{c:?} ({auc_a}, {auc_b})");
        assert_eq!(c.weights(), [0.5, 0.5]);
        assert!(c.oof_auc() >= auc_a.max(auc_b));
        // Asked to fit, it fits, and says so.
        let f = choose_weights(&[&a, &b], &labels, &[1.0, 1.0], true).expect("defined");
        assert_eq!(f.rule, WeightRule::FittedOnRequest);
        assert!(f.describe(&["resnet", "cropnet"]).contains("as configured"));
        // One class: undefined.
        assert!(choose_weights(&[&a, &b], &[1; 8], &[1.0, 1.0], false).is_none());
    }

    #[test]
    fn the_grid_covers_the_simplex() {
        assert_eq!(compositions(20, 2).len(), 21);
        assert_eq!(compositions(20, 3).len(), 231);
        assert!(
            compositions(4, 3)
                .iter()
                .all(|c| c.iter().sum::<usize>() == 4)
        );
        assert!(fit_weights(&[&[0.1f32, 0.2][..]], &[1, 1], 10).is_none());
    }
}
