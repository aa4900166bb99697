//! Lowering of element-wise nodes and tensor reads.
//!
//! Assumes the operands of a node are already in the scope's cache (the
//! nodes needed by a value are emitted in increasing handle order, which is
//! a topological order). Guarantees the semantics of `passfold_dsl::interp`
//! in declared precision: each operation in the node's own type, `min`/`max`
//! NaN-propagating (`fmin`/`fmax`), comparisons false on NaN except `!=`,
//! `select` evaluating both arms, wrapping integer arithmetic, integer
//! division by zero (or `MIN / -1`) giving 0.
//!
//! A read never touches memory outside its tensor: subscripts that may fall
//! outside (affine subscripts of a padded tensor that differ from its
//! dimension, and every gather) are compared with the dimension's length
//! first, and a failed check branches to the pad value or, for an unpadded
//! tensor, to the gather site's error return.

use crate::emit::{Emitter, clif_type, data_flags};
use crate::{CodegenError, Helper, MathFn};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{BlockArg, InstBuilder, Value, types};
use passfold_dsl::{Affine, BinOp, CmpOp, Handle, Index, Node, ScalarType, TensorId, UnOp};

/// The float condition of a comparison: ordered (false on NaN) except `!=`.
pub(crate) fn float_cc(op: CmpOp) -> FloatCC {
    match op {
        CmpOp::Lt => FloatCC::LessThan,
        CmpOp::Le => FloatCC::LessThanOrEqual,
        CmpOp::Gt => FloatCC::GreaterThan,
        CmpOp::Ge => FloatCC::GreaterThanOrEqual,
        CmpOp::Eq => FloatCC::Equal,
        CmpOp::Ne => FloatCC::NotEqual,
    }
}

impl Emitter<'_, '_> {
    /// The value of `root` at the current point, emitting what is not cached.
    pub fn value(&mut self, root: Handle<Node>) -> Result<Value, CodegenError> {
        if let Some(v) = self.cache.get(root) {
            return Ok(v);
        }
        // The uncached nodes `root` needs, not looking inside reductions
        // (their arguments are evaluated in their own loops).
        let mut needed = Vec::new();
        let mut seen = vec![false; root.index() + 1];
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            if seen[h.index()] || self.cache.get(h).is_some() {
                continue;
            }
            seen[h.index()] = true;
            needed.push(h);
            if !matches!(self.k.nodes[h], Node::Reduce { .. }) {
                stack.extend(self.k.nodes[h].operands());
            }
        }
        needed.sort_by_key(|h| h.index());
        for h in needed {
            let v = self.node(h)?;
            self.cache.insert(h, v);
        }
        self.cache
            .get(root)
            .ok_or_else(|| CodegenError::Unsupported {
                what: "a value that was not emitted".into(),
                span: self.k.span(root),
            })
    }

    /// The cached value of an operand.
    fn operand(&mut self, h: Handle<Node>) -> Result<Value, CodegenError> {
        self.value(h)
    }

    fn unsupported(&self, h: Handle<Node>, what: &str) -> CodegenError {
        CodegenError::Unsupported {
            what: what.to_string(),
            span: self.k.span(h),
        }
    }

    /// A float constant of type `ty`.
    pub fn float_const(&mut self, ty: ScalarType, v: f64) -> Value {
        match ty {
            ScalarType::F32 => self.b.ins().f32const(v as f32),
            _ => self.b.ins().f64const(v),
        }
    }

    /// An `i32` constant.
    pub fn i32_const(&mut self, v: i32) -> Value {
        self.b.ins().iconst(types::I32, v as u32 as i64)
    }

    fn node(&mut self, h: Handle<Node>) -> Result<Value, CodegenError> {
        let ty = self.k.ty(h);
        Ok(match &self.k.nodes[h] {
            Node::ConstFloat(bits) => match ty {
                // The planner types the initial value of an `i32` max/min
                // accumulator `-inf`/`inf`: saturate to `i32::MIN`/`MAX`.
                ScalarType::I32 => self.i32_const(f64::from_bits(*bits) as i32),
                ScalarType::Bool => {
                    return Err(self.unsupported(h, "a float constant of type `bool`"));
                }
                _ => self.float_const(ty, f64::from_bits(*bits)),
            },
            Node::ConstInt(v) => match ty {
                ScalarType::I32 => self.i32_const(*v as i32),
                t if t.is_float() => self.float_const(t, *v as f64),
                _ => return Err(self.unsupported(h, "a boolean constant")),
            },
            Node::Param(p) => self.params[p.0 as usize],
            Node::IndexValue(e) => {
                let i = self.index(*e)?;
                self.b.ins().ireduce(types::I32, i)
            }
            Node::ExtentLen(e) => self.b.ins().ireduce(types::I32, self.extents[e.0 as usize]),
            Node::Var(v) => self.var(h, *v)?,
            Node::Load { tensor, index } => self.load(h, *tensor, index)?,
            Node::Unary(op, a) => {
                let x = self.operand(*a)?;
                self.scalar_unary(h, *op, x, ty)?
            }
            Node::Binary(op, a, b) => {
                let x = self.operand(*a)?;
                let y = self.operand(*b)?;
                self.binary(h, *op, x, y, ty)?
            }
            Node::Cmp(op, a, b) => {
                let x = self.operand(*a)?;
                let y = self.operand(*b)?;
                self.compare(*op, x, y, self.k.ty(*a))
            }
            Node::Select(c, a, b) => {
                let c = self.operand(*c)?;
                let x = self.operand(*a)?;
                let y = self.operand(*b)?;
                self.b.ins().select(c, x, y)
            }
            Node::Powf(a, p) => {
                let x = self.operand(*a)?;
                self.powf(h, x, f64::from_bits(*p), ty)?
            }
            Node::Cast(to, a) => {
                let x = self.operand(*a)?;
                self.cast(h, x, self.k.ty(*a), *to)?
            }
            Node::Reduce { op, axes, arg } => self.reduce(h, *op, axes, *arg, ty)?,
        })
    }

    fn call1(&mut self, func: MathFn, ty: ScalarType, args: &[Value]) -> Value {
        let f = self.helper(Helper::new(func, ty));
        let call = self.b.ins().call(f, args);
        self.b.inst_results(call)[0]
    }

    pub(crate) fn scalar_unary(
        &mut self,
        h: Handle<Node>,
        op: UnOp,
        x: Value,
        ty: ScalarType,
    ) -> Result<Value, CodegenError> {
        if ty == ScalarType::I32 {
            return Ok(match op {
                UnOp::Neg => self.b.ins().ineg(x),
                UnOp::Abs => {
                    let neg = self.b.ins().ineg(x);
                    let is_neg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, x, 0);
                    self.b.ins().select(is_neg, neg, x)
                }
                _ => return Err(self.unsupported(h, "this operation on `i32`")),
            });
        }
        if ty == ScalarType::Bool {
            return match op {
                UnOp::Not => Ok(self.b.ins().icmp_imm_s(IntCC::Equal, x, 0)),
                _ => Err(self.unsupported(h, "this operation on `bool`")),
            };
        }
        if self.vector {
            // Inline math, bit-identical to a lane of the vector code.
            let f = self.features;
            let fb = &mut self.b;
            match op {
                UnOp::Exp => return Ok(crate::vmath::exp(fb, f, x)),
                UnOp::ExpNonPos => return Ok(crate::vmath::exp_nonpositive(fb, f, x)),
                UnOp::Log => return Ok(crate::vmath::log(fb, f, x)),
                UnOp::Log1p => return Ok(crate::vmath::log1p(fb, f, x)),
                UnOp::Expm1 => return Ok(crate::vmath::expm1(fb, f, x)),
                UnOp::Tanh => return Ok(crate::vmath::tanh(fb, f, x)),
                UnOp::Sigmoid => return Ok(crate::vmath::sigmoid(fb, f, x)),
                UnOp::Softplus => return Ok(crate::vmath::softplus(fb, f, x)),
                _ => {}
            }
        }
        let call = |s: &mut Self, f: MathFn| s.call1(f, ty, &[x]);
        Ok(match op {
            UnOp::Neg => self.b.ins().fneg(x),
            UnOp::Not => return Err(self.unsupported(h, "`!` on a number")),
            UnOp::Exp => call(self, MathFn::Exp),
            UnOp::Exp2 => call(self, MathFn::Exp2),
            UnOp::ExpNonPos => call(self, MathFn::Exp),
            UnOp::Round => self.b.ins().nearest(x),
            UnOp::Log => call(self, MathFn::Log),
            UnOp::Log1p => call(self, MathFn::Log1p),
            UnOp::Expm1 => call(self, MathFn::Expm1),
            UnOp::Tanh => call(self, MathFn::Tanh),
            UnOp::Sigmoid => call(self, MathFn::Sigmoid),
            UnOp::Softplus => call(self, MathFn::Softplus),
            UnOp::Sqrt => self.b.ins().sqrt(x),
            UnOp::Rsqrt => {
                let one = self.float_const(ty, 1.0);
                let root = self.b.ins().sqrt(x);
                self.b.ins().fdiv(one, root)
            }
            UnOp::Abs => self.b.ins().fabs(x),
            UnOp::Sign => {
                // 1 if x > 0, -1 if x < 0, else x itself (±0 and NaN).
                let zero = self.float_const(ty, 0.0);
                let one = self.float_const(ty, 1.0);
                let minus_one = self.float_const(ty, -1.0);
                let gt = self.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                let lt = self.b.ins().fcmp(FloatCC::LessThan, x, zero);
                let neg_or_x = self.b.ins().select(lt, minus_one, x);
                self.b.ins().select(gt, one, neg_or_x)
            }
        })
    }

    fn binary(
        &mut self,
        h: Handle<Node>,
        op: BinOp,
        x: Value,
        y: Value,
        ty: ScalarType,
    ) -> Result<Value, CodegenError> {
        let b = &mut self.b;
        Ok(match (ty, op) {
            (ScalarType::Bool, BinOp::And) => b.ins().band(x, y),
            (ScalarType::Bool, BinOp::Or) => b.ins().bor(x, y),
            (ScalarType::Bool, _) | (_, BinOp::And | BinOp::Or) => {
                return Err(self.unsupported(h, "this operation on these types"));
            }
            (ScalarType::I32, BinOp::Add) => b.ins().iadd(x, y),
            (ScalarType::I32, BinOp::Sub) => b.ins().isub(x, y),
            (ScalarType::I32, BinOp::Mul) => b.ins().imul(x, y),
            (ScalarType::I32, BinOp::Min) => b.ins().smin(x, y),
            (ScalarType::I32, BinOp::Max) => b.ins().smax(x, y),
            (ScalarType::I32, BinOp::Div) => self.safe_sdiv(x, y),
            (_, BinOp::Add) => b.ins().fadd(x, y),
            (_, BinOp::Sub) => b.ins().fsub(x, y),
            (_, BinOp::Mul) => b.ins().fmul(x, y),
            (_, BinOp::Div) => b.ins().fdiv(x, y),
            (_, BinOp::Min) => b.ins().fmin(x, y),
            (_, BinOp::Max) => b.ins().fmax(x, y),
            (_, BinOp::MaxNum) => {
                let lt = b.ins().fcmp(FloatCC::LessThan, x, y);
                b.ins().select(lt, y, x)
            }
        })
    }

    /// `x / y` for `i32`, 0 when `y == 0` or the quotient overflows
    /// (`i32::checked_div(..).unwrap_or(0)`), without trapping.
    fn safe_sdiv(&mut self, x: Value, y: Value) -> Value {
        let b = &mut self.b;
        let zero = b.ins().iconst(types::I32, 0);
        let one = b.ins().iconst(types::I32, 1);
        let y_zero = b.ins().icmp_imm_s(IntCC::Equal, y, 0);
        let y_minus_one = b.ins().icmp_imm_s(IntCC::Equal, y, -1);
        let x_min = b.ins().icmp_imm_u(IntCC::Equal, x, i32::MIN as u32 as i64);
        let overflow = b.ins().band(y_minus_one, x_min);
        let bad = b.ins().bor(y_zero, overflow);
        let divisor = b.ins().select(bad, one, y);
        let q = b.ins().sdiv(x, divisor);
        b.ins().select(bad, zero, q)
    }

    fn compare(&mut self, op: CmpOp, x: Value, y: Value, operand_ty: ScalarType) -> Value {
        if operand_ty.is_float() {
            return self.b.ins().fcmp(float_cc(op), x, y);
        }
        let cc = match op {
            CmpOp::Lt => IntCC::SignedLessThan,
            CmpOp::Le => IntCC::SignedLessThanOrEqual,
            CmpOp::Gt => IntCC::SignedGreaterThan,
            CmpOp::Ge => IntCC::SignedGreaterThanOrEqual,
            CmpOp::Eq => IntCC::Equal,
            CmpOp::Ne => IntCC::NotEqual,
        };
        self.b.ins().icmp(cc, x, y)
    }

    /// `pow(x, p)` as `math::powf` (or `math::f32::powf` with `p as f32`).
    pub(crate) fn powf(
        &mut self,
        h: Handle<Node>,
        x: Value,
        p: f64,
        ty: ScalarType,
    ) -> Result<Value, CodegenError> {
        if !ty.is_float() {
            return Err(self.unsupported(h, "`pow` of a non-float"));
        }
        let p = if ty == ScalarType::F32 {
            p as f32 as f64
        } else {
            p
        };
        Ok(if p == 2.0 {
            self.b.ins().fmul(x, x)
        } else if p == 1.0 {
            x
        } else if p == 0.5 {
            self.b.ins().sqrt(x)
        } else {
            let pv = self.float_const(ty, p);
            self.call1(MathFn::Powf, ty, &[x, pv])
        })
    }

    /// Converts a value between numeric types (float to `i32` truncates
    /// with saturation, NaN to 0); for a variable assigned a value of
    /// another type than its own.
    pub fn convert(
        &mut self,
        h: Handle<Node>,
        x: Value,
        from: ScalarType,
        to: ScalarType,
    ) -> Result<Value, CodegenError> {
        if from.is_float() && to == ScalarType::I32 {
            return Ok(self.b.ins().fcvt_to_sint_sat(types::I32, x));
        }
        self.cast(h, x, from, to)
    }

    fn cast(
        &mut self,
        h: Handle<Node>,
        x: Value,
        from: ScalarType,
        to: ScalarType,
    ) -> Result<Value, CodegenError> {
        let b = &mut self.b;
        Ok(match (from, to) {
            (f, t) if f == t => x,
            (ScalarType::I32, t) if t.is_float() => b.ins().fcvt_from_sint(clif_type(t), x),
            (ScalarType::F32, ScalarType::F64) => b.ins().fpromote(types::F64, x),
            (ScalarType::F64, ScalarType::F32) => b.ins().fdemote(types::F32, x),
            _ => return Err(self.unsupported(h, &format!("a cast from `{from}` to `{to}`"))),
        })
    }

    /// `Σ c·index + k` over the bound index variables, as `i64`.
    pub(crate) fn affine_value(&mut self, a: &Affine) -> Result<Value, CodegenError> {
        let mut acc = None;
        for &(e, c) in &a.terms {
            let i = self.index(e)?;
            let term = if c == 1 {
                i
            } else {
                self.b.ins().imul_imm_s(i, c)
            };
            acc = Some(match acc {
                None => term,
                Some(acc) => self.b.ins().iadd(acc, term),
            });
        }
        Ok(match acc {
            None => self.b.ins().iconst(types::I64, a.constant),
            Some(acc) if a.constant == 0 => acc,
            Some(acc) => self.b.ins().iadd_imm_s(acc, a.constant),
        })
    }

    /// A tensor read; see the module docs for the bounds policy.
    fn load(
        &mut self,
        h: Handle<Node>,
        tensor: TensorId,
        index: &[Index],
    ) -> Result<Value, CodegenError> {
        let t = tensor.0 as usize;
        let tensor_ty = self.k.tensors[t].ty;
        let pad = self.k.tensors[t].pad;
        let mut pos = Vec::with_capacity(index.len());
        let mut checks = Vec::new();
        for (d, idx) in index.iter().enumerate() {
            let (value, needs_check) = match idx {
                Index::Affine(a) => {
                    // Any other subscript is checked: on a padded tensor
                    // it reads the pad outside; on an unpadded one (the
                    // checker admits only subscripts equal to the dimension,
                    // so this is a planner's shifted read, `crate::jam`,
                    // which the plan keeps in range) it fails the call.
                    let exact = *a == self.k.tensors[t].dims[d].0;
                    (self.affine_value(a)?, !exact)
                }
                Index::Gather(g) => {
                    let v = self.operand(*g)?;
                    (self.b.ins().sextend(types::I64, v), true)
                }
            };
            let dim = self.layouts[t].dims[d];
            let p = match dim.origin {
                Some(o) => self.b.ins().iadd(value, o),
                None => value,
            };
            if needs_check {
                // One unsigned compare covers p < 0 and p >= len.
                checks.push(self.b.ins().icmp(IntCC::UnsignedLessThan, p, dim.len));
            }
            pos.push(p);
        }
        let ty = clif_type(tensor_ty);
        if checks.is_empty() {
            let addr = self.address(t, &pos);
            return Ok(self.b.ins().load(ty, data_flags(), addr, 0));
        }
        match pad {
            None => {
                let error = self.error_block(h)?;
                for ok in checks {
                    let next = self.b.create_block();
                    self.b.ins().brif(ok, next, &[], error, &[]);
                    self.b.switch_to_block(next);
                }
                let addr = self.address(t, &pos);
                Ok(self.b.ins().load(ty, data_flags(), addr, 0))
            }
            Some(pad) => {
                let mut all = checks[0];
                for &c in &checks[1..] {
                    all = self.b.ins().band(all, c);
                }
                let pad_value = match tensor_ty {
                    ScalarType::I32 => self.i32_const(pad as i32),
                    _ => self.float_const(tensor_ty, pad),
                };
                let in_range = self.b.create_block();
                let merge = self.b.create_block();
                let result = self.b.append_block_param(merge, ty);
                self.b
                    .ins()
                    .brif(all, in_range, &[], merge, &[BlockArg::Value(pad_value)]);
                self.b.switch_to_block(in_range);
                let addr = self.address(t, &pos);
                let v = self.b.ins().load(ty, data_flags(), addr, 0);
                self.b.ins().jump(merge, &[BlockArg::Value(v)]);
                self.b.switch_to_block(merge);
                Ok(result)
            }
        }
    }
}
