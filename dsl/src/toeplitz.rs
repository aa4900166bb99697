//! Toeplitz products: `t[.., i] = Σ_j c(j - i)·u[.., j]`.
//!
//! A sum over `j` whose only dependence on an index `i` of its statement is
//! one factor `c` that reads `i` and `j` only through subscripts of the form
//! `a·(j - i) + b` (relative positions: `exp(r[j - i])`) is a product of a
//! Toeplitz matrix `T[i, j] = c(j - i)` with vectors `u[.., j]`, one per
//! value of the statement's other indices. Such a product costs
//! `O(n log n)` through the FFT instead of `O(n²)` directly
//! ([`crate::lir::Op::Toeplitz`]). The planner finds these statements after
//! contraction reordering ([`crate::reorder`]) and plans them as a variant
//! chosen at run time by [`crate::cost`].

use crate::arena::Handle;
use crate::ir::*;

/// A statement recognized as a Toeplitz product.
#[derive(Debug, Clone)]
pub struct Form {
    /// The row index `i` (the statement's last index).
    pub row: ExtentId,
    /// The summed index `j`.
    pub col: ExtentId,
    /// The coefficient `c`, depending on `i` and `j` only through `j - i`.
    pub coef: Handle<Node>,
    /// The other factors (`u`), free of `i`.
    pub rest: Vec<Handle<Node>>,
}

fn factors(kernel: &Kernel, h: Handle<Node>, out: &mut Vec<Handle<Node>>) {
    match &kernel.nodes[h] {
        Node::Binary(BinOp::Mul, a, b) => {
            factors(kernel, *a, out);
            factors(kernel, *b, out);
        }
        _ => out.push(h),
    }
}

/// Whether `h` reads `row` and `col` only through subscripts `a·(col - row) + b`,
/// with no gathers, index values, program variables or reductions over them.
pub fn is_coefficient(kernel: &Kernel, h: Handle<Node>, row: ExtentId, col: ExtentId) -> bool {
    crate::fuse::subtree(kernel, h)
        .into_iter()
        .all(|n| match &kernel.nodes[n] {
            Node::Load { index, .. } => index.iter().all(|i| match i {
                Index::Affine(a) => {
                    let coef =
                        |e: ExtentId| a.terms.iter().find(|(v, _)| *v == e).map_or(0, |(_, c)| *c);
                    coef(col) == -coef(row)
                }
                Index::Gather(_) => false,
            }),
            Node::IndexValue(e) => *e != row && *e != col,
            Node::Var(_) => false,
            Node::Reduce { axes, .. } => !axes.contains(&row) && !axes.contains(&col),
            _ => true,
        })
}

/// Splits a product `arg` summed over `col` into the one factor that
/// depends on `row` (a coefficient of `col - row`) and the rest; `None` when
/// `arg` is not of that shape.
pub fn split_factors(
    kernel: &Kernel,
    free: &dyn Fn(Handle<Node>) -> u64,
    arg: Handle<Node>,
    row: ExtentId,
    col: ExtentId,
) -> Option<(Handle<Node>, Vec<Handle<Node>>)> {
    let mut fs = Vec::new();
    factors(kernel, arg, &mut fs);
    let (with_row, rest): (Vec<_>, Vec<_>) =
        fs.into_iter().partition(|f| free(*f) & (1 << row.0) != 0);
    let [coef] = with_row[..] else { return None };
    let cols = free(coef);
    if cols & (1 << col.0) == 0 || cols & !(1 << row.0 | 1 << col.0) != 0 {
        return None;
    }
    if !is_coefficient(kernel, coef, row, col) || rest.is_empty() {
        return None;
    }
    Some((coef, rest))
}

/// The statement as a Toeplitz product, if it is one: a sum over one index
/// `j` of a product, the statement's last index `i` appearing only in one
/// coefficient factor of `j - i`.
pub fn form(kernel: &Kernel, stmt: &Stmt) -> Option<Form> {
    let Node::Reduce {
        op: ReduceOp::Sum,
        axes,
        arg,
    } = &kernel.nodes[stmt.value]
    else {
        return None;
    };
    let [col] = axes[..] else { return None };
    let &row = stmt.indices.last()?;
    if !kernel.ty(stmt.value).is_float() || kernel.tensor(stmt.tensor).kind != TensorKind::Temp {
        return None;
    }
    let free_all = kernel.free_indices();
    let free = |h: Handle<Node>| free_all[h.index()];
    let (coef, rest) = split_factors(kernel, &free, *arg, row, col)?;
    let allowed = stmt.indices.iter().fold(1u64 << col.0, |m, e| m | 1 << e.0) & !(1 << row.0);
    if rest.iter().any(|f| free(*f) & !allowed != 0) {
        return None;
    }
    Some(Form {
        row,
        col,
        coef,
        rest,
    })
}

/// Whether some load has a subscript over two or more indices (`r[j - i]`):
/// the only kernels with Toeplitz products, checked before planning for them.
pub fn has_relative_index(kernel: &Kernel) -> bool {
    kernel.nodes.iter().any(|(_, n)| match n {
        Node::Load { index, .. } => index
            .iter()
            .any(|i| matches!(i, Index::Affine(a) if a.terms.len() >= 2)),
        _ => false,
    })
}
