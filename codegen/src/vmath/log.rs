//! `log` and `log1p`: fdlibm's (musl's) algorithm without branches.
//!
//! `x = 2^k·m` with `m ∈ [√½, √2)` taken from the bits, `f = m - 1`,
//! `s = f/(2 + f)` and `log(1 + f) = f - f²/2 + s·(f²/2 + R(s²))` with
//! musl's minimax `R`; then `log x = k·ln2_hi + (… + k·ln2_lo)`. Special
//! arguments (`0`, `+inf`, negative, NaN) are patched in by selects at the
//! end.

use super::emit::Em;
use cranelift_codegen::ir::Value;
use cranelift_codegen::ir::condcodes::FloatCC;

/// musl `logf` (`f32`) and `log` (`f64`) constants.
struct LogConsts {
    ln2_hi: f64,
    ln2_lo: f64,
    /// `Lg1, Lg2, …` (`R(z) = z·(Lg1 + z·(Lg2 + …))`, split into even and
    /// odd terms in `w = z²` as musl does).
    lg: &'static [f64],
    /// Bits of `√½`'s high part: the reduction moves `m` into `[√½, √2)`.
    sqrt_half_bits: i64,
    one_bits: i64,
    mant_mask: i64,
    /// `2^scale` lifts subnormal arguments into the normal range.
    subnormal_scale: i32,
}

const LOG_F32: LogConsts = LogConsts {
    ln2_hi: 0.6931381225585938,   // 0x3f317180
    ln2_lo: 9.05800061445916e-06, // 0x3717f7d1
    lg: &[
        0.6666666269302368,  // 0xaaaaaa.0p-24
        0.40000972151756287, // 0xccce13.0p-25
        0.2849878668785095,  // 0x91e9ee.0p-25
        0.24279078841209412, // 0xf89e26.0p-26
    ],
    sqrt_half_bits: 0x3f35_04f3,
    one_bits: 0x3f80_0000,
    mant_mask: 0x007f_ffff,
    subnormal_scale: 25,
};

// musl's literals, kept digit for digit.
#[allow(clippy::excessive_precision)]
const LOG_F64: LogConsts = LogConsts {
    ln2_hi: 6.93147180369123816490e-01,
    ln2_lo: 1.90821492927058770002e-10,
    lg: &[
        6.666666666666735130e-01,
        3.999999999940941908e-01,
        2.857142874366239149e-01,
        2.222219843214978396e-01,
        1.818357216161805012e-01,
        1.531383769920937332e-01,
        1.479819860511658591e-01,
    ],
    sqrt_half_bits: 0x3fe6_a09e_0000_0000,
    one_bits: 0x3ff0_0000_0000_0000,
    mant_mask: 0x000f_ffff_ffff_ffff,
    subnormal_scale: 54,
};

impl Em<'_, '_> {
    fn log_consts(&self) -> &'static LogConsts {
        if self.wide() { &LOG_F64 } else { &LOG_F32 }
    }

    /// `log(u) + c` for `u` positive, finite and (unless `subnormals`)
    /// normal; other `u` give unspecified values, patched by the caller.
    fn log_core(&mut self, u: Value, c: Option<Value>, subnormals: bool) -> Value {
        let lc = self.log_consts();
        let (u, k_adjust) = if subnormals {
            let min_normal = if self.wide() {
                f64::MIN_POSITIVE
            } else {
                f64::from(f32::MIN_POSITIVE)
            };
            let sub = self.cmp_c(FloatCC::LessThan, u, min_normal);
            let scale = f64::from(lc.subnormal_scale);
            let factor = self.select_cc(sub, scale.exp2(), 1.0);
            let u = self.mul(u, factor);
            (u, Some(self.select_cc(sub, scale, 0.0)))
        } else {
            (u, None)
        };
        // k = exponent of u·(√2 / 1) rounded down; m = u / 2^k ∈ [√½, √2).
        let bits = self.bits_of(u);
        let bits = self.iadd_c(bits, lc.one_bits - lc.sqrt_half_bits);
        let mant = self.mant_bits();
        let e = self.ushr(bits, mant);
        // The biased exponent as a float: OR it under 2^p's bits, subtract
        // 2^p + bias (no int-to-float conversion needed).
        let p2 = (mant as f64).exp2();
        let e = self.ior_c(e, (self.bias() + mant) << mant);
        let k = self.float_of(e);
        let kbias = self.c(p2 + self.bias() as f64);
        let mut k = self.sub(k, kbias);
        if let Some(adjust) = k_adjust {
            k = self.sub(k, adjust);
        }
        let m = self.iand_c(bits, lc.mant_mask);
        let m = self.iadd_c(m, lc.sqrt_half_bits);
        let m = self.float_of(m);
        let one = self.c(1.0);
        let f = self.sub(m, one);
        let two = self.c(2.0);
        let denom = self.add(f, two);
        let s = self.div(f, denom);
        let z = self.mul(s, s);
        let w = self.mul(z, z);
        // R = z·(Lg1 + w·(Lg3 + …)) + w·(Lg2 + w·(Lg4 + …)).
        let odd: Vec<f64> = lc.lg.iter().step_by(2).copied().collect();
        let even: Vec<f64> = lc.lg.iter().skip(1).step_by(2).copied().collect();
        let t2 = self.horner(w, &odd);
        let t2 = self.mul(z, t2);
        let t1 = self.horner(w, &even);
        let t1 = self.mul(w, t1);
        let r = self.add(t2, t1);
        let half = self.c(0.5);
        let hf = self.mul(half, f);
        let hfsq = self.mul(hf, f);
        // s·(hfsq + R) + (k·ln2_lo + c) - hfsq + f + k·ln2_hi
        let ln2_lo = self.c(lc.ln2_lo);
        let mut lo = self.mul(k, ln2_lo);
        if let Some(c) = c {
            lo = self.add(lo, c);
        }
        let hr = self.add(hfsq, r);
        let acc = self.mul_add(s, hr, lo);
        let acc = self.sub(acc, hfsq);
        let acc = self.add(acc, f);
        let ln2_hi = self.c(lc.ln2_hi);
        self.mul_add(k, ln2_hi, acc)
    }

    /// `r` with `log`'s special cases for argument `u`: `±0 → -inf`,
    /// `+inf → +inf`, negative or NaN → NaN.
    fn log_specials(&mut self, u: Value, r: Value) -> Value {
        let zero = self.cmp_c(FloatCC::Equal, u, 0.0);
        let minus_inf = self.c(f64::NEG_INFINITY);
        let r = self.select(zero, minus_inf, r);
        let inf = self.c(f64::INFINITY);
        let is_inf = self.cmp(FloatCC::Equal, u, inf);
        let r = self.select(is_inf, inf, r);
        let ok = self.cmp_c(FloatCC::GreaterThanOrEqual, u, 0.0);
        let nan = self.c(f64::NAN);
        self.select(ok, r, nan)
    }

    pub(super) fn log(&mut self, x: Value) -> Value {
        let r = self.log_core(x, None, true);
        self.log_specials(x, r)
    }

    pub(super) fn log1p(&mut self, x: Value) -> Value {
        // u = 1 + x rounds; c = (x - (u - 1))/u is the rounding error
        // relative to u (u - 1 is exact for every u this can give), and
        // log1p(x) = log(u) + c to first order.
        let one = self.c(1.0);
        let u = self.add(one, x);
        let um1 = self.sub(u, one);
        let err = self.sub(x, um1);
        let c = self.div(err, u);
        let r = self.log_core(u, Some(c), false);
        let r = self.log_specials(u, r);
        // log1p has the sign of x; this also gives log1p(-0) = -0.
        self.or_sign_of(r, x)
    }
}
