//! Maxes whose NaN another reduction carries.
//!
//! A NaN-propagating max costs three vector instructions per element (a
//! compare, a max, a blend for the NaN), a max that passes over NaN one.
//! In softmax-like kernels the max needs no NaN of its own:
//!
//! ```text
//! m[b] = max[i](q);
//! s[b] = sum[i](exp(q - m[b]));
//! y[b] = m[b] + log(s[b]);
//! ```
//!
//! A NaN among the `q` of a row makes its term `exp(NaN - m)` NaN whatever
//! `m` is, so `s` is NaN; every statement that reads `m` also reads `s` of
//! the same row through operations that keep a NaN (`+ - · /`, `exp`,
//! `log`, ...), so it is NaN too, as with the NaN-propagating max. A row
//! without NaN has the same max either way. So `m`'s running max may pass
//! over NaN elements ([`BinOp::MaxNum`]) without changing any value the
//! kernel computes. [`covered_maxes`] finds such maxes in a kernel;
//! [`ignore_nans`] rewrites their running maxes in a loop program.
//!
//! The blocked online sweep ([`crate::block`]) skips a block's terms while
//! the running max is `-inf`; with a max that passes over NaN that would
//! skip a NaN too, so there the terms are taken against
//! `m == -inf ? 0 : m` instead of skipping (see `crate::block`).

use crate::arena::Handle;
use crate::ir::*;
use crate::lir::{Op, Program};
use std::collections::HashSet;

/// The temporaries of `k` defined by a max reduction whose NaN another
/// reduction carries (see the module docs).
pub fn covered_maxes(k: &Kernel) -> HashSet<TensorId> {
    k.stmts
        .iter()
        .filter(|s| carrier(k, s.tensor).is_some())
        .map(|s| s.tensor)
        .collect()
}

/// The sum that carries the NaN of the max `m`, if `m` is covered.
pub fn carrier(k: &Kernel, m: TensorId) -> Option<TensorId> {
    for (sm, stmt) in k.stmts.iter().enumerate() {
        if stmt.tensor != m {
            continue;
        }
        let Node::Reduce {
            op: ReduceOp::Max,
            axes,
            arg: q,
        } = &k.nodes[stmt.value]
        else {
            continue;
        };
        if k.tensor(m).kind != TensorKind::Temp || k.ty(*q) == ScalarType::I32 {
            continue;
        }
        // The sum whose terms see every q of the row.
        let carrier = k.stmts.iter().position(|s| {
            let Node::Reduce {
                op: ReduceOp::Sum,
                axes: s_axes,
                arg: t,
            } = &k.nodes[s.value]
            else {
                return false;
            };
            s.indices == stmt.indices
                && s_axes == axes
                && k.tensor(s.tensor).kind != TensorKind::InOut
                && keeps_nan_of(k, *t, &|h| is_shifted_exp(k, h, *q, m, &stmt.indices))
        });
        let Some(ss) = carrier else { continue };
        let s = k.stmts[ss].tensor;
        // Every other reader of m reads s of the same row.
        let readers_carry = k.stmts.iter().enumerate().all(|(i, t)| {
            if i == sm || i == ss {
                return true;
            }
            let loads = loads_of(k, t.value, m);
            loads.iter().all(|index| {
                keeps_nan_of(k, t.value, &|h| {
                    matches!(&k.nodes[h], Node::Load { tensor, index: at } if *tensor == s && at == index)
                })
            })
        });
        if readers_carry {
            return Some(s);
        }
    }
    None
}

/// Whether `h` is `exp(q - m[indices])`.
fn is_shifted_exp(
    k: &Kernel,
    h: Handle<Node>,
    q: Handle<Node>,
    m: TensorId,
    indices: &[ExtentId],
) -> bool {
    let Node::Unary(UnOp::Exp | UnOp::ExpNonPos, d) = k.nodes[h] else {
        return false;
    };
    let Node::Binary(BinOp::Sub, q2, l) = k.nodes[d] else {
        return false;
    };
    let Node::Load { tensor, index } = &k.nodes[l] else {
        return false;
    };
    q2 == q
        && *tensor == m
        && index.len() == indices.len()
        && index
            .iter()
            .zip(indices)
            .all(|(i, e)| matches!(i, Index::Affine(a) if a.as_var() == Some(*e)))
}

/// Whether `root` is NaN whenever a node `target` accepts is: a path from
/// `root` down to it through operations that keep a NaN operand.
fn keeps_nan_of(k: &Kernel, root: Handle<Node>, target: &dyn Fn(Handle<Node>) -> bool) -> bool {
    let mut stack = vec![root];
    let mut seen = HashSet::new();
    while let Some(h) = stack.pop() {
        if !seen.insert(h) {
            continue;
        }
        if target(h) {
            return true;
        }
        match k.nodes[h] {
            Node::Unary(op, a) if !matches!(op, UnOp::Not | UnOp::Sign) => stack.push(a),
            Node::Binary(op, a, b)
                if matches!(
                    op,
                    BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Min | BinOp::Max
                ) && k.ty(h) != ScalarType::I32 =>
            {
                stack.push(a);
                stack.push(b);
            }
            _ => {}
        }
    }
    false
}

/// The subscripts of every load of `tensor` in the tree of `root`.
fn loads_of(k: &Kernel, root: Handle<Node>, tensor: TensorId) -> Vec<Vec<Index>> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    let mut seen = HashSet::new();
    while let Some(h) = stack.pop() {
        if !seen.insert(h) {
            continue;
        }
        if let Node::Load { tensor: t, index } = &k.nodes[h]
            && *t == tensor
        {
            out.push(index.clone());
        }
        stack.extend(k.nodes[h].operands());
    }
    out
}

/// The variables of `program` whose value ends up in a tensor of
/// `covered`: stored there, or merged by a max into such a variable.
pub fn covered_vars(k: &Kernel, program: &Program, covered: &HashSet<TensorId>) -> HashSet<VarId> {
    let mut vars = HashSet::new();
    if covered.is_empty() {
        return vars;
    }
    fn walk(ops: &[Op], f: &mut dyn FnMut(&Op)) {
        for op in ops {
            f(op);
            match op {
                Op::Loop { body, .. } => walk(body, f),
                Op::If { then, .. } => walk(then, f),
                _ => {}
            }
        }
    }
    walk(&program.body, &mut |op| {
        if let Op::Store { tensor, value, .. } = op
            && covered.contains(tensor)
            && let Node::Var(v) = k.nodes[*value]
        {
            vars.insert(v);
        }
    });
    loop {
        let before = vars.len();
        walk(&program.body, &mut |op| {
            let Op::Set { var, value } = op else { return };
            if !vars.contains(var) {
                return;
            }
            match k.nodes[*value] {
                Node::Var(v) => {
                    vars.insert(v);
                }
                Node::Binary(BinOp::Max, a, b) => {
                    for h in [a, b] {
                        if let Node::Var(v) = k.nodes[h] {
                            vars.insert(v);
                        }
                    }
                }
                _ => {}
            }
        });
        if vars.len() == before {
            return vars;
        }
    }
}

/// Rewrites every running max `v = max(v, x)` of a variable of `vars`
/// into `v = maxnum(v, x)`; returns how many.
pub fn ignore_nans(
    rw: &mut crate::rules::Rewriter,
    program: &mut Program,
    vars: &HashSet<VarId>,
) -> usize {
    fn go(rw: &mut crate::rules::Rewriter, ops: &mut [Op], vars: &HashSet<VarId>) -> usize {
        let mut n = 0;
        for op in ops {
            match op {
                Op::Set { var, value } if vars.contains(var) => {
                    if let Node::Binary(BinOp::Max, a, x) = rw.kernel.nodes[*value]
                        && rw.kernel.nodes[a] == Node::Var(*var)
                    {
                        *value = rw.bin(BinOp::MaxNum, a, x);
                        n += 1;
                    }
                }
                Op::Loop { body, .. } => n += go(rw, body, vars),
                Op::If { then, .. } => n += go(rw, then, vars),
                _ => {}
            }
        }
        n
    }
    go(rw, &mut program.body, vars)
}
