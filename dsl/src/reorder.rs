//! Contraction reordering: `Σ_j (Σ_f X·Y)·Q = Σ_f X·(Σ_j Y·Q)` when `X` does
//! not depend on `j`.
//!
//! Assumes a verified kernel. When the inner products `Y·Q` do not depend on
//! some index of the statement (say `i`), the reordered form computes the
//! sum over `j` once for every `i` instead of once per `i`: kernelized
//! attention's `Σ_j φ(q_i)·φ(k_j) v_j` becomes `φ(q_i)ᵀ (Σ_j φ(k_j) v_jᵀ)`,
//! linear instead of quadratic in the sequence length. The new sum becomes a
//! temporary defined by a statement inserted before its reader.
//! Guarantees a verified kernel computing the same values up to rounding
//! (the products are reassociated).

use crate::arena::Handle;
use crate::ir::*;
use crate::rules::Rewriter;

/// Reorders every contraction the rule applies to; returns the rules applied.
pub fn reorder_contractions(rw: &mut Rewriter) -> Vec<String> {
    reorder_contractions_with(rw, false)
}

/// [`reorder_contractions`]; with `toeplitz`, also when the new sum keeps
/// an index `i` of the statement only through one coefficient of `j - i`
/// (relative positions): the new sum is then a Toeplitz product
/// ([`crate::toeplitz`]) with `i` as its last index, cheap through the FFT.
pub fn reorder_contractions_with(rw: &mut Rewriter, toeplitz: bool) -> Vec<String> {
    let mut notes = Vec::new();
    let mut s = 0;
    while s < rw.kernel.stmts.len() {
        let stmt = rw.kernel.stmts[s].clone();
        let lhs = stmt.indices.iter().fold(0u64, |m, e| m | 1 << e.0);
        let tops = crate::fuse::top_reductions(&rw.kernel, stmt.value);
        let mut inserted = None;
        for top in tops {
            if let Some((new_stmt, replacement, toe)) = try_reorder(rw, &stmt, lhs, top, toeplitz) {
                let name = rw.kernel.tensor(new_stmt.tensor).name.clone();
                let value = rw.replace(stmt.value, &[(top, replacement)].into_iter().collect());
                rw.kernel.stmts[s].value = value;
                if let Some(row) = toe {
                    let col = axis_names(rw, &[new_stmt_col(rw, &new_stmt)]);
                    let row = &rw.kernel.extent(row).name;
                    notes.push(format!(
                        "contraction reorder into a Toeplitz product: `{}` sums over the inner index first, as `{name}`, whose only dependence on `{row}` is a coefficient of `{col} - {row}`: by FFT, O(n log n) per vector instead of O(n²)",
                        rw.kernel.tensor(stmt.tensor).name,
                    ));
                } else {
                    notes.push(format!(
                    "contraction reorder: `{}` sums over the inner index first, as `{name}`, computed once instead of per `{}`",
                    rw.kernel.tensor(stmt.tensor).name,
                    missing_names(rw, lhs, &new_stmt)
                ));
                }
                inserted = Some(new_stmt);
                break;
            }
        }
        match inserted {
            Some(new_stmt) => {
                // As early as its inputs allow, after earlier insertions there,
                // so new sums over the same index end up next to each other.
                let reads = crate::fuse::subtree(&rw.kernel, new_stmt.value);
                let after = rw.kernel.stmts[..s]
                    .iter()
                    .rposition(|d| reads.iter().any(|h| matches!(&rw.kernel.nodes[*h], Node::Load { tensor, .. } if *tensor == d.tensor)))
                    .map_or(0, |p| p + 1);
                let at = (after..s)
                    .find(|&p| {
                        !rw.kernel
                            .tensor(rw.kernel.stmts[p].tensor)
                            .name
                            .contains('.')
                    })
                    .unwrap_or(s);
                rw.kernel.stmts.insert(at, new_stmt);
                s += 2;
            }
            None => s += 1,
        }
    }
    notes
}

fn missing_names(rw: &Rewriter, lhs: u64, new_stmt: &Stmt) -> String {
    let have = new_stmt.indices.iter().fold(0u64, |m, e| m | 1 << e.0);
    (0..rw.kernel.extents.len())
        .filter(|e| lhs & !have & (1 << e) != 0)
        .map(|e| rw.kernel.extents[e].name.clone())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The factors of a product tree.
fn factors(rw: &Rewriter, h: Handle<Node>, out: &mut Vec<Handle<Node>>) {
    match &rw.kernel.nodes[h] {
        Node::Binary(BinOp::Mul, a, b) => {
            let (a, b) = (*a, *b);
            factors(rw, a, out);
            factors(rw, b, out);
        }
        _ => out.push(h),
    }
}

fn product(rw: &mut Rewriter, fs: &[Handle<Node>], ty: ScalarType) -> Handle<Node> {
    let mut it = fs.iter().copied();
    let Some(first) = it.next() else {
        return rw.float(1.0, ty);
    };
    it.fold(first, |acc, f| rw.bin(BinOp::Mul, acc, f))
}

/// The summed index of a statement made by [`try_reorder`].
fn new_stmt_col(rw: &Rewriter, stmt: &Stmt) -> ExtentId {
    match &rw.kernel.nodes[stmt.value] {
        Node::Reduce { axes, .. } => axes[0],
        _ => unreachable!("a reordered statement is a sum"),
    }
}

/// The reordered statement, the replacement of `top`, and for a Toeplitz
/// product its row index.
fn try_reorder(
    rw: &mut Rewriter,
    stmt: &Stmt,
    lhs: u64,
    top: Handle<Node>,
    toeplitz: bool,
) -> Option<(Stmt, Handle<Node>, Option<ExtentId>)> {
    let Node::Reduce {
        op: ReduceOp::Sum,
        axes: outer_axes,
        arg,
    } = rw.kernel.nodes[top].clone()
    else {
        return None;
    };
    let ty = rw.kernel.ty(top);
    let outer = outer_axes.iter().fold(0u64, |m, a| m | 1 << a.0);
    let mut fs = Vec::new();
    factors(rw, arg, &mut fs);
    // Exactly one factor is an inner sum; the rest (Q) multiply it.
    let inner_pos = fs.iter().position(|f| {
        matches!(
            rw.kernel.nodes[*f],
            Node::Reduce {
                op: ReduceOp::Sum,
                ..
            }
        )
    })?;
    let inner = fs.remove(inner_pos);
    let q = fs;
    let Node::Reduce {
        axes: inner_axes,
        arg: inner_arg,
        ..
    } = rw.kernel.nodes[inner].clone()
    else {
        return None;
    };
    let mut inner_fs = Vec::new();
    factors(rw, inner_arg, &mut inner_fs);
    let (x, y): (Vec<_>, Vec<_>) = inner_fs.into_iter().partition(|f| rw.free(*f) & outer == 0);
    if x.is_empty() || y.is_empty() {
        return None;
    }
    let yq: Vec<Handle<Node>> = y.iter().chain(&q).copied().collect();
    let yq_free = yq.iter().fold(0u64, |m, f| m | rw.free(*f));
    // Worth it only if the new sum drops an index of the statement, or
    // keeps one only through a Toeplitz coefficient.
    if q.iter().any(|f| reads_var_or_gather(rw, *f)) {
        return None;
    }
    let mut toe_row = None;
    if lhs & !yq_free == 0 {
        let [col] = outer_axes[..] else { return None };
        if !toeplitz {
            return None;
        }
        let body = product(rw, &yq, ty);
        let free = |h: Handle<Node>| rw.free(h);
        toe_row = (0..rw.kernel.extents.len() as u32)
            .map(ExtentId)
            .find(|&row| {
                lhs & (1 << row.0) != 0
                    && row != col
                    && crate::toeplitz::split_factors(&rw.kernel, &free, body, row, col).is_some()
            });
        toe_row?;
    }
    let inner_mask = inner_axes.iter().fold(0u64, |m, a| m | 1 << a.0);
    let idx_mask = yq_free & !outer;
    // Dimensions: the inner sum's axes first, then the rest in extent order.
    let mut indices: Vec<ExtentId> = inner_axes
        .iter()
        .copied()
        .filter(|a| idx_mask & (1 << a.0) != 0)
        .collect();
    indices.extend(
        (0..rw.kernel.extents.len() as u32)
            .map(ExtentId)
            .filter(|e| idx_mask & !inner_mask & (1 << e.0) != 0),
    );
    if let Some(row) = toe_row {
        // The row index last: each Toeplitz product is one contiguous vector.
        indices.retain(|e| *e != row);
        indices.push(row);
    }
    let body = product(rw, &yq, ty);
    let sum = rw.add(
        Node::Reduce {
            op: ReduceOp::Sum,
            axes: outer_axes.clone(),
            arg: body,
        },
        ty,
    );
    let name = format!(
        "{}.sum_{}",
        rw.kernel.tensor(stmt.tensor).name,
        axis_names(rw, &outer_axes)
    );
    rw.kernel.tensors.push(Tensor {
        name,
        kind: TensorKind::Temp,
        ty,
        dims: indices.iter().map(|e| Dim(Affine::var(*e))).collect(),
        pad: None,
    });
    let tensor = TensorId(rw.kernel.tensors.len() as u32 - 1);
    let load = rw.add(
        Node::Load {
            tensor,
            index: indices
                .iter()
                .map(|e| Index::Affine(Affine::var(*e)))
                .collect(),
        },
        ty,
    );
    let mut new_inner = x;
    new_inner.push(load);
    let new_arg = product(rw, &new_inner, ty);
    let replacement = rw.add(
        Node::Reduce {
            op: ReduceOp::Sum,
            axes: inner_axes,
            arg: new_arg,
        },
        ty,
    );
    Some((
        Stmt {
            tensor,
            indices,
            value: sum,
            span: stmt.span,
        },
        replacement,
        toe_row,
    ))
}

fn axis_names(rw: &Rewriter, axes: &[ExtentId]) -> String {
    axes.iter()
        .map(|a| rw.kernel.extent(*a).name.as_str())
        .collect::<Vec<_>>()
        .join("_")
}

fn reads_var_or_gather(rw: &Rewriter, h: Handle<Node>) -> bool {
    crate::fuse::subtree(&rw.kernel, h)
        .into_iter()
        .any(|n| match &rw.kernel.nodes[n] {
            Node::Var(_) => true,
            Node::Load { index, .. } => index.iter().any(|i| matches!(i, Index::Gather(_))),
            _ => false,
        })
}
