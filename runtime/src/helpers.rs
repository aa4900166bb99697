//! The scalar math helpers the generated code calls (see
//! `passfold_codegen::Helper`).
//!
//! Each is the formula the reference interpreter uses: `std` for `exp`, `exp2`,
//! `ln`, `ln_1p`, `exp_m1`, `tanh`, and `passfold_dsl::math` for `sigmoid`,
//! `softplus` and `powf`, in `f32` for the `f32` versions, so JIT results
//! equal `Precision::Declared` results on these operations.

use passfold_codegen::{Helper, MathFn};
use passfold_dsl::math;

extern "C" fn exp_f32(x: f32) -> f32 {
    x.exp()
}
extern "C" fn exp_f64(x: f64) -> f64 {
    x.exp()
}
extern "C" fn exp2_f32(x: f32) -> f32 {
    x.exp2()
}
extern "C" fn exp2_f64(x: f64) -> f64 {
    x.exp2()
}
extern "C" fn log_f32(x: f32) -> f32 {
    x.ln()
}
extern "C" fn log_f64(x: f64) -> f64 {
    x.ln()
}
extern "C" fn log1p_f32(x: f32) -> f32 {
    x.ln_1p()
}
extern "C" fn log1p_f64(x: f64) -> f64 {
    x.ln_1p()
}
extern "C" fn expm1_f32(x: f32) -> f32 {
    x.exp_m1()
}
extern "C" fn expm1_f64(x: f64) -> f64 {
    x.exp_m1()
}
extern "C" fn tanh_f32(x: f32) -> f32 {
    x.tanh()
}
extern "C" fn tanh_f64(x: f64) -> f64 {
    x.tanh()
}
extern "C" fn sigmoid_f32(x: f32) -> f32 {
    math::f32::sigmoid(x)
}
extern "C" fn sigmoid_f64(x: f64) -> f64 {
    math::sigmoid(x)
}
extern "C" fn softplus_f32(x: f32) -> f32 {
    math::f32::softplus(x)
}
extern "C" fn softplus_f64(x: f64) -> f64 {
    math::softplus(x)
}
extern "C" fn powf_f32(x: f32, p: f32) -> f32 {
    math::f32::powf(x, p)
}
extern "C" fn powf_f64(x: f64, p: f64) -> f64 {
    math::powf(x, p)
}

/// The address of a helper's definition, for `JITBuilder::symbol`.
pub(crate) fn address(h: Helper) -> *const u8 {
    type F32Fn = extern "C" fn(f32) -> f32;
    type F64Fn = extern "C" fn(f64) -> f64;
    let unary = |f32_fn: F32Fn, f64_fn: F64Fn| {
        if h.wide {
            f64_fn as *const u8
        } else {
            f32_fn as *const u8
        }
    };
    match h.func {
        MathFn::Exp => unary(exp_f32, exp_f64),
        MathFn::Exp2 => unary(exp2_f32, exp2_f64),
        MathFn::Log => unary(log_f32, log_f64),
        MathFn::Log1p => unary(log1p_f32, log1p_f64),
        MathFn::Expm1 => unary(expm1_f32, expm1_f64),
        MathFn::Tanh => unary(tanh_f32, tanh_f64),
        MathFn::Sigmoid => unary(sigmoid_f32, sigmoid_f64),
        MathFn::Softplus => unary(softplus_f32, softplus_f64),
        MathFn::Powf => {
            if h.wide {
                powf_f64 as extern "C" fn(f64, f64) -> f64 as *const u8
            } else {
                powf_f32 as extern "C" fn(f32, f32) -> f32 as *const u8
            }
        }
    }
}
