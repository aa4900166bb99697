//! The scalar math helpers the generated code calls.
//!
//! Transcendental functions are not inlined: each is a call to an imported
//! function with the C calling convention, named by [`Helper::symbol`]. The
//! runtime defines them in Rust with exactly the formulas of
//! `passfold_dsl::math` and `std` (the `f32` versions for `f32`), so the JIT
//! reproduces `Precision::Declared` bit for bit on these operations.
//!
//! Imported functions are named `UserExternalName { namespace: 0, index }`
//! with `index` = [`Helper::index`]: a JIT module that declares every entry
//! of [`Helper::ALL`] first, in order, gets exactly these function ids.

use cranelift_codegen::ir::{AbiParam, Signature, Type, types};
use cranelift_codegen::isa::CallConv;
use passfold_dsl::ScalarType;

/// A scalar function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MathFn {
    /// `exp(x)`.
    Exp,
    /// `2^x`.
    Exp2,
    /// `ln(x)`.
    Log,
    /// `ln(1 + x)`.
    Log1p,
    /// `exp(x) - 1`.
    Expm1,
    /// `tanh(x)`.
    Tanh,
    /// `passfold_dsl::math::sigmoid`.
    Sigmoid,
    /// `passfold_dsl::math::softplus`.
    Softplus,
    /// `passfold_dsl::math::powf(x, p)`, two arguments.
    Powf,
    /// Toeplitz products by FFT (`Op::Toeplitz`): `(n_i, n_j, vectors: i64,
    /// first_row, first_col, vec, out: pointers) -> i32` (0).
    Toeplitz,
}

/// A helper: a function at one float width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Helper {
    /// The function.
    pub func: MathFn,
    /// `true` for the `f64` version, `false` for `f32`.
    pub wide: bool,
}

const FUNCS: [MathFn; 10] = [
    MathFn::Exp,
    MathFn::Exp2,
    MathFn::Log,
    MathFn::Log1p,
    MathFn::Expm1,
    MathFn::Tanh,
    MathFn::Sigmoid,
    MathFn::Softplus,
    MathFn::Powf,
    MathFn::Toeplitz,
];

impl Helper {
    /// Every helper, in [`Helper::index`] order.
    pub const ALL: [Helper; 2 * FUNCS.len()] = {
        let mut all = [Helper {
            func: MathFn::Exp,
            wide: false,
        }; 2 * FUNCS.len()];
        let mut i = 0;
        while i < all.len() {
            all[i] = Helper {
                func: FUNCS[i / 2],
                wide: i % 2 == 1,
            };
            i += 1;
        }
        all
    };

    /// The helper for `func` on values of type `ty` (`f32` or `f64`).
    pub fn new(func: MathFn, ty: ScalarType) -> Helper {
        Helper {
            func,
            wide: ty == ScalarType::F64,
        }
    }

    /// The position in [`Helper::ALL`], which is also the external name's index.
    pub fn index(self) -> u32 {
        let f = FUNCS.iter().position(|&f| f == self.func).unwrap_or(0) as u32;
        2 * f + self.wide as u32
    }

    /// The symbol the runtime registers, e.g. `passfold_exp_f32`.
    pub fn symbol(self) -> &'static str {
        const NAMES: [[&str; 2]; FUNCS.len()] = [
            ["passfold_exp_f32", "passfold_exp_f64"],
            ["passfold_exp2_f32", "passfold_exp2_f64"],
            ["passfold_log_f32", "passfold_log_f64"],
            ["passfold_log1p_f32", "passfold_log1p_f64"],
            ["passfold_expm1_f32", "passfold_expm1_f64"],
            ["passfold_tanh_f32", "passfold_tanh_f64"],
            ["passfold_sigmoid_f32", "passfold_sigmoid_f64"],
            ["passfold_softplus_f32", "passfold_softplus_f64"],
            ["passfold_powf_f32", "passfold_powf_f64"],
            ["passfold_toeplitz_f32", "passfold_toeplitz_f64"],
        ];
        NAMES[self.index() as usize / 2][self.wide as usize]
    }

    /// The float type of the arguments and the result.
    pub fn float_type(self) -> Type {
        if self.wide { types::F64 } else { types::F32 }
    }

    /// Number of arguments: 2 for `powf(x, p)`, 1 otherwise.
    pub fn arity(self) -> usize {
        if self.func == MathFn::Powf { 2 } else { 1 }
    }

    /// The Cranelift signature: `arity` floats in, one float out (the
    /// Toeplitz product: three `i64`s and four pointers in, an `i32` out).
    pub fn signature(self, call_conv: CallConv) -> Signature {
        let mut sig = Signature::new(call_conv);
        if self.func == MathFn::Toeplitz {
            for _ in 0..7 {
                sig.params.push(AbiParam::new(types::I64));
            }
            sig.returns.push(AbiParam::new(types::I32));
            return sig;
        }
        for _ in 0..self.arity() {
            sig.params.push(AbiParam::new(self.float_type()));
        }
        sig.returns.push(AbiParam::new(self.float_type()));
        sig
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_match_positions() {
        for (i, h) in Helper::ALL.iter().enumerate() {
            assert_eq!(h.index() as usize, i);
        }
        assert_eq!(Helper::ALL[1].symbol(), "passfold_exp_f64");
        assert_eq!(
            Helper::ALL[Helper::ALL.len() - 1].symbol(),
            "passfold_toeplitz_f64"
        );
    }
}
