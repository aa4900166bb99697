//! Grouped online sweeps that carry vector-valued states.
//!
//! Attention's sweep over keys computes, per key, a score (a dot product
//! and its horizontal sum), moves the running max, takes `exp(s_j - m)`
//! and adds `exp(s_j - m)·v_j` into the scratch accumulator `o.acc[e]`.
//! Each key is one long chain of dependent work, and a key's instructions
//! fill the processor's reorder window, so the next key's dot product
//! barely overlaps it. [`jam_online_sweeps`] takes such a sweep [`JAM`]
//! elements at a time:
//!
//! - the arguments of the [`JAM`] elements (the scores) are computed first;
//!   they are independent, so their chains overlap;
//! - the running max moves once, to the max of the group (the same
//!   rescaling branch; the group's terms are then taken against a fixed
//!   max, as in [`crate::block`]);
//! - then each element's terms and accumulator updates run in element
//!   order, as before.
//!
//! The updates are not fused into one loop over the group: that reads the
//! group's rows of `v` interleaved (four streams 512 bytes apart), which
//! the hardware prefetchers follow badly; measured on attention decode over
//! 65,536 keys, 84–90 ns per key fused against 37–40 grouped and 42–54
//! before.
//!
//! A group that would run past the end (the last `len % JAM` elements, or a
//! thread's chunk end) runs the sweep's original body element by element.
//! The value is the online normalizer's, with the max moved per group.
//! Scalar plans keep the sweep as it is (they promise the interpreter's
//! order).
//!
//! The elements `j + 1 … j + JAM - 1` are read with shifted subscripts; the
//! group runs only when `j + JAM ≤` the block's end, so they are in range
//! (and the code generators check such reads all the same).

use crate::arena::Handle;
use crate::ir::*;
use crate::lir::{AccState, Op, Program, StateSlot, sets_in};
use crate::rules::Rewriter;
use crate::vector::LoopCode;
use std::collections::HashMap;

/// Elements per group.
pub const JAM: u32 = 4;

/// Rewrites every online sweep of `program` whose body has inner loops (so
/// the sweep itself stays scalar) as the module docs say; returns how many.
pub fn jam_online_sweeps(rw: &mut Rewriter, program: &mut Program) -> usize {
    crate::block::rewrite_sweeps(rw, program, &mut |rw, program, e, states, body| {
        jammed(rw, program, e, states, body).map(|body| (body, JAM))
    })
}

/// Whether the values under `root` can be moved to a later element by
/// [`Rewriter::shift_index`]: no reduction over `e` inside.
fn shiftable(k: &Kernel, root: Handle<Node>, e: ExtentId) -> bool {
    let mut stack = vec![root];
    while let Some(h) = stack.pop() {
        match &k.nodes[h] {
            Node::Reduce { axes, .. } if axes.contains(&e) => return false,
            n => stack.extend(n.operands()),
        }
    }
    true
}

/// Whether `root` reads a variable that `which` picks.
fn reads_var(k: &Kernel, root: Handle<Node>, which: impl Fn(VarId) -> bool) -> bool {
    let mut stack = vec![root];
    while let Some(h) = stack.pop() {
        if matches!(k.nodes[h], Node::Var(v) if which(v)) {
            return true;
        }
        stack.extend(k.nodes[h].operands());
    }
    false
}

/// Whether `root` loads `tensor`, and only at exactly `at`.
fn loads_at(k: &Kernel, root: Handle<Node>, tensor: TensorId, at: &[ExtentId]) -> Option<bool> {
    let mut stack = vec![root];
    let mut found = false;
    while let Some(h) = stack.pop() {
        let node = &k.nodes[h];
        if let Node::Load { tensor: t, index } = node
            && *t == tensor
        {
            let exact = index.len() == at.len()
                && index
                    .iter()
                    .zip(at)
                    .all(|(i, e)| matches!(i, Index::Affine(a) if a.as_var() == Some(*e)));
            if !exact {
                return None;
            }
            found = true;
        }
        stack.extend(node.operands());
    }
    Some(found)
}

/// A loop after the rescaling branch that updates one scratch accumulator
/// elementwise: `for f { T[f..] = value(T[f..], …) }`.
struct Update {
    index: ExtentId,
    code: LoopCode,
    tensor: TensorId,
    at: Vec<ExtentId>,
    value: Handle<Node>,
}

fn update_loop(k: &Kernel, op: &Op, e: ExtentId, scratch: &[TensorId]) -> Option<Update> {
    let Op::Loop {
        index,
        range: None,
        states,
        body,
        code,
        ..
    } = op
    else {
        return None;
    };
    if *index == e || !states.is_empty() {
        return None;
    }
    let [
        Op::Store {
            tensor,
            index: at,
            value,
        },
    ] = &body[..]
    else {
        return None;
    };
    if !scratch.contains(tensor) || at.contains(&e) || !at.contains(index) {
        return None;
    }
    loads_at(k, *value, *tensor, at)?;
    Some(Update {
        index: *index,
        code: code.clone(),
        tensor: *tensor,
        at: at.clone(),
        value: *value,
    })
}

fn jammed(
    rw: &mut Rewriter,
    program: &mut Program,
    e: ExtentId,
    states: &[AccState],
    body: &[Op],
) -> Option<Vec<Op>> {
    // The running-max shape: temporaries, one `if new != acc`, then the
    // terms' updates.
    let crate::block::RunningMax {
        at_if: p,
        cond,
        then,
        new,
        acc,
        at_new,
        new_value,
        x,
        ty,
        state_vars,
        ..
    } = crate::block::running_max_shape(&rw.kernel, states, body)?;
    let k = &rw.kernel;
    let scratch: Vec<TensorId> = states
        .iter()
        .flat_map(|s| &s.slots)
        .filter_map(|s| match s {
            StateSlot::Array(t, _) => Some(*t),
            StateSlot::Var(_) => None,
        })
        .collect();
    if scratch.is_empty() {
        return None;
    }
    let pre = &body[..p];
    let value = &new_value;

    // The branch does not depend on the element.
    let mut then_roots = Vec::new();
    crate::lir::value_roots(then, &mut then_roots);
    if then_roots.iter().any(|&h| rw.free(h) & (1 << e.0) != 0) {
        return None;
    }
    // After it: assignments, then elementwise updates of scratch.
    let post = &body[p + 1..];
    let first_loop = post
        .iter()
        .position(|op| !matches!(op, Op::Set { .. }))
        .unwrap_or(post.len());
    let (sets, loops) = post.split_at(first_loop);
    let updates: Vec<Update> = loops
        .iter()
        .map(|op| update_loop(k, op, e, &scratch))
        .collect::<Option<_>>()?;
    if updates.is_empty() {
        return None;
    }
    // Every value moves with the element; assignments read no scratch.
    let mut roots = Vec::new();
    crate::lir::value_roots(pre, &mut roots);
    crate::lir::value_roots(sets, &mut roots);
    if roots.iter().any(|&h| {
        !shiftable(k, h, e)
            || scratch
                .iter()
                .any(|&t| loads_at(k, h, t, &[]) != Some(false))
    }) {
        return None;
    }
    if updates.iter().any(|u| !shiftable(k, u.value, e)) {
        return None;
    }
    // The arguments move ahead of earlier elements' updates: they read no
    // state.
    let reads_state = |h| reads_var(k, h, |v| state_vars.contains(&v));
    let mut pre_roots = Vec::new();
    crate::lir::value_roots(pre, &mut pre_roots);
    if pre_roots.iter().any(|&h| h != *value && reads_state(h)) {
        return None;
    }
    // Only the branch reads `new` (the group's max replaces each element's).
    let reads_new = |h| reads_var(k, h, |v| v == new);
    if roots.iter().any(|&h| h != *value && reads_new(h))
        || updates.iter().any(|u| reads_new(u.value))
    {
        return None;
    }

    // The temporaries each element of the group gets its own copy of; the
    // branch, run once for the group, reads none of them.
    let mut temps = Vec::new();
    sets_in(pre, &mut temps);
    sets_in(sets, &mut temps);
    temps.retain(|v| *v != new && !state_vars.contains(v));
    if then_roots
        .iter()
        .any(|&h| reads_var(k, h, |v| temps.contains(&v)))
    {
        return None;
    }
    let mut group = Vec::new();
    let mut group_max = rw.var(acc, ty);
    let mut renames = Vec::new();
    for u in 0..JAM {
        let renamed: HashMap<VarId, VarId> = temps
            .iter()
            .map(|&v| {
                let var = program.vars[v.0 as usize].clone();
                (v, program.var(format!("{}.j{u}", var.name), var.ty))
            })
            .collect();
        for (i, op) in pre.iter().enumerate() {
            if i == at_new {
                continue;
            }
            if let Op::Set { var, value } = op {
                group.push(Op::Set {
                    var: renamed[var],
                    value: rw.shift_index(*value, e, i64::from(u), &renamed),
                });
            }
        }
        let x_u = rw.shift_index(x, e, i64::from(u), &renamed);
        group_max = rw.bin(BinOp::Max, group_max, x_u);
        renames.push(renamed);
    }
    group.push(Op::Set {
        var: new,
        value: group_max,
    });
    group.push(Op::If {
        cond,
        then: then.to_vec(),
    });
    // Then each element's terms, in order, against the group's max.
    for (u, renamed) in renames.iter().enumerate() {
        let by = u as i64;
        for op in sets {
            if let Op::Set { var, value } = op {
                group.push(Op::Set {
                    var: renamed.get(var).copied().unwrap_or(*var),
                    value: rw.shift_index(*value, e, by, renamed),
                });
            }
        }
        for up in &updates {
            group.push(Op::Loop {
                index: up.index,
                sweep: false,
                range: None,
                states: Vec::new(),
                body: vec![Op::Store {
                    tensor: up.tensor,
                    index: up.at.clone(),
                    value: rw.shift_index(up.value, e, by, renamed),
                }],
                code: up.code.clone(),
            });
        }
    }

    // `if end - j == JAM { group } else { for j in j..end { body } }`.
    let i32t = ScalarType::I32;
    let start = rw.add(Node::IndexValue(e), i32t);
    let size = rw.add(Node::ConstInt(i64::from(JAM)), i32t);
    let past = rw.add(Node::Binary(BinOp::Add, start, size), i32t);
    let len = rw.add(Node::ExtentLen(e), i32t);
    let end = rw.add(Node::Binary(BinOp::Min, past, len), i32t);
    let count = rw.add(Node::Binary(BinOp::Sub, end, start), i32t);
    let full = rw.add(Node::Cmp(CmpOp::Eq, count, size), ScalarType::Bool);
    let partial = rw.add(Node::Unary(UnOp::Not, full), ScalarType::Bool);
    Some(vec![
        Op::If {
            cond: full,
            then: group,
        },
        Op::If {
            cond: partial,
            then: vec![Op::Loop {
                index: e,
                sweep: true,
                range: Some((start, end)),
                states: states.to_vec(),
                body: body.to_vec(),
                code: LoopCode::Plain,
            }],
        },
    ])
}
