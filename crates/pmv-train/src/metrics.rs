//! Evaluation metrics from per-sample class probabilities: top-1 and top-5, per-class
//! accuracy, the confusion matrix, mean average precision for multi-label sets, and
//! the rows of `predictions.csv`.
//!
//! Pure arithmetic on host vectors: it never touches tensors or files.

use serde::Serialize;

/// Accumulates predictions batch by batch.
pub struct Tally {
    classes: usize,
    multi: bool,
    samples: u64,
    top1: u64,
    top5: u64,
    per_class_total: Vec<u64>,
    per_class_top1: Vec<u64>,
    confusion: Vec<u64>,
    loss_sum: f64,
    /// Multi-label: every score and target, for average precision.
    scores: Vec<f32>,
    targets: Vec<bool>,
}

/// One prediction, as `predictions.csv` lists it.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub key: String,
    pub id: String,
    pub labels: Vec<u32>,
    /// The top 5 classes with their probabilities, best first.
    pub top: Vec<(usize, f32)>,
    /// Every class's probability, in class order (`probabilities.npy`'s row).
    pub probs: Vec<f32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassResult {
    pub class: usize,
    pub name: String,
    /// Samples of the class (multi-label: samples carrying it).
    pub count: u64,
    /// Of those, predicted as the class at top-1.
    pub correct: u64,
    /// `correct / count` (null without samples).
    pub accuracy: Option<f64>,
    /// Multi-label: average precision of the class's scores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average_precision: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub samples: u64,
    /// Fraction of samples whose top prediction is (one of) their label(s).
    pub top1: f64,
    /// Fraction with a label among the top 5 (top-k for fewer classes).
    pub top5: f64,
    /// Mean of the per-class accuracies over classes with samples.
    pub mean_class_accuracy: f64,
    /// Mean cross-entropy (single-label) or binary cross-entropy (multi-label).
    pub loss: f64,
    /// Multi-label: mean average precision over classes with positives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map: Option<f64>,
    pub per_class: Vec<ClassResult>,
    /// `confusion[true][predicted]` (single-label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confusion: Option<Vec<Vec<u64>>>,
}

impl Tally {
    pub fn new(classes: usize, multi: bool) -> Tally {
        Tally {
            classes,
            multi,
            samples: 0,
            top1: 0,
            top5: 0,
            per_class_total: vec![0; classes],
            per_class_top1: vec![0; classes],
            confusion: if multi {
                vec![]
            } else {
                vec![0; classes * classes]
            },
            loss_sum: 0.0,
            scores: vec![],
            targets: vec![],
        }
    }

    /// Adds one sample: its class probabilities (softmax, or sigmoid for multi-label)
    /// and labels. Returns its top-5 prediction.
    pub fn add(&mut self, probs: &[f32], labels: &[u32]) -> Vec<(usize, f32)> {
        debug_assert_eq!(probs.len(), self.classes);
        let mut order: Vec<usize> = (0..self.classes).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let k = 5.min(self.classes);
        let top: Vec<(usize, f32)> = order[..k].iter().map(|&c| (c, probs[c])).collect();
        let best = order[0];
        let hit1 = labels.iter().any(|&l| l as usize == best);
        let hit5 = labels.iter().any(|&l| order[..k].contains(&(l as usize)));
        self.samples += 1;
        self.top1 += hit1 as u64;
        self.top5 += hit5 as u64;
        for &l in labels {
            let l = l as usize;
            self.per_class_total[l] += 1;
            self.per_class_top1[l] += (best == l) as u64;
        }
        let eps = 1e-12f64;
        if self.multi {
            let mut t = vec![false; self.classes];
            for &l in labels {
                t[l as usize] = true;
            }
            let bce: f64 = probs
                .iter()
                .zip(&t)
                .map(|(&p, &y)| {
                    let p = (p as f64).clamp(eps, 1.0 - eps);
                    if y { -p.ln() } else { -(1.0 - p).ln() }
                })
                .sum::<f64>()
                / self.classes as f64;
            self.loss_sum += bce;
            self.scores.extend_from_slice(probs);
            self.targets.extend(t);
        } else {
            let l = labels[0] as usize;
            self.confusion[l * self.classes + best] += 1;
            self.loss_sum += -(probs[l] as f64).max(eps).ln();
        }
        top
    }

    pub fn summary(&self, names: &[String]) -> Summary {
        let n = self.samples.max(1) as f64;
        let mut per_class = Vec::with_capacity(self.classes);
        let mut aps = vec![];
        for c in 0..self.classes {
            let count = self.per_class_total[c];
            let correct = self.per_class_top1[c];
            let ap = if self.multi && count > 0 {
                let ap = average_precision((0..self.samples as usize).map(|i| {
                    (
                        self.scores[i * self.classes + c],
                        self.targets[i * self.classes + c],
                    )
                }));
                aps.push(ap);
                Some(ap)
            } else {
                None
            };
            per_class.push(ClassResult {
                class: c,
                name: names
                    .get(c)
                    .cloned()
                    .unwrap_or_else(|| format!("class_{c}")),
                count,
                correct,
                accuracy: (count > 0).then(|| correct as f64 / count as f64),
                average_precision: ap,
            });
        }
        let accs: Vec<f64> = per_class.iter().filter_map(|c| c.accuracy).collect();
        Summary {
            samples: self.samples,
            top1: self.top1 as f64 / n,
            top5: self.top5 as f64 / n,
            mean_class_accuracy: if accs.is_empty() {
                0.0
            } else {
                accs.iter().sum::<f64>() / accs.len() as f64
            },
            loss: self.loss_sum / n,
            map: (self.multi && !aps.is_empty())
                .then(|| aps.iter().sum::<f64>() / aps.len() as f64),
            per_class,
            confusion: (!self.multi).then(|| {
                self.confusion
                    .chunks(self.classes.max(1))
                    .map(|r| r.to_vec())
                    .collect()
            }),
        }
    }
}

/// Average precision of (score, positive) pairs: the mean of the precision at each
/// positive when ranked by score (ties broken pessimistically).
pub fn average_precision(items: impl Iterator<Item = (f32, bool)>) -> f64 {
    let mut v: Vec<(f32, bool)> = items.collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let positives = v.iter().filter(|x| x.1).count();
    if positives == 0 {
        return 0.0;
    }
    let mut hits = 0usize;
    let mut sum = 0.0;
    for (i, (_, pos)) in v.iter().enumerate() {
        if *pos {
            hits += 1;
            sum += hits as f64 / (i + 1) as f64;
        }
    }
    sum / positives as f64
}

/// A CSV field, quoted when it needs to be.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The header and one row of `predictions.csv`. Probabilities are written as Rust's
/// shortest round-trip form of the `f32` (parsing the text gives back the same float).
pub const CSV_HEADER: &str = "key,id,labels,predicted,confidence,correct,top5\n";

pub fn csv_row(p: &Prediction, names: &[String]) -> String {
    let name = |c: usize| {
        names
            .get(c)
            .cloned()
            .unwrap_or_else(|| format!("class_{c}"))
    };
    let labels: Vec<String> = p.labels.iter().map(|&l| name(l as usize)).collect();
    let (best, conf) = p.top.first().copied().unwrap_or((0, 0.0));
    let correct = p.labels.iter().any(|&l| l as usize == best);
    let top5: Vec<String> = p
        .top
        .iter()
        .map(|(c, q)| format!("{}:{q}", name(*c)))
        .collect();
    format!(
        "{},{},{},{},{},{},{}\n",
        csv_field(&p.key),
        csv_field(&p.id),
        csv_field(&labels.join("|")),
        csv_field(&name(best)),
        conf,
        correct,
        csv_field(&top5.join("|")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_label_tally() {
        let mut t = Tally::new(6, false);
        // Correct at top-1.
        t.add(&[0.6, 0.1, 0.1, 0.1, 0.05, 0.05], &[0]);
        // Wrong at top-1, right at top-5.
        t.add(&[0.5, 0.2, 0.1, 0.1, 0.05, 0.05], &[2]);
        // Wrong everywhere: class 5 is ranked last.
        t.add(&[0.3, 0.2, 0.2, 0.2, 0.1, 0.0], &[5]);
        let names: Vec<String> = (0..6).map(|i| format!("c{i}")).collect();
        let s = t.summary(&names);
        assert_eq!(s.samples, 3);
        assert!((s.top1 - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.top5 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.per_class[0].accuracy, Some(1.0));
        assert_eq!(s.per_class[2].accuracy, Some(0.0));
        assert_eq!(s.per_class[1].accuracy, None);
        assert!((s.mean_class_accuracy - 1.0 / 3.0).abs() < 1e-12);
        let c = s.confusion.unwrap();
        assert_eq!(c[2][0], 1);
        assert_eq!(c[5][0], 1);
        let expect = -(0.6f64.ln() + 0.1f64.ln() + 1e-12f64.ln()) / 3.0;
        assert!((s.loss - expect).abs() < 1e-5, "{} {expect}", s.loss);
    }

    #[test]
    fn multi_label_ap_and_csv() {
        assert!(
            (average_precision([(0.9, true), (0.8, false), (0.7, true)].into_iter())
                - (1.0 + 2.0 / 3.0) / 2.0)
                .abs()
                < 1e-12
        );
        let mut t = Tally::new(3, true);
        t.add(&[0.9, 0.2, 0.8], &[0, 2]);
        t.add(&[0.1, 0.7, 0.3], &[1]);
        let s = t.summary(&["a".into(), "b".into(), "c".into()]);
        assert_eq!(s.map, Some(1.0));
        assert_eq!(s.top1, 1.0);
        assert!(s.confusion.is_none());
        let row = csv_row(
            &Prediction {
                key: "k".into(),
                id: "id,1".into(),
                labels: vec![0, 2],
                top: vec![(0, 0.9), (2, 0.8)],
                probs: vec![0.9, 0.1, 0.8],
            },
            &["a".into(), "b".into(), "say \"c\"".into()],
        );
        assert_eq!(
            row,
            "k,\"id,1\",\"a|say \"\"c\"\"\",a,0.9,true,\"a:0.9|say \"\"c\"\":0.8\"\n"
        );
    }

    #[test]
    fn csv_probabilities_round_trip() {
        let probs = [0.123_456_79_f32, 1.0e-7, 0.876_543_2 - 1.0e-7];
        let top = vec![(2, probs[2]), (0, probs[0]), (1, probs[1])];
        let row = csv_row(
            &Prediction {
                key: "k".into(),
                id: "i".into(),
                labels: vec![2],
                top,
                probs: probs.to_vec(),
            },
            &["a".into(), "b".into(), "c".into()],
        );
        let fields: Vec<&str> = row.trim_end().split(',').collect();
        assert_eq!(fields[4].parse::<f32>().unwrap(), probs[2]);
        let parsed: Vec<f32> = fields[6]
            .split('|')
            .map(|t| t.split_once(':').unwrap().1.parse().unwrap())
            .collect();
        assert_eq!(parsed, [probs[2], probs[0], probs[1]]);
        // Four decimals would have lost these.
        assert!(
            fields[6].contains("b:0.0000001") || fields[6].contains("b:1e-7"),
            "{row}"
        );
    }
}
