//! Blocked online sweeps: a running max moved once per block, not per element.
//!
//! The exp-shift rule's running max updates the max and, when it moves,
//! rescales the sums, for every element: in vector code that is a max, a
//! compare, a branch on any lane and a guard per vector on top of the sum's
//! `exp`. [`block_online_sweeps`] rewrites such a sweep into blocks of
//! [`BLOCK`] elements: a first inner loop takes the block's max (a plain max
//! reduction), the running max moves once (the same rescaling branch), and
//! a second inner loop adds the block's terms against that max, which is
//! now fixed, so its sums are plain sums. The block is read twice but from
//! the L1 cache, so the sweep still reads memory once.
//!
//! The value is the online normalizer's: after each block the sums are
//! taken relative to the max of everything seen. The outer loop keeps the
//! sweep's states and laws (so it still splits across threads); the plan
//! text shows it as `[blocks of 1024]`.

use crate::ir::*;
use crate::lir::{AccState, Law, Op, Program, StateSlot, has_loop, sets_in as sets};
use crate::rules::Rewriter;
use crate::vector::LoopCode;
use std::collections::HashMap;

/// Elements per block: 4 KiB of `f32`, re-read from L1.
pub const BLOCK: u32 = 1024;

/// Rewrites every online sweep of `program` into blocks; returns how many.
pub fn block_online_sweeps(rw: &mut Rewriter, program: &mut Program) -> usize {
    let mut body = std::mem::take(&mut program.body);
    let n = block_ops(rw, program, &mut body);
    program.body = body;
    n
}

fn block_ops(rw: &mut Rewriter, program: &mut Program, ops: &mut [Op]) -> usize {
    let mut n = 0;
    for op in ops.iter_mut() {
        match op {
            Op::Loop { body, .. } if body.iter().any(has_loop) => {
                n += block_ops(rw, program, body);
            }
            Op::Loop {
                index,
                sweep: true,
                range: None,
                states,
                body,
                code: LoopCode::Plain,
            } => {
                if let Some(new_body) = blocked(rw, program, *index, states, body) {
                    *body = new_body;
                    if let Op::Loop { code, .. } = op {
                        *code = LoopCode::Blocks(BLOCK);
                    }
                    n += 1;
                }
            }
            Op::If { then, .. } => n += block_ops(rw, program, then),
            _ => {}
        }
    }
    n
}

/// The blocked body of one sweep, if it has the running-max shape.
fn blocked(
    rw: &mut Rewriter,
    program: &mut Program,
    e: ExtentId,
    states: &[AccState],
    body: &[Op],
) -> Option<Vec<Op>> {
    // One `if` at the top level, on `new != acc`.
    let ifs: Vec<usize> = (0..body.len())
        .filter(|&i| matches!(body[i], Op::If { .. }))
        .collect();
    let [p] = ifs[..] else { return None };
    let Op::If { cond, then } = &body[p] else {
        return None;
    };
    let k = &rw.kernel;
    let Node::Cmp(CmpOp::Ne, a, b) = k.nodes[*cond] else {
        return None;
    };
    let (Node::Var(new), Node::Var(acc)) = (&k.nodes[a], &k.nodes[b]) else {
        return None;
    };
    let (new, acc) = (*new, *acc);
    // `acc` is a max state of this sweep.
    let max_at = states.iter().position(|s| {
        s.law == Law::Max && s.slots.len() == 1 && s.slots[0] == StateSlot::Var(acc)
    })?;
    // Before the `if`: temporaries only, one of them `new = max(acc, x)`.
    let pre = &body[..p];
    let mut set_before = Vec::new();
    sets(pre, &mut set_before);
    let state_vars: Vec<VarId> = states
        .iter()
        .flat_map(|s| &s.slots)
        .filter_map(|s| match s {
            StateSlot::Var(v) => Some(*v),
            StateSlot::Array(..) => None,
        })
        .collect();
    if set_before.iter().any(|v| state_vars.contains(v))
        || states.iter().any(|s| {
            s.slots.iter().any(|x| matches!(x, StateSlot::Array(..))) || s.law == Law::None
        })
        || body.iter().any(has_loop)
    {
        return None;
    }
    if !pre.iter().all(|op| matches!(op, Op::Set { .. })) {
        return None;
    }
    let at_new = pre
        .iter()
        .position(|op| matches!(op, Op::Set { var, .. } if *var == new))?;
    let Op::Set { value, .. } = &pre[at_new] else {
        return None;
    };
    let Node::Binary(BinOp::Max, m, x) = k.nodes[*value] else {
        return None;
    };
    if k.nodes[m] != Node::Var(acc) {
        return None;
    }
    let ty = k.ty(*value);
    let temps: Vec<Op> = pre
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != at_new)
        .map(|(_, op)| op.clone())
        .collect();
    let name = format!("{}.blk", program.vars[acc.0 as usize].name);
    let blk = program.var(name, ty);
    let blk_read = rw.var(blk, ty);
    // The first loop's temporaries get names of their own, so each loop's
    // temporaries are private to it (and both loops vectorize).
    let mut renamed = HashMap::new();
    let mut temp_vars = Vec::new();
    sets(&temps, &mut temp_vars);
    for v in temp_vars {
        let var = program.vars[v.0 as usize].clone();
        let fresh = program.var(format!("{}.blk", var.name), var.ty);
        renamed.insert(v, fresh);
    }
    let no_tensors = HashMap::new();
    let x_first = rw.rename(x, &renamed, &no_tensors);
    let block_max = rw.bin(BinOp::Max, blk_read, x_first);
    let neg_inf = rw.float(f64::NEG_INFINITY, ty);
    let acc_read = rw.var(acc, ty);
    let new_value = rw.bin(BinOp::Max, acc_read, blk_read);
    // Inner ranges: [i, min(i + BLOCK, len(i))).
    let i32t = ScalarType::I32;
    let start = rw.add(Node::IndexValue(e), i32t);
    let size = rw.add(Node::ConstInt(BLOCK as i64), i32t);
    let past = rw.add(Node::Binary(BinOp::Add, start, size), i32t);
    let len = rw.add(Node::ExtentLen(e), i32t);
    let end = rw.add(Node::Binary(BinOp::Min, past, len), i32t);
    let mut first: Vec<Op> = temps
        .iter()
        .map(|op| match op {
            Op::Set { var, value } => Op::Set {
                var: renamed[var],
                value: rw.rename(*value, &renamed, &no_tensors),
            },
            other => other.clone(),
        })
        .collect();
    first.push(Op::Set {
        var: blk,
        value: block_max,
    });
    let mut second = temps;
    second.extend(body[p + 1..].iter().cloned());
    // The second loop runs only when the max is above -inf (all -inf so
    // far: every term is 0, the online sums' limit; NaN: the rescale made
    // the sums NaN already). There the guard `q == -inf ? 0 : exp(q - max)`
    // is `exp(q - max)` itself, so it goes.
    let guards = unguard(rw, acc);
    let second: Vec<Op> = second
        .into_iter()
        .map(|op| match op {
            Op::Set { var, value } => Op::Set {
                var,
                value: rw.replace(value, &guards),
            },
            Op::Store {
                tensor,
                index,
                value,
            } => Op::Store {
                tensor,
                index,
                value: rw.replace(value, &guards),
            },
            other => other,
        })
        .collect();
    let above = rw.add(Node::Cmp(CmpOp::Gt, acc_read, neg_inf), ScalarType::Bool);
    // With the max fixed for the block, its online sums are plain sums.
    let inner_states: Vec<AccState> = states
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != max_at)
        .map(|(_, s)| AccState {
            law: match s.law {
                Law::OnlineSum { .. } => Law::Sum,
                other => other,
            },
            describe: format!("{} (within the block)", s.describe),
            ..s.clone()
        })
        .collect();
    if inner_states
        .iter()
        .any(|s| matches!(s.law, Law::OnlineSum { .. }))
    {
        return None;
    }
    Some(vec![
        Op::Set {
            var: blk,
            value: neg_inf,
        },
        Op::Loop {
            index: e,
            sweep: true,
            range: Some((start, end)),
            states: vec![AccState {
                describe: "the block's max".into(),
                slots: vec![StateSlot::Var(blk)],
                law: Law::Max,
                ty,
            }],
            body: first,
            code: LoopCode::Plain,
        },
        Op::Set {
            var: new,
            value: new_value,
        },
        Op::If {
            cond: *cond,
            then: then.clone(),
        },
        Op::If {
            cond: above,
            then: vec![Op::Loop {
                index: e,
                sweep: true,
                range: Some((start, end)),
                states: inner_states,
                body: second,
                code: LoopCode::Plain,
            }],
        },
    ])
}

/// `select(q == -inf, 0, exp.nonpos(q - acc)) → exp.nonpos(q - acc)` for
/// every such node of the kernel.
fn unguard(
    rw: &Rewriter,
    acc: VarId,
) -> HashMap<crate::arena::Handle<Node>, crate::arena::Handle<Node>> {
    let k = &rw.kernel;
    let is_const = |h, v: f64| matches!(k.nodes[h], Node::ConstFloat(b) if f64::from_bits(b) == v);
    let mut map = HashMap::new();
    for (h, node) in k.nodes.iter() {
        let Node::Select(c, zero, e) = *node else {
            continue;
        };
        let Node::Cmp(CmpOp::Eq, q, inf) = k.nodes[c] else {
            continue;
        };
        let Node::Unary(UnOp::ExpNonPos, d) = k.nodes[e] else {
            continue;
        };
        let Node::Binary(BinOp::Sub, q2, m) = k.nodes[d] else {
            continue;
        };
        if q == q2
            && k.nodes[m] == Node::Var(acc)
            && is_const(inf, f64::NEG_INFINITY)
            && is_const(zero, 0.0)
        {
            map.insert(h, e);
        }
    }
    map
}
