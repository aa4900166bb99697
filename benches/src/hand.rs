//! Hand-written kernels at AVX-512 with the AOT back end's `exp` and `log`
//! (`passfold_aot::rt`): the same algorithms as passfold's plans, written
//! the way a performance-minded user would (16 lanes, one accumulator per
//! lane, `#[target_feature]`, which is what `-C target-cpu=native` gives on
//! an AVX-512 machine). The yardstick of `benches/aot.rs` and
//! `benches/aot_kernels.rs`; each entry point does nothing unless
//! [`available`].

use passfold_aot::rt::f32 as m32;

const W: usize = 16;

#[inline(always)]
fn row_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; W];
    let mut chunks = x.chunks_exact(W);
    for c in &mut chunks {
        for l in 0..W {
            acc[l] = m32::max(acc[l], c[l]);
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &a in &acc {
        m = m32::max(m, a);
    }
    for &v in chunks.remainder() {
        m = m32::max(m, v);
    }
    m
}

#[inline(always)]
fn softmax_row<const FMA: bool>(x: &[f32], y: &mut [f32]) {
    let m = row_max(x);
    let mut acc = [0.0f32; W];
    let n = x.len() - x.len() % W;
    for (xc, yc) in x[..n].chunks_exact(W).zip(y[..n].chunks_exact_mut(W)) {
        for l in 0..W {
            let e = m32::exp_nonpositive::<FMA>(xc[l] - m);
            yc[l] = e;
            acc[l] += e;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (xv, yv) in x[n..].iter().zip(&mut y[n..]) {
        let e = m32::exp_nonpositive::<FMA>(*xv - m);
        *yv = e;
        s += e;
    }
    for v in y.iter_mut() {
        *v /= s;
    }
}

#[inline(always)]
fn logsumexp_row<const FMA: bool>(x: &[f32]) -> f32 {
    let m = row_max(x);
    let mut acc = [0.0f32; W];
    let mut chunks = x.chunks_exact(W);
    for c in &mut chunks {
        for l in 0..W {
            acc[l] += m32::exp_nonpositive::<FMA>(c[l] - m);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for &v in chunks.remainder() {
        s += m32::exp_nonpositive::<FMA>(v - m);
    }
    m + m32::log::<FMA>(s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
fn softmax_avx512(n: usize, x: &[f32], y: &mut [f32]) {
    for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        softmax_row::<true>(xr, yr);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
fn logsumexp_avx512(n: usize, x: &[f32], y: &mut [f32]) {
    for (xr, yv) in x.chunks_exact(n).zip(y.iter_mut()) {
        *yv = logsumexp_row::<true>(xr);
    }
}

/// Whether this CPU runs the AVX-512 code.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        ["avx512f", "avx512vl", "avx512bw", "avx512dq", "avx2", "fma"]
            .iter()
            .all(|f| match *f {
                "avx512f" => std::is_x86_feature_detected!("avx512f"),
                "avx512vl" => std::is_x86_feature_detected!("avx512vl"),
                "avx512bw" => std::is_x86_feature_detected!("avx512bw"),
                "avx512dq" => std::is_x86_feature_detected!("avx512dq"),
                "avx2" => std::is_x86_feature_detected!("avx2"),
                _ => std::is_x86_feature_detected!("fma"),
            })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Softmax of rows of `n` (only when [`available`]).
pub fn softmax(n: usize, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the CPU has every feature the function is compiled for.
        unsafe { softmax_avx512(n, x, y) }
    }
}

/// Logsumexp of rows of `n` (only when [`available`]).
pub fn logsumexp(n: usize, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: as in `softmax`.
        unsafe { logsumexp_avx512(n, x, y) }
    }
}

/// `logsumexp(x) - x[t]` of one row.
#[inline(always)]
fn cross_entropy_row(x: &[f32], t: i32) -> f32 {
    logsumexp_row::<true>(x) - x[t as usize]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
fn cross_entropy_avx512(n: usize, x: &[f32], t: &[i32], y: &mut [f32]) {
    for ((xr, &tr), yv) in x.chunks_exact(n).zip(t).zip(y.iter_mut()) {
        *yv = cross_entropy_row(xr, tr);
    }
}

/// Cross-entropy of rows of `n` against integer targets (only when
/// [`available`]; every target must lie in its row).
pub fn cross_entropy(n: usize, x: &[f32], t: &[i32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: as in `softmax`.
        unsafe { cross_entropy_avx512(n, x, t, y) }
    }
}

/// One query of attention in one pass over the keys (flash style): a
/// running max, the sum of `exp(s - m)` and `Σ exp(s - m)·v` in `o`,
/// rescaled when the max moves.
#[inline(always)]
fn attention_query(q: &[f32], k: &[f32], v: &[f32], scale: f32, o: &mut [f32]) {
    let d = q.len();
    let e = o.len();
    let mut m = f32::NEG_INFINITY;
    let mut l = 0.0f32;
    o.fill(0.0);
    for (kj, vj) in k.chunks_exact(d).zip(v.chunks_exact(e)) {
        let mut dot = [0.0f32; W];
        let mut qc = q.chunks_exact(W);
        let mut kc = kj.chunks_exact(W);
        for (a, b) in (&mut qc).zip(&mut kc) {
            for lane in 0..W {
                dot[lane] = a[lane].mul_add(b[lane], dot[lane]);
            }
        }
        let mut dsum: f32 = dot.iter().sum();
        for (a, b) in qc.remainder().iter().zip(kc.remainder()) {
            dsum = a.mul_add(*b, dsum);
        }
        let s = scale * dsum;
        if s > m {
            let r = m32::exp_nonpositive::<true>(m - s);
            l *= r;
            for a in o.iter_mut() {
                *a *= r;
            }
            m = s;
        }
        let p = m32::exp_nonpositive::<true>(s - m);
        l += p;
        for (a, &x) in o.iter_mut().zip(vj) {
            *a = p.mul_add(x, *a);
        }
    }
    for a in o.iter_mut() {
        *a /= l;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
fn attention_avx512(q: &[f32], k: &[f32], v: &[f32], scale: f32, o: &mut [f32]) {
    attention_query(q, k, v, scale, o)
}

/// Attention of one query `q` (`d` values) over the keys `k` (`n × d`)
/// and values `v` (`n × e`) into `o` (`e`) (only when [`available`]).
pub fn attention_decode(q: &[f32], k: &[f32], v: &[f32], scale: f32, o: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: as in `softmax`.
        unsafe { attention_avx512(q, k, v, scale, o) }
    }
}

/// [`softmax`]'s algorithm for the default target (no `#[target_feature]`:
/// SSE2 on x86-64, `mul` and `add` instead of fma): the same Rust a user
/// compiles without `-C target-cpu`.
pub fn softmax_default(n: usize, x: &[f32], y: &mut [f32]) {
    for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        softmax_row::<false>(xr, yr);
    }
}

/// [`logsumexp`]'s algorithm for the default target (see
/// [`softmax_default`]).
pub fn logsumexp_default(n: usize, x: &[f32], y: &mut [f32]) {
    for (xr, yv) in x.chunks_exact(n).zip(y.iter_mut()) {
        *yv = logsumexp_row::<false>(xr);
    }
}
