//! Toeplitz products for `Op::Toeplitz`: `out[p, i] = Σ_j c(j - i)·v[p, j]`,
//! `c(d)` = `first_row[d]` for `d ≥ 0`, `first_col[-d]` for `d ≤ 0`.
//!
//! By FFT, in `f64` whatever the kernel's type: the coefficients laid out as
//! `a[k] = c(k - (n_i - 1))` for `k < n_i + n_j - 1`, each vector reversed,
//! both transformed (real FFT, size `N` the power of two at least
//! `n_i + n_j - 1`, so the circular convolution does not wrap onto the
//! entries read), multiplied, transformed back; `out[p, i]` is entry
//! `n_i + n_j - 2 - i` of the convolution. The coefficients' transform is
//! computed once per call for all vectors. Error: about `ε₆₄·log2 N` times
//! `Σ_j |c(j - i)·v[p, j]|`, far below `f32` rounding. Small products
//! (`n_i·n_j` ≤ [`DIRECT_MAX`]) are computed directly.
//! Single-threaded: a call that runs it runs on one thread.

use realfft::RealFftPlanner;
use realfft::num_complex::Complex;
use std::cell::RefCell;

/// Products with at most this many matrix entries are computed directly.
pub const DIRECT_MAX: usize = 1024;

thread_local! {
    static PLANNER: RefCell<RealFftPlanner<f64>> = RefCell::new(RealFftPlanner::new());
}

/// A float type of the kernel's tensors.
pub(crate) trait Elem: Copy {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}
impl Elem for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}
impl Elem for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// The products, with slices of the lengths the layouts give:
/// `first_row` `n_j`, `first_col` `n_i`, `v` `vectors·n_j`, `out` `vectors·n_i`.
pub(crate) fn toeplitz<T: Elem>(
    n_i: usize,
    n_j: usize,
    first_row: &[T],
    first_col: &[T],
    v: &[T],
    out: &mut [T],
) {
    if n_i == 0 {
        return;
    }
    if n_j == 0 {
        out.iter_mut().for_each(|o| *o = T::from_f64(0.0));
        return;
    }
    let coef = |d: isize| -> f64 {
        if d >= 0 {
            first_row[d as usize].to_f64()
        } else {
            first_col[(-d) as usize].to_f64()
        }
    };
    if n_i.saturating_mul(n_j) <= DIRECT_MAX {
        for (vp, op) in v.chunks_exact(n_j).zip(out.chunks_exact_mut(n_i)) {
            for (i, o) in op.iter_mut().enumerate() {
                let s: f64 = vp
                    .iter()
                    .enumerate()
                    .map(|(j, x)| coef(j as isize - i as isize) * x.to_f64())
                    .sum();
                *o = T::from_f64(s);
            }
        }
        return;
    }
    let len = n_i + n_j - 1;
    let size = len.next_power_of_two().max(2);
    let (forward, inverse) = PLANNER.with(|p| {
        let mut p = p.borrow_mut();
        (p.plan_fft_forward(size), p.plan_fft_inverse(size))
    });
    let mut time = forward.make_input_vec();
    let mut coef_spectrum = forward.make_output_vec();
    let mut spectrum = forward.make_output_vec();
    let mut scratch = forward.make_scratch_vec();
    let mut back_scratch = inverse.make_scratch_vec();
    for (k, t) in time.iter_mut().enumerate() {
        *t = if k < len {
            coef(k as isize - (n_i as isize - 1))
        } else {
            0.0
        };
    }
    // Lengths match by construction: the planner's own buffers.
    if forward
        .process_with_scratch(&mut time, &mut coef_spectrum, &mut scratch)
        .is_err()
    {
        return;
    }
    let scale = 1.0 / size as f64;
    for (vp, op) in v.chunks_exact(n_j).zip(out.chunks_exact_mut(n_i)) {
        time.iter_mut().for_each(|t| *t = 0.0);
        for (q, x) in vp.iter().rev().enumerate() {
            time[q] = x.to_f64();
        }
        if forward
            .process_with_scratch(&mut time, &mut spectrum, &mut scratch)
            .is_err()
        {
            return;
        }
        for (s, c) in spectrum.iter_mut().zip(&coef_spectrum) {
            *s *= *c;
        }
        // The inverse transform wants real first and last bins (they are,
        // up to rounding).
        let last = spectrum.len() - 1;
        spectrum[0] = Complex::new(spectrum[0].re, 0.0);
        spectrum[last] = Complex::new(spectrum[last].re, 0.0);
        if inverse
            .process_with_scratch(&mut spectrum, &mut time, &mut back_scratch)
            .is_err()
        {
            return;
        }
        for (i, o) in op.iter_mut().enumerate() {
            *o = T::from_f64(time[n_i + n_j - 2 - i] * scale);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(n_i: usize, n_j: usize, row: &[f64], col: &[f64], v: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; v.len() / n_j.max(1) * n_i];
        for p in 0..v.len() / n_j.max(1) {
            for i in 0..n_i {
                out[p * n_i + i] = (0..n_j)
                    .map(|j| if j >= i { row[j - i] } else { col[i - j] } * v[p * n_j + j])
                    .sum();
            }
        }
        out
    }

    #[test]
    fn fft_matches_direct() {
        for (n_i, n_j) in [(100, 100), (1, 5000), (5000, 1), (70, 300), (257, 129)] {
            let row: Vec<f64> = (0..n_j)
                .map(|k| ((k * 7919) % 101) as f64 / 50.0 - 1.0)
                .collect();
            let mut col: Vec<f64> = (0..n_i)
                .map(|k| ((k * 104729) % 97) as f64 / 40.0 - 1.0)
                .collect();
            col[0] = row[0];
            let v: Vec<f64> = (0..3 * n_j).map(|k| ((k * 31) % 17) as f64 - 8.0).collect();
            let want = direct(n_i, n_j, &row, &col, &v);
            let mut got = vec![0.0; 3 * n_i];
            toeplitz(n_i, n_j, &row, &col, &v, &mut got);
            let scale = want.iter().fold(1.0f64, |m, x| m.max(x.abs()));
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-12 * scale * n_j as f64,
                    "{n_i}×{n_j}: {g} vs {w}"
                );
            }
        }
    }
}
