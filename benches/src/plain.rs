//! The plain Rust baselines: the loops a user writes by hand for one row,
//! with sequential `f32` sums and `f32::exp`, compiled by LLVM for the
//! default target.

/// Softmax of one row, as written by hand: the max, then `e = exp(x - m)`
/// stored in `y` and summed, then each `e` divided by the sum.
pub fn softmax(x: &[f32], y: &mut [f32]) {
    let mut m = f32::NEG_INFINITY;
    for &v in x {
        m = m.max(v);
    }
    let mut s = 0.0f32;
    for (y, &v) in y.iter_mut().zip(x) {
        let e = (v - m).exp();
        *y = e;
        s += e;
    }
    for y in y.iter_mut() {
        *y /= s;
    }
}

/// `m + ln Σ exp(x - m)` of one row, `m` its max.
pub fn logsumexp(x: &[f32]) -> f32 {
    let mut m = f32::NEG_INFINITY;
    for &v in x {
        m = m.max(v);
    }
    let mut s = 0.0f32;
    for &v in x {
        s += (v - m).exp();
    }
    m + s.ln()
}

/// Layer norm of one row: the mean, the mean square deviation from it, then
/// `(x - mean) / sqrt(var + eps) * gamma + beta`.
pub fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, y: &mut [f32]) {
    let n = x.len() as f32;
    let mut sum = 0.0f32;
    for &v in x {
        sum += v;
    }
    let mean = sum / n;
    let mut sq = 0.0f32;
    for &v in x {
        sq += (v - mean) * (v - mean);
    }
    let sd = (sq / n + eps).sqrt();
    for (((y, &v), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
        *y = (v - mean) / sd * g + b;
    }
}

/// RMS norm of one row: `x / sqrt(mean(x²) + eps) * gamma`.
pub fn rms_norm(x: &[f32], gamma: &[f32], eps: f32, y: &mut [f32]) {
    let mut sq = 0.0f32;
    for &v in x {
        sq += v * v;
    }
    let rms = (sq / x.len() as f32 + eps).sqrt();
    for ((y, &v), &g) in y.iter_mut().zip(x).zip(gamma) {
        *y = v / rms * g;
    }
}
