//! Lowering of reductions: an inner loop nest with a scalar accumulator.
//!
//! The loops run over the axes in source order, outermost first (row-major,
//! like `interp`'s `next_point`), and accumulate sequentially in the
//! reduction's type, so `sum` rounds after each addition exactly as the
//! declared-precision interpreter does. Empty ranges give `sum` 0, `max`
//! `-inf`, `min` `+inf` (for `i32`: `i32::MIN` and `i32::MAX`), `mean` NaN.
//!
//! `topk[..](x, k)` keeps the `k` largest values seen so far in a stack
//! array sorted in decreasing order, as integer keys whose signed order is
//! the IEEE total order (`+0 > -0`, as `interp::kth_largest` sorts with
//! `total_cmp`); a NaN sets a flag that makes the result NaN.

use crate::CodegenError;
use crate::MAX_TOPK;
use crate::emit::{Emitter, clif_type};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    BlockArg, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Type, Value, types,
};
use cranelift_frontend::Variable;
use passfold_dsl::{ExtentId, Handle, Node, ReduceOp, ScalarType};

impl Emitter<'_, '_> {
    /// Emits the loops of a reduction and returns its value.
    pub fn reduce(
        &mut self,
        h: Handle<Node>,
        op: ReduceOp,
        axes: &[ExtentId],
        arg: Handle<Node>,
        ty: ScalarType,
    ) -> Result<Value, CodegenError> {
        if let ReduceOp::TopK(k) = op {
            return self.topk(h, k, axes, arg, ty);
        }
        let is_int = ty == ScalarType::I32;
        if (is_int && op == ReduceOp::Mean) || !(is_int || ty.is_float()) {
            return Err(CodegenError::Unsupported {
                what: format!("this reduction of `{ty}`"),
                span: self.k.span(h),
            });
        }
        let init = match (op, is_int) {
            (ReduceOp::Sum | ReduceOp::Mean, false) => self.float_const(ty, 0.0),
            (ReduceOp::Max, false) => self.float_const(ty, f64::NEG_INFINITY),
            (ReduceOp::Min, false) => self.float_const(ty, f64::INFINITY),
            (ReduceOp::Max, true) => self.i32_const(i32::MIN),
            (ReduceOp::Min, true) => self.i32_const(i32::MAX),
            _ => self.i32_const(0),
        };
        let vectorized = if self.vector && !is_int {
            self.vector_reduce(h, op, axes, arg)?
        } else {
            None
        };
        let total = match vectorized {
            Some(total) => total,
            None => {
                let acc = self.b.declare_var(clif_type(ty));
                self.b.def_var(acc, init);
                let frames: Vec<_> = axes.iter().map(|&e| self.open_loop(e)).collect();
                let x = self.value(arg)?;
                let old = self.b.use_var(acc);
                let ins = self.b.ins();
                let new = match (op, is_int) {
                    (ReduceOp::Sum | ReduceOp::Mean, false) => ins.fadd(old, x),
                    (ReduceOp::Max, false) => ins.fmax(old, x),
                    (ReduceOp::Min, false) => ins.fmin(old, x),
                    (ReduceOp::Max, true) => ins.smax(old, x),
                    (ReduceOp::Min, true) => ins.smin(old, x),
                    _ => ins.iadd(old, x),
                };
                self.b.def_var(acc, new);
                for frame in frames.into_iter().rev() {
                    self.close_loop(frame);
                }
                self.b.use_var(acc)
            }
        };
        if op != ReduceOp::Mean {
            return Ok(total);
        }
        // `interp` divides in f64 by the exact count and rounds once: the
        // same as an f32 division whenever the count is exact in f32.
        let mut count = self.b.ins().iconst(types::I64, 1);
        for e in axes {
            count = self.b.ins().imul(count, self.extents[e.0 as usize]);
        }
        let count = self.b.ins().fcvt_from_sint(types::F64, count);
        Ok(if ty == ScalarType::F32 {
            let wide = self.b.ins().fpromote(types::F64, total);
            let mean = self.b.ins().fdiv(wide, count);
            self.b.ins().fdemote(types::F32, mean)
        } else {
            self.b.ins().fdiv(total, count)
        })
    }

    /// The total-order key of a float's bits: flips the magnitude bits of
    /// negative values, so signed integer order is IEEE total order. The
    /// map is its own inverse.
    fn order_key(&mut self, bits: Value, key_ty: Type) -> Value {
        let sign = self.b.ins().sshr_imm_s(bits, key_ty.bits() as i64 - 1);
        let magnitude = self.b.ins().ushr_imm_s(sign, 1);
        self.b.ins().bxor(bits, magnitude)
    }

    fn topk(
        &mut self,
        h: Handle<Node>,
        k: u32,
        axes: &[ExtentId],
        arg: Handle<Node>,
        ty: ScalarType,
    ) -> Result<Value, CodegenError> {
        if k > MAX_TOPK {
            return Err(CodegenError::TopKTooLarge {
                k,
                max: MAX_TOPK,
                span: self.k.span(h),
            });
        }
        if !ty.is_float() {
            return Err(CodegenError::Unsupported {
                what: format!("`topk` of `{ty}`"),
                span: self.k.span(h),
            });
        }
        let float_ty = clif_type(ty);
        let key_ty = if ty == ScalarType::F32 {
            types::I32
        } else {
            types::I64
        };
        let size = key_ty.bytes() as i64;
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            k.max(1) * size as u32,
            3,
        ));
        let base = self.b.ins().stack_addr(types::I64, slot, 0);
        let filled = self.b.declare_var(types::I64);
        let saw_nan = self.b.declare_var(types::I8);
        let zero = self.b.ins().iconst(types::I64, 0);
        let no = self.b.ins().iconst(types::I8, 0);
        self.b.def_var(filled, zero);
        self.b.def_var(saw_nan, no);

        let frames: Vec<_> = axes.iter().map(|&e| self.open_loop(e)).collect();
        let x = self.value(arg)?;
        self.topk_insert(x, k, base, key_ty, filled, saw_nan);
        for frame in frames.into_iter().rev() {
            self.close_loop(frame);
        }

        let nan = self.float_const(ty, f64::NAN);
        let neg_inf = self.float_const(ty, f64::NEG_INFINITY);
        let n = self.b.use_var(filled);
        let any_nan = self.b.use_var(saw_nan);
        if k == 0 {
            return Ok(self.b.ins().select(any_nan, nan, neg_inf));
        }
        // Slot k-1 may be uninitialized when fewer than k values were seen;
        // the select below discards it then.
        let key = self.b.ins().load(
            key_ty,
            MemFlagsData::trusted(),
            base,
            (k as i64 - 1) as i32 * size as i32,
        );
        let bits = self.order_key(key, key_ty);
        let kth = self.b.ins().bitcast(float_ty, MemFlagsData::new(), bits);
        let fewer = self
            .b
            .ins()
            .icmp_imm_s(IntCC::UnsignedLessThan, n, k as i64);
        let value = self.b.ins().select(fewer, neg_inf, kth);
        Ok(self.b.ins().select(any_nan, nan, value))
    }

    /// One step of the top-k insertion (see the module docs).
    fn topk_insert(
        &mut self,
        x: Value,
        k: u32,
        base: Value,
        key_ty: Type,
        filled: Variable,
        saw_nan: Variable,
    ) {
        let size = key_ty.bytes() as i64;
        let b = &mut self.b;
        let nan_block = b.create_block();
        let insert = b.create_block();
        let full = b.create_block();
        let shift_head = b.create_block();
        let pos = b.append_block_param(shift_head, types::I64);
        let check_prev = b.create_block();
        let shift = b.create_block();
        let place = b.create_block();
        let place_pos = b.append_block_param(place, types::I64);
        let done = b.create_block();

        let is_nan = b.ins().fcmp(FloatCC::Unordered, x, x);
        b.ins().brif(is_nan, nan_block, &[], insert, &[]);

        b.switch_to_block(nan_block);
        let yes = b.ins().iconst(types::I8, 1);
        b.def_var(saw_nan, yes);
        b.ins().jump(done, &[]);

        b.switch_to_block(insert);
        if k == 0 {
            b.ins().jump(done, &[]);
            // The remaining blocks stay empty and unreachable; fill them so
            // the function is well formed.
            for blk in [full, shift_head, check_prev, shift, place] {
                b.switch_to_block(blk);
                b.ins().jump(done, &[]);
            }
            b.switch_to_block(done);
            return;
        }
        let bits = b.ins().bitcast(key_ty, MemFlagsData::new(), x);
        let key = self.order_key(bits, key_ty);
        let b = &mut self.b;
        let n = b.use_var(filled);
        let is_full = b.ins().icmp_imm_s(IntCC::Equal, n, k as i64);
        b.ins()
            .brif(is_full, full, &[], shift_head, &[BlockArg::Value(n)]);

        // Full: only a key above the current k-th enters, evicting it.
        b.switch_to_block(full);
        let last = b.ins().load(
            key_ty,
            MemFlagsData::trusted(),
            base,
            (k as i64 - 1) as i32 * size as i32,
        );
        let above = b.ins().icmp(IntCC::SignedGreaterThan, key, last);
        let last_pos = b.ins().iconst(types::I64, k as i64 - 1);
        b.ins()
            .brif(above, shift_head, &[BlockArg::Value(last_pos)], done, &[]);

        // Shift smaller keys one place down until the key's place is found.
        b.switch_to_block(shift_head);
        let at_top = b.ins().icmp_imm_s(IntCC::Equal, pos, 0);
        b.ins()
            .brif(at_top, place, &[BlockArg::Value(pos)], check_prev, &[]);

        b.switch_to_block(check_prev);
        let prev_pos = b.ins().iadd_imm_s(pos, -1);
        let prev_off = b.ins().imul_imm_s(prev_pos, size);
        let prev_addr = b.ins().iadd(base, prev_off);
        let prev = b.ins().load(key_ty, MemFlagsData::trusted(), prev_addr, 0);
        let smaller = b.ins().icmp(IntCC::SignedLessThan, prev, key);
        b.ins()
            .brif(smaller, shift, &[], place, &[BlockArg::Value(pos)]);

        b.switch_to_block(shift);
        b.ins()
            .store(MemFlagsData::trusted(), prev, prev_addr, size as i32);
        b.ins().jump(shift_head, &[BlockArg::Value(prev_pos)]);

        b.switch_to_block(place);
        let off = b.ins().imul_imm_s(place_pos, size);
        let addr = b.ins().iadd(base, off);
        b.ins().store(MemFlagsData::trusted(), key, addr, 0);
        let grown = b.ins().iadd_imm_s(n, 1);
        let cap = b.ins().iconst(types::I64, k as i64);
        let new_n = b.ins().umin(grown, cap);
        b.def_var(filled, new_n);
        b.ins().jump(done, &[]);

        b.switch_to_block(done);
    }
}
