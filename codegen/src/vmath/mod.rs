//! Vector (and scalar) math emitted inline into a `FunctionBuilder`.
//!
//! Every function takes a value of type `f32x4`, `f64x2`, `f32` or `f64`
//! and returns values of the same type, computed lane by lane with one
//! algorithm for all four types: the scalar forms give bit-identical results
//! to a lane of the vector forms, so scalar code can use them too. They
//! emit only what both the x86-64 (SSE2 baseline) and aarch64 back ends
//! lower inline for 128-bit vectors: `fma` only if [`Features::fma`],
//! otherwise `fmul` + `fadd`; no `nearest`/`floor` (the magic-bias trick
//! rounds); selects on compare masks; integer ops on the bit patterns.
//! No function emits a call.
//!
//! Error bounds are measured by `runtime/tests/vmath.rs`
//! (`cargo test -p passfold-runtime --test vmath -- --nocapture` prints
//! them). For `f32`: the largest `|result - exact| / ULP` against an `f64`
//! reference over every 1021st `f32` bit pattern plus special values
//! (every pattern for `exp`, every 13th otherwise, with `RUN_SLOW_TESTS=1`),
//! for both instruction selections (host with fma, portable without); a
//! figure below 1.5 means at most 1 ULP from the correctly rounded result.
//! For `f64`: the largest distance in ULP from the host's `f64` libm
//! (itself about 0.5 ULP from exact) on 2^18 sampled arguments, so those
//! are estimates. The tests assert the bounds written here.
//!
//! NaN arguments give NaN results (the payload is not specified). Nothing
//! here traps or reads memory.

mod compose;
mod emit;
mod exp;
mod harness;
mod log;

pub use harness::{map_function, map_signature};

use crate::isa::Features;
use cranelift_codegen::ir::Value;
use cranelift_frontend::FunctionBuilder;
use emit::Em;

/// `e^x`.
///
/// Error (f32, every float): 1.014 ULP with fma and 0.989 without — at
/// most 1 ULP from the correctly rounded result for every `f32`; subnormal
/// results 0.749 subnormal ULP (they are rounded twice). f64: 1 ULP from
/// libm.
/// `exp(-inf) = +0`, `exp(x) = +0` below -103.97 (f32) / -745.13 (f64),
/// `+inf` above 88.722839 (f32) / 709.782712893384 (f64) and for `+inf`,
/// `exp(±0) = 1`, NaN → NaN.
pub fn exp(fb: &mut FunctionBuilder, features: Features, x: Value) -> Value {
    Em::new(fb, features, x).exp(x)
}

/// `e^x` for `x ≤ 0` (the shifted arguments of softmax), leaner than
/// [`exp`]: one `max` instead of clamps and selects.
///
/// Error as [`exp`] (the same arithmetic) wherever the result is a normal
/// float (x ≥ -87.336544 for f32, ≥ -708.39 for f64). Results flush to `+0` below about
/// `-87.68` (f32) / `-708.74` (f64), where the true value is below
/// `2^-126.5` / `2^-1022.5`; between that and the smallest normal result
/// they are subnormal, within 1 subnormal ULP. `exp_nonpositive(-inf) = +0`,
/// NaN → NaN. The result is also correct for `0 < x ≤ 88.0` (f32) /
/// `709.0` (f64); above that it is unspecified (NaN or a wrong finite value).
pub fn exp_nonpositive(fb: &mut FunctionBuilder, features: Features, x: Value) -> Value {
    Em::new(fb, features, x).exp_nonpositive(x)
}

/// `e^x` as `(p, k)` with `e^x ≈ p·2^k`, for the Two-Pass softmax
/// accumulator: `k = round(x·log2 e)` as an integer-valued float of the same
/// type and `p = e^(x - k·ln 2) ∈ [0.7071, 1.4143]`, never overflowing.
///
/// Error of `p` against `e^(x - k·ln 2)` (f32, 1/1021 sample): 0.973 ULP
/// with fma, 0.939 without for `|x| ≤ 88.7`; 0.979 / 0.941 for
/// `|x| ≤ 2839` (`|k| < 2^12`, where a three-part `ln 2` keeps `k·ln 2`
/// exact without fma); with fma 0.979 up to `|x| = 2^21·ln 2`, while
/// without fma the reduction is inexact past `|k| = 2^12` (10^6 ULP
/// measured near 1.4e6). `p` lies in
/// `[0.707, 1.415]` for `|x| ≤ 88.7` and in `[0.5, 2]` always. For
/// `|x| > 2^21·ln 2` (f32) / `2^50·ln 2` (f64), `p = 1` and `k` is an
/// integer within `2 + 2^-22·|x·log2 e|` of `x·log2 e` (as uncertain as
/// `x`'s own ULP). `x = ±inf` gives `(1, ±inf)`, NaN gives `(NaN, NaN)`;
/// `k = ±inf` also for `|x| > f32::MAX / log2 e` (f32). `exp_split(±0) =
/// (1, 0)`.
pub fn exp_split(fb: &mut FunctionBuilder, features: Features, x: Value) -> (Value, Value) {
    Em::new(fb, features, x).exp_split(x)
}

/// `x·2^k` for an integer-valued float `k` of `x`'s type, rounded once
/// (exactly as `ldexp`; verified bit-exact for f32 against an exact
/// reference), for any `k`: `k` beyond ±300 (f32) / ±2200 (f64) acts as
/// ±300 / ±2200, which already overflows or underflows every nonzero
/// finite `x`. `k = -inf` gives `±0` for finite `x`, `k = +inf` gives
/// `±inf` for nonzero `x`; `x·2^k` keeps `x`'s NaN, infinity and zero
/// (`0·2^+inf = 0`). A NaN `k` gives an unspecified value.
pub fn scale_by_pow2(fb: &mut FunctionBuilder, features: Features, x: Value, k: Value) -> Value {
    Em::new(fb, features, x).scale_by_pow2(x, k)
}

/// `ln x`.
///
/// Error (f32): 0.814 ULP (every 13th float), with and without fma; f64:
/// 1 ULP from libm. `ln(±0) =
/// -inf`, `ln(+inf) = +inf`, `ln(x < 0) = NaN`, `ln 1 = +0`, NaN → NaN;
/// subnormal arguments are exact-scaled first.
pub fn log(fb: &mut FunctionBuilder, features: Features, x: Value) -> Value {
    Em::new(fb, features, x).log(x)
}

/// `ln(1 + x)`, accurate near 0.
///
/// Error (f32): 0.825 ULP (every 13th float); f64: 1 ULP from libm.
/// `log1p(±0) = ±0` (and `x`
/// exactly for tiny `x`), `log1p(-1) = -inf`, `log1p(x < -1) = NaN`,
/// `log1p(+inf) = +inf`, NaN → NaN.
pub fn log1p(fb: &mut FunctionBuilder, features: Features, x: Value) -> Value {
    Em::new(fb, features, x).log1p(x)
}

/// `e^x - 1`, accurate near 0.
///
/// Error (f32): 1.439 ULP with fma (every 13th float), 1.348 without;
/// f64: 2 ULP from libm.
/// `expm1(±0) = ±0` (and `x`
/// exactly for tiny `x`), `-1` below -17.33 (f32) / -37.43 (f64) and for
/// `-inf`, `+inf` above 88.722839 (f32) / 709.782712893384 (f64) and for
/// `+inf`, NaN → NaN.
pub fn expm1(fb: &mut FunctionBuilder, features: Features, x: Value) -> Value {
    Em::new(fb, features, x).expm1(x)
}

/// `tanh x` as `sign(x)·e/(e + 2)` with `e = expm1(2|x|)`.
///
/// Error (f32): 2.417 ULP (every 13th float; worst near |x| = 0.02, where the division
/// adds to expm1's error); f64: 3 ULP from libm. Odd: `tanh(±0) = ±0`,
/// `tanh(±inf) = ±1`, `±1` past |x| = 10 (f32) / 20 (f64), NaN → NaN.
pub fn tanh(fb: &mut FunctionBuilder, features: Features, x: Value) -> Value {
    Em::new(fb, features, x).tanh(x)
}

/// `1/(1 + e^-x)`, as `passfold_dsl::math::sigmoid`: `1/(1 + e)` for
/// `x ≥ 0` and `e/(1 + e)` below, with `e = exp(-|x|)`.
///
/// Error (f32): 2.339 ULP with fma (every 13th float), 2.054 without; subnormal results (x
/// down to -103.97) 0.743 subnormal ULP; f64: 2 ULP from libm. `sigmoid(+inf) = 1`, `sigmoid(-inf) = +0`,
/// `sigmoid(±0) = 0.5`, NaN → NaN.
pub fn sigmoid(fb: &mut FunctionBuilder, features: Features, x: Value) -> Value {
    Em::new(fb, features, x).sigmoid(x)
}

/// `ln(1 + e^x)` as `max(x, 0) + log1p(exp(-|x|))`, as
/// `passfold_dsl::math::softplus`.
///
/// Error (f32): 1.619 ULP (every 13th float); f64: 2 ULP from libm. `softplus(+inf) = +inf`,
/// `softplus(-inf) = +0`, `x` itself for large `x`, NaN → NaN.
pub fn softplus(fb: &mut FunctionBuilder, features: Features, x: Value) -> Value {
    Em::new(fb, features, x).softplus(x)
}

/// `√x`: the native instruction, correctly rounded (0.5 ULP).
/// `√-0 = -0`, `√+inf = +inf`, negative → NaN.
pub fn sqrt(fb: &mut FunctionBuilder, features: Features, x: Value) -> Value {
    Em::new(fb, features, x).sqrt(x)
}

/// `1/√x` as a native `sqrt` and a divide (two roundings): 1.476 ULP
/// (f32), 0 from `1.0 / x.sqrt()` (f64).
/// `rsqrt(+0) = +inf`, `rsqrt(-0) = -inf`, `rsqrt(+inf) = +0`,
/// negative → NaN.
pub fn rsqrt(fb: &mut FunctionBuilder, features: Features, x: Value) -> Value {
    Em::new(fb, features, x).rsqrt(x)
}

/// Every function of this module, for tests, benchmarks and dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MathOp {
    /// [`exp`].
    Exp,
    /// [`exp_nonpositive`].
    ExpNonpositive,
    /// [`exp_split`]: two results `(p, k)`.
    ExpSplit,
    /// [`scale_by_pow2`]: two arguments `(x, k)`.
    ScaleByPow2,
    /// [`log`].
    Log,
    /// [`log1p`].
    Log1p,
    /// [`expm1`].
    Expm1,
    /// [`tanh`].
    Tanh,
    /// [`sigmoid`].
    Sigmoid,
    /// [`softplus`].
    Softplus,
    /// [`sqrt`].
    Sqrt,
    /// [`rsqrt`].
    Rsqrt,
}

impl MathOp {
    /// Every operation.
    pub const ALL: [MathOp; 12] = [
        MathOp::Exp,
        MathOp::ExpNonpositive,
        MathOp::ExpSplit,
        MathOp::ScaleByPow2,
        MathOp::Log,
        MathOp::Log1p,
        MathOp::Expm1,
        MathOp::Tanh,
        MathOp::Sigmoid,
        MathOp::Softplus,
        MathOp::Sqrt,
        MathOp::Rsqrt,
    ];

    /// The function's name.
    pub fn name(self) -> &'static str {
        match self {
            MathOp::Exp => "exp",
            MathOp::ExpNonpositive => "exp_nonpositive",
            MathOp::ExpSplit => "exp_split",
            MathOp::ScaleByPow2 => "scale_by_pow2",
            MathOp::Log => "log",
            MathOp::Log1p => "log1p",
            MathOp::Expm1 => "expm1",
            MathOp::Tanh => "tanh",
            MathOp::Sigmoid => "sigmoid",
            MathOp::Softplus => "softplus",
            MathOp::Sqrt => "sqrt",
            MathOp::Rsqrt => "rsqrt",
        }
    }

    /// Emits the operation on `x` (and `y`, the `k` of [`scale_by_pow2`],
    /// ignored otherwise); the second result is [`exp_split`]'s `k`.
    pub fn emit(
        self,
        fb: &mut FunctionBuilder,
        features: Features,
        x: Value,
        y: Value,
    ) -> (Value, Option<Value>) {
        let one = |v| (v, None);
        match self {
            MathOp::Exp => one(exp(fb, features, x)),
            MathOp::ExpNonpositive => one(exp_nonpositive(fb, features, x)),
            MathOp::ExpSplit => {
                let (p, k) = exp_split(fb, features, x);
                (p, Some(k))
            }
            MathOp::ScaleByPow2 => one(scale_by_pow2(fb, features, x, y)),
            MathOp::Log => one(log(fb, features, x)),
            MathOp::Log1p => one(log1p(fb, features, x)),
            MathOp::Expm1 => one(expm1(fb, features, x)),
            MathOp::Tanh => one(tanh(fb, features, x)),
            MathOp::Sigmoid => one(sigmoid(fb, features, x)),
            MathOp::Softplus => one(softplus(fb, features, x)),
            MathOp::Sqrt => one(sqrt(fb, features, x)),
            MathOp::Rsqrt => one(rsqrt(fb, features, x)),
        }
    }
}
