//! Loop-invariant code motion on loop programs.
//!
//! Assumes a program whose values read variables and tensors at their op.
//! For each loop, a maximal subexpression of its body's ops that does not
//! depend on the loop index, reads no variable set in the loop and no
//! tensor stored in it, and is worth a variable (it evaluates a reduction,
//! a function, a division or a load) is computed once into a variable
//! right before the loop. Inner loops are handled first, so an expression
//! climbs out of every loop it does not depend on. Expressions with gathers
//! stay put: a gather may fail, and the loop may run zero times.
//! Guarantees the same values (the same operations on the same operands).

use crate::arena::Handle;
use crate::ir::*;
use crate::lir::{Op, Program};
use crate::rules::Rewriter;
use std::collections::{HashMap, HashSet};

/// Hoists loop invariants out of every loop of `program`.
pub fn hoist_invariants(rw: &mut Rewriter, program: &mut Program) {
    let mut body = std::mem::take(&mut program.body);
    process(rw, program, &mut body);
    program.body = body;
}

fn process(rw: &mut Rewriter, program: &mut Program, ops: &mut Vec<Op>) {
    for op in ops.iter_mut() {
        match op {
            Op::Loop { body, .. } => process(rw, program, body),
            Op::If { then, .. } => process(rw, program, then),
            _ => {}
        }
    }
    let mut i = 0;
    while i < ops.len() {
        let Op::Loop { index, body, .. } = &mut ops[i] else {
            i += 1;
            continue;
        };
        let index = *index;
        let (vars, tensors) = modified(body);
        let mut found: Vec<Handle<Node>> = Vec::new();
        for op in body.iter() {
            let roots: Vec<Handle<Node>> = match op {
                Op::Set { value, .. } | Op::Store { value, .. } => vec![*value],
                Op::If { cond, .. } => vec![*cond],
                Op::Loop { .. } | Op::Barrier | Op::Toeplitz { .. } => Vec::new(),
            };
            for r in roots {
                collect(rw, r, index, &vars, &tensors, &mut found);
            }
        }
        if found.is_empty() {
            i += 1;
            continue;
        }
        let mut map = HashMap::new();
        let mut sets = Vec::new();
        for h in found {
            let ty = rw.kernel.ty(h);
            let v = program.var(format!("inv{}", program.vars.len()), ty);
            sets.push(Op::Set { var: v, value: h });
            let read = rw.var(v, ty);
            map.insert(h, read);
        }
        replace_all(rw, body, &map);
        let n = sets.len();
        for (k, set) in sets.into_iter().enumerate() {
            ops.insert(i + k, set);
        }
        i += n + 1;
    }
}

/// Variables set and tensors stored anywhere in `ops`.
fn modified(ops: &[Op]) -> (HashSet<VarId>, HashSet<TensorId>) {
    let mut vars = HashSet::new();
    let mut tensors = HashSet::new();
    let mut stack: Vec<&Op> = ops.iter().collect();
    while let Some(op) = stack.pop() {
        match op {
            Op::Barrier => {}
            Op::Loop { body, .. } => stack.extend(body.iter()),
            Op::If { then, .. } => stack.extend(then.iter()),
            Op::Set { var, .. } => {
                vars.insert(*var);
            }
            Op::Store { tensor, .. } | Op::Toeplitz { out: tensor, .. } => {
                tensors.insert(*tensor);
            }
        }
    }
    (vars, tensors)
}

fn collect(
    rw: &Rewriter,
    h: Handle<Node>,
    index: ExtentId,
    vars: &HashSet<VarId>,
    tensors: &HashSet<TensorId>,
    found: &mut Vec<Handle<Node>>,
) {
    if found.contains(&h) {
        return;
    }
    if invariant(rw, h, index, vars, tensors) && worth_it(rw, h) {
        found.push(h);
        return;
    }
    let node = &rw.kernel.nodes[h];
    // Do not look into reductions: their argument varies with their axes.
    if matches!(node, Node::Reduce { .. }) {
        return;
    }
    for o in node.operands() {
        collect(rw, o, index, vars, tensors, found);
    }
}

fn invariant(
    rw: &Rewriter,
    h: Handle<Node>,
    index: ExtentId,
    vars: &HashSet<VarId>,
    tensors: &HashSet<TensorId>,
) -> bool {
    if rw.free(h) & (1 << index.0) != 0 || rw.kernel.ty(h) == ScalarType::Bool {
        return false;
    }
    crate::fuse::subtree(&rw.kernel, h)
        .into_iter()
        .all(|n| match &rw.kernel.nodes[n] {
            Node::Var(v) => !vars.contains(v),
            Node::Load { tensor, index } => {
                !tensors.contains(tensor) && index.iter().all(|i| matches!(i, Index::Affine(_)))
            }
            _ => true,
        })
}

fn worth_it(rw: &Rewriter, h: Handle<Node>) -> bool {
    crate::fuse::subtree(&rw.kernel, h)
        .into_iter()
        .any(|n| match &rw.kernel.nodes[n] {
            Node::Reduce { .. } | Node::Powf(..) | Node::Load { .. } => true,
            Node::Unary(op, _) => !matches!(op, UnOp::Neg | UnOp::Not | UnOp::Abs),
            Node::Binary(BinOp::Div, ..) => true,
            _ => false,
        })
}

fn replace_all(rw: &mut Rewriter, ops: &mut [Op], map: &HashMap<Handle<Node>, Handle<Node>>) {
    for op in ops {
        match op {
            Op::Barrier | Op::Toeplitz { .. } => {}
            Op::Loop { body, .. } => replace_all(rw, body, map),
            Op::If { cond, then } => {
                *cond = rw.replace(*cond, map);
                replace_all(rw, then, map);
            }
            Op::Set { value, .. } | Op::Store { value, .. } => *value = rw.replace(*value, map),
        }
    }
}
