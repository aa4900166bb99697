//! The small instruction vocabulary the math functions are written in.
//!
//! [`Em`] wraps a `FunctionBuilder` for one value type (`f32x4`, `f64x2`,
//! `f32` or `f64`) and offers only operations that both the x86-64 back end
//! (SSE2 baseline) and the aarch64 back end lower to a few instructions for
//! that type: float arithmetic, `sqrt`, ordered `fcmp`, selects on compare
//! masks, integer add/and/or/shifts on the bit patterns, and constants. It
//! emits `fma` only when [`Features::fma`] says the target has it as one
//! instruction, and never `nearest`/`floor` (rounding is the magic-bias
//! trick), so no function here turns into a library call.
//!
//! Vector compares give lane masks that are bitcast to the float type and
//! used by `bitselect` (the pattern the x86-64 back end turns into
//! `blendv`/`maxps`); scalar compares give an `i8` used by `select`.

use crate::isa::Features;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{
    ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value, types,
};
use cranelift_frontend::FunctionBuilder;

/// A compare result: a lane mask (vectors, bitcast to the float type) or an
/// `i8` (scalars).
#[derive(Clone, Copy)]
pub(super) struct Mask(Value);

/// An emitter for one float value type.
pub(super) struct Em<'a, 'f> {
    pub fb: &'a mut FunctionBuilder<'f>,
    /// The value type: `f32x4`, `f64x2`, `f32` or `f64`.
    pub ty: Type,
    fma: bool,
}

impl<'a, 'f> Em<'a, 'f> {
    /// An emitter for values of `x`'s type.
    ///
    /// Panics unless `x` is `f32x4`, `f64x2`, `f32` or `f64`: the caller
    /// chose the type, so anything else is a compiler bug.
    pub fn new(fb: &'a mut FunctionBuilder<'f>, features: Features, x: Value) -> Self {
        let ty = fb.func.dfg.value_type(x);
        assert!(
            matches!(ty, types::F32X4 | types::F64X2 | types::F32 | types::F64),
            "vmath: unsupported type {ty}"
        );
        Em {
            fb,
            ty,
            fma: features.fma,
        }
    }

    /// Whether lanes are `f64`.
    pub fn wide(&self) -> bool {
        self.ty.lane_type() == types::F64
    }

    fn is_vector(&self) -> bool {
        self.ty.is_vector()
    }

    /// The integer type of the same shape (`i32x4`, `i64x2`, `i32`, `i64`).
    pub fn int_ty(&self) -> Type {
        match self.ty {
            types::F32X4 => types::I32X4,
            types::F64X2 => types::I64X2,
            types::F32 => types::I32,
            _ => types::I64,
        }
    }

    /// Mantissa bits of the lane type (23 or 52).
    pub fn mant_bits(&self) -> i64 {
        if self.wide() { 52 } else { 23 }
    }

    /// The exponent bias of the lane type (127 or 1023).
    pub fn bias(&self) -> i64 {
        if self.wide() { 1023 } else { 127 }
    }

    fn lane_bytes(&self, bits: u64) -> Vec<u8> {
        let lane: Vec<u8> = if self.wide() {
            bits.to_le_bytes().to_vec()
        } else {
            (bits as u32).to_le_bytes().to_vec()
        };
        let lanes = self.ty.lane_count() as usize;
        lane.repeat(lanes)
    }

    fn vconst(&mut self, ty: Type, bits: u64) -> Value {
        let data = ConstantData::from(self.lane_bytes(bits));
        let c = self.fb.func.dfg.constants.insert(data);
        self.fb.ins().vconst(ty, c)
    }

    /// The float constant `v`, rounded to the lane type.
    pub fn c(&mut self, v: f64) -> Value {
        if self.wide() {
            self.cbits(v.to_bits())
        } else {
            self.cbits(u64::from((v as f32).to_bits()))
        }
    }

    /// The float constant with lane bit pattern `bits`.
    pub fn cbits(&mut self, bits: u64) -> Value {
        match self.ty {
            types::F32 => self.fb.ins().f32const(f32::from_bits(bits as u32)),
            types::F64 => self.fb.ins().f64const(f64::from_bits(bits)),
            ty => self.vconst(ty, bits),
        }
    }

    /// The integer constant `v` in every lane of [`Em::int_ty`].
    pub fn ci(&mut self, v: i64) -> Value {
        let ty = self.int_ty();
        if self.is_vector() {
            self.vconst(ty, v as u64)
        } else {
            // `iconst` immediates are zero-extended to 64 bits.
            let imm = if self.wide() { v } else { i64::from(v as u32) };
            self.fb.ins().iconst(ty, imm)
        }
    }

    pub fn add(&mut self, a: Value, b: Value) -> Value {
        self.fb.ins().fadd(a, b)
    }

    pub fn sub(&mut self, a: Value, b: Value) -> Value {
        self.fb.ins().fsub(a, b)
    }

    pub fn mul(&mut self, a: Value, b: Value) -> Value {
        self.fb.ins().fmul(a, b)
    }

    pub fn div(&mut self, a: Value, b: Value) -> Value {
        self.fb.ins().fdiv(a, b)
    }

    pub fn sqrt(&mut self, a: Value) -> Value {
        self.fb.ins().sqrt(a)
    }

    /// `a * b + c`: one `fma` if the target has it, else `fmul` + `fadd`.
    pub fn mul_add(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.fma {
            self.fb.ins().fma(a, b, c)
        } else {
            let p = self.fb.ins().fmul(a, b);
            self.fb.ins().fadd(p, c)
        }
    }

    /// `a * b + c` with constants `b` and `c`.
    pub fn mul_add_cc(&mut self, a: Value, b: f64, c: f64) -> Value {
        let (b, c) = (self.c(b), self.c(c));
        self.mul_add(a, b, c)
    }

    /// Horner's rule: `coefs[0] + t·(coefs[1] + t·(…))`.
    pub fn horner(&mut self, t: Value, coefs: &[f64]) -> Value {
        let (last, rest) = coefs.split_last().expect("a polynomial has a coefficient");
        let mut p = self.c(*last);
        for &c in rest.iter().rev() {
            let c = self.c(c);
            p = self.mul_add(p, t, c);
        }
        p
    }

    fn flags() -> MemFlagsData {
        MemFlagsData::new().with_endianness(Endianness::Little)
    }

    /// The bit pattern of `x` as [`Em::int_ty`].
    pub fn bits_of(&mut self, x: Value) -> Value {
        let ty = self.int_ty();
        self.fb.ins().bitcast(ty, Self::flags(), x)
    }

    /// The float with bit pattern `i`.
    pub fn float_of(&mut self, i: Value) -> Value {
        let ty = self.ty;
        self.fb.ins().bitcast(ty, Self::flags(), i)
    }

    pub fn iadd_c(&mut self, a: Value, c: i64) -> Value {
        let c = self.ci(c);
        self.fb.ins().iadd(a, c)
    }

    pub fn iand_c(&mut self, a: Value, c: i64) -> Value {
        let c = self.ci(c);
        self.fb.ins().band(a, c)
    }

    pub fn ior(&mut self, a: Value, b: Value) -> Value {
        self.fb.ins().bor(a, b)
    }

    pub fn ior_c(&mut self, a: Value, c: i64) -> Value {
        let c = self.ci(c);
        self.fb.ins().bor(a, c)
    }

    pub fn shl(&mut self, a: Value, n: i64) -> Value {
        let n = self.fb.ins().iconst(types::I32, n);
        self.fb.ins().ishl(a, n)
    }

    pub fn ushr(&mut self, a: Value, n: i64) -> Value {
        let n = self.fb.ins().iconst(types::I32, n);
        self.fb.ins().ushr(a, n)
    }

    /// `2^n` for a float `n` holding an integer in the normal exponent
    /// range, where `biased = n + magic + bias` came from the magic-bias
    /// rounding: its low mantissa bits are `n + bias`.
    pub fn pow2_from_biased(&mut self, biased: Value) -> Value {
        let bits = self.bits_of(biased);
        let shift = self.mant_bits();
        let bits = self.shl(bits, shift);
        self.float_of(bits)
    }

    /// The rounding constant `1.5·2^p` (`p` = mantissa bits): adding and
    /// subtracting it rounds `|v| < 2^(p-1)` to the nearest integer (ties
    /// to even) without a rounding instruction.
    pub fn magic(&self) -> f64 {
        1.5 * (self.mant_bits() as f64).exp2()
    }

    /// Sets the sign bit of `r` where `x`'s is set (`r | (x & sign)`).
    pub fn or_sign_of(&mut self, r: Value, x: Value) -> Value {
        let xb = self.bits_of(x);
        let sign_bit = if self.wide() { i64::MIN } else { 0x8000_0000 };
        let sign = self.iand_c(xb, sign_bit);
        let rb = self.bits_of(r);
        let out = self.ior(rb, sign);
        self.float_of(out)
    }

    /// `|x|` by clearing the sign bit.
    pub fn abs(&mut self, x: Value) -> Value {
        let xb = self.bits_of(x);
        let mask = if self.wide() {
            i64::MAX
        } else {
            i64::from(i32::MAX)
        };
        let out = self.iand_c(xb, mask);
        self.float_of(out)
    }

    /// The ordered compare `a cc b`.
    pub fn cmp(&mut self, cc: FloatCC, a: Value, b: Value) -> Mask {
        let m = self.fb.ins().fcmp(cc, a, b);
        if self.is_vector() {
            let ty = self.ty;
            Mask(self.fb.ins().bitcast(ty, Self::flags(), m))
        } else {
            Mask(m)
        }
    }

    /// The ordered compare `a cc c` with a constant `c`.
    pub fn cmp_c(&mut self, cc: FloatCC, a: Value, c: f64) -> Mask {
        let c = self.c(c);
        self.cmp(cc, a, c)
    }

    /// `m ? a : b`, lane by lane.
    pub fn select(&mut self, m: Mask, a: Value, b: Value) -> Value {
        if self.is_vector() {
            self.fb.ins().bitselect(m.0, a, b)
        } else {
            self.fb.ins().select(m.0, a, b)
        }
    }

    /// `m ? a : b` with constants.
    pub fn select_cc(&mut self, m: Mask, a: f64, b: f64) -> Value {
        let (a, b) = (self.c(a), self.c(b));
        self.select(m, a, b)
    }

    /// `max(x, lo)` for a constant `lo`, keeping a NaN `x` (one `maxps`-like
    /// select: `x < lo ? lo : x`).
    pub fn max_c(&mut self, x: Value, lo: f64) -> Value {
        let lo = self.c(lo);
        let m = self.cmp(FloatCC::LessThan, x, lo);
        self.select(m, lo, x)
    }

    /// `min(x, hi)` for a constant `hi`, keeping a NaN `x`.
    pub fn min_c(&mut self, x: Value, hi: f64) -> Value {
        let hi = self.c(hi);
        let m = self.cmp(FloatCC::GreaterThan, x, hi);
        self.select(m, hi, x)
    }
}
