//! Statistics the augmentation tests compare distributions with (built for tests only):
//! the two-sample Kolmogorov–Smirnov statistic and its critical value. Never used by a
//! training run.

/// The two-sample Kolmogorov–Smirnov statistic: the largest gap between the empirical
/// distribution functions of `a` and `b`.
pub fn ks(a: &[f64], b: &[f64]) -> f64 {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

/// The KS critical value at a 0.1% level for samples of `n` and `m`.
pub fn ks_limit(n: usize, m: usize) -> f64 {
    1.95 * ((n + m) as f64 / (n * m) as f64).sqrt()
}
