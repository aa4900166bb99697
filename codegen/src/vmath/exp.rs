//! `exp` and its relatives: `exp_nonpositive`, `exp_split`, `scale_by_pow2`,
//! `expm1`.
//!
//! All share one range reduction: `n = round(x·log2 e)` by the magic-bias
//! trick (add and subtract `1.5·2^p`), `t = x - n·ln2` with a two-part
//! (Cody–Waite) `ln 2` whose high part has trailing zero bits so `n·ln2_hi`
//! is exact, so `|t| ≤ ln2/2`; then `e^t - 1 = t + t²·Q(t)` from a
//! polynomial and `2^n` by moving `n + bias` into the exponent field.

use super::emit::Em;
use cranelift_codegen::ir::Value;
use cranelift_codegen::ir::condcodes::FloatCC;

/// Range-reduction constants of one float type.
struct Reduction {
    log2e: f64,
    ln2_hi: f64,
    ln2_lo: f64,
}

const RED_F32: Reduction = Reduction {
    log2e: 1.4426950216293335,     // 0x1.715476p0
    ln2_hi: 0.693145751953125,     // 0x1.62E400p-1, last 7 bits zero
    ln2_lo: 1.428606765330187e-06, // 0x1.7F7D1Cp-20
};

const RED_F64: Reduction = Reduction {
    log2e: std::f64::consts::LOG2_E,
    ln2_hi: 0.6931471803691238, // 0x3fe62e42fee00000, last 21 bits zero
    ln2_lo: 1.9082149292705877e-10, // 0x3dea39ef35793c76
};

/// `ln 2` as `0x1.62Ep-1 + 0x1.0Cp-15 - 0x1.05C61p-29` (error 2^-53).
const LN2_3PART_F32: [f64; 3] = [
    0.693115234375,
    3.1948089599609375e-05,
    -1.9046542121259336e-09,
];

/// `(e^t - 1 - t)/t² ≈ Q(t)` on `|t| ≤ ln2/2`. `e^t - 1 = t + t²·Q(t)`
/// keeps the rounding errors of `Q` small relative to the result (`t²·Q` is
/// at most 0.07). `f64` uses the first 12 Taylor coefficients `1/(k+2)!`
/// (`expm1` one more); `f32` `exp` a minimax fit of 5 terms, `f32` `expm1`
/// the first 7 Taylor terms.
///
/// `exp`'s `Q` for `f32`: a minimax fit (Remez, relative error of
/// `1 + t + t²·Q(t)` on `|t| ≤ ln2/2`: 3.1e-9, 0.05 ULP of `f32`), one term
/// shorter than the Taylor series of the same accuracy (saves an FMA in
/// every `exp`). `expm1` keeps the Taylor terms: near 0 its result is `t`
/// plus a small correction, where a fit for `e^t` loses digits.
const EXP_Q_F32: [f64; 5] = [
    0.4999999345170046,
    0.16666520689843034,
    0.04166838736288612,
    0.008368709823201027,
    0.001381461317937623,
];

/// The Taylor coefficients `1/(k+2)!` (`expm1`, `f32`).
const EXPM1_Q_F32: [f64; 7] = [
    0.5,
    0.16666666666666666,
    0.041666666666666664,
    0.008333333333333333,
    0.001388888888888889,
    0.0001984126984126984,
    2.48015873015873e-05,
];

const EXPM1_Q_F64: [f64; 13] = [
    0.5,
    0.16666666666666666,
    0.041666666666666664,
    0.008333333333333333,
    0.001388888888888889,
    0.0001984126984126984,
    2.48015873015873e-05,
    2.7557319223985893e-06,
    2.755731922398589e-07,
    2.505210838544172e-08,
    2.08767569878681e-09,
    1.6059043836821613e-10,
    1.1470745597729725e-11,
];

impl Em<'_, '_> {
    fn red(&self) -> &'static Reduction {
        if self.wide() { &RED_F64 } else { &RED_F32 }
    }

    /// `(v, n, t)`: `v = x·log2e + magic + bias_offset` (whose low mantissa
    /// bits hold `n + bias_offset`), `n = round(x·log2 e)` and
    /// `t = x - n·ln 2`. Needs `|x·log2 e| < 2^(p-2)`.
    fn reduce(&mut self, x: Value, bias_offset: f64) -> (Value, Value, Value) {
        let red = self.red();
        let shift = self.magic() + bias_offset;
        let v = self.mul_add_cc(x, red.log2e, shift);
        let shift = self.c(shift);
        let n = self.sub(v, shift);
        let t = self.reduce_with(x, n);
        (v, n, t)
    }

    /// `t = x - n·ln2_hi - n·ln2_lo`.
    fn reduce_with(&mut self, x: Value, n: Value) -> Value {
        let red = self.red();
        let minus_hi = self.c(-red.ln2_hi);
        let t = self.mul_add(n, minus_hi, x);
        let minus_lo = self.c(-red.ln2_lo);
        self.mul_add(n, minus_lo, t)
    }

    /// `e^t - 1` as `t + t²·Q(t)`, with `terms` coefficients of `Q` beyond
    /// those `exp` needs.
    fn em1_poly(&mut self, t: Value, extra_terms: usize) -> Value {
        let coefs: &[f64] = match (self.wide(), extra_terms) {
            (true, _) => &EXPM1_Q_F64[..12 + extra_terms],
            (false, 0) => &EXP_Q_F32,
            (false, _) => &EXPM1_Q_F32[..6 + extra_terms],
        };
        let q = self.horner(t, coefs);
        let tt = self.mul(t, t);
        self.mul_add(tt, q, t)
    }

    /// `s·e^t` as `s + s·(e^t - 1)`.
    fn scaled_exp(&mut self, t: Value, s: Value) -> Value {
        let em1 = self.em1_poly(t, 0);
        self.mul_add(s, em1, s)
    }

    pub(super) fn exp(&mut self, x: Value) -> Value {
        // Clamp (keeping NaN) to where the result is 0 or +inf anyway: the
        // magic-bias rounding needs a bounded argument.
        let (lo, hi) = if self.wide() {
            (-746.0, 709.9)
        } else {
            (-104.0, 88.8)
        };
        let x = self.max_c(x, lo);
        let x = self.min_c(x, hi);
        // n spans [-150, 128] (f32), wider than the normal exponents: build
        // 2^(n+64) for x < 0 and 2^(n-1) otherwise, and scale the result by
        // 2^-64 (rounding once, into the subnormals) or by 2 (overflowing
        // to +inf past the largest finite result).
        let (down, down_scale) = if self.wide() {
            (512.0, 2f64.powi(-512))
        } else {
            (64.0, 2f64.powi(-64))
        };
        let neg = self.cmp_c(FloatCC::LessThan, x, 0.0);
        let bias = self.bias() as f64;
        let (v, _n, t) = self.reduce(x, bias);
        let adjust = self.select_cc(neg, down, -1.0);
        let v = self.add(v, adjust);
        let s = self.pow2_from_biased(v);
        let f = self.scaled_exp(t, s);
        let scale = self.select_cc(neg, down_scale, 2.0);
        self.mul(f, scale)
    }

    pub(super) fn exp_nonpositive(&mut self, x: Value) -> Value {
        // At this bound n = -bias, so 2^n is built as +0.0 and the result
        // is exactly 0 (true values there are below 2^-126.5 / 2^-1022.5).
        let lo = if self.wide() { -709.0 } else { -88.0 };
        let x = self.max_c(x, lo);
        let bias = self.bias() as f64;
        let (v, _n, t) = self.reduce(x, bias);
        let s = self.pow2_from_biased(v);
        self.scaled_exp(t, s)
    }

    pub(super) fn exp_split(&mut self, x: Value) -> (Value, Value) {
        // Beyond |x·log2 e| ≥ 2^(p-2) the magic-bias rounding no longer
        // rounds to integers; there, round with a twice larger constant
        // (giving an integer within 1 of x·log2 e) and return p = 1.
        let big_x = if self.wide() {
            2f64.powi(50) * std::f64::consts::LN_2
        } else {
            2f64.powi(21) * std::f64::consts::LN_2
        };
        let red = self.red();
        let ax = self.abs(x);
        let big = self.cmp_c(FloatCC::GreaterThan, ax, big_x);
        let magic = self.magic();
        let shift = self.select_cc(big, 2.0 * magic, magic);
        let log2e = self.c(red.log2e);
        let v = self.mul_add(x, log2e, shift);
        let k = self.sub(v, shift);
        let t = if self.wide() {
            self.reduce_with(x, k)
        } else {
            // Unlike exp, k here may go far past 128: a three-part ln 2 with
            // 12- and 5-bit leading parts keeps k·part exact without fma
            // for |k| < 2^12 (|x| < 2839).
            let mut t = x;
            for part in LN2_3PART_F32 {
                let minus = self.c(-part);
                t = self.mul_add(k, minus, t);
            }
            t
        };
        let em1 = self.em1_poly(t, 0);
        let one = self.c(1.0);
        let p = self.add(em1, one);
        let p = self.select(big, one, p);
        (p, k)
    }

    pub(super) fn scale_by_pow2(&mut self, x: Value, k: Value) -> Value {
        // musl's scalbn without branches: two steps move k into the normal
        // exponent range [emin, emax], multiplying by 2^emax or by
        // 2^(emin + p + 1); the second factor keeps the intermediate
        // normal unless the final result is below the subnormals, so the
        // result is rounded once.
        let (clamp, emax, emin, p) = if self.wide() {
            (2200.0, 1023.0, -1022.0, 53.0)
        } else {
            (300.0, 127.0, -126.0, 24.0)
        };
        let down: f64 = emin + p; // -102 or -969
        let k = self.max_c(k, -clamp);
        let mut k = self.min_c(k, clamp);
        let mut x = x;
        for _ in 0..2 {
            let up = self.cmp_c(FloatCC::GreaterThan, k, emax);
            let dn = self.cmp_c(FloatCC::LessThan, k, emin);
            let f_dn = self.select_cc(dn, down.exp2(), 1.0);
            let big = self.c(emax.exp2());
            let f = self.select(up, big, f_dn);
            x = self.mul(x, f);
            let d_dn = self.select_cc(dn, down, 0.0);
            let emax_c = self.c(emax);
            let d = self.select(up, emax_c, d_dn);
            k = self.sub(k, d);
        }
        let shift = self.c(self.magic() + self.bias() as f64);
        let v = self.add(k, shift);
        let s = self.pow2_from_biased(v);
        self.mul(x, s)
    }

    /// `expm1` of `x` without clamping: `x` must lie in the clamp range of
    /// [`Em::expm1`]; with `small` known (`x ≤ 88` / `709`, so `n ≤ 127`
    /// / `1023`), the `2^(n-1)` detour is skipped.
    pub(super) fn expm1_core(&mut self, x: Value, small: bool) -> Value {
        let bias = self.bias() as f64;
        let (v, _n, t) = self.reduce(x, bias);
        // e^t - 1 = t + t²·Q(t): accurate relative to the result near 0.
        let em1 = self.em1_poly(t, 1);
        // expm1(x) = 2^n·em1 + (2^n - 1); 2^n - 1 is exact for the n where
        // it matters. For x > 1 (n ≥ 1) build 2^(n-1) and double at the
        // end, so n = 128 / 1024 (results up to the largest finite value)
        // still works and larger ones overflow to +inf.
        let r = if small {
            let s = self.pow2_from_biased(v);
            let one = self.c(1.0);
            let s1 = self.sub(s, one);
            self.mul_add(s, em1, s1)
        } else {
            let big = self.cmp_c(FloatCC::GreaterThan, x, 1.0);
            let adjust = self.select_cc(big, -1.0, 0.0);
            let v = self.add(v, adjust);
            let s = self.pow2_from_biased(v);
            let one = self.select_cc(big, 0.5, 1.0);
            let s1 = self.sub(s, one);
            let r = self.mul_add(s, em1, s1);
            let scale = self.select_cc(big, 2.0, 1.0);
            self.mul(r, scale)
        };
        // expm1 has the sign of x; this also gives expm1(-0) = -0.
        self.or_sign_of(r, x)
    }

    pub(super) fn expm1(&mut self, x: Value) -> Value {
        let (lo, hi) = if self.wide() {
            (-40.0, 709.9)
        } else {
            (-20.0, 88.8)
        };
        let x = self.max_c(x, lo);
        let x = self.min_c(x, hi);
        self.expm1_core(x, false)
    }
}
