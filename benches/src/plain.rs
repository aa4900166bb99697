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

/// Cross-entropy of one row against its integer target: `logsumexp(x) - x[t]`.
pub fn cross_entropy(x: &[f32], t: i32) -> f32 {
    logsumexp(x) - x[t as usize]
}

/// Attention of one query as written by hand: the scores `scale·q·k_j`
/// into a vector, their max, the sum of `exp(s - m)`, then the weighted sum
/// of the value rows divided by it (`d = q.len()`, `e = o.len()`).
pub fn attention_decode(q: &[f32], k: &[f32], v: &[f32], scale: f32, o: &mut [f32]) {
    let d = q.len();
    let scores: Vec<f32> = k
        .chunks_exact(d)
        .map(|kj| scale * q.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>())
        .collect();
    let mut m = f32::NEG_INFINITY;
    for &s in &scores {
        m = m.max(s);
    }
    let mut l = 0.0f32;
    o.fill(0.0);
    for (&s, vj) in scores.iter().zip(v.chunks_exact(o.len())) {
        let p = (s - m).exp();
        l += p;
        for (a, &x) in o.iter_mut().zip(vj) {
            *a += p * x;
        }
    }
    for a in o.iter_mut() {
        *a /= l;
    }
}
