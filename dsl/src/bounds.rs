//! Sign facts the planner proves, so code generators can use leaner math.
//!
//! The one fact used today: `x - m ≤ 0` (or NaN) when `m` is the maximum of
//! a set of values that contains `x`. The exp-shift rules emit their own
//! shifted exponentials as [`UnOp::ExpNonPos`] (a running max has absorbed
//! the value it shifts); [`mark_nonpositive_exps`] finds the others in a
//! plan's program: `exp(a - m[..])` where `m` is a tensor the kernel defines
//! as `max[axes](a)` (the same node `a`), read at the statement's own
//! indices, directly or through a variable set once to that read (a
//! hoisted loop invariant). Each such `exp` becomes `ExpNonPos`, which has
//! the same value: the interpreter computes both with `exp`.

use crate::arena::Handle;
use crate::ir::*;
use crate::lir::{Op, Program};
use crate::rules::Rewriter;
use std::collections::HashMap;

/// The tensor a max statement defines, and that statement's argument.
fn max_tensors(kernel: &Kernel) -> HashMap<TensorId, (Handle<Node>, Vec<ExtentId>)> {
    let mut writes: HashMap<TensorId, usize> = HashMap::new();
    for stmt in &kernel.stmts {
        *writes.entry(stmt.tensor).or_default() += 1;
    }
    let mut out = HashMap::new();
    for stmt in &kernel.stmts {
        if writes[&stmt.tensor] != 1 || kernel.tensor(stmt.tensor).kind != TensorKind::Temp {
            continue;
        }
        if let Node::Reduce {
            op: ReduceOp::Max,
            arg,
            ..
        } = kernel.nodes[stmt.value]
        {
            out.insert(stmt.tensor, (arg, stmt.indices.clone()));
        }
    }
    out
}

fn count_sets(ops: &[Op], counts: &mut HashMap<VarId, (usize, Handle<Node>)>) {
    for op in ops {
        match op {
            Op::Barrier | Op::Toeplitz { .. } => {}
            Op::Loop { body, .. } => count_sets(body, counts),
            Op::If { then, .. } => count_sets(then, counts),
            Op::Set { var, value } => {
                let e = counts.entry(*var).or_insert((0, *value));
                e.0 += 1;
            }
            Op::Store { .. } => {}
        }
    }
}

/// Replaces every `exp` whose argument is provably `≤ 0` by `ExpNonPos`;
/// returns how many nodes changed.
pub fn mark_nonpositive_exps(rw: &mut Rewriter, program: &mut Program) -> usize {
    let maxes = max_tensors(&rw.kernel);
    if maxes.is_empty() {
        return 0;
    }
    let mut sets = HashMap::new();
    count_sets(&program.body, &mut sets);
    // A variable set once to a load stands for that load.
    let alias = |kernel: &Kernel, h: Handle<Node>| -> Handle<Node> {
        if let Node::Var(v) = kernel.nodes[h]
            && let Some(&(1, value)) = sets.get(&v)
            && matches!(kernel.nodes[value], Node::Load { .. })
        {
            return value;
        }
        h
    };
    let is_max_of = |kernel: &Kernel, m: Handle<Node>, a: Handle<Node>| -> bool {
        let Node::Load { tensor, index } = &kernel.nodes[alias(kernel, m)] else {
            return false;
        };
        let Some((arg, indices)) = maxes.get(tensor) else {
            return false;
        };
        *arg == a
            && index.len() == indices.len()
            && index
                .iter()
                .zip(indices)
                .all(|(i, &e)| matches!(i, Index::Affine(x) if x.as_var() == Some(e)))
    };
    let mut map = HashMap::new();
    let kernel = &rw.kernel;
    let candidates: Vec<(Handle<Node>, Handle<Node>)> = kernel
        .nodes
        .iter()
        .filter_map(|(h, node)| match node {
            Node::Unary(UnOp::Exp, d) => match kernel.nodes[*d] {
                Node::Binary(BinOp::Sub, a, m) if is_max_of(kernel, m, a) => Some((h, *d)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    for (h, d) in candidates {
        let n = rw.un(UnOp::ExpNonPos, d);
        map.insert(h, n);
    }
    if map.is_empty() {
        return 0;
    }
    let n = map.len();
    let mut body = std::mem::take(&mut program.body);
    replace_ops(rw, &mut body, &map);
    program.body = body;
    n
}

fn replace_ops(rw: &mut Rewriter, ops: &mut [Op], map: &HashMap<Handle<Node>, Handle<Node>>) {
    for op in ops {
        match op {
            Op::Barrier | Op::Toeplitz { .. } => {}
            Op::Loop { body, .. } => replace_ops(rw, body, map),
            Op::If { cond, then } => {
                *cond = rw.replace(*cond, map);
                replace_ops(rw, then, map);
            }
            Op::Set { value, .. } | Op::Store { value, .. } => *value = rw.replace(*value, map),
        }
    }
}
