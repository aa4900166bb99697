//! Splitting sweeps: the combine laws of accumulators, made executable.
//!
//! A sweep over `i` that carries accumulator states (see [`AccState`]) can
//! run in two parts, `0..at` into its states and `at..len` into fresh twin
//! states, merged afterwards by each state's [`Law`]. This is how one long
//! row is split across threads and how vector lanes merge; [`split_sweeps`]
//! applies it to a whole program so that the laws are tested against the
//! unsplit program. Sweeps with a state that has no law (top-k) stay whole.

use crate::arena::Handle;
use crate::ir::*;
use crate::lir::{AccState, Law, Op, Program, StateSlot};
use crate::rules::Rewriter;
use std::collections::HashMap;

/// Splits every single-index sweep with mergeable states at `at` (an `i32`
/// node); returns how many sweeps were split.
pub fn split_sweeps(rw: &mut Rewriter, program: &mut Program, at: Handle<Node>) -> usize {
    let mut body = std::mem::take(&mut program.body);
    let n = split_ops(rw, program, &mut body, at);
    program.body = body;
    n
}

fn split_ops(
    rw: &mut Rewriter,
    program: &mut Program,
    ops: &mut Vec<Op>,
    at: Handle<Node>,
) -> usize {
    let mut count = 0;
    let mut i = 0;
    while i < ops.len() {
        let splittable = matches!(&ops[i], Op::Loop { sweep: true, range: None, states, body, .. }
            if !states.is_empty()
                && states.iter().all(|s| s.law != Law::None)
                && !body.iter().any(|op| matches!(op, Op::Loop { sweep: true, .. })));
        if !splittable {
            match &mut ops[i] {
                Op::Loop { body, .. } => count += split_ops(rw, program, body, at),
                Op::If { then, .. } => count += split_ops(rw, program, then, at),
                _ => {}
            }
            i += 1;
            continue;
        }
        let Op::Loop {
            index,
            states,
            body,
            ..
        } = ops[i].clone()
        else {
            unreachable!("checked above")
        };
        let (twins, vars, tensors) = make_twins(rw, program, &states);
        let mut new_ops = init_twins(rw, &states, &twins);
        let len = rw.add(Node::ExtentLen(index), ScalarType::I32);
        let zero = rw.add(Node::ConstInt(0), ScalarType::I32);
        new_ops.push(Op::Loop {
            index,
            sweep: true,
            range: Some((zero, at)),
            states: states.clone(),
            body: body.clone(),
            code: Default::default(),
        });
        let renamed = rename_ops(rw, &body, &vars, &tensors);
        let twin_states: Vec<AccState> = states
            .iter()
            .zip(&twins)
            .map(|(s, t)| AccState {
                slots: t.clone(),
                ..s.clone()
            })
            .collect();
        new_ops.push(Op::Loop {
            index,
            sweep: true,
            range: Some((at, len)),
            states: twin_states,
            body: renamed,
            code: Default::default(),
        });
        new_ops.extend(combine_ops(rw, program, &states, &twins));
        let n = new_ops.len();
        ops.splice(i..=i, new_ops);
        i += n;
        count += 1;
    }
    count
}

type Twins = (
    Vec<Vec<StateSlot>>,
    HashMap<VarId, VarId>,
    HashMap<TensorId, TensorId>,
);

fn make_twins(rw: &mut Rewriter, program: &mut Program, states: &[AccState]) -> Twins {
    let mut vars = HashMap::new();
    let mut tensors = HashMap::new();
    let mut twins = Vec::new();
    for st in states {
        let mut slots = Vec::new();
        for slot in &st.slots {
            slots.push(match slot {
                StateSlot::Var(v) => {
                    let var = program.vars[v.0 as usize].clone();
                    let t = program.var(format!("{}.twin", var.name), var.ty);
                    vars.insert(*v, t);
                    StateSlot::Var(t)
                }
                StateSlot::Array(t, idx) => {
                    let mut tensor = rw.kernel.tensor(*t).clone();
                    tensor.name.push_str(".twin");
                    rw.kernel.tensors.push(tensor);
                    let id = TensorId(rw.kernel.tensors.len() as u32 - 1);
                    tensors.insert(*t, id);
                    StateSlot::Array(id, idx.clone())
                }
            });
        }
        twins.push(slots);
    }
    (twins, vars, tensors)
}

fn rename_ops(
    rw: &mut Rewriter,
    ops: &[Op],
    vars: &HashMap<VarId, VarId>,
    tensors: &HashMap<TensorId, TensorId>,
) -> Vec<Op> {
    ops.iter()
        .map(|op| match op {
            Op::Barrier => Op::Barrier,
            Op::Toeplitz {
                out,
                vec,
                first_row,
                first_col,
                row,
                col,
            } => {
                let t = |t: &TensorId| *tensors.get(t).unwrap_or(t);
                Op::Toeplitz {
                    out: t(out),
                    vec: t(vec),
                    first_row: t(first_row),
                    first_col: t(first_col),
                    row: *row,
                    col: *col,
                }
            }
            Op::Loop {
                index,
                sweep,
                range,
                states,
                body,
                code,
            } => Op::Loop {
                index: *index,
                sweep: *sweep,
                range: *range,
                states: states.clone(),
                body: rename_ops(rw, body, vars, tensors),
                code: code.clone(),
            },
            Op::If { cond, then } => Op::If {
                cond: rw.rename(*cond, vars, tensors),
                then: rename_ops(rw, then, vars, tensors),
            },
            Op::Set { var, value } => Op::Set {
                var: *vars.get(var).unwrap_or(var),
                value: rw.rename(*value, vars, tensors),
            },
            Op::Store {
                tensor,
                index,
                value,
            } => Op::Store {
                tensor: *tensors.get(tensor).unwrap_or(tensor),
                index: index.clone(),
                value: rw.rename(*value, vars, tensors),
            },
        })
        .collect()
}

/// The identity of each twin state.
fn init_twins(rw: &mut Rewriter, states: &[AccState], twins: &[Vec<StateSlot>]) -> Vec<Op> {
    let mut ops = Vec::new();
    for (st, tw) in states.iter().zip(twins) {
        let ty = st.ty;
        for (k, slot) in tw.iter().enumerate() {
            let v = match (st.law, k) {
                (Law::Max, _) | (Law::TwoPass, 1) => f64::NEG_INFINITY,
                (Law::Min, _) => f64::INFINITY,
                _ => 0.0,
            };
            let c = rw.float(v, ty);
            ops.extend(slot.over(vec![slot.write(c)]));
        }
    }
    ops
}

/// `self ⊕= twin` for every state, dependents before the maxes they rescale
/// against (they read both maxes before those merge).
pub fn combine_ops(
    rw: &mut Rewriter,
    program: &mut Program,
    states: &[AccState],
    twins: &[Vec<StateSlot>],
) -> Vec<Op> {
    let mut ops = Vec::new();
    for (st, tw) in states.iter().zip(twins).rev() {
        let ty = st.ty;
        let one = rw.float(1.0, ty);
        // `factor(a, m)`: e^(a - m) (or 2^(a - m)), exactly 1 when a = m (also for -inf).
        let factor = |rw: &mut Rewriter, a: Handle<Node>, m: Handle<Node>, op: UnOp| {
            let same = rw.eq(a, m);
            let d = rw.bin(BinOp::Sub, a, m);
            let e = rw.un(op, d);
            rw.select(same, one, e)
        };
        match st.law {
            Law::Sum | Law::Max | Law::Min => {
                let op = match st.law {
                    Law::Sum => BinOp::Add,
                    Law::Max => BinOp::Max,
                    _ => BinOp::Min,
                };
                for (a, b) in st.slots.iter().zip(tw) {
                    let (x, y) = (a.read(rw, ty), b.read(rw, ty));
                    let v = rw.bin(op, x, y);
                    ops.extend(a.over(vec![a.write(v)]));
                }
            }
            Law::OnlineSum { max } => {
                let ma = states[max].slots[0].read(rw, ty);
                let mb = twins[max][0].read(rw, ty);
                let m = rw.bin(BinOp::Max, ma, mb);
                let fa = factor(rw, ma, m, UnOp::Exp);
                let fb = factor(rw, mb, m, UnOp::Exp);
                let (a, b) = (&st.slots[0], &tw[0]);
                let (x, y) = (a.read(rw, ty), b.read(rw, ty));
                let xa = rw.bin(BinOp::Mul, x, fa);
                let yb = rw.bin(BinOp::Mul, y, fb);
                let v = rw.bin(BinOp::Add, xa, yb);
                ops.extend(a.over(vec![a.write(v)]));
            }
            Law::TwoPass => {
                let ea = st.slots[1].read(rw, ty);
                let eb = tw[1].read(rw, ty);
                let e = rw.bin(BinOp::Max, ea, eb);
                let fa = factor(rw, ea, e, UnOp::Exp2);
                let fb = factor(rw, eb, e, UnOp::Exp2);
                let (a, b) = (&st.slots[0], &tw[0]);
                let (x, y) = (a.read(rw, ty), b.read(rw, ty));
                let xa = crate::rules::scale_keeping_nonfinite(rw, x, fa);
                let yb = crate::rules::scale_keeping_nonfinite(rw, y, fb);
                let v = rw.bin(BinOp::Add, xa, yb);
                ops.extend(a.over(vec![a.write(v)]));
                ops.push(st.slots[1].write(e));
            }
            Law::Welford => ops.extend(chan(rw, program, st, tw)),
            Law::None => {}
        }
    }
    ops
}

/// Chan's merge of Welford states `(N, mean, M2[, max |g|])`.
fn chan(rw: &mut Rewriter, program: &mut Program, st: &AccState, tw: &[StateSlot]) -> Vec<Op> {
    let ty = st.ty;
    let r = |rw: &mut Rewriter, s: &StateSlot| s.read(rw, ty);
    let (na, ma, qa) = (
        r(rw, &st.slots[0]),
        r(rw, &st.slots[1]),
        r(rw, &st.slots[2]),
    );
    let (nb, mb, qb) = (r(rw, &tw[0]), r(rw, &tw[1]), r(rw, &tw[2]));
    let n = rw.bin(BinOp::Add, na, nb);
    let delta = rw.bin(BinOp::Sub, mb, ma);
    let wb = rw.bin(BinOp::Div, nb, n);
    let step = rw.bin(BinOp::Mul, delta, wb);
    let mean = rw.bin(BinOp::Add, ma, step);
    let d2 = rw.bin(BinOp::Mul, delta, delta);
    let nanb = rw.bin(BinOp::Mul, na, nb);
    let w = rw.bin(BinOp::Div, nanb, n);
    let corr = rw.bin(BinOp::Mul, d2, w);
    let q = rw.bin(BinOp::Add, qa, qb);
    let q = rw.bin(BinOp::Add, q, corr);
    // An empty side changes nothing (and must not divide 0 by 0).
    let zero = rw.float(0.0, ty);
    let b_empty = rw.eq(nb, zero);
    let a_empty = rw.eq(na, zero);
    let mean = rw.select(a_empty, mb, mean);
    let mean = rw.select(b_empty, ma, mean);
    let q = rw.select(a_empty, qb, q);
    let q = rw.select(b_empty, qa, q);
    // Compute everything into temporaries before writing the state.
    let tmp: Vec<VarId> = (0..3)
        .map(|k| program.var(format!("merge{k}"), ty))
        .collect();
    let mut ops = vec![
        Op::Set {
            var: tmp[0],
            value: n,
        },
        Op::Set {
            var: tmp[1],
            value: mean,
        },
        Op::Set {
            var: tmp[2],
            value: q,
        },
    ];
    for (k, slot) in st.slots.iter().take(3).enumerate() {
        let v = rw.var(tmp[k], ty);
        ops.push(slot.write(v));
    }
    if let (Some(a), Some(b)) = (st.slots.get(3), tw.get(3)) {
        let (x, y) = (r(rw, a), r(rw, b));
        let v = rw.bin(BinOp::Max, x, y);
        ops.push(a.write(v));
    }
    ops
}
