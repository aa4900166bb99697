//! The reference semantics of the element-wise functions.
//!
//! Both the interpreter and the JIT's scalar helpers call these, so the
//! meaning of `sigmoid`, `softplus`, `sign` and friends is written once.
//! Each is the textbook formula, arranged so that it neither overflows nor
//! loses the sign of an infinity.

/// `1 / (1 + exp(-x))`, computed without overflow for large `|x|`.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `log(1 + exp(x))` as `max(x, 0) + log1p(exp(-|x|))`.
pub fn softplus(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `-1`, `0` (keeping the sign of zero), `1`, or NaN.
pub fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x
    }
}

/// `1 / sqrt(x)`.
pub fn rsqrt(x: f64) -> f64 {
    1.0 / x.sqrt()
}

/// `x^p` for a constant `p`: exact multiplication for `p = 2`, `sqrt` for `p = 0.5`.
pub fn powf(x: f64, p: f64) -> f64 {
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

/// The same functions in `f32`, for the declared-precision interpreter and
/// the JIT's scalar helpers.
pub mod f32 {
    /// See [`super::sigmoid`].
    pub fn sigmoid(x: f32) -> f32 {
        if x >= 0.0 {
            1.0 / (1.0 + (-x).exp())
        } else {
            let e = x.exp();
            e / (1.0 + e)
        }
    }

    /// See [`super::softplus`].
    pub fn softplus(x: f32) -> f32 {
        if x.is_nan() {
            return x;
        }
        x.max(0.0) + (-x.abs()).exp().ln_1p()
    }

    /// See [`super::powf`].
    pub fn powf(x: f32, p: f32) -> f32 {
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
