//! The driver of the scalar lowering: entry block, layouts, loop program.
//!
//! Assumes a verified kernel and a loop program over it (`passfold_dsl::lir`).
//! Emits each `Loop` as a counted loop, each `Set` as a definition of a
//! Cranelift `Variable`, each `Store` as a store at the indices' row-major
//! offset, in program order: exactly the order in which
//! `passfold_dsl::interp` executes the program. Everything that depends
//! only on the call's arguments (extents, tensor bases and layouts,
//! parameters) is computed once in the entry block, which dominates the
//! whole function.
//!
//! Node values are cached per scope ([`ScopedCache`]): a value computed
//! inside a loop is forgotten when the loop closes, since its definition
//! does not dominate the code after the loop, and each `Set`/`Store`
//! evaluates in a scope of its own, so no value outlives a later
//! assignment to a variable it reads or a store to a tensor it loads.

use crate::sites::GatherSite;
use crate::{CodegenError, Helper};
use cranelift_codegen::ir::{
    Block, ExtFuncData, ExternalName, FuncRef, InstBuilder, MemFlagsData, Type, UserExternalName,
    Value, types,
};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::{FunctionBuilder, Variable};
use passfold_dsl::lir::Op;
use passfold_dsl::vector::LoopCode;
use passfold_dsl::{ExtentId, Handle, Kernel, Node, Plan, ScalarType, TensorId, TensorKind, VarId};

/// The Cranelift type of a DSL scalar type (`bool` is an `i8` holding 0 or 1).
pub(crate) fn clif_type(ty: ScalarType) -> Type {
    match ty {
        ScalarType::F32 => types::F32,
        ScalarType::F64 => types::F64,
        ScalarType::I32 => types::I32,
        ScalarType::Bool => types::I8,
    }
}

fn has_barrier(ops: &[Op]) -> bool {
    ops.iter().any(|op| match op {
        Op::Barrier => true,
        Op::Loop { body, .. } => has_barrier(body),
        Op::If { then, .. } => has_barrier(then),
        _ => false,
    })
}

/// Flags for loads of the call's argument arrays: aligned, in bounds, never written.
pub(crate) fn arg_flags() -> MemFlagsData {
    MemFlagsData::trusted().with_readonly()
}

/// Flags for tensor element accesses: aligned and in bounds.
pub(crate) fn data_flags() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// One dimension of a tensor at run time: `(origin, length)` as `i64` values;
/// `origin` is `None` when it is known to be 0 (a plain extent).
#[derive(Clone, Copy)]
pub(crate) struct DimLayout {
    pub origin: Option<Value>,
    pub len: Value,
}

/// A tensor at run time: base address, dimensions and row-major strides.
pub(crate) struct TensorLayout {
    pub base: Value,
    pub dims: Vec<DimLayout>,
    /// Row-major strides in elements; `None` is a stride of 1.
    pub strides: Vec<Option<Value>>,
}

/// Node values valid at the current point, by node index, with one undo
/// frame per open scope.
pub(crate) struct ScopedCache {
    values: Vec<Option<Value>>,
    frames: Vec<Vec<usize>>,
}

impl ScopedCache {
    fn new(n: usize) -> Self {
        ScopedCache {
            values: vec![None; n],
            frames: vec![Vec::new()],
        }
    }

    pub fn get(&self, h: Handle<Node>) -> Option<Value> {
        self.values[h.index()]
    }

    pub fn insert(&mut self, h: Handle<Node>, v: Value) {
        self.values[h.index()] = Some(v);
        if let Some(frame) = self.frames.last_mut() {
            frame.push(h.index());
        }
    }

    pub fn push(&mut self) {
        self.frames.push(Vec::new());
    }

    pub fn pop(&mut self) {
        for i in self.frames.pop().unwrap_or_default() {
            self.values[i] = None;
        }
    }
}

/// An open counted loop `for index in 0..len(extent)`.
pub(crate) struct LoopFrame {
    var: Variable,
    header: Block,
    exit: Block,
    extent: ExtentId,
    index: Value,
    outer: Option<Value>,
    /// The increment (blocks step by their size).
    pub step: i64,
}

/// The state of one lowering.
pub(crate) struct Emitter<'k, 'f> {
    /// `rows[0]..rows[1]`: the range of the row index this call computes.
    rows: (Value, Value),
    /// The `rows` argument (`rows[2]`, `rows[3]`: barrier counter and thread
    /// count, read only by programs with barriers).
    rows_arg: Value,
    /// Barriers passed so far by this thread (programs with barriers).
    barrier_gen: Option<Variable>,
    /// The plan's row index (`Plan::row_extent`), whose top-level loops take `rows`.
    row_extent: Option<ExtentId>,
    /// Loop nesting depth while lowering ops.
    depth: usize,
    pub k: &'k Kernel,
    pub b: FunctionBuilder<'f>,
    call_conv: CallConv,
    /// `len(e)` as `i64`, by extent.
    pub extents: Vec<Value>,
    /// Layout of every tensor.
    pub layouts: Vec<TensorLayout>,
    /// Every parameter, converted to its type.
    pub params: Vec<Value>,
    /// The current value (`i64`) of each bound index variable.
    pub env: Vec<Option<Value>>,
    pub cache: ScopedCache,
    helpers: Vec<(Helper, FuncRef)>,
    /// The gather site of each node, by node index.
    site_of: Vec<Option<usize>>,
    /// One block per gather site that returns the site's status code.
    error_blocks: Vec<Option<Block>>,
    /// The program's variables, and their types.
    vars: Vec<Variable>,
    var_types: Vec<ScalarType>,
    /// What the target's instructions can do.
    pub features: crate::Features,
    /// Vector code on (the plan is not scalar-only): reductions in values
    /// are vectorized and scalar math is the inline `vmath`.
    pub vector: bool,
}

impl<'k, 'f> Emitter<'k, 'f> {
    /// Starts the function: entry block, argument loads, layouts.
    pub fn new(
        k: &'k Kernel,
        mut b: FunctionBuilder<'f>,
        call_conv: CallConv,
        sites: &[GatherSite],
        features: crate::Features,
        fixed: &[Option<i64>],
    ) -> Self {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let [tensors, extents_arg, params_arg, rows_arg] = *b.block_params(entry) else {
            unreachable!("the kernel signature has four parameters")
        };
        let rows = (
            b.ins().load(types::I64, arg_flags(), rows_arg, 0),
            b.ins().load(types::I64, arg_flags(), rows_arg, 8),
        );
        let extents: Vec<Value> = (0..k.extents.len())
            .map(|e| match fixed.get(e).copied().flatten() {
                Some(len) => b.ins().iconst(types::I64, len),
                None => b
                    .ins()
                    .load(types::I64, arg_flags(), extents_arg, (8 * e) as i32),
            })
            .collect();
        let params = k
            .params
            .iter()
            .enumerate()
            .map(|(p, param)| {
                let raw = b
                    .ins()
                    .load(types::F64, arg_flags(), params_arg, (8 * p) as i32);
                match param.ty {
                    ScalarType::F32 => b.ins().fdemote(types::F32, raw),
                    ScalarType::I32 | ScalarType::Bool => b.ins().fcvt_to_sint_sat(types::I32, raw),
                    ScalarType::F64 => raw,
                }
            })
            .collect();
        let mut site_of = vec![None; k.nodes.len()];
        for (i, s) in sites.iter().enumerate() {
            site_of[s.node.index()] = Some(i);
        }
        let mut em = Emitter {
            k,
            b,
            call_conv,
            extents,
            layouts: Vec::new(),
            params,
            env: vec![None; k.extents.len()],
            cache: ScopedCache::new(k.nodes.len()),
            helpers: Vec::new(),
            site_of,
            error_blocks: vec![None; sites.len()],
            vars: Vec::new(),
            var_types: Vec::new(),
            rows,
            rows_arg,
            barrier_gen: None,
            row_extent: None,
            depth: 0,
            features,
            vector: false,
        };
        em.layouts = (0..k.tensors.len())
            .map(|t| em.tensor_layout(tensors, t))
            .collect();
        em
    }

    /// `Dim::layout` evaluated on the run-time extents.
    fn dim_layout(&mut self, dim: &passfold_dsl::Dim) -> DimLayout {
        if let Some(e) = dim.0.as_var() {
            return DimLayout {
                origin: None,
                len: self.extents[e.0 as usize],
            };
        }
        let b = &mut self.b;
        let mut lo = b.ins().iconst(types::I64, dim.0.constant);
        let mut hi = lo;
        let mut empty = b.ins().iconst(types::I8, 0);
        for &(e, c) in &dim.0.terms {
            let len = self.extents[e.0 as usize];
            let last = b.ins().iadd_imm_s(len, -1);
            let top = b.ins().imul_imm_s(last, c);
            if c > 0 {
                hi = b.ins().iadd(hi, top);
            } else {
                lo = b.ins().iadd(lo, top);
            }
            let is_empty = b.ins().icmp_imm_s(
                cranelift_codegen::ir::condcodes::IntCC::SignedLessThanOrEqual,
                len,
                0,
            );
            empty = b.ins().bor(empty, is_empty);
        }
        let zero = b.ins().iconst(types::I64, 0);
        let origin = b.ins().ineg(lo);
        let span = b.ins().isub(hi, lo);
        let len = b.ins().iadd_imm_s(span, 1);
        DimLayout {
            origin: Some(b.ins().select(empty, zero, origin)),
            len: b.ins().select(empty, zero, len),
        }
    }

    fn tensor_layout(&mut self, tensors: Value, t: usize) -> TensorLayout {
        let base = self
            .b
            .ins()
            .load(types::I64, arg_flags(), tensors, (8 * t) as i32);
        let tensor = &self.k.tensors[t];
        let dims: Vec<DimLayout> = tensor.dims.iter().map(|d| self.dim_layout(d)).collect();
        let mut strides: Vec<Option<Value>> = vec![None; dims.len()];
        for d in (0..dims.len().saturating_sub(1)).rev() {
            strides[d] = Some(match strides[d + 1] {
                None => dims[d + 1].len,
                Some(inner) => self.b.ins().imul(inner, dims[d + 1].len),
            });
        }
        TensorLayout {
            base,
            dims,
            strides,
        }
    }

    /// Lowers the plan's loop program, then returns 0.
    pub fn run(&mut self, plan: &Plan) -> Result<(), CodegenError> {
        self.vars = plan
            .program
            .vars
            .iter()
            .map(|v| self.b.declare_var(clif_type(v.ty)))
            .collect();
        self.var_types = plan.program.vars.iter().map(|v| v.ty).collect();
        self.row_extent = plan.row_extent();
        self.vector = !plan.scalar;
        if has_barrier(&plan.program.body) {
            let passed = self.b.declare_var(types::I64);
            let zero = self.b.ins().iconst(types::I64, 0);
            self.b.def_var(passed, zero);
            self.barrier_gen = Some(passed);
        }
        self.ops(&plan.program.body)?;
        let ok = self.b.ins().iconst(types::I32, 0);
        self.b.ins().return_(&[ok]);
        self.emit_error_blocks();
        Ok(())
    }

    /// Lowers ops in order. Each `Set` and `Store` evaluates its value in a
    /// cache scope of its own, so no value outlives a later assignment to a
    /// variable it reads or a later store to a tensor it loads.
    pub(crate) fn ops(&mut self, ops: &[Op]) -> Result<(), CodegenError> {
        for op in ops {
            match op {
                Op::Barrier => self.barrier(),
                Op::Toeplitz {
                    out,
                    vec,
                    first_row,
                    first_col,
                    row,
                    col,
                } => {
                    let ty = self.k.tensor(*out).ty;
                    let h = Helper::new(crate::helpers::MathFn::Toeplitz, ty);
                    let f = self.helper(h);
                    let n_i = self.extents[row.0 as usize];
                    let n_j = self.extents[col.0 as usize];
                    // The vectors: the product of `out`'s leading extents.
                    let mut vectors = self.b.ins().iconst(types::I64, 1);
                    let dims = self.layouts[out.0 as usize].dims.clone();
                    for d in &dims[..dims.len().saturating_sub(1)] {
                        vectors = self.b.ins().imul(vectors, d.len);
                    }
                    let base = |t: &passfold_dsl::TensorId| self.layouts[t.0 as usize].base;
                    let args = [
                        n_i,
                        n_j,
                        vectors,
                        base(first_row),
                        base(first_col),
                        base(vec),
                        base(out),
                    ];
                    let call = self.b.ins().call(f, &args);
                    let status = self.b.inst_results(call)[0];
                    // A non-zero status (never, today) returns from the kernel.
                    let fail = self.b.create_block();
                    let next = self.b.create_block();
                    self.b.ins().brif(status, fail, &[], next, &[]);
                    self.b.switch_to_block(fail);
                    self.b.seal_block(fail);
                    self.b.ins().return_(&[status]);
                    self.b.switch_to_block(next);
                    self.b.seal_block(next);
                }
                Op::Loop {
                    index,
                    body,
                    range,
                    code,
                    ..
                } => {
                    let bounds = match range {
                        Some((a, b)) => {
                            self.cache.push();
                            let a = self.value(*a)?;
                            let b = self.value(*b)?;
                            self.cache.pop();
                            Some((
                                self.b.ins().sextend(types::I64, a),
                                self.b.ins().sextend(types::I64, b),
                            ))
                        }
                        // Top-level loops over the row index run the call's rows.
                        None if self.depth == 0 && self.row_extent == Some(*index) => {
                            Some(self.rows)
                        }
                        None => None,
                    };
                    self.depth += 1;
                    if let LoopCode::Vector(v) = code {
                        self.vector_loop(*index, bounds, v, body)?;
                    } else {
                        let mut frame = self.open_loop_in(*index, bounds);
                        if let LoopCode::Blocks(n) = code {
                            frame.step = i64::from(*n).max(1);
                        }
                        self.ops(body)?;
                        self.close_loop(frame);
                    }
                    self.depth -= 1;
                }
                Op::If { cond, then } => {
                    self.cache.push();
                    let c = self.value(*cond)?;
                    self.cache.pop();
                    let then_block = self.b.create_block();
                    let join = self.b.create_block();
                    self.b.ins().brif(c, then_block, &[], join, &[]);
                    self.b.switch_to_block(then_block);
                    self.b.seal_block(then_block);
                    // Values cached outside stay valid inside (they dominate it),
                    // but nothing computed inside may be reused after the join.
                    self.cache.push();
                    self.ops(then)?;
                    self.cache.pop();
                    self.b.ins().jump(join, &[]);
                    self.b.switch_to_block(join);
                    self.b.seal_block(join);
                }
                Op::Set { var, value } => {
                    let v = var.0 as usize;
                    let Some(&var_ty) = self.var_types.get(v) else {
                        return Err(CodegenError::Unsupported {
                            what: format!("an assignment to undeclared variable v{v}"),
                            span: self.k.span(*value),
                        });
                    };
                    self.cache.push();
                    let x = self.value(*value)?;
                    let x = self.convert(*value, x, self.k.ty(*value), var_ty)?;
                    self.cache.pop();
                    let x = if costly(self.k, *value) {
                        self.pin(x)
                    } else {
                        x
                    };
                    self.b.def_var(self.vars[v], x);
                }
                Op::Store {
                    tensor,
                    index,
                    value,
                } => {
                    self.check_store(*tensor, index, *value)?;
                    self.cache.push();
                    let x = self.value(*value)?;
                    self.store_at(*tensor, index, x, data_flags())?;
                    self.cache.pop();
                }
            }
        }
        Ok(())
    }

    /// `x` through a stack slot: a store and a load where `x` is computed.
    /// Cranelift places pure instructions at their uses and here does not
    /// hoist them back out of loops, so a costly value (an `exp`, a
    /// division) assigned before a loop and read inside it would be
    /// recomputed every iteration; a load is not moved, and its users see
    /// one value defined outside the loop.
    pub fn pin(&mut self, x: Value) -> Value {
        let ty = self.b.func.dfg.value_type(x);
        let slot = self
            .b
            .create_sized_stack_slot(cranelift_codegen::ir::StackSlotData::new(
                cranelift_codegen::ir::StackSlotKind::ExplicitSlot,
                ty.bytes(),
                ty.bytes().trailing_zeros() as u8,
            ));
        self.b.ins().stack_store(types::I64, x, slot, 0);
        self.b.ins().stack_load(types::I64, ty, slot, 0)
    }

    /// The current value of a program variable.
    pub fn var(&mut self, h: Handle<Node>, var: VarId) -> Result<Value, CodegenError> {
        match self.vars.get(var.0 as usize) {
            Some(&v) => Ok(self.b.use_var(v)),
            None => Err(CodegenError::Unsupported {
                what: format!("a read of undeclared variable v{}", var.0),
                span: self.k.span(h),
            }),
        }
    }

    /// Waits until every thread of the call has passed as many barriers
    /// as this one: `rows[2]` points to a counter every thread increments
    /// once per barrier, `rows[3]` is the thread count; a null counter
    /// (one thread) skips the wait.
    fn barrier(&mut self) {
        let Some(passed) = self.barrier_gen else {
            return;
        };
        let flags = MemFlagsData::trusted();
        let counter = self
            .b
            .ins()
            .load(types::I64, arg_flags(), self.rows_arg, 16);
        let threads = self
            .b
            .ins()
            .load(types::I64, arg_flags(), self.rows_arg, 24);
        let g = self.b.use_var(passed);
        let g = self.b.ins().iadd_imm_s(g, 1);
        self.b.def_var(passed, g);
        let wait = self.b.create_block();
        let spin = self.b.create_block();
        let done = self.b.create_block();
        self.b.ins().brif(counter, wait, &[], done, &[]);
        self.b.switch_to_block(wait);
        let one = self.b.ins().iconst(types::I64, 1);
        self.b.ins().atomic_rmw(
            types::I64,
            flags,
            cranelift_codegen::ir::AtomicRmwOp::Add,
            counter,
            one,
        );
        let target = self.b.ins().imul(g, threads);
        self.b.ins().jump(spin, &[]);
        self.b.switch_to_block(spin);
        let now = self.b.ins().atomic_load(types::I64, flags, counter);
        let behind = self.b.ins().icmp(
            cranelift_codegen::ir::condcodes::IntCC::SignedLessThan,
            now,
            target,
        );
        self.b.ins().brif(behind, spin, &[], done, &[]);
        self.b.switch_to_block(done);
    }

    /// Stores `x` (a scalar, or the lanes of a vector) at `tensor[index]`,
    /// the indices' current values.
    pub(crate) fn store_at(
        &mut self,
        tensor: TensorId,
        index: &[ExtentId],
        x: Value,
        flags: MemFlagsData,
    ) -> Result<(), CodegenError> {
        let offsets = index
            .iter()
            .map(|&e| self.index(e))
            .collect::<Result<Vec<_>, _>>()?;
        let addr = self.address(tensor.0 as usize, &offsets);
        self.b.ins().store(flags, x, addr, 0);
        Ok(())
    }

    /// The number of program variables.
    pub(crate) fn var_count(&self) -> usize {
        self.vars.len()
    }

    /// The current value of program variable `var`.
    pub(crate) fn var_value(&mut self, var: VarId) -> Result<Value, CodegenError> {
        match self.vars.get(var.0 as usize) {
            Some(&v) => Ok(self.b.use_var(v)),
            None => Err(CodegenError::Unsupported {
                what: format!("a read of undeclared variable v{}", var.0),
                span: Default::default(),
            }),
        }
    }

    /// Assigns program variable `var` (of the value's type).
    pub(crate) fn set_var(&mut self, var: VarId, x: Value) {
        if let Some(&v) = self.vars.get(var.0 as usize) {
            self.b.def_var(v, x);
        }
    }

    /// A store is in bounds when its subscripts are the written tensor's
    /// dimensions (plain extents), and allowed when the tensor is not an
    /// input (the runtime may pass inputs as shared slices).
    pub(crate) fn check_store(
        &self,
        t: TensorId,
        index: &[ExtentId],
        value: Handle<Node>,
    ) -> Result<(), CodegenError> {
        let tensor = self.k.tensor(t);
        let plain = tensor.dims.len() == index.len()
            && tensor
                .dims
                .iter()
                .zip(index)
                .all(|(d, &e)| d.0.as_var() == Some(e));
        if !plain || tensor.kind == TensorKind::Input || self.k.ty(value) != tensor.ty {
            return Err(CodegenError::Unsupported {
                what: format!(
                    "a store to `{}` that is not at its own plain indices, to an input, or of another type",
                    tensor.name
                ),
                span: self.k.span(value),
            });
        }
        Ok(())
    }

    /// The current value of index `e` (`i64`).
    pub fn index(&self, e: ExtentId) -> Result<Value, CodegenError> {
        self.env[e.0 as usize].ok_or_else(|| CodegenError::UnboundIndex {
            extent: self.k.extent(e).name.clone(),
        })
    }

    /// The address of the element at in-range positions `pos` (origin added),
    /// as `(base + outer·size) + last·size`: the row's address, which a loop
    /// over the last index leaves invariant (Cranelift hoists it: one value
    /// live across the loop instead of a base and an offset), plus the
    /// last position's bytes.
    pub fn address(&mut self, t: usize, pos: &[Value]) -> Value {
        let Some((&last, outer)) = pos.split_last() else {
            return self.layouts[t].base;
        };
        let row = self.row_address(t, outer);
        self.in_row(t, row, last)
    }

    /// The address of the row at in-range positions `outer` (every
    /// dimension but the last) of tensor `t`.
    pub fn row_address(&mut self, t: usize, outer: &[Value]) -> Value {
        let layout = &self.layouts[t];
        let size = self.k.tensors[t].ty.size_bytes() as i64;
        let mut offset = None;
        for (d, &p) in outer.iter().enumerate() {
            let term = match layout.strides[d] {
                None => p,
                Some(stride) => self.b.ins().imul(p, stride),
            };
            offset = Some(match offset {
                None => term,
                Some(o) => self.b.ins().iadd(o, term),
            });
        }
        let base = layout.base;
        match offset {
            None => base,
            Some(o) => {
                let bytes = self.b.ins().imul_imm_s(o, size);
                self.b.ins().iadd(base, bytes)
            }
        }
    }

    /// The address of the element at in-range position `last` of the last
    /// dimension (contiguous) in the row at `row` of tensor `t`.
    pub fn in_row(&mut self, t: usize, row: Value, last: Value) -> Value {
        let size = self.k.tensors[t].ty.size_bytes() as i64;
        let bytes = self.b.ins().imul_imm_s(last, size);
        self.b.ins().iadd(row, bytes)
    }

    /// Opens `for e in 0..len(e)`; the body is the current block on return.
    pub fn open_loop(&mut self, e: ExtentId) -> LoopFrame {
        self.open_loop_in(e, None)
    }

    /// Opens `for index in start..end`, the range clamped to `0..len(e)`.
    pub fn open_loop_in(&mut self, e: ExtentId, bounds: Option<(Value, Value)>) -> LoopFrame {
        let var = self.b.declare_var(types::I64);
        let zero = self.b.ins().iconst(types::I64, 0);
        let len = self.extents[e.0 as usize];
        let (start, end) = match bounds {
            Some((a, b)) => (self.b.ins().smax(a, zero), self.b.ins().smin(b, len)),
            None => (zero, len),
        };
        self.b.def_var(var, start);
        let header = self.b.create_block();
        let body = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let index = self.b.use_var(var);
        let more = self.b.ins().icmp(
            cranelift_codegen::ir::condcodes::IntCC::SignedLessThan,
            index,
            end,
        );
        self.b.ins().brif(more, body, &[], exit, &[]);
        self.b.switch_to_block(body);
        let outer = self.env[e.0 as usize].replace(index);
        self.cache.push();
        LoopFrame {
            step: 1,
            var,
            header,
            exit,
            extent: e,
            index,
            outer,
        }
    }

    /// Closes a loop: increments the index, jumps back, continues after it.
    pub fn close_loop(&mut self, frame: LoopFrame) {
        let next = self.b.ins().iadd_imm_s(frame.index, frame.step);
        self.b.def_var(frame.var, next);
        self.b.ins().jump(frame.header, &[]);
        self.b.switch_to_block(frame.exit);
        self.cache.pop();
        self.env[frame.extent.0 as usize] = frame.outer;
    }

    /// The function reference of a helper, imported on first use.
    pub fn helper(&mut self, h: Helper) -> FuncRef {
        if let Some(&(_, f)) = self.helpers.iter().find(|(x, _)| *x == h) {
            return f;
        }
        let signature = self.b.import_signature(h.signature(self.call_conv));
        let name = self
            .b
            .func
            .declare_imported_user_function(UserExternalName::new(0, h.index()));
        let f = self.b.import_function(ExtFuncData {
            name: ExternalName::user(name),
            signature,
            colocated: false,
            patchable: false,
        });
        self.helpers.push((h, f));
        f
    }

    /// The block that returns gather site `site`'s status code (`site + 1`).
    pub fn error_block(&mut self, node: Handle<Node>) -> Result<Block, CodegenError> {
        let site = self.site_of[node.index()].ok_or_else(|| CodegenError::Unsupported {
            what: "a gather that is not a registered gather site".into(),
            span: self.k.span(node),
        })?;
        Ok(*self.error_blocks[site].get_or_insert_with(|| self.b.create_block()))
    }

    fn emit_error_blocks(&mut self) {
        for (site, block) in self.error_blocks.clone().into_iter().enumerate() {
            if let Some(block) = block {
                self.b.switch_to_block(block);
                let code = self.b.ins().iconst(types::I32, site as i64 + 1);
                self.b.ins().return_(&[code]);
            }
        }
    }

    /// Seals every block and returns the helpers used.
    pub fn finish(mut self, config: cranelift_codegen::isa::TargetFrontendConfig) -> Vec<Helper> {
        self.b.seal_all_blocks();
        self.b.finalize(config);
        self.helpers.into_iter().map(|(h, _)| h).collect()
    }
}

/// Whether a value costs enough that recomputing it in every iteration of a
/// loop that reads it would matter: a transcendental function, a division,
/// a square root, a power or a reduction.
pub(crate) fn costly(k: &Kernel, root: Handle<Node>) -> bool {
    use passfold_dsl::{BinOp, UnOp};
    let mut stack = vec![root];
    let mut seen = std::collections::HashSet::new();
    while let Some(h) = stack.pop() {
        if !seen.insert(h) {
            continue;
        }
        match &k.nodes[h] {
            Node::Unary(op, _) if !matches!(op, UnOp::Neg | UnOp::Not | UnOp::Abs | UnOp::Sign) => {
                return true;
            }
            Node::Binary(BinOp::Div, ..) | Node::Powf(..) | Node::Reduce { .. } => return true,
            Node::Var(_) | Node::Load { .. } => {}
            n => stack.extend(n.operands()),
        }
    }
    false
}
