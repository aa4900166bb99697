//! What the criterion benches (`benches/catalogue.rs`) share: the kernels
//! compared ([`Kind`]), their inputs and calls ([`Problem`]), the plain Rust
//! baselines ([`plain`]), and the check run before timing.
//!
//! A baseline is the loop a user writes by hand: a max loop, a sequential
//! `f32` sum, `f32::exp`, compiled by LLVM for the default target. Each
//! computes what its catalogue kernel's formula says, so its results and
//! passfold's agree to rounding ([`rel_error`]). Both are checked against
//! the same formulas in `f64` ([`reference`]), which stay accurate where a
//! sequential `f32` sum does not (a row of 2^24 values).

use passfold::{Arg, CompiledKernel, LowerOptions, PlanOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

pub mod config;
pub mod hand;
pub mod plain;
pub mod reference;

/// The `eps` parameter of the norms.
pub const EPS: f32 = 1e-5;

/// The largest [`rel_error`] a result may have against the reference, for
/// rows of up to [`LONG_ROW`] values.
pub const TOLERANCE: f64 = 1e-4;

/// Rows longer than this are checked within [`LONG_TOLERANCE`].
pub const LONG_ROW: usize = 1 << 16;

/// The tolerance for rows longer than [`LONG_ROW`]: summing 2^24 `exp`
/// terms in `f32` alone costs more than 1e-4 (the plain Rust softmax's
/// sequential sum stagnates and is off by about 1e-3; passfold's fused plan
/// by about 2e-4). A wrong shift, an overflow or a wrong normalization is
/// still far outside it.
pub const LONG_TOLERANCE: f64 = 1e-2;

/// The fraction of a row's largest magnitude below which [`rel_error`]
/// measures errors absolutely: layer_norm's `(x - mu) / sd * gamma + beta`
/// cancels to values near 0 whose few-ulp rounding differences, relative to
/// the terms' magnitude of about 1, are far above 1e-4 of the result.
pub const ROW_FLOOR: f64 = 1e-2;

/// A catalogue kernel the benches compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `kernels/softmax.pf`.
    Softmax,
    /// `kernels/logsumexp.pf`: one value per row.
    Logsumexp,
    /// `kernels/layer_norm.pf`.
    LayerNorm,
    /// `kernels/rms_norm.pf`.
    RmsNorm,
}

impl Kind {
    /// Every kernel compared, in bench order.
    pub const ALL: [Kind; 4] = [
        Kind::Softmax,
        Kind::Logsumexp,
        Kind::LayerNorm,
        Kind::RmsNorm,
    ];

    /// The catalogue name (and file stem).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Softmax => "softmax",
            Kind::Logsumexp => "logsumexp",
            Kind::LayerNorm => "layer_norm",
            Kind::RmsNorm => "rms_norm",
        }
    }

    /// The kernel's DSL text, from the catalogue.
    pub fn source(self) -> &'static str {
        passfold_kernels::get(self.name())
            .unwrap_or_else(|| panic!("{} is not in the catalogue", self.name()))
            .source
    }

    /// Compiles the fused plan, or the unfused one, through the kernel cache.
    pub fn compile(self, unfused: bool) -> Arc<CompiledKernel> {
        let plan_opts = PlanOptions {
            unfused,
            ..PlanOptions::default()
        };
        passfold::compile_with(self.source(), &LowerOptions::default(), plan_opts).unwrap_or_else(
            |e| panic!("{} (unfused: {unfused}) does not compile: {e}", self.name()),
        )
    }

    /// The number of output values of `rows` rows.
    pub fn output_len(self, rows: usize, n: usize) -> usize {
        match self {
            Kind::Logsumexp => rows,
            _ => rows * n,
        }
    }
}

/// The range of the inputs `x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inputs {
    /// Uniform in [-100, 100]: `exp` of 6% of them overflows unless shifted
    /// by the row's max, and after the shift (`x - m` down to -200) half of
    /// the `exp`s underflow to 0, for which glibc's `expf` takes a slow,
    /// data-dependent branch.
    Wide,
    /// Uniform in [20, 100]: `exp` of 14% of them overflows unshifted, but
    /// after the shift (`x - m ≥ -80`) no `exp` underflows.
    NoUnderflow,
}

impl Inputs {
    /// The bounds of the range.
    pub fn bounds(self) -> (f32, f32) {
        match self {
            Inputs::Wide => (-100.0, 100.0),
            Inputs::NoUnderflow => (20.0, 100.0),
        }
    }
}

/// One benchmark's inputs: `rows` rows of `n` values.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The kernel.
    pub kind: Kind,
    /// Rows (the extent `b`).
    pub rows: usize,
    /// Values per row (the extent `i`).
    pub n: usize,
    /// `rows × n` values (see [`Inputs`]).
    pub x: Vec<f32>,
    /// The norms' scale, uniform in [0.5, 1.5] (`n` values).
    pub gamma: Vec<f32>,
    /// layer_norm's shift, uniform in [-1, 1] (`n` values).
    pub beta: Vec<f32>,
}

impl Problem {
    /// Inputs drawn from a generator seeded with `seed`, `x` from `inputs`.
    pub fn new(kind: Kind, rows: usize, n: usize, inputs: Inputs, seed: u64) -> Problem {
        let (lo, hi) = inputs.bounds();
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut uniform = |len: usize, lo: f32, hi: f32| -> Vec<f32> {
            (0..len).map(|_| rng.random_range(lo..=hi)).collect()
        };
        Problem {
            kind,
            rows,
            n,
            x: uniform(rows * n, lo, hi),
            gamma: uniform(n, 0.5, 1.5),
            beta: uniform(n, -1.0, 1.0),
        }
    }

    /// The elements processed per call (`rows × n`): the benches' throughput.
    pub fn elements(&self) -> u64 {
        (self.rows * self.n) as u64
    }

    /// A zeroed output buffer.
    pub fn output(&self) -> Vec<f32> {
        vec![0.0; self.kind.output_len(self.rows, self.n)]
    }

    /// Runs `kernel` (a compilation of `self.kind`) into `y`, through the safe
    /// call API; panics if the call is refused.
    pub fn run_passfold(&self, kernel: &CompiledKernel, y: &mut [f32]) {
        let shape = [self.rows, self.n];
        let call = kernel.bind().arg("x", Arg::new(&self.x[..], &shape));
        let call = match self.kind {
            Kind::Softmax => call.arg("y", Arg::new(y, &shape)),
            Kind::Logsumexp => call.arg("y", Arg::new(y, &[self.rows])),
            Kind::LayerNorm => call
                .arg("gamma", Arg::new(&self.gamma[..], &[self.n]))
                .arg("beta", Arg::new(&self.beta[..], &[self.n]))
                .param("eps", f64::from(EPS))
                .arg("y", Arg::new(y, &shape)),
            Kind::RmsNorm => call
                .arg("gamma", Arg::new(&self.gamma[..], &[self.n]))
                .param("eps", f64::from(EPS))
                .arg("y", Arg::new(y, &shape)),
        };
        if let Err(e) = call.run() {
            panic!("calling passfold's {} failed: {e}", self.kind.name());
        }
    }

    /// Runs the plain Rust baseline ([`plain`]) into `y`.
    pub fn run_plain(&self, y: &mut [f32]) {
        self.run_rows(
            y,
            plain::softmax,
            plain::logsumexp,
            plain::layer_norm,
            plain::rms_norm,
        );
    }

    /// Computes the `f64` reference ([`reference`]) into `y`.
    pub fn run_reference(&self, y: &mut [f32]) {
        self.run_rows(
            y,
            reference::softmax,
            reference::logsumexp,
            reference::layer_norm,
            reference::rms_norm,
        );
    }

    /// Runs one of the row functions, by kind, over every row.
    fn run_rows(
        &self,
        y: &mut [f32],
        softmax: fn(&[f32], &mut [f32]),
        logsumexp: fn(&[f32]) -> f32,
        layer_norm: LayerNormRow,
        rms_norm: fn(&[f32], &[f32], f32, &mut [f32]),
    ) {
        let n = self.n;
        let rows = self.x.chunks_exact(n);
        match self.kind {
            Kind::Softmax => rows
                .zip(y.chunks_exact_mut(n))
                .for_each(|(x, y)| softmax(x, y)),
            Kind::Logsumexp => rows.zip(y.iter_mut()).for_each(|(x, y)| *y = logsumexp(x)),
            Kind::LayerNorm => rows
                .zip(y.chunks_exact_mut(n))
                .for_each(|(x, y)| layer_norm(x, &self.gamma, &self.beta, EPS, y)),
            Kind::RmsNorm => rows
                .zip(y.chunks_exact_mut(n))
                .for_each(|(x, y)| rms_norm(x, &self.gamma, EPS, y)),
        }
    }

    /// The [`rel_error`] of `got` against `want`, two results of this problem.
    pub fn error(&self, got: &[f32], want: &[f32]) -> f64 {
        rel_error(got, want, want.len() / self.rows).0
    }

    /// The largest [`rel_error`] allowed against the reference.
    pub fn tolerance(&self) -> f64 {
        if self.n > LONG_ROW {
            LONG_TOLERANCE
        } else {
            TOLERANCE
        }
    }

    /// Panics unless `got` (a result of `what`, such as `passfold_fused`) is
    /// within [`Problem::tolerance`] of `reference` (from
    /// [`Problem::run_reference`]); returns the error.
    pub fn check(&self, what: &str, got: &[f32], reference: &[f32]) -> f64 {
        let (err, at) = rel_error(got, reference, reference.len() / self.rows);
        let tolerance = self.tolerance();
        assert!(
            err < tolerance,
            "{}/{what}/{}x{} disagrees with the f64 reference: relative error {err:.3e} \
             (tolerance {tolerance:e}) at element {at}: {what} gives {}, the reference {}",
            self.kind.name(),
            self.rows,
            self.n,
            got[at],
            reference[at],
        );
        err
    }
}

/// A layer_norm row function: `(x, gamma, beta, eps, y)`.
type LayerNormRow = fn(&[f32], &[f32], &[f32], f32, &mut [f32]);

/// The largest error of `got` against `want` and where it is, comparing rows
/// of `row_len` values: each element's error relative to its magnitude, but
/// to no less than [`ROW_FLOOR`] times its row's largest magnitude, so values
/// that cancel to near zero (a norm's `… * gamma + beta` near 0) and softmax's
/// underflowing tail are judged at the row's scale. A NaN on one side only
/// (or infinities that differ) is an infinite error.
pub fn rel_error(got: &[f32], want: &[f32], row_len: usize) -> (f64, usize) {
    assert_eq!(got.len(), want.len(), "result lengths differ");
    let mut worst = (0.0, 0);
    for (row, (got, want)) in got.chunks(row_len).zip(want.chunks(row_len)).enumerate() {
        let scale = want.iter().map(|w| f64::from(w.abs())).fold(0.0, f64::max) * ROW_FLOOR;
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let err = if g == w || (g.is_nan() && w.is_nan()) {
                0.0
            } else if !(g.is_finite() && w.is_finite()) {
                f64::INFINITY
            } else {
                let diff = (f64::from(g) - f64::from(w)).abs();
                diff / f64::from(w.abs()).max(scale).max(f64::MIN_POSITIVE)
            };
            if err > worst.0 || err.is_nan() {
                worst = (err, row * row_len + i);
            }
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The benches' agreement checks, on small inputs: each plan of each
    /// kernel and the baseline against the reference, and against each other.
    #[test]
    fn passfold_and_plain_rust_agree_with_the_reference() {
        for (kind, inputs) in Kind::ALL
            .into_iter()
            .flat_map(|kind| [(kind, Inputs::Wide), (kind, Inputs::NoUnderflow)])
        {
            let problem = Problem::new(kind, 3, 1000, inputs, 7);
            let mut reference = problem.output();
            problem.run_reference(&mut reference);
            let mut plain = problem.output();
            problem.run_plain(&mut plain);
            problem.check("plain_rust", &plain, &reference);
            for unfused in [false, true] {
                let mut got = problem.output();
                problem.run_passfold(&kind.compile(unfused), &mut got);
                problem.check(if unfused { "unfused" } else { "fused" }, &got, &reference);
                assert!(problem.error(&got, &plain) < TOLERANCE);
            }
        }
    }

    #[test]
    fn baselines_compute_the_formulas() {
        use plain::*;
        let x = [1.0f32, 2.0, 3.0, 3.0];
        let mut y = [0.0f32; 4];
        softmax(&x, &mut y);
        let s = (-2.0f32).exp() + (-1.0f32).exp() + 2.0;
        assert!((y[3] - 1.0 / s).abs() < 1e-6);
        assert!((logsumexp(&x) - (3.0 + s.ln())).abs() < 1e-6);
        rms_norm(&x, &[1.0; 4], 0.0, &mut y);
        assert!((y[0] - 1.0 / (23.0f32 / 4.0).sqrt()).abs() < 1e-6);
        layer_norm(&x, &[2.0; 4], &[1.0; 4], 0.0, &mut y);
        // mean 2.25, variance (1.5625 + 0.0625 + 0.5625 * 2) / 4 = 0.6875.
        assert!((y[0] - (-1.25 / 0.6875f32.sqrt() * 2.0 + 1.0)).abs() < 1e-5);
    }

    #[test]
    fn rel_error_judges_small_values_at_the_row_scale() {
        let (err, at) = rel_error(&[1.0, 0.0], &[1.0, 1e-9], 2);
        assert!((err - 1e-7).abs() < 1e-12 && at == 1);
        assert_eq!(rel_error(&[f32::NAN], &[1.0], 1).0, f64::INFINITY);
        assert_eq!(rel_error(&[f32::NAN], &[f32::NAN], 1).0, 0.0);
    }
}
