//! Vector code: loops and reductions over `W` consecutive elements at once.
//!
//! Which loops run as vector code is decided by the planner
//! (`passfold_dsl::vector`: a loop's `LoopCode::Vector` carries its lane
//! variables, state identities and merge ops); reductions left in values
//! are checked here by `passfold_dsl::vector::vectorize_reduce`. This module
//! only lowers what was decided:
//!
//! - A vector loop runs `U` copies of its body per step, each on `W` lanes
//!   (`f32x4` or `f64x2`) with its own vector of every lane variable. State
//!   vectors start at the state's identity, except lane 0 of copy 0, which
//!   starts at the state's value before the loop. After the main loop the
//!   copies merge into copy 0 by the merge ops evaluated lane by lane, then
//!   the lanes merge pairwise (lane `l` with lane `l + W/2`, then `l + W/4`,
//!   ...), lane 0 becomes the scalar state, and a scalar tail runs the
//!   body on the last `len mod (W·U)` elements.
//! - An `if` in the body is taken when any lane's condition holds; under it
//!   every assignment keeps the old value in lanes whose condition fails.
//! - A value that does not vary with the loop's index is computed by the
//!   scalar lowering and broadcast. A boolean is a lane mask (all ones or
//!   zero) of the integer type of the lanes' width.
//! - Transcendental functions are the inline `vmath` functions; `exp2`,
//!   `round` and a general `pow` run lane by lane through the scalar
//!   lowering. Loads and stores are unaligned full-vector accesses inside
//!   the range the scalar loop would touch.

use crate::emit::Emitter;
use crate::{CodegenError, vmath};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value, types,
};
use cranelift_frontend::Variable;
use passfold_dsl::lir::{Op, sets_in, value_roots as op_roots};
use passfold_dsl::vector::VectorLoop;
use passfold_dsl::{BinOp, ExtentId, Handle, Index, Node, ReduceOp, ScalarType, UnOp, VarId};
use std::collections::HashMap;

/// The lane context of the code being emitted.
pub(crate) struct Lanes {
    /// The vectorized index.
    pub index: ExtentId,
    /// The lanes' scalar type (`f32` or `f64`).
    pub elem: ScalarType,
    /// `f32x4` or `f64x2`.
    pub vty: Type,
    /// `i32x4` or `i64x2`: the type of lane masks.
    pub mty: Type,
    /// Lanes per vector.
    pub width: u32,
    /// For every node, whether it varies (see `passfold_dsl::vector::varying`).
    pub vary: Vec<bool>,
    /// The vector variable of each lane variable (of the current copy).
    pub vars: HashMap<VarId, Variable>,
    /// Under an `if`: the lanes that take it.
    pub mask: Option<Value>,
    /// Vector values computed in the current op.
    pub cache: HashMap<usize, Value>,
    /// Broadcasts of loop-invariant operands, computed once before the loop.
    pub invariant: HashMap<usize, Value>,
    /// Row addresses of loads along the vectorized index (every subscript
    /// but the last invariant), computed once before the loop: the body
    /// adds the last position only. (Cranelift does not hoist them.)
    pub rows: HashMap<usize, Value>,
    /// Pointers to the current element of loads whose last subscript is
    /// the vectorized index itself: loop-carried, advanced by one step per
    /// iteration, so a load is one instruction with an immediate offset.
    pub ptrs: HashMap<usize, Variable>,
    /// The current copy's offset from the step's first element, in elements.
    pub copy: i64,
}

fn bitcast_flags() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

/// Flags for vector element accesses: in bounds, not necessarily 16-byte aligned.
fn vector_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Flags of a vector load of `tensor` in a vector loop's body: a kernel
/// input is never written while the kernel runs, so its loads are pure
/// (`readonly`, `can_move`): Cranelift places each at its first use instead
/// of keeping every copy's loads in program order ahead of the arithmetic
/// (which kept three loaded vectors live across a copy's `exp` and spilled
/// them). The addresses are valid wherever the loop body runs; a load whose
/// address moves with the loop (a loop-carried pointer, the element index)
/// cannot leave the loop.
fn input_load_flags(k: &passfold_dsl::Kernel, tensor: passfold_dsl::TensorId) -> MemFlagsData {
    if k.tensor(tensor).kind == passfold_dsl::TensorKind::Input {
        vector_flags().with_readonly().with_can_move()
    } else {
        vector_flags()
    }
}

impl Lanes {
    pub fn new(index: ExtentId, elem: ScalarType, vary: Vec<bool>) -> Self {
        let (vty, mty, width) = if elem == ScalarType::F64 {
            (types::F64X2, types::I64X2, 2)
        } else {
            (types::F32X4, types::I32X4, 4)
        };
        Lanes {
            index,
            elem,
            vty,
            mty,
            width,
            vary,
            vars: HashMap::new(),
            mask: None,
            cache: HashMap::new(),
            invariant: HashMap::new(),
            rows: HashMap::new(),
            ptrs: HashMap::new(),
            copy: 0,
        }
    }
}

impl Emitter<'_, '_> {
    /// The splat of a float constant.
    fn vconst(&mut self, l: &Lanes, v: f64) -> Value {
        let s = self.float_const(l.elem, v);
        self.b.ins().splat(l.vty, s)
    }

    /// The value of `h` for the lanes at the current position.
    pub(crate) fn vvalue(&mut self, l: &mut Lanes, h: Handle<Node>) -> Result<Value, CodegenError> {
        if !l.vary[h.index()] {
            if let Some(&v) = l.invariant.get(&h.index()) {
                return Ok(v);
            }
            return self.broadcast(l, h);
        }
        if let Some(&v) = l.cache.get(&h.index()) {
            return Ok(v);
        }
        let v = self.vnode(l, h)?;
        l.cache.insert(h.index(), v);
        Ok(v)
    }

    /// The scalar value of the uniform node `h` in every lane.
    fn broadcast(&mut self, l: &Lanes, h: Handle<Node>) -> Result<Value, CodegenError> {
        let s = self.value(h)?;
        Ok(match self.k.ty(h) {
            ScalarType::Bool => {
                let lane = l.mty.lane_type();
                let m = self.b.ins().bmask(lane, s);
                self.b.ins().splat(l.mty, m)
            }
            _ => self.b.ins().splat(l.vty, s),
        })
    }

    /// Broadcasts, before the loop, the uniform operands of the varying
    /// nodes of `roots`, so the loop body does not recompute (or, when
    /// registers run out, spill and reload) them every step. Only operands
    /// that cannot fail are hoisted (no gathered loads, no reductions): the
    /// loop may run zero times.
    fn hoist_invariants(
        &mut self,
        l: &mut Lanes,
        roots: &[Handle<Node>],
    ) -> Result<(), CodegenError> {
        let mut stack = roots.to_vec();
        let mut seen = std::collections::HashSet::new();
        let mut hoist = Vec::new();
        while let Some(h) = stack.pop() {
            if !seen.insert(h) {
                continue;
            }
            if !l.vary[h.index()] {
                if self.safe_to_hoist(h) {
                    hoist.push(h);
                }
                continue;
            }
            if let Some(row) = self.hoisted_row(l, h)? {
                l.rows.insert(h.index(), row);
            }
            stack.extend(self.k.nodes[h].operands());
        }
        hoist.sort_by_key(|h| h.index());
        for h in hoist {
            let v = self.broadcast(l, h)?;
            // Pinned (a stack slot, loaded where it is used), or Cranelift
            // sinks the broadcast into the loop and keeps its scalar live
            // across it, spilled and reloaded with the vector every step
            // when registers run short (exp loops): pinning every broadcast
            // measured 1–8% faster on softmax, logsumexp and layer_norm.
            let v = self.pin(v);
            l.invariant.insert(h.index(), v);
        }
        Ok(())
    }

    /// The row address of a load whose subscripts other than the last do
    /// not involve the vectorized index (computed here, before the loop).
    fn hoisted_row(&mut self, l: &Lanes, h: Handle<Node>) -> Result<Option<Value>, CodegenError> {
        let Node::Load { tensor, index } = &self.k.nodes[h] else {
            return Ok(None);
        };
        let t = tensor.0 as usize;
        let Some((_, outer)) = index.split_last() else {
            return Ok(None);
        };
        let mut forms = Vec::with_capacity(outer.len());
        for idx in outer {
            match idx {
                Index::Affine(a) if a.terms.iter().all(|(v, _)| *v != l.index) => {
                    forms.push(a.clone())
                }
                _ => return Ok(None),
            }
        }
        let mut pos = Vec::with_capacity(forms.len());
        for (d, a) in forms.iter().enumerate() {
            let p = self.affine_value(a)?;
            pos.push(match self.layouts[t].dims[d].origin {
                Some(o) => self.b.ins().iadd(p, o),
                None => p,
            });
        }
        Ok(Some(self.row_address(t, &pos)))
    }

    fn safe_to_hoist(&self, root: Handle<Node>) -> bool {
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            match &self.k.nodes[h] {
                Node::Reduce { .. } => return false,
                Node::Load { index, .. } if index.iter().any(|i| matches!(i, Index::Gather(_))) => {
                    return false;
                }
                n => stack.extend(n.operands()),
            }
        }
        true
    }

    fn vunsupported(&self, h: Handle<Node>, what: &str) -> CodegenError {
        CodegenError::Unsupported {
            what: format!("{what} in vector code"),
            span: self.k.span(h),
        }
    }

    fn vnode(&mut self, l: &mut Lanes, h: Handle<Node>) -> Result<Value, CodegenError> {
        let ty = self.k.ty(h);
        Ok(match &self.k.nodes[h] {
            Node::Var(v) => {
                let var = *l
                    .vars
                    .get(v)
                    .ok_or_else(|| self.vunsupported(h, "a variable without lanes"))?;
                self.b.use_var(var)
            }
            Node::Load { tensor, .. } if l.ptrs.contains_key(&h.index()) => {
                let size = self.k.tensor(*tensor).ty.size_bytes() as i64;
                let ptr = self.b.use_var(l.ptrs[&h.index()]);
                let offset = i32::try_from(l.copy * size).unwrap_or(i32::MAX);
                let flags = input_load_flags(self.k, *tensor);
                self.b.ins().load(l.vty, flags, ptr, offset)
            }
            Node::Load { tensor, index } if l.rows.contains_key(&h.index()) => {
                let t = tensor.0 as usize;
                let d = index.len() - 1;
                let Some(Index::Affine(a)) = index.last() else {
                    return Err(self.vunsupported(h, "a gathered load"));
                };
                let p = self.affine_value(a)?;
                let p = match self.layouts[t].dims[d].origin {
                    Some(o) => self.b.ins().iadd(p, o),
                    None => p,
                };
                let row = l.rows[&h.index()];
                let addr = self.in_row(t, row, p);
                self.b.ins().load(l.vty, vector_flags(), addr, 0)
            }
            Node::Load { tensor, index } => {
                let t = tensor.0 as usize;
                let mut pos = Vec::with_capacity(index.len());
                for (d, idx) in index.iter().enumerate() {
                    let Index::Affine(a) = idx else {
                        return Err(self.vunsupported(h, "a gathered load"));
                    };
                    let p = self.affine_value(a)?;
                    let p = match self.layouts[t].dims[d].origin {
                        Some(o) => self.b.ins().iadd(p, o),
                        None => p,
                    };
                    pos.push(p);
                }
                let addr = self.address(t, &pos);
                self.b.ins().load(l.vty, vector_flags(), addr, 0)
            }
            Node::Unary(op, a) => {
                let x = self.vvalue(l, *a)?;
                self.vunary(l, *op, x)?
            }
            Node::Binary(op, a, b) => {
                let x = self.vvalue(l, *a)?;
                let y = self.vvalue(l, *b)?;
                match op {
                    BinOp::Min => self.vmin_max(l, false, x, y),
                    BinOp::Max => self.vmin_max(l, true, x, y),
                    BinOp::MaxNum => {
                        // `x < y ? y : x`: one `maxps`.
                        let lt = self.b.ins().fcmp(FloatCC::LessThan, x, y);
                        self.vselect(l, lt, y, x)
                    }
                    _ => {
                        let ins = self.b.ins();
                        match op {
                            BinOp::Add => ins.fadd(x, y),
                            BinOp::Sub => ins.fsub(x, y),
                            BinOp::Mul => ins.fmul(x, y),
                            BinOp::Div => ins.fdiv(x, y),
                            BinOp::And => ins.band(x, y),
                            _ => ins.bor(x, y),
                        }
                    }
                }
            }
            Node::Cmp(op, a, b) => {
                let x = self.vvalue(l, *a)?;
                let y = self.vvalue(l, *b)?;
                self.b.ins().fcmp(crate::expr::float_cc(*op), x, y)
            }
            Node::Select(c, a, b) => {
                let c = self.vvalue(l, *c)?;
                let x = self.vvalue(l, *a)?;
                let y = self.vvalue(l, *b)?;
                self.vselect(l, c, x, y)
            }
            Node::Powf(a, p) => {
                let x = self.vvalue(l, *a)?;
                let p = f64::from_bits(*p);
                let p = if ty == ScalarType::F32 {
                    p as f32 as f64
                } else {
                    p
                };
                if p == 2.0 {
                    self.b.ins().fmul(x, x)
                } else if p == 1.0 {
                    x
                } else if p == 0.5 {
                    self.b.ins().sqrt(x)
                } else {
                    self.per_lane(l, x, |em, s| em.powf(h, s, p, ty))?
                }
            }
            Node::Cast(_, a) => self.vvalue(l, *a)?,
            Node::IndexValue(_)
            | Node::ConstFloat(_)
            | Node::ConstInt(_)
            | Node::Param(_)
            | Node::ExtentLen(_)
            | Node::Reduce { .. } => {
                return Err(self.vunsupported(h, "a varying index value or reduction"));
            }
        })
    }

    /// NaN-propagating `max(x, y)` (or `min`) in three instructions
    /// (`x < y ? y : x`, which keeps a NaN `x`, then a NaN `y` chosen by an
    /// unordered compare) instead of Cranelift's eight-instruction `fmax`,
    /// which also orders `-0 < +0`: here `max(-0, +0)` may be either zero,
    /// as `f32::max` allows.
    pub(crate) fn vmin_max(&mut self, l: &Lanes, max: bool, x: Value, y: Value) -> Value {
        let cc = if max {
            FloatCC::LessThan
        } else {
            FloatCC::GreaterThan
        };
        let pick_y = self.b.ins().fcmp(cc, x, y);
        let r = self.vselect(l, pick_y, y, x);
        let y_nan = self.b.ins().fcmp(FloatCC::Unordered, y, y);
        self.vselect(l, y_nan, y, r)
    }

    /// Round to nearest, ties to even, without SSE4.1: `(|x| + 2^p) - 2^p`
    /// with `x`'s sign for `|x| < 2^p` (`p` = 23 or 52), where floats may
    /// have a fraction; `x` itself above (already an integer), for
    /// infinities and for NaN.
    fn vround(&mut self, l: &Lanes, x: Value) -> Value {
        let big = if l.elem == ScalarType::F64 {
            2f64.powi(52)
        } else {
            2f64.powi(23)
        };
        let ax = self.b.ins().fabs(x);
        let m = self.vconst(l, big);
        let up = self.b.ins().fadd(ax, m);
        let r = self.b.ins().fsub(up, m);
        // x's sign on the non-negative r (`fcopysign` has no x86-64 vector lowering).
        let sign_bit = if l.elem == ScalarType::F64 {
            self.b.ins().iconst(types::I64, i64::MIN)
        } else {
            self.b.ins().iconst(types::I32, i64::from(0x8000_0000u32))
        };
        let sign_bit = self.b.ins().splat(l.mty, sign_bit);
        let xi = self.b.ins().bitcast(l.mty, bitcast_flags(), x);
        let sign = self.b.ins().band(xi, sign_bit);
        let ri = self.b.ins().bitcast(l.mty, bitcast_flags(), r);
        let ri = self.b.ins().bor(ri, sign);
        let r = self.b.ins().bitcast(l.vty, bitcast_flags(), ri);
        let small = self.b.ins().fcmp(FloatCC::LessThan, ax, m);
        self.vselect(l, small, r, x)
    }

    /// `2^x` as `e^(f·ln 2)·2^n` with `n = round(x)` (magic-bias rounding
    /// after clamping `x` to where `2^x` is 0 or `+inf` anyway) and
    /// `f = x - n ∈ [-½, ½]`: exact powers of two for integer `x` (the
    /// exponent differences of the Two-Pass accumulator), about 1 ULP
    /// otherwise; `2^-inf = 0`, `2^+inf = +inf`, NaN → NaN.
    fn vexp2(&mut self, l: &Lanes, x: Value) -> Value {
        let (bound, magic) = if l.elem == ScalarType::F64 {
            (2200.0, 1.5 * 2f64.powi(52))
        } else {
            (300.0, 1.5 * 2f64.powi(23))
        };
        let lo = self.vconst(l, -bound);
        let hi = self.vconst(l, bound);
        let x = self.vmin_max(l, true, x, lo);
        let x = self.vmin_max(l, false, x, hi);
        let m = self.vconst(l, magic);
        let biased = self.b.ins().fadd(x, m);
        let n = self.b.ins().fsub(biased, m);
        let f = self.b.ins().fsub(x, n);
        let ln2 = self.vconst(l, std::f64::consts::LN_2);
        let t = self.b.ins().fmul(f, ln2);
        let e = vmath::exp(&mut self.b, self.features, t);
        vmath::scale_by_pow2(&mut self.b, self.features, e, n)
    }

    /// `mask ? x : y` lane by lane; `mask` is a lane mask.
    fn vselect(&mut self, l: &Lanes, mask: Value, x: Value, y: Value) -> Value {
        let m = self.b.ins().bitcast(l.vty, bitcast_flags(), mask);
        self.b.ins().bitselect(m, x, y)
    }

    /// `f` applied to each lane of `x` through the scalar lowering.
    fn per_lane(
        &mut self,
        l: &Lanes,
        x: Value,
        mut f: impl FnMut(&mut Self, Value) -> Result<Value, CodegenError>,
    ) -> Result<Value, CodegenError> {
        let mut out = x;
        for lane in 0..l.width as u8 {
            let s = self.b.ins().extractlane(x, lane);
            let r = f(self, s)?;
            out = self.b.ins().insertlane(out, r, lane);
        }
        Ok(out)
    }

    fn vunary(&mut self, l: &Lanes, op: UnOp, x: Value) -> Result<Value, CodegenError> {
        let f = self.features;
        let fb = &mut self.b;
        Ok(match op {
            UnOp::Not => fb.ins().bnot(x),
            UnOp::Neg => fb.ins().fneg(x),
            UnOp::Abs => fb.ins().fabs(x),
            UnOp::Sqrt => fb.ins().sqrt(x),
            UnOp::Rsqrt => vmath::rsqrt(fb, f, x),
            UnOp::Exp => vmath::exp(fb, f, x),
            UnOp::ExpNonPos => vmath::exp_nonpositive(fb, f, x),
            UnOp::Log => vmath::log(fb, f, x),
            UnOp::Log1p => vmath::log1p(fb, f, x),
            UnOp::Expm1 => vmath::expm1(fb, f, x),
            UnOp::Tanh => vmath::tanh(fb, f, x),
            UnOp::Sigmoid => vmath::sigmoid(fb, f, x),
            UnOp::Softplus => vmath::softplus(fb, f, x),
            UnOp::Sign => {
                // 1 if x > 0, -1 if x < 0, else x itself (±0 and NaN).
                let zero = self.vconst(l, 0.0);
                let one = self.vconst(l, 1.0);
                let minus_one = self.vconst(l, -1.0);
                let gt = self.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                let lt = self.b.ins().fcmp(FloatCC::LessThan, x, zero);
                let neg_or_x = self.vselect(l, lt, minus_one, x);
                self.vselect(l, gt, one, neg_or_x)
            }
            UnOp::Exp2 => self.vexp2(l, x),
            UnOp::Round => self.vround(l, x),
        })
    }

    /// Lowers the ops of a vector loop's body for one copy; see the module docs.
    fn vops(&mut self, l: &mut Lanes, ops: &[Op]) -> Result<(), CodegenError> {
        for op in ops {
            match op {
                Op::Loop { .. } | Op::Barrier | Op::Toeplitz { .. } => {
                    return Err(CodegenError::Unsupported {
                        what: "an inner loop or a barrier in vector code".into(),
                        span: Default::default(),
                    });
                }
                Op::If { cond, then } => {
                    self.cache.push();
                    let c = self.vvalue(l, *cond)?;
                    self.cache.pop();
                    l.cache.clear();
                    let c = match l.mask {
                        Some(outer) => self.b.ins().band(outer, c),
                        None => c,
                    };
                    let any = self.b.ins().vany_true(c);
                    let then_block = self.b.create_block();
                    let join = self.b.create_block();
                    self.b.ins().brif(any, then_block, &[], join, &[]);
                    self.b.switch_to_block(then_block);
                    self.b.seal_block(then_block);
                    let outer = l.mask.replace(c);
                    self.cache.push();
                    self.vops(l, then)?;
                    self.cache.pop();
                    l.mask = outer;
                    l.cache.clear();
                    self.b.ins().jump(join, &[]);
                    self.b.switch_to_block(join);
                    self.b.seal_block(join);
                }
                Op::Set { var, value } => {
                    self.cache.push();
                    let x = self.vvalue(l, *value)?;
                    self.cache.pop();
                    l.cache.clear();
                    let v = *l.vars.get(var).ok_or_else(|| CodegenError::Unsupported {
                        what: "an assignment to a variable without lanes".into(),
                        span: self.k.span(*value),
                    })?;
                    let x = match l.mask {
                        Some(m) => {
                            let old = self.b.use_var(v);
                            self.vselect(l, m, x, old)
                        }
                        None => x,
                    };
                    self.b.def_var(v, x);
                }
                Op::Store {
                    tensor,
                    index,
                    value,
                } => {
                    self.check_store(*tensor, index, *value)?;
                    self.cache.push();
                    let x = self.vvalue(l, *value)?;
                    self.store_at(*tensor, index, x, vector_flags())?;
                    self.cache.pop();
                    l.cache.clear();
                }
            }
        }
        Ok(())
    }

    /// Starts the pointers of the loads whose last subscript is the index
    /// itself (on a plain dimension) at `start`; see [`Lanes::ptrs`].
    fn start_pointers(&mut self, l: &mut Lanes, start: Value) {
        let mut rows: Vec<(usize, Value)> = l.rows.iter().map(|(h, v)| (*h, *v)).collect();
        rows.sort_by_key(|(h, _)| *h);
        for (h, row) in rows {
            let Node::Load { tensor, index } = &self.k.nodes[Handle::from_index(h)] else {
                continue;
            };
            let t = tensor.0 as usize;
            let d = index.len() - 1;
            let plain =
                matches!(index.last(), Some(Index::Affine(a)) if a.as_var() == Some(l.index));
            if !plain || self.layouts[t].dims[d].origin.is_some() {
                continue;
            }
            let at = self.in_row(t, row, start);
            let var = self.b.declare_var(types::I64);
            self.b.def_var(var, at);
            l.ptrs.insert(h, var);
        }
    }

    /// Advances every pointer by `step` elements.
    fn advance_pointers(&mut self, l: &Lanes, step: i64) {
        let mut ptrs: Vec<(usize, Variable)> = l.ptrs.iter().map(|(h, v)| (*h, *v)).collect();
        ptrs.sort_by_key(|(h, _)| *h);
        for (h, var) in ptrs {
            let Node::Load { tensor, .. } = &self.k.nodes[Handle::from_index(h)] else {
                continue;
            };
            let size = self.k.tensor(*tensor).ty.size_bytes() as i64;
            let p = self.b.use_var(var);
            let next = self.b.ins().iadd_imm_s(p, step * size);
            self.b.def_var(var, next);
        }
    }

    /// `(start, end, main_end)`: the clamped range and the end of the part
    /// that whole steps of `step` elements cover.
    fn vector_range(
        &mut self,
        e: ExtentId,
        bounds: Option<(Value, Value)>,
        step: i64,
    ) -> (Value, Value, Value) {
        let zero = self.b.ins().iconst(types::I64, 0);
        let len = self.extents[e.0 as usize];
        let (start, end) = match bounds {
            Some((a, b)) => (self.b.ins().smax(a, zero), self.b.ins().smin(b, len)),
            None => (zero, len),
        };
        let n = self.b.ins().isub(end, start);
        let n = self.b.ins().smax(n, zero);
        let whole = if step > 0 && step & (step - 1) == 0 {
            self.b.ins().band_imm_s(n, -step)
        } else {
            let rest = self.b.ins().urem_imm_u(n, step);
            self.b.ins().isub(n, rest)
        };
        let main_end = self.b.ins().iadd(start, whole);
        (start, end, main_end)
    }

    /// Opens the main loop: `pos` starts at `first` and the body runs while
    /// `pos cond bound` (`SignedLessThan` and `main_end` forward: `for pos
    /// in start..main_end`; `SignedGreaterThanOrEqual` and `start`
    /// backward, from the last whole step down); returns `(position
    /// variable, header, exit, position)`.
    fn open_vector_loop(
        &mut self,
        first: Value,
        cond: IntCC,
        bound: Value,
    ) -> (
        Variable,
        cranelift_codegen::ir::Block,
        cranelift_codegen::ir::Block,
        Value,
    ) {
        let var = self.b.declare_var(types::I64);
        self.b.def_var(var, first);
        let header = self.b.create_block();
        let body = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let pos = self.b.use_var(var);
        let more = self.b.ins().icmp(cond, pos, bound);
        self.b.ins().brif(more, body, &[], exit, &[]);
        self.b.switch_to_block(body);
        self.cache.push();
        (var, header, exit, pos)
    }

    fn close_vector_loop(
        &mut self,
        var: Variable,
        header: cranelift_codegen::ir::Block,
        exit: cranelift_codegen::ir::Block,
        pos: Value,
        step: i64,
    ) {
        let next = self.b.ins().iadd_imm_s(pos, step);
        self.b.def_var(var, next);
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(exit);
        self.cache.pop();
    }

    /// `v` with lane `l + shift` moved to lane `l` (the upper lanes repeat).
    fn shift_lanes(&mut self, l: &Lanes, v: Value, shift: u32) -> Value {
        let lane_bytes = 16 / l.width;
        let mut bytes = [0u8; 16];
        for lane in 0..l.width {
            let from = (lane + shift).min(l.width - 1);
            for k in 0..lane_bytes {
                bytes[(lane * lane_bytes + k) as usize] = (from * lane_bytes + k) as u8;
            }
        }
        let imm = self
            .b
            .func
            .dfg
            .immediates
            .push(ConstantData::from(bytes.to_vec()));
        let x = self.b.ins().bitcast(types::I8X16, bitcast_flags(), v);
        let s = self.b.ins().shuffle(x, x, imm);
        self.b.ins().bitcast(l.vty, bitcast_flags(), s)
    }

    /// Lowers a loop the planner vectorized (see the module docs).
    pub(crate) fn vector_loop(
        &mut self,
        e: ExtentId,
        bounds: Option<(Value, Value)>,
        v: &VectorLoop,
        body: &[Op],
    ) -> Result<(), CodegenError> {
        let mut lane_mask = vec![false; self.var_count()];
        for var in &v.lane_vars {
            lane_mask[var.0 as usize] = true;
        }
        let vary = passfold_dsl::vector::varying(self.k, e, &lane_mask);
        let mut l = Lanes::new(e, v.elem, vary);
        let width = l.width as i64;
        let step = width * v.unroll as i64;
        let (start, end, main_end) = self.vector_range(e, bounds, step);
        // `vec_end`: the end of the whole vectors. Those past the unrolled
        // steps (fewer than `unroll`) run one vector per step; the scalar
        // tail is `[vec_end, end)` (fewer than `width` elements).
        let vec_end = if v.unroll > 1 {
            let n = self.b.ins().isub(end, main_end);
            let zero = self.b.ins().iconst(types::I64, 0);
            let n = self.b.ins().smax(n, zero);
            let whole = self.b.ins().band_imm_s(n, -width);
            self.b.ins().iadd(main_end, whole)
        } else {
            main_end
        };
        if v.backward {
            // The scalar tail first (the states continue from it).
            let frame = self.open_loop_in(e, Some((vec_end, end)));
            self.ops(body)?;
            self.close_loop(frame);
        }
        // One vector variable per lane variable and copy.
        let mut copies: Vec<HashMap<VarId, Variable>> = Vec::new();
        for u in 0..v.unroll {
            let mut map = HashMap::new();
            for &var in &v.lane_vars {
                let x = self.b.declare_var(l.vty);
                let identity = v
                    .states
                    .iter()
                    .find(|s| s.0 == var)
                    .map(|s| s.2)
                    .unwrap_or(0.0);
                let mut init = self.vconst(&l, identity);
                if u == 0 && v.states.iter().any(|s| s.0 == var) {
                    let current = self.var_value(var)?;
                    init = self.b.ins().insertlane(init, current, 0);
                }
                self.b.def_var(x, init);
                map.insert(var, x);
            }
            copies.push(map);
        }
        let mut roots = Vec::new();
        op_roots(body, &mut roots);
        self.hoist_invariants(&mut l, &roots)?;
        // The single vectors run before the unrolled loop, so values live
        // in both (hoisted constants) are not kept across the unrolled
        // loop, which would make its register allocation spill them.
        // Forward: single vectors over `[start, start + rem)` with `rem =
        // vec_end - main_end`, then the unrolled steps up to `vec_end`.
        // Backward: single vectors from `vec_end - width` down to
        // `main_end`, then the unrolled steps from `main_end - step` down
        // to `start`.
        let (first, bound, delta) = if v.backward {
            if v.unroll > 1 {
                let top = self.b.ins().iadd_imm_s(vec_end, -width);
                self.single_vectors(&mut l, e, &copies[0], body, top, main_end, true)?;
            }
            (self.b.ins().iadd_imm_s(main_end, -step), start, -step)
        } else {
            let first = if v.unroll > 1 {
                let rem = self.b.ins().isub(vec_end, main_end);
                let first = self.b.ins().iadd(start, rem);
                self.single_vectors(&mut l, e, &copies[0], body, start, first, false)?;
                first
            } else {
                start
            };
            (first, vec_end, step)
        };
        self.start_pointers(&mut l, first);
        let (pos_var, header, exit, pos) = if v.backward {
            self.open_vector_loop(first, IntCC::SignedGreaterThanOrEqual, bound)
        } else {
            self.open_vector_loop(first, IntCC::SignedLessThan, bound)
        };
        let outer = self.env[e.0 as usize];
        for (u, map) in copies.iter().enumerate() {
            let p = self.b.ins().iadd_imm_s(pos, u as i64 * width);
            self.env[e.0 as usize] = Some(p);
            l.copy = u as i64 * width;
            l.vars = map.clone();
            self.cache.push();
            self.vops(&mut l, body)?;
            self.cache.pop();
            l.cache.clear();
        }
        self.env[e.0 as usize] = outer;
        self.advance_pointers(&l, delta);
        self.close_vector_loop(pos_var, header, exit, pos, delta);
        self.merge_lanes(&mut l, v, &copies)?;
        if !v.backward {
            // The scalar tail.
            let frame = self.open_loop_in(e, Some((vec_end, end)));
            self.ops(body)?;
            self.close_loop(frame);
        }
        Ok(())
    }

    /// One vector per step into the first copy's variables: forward from
    /// `first` while below `bound`, or backward from `first` down while at
    /// least `bound`.
    #[allow(clippy::too_many_arguments)]
    fn single_vectors(
        &mut self,
        l: &mut Lanes,
        e: ExtentId,
        vars: &HashMap<VarId, Variable>,
        body: &[Op],
        first: Value,
        bound: Value,
        backward: bool,
    ) -> Result<(), CodegenError> {
        let width = l.width as i64;
        let delta = if backward { -width } else { width };
        let cond = if backward {
            IntCC::SignedGreaterThanOrEqual
        } else {
            IntCC::SignedLessThan
        };
        self.start_pointers(l, first);
        let (pos_var, header, exit, pos) = self.open_vector_loop(first, cond, bound);
        let outer = self.env[e.0 as usize];
        self.env[e.0 as usize] = Some(pos);
        l.copy = 0;
        l.vars = vars.clone();
        self.cache.push();
        self.vops(l, body)?;
        self.cache.pop();
        l.cache.clear();
        self.env[e.0 as usize] = outer;
        self.advance_pointers(l, delta);
        self.close_vector_loop(pos_var, header, exit, pos, delta);
        Ok(())
    }

    /// Merges the copies and the lanes of the states into the scalar states.
    fn merge_lanes(
        &mut self,
        l: &mut Lanes,
        v: &VectorLoop,
        copies: &[HashMap<VarId, Variable>],
    ) -> Result<(), CodegenError> {
        if v.states.is_empty() {
            return Ok(());
        }
        // Lane variables of the merge: states, twins, and its temporaries.
        let mut merge_vars: Vec<VarId> = v.states.iter().flat_map(|s| [s.0, s.1]).collect();
        sets_in(&v.merge, &mut merge_vars);
        let mut mask = vec![false; self.var_count()];
        for var in &merge_vars {
            mask[var.0 as usize] = true;
        }
        l.vary = passfold_dsl::vector::varying(self.k, l.index, &mask);
        let mut base: HashMap<VarId, Variable> = copies[0].clone();
        for &var in &merge_vars {
            if let std::collections::hash_map::Entry::Vacant(slot) = base.entry(var) {
                let x = self.b.declare_var(l.vty);
                let zero = self.vconst(l, 0.0);
                self.b.def_var(x, zero);
                slot.insert(x);
            }
        }
        let twin_var = |base: &HashMap<VarId, Variable>, twin: VarId| base[&twin];
        // Copies into copy 0.
        for copy in &copies[1..] {
            for s in &v.states {
                let x = self.b.use_var(copy[&s.0]);
                self.b.def_var(twin_var(&base, s.1), x);
            }
            l.vars = base.clone();
            self.cache.push();
            self.vops(l, &v.merge)?;
            self.cache.pop();
            l.cache.clear();
        }
        // Lanes into lane 0.
        let mut shift = l.width / 2;
        while shift > 0 {
            for s in &v.states {
                let x = self.b.use_var(base[&s.0]);
                let moved = self.shift_lanes(l, x, shift);
                self.b.def_var(twin_var(&base, s.1), moved);
            }
            l.vars = base.clone();
            self.cache.push();
            self.vops(l, &v.merge)?;
            self.cache.pop();
            l.cache.clear();
            shift /= 2;
        }
        for s in &v.states {
            let x = self.b.use_var(base[&s.0]);
            let lane0 = self.b.ins().extractlane(x, 0);
            self.set_var(s.0, lane0);
        }
        Ok(())
    }

    /// A reduction over its last axis as vector code, the other axes as
    /// scalar loops around it; `None` when the planner's rules reject it.
    pub(crate) fn vector_reduce(
        &mut self,
        h: Handle<Node>,
        op: ReduceOp,
        axes: &[ExtentId],
        arg: Handle<Node>,
    ) -> Result<Option<Value>, CodegenError> {
        let Ok((elem, width, unroll)) = passfold_dsl::vector::vectorize_reduce(self.k, h) else {
            return Ok(None);
        };
        let Some((&last, outer_axes)) = axes.split_last() else {
            return Ok(None);
        };
        let vary = passfold_dsl::vector::varying(self.k, last, &[]);
        let mut l = Lanes::new(last, elem, vary);
        let identity = match op {
            ReduceOp::Max => f64::NEG_INFINITY,
            ReduceOp::Min => f64::INFINITY,
            _ => 0.0,
        };
        let vty = l.vty;
        let combine = |em: &mut Self, a: Value, b: Value| {
            let vector = em.b.func.dfg.value_type(a) == vty;
            match op {
                ReduceOp::Max if vector => {
                    em.vmin_max(&Lanes::new(last, elem, Vec::new()), true, a, b)
                }
                ReduceOp::Min if vector => {
                    em.vmin_max(&Lanes::new(last, elem, Vec::new()), false, a, b)
                }
                ReduceOp::Max => em.b.ins().fmax(a, b),
                ReduceOp::Min => em.b.ins().fmin(a, b),
                _ => em.b.ins().fadd(a, b),
            }
        };
        let accs: Vec<Variable> = (0..unroll)
            .map(|_| {
                let x = self.b.declare_var(l.vty);
                let init = self.vconst(&l, identity);
                self.b.def_var(x, init);
                x
            })
            .collect();
        let tail_acc = self.b.declare_var(crate::emit::clif_type(elem));
        let init = self.float_const(elem, identity);
        self.b.def_var(tail_acc, init);
        let frames: Vec<_> = outer_axes.iter().map(|&e| self.open_loop(e)).collect();
        let step = width as i64 * unroll as i64;
        self.hoist_invariants(&mut l, &[arg])?;
        let (start, end, main_end) = self.vector_range(last, None, step);
        self.start_pointers(&mut l, start);
        let (pos_var, header, exit, pos) =
            self.open_vector_loop(start, IntCC::SignedLessThan, main_end);
        let outer = self.env[last.0 as usize];
        for (u, &acc) in accs.iter().enumerate() {
            let p = self.b.ins().iadd_imm_s(pos, u as i64 * width as i64);
            self.env[last.0 as usize] = Some(p);
            l.copy = u as i64 * width as i64;
            self.cache.push();
            let x = self.vvalue(&mut l, arg)?;
            self.cache.pop();
            l.cache.clear();
            let old = self.b.use_var(acc);
            let new = combine(self, old, x);
            self.b.def_var(acc, new);
        }
        self.env[last.0 as usize] = outer;
        self.advance_pointers(&l, step);
        self.close_vector_loop(pos_var, header, exit, pos, step);
        let frame = self.open_loop_in(last, Some((main_end, end)));
        let x = self.value(arg)?;
        let old = self.b.use_var(tail_acc);
        let new = combine(self, old, x);
        self.b.def_var(tail_acc, new);
        self.close_loop(frame);
        for frame in frames.into_iter().rev() {
            self.close_loop(frame);
        }
        let mut total = self.b.use_var(accs[0]);
        for &acc in &accs[1..] {
            let x = self.b.use_var(acc);
            total = combine(self, total, x);
        }
        let mut shift = width / 2;
        while shift > 0 {
            let moved = self.shift_lanes(&l, total, shift);
            total = combine(self, total, moved);
            shift /= 2;
        }
        let lane0 = self.b.ins().extractlane(total, 0);
        let tail = self.b.use_var(tail_acc);
        Ok(Some(combine(self, lane0, tail)))
    }
}
