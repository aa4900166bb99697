//! Functions built from `exp`, `expm1` and `log1p`: `tanh`, `sigmoid`,
//! `softplus`, and the native `sqrt` / `rsqrt`.

use super::emit::Em;
use cranelift_codegen::ir::Value;
use cranelift_codegen::ir::condcodes::FloatCC;

impl Em<'_, '_> {
    pub(super) fn tanh(&mut self, x: Value) -> Value {
        // tanh|x| = e/(e + 2) with e = expm1(2|x|); past 10 (f32) / 20
        // (f64) the result rounds to 1, so clamp there (keeping NaN).
        let a = self.abs(x);
        let hi = if self.wide() { 20.0 } else { 10.0 };
        let a = self.min_c(a, hi);
        let a2 = self.add(a, a);
        let e = self.expm1_core(a2, true);
        let two = self.c(2.0);
        let d = self.add(e, two);
        let r = self.div(e, d);
        self.or_sign_of(r, x)
    }

    pub(super) fn sigmoid(&mut self, x: Value) -> Value {
        // e = exp(-|x|) ≤ 1; sigmoid = 1/(1 + e) for x ≥ 0, e/(1 + e) below,
        // as `passfold_dsl::math::sigmoid` (so no overflow, and subnormal
        // results for x down to -103.9).
        let a = self.abs(x);
        let zero = self.c(0.0);
        let na = self.sub(zero, a);
        let e = self.exp(na);
        let neg = self.cmp_c(FloatCC::LessThan, x, 0.0);
        let one = self.c(1.0);
        let num = self.select(neg, e, one);
        let d = self.add(one, e);
        self.div(num, d)
    }

    pub(super) fn softplus(&mut self, x: Value) -> Value {
        // max(x, 0) + log1p(exp(-|x|)), as `passfold_dsl::math::softplus`.
        let a = self.abs(x);
        let zero = self.c(0.0);
        let na = self.sub(zero, a);
        let e = self.exp(na);
        let l = self.log1p(e);
        let m = self.max_c(x, 0.0);
        self.add(m, l)
    }

    pub(super) fn rsqrt(&mut self, x: Value) -> Value {
        let s = self.sqrt(x);
        let one = self.c(1.0);
        self.div(one, s)
    }
}
