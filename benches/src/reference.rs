//! The reference results the passfold plans are checked against: the
//! baselines' formulas evaluated in `f64` (sums included) and rounded to
//! `f32` once, so they stay accurate for rows far longer than a sequential
//! `f32` sum is (a 2^24-value softmax row's `f32` sum is off by about 1e-3).

/// Softmax of one row: `exp(x - m) / Σ exp(x - m)`, `m` the row's max.
pub fn softmax(x: &[f32], y: &mut [f32]) {
    let m = max(x);
    let s: f64 = x.iter().map(|&v| (f64::from(v) - m).exp()).sum();
    for (y, &v) in y.iter_mut().zip(x) {
        *y = ((f64::from(v) - m).exp() / s) as f32;
    }
}

/// `m + ln Σ exp(x - m)` of one row.
pub fn logsumexp(x: &[f32]) -> f32 {
    let m = max(x);
    let s: f64 = x.iter().map(|&v| (f64::from(v) - m).exp()).sum();
    (m + s.ln()) as f32
}

/// `(x - mean) / sqrt(var + eps) * gamma + beta` of one row.
pub fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, y: &mut [f32]) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let sd = (var + f64::from(eps)).sqrt();
    for (((y, &v), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
        *y = ((f64::from(v) - mean) / sd * f64::from(g) + f64::from(b)) as f32;
    }
}

/// `x / sqrt(mean(x²) + eps) * gamma` of one row.
pub fn rms_norm(x: &[f32], gamma: &[f32], eps: f32, y: &mut [f32]) {
    let ms = x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64;
    let rms = (ms + f64::from(eps)).sqrt();
    for ((y, &v), &g) in y.iter_mut().zip(x).zip(gamma) {
        *y = (f64::from(v) / rms * f64::from(g)) as f32;
    }
}

fn max(x: &[f32]) -> f64 {
    f64::from(x.iter().copied().fold(f32::NEG_INFINITY, f32::max))
}
