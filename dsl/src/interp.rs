//! The reference interpreter: the living definition of a kernel's meaning.
//!
//! It runs the statements in order, each over every point of its index
//! space in row-major order, evaluating reductions by plain loops. It is
//! slow on purpose and has no cleverness to get wrong; every numerical test
//! compares against it.
//!
//! [`Precision::F64`] evaluates every float in `f64` (the oracle);
//! [`Precision::Declared`] rounds each float operation to the declared type,
//! so it predicts the result of straightforward code in that type.

use crate::arena::Handle;
use crate::diag::Span;
use crate::ir::*;
use crate::math;
use std::cell::Cell;

/// How floats are evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Everything in `f64`.
    F64,
    /// Each operation rounded to its declared type.
    Declared,
}

/// Why an interpretation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InterpError {
    /// Wrong number of extents, arguments or parameters.
    #[error("expected {expected} {what}, found {found}")]
    Arity {
        /// What was miscounted.
        what: &'static str,
        /// The kernel's count.
        expected: usize,
        /// The caller's count.
        found: usize,
    },
    /// An extent is negative or a tensor's size overflows.
    #[error("extent `{extent}` = {value} is invalid or makes a tensor too large")]
    BadExtent {
        /// The extent.
        extent: String,
        /// Its value.
        value: i64,
    },
    /// A buffer's length disagrees with its shape.
    #[error("`{tensor}` has {found} elements, its shape needs {expected}")]
    Length {
        /// The tensor.
        tensor: String,
        /// Elements needed.
        expected: i64,
        /// Elements given.
        found: usize,
    },
    /// A gathered index fell outside a tensor that has no `pad`.
    #[error("index {value} is outside dimension {dim} of `{tensor}` (length {len})")]
    GatherOutOfRange {
        /// The tensor read.
        tensor: String,
        /// The dimension.
        dim: usize,
        /// The index value.
        value: i64,
        /// The dimension's length.
        len: i64,
        /// The read's place in the source.
        span: Span,
    },
}

/// Runs `kernel`.
///
/// `args` holds one buffer per argument tensor, in [`Kernel::arguments`] order
/// (values of `i32` tensors as exact integers); outputs may be passed empty.
/// Returns the argument buffers after the run: inputs unchanged, outputs and
/// in-place tensors written.
pub fn interpret(
    kernel: &Kernel,
    extents: &[i64],
    args: Vec<Vec<f64>>,
    params: &[f64],
    precision: Precision,
) -> Result<Vec<Vec<f64>>, InterpError> {
    run(
        kernel,
        extents,
        args,
        params,
        precision,
        0,
        |cx, buffers| {
            kernel
                .stmts
                .iter()
                .try_for_each(|stmt| cx.statement(stmt, buffers))
        },
    )
}

/// Checks the call, allocates every tensor, runs `body`, and returns the
/// argument buffers.
fn run(
    kernel: &Kernel,
    extents: &[i64],
    args: Vec<Vec<f64>>,
    params: &[f64],
    precision: Precision,
    vars: usize,
    body: impl FnOnce(&Interp, &mut [Vec<f64>]) -> Result<(), InterpError>,
) -> Result<Vec<Vec<f64>>, InterpError> {
    check_arity("extents", kernel.extents.len(), extents.len())?;
    check_arity("arguments", kernel.arguments().count(), args.len())?;
    check_arity("parameters", kernel.params.len(), params.len())?;
    if let Some((e, &v)) = kernel.extents.iter().zip(extents).find(|(_, v)| **v < 0) {
        return Err(InterpError::BadExtent {
            extent: e.name.clone(),
            value: v,
        });
    }
    let (mut buffers, layouts) = setup(kernel, extents, args)?;
    let cx = Interp {
        kernel,
        extents,
        params,
        precision,
        layouts,
        env: vec![Cell::new(0); kernel.extents.len()],
        vars: vec![Cell::new(0.0); vars],
    };
    body(&cx, &mut buffers)?;
    Ok(kernel
        .tensors
        .iter()
        .zip(buffers)
        .filter(|(t, _)| t.kind != TensorKind::Temp)
        .map(|(_, b)| b)
        .collect())
}

/// Allocates every tensor (temporaries zeroed) and checks argument lengths.
fn setup(
    kernel: &Kernel,
    extents: &[i64],
    args: Vec<Vec<f64>>,
) -> Result<(Vec<Vec<f64>>, Vec<Layout>), InterpError> {
    let mut buffers: Vec<Vec<f64>> = Vec::with_capacity(kernel.tensors.len());
    let mut layouts = Vec::with_capacity(kernel.tensors.len());
    let mut args = args.into_iter();
    for t in &kernel.tensors {
        let layout = Layout::compute(t, extents).ok_or_else(|| bad_extent(kernel, extents))?;
        let len = layout.len;
        let buf = match t.kind {
            TensorKind::Temp => vec![0.0; len as usize],
            TensorKind::Output => {
                let given = args.next().unwrap_or_default();
                if given.is_empty() {
                    vec![0.0; len as usize]
                } else {
                    given
                }
            }
            TensorKind::Input | TensorKind::InOut => args.next().unwrap_or_default(),
        };
        if buf.len() as i64 != len {
            return Err(InterpError::Length {
                tensor: t.name.clone(),
                expected: len,
                found: buf.len(),
            });
        }
        buffers.push(buf);
        layouts.push(layout);
    }
    Ok((buffers, layouts))
}

/// Runs a plan's loop program: the same contract as [`interpret`], executing
/// the plan's ops instead of the kernel's statements, so that
/// `interpret(kernel) ≈ interpret_program(plan)` tests the planner alone.
pub fn interpret_program(
    kernel: &Kernel,
    program: &crate::lir::Program,
    extents: &[i64],
    args: Vec<Vec<f64>>,
    params: &[f64],
    precision: Precision,
) -> Result<Vec<Vec<f64>>, InterpError> {
    run(
        kernel,
        extents,
        args,
        params,
        precision,
        program.vars.len(),
        |cx, buffers| cx.ops(&program.body, buffers),
    )
}

fn check_arity(what: &'static str, expected: usize, found: usize) -> Result<(), InterpError> {
    if expected != found {
        return Err(InterpError::Arity {
            what,
            expected,
            found,
        });
    }
    Ok(())
}

fn bad_extent(kernel: &Kernel, extents: &[i64]) -> InterpError {
    let (i, v) = extents
        .iter()
        .enumerate()
        .max_by_key(|(_, v)| **v)
        .map_or((0, 0), |(i, v)| (i, *v));
    InterpError::BadExtent {
        extent: kernel
            .extents
            .get(i)
            .map_or(String::new(), |e| e.name.clone()),
        value: v,
    }
}

/// Where each element of a tensor lives: `offset = Σ (index_d + origin_d) · stride_d`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Per dimension: origin (offset of index 0) and length.
    pub dims: Vec<(i64, i64)>,
    /// Row-major strides in elements.
    pub strides: Vec<i64>,
    /// Total elements.
    pub len: i64,
}

impl Layout {
    /// The layout of `tensor` at the given extents, `None` on overflow.
    pub fn compute(tensor: &Tensor, extents: &[i64]) -> Option<Layout> {
        let dims: Vec<(i64, i64)> = tensor
            .dims
            .iter()
            .map(|d| d.layout(extents))
            .collect::<Option<_>>()?;
        let mut strides = vec![0; dims.len()];
        let mut len: i64 = 1;
        for (d, &(_, n)) in dims.iter().enumerate().rev() {
            strides[d] = len;
            len = len.checked_mul(n)?;
        }
        // Sizes must fit the machine: the element count times 8 bytes in an isize.
        len.checked_mul(8).filter(|b| *b <= isize::MAX as i64)?;
        Some(Layout { dims, strides, len })
    }
}

struct Interp<'a> {
    kernel: &'a Kernel,
    extents: &'a [i64],
    params: &'a [f64],
    precision: Precision,
    layouts: Vec<Layout>,
    env: Vec<Cell<i64>>,
    vars: Vec<Cell<f64>>,
}

impl Interp<'_> {
    fn round(&self, ty: ScalarType, v: f64) -> f64 {
        match (self.precision, ty) {
            (Precision::Declared, ScalarType::F32) => v as f32 as f64,
            _ => v,
        }
    }

    fn ops(&self, ops: &[crate::lir::Op], buffers: &mut [Vec<f64>]) -> Result<(), InterpError> {
        use crate::lir::Op;
        for op in ops {
            match op {
                Op::Barrier => {}
                Op::Toeplitz {
                    out,
                    vec,
                    first_row,
                    first_col,
                    row,
                    col,
                } => {
                    // Directly, in f64: `out[p, i] = Σ_j c(j - i)·vec[p, j]`
                    // (scratch tensors are dense, the row index last).
                    let n_i = self.extents[row.0 as usize].max(0) as usize;
                    let n_j = self.extents[col.0 as usize].max(0) as usize;
                    let ty = self.kernel.tensors[out.0 as usize].ty;
                    let pairs = buffers[out.0 as usize].len().checked_div(n_i).unwrap_or(0);
                    let mut result = vec![0.0; pairs * n_i];
                    {
                        let (v, r, c) = (
                            &buffers[vec.0 as usize],
                            &buffers[first_row.0 as usize],
                            &buffers[first_col.0 as usize],
                        );
                        for p in 0..pairs {
                            for i in 0..n_i {
                                let mut s = 0.0;
                                for j in 0..n_j {
                                    let coef = if j >= i { r[j - i] } else { c[i - j] };
                                    s += coef * v[p * n_j + j];
                                }
                                result[p * n_i + i] = self.round(ty, s);
                            }
                        }
                    }
                    buffers[out.0 as usize][..pairs * n_i].copy_from_slice(&result);
                }
                Op::Loop {
                    index,
                    body,
                    range,
                    code,
                    ..
                } => {
                    let step = match code {
                        crate::vector::LoopCode::Blocks(n) => *n as usize,
                        _ => 1,
                    };
                    let len = self.extents[index.0 as usize];
                    let (start, end) = match range {
                        Some((a, b)) => {
                            let a = self.eval(*a, buffers)? as i64;
                            let b = self.eval(*b, buffers)? as i64;
                            (a.max(0), b.min(len))
                        }
                        None => (0, len),
                    };
                    // Loops over the same index inside (blocks) bind it anew;
                    // the outer value is restored after each.
                    let outer = self.env[index.0 as usize].get();
                    for v in (start..end).step_by(step.max(1)) {
                        self.env[index.0 as usize].set(v);
                        self.ops(body, buffers)?;
                    }
                    self.env[index.0 as usize].set(outer);
                }
                Op::If { cond, then } => {
                    if self.eval(*cond, buffers)? != 0.0 {
                        self.ops(then, buffers)?;
                    }
                }
                Op::Set { var, value } => {
                    let ty = self.kernel.ty(*value);
                    let v = self.eval(*value, buffers)?;
                    self.vars[var.0 as usize].set(self.round(ty, v));
                }
                Op::Store {
                    tensor,
                    index,
                    value,
                } => {
                    let t = tensor.0 as usize;
                    let v = self.round(self.kernel.tensors[t].ty, self.eval(*value, buffers)?);
                    let layout = &self.layouts[t];
                    let offset: i64 = index
                        .iter()
                        .zip(&layout.strides)
                        .map(|(e, s)| self.env[e.0 as usize].get() * s)
                        .sum();
                    buffers[t][offset as usize] = v;
                }
            }
        }
        Ok(())
    }

    fn statement(&self, stmt: &Stmt, buffers: &mut [Vec<f64>]) -> Result<(), InterpError> {
        let dims: Vec<i64> = stmt
            .indices
            .iter()
            .map(|e| self.extents[e.0 as usize])
            .collect();
        if dims.iter().any(|&n| n == 0) {
            return Ok(());
        }
        let mut point = vec![0i64; dims.len()];
        let tid = stmt.tensor.0 as usize;
        let ty = self.kernel.tensors[tid].ty;
        loop {
            for (e, &v) in stmt.indices.iter().zip(&point) {
                self.env[e.0 as usize].set(v);
            }
            let value = self.eval(stmt.value, buffers)?;
            let value = self.round(ty, value);
            let layout = &self.layouts[tid];
            let offset: i64 = point.iter().zip(&layout.strides).map(|(p, s)| p * s).sum();
            buffers[tid][offset as usize] = value;
            if !next_point(&mut point, &dims) {
                return Ok(());
            }
        }
    }

    fn load(
        &self,
        tensor: TensorId,
        index: &[Index],
        span: Span,
        buffers: &[Vec<f64>],
    ) -> Result<f64, InterpError> {
        let t = &self.kernel.tensors[tensor.0 as usize];
        let layout = &self.layouts[tensor.0 as usize];
        let mut offset = 0i64;
        for (d, idx) in index.iter().enumerate() {
            let value = match idx {
                Index::Affine(a) => a.terms.iter().fold(a.constant, |acc, &(v, c)| {
                    acc.saturating_add(c.saturating_mul(self.env[v.0 as usize].get()))
                }),
                Index::Gather(h) => self.eval(*h, buffers)? as i64,
            };
            let (origin, len) = layout.dims[d];
            let pos = value.saturating_add(origin);
            if pos < 0 || pos >= len {
                if let Some(pad) = t.pad {
                    return Ok(self.round(t.ty, pad));
                }
                return Err(InterpError::GatherOutOfRange {
                    tensor: t.name.clone(),
                    dim: d,
                    value,
                    len,
                    span,
                });
            }
            offset += pos * layout.strides[d];
        }
        Ok(buffers[tensor.0 as usize][offset as usize])
    }

    fn eval(&self, h: Handle<Node>, buffers: &[Vec<f64>]) -> Result<f64, InterpError> {
        let ty = self.kernel.ty(h);
        let k = self.kernel;
        let v = match &k.nodes[h] {
            Node::ConstFloat(bits) => f64::from_bits(*bits),
            Node::ConstInt(v) => *v as f64,
            Node::Param(p) => {
                let v = self.params[p.0 as usize];
                if ty == ScalarType::I32 { v.trunc() } else { v }
            }
            Node::IndexValue(e) => self.env[e.0 as usize].get() as f64,
            Node::ExtentLen(e) => self.extents[e.0 as usize] as f64,
            Node::Var(v) => self.vars[v.0 as usize].get(),
            Node::Load { tensor, index } => self.load(*tensor, index, k.span(h), buffers)?,
            Node::Unary(op, a) => {
                let x = self.eval(*a, buffers)?;
                unary(*op, x, ty, self.precision)
            }
            Node::Binary(op, a, b) => {
                let x = self.eval(*a, buffers)?;
                let y = self.eval(*b, buffers)?;
                binary(*op, x, y, ty)
            }
            Node::Cmp(op, a, b) => {
                let x = self.eval(*a, buffers)?;
                let y = self.eval(*b, buffers)?;
                let r = match op {
                    CmpOp::Lt => x < y,
                    CmpOp::Le => x <= y,
                    CmpOp::Gt => x > y,
                    CmpOp::Ge => x >= y,
                    CmpOp::Eq => x == y,
                    CmpOp::Ne => x != y,
                };
                r as i32 as f64
            }
            Node::Select(c, a, b) => {
                // Both arms are evaluated, as vector code does; only one is kept.
                let c = self.eval(*c, buffers)?;
                let x = self.eval(*a, buffers)?;
                let y = self.eval(*b, buffers)?;
                if c != 0.0 { x } else { y }
            }
            Node::Powf(a, p) => {
                let x = self.eval(*a, buffers)?;
                let p = f64::from_bits(*p);
                match (self.precision, ty) {
                    (Precision::Declared, ScalarType::F32) => {
                        math::f32::powf(x as f32, p as f32) as f64
                    }
                    _ => math::powf(x, p),
                }
            }
            Node::Cast(_, a) => self.eval(*a, buffers)?,
            Node::Reduce { op, axes, arg } => self.reduce(*op, axes, *arg, ty, buffers)?,
        };
        Ok(self.round(ty, v))
    }

    fn reduce(
        &self,
        op: ReduceOp,
        axes: &[ExtentId],
        arg: Handle<Node>,
        ty: ScalarType,
        buffers: &[Vec<f64>],
    ) -> Result<f64, InterpError> {
        let dims: Vec<i64> = axes.iter().map(|e| self.extents[e.0 as usize]).collect();
        let count: i64 = dims.iter().product();
        // Integer max and min start from the extreme integers, as machine code does.
        let int = ty == ScalarType::I32;
        let mut acc = match op {
            ReduceOp::Sum | ReduceOp::Mean => 0.0,
            ReduceOp::Max if int => i32::MIN as f64,
            ReduceOp::Min if int => i32::MAX as f64,
            ReduceOp::Max | ReduceOp::TopK(_) => f64::NEG_INFINITY,
            ReduceOp::Min => f64::INFINITY,
        };
        let mut values = Vec::new();
        if count > 0 {
            let mut point = vec![0i64; dims.len()];
            loop {
                for (e, &v) in axes.iter().zip(&point) {
                    self.env[e.0 as usize].set(v);
                }
                let x = self.eval(arg, buffers)?;
                acc = match op {
                    ReduceOp::Sum | ReduceOp::Mean => self.round(ty, acc + x),
                    ReduceOp::Max => crate::lower::nan_max(acc, x),
                    ReduceOp::Min => crate::lower::nan_min(acc, x),
                    ReduceOp::TopK(_) => {
                        values.push(x);
                        acc
                    }
                };
                if !next_point(&mut point, &dims) {
                    break;
                }
            }
        }
        Ok(match op {
            ReduceOp::Mean => acc / count as f64,
            ReduceOp::TopK(k) => kth_largest(&mut values, k as usize),
            _ => acc,
        })
    }
}

/// The k-th largest of `values` (1-based), `-inf` if there are fewer, NaN if any is NaN.
pub fn kth_largest(values: &mut [f64], k: usize) -> f64 {
    if values.iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    if k == 0 || values.len() < k {
        return f64::NEG_INFINITY;
    }
    values.sort_by(|a, b| b.total_cmp(a));
    values[k - 1]
}

fn unary(op: UnOp, x: f64, ty: ScalarType, precision: Precision) -> f64 {
    if ty == ScalarType::I32 {
        let v = x as i32;
        return match op {
            UnOp::Neg => v.wrapping_neg() as f64,
            UnOp::Abs => v.wrapping_abs() as f64,
            _ => x,
        };
    }
    if ty == ScalarType::F32 && precision == Precision::Declared {
        // Evaluate transcendental functions in f32 so the declared-precision
        // mode predicts f32 code; `round` then keeps the value as is.
        let v = x as f32;
        let r = match op {
            UnOp::Neg => -v,
            UnOp::Not => return (x == 0.0) as i32 as f64,
            UnOp::Exp => v.exp(),
            UnOp::Log => v.ln(),
            UnOp::Log1p => v.ln_1p(),
            UnOp::Expm1 => v.exp_m1(),
            UnOp::Sqrt => v.sqrt(),
            UnOp::Rsqrt => 1.0 / v.sqrt(),
            UnOp::Abs => v.abs(),
            UnOp::Tanh => v.tanh(),
            UnOp::Sigmoid => math::f32::sigmoid(v),
            UnOp::Softplus => math::f32::softplus(v),
            UnOp::Sign => math::sign(x) as f32,
            UnOp::Round => v.round_ties_even(),
            UnOp::Exp2 => v.exp2(),
            UnOp::ExpNonPos => v.exp(),
        };
        return r as f64;
    }
    match op {
        UnOp::Neg => -x,
        UnOp::Not => (x == 0.0) as i32 as f64,
        UnOp::Exp => x.exp(),
        UnOp::Log => x.ln(),
        UnOp::Log1p => x.ln_1p(),
        UnOp::Expm1 => x.exp_m1(),
        UnOp::Sqrt => x.sqrt(),
        UnOp::Rsqrt => math::rsqrt(x),
        UnOp::Abs => x.abs(),
        UnOp::Tanh => x.tanh(),
        UnOp::Sigmoid => math::sigmoid(x),
        UnOp::Softplus => math::softplus(x),
        UnOp::Sign => math::sign(x),
        UnOp::Round => x.round_ties_even(),
        UnOp::Exp2 => x.exp2(),
        UnOp::ExpNonPos => x.exp(),
    }
}

fn binary(op: BinOp, x: f64, y: f64, ty: ScalarType) -> f64 {
    if ty == ScalarType::I32 {
        let (a, b) = (x as i32, y as i32);
        return match op {
            BinOp::Add => a.wrapping_add(b),
            BinOp::Sub => a.wrapping_sub(b),
            BinOp::Mul => a.wrapping_mul(b),
            BinOp::Div => a.checked_div(b).unwrap_or(0),
            BinOp::Min => a.min(b),
            BinOp::Max | BinOp::MaxNum => a.max(b),
            BinOp::And => ((a != 0) && (b != 0)) as i32,
            BinOp::Or => ((a != 0) || (b != 0)) as i32,
        } as f64;
    }
    match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div => x / y,
        BinOp::Min => crate::lower::nan_min(x, y),
        BinOp::Max => crate::lower::nan_max(x, y),
        BinOp::MaxNum => {
            if x < y {
                y
            } else {
                x
            }
        }
        BinOp::And => ((x != 0.0) && (y != 0.0)) as i32 as f64,
        BinOp::Or => ((x != 0.0) || (y != 0.0)) as i32 as f64,
    }
}

/// Advances a row-major counter; false when it wraps around.
fn next_point(point: &mut [i64], dims: &[i64]) -> bool {
    for d in (0..point.len()).rev() {
        point[d] += 1;
        if point[d] < dims[d] {
            return true;
        }
        point[d] = 0;
    }
    false
}
