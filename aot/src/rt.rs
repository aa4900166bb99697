//! Run-time support of the generated kernels, emitted verbatim into every
//! generated module (so the module needs nothing but `core`/`std`).
//!
//! The math functions are the algorithms of passfold-codegen's `vmath`
//! (Cody–Waite range reduction, the JIT's polynomials for `e^t - 1`, musl's
//! `log`), written without branches: every choice is a `select` on a
//! comparison, powers of two are built in the exponent bits, and nothing
//! calls libm, so LLVM vectorizes them inside lane loops. `FMA` chooses
//! `mul_add` (one instruction where the target has FMA; a slow libm call
//! where it does not, so the baseline level passes `false` and gets
//! `a * b + c`). NaN arguments give NaN results.
#![allow(dead_code, clippy::excessive_precision, clippy::approx_constant)]

/// `c ? a : b`: a select LLVM turns into a blend in vector code.
#[inline(always)]
pub fn sel<T>(c: bool, a: T, b: T) -> T {
    if c { a } else { b }
}

macro_rules! float_math {
    ($m:ident, $F:ident, $U:ident, $k:ident) => {
        /// Branch-free math of one float type (see the module docs).
        pub mod $m {
            use super::sel;
            use super::$k as k;

            /// `a * b + c`, fused when `FMA`.
            #[inline(always)]
            pub fn mla<const FMA: bool>(a: $F, b: $F, c: $F) -> $F {
                if FMA { a.mul_add(b, c) } else { a * b + c }
            }

            /// Horner's rule: `c[0] + t·(c[1] + t·(…))`.
            #[inline(always)]
            fn horner<const FMA: bool, const N: usize>(t: $F, c: &[$F; N]) -> $F {
                let mut p = c[N - 1];
                let mut i = N - 1;
                while i > 0 {
                    i -= 1;
                    p = mla::<FMA>(p, t, c[i]);
                }
                p
            }

            /// NaN-propagating maximum: `x < y ? y : x`, then a NaN `y`.
            #[inline(always)]
            pub fn max(x: $F, y: $F) -> $F {
                let r = sel(x < y, y, x);
                sel(y != y, y, r)
            }

            /// NaN-propagating minimum.
            #[inline(always)]
            pub fn min(x: $F, y: $F) -> $F {
                let r = sel(x > y, y, x);
                sel(y != y, y, r)
            }

            #[inline(always)]
            fn max_c(x: $F, lo: $F) -> $F {
                sel(x < lo, lo, x)
            }

            #[inline(always)]
            fn min_c(x: $F, hi: $F) -> $F {
                sel(x > hi, hi, x)
            }

            /// `|x|` by clearing the sign bit.
            #[inline(always)]
            pub fn abs(x: $F) -> $F {
                <$F>::from_bits(x.to_bits() & !k::SIGN)
            }

            #[inline(always)]
            fn or_sign_of(r: $F, x: $F) -> $F {
                <$F>::from_bits(r.to_bits() | (x.to_bits() & k::SIGN))
            }

            /// `2^n` from `v = n + magic + bias` (its low mantissa bits are `n + bias`).
            #[inline(always)]
            fn pow2_from_biased(v: $F) -> $F {
                <$F>::from_bits(v.to_bits() << k::MANT)
            }

            /// `(v, t)`: `v = x·log2 e + magic + bias`, `t = x - n·ln 2`.
            #[inline(always)]
            fn reduce<const FMA: bool>(x: $F) -> ($F, $F) {
                let shift = k::MAGIC + k::BIAS_F;
                let v = mla::<FMA>(x, k::LOG2E, shift);
                let n = v - shift;
                let t = mla::<FMA>(n, -k::LN2_HI, x);
                let t = mla::<FMA>(n, -k::LN2_LO, t);
                (v, t)
            }

            /// `s·e^t` as `s + s·(e^t - 1)`, `e^t - 1 = t + t²·Q(t)`.
            #[inline(always)]
            fn scaled_exp<const FMA: bool>(t: $F, s: $F) -> $F {
                let q = horner::<FMA, { k::EXP_Q.len() }>(t, &k::EXP_Q);
                let em1 = mla::<FMA>(t * t, q, t);
                mla::<FMA>(s, em1, s)
            }

            /// `e^x`.
            #[inline(always)]
            pub fn exp<const FMA: bool>(x: $F) -> $F {
                let x = max_c(x, k::EXP_LO);
                let x = min_c(x, k::EXP_HI);
                let neg = x < 0.0;
                let (v, t) = reduce::<FMA>(x);
                let v = v + sel(neg, k::DOWN, -1.0);
                let s = pow2_from_biased(v);
                let f = scaled_exp::<FMA>(t, s);
                f * sel(neg, k::DOWN_SCALE, 2.0)
            }

            /// `e^x` for `x ≤ 0` (the shifted arguments of softmax).
            #[inline(always)]
            pub fn exp_nonpositive<const FMA: bool>(x: $F) -> $F {
                let x = max_c(x, k::NONPOS_LO);
                let (v, t) = reduce::<FMA>(x);
                scaled_exp::<FMA>(t, pow2_from_biased(v))
            }

            /// `x·2^k` for an integer-valued `k`, rounded once.
            #[inline(always)]
            fn scale_by_pow2(x: $F, k: $F) -> $F {
                let k = max_c(k, -k::SCALE_CLAMP);
                let mut kk = min_c(k, k::SCALE_CLAMP);
                let mut x = x;
                let mut step = 0;
                while step < 2 {
                    let up = kk > k::EMAX;
                    let dn = kk < k::EMIN;
                    let f = sel(up, k::TWO_EMAX, sel(dn, k::TWO_DOWN, 1.0));
                    x = x * f;
                    kk = kk - sel(up, k::EMAX, sel(dn, k::DOWN2, 0.0));
                    step += 1;
                }
                let v = kk + (k::MAGIC + k::BIAS_F);
                x * pow2_from_biased(v)
            }

            /// `2^x`: exact powers of two for integer `x`.
            #[inline(always)]
            pub fn exp2<const FMA: bool>(x: $F) -> $F {
                let x = max(x, -k::EXP2_BOUND);
                let x = min(x, k::EXP2_BOUND);
                let n = (x + k::MAGIC) - k::MAGIC;
                let t = (x - n) * k::LN2;
                scale_by_pow2(exp::<FMA>(t), n)
            }

            /// Round to nearest, ties to even, by the magic-bias trick.
            #[inline(always)]
            pub fn round(x: $F) -> $F {
                let ax = abs(x);
                let r = (ax + k::ROUND_BIG) - k::ROUND_BIG;
                let r = or_sign_of(r, x);
                sel(ax < k::ROUND_BIG, r, x)
            }

            /// `1`, `-1`, or `x` itself (±0, NaN).
            #[inline(always)]
            pub fn sign(x: $F) -> $F {
                sel(x > 0.0, 1.0, sel(x < 0.0, -1.0, x))
            }

            /// `expm1` without clamping; `small`: `x ≤ 88` (f32) / `709` (f64).
            #[inline(always)]
            fn expm1_core<const FMA: bool>(x: $F, small: bool) -> $F {
                let (v, t) = reduce::<FMA>(x);
                let q = horner::<FMA, { k::EXPM1_Q.len() }>(t, &k::EXPM1_Q);
                let em1 = mla::<FMA>(t * t, q, t);
                let r = if small {
                    let s = pow2_from_biased(v);
                    mla::<FMA>(s, em1, s - 1.0)
                } else {
                    let big = x > 1.0;
                    let s = pow2_from_biased(v + sel(big, -1.0, 0.0));
                    let r = mla::<FMA>(s, em1, s - sel(big, 0.5, 1.0));
                    r * sel(big, 2.0, 1.0)
                };
                or_sign_of(r, x)
            }

            /// `e^x - 1`, accurate near 0.
            #[inline(always)]
            pub fn expm1<const FMA: bool>(x: $F) -> $F {
                let x = max_c(x, k::EXPM1_LO);
                let x = min_c(x, k::EXP_HI);
                expm1_core::<FMA>(x, false)
            }

            /// `log(u) + c` for positive finite `u` (normal unless `subnormals`).
            #[inline(always)]
            fn log_core<const FMA: bool>(u: $F, c: $F, subnormals: bool) -> $F {
                let (u, k_adjust) = if subnormals {
                    let sub = u < k::MIN_NORMAL;
                    (
                        u * sel(sub, k::SUBNORMAL_FACTOR, 1.0),
                        sel(sub, k::SUBNORMAL_SCALE, 0.0),
                    )
                } else {
                    (u, 0.0)
                };
                let bits = u
                    .to_bits()
                    .wrapping_add(k::ONE_BITS.wrapping_sub(k::SQRT_HALF_BITS));
                let e = (bits >> k::MANT) | (k::BIAS_PLUS_MANT << k::MANT);
                let kk = <$F>::from_bits(e) - (k::TWO_MANT + k::BIAS_F) - k_adjust;
                let m = <$F>::from_bits((bits & k::MANT_MASK).wrapping_add(k::SQRT_HALF_BITS));
                let f = m - 1.0;
                let s = f / (f + 2.0);
                let z = s * s;
                let w = z * z;
                let t2 = z * horner::<FMA, { k::LG_ODD.len() }>(w, &k::LG_ODD);
                let t1 = w * horner::<FMA, { k::LG_EVEN.len() }>(w, &k::LG_EVEN);
                let r = t2 + t1;
                let hfsq = (0.5 * f) * f;
                let lo = kk * k::LOG_LN2_LO + c;
                let acc = mla::<FMA>(s, hfsq + r, lo);
                let acc = (acc - hfsq) + f;
                mla::<FMA>(kk, k::LOG_LN2_HI, acc)
            }

            #[inline(always)]
            fn log_specials(u: $F, r: $F) -> $F {
                let r = sel(u == 0.0, <$F>::NEG_INFINITY, r);
                let r = sel(u == <$F>::INFINITY, <$F>::INFINITY, r);
                sel(u >= 0.0, r, <$F>::NAN)
            }

            /// `ln x`.
            #[inline(always)]
            pub fn log<const FMA: bool>(x: $F) -> $F {
                log_specials(x, log_core::<FMA>(x, 0.0, true))
            }

            /// `ln(1 + x)`, accurate near 0.
            #[inline(always)]
            pub fn log1p<const FMA: bool>(x: $F) -> $F {
                let u = 1.0 + x;
                let c = (x - (u - 1.0)) / u;
                let r = log_specials(u, log_core::<FMA>(u, c, false));
                or_sign_of(r, x)
            }

            /// `tanh x` as `sign(x)·e/(e + 2)`, `e = expm1(2|x|)`.
            #[inline(always)]
            pub fn tanh<const FMA: bool>(x: $F) -> $F {
                let a = min_c(abs(x), k::TANH_HI);
                let e = expm1_core::<FMA>(a + a, true);
                or_sign_of(e / (e + 2.0), x)
            }

            /// `1/(1 + e^-x)` without overflow.
            #[inline(always)]
            pub fn sigmoid<const FMA: bool>(x: $F) -> $F {
                let e = exp::<FMA>(0.0 - abs(x));
                sel(x < 0.0, e, 1.0) / (1.0 + e)
            }

            /// `ln(1 + e^x)` as `max(x, 0) + log1p(exp(-|x|))`.
            #[inline(always)]
            pub fn softplus<const FMA: bool>(x: $F) -> $F {
                let e = exp::<FMA>(0.0 - abs(x));
                max_c(x, 0.0) + log1p::<FMA>(e)
            }

            /// `1/√x`.
            #[inline(always)]
            pub fn rsqrt(x: $F) -> $F {
                1.0 / x.sqrt()
            }

            /// `x^p` for a constant `p` (the reference formula).
            #[inline(always)]
            pub fn powf(x: $F, p: $F) -> $F {
                if p == 2.0 {
                    x * x
                } else if p == 1.0 {
                    x
                } else if p == 0.5 {
                    x.sqrt()
                } else {
                    x.powf(p)
                }
            }
        }
    };
}

/// Constants of the `f32` functions (`vmath`'s, rounded to `f32`).
mod k32 {
    pub const MANT: u32 = 23;
    pub const SIGN: u32 = 0x8000_0000;
    pub const MAGIC: f32 = 12582912.0;
    pub const BIAS_F: f32 = 127.0;
    pub const LOG2E: f32 = 1.4426950216293335;
    pub const LN2_HI: f32 = 0.693145751953125;
    pub const LN2_LO: f32 = 1.428606765330187e-06;
    pub const LN2: f32 = core::f32::consts::LN_2;
    pub const EXP_Q: [f32; 5] = [
        0.4999999345170046,
        0.16666520689843034,
        0.04166838736288612,
        0.008368709823201027,
        0.001381461317937623,
    ];
    pub const EXPM1_Q: [f32; 7] = [
        0.5,
        0.16666666666666666,
        0.041666666666666664,
        0.008333333333333333,
        0.001388888888888889,
        0.0001984126984126984,
        2.48015873015873e-05,
    ];
    pub const EXP_LO: f32 = -104.0;
    pub const EXP_HI: f32 = 88.8;
    pub const DOWN: f32 = 64.0;
    pub const DOWN_SCALE: f32 = 5.421010862427522e-20; // 2^-64
    pub const NONPOS_LO: f32 = -88.0;
    pub const EXPM1_LO: f32 = -20.0;
    pub const TANH_HI: f32 = 10.0;
    pub const EXP2_BOUND: f32 = 300.0;
    pub const SCALE_CLAMP: f32 = 300.0;
    pub const EMAX: f32 = 127.0;
    pub const EMIN: f32 = -126.0;
    pub const DOWN2: f32 = -102.0;
    pub const TWO_EMAX: f32 = 1.7014118346046923e38; // 2^127
    pub const TWO_DOWN: f32 = 1.9721522630525295e-31; // 2^-102
    pub const ROUND_BIG: f32 = 8388608.0; // 2^23
    pub const MIN_NORMAL: f32 = f32::MIN_POSITIVE;
    pub const SUBNORMAL_FACTOR: f32 = 33554432.0; // 2^25
    pub const SUBNORMAL_SCALE: f32 = 25.0;
    pub const ONE_BITS: u32 = 0x3f80_0000;
    pub const SQRT_HALF_BITS: u32 = 0x3f35_04f3;
    pub const MANT_MASK: u32 = 0x007f_ffff;
    pub const BIAS_PLUS_MANT: u32 = 127 + 23;
    pub const TWO_MANT: f32 = 8388608.0;
    pub const LOG_LN2_HI: f32 = 0.6931381225585938;
    pub const LOG_LN2_LO: f32 = 9.05800061445916e-06;
    pub const LG_ODD: [f32; 2] = [0.6666666269302368, 0.2849878668785095];
    pub const LG_EVEN: [f32; 2] = [0.40000972151756287, 0.24279078841209412];
}

/// Constants of the `f64` functions.
mod k64 {
    pub const MANT: u32 = 52;
    pub const SIGN: u64 = 0x8000_0000_0000_0000;
    pub const MAGIC: f64 = 6755399441055744.0; // 1.5·2^52
    pub const BIAS_F: f64 = 1023.0;
    pub const LOG2E: f64 = core::f64::consts::LOG2_E;
    pub const LN2_HI: f64 = 0.6931471803691238;
    pub const LN2_LO: f64 = 1.9082149292705877e-10;
    pub const LN2: f64 = core::f64::consts::LN_2;
    pub const EXP_Q: [f64; 12] = [
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
    ];
    pub const EXPM1_Q: [f64; 13] = [
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
    pub const EXP_LO: f64 = -746.0;
    pub const EXP_HI: f64 = 709.9;
    pub const DOWN: f64 = 512.0;
    pub const DOWN_SCALE: f64 = 7.458340731200207e-155; // 2^-512
    pub const NONPOS_LO: f64 = -709.0;
    pub const EXPM1_LO: f64 = -40.0;
    pub const TANH_HI: f64 = 20.0;
    pub const EXP2_BOUND: f64 = 2200.0;
    pub const SCALE_CLAMP: f64 = 2200.0;
    pub const EMAX: f64 = 1023.0;
    pub const EMIN: f64 = -1022.0;
    pub const DOWN2: f64 = -969.0;
    pub const TWO_EMAX: f64 = 8.98846567431158e307; // 2^1023
    pub const TWO_DOWN: f64 = 2.0041683600089728e-292; // 2^-969
    pub const ROUND_BIG: f64 = 4503599627370496.0; // 2^52
    pub const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    pub const SUBNORMAL_FACTOR: f64 = 18014398509481984.0; // 2^54
    pub const SUBNORMAL_SCALE: f64 = 54.0;
    pub const ONE_BITS: u64 = 0x3ff0_0000_0000_0000;
    pub const SQRT_HALF_BITS: u64 = 0x3fe6_a09e_0000_0000;
    pub const MANT_MASK: u64 = 0x000f_ffff_ffff_ffff;
    pub const BIAS_PLUS_MANT: u64 = 1023 + 52;
    pub const TWO_MANT: f64 = 4503599627370496.0;
    pub const LOG_LN2_HI: f64 = 6.93147180369123816490e-01;
    pub const LOG_LN2_LO: f64 = 1.90821492927058770002e-10;
    pub const LG_ODD: [f64; 4] = [
        6.666666666666735130e-01,
        2.857142874366239149e-01,
        1.818357216161805012e-01,
        1.479819860511658591e-01,
    ];
    pub const LG_EVEN: [f64; 3] = [
        3.999999999940941908e-01,
        2.222219843214978396e-01,
        1.531383769920937332e-01,
    ];
}

float_math!(f32, f32, u32, k32);
float_math!(f64, f64, u64, k64);

/// The `k` largest values seen (IEEE total order, descending) and whether
/// a NaN was seen: `topk[..](x, k)` is the `k`-th, `-inf` with fewer than
/// `k` values, NaN after any NaN.
pub struct TopK<const K: usize> {
    values: [f64; K],
    filled: usize,
    nan: bool,
}

impl<const K: usize> TopK<K> {
    /// No values yet.
    #[inline(always)]
    pub fn new() -> Self {
        TopK {
            values: [0.0; K],
            filled: 0,
            nan: false,
        }
    }

    /// Adds a value (an `f32` widens exactly, keeping its order).
    #[inline(always)]
    pub fn push(&mut self, x: f64) {
        if x.is_nan() {
            self.nan = true;
            return;
        }
        if K == 0 {
            return;
        }
        let mut pos = if self.filled < K {
            self.filled += 1;
            self.filled - 1
        } else if x.total_cmp(&self.values[K - 1]).is_gt() {
            K - 1
        } else {
            return;
        };
        while pos > 0 && self.values[pos - 1].total_cmp(&x).is_lt() {
            self.values[pos] = self.values[pos - 1];
            pos -= 1;
        }
        self.values[pos] = x;
    }

    /// The `k`-th largest value.
    #[inline(always)]
    pub fn result(&self) -> f64 {
        if self.nan {
            f64::NAN
        } else if K == 0 || self.filled < K {
            f64::NEG_INFINITY
        } else {
            self.values[K - 1]
        }
    }
}

/// `(origin, length)` of a dimension `Σ c·extent + constant` (as
/// `passfold_dsl::Dim::layout`): `None` on overflow, `(0, 0)` when an
/// extent is empty.
pub fn dim_layout(terms: &[(usize, i64)], constant: i64, ext: &[i64]) -> Option<(i64, i64)> {
    let (mut lo, mut hi) = (constant, constant);
    for &(e, c) in terms {
        let len = ext[e];
        if len <= 0 {
            return Some((0, 0));
        }
        let top = c.checked_mul(len - 1)?;
        if top < 0 {
            lo = lo.checked_add(top)?;
        } else {
            hi = hi.checked_add(top)?;
        }
    }
    Some((lo.checked_neg()?, hi.checked_sub(lo)?.checked_add(1)?))
}

/// Elements of a tensor with these dimension lengths; `None` when the
/// count (or its byte size) does not fit the machine.
pub fn tensor_len(lens: &[i64], elem_bytes: i64) -> Option<usize> {
    let mut n: i64 = 1;
    for &l in lens {
        n = n.checked_mul(l)?;
    }
    let bytes = n.checked_mul(elem_bytes.max(8))?;
    if bytes > isize::MAX as i64 {
        return None;
    }
    usize::try_from(n).ok()
}
