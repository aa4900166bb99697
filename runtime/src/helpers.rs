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
        MathFn::Toeplitz => {
            if h.wide {
                toeplitz_f64 as ToeplitzFn<f64> as *const u8
            } else {
                toeplitz_f32 as ToeplitzFn<f32> as *const u8
            }
        }
    }
}

type ToeplitzFn<T> = extern "C" fn(i64, i64, i64, *const T, *const T, *const T, *mut T) -> i32;

/// `Op::Toeplitz` (see [`crate::toeplitz`]), called by JIT code.
extern "C" fn toeplitz_f32(
    n_i: i64,
    n_j: i64,
    vectors: i64,
    first_row: *const f32,
    first_col: *const f32,
    vec: *const f32,
    out: *mut f32,
) -> i32 {
    toeplitz_any(n_i, n_j, vectors, first_row, first_col, vec, out)
}

extern "C" fn toeplitz_f64(
    n_i: i64,
    n_j: i64,
    vectors: i64,
    first_row: *const f64,
    first_col: *const f64,
    vec: *const f64,
    out: *mut f64,
) -> i32 {
    toeplitz_any(n_i, n_j, vectors, first_row, first_col, vec, out)
}

fn toeplitz_any<T: crate::toeplitz::Elem>(
    n_i: i64,
    n_j: i64,
    vectors: i64,
    first_row: *const T,
    first_col: *const T,
    vec: *const T,
    out: *mut T,
) -> i32 {
    let (Ok(n_i), Ok(n_j), Ok(vectors)) = (
        usize::try_from(n_i),
        usize::try_from(n_j),
        usize::try_from(vectors),
    ) else {
        return 0;
    };
    if n_i == 0 || vectors == 0 {
        return 0;
    }
    let (Some(v_len), Some(out_len)) = (vectors.checked_mul(n_j), vectors.checked_mul(n_i)) else {
        return 0;
    };
    // SAFETY: the generated code passes the base pointers of the frame's
    // scratch tensors `first_row[j]`, `first_col[i]`, `vec[p.., j]` and
    // `out[p.., i]`, which the runtime allocated (`args::alloc_temps`) with
    // exactly these lengths from the same extents, dense, aligned for `T`
    // and not aliased by each other; `out` is written only here while the
    // call runs. Empty tensors are not touched (`n_i` or `vectors` zero
    // returned above; with `n_j` zero only `out` is read).
    let (first_row, first_col, vec, out) = unsafe {
        let empty = |p: *const T, len: usize| {
            if len == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(p, len)
            }
        };
        (
            empty(first_row, n_j),
            empty(first_col, n_i),
            empty(vec, v_len),
            std::slice::from_raw_parts_mut(out, out_len),
        )
    };
    crate::toeplitz::toeplitz(n_i, n_j, first_row, first_col, vec, out);
    0
}
