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
//! taken relative to the max of everything seen.
//!
//! Welford sweeps (moments, `layer_norm`'s variance) are blocked the same
//! way ([`blocked_welford`]): per block, a plain sum gives the block's mean,
//! a second loop the sum of squared deviations from it (the two-pass
//! formula, within the block, from L1), and Chan's formula merges the
//! block's `(n, mean, M2)` into the sweep's state: one division per block
//! instead of one per element, and vector loops. The outer loop keeps the
//! sweep's states and laws (so it still splits across threads); the plan
//! text shows it as `[blocks of 1024]`.

use crate::arena::Handle;
use crate::ir::*;
use crate::lir::{AccState, Law, Op, Program, StateSlot, has_loop, sets_in as sets};
use crate::rules::Rewriter;
use crate::vector::LoopCode;
use std::collections::HashMap;

/// Elements per block: 4 KiB of `f32`, re-read from L1.
pub const BLOCK: u32 = 1024;

/// Rewrites every online sweep of `program` into blocks; returns how many.
///
/// The running maxes of `covered` (variables of maxes whose NaN another
/// reduction carries, [`crate::nancover`]) may pass over NaN, so their
/// blocks never skip terms: they take them against `max == -inf ? 0 : max`.
pub fn block_online_sweeps(
    rw: &mut Rewriter,
    program: &mut Program,
    covered: &std::collections::HashSet<VarId>,
) -> usize {
    rewrite_sweeps(rw, program, &mut |rw, program, e, states, body| {
        blocked(rw, program, e, states, body, covered)
            .or_else(|| blocked_welford(rw, program, e, states, body))
            .map(|body| (body, BLOCK))
    })
}

/// A rewrite of one sweep: from its index, states and body, the new body
/// and the step of its loop (`LoopCode::Blocks`), or `None`.
pub(crate) type SweepRewrite<'a> = dyn FnMut(&mut Rewriter, &mut Program, ExtentId, &[AccState], &[Op]) -> Option<(Vec<Op>, u32)>
    + 'a;

/// Applies `rewrite` to every plain sweep over a whole extent in
/// `program`, outermost first (a rewritten sweep is not entered); returns
/// how many it rewrote. Shared by [`block_online_sweeps`] and
/// `crate::jam::jam_online_sweeps`.
pub(crate) fn rewrite_sweeps(
    rw: &mut Rewriter,
    program: &mut Program,
    rewrite: &mut SweepRewrite<'_>,
) -> usize {
    let mut body = std::mem::take(&mut program.body);
    let n = rewrite_ops(rw, program, &mut body, rewrite);
    program.body = body;
    n
}

fn rewrite_ops(
    rw: &mut Rewriter,
    program: &mut Program,
    ops: &mut [Op],
    rewrite: &mut SweepRewrite<'_>,
) -> usize {
    let mut n = 0;
    for op in ops.iter_mut() {
        if let Op::Loop {
            index,
            sweep: true,
            range: None,
            states,
            body,
            code: LoopCode::Plain,
        } = op
            && let Some((new_body, step)) = rewrite(rw, program, *index, states, body)
        {
            *body = new_body;
            if let Op::Loop { code, .. } = op {
                *code = LoopCode::Blocks(step);
            }
            n += 1;
            continue;
        }
        match op {
            Op::Loop { body, .. } => n += rewrite_ops(rw, program, body, rewrite),
            Op::If { then, .. } => n += rewrite_ops(rw, program, then, rewrite),
            _ => {}
        }
    }
    n
}

/// `temps` (assignments) with every variable they set renamed to a fresh
/// `NAME.suffix`, and the renaming: each inner loop of a block gets
/// temporaries of its own, so they stay private to it (and vectorize).
fn fresh_temps(
    rw: &mut Rewriter,
    program: &mut Program,
    temps: &[Op],
    suffix: &str,
) -> (Vec<Op>, HashMap<VarId, VarId>) {
    let mut renamed = HashMap::new();
    let mut temp_vars = Vec::new();
    sets(temps, &mut temp_vars);
    for v in temp_vars {
        let var = program.vars[v.0 as usize].clone();
        let fresh = program.var(format!("{}.{suffix}", var.name), var.ty);
        renamed.insert(v, fresh);
    }
    let no_tensors = HashMap::new();
    let ops = temps
        .iter()
        .map(|op| match op {
            Op::Set { var, value } => Op::Set {
                var: renamed[var],
                value: rw.rename(*value, &renamed, &no_tensors),
            },
            other => other.clone(),
        })
        .collect();
    (ops, renamed)
}

/// The inner loops' range: `[i, min(i + BLOCK, len(i)))` at the block's
/// first index `i`.
pub(crate) fn block_range(
    rw: &mut Rewriter,
    e: ExtentId,
) -> (crate::arena::Handle<Node>, crate::arena::Handle<Node>) {
    let i32t = ScalarType::I32;
    let start = rw.add(Node::IndexValue(e), i32t);
    let size = rw.add(Node::ConstInt(BLOCK as i64), i32t);
    let past = rw.add(Node::Binary(BinOp::Add, start, size), i32t);
    let len = rw.add(Node::ExtentLen(e), i32t);
    let end = rw.add(Node::Binary(BinOp::Min, past, len), i32t);
    (start, end)
}

/// A sweep body of the running-max shape (what the exp-shift rule's
/// running max emits): temporaries only, one of them `new = max(acc, x)`
/// with `acc` a max state of the sweep; one `if new != acc { rescale }`;
/// then the terms. Shared by [`blocked`] and `crate::jam`.
pub(crate) struct RunningMax<'b> {
    /// Position of the `if` in the body.
    pub at_if: usize,
    /// Its condition and branch.
    pub cond: Handle<Node>,
    pub then: &'b [Op],
    /// The moved max and the running max.
    pub new: VarId,
    pub acc: VarId,
    /// The max's position among the sweep's states.
    pub max_at: usize,
    /// Position of `new = max(acc, x)` among the temporaries, its value
    /// and `x`.
    pub at_new: usize,
    pub new_value: Handle<Node>,
    pub x: Handle<Node>,
    /// The type of the max.
    pub ty: ScalarType,
    /// The states' variables.
    pub state_vars: Vec<VarId>,
}

/// The running-max shape of `body`, if it has it (no state is set before
/// the `if`; no top-k state).
pub(crate) fn running_max_shape<'b>(
    k: &Kernel,
    states: &[AccState],
    body: &'b [Op],
) -> Option<RunningMax<'b>> {
    let ifs: Vec<usize> = (0..body.len())
        .filter(|&i| matches!(body[i], Op::If { .. }))
        .collect();
    let [at_if] = ifs[..] else { return None };
    let Op::If { cond, then } = &body[at_if] else {
        return None;
    };
    let Node::Cmp(CmpOp::Ne, a, b) = k.nodes[*cond] else {
        return None;
    };
    let (Node::Var(new), Node::Var(acc)) = (&k.nodes[a], &k.nodes[b]) else {
        return None;
    };
    let (new, acc) = (*new, *acc);
    let max_at = states
        .iter()
        .position(|s| s.law == Law::Max && s.slots == [StateSlot::Var(acc)])?;
    if states.iter().any(|s| s.law == Law::None) {
        return None;
    }
    let pre = &body[..at_if];
    if !pre.iter().all(|op| matches!(op, Op::Set { .. })) {
        return None;
    }
    let state_vars: Vec<VarId> = states
        .iter()
        .flat_map(|s| &s.slots)
        .filter_map(|s| match s {
            StateSlot::Var(v) => Some(*v),
            StateSlot::Array(..) => None,
        })
        .collect();
    let mut set_before = Vec::new();
    sets(pre, &mut set_before);
    if set_before.iter().any(|v| state_vars.contains(v)) {
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
    Some(RunningMax {
        at_if,
        cond: *cond,
        then,
        new,
        acc,
        max_at,
        at_new,
        new_value: *value,
        x,
        ty: k.ty(*value),
        state_vars,
    })
}

/// The blocked body of one sweep, if it has the running-max shape.
fn blocked(
    rw: &mut Rewriter,
    program: &mut Program,
    e: ExtentId,
    states: &[AccState],
    body: &[Op],
    covered: &std::collections::HashSet<VarId>,
) -> Option<Vec<Op>> {
    let RunningMax {
        at_if: p,
        cond,
        then,
        new,
        acc,
        max_at,
        at_new,
        x,
        ty,
        ..
    } = running_max_shape(&rw.kernel, states, body)?;
    // Scalar states only, no inner loops.
    if states
        .iter()
        .any(|s| s.slots.iter().any(|x| matches!(x, StateSlot::Array(..))))
        || body.iter().any(has_loop)
    {
        return None;
    }
    let pre = &body[..p];
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
    let (mut first, renamed) = fresh_temps(rw, program, &temps, "blk");
    let x_first = rw.rename(x, &renamed, &HashMap::new());
    let block_max = rw.bin(BinOp::Max, blk_read, x_first);
    let neg_inf = rw.float(f64::NEG_INFINITY, ty);
    let acc_read = rw.var(acc, ty);
    let new_value = rw.bin(BinOp::Max, acc_read, blk_read);
    let (start, end) = block_range(rw, e);
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
    // Stores of other statements fused into the sweep must run on every
    // row, so a sweep with stores keeps its guards and runs unconditionally.
    fn stores(ops: &[Op]) -> bool {
        ops.iter().any(|op| match op {
            Op::Store { .. } | Op::Toeplitz { .. } => true,
            Op::Loop { body, .. } => stores(body),
            Op::If { then, .. } => stores(then),
            _ => false,
        })
    }
    // Likewise states that are not sums of terms against this max (a plain
    // sum fused into the same sweep) must see every block.
    let only_shifted = states
        .iter()
        .enumerate()
        .all(|(i, s)| i == max_at || matches!(s.law, Law::OnlineSum { max } if max == max_at));
    // A running max that may pass over NaN ([`crate::nancover`]) could be
    // `-inf` after a block of `-inf` and NaN: its blocks never skip, and
    // take their terms against `shift = max == -inf ? 0 : max`, which is
    // the max itself above `-inf`, and at `-inf` gives `exp(-inf - 0) = 0`
    // for the `-inf` terms and NaN for the NaN ones.
    let shift = covered.contains(&acc).then(|| {
        let name = format!("{}.shift", program.vars[acc.0 as usize].name);
        program.var(name, ty)
    });
    let guarded = shift.is_none() && only_shifted && !stores(&second);
    let guards = match shift {
        Some(shift) => shift_guards(rw, acc, shift, ty),
        None if guarded => unguard(rw, acc),
        None => HashMap::new(),
    };
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
    let second_loop = Op::Loop {
        index: e,
        sweep: true,
        range: Some((start, end)),
        states: inner_states,
        body: second,
        code: LoopCode::Plain,
    };
    let second_loop = if guarded {
        Op::If {
            cond: above,
            then: vec![second_loop],
        }
    } else {
        second_loop
    };
    let shift_set = shift.map(|shift| {
        let at_neg_inf = rw.add(Node::Cmp(CmpOp::Eq, acc_read, neg_inf), ScalarType::Bool);
        let zero = rw.float(0.0, ty);
        Op::Set {
            var: shift,
            value: rw.add(Node::Select(at_neg_inf, zero, acc_read), ty),
        }
    });
    let mut ops = vec![
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
            cond,
            then: then.to_vec(),
        },
    ];
    ops.extend(shift_set);
    ops.push(second_loop);
    Some(ops)
}

/// `select(q == -inf, 0, exp.nonpos(q - acc)) → exp.nonpos(q - shift)` for
/// every such node of the kernel.
fn shift_guards(
    rw: &mut Rewriter,
    acc: VarId,
    shift: VarId,
    ty: ScalarType,
) -> HashMap<crate::arena::Handle<Node>, crate::arena::Handle<Node>> {
    let guards = unguard(rw, acc);
    let shift_read = rw.var(shift, ty);
    guards
        .into_iter()
        .map(|(select, e)| {
            let Node::Unary(_, d) = rw.kernel.nodes[e] else {
                return (select, e);
            };
            let Node::Binary(BinOp::Sub, q, _) = rw.kernel.nodes[d] else {
                return (select, e);
            };
            let d = rw.bin(BinOp::Sub, q, shift_read);
            (select, rw.add(Node::Unary(UnOp::ExpNonPos, d), ty))
        })
        .collect()
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

/// The blocked body of a Welford sweep: see the module docs. Every op of
/// the body is an assignment; the other states are plain (sum, max, min).
fn blocked_welford(
    rw: &mut Rewriter,
    program: &mut Program,
    e: ExtentId,
    states: &[AccState],
    body: &[Op],
) -> Option<Vec<Op>> {
    let welfords: Vec<usize> = (0..states.len())
        .filter(|&s| states[s].law == Law::Welford)
        .collect();
    let [w] = welfords[..] else { return None };
    let plain = |s: &AccState| {
        matches!(s.law, Law::Sum | Law::Max | Law::Min | Law::Welford)
            && s.slots.iter().all(|x| matches!(x, StateSlot::Var(_)))
    };
    if !states.iter().all(plain) || !body.iter().all(|op| matches!(op, Op::Set { .. })) {
        return None;
    }
    let st = &states[w];
    let ty = st.ty;
    let slot_vars: Vec<VarId> = st
        .slots
        .iter()
        .filter_map(|s| match s {
            StateSlot::Var(v) => Some(*v),
            StateSlot::Array(..) => None,
        })
        .collect();
    let (n, mean) = (slot_vars[0], slot_vars[1]);
    let k = &rw.kernel;
    // `delta = g - mean` gives `g` and the delta variable.
    let (delta, g) = body.iter().find_map(|op| match op {
        Op::Set { var, value } => match k.nodes[*value] {
            Node::Binary(BinOp::Sub, g, m)
                if k.nodes[m] == Node::Var(mean) && !slot_vars.contains(var) =>
            {
                Some((*var, g))
            }
            _ => None,
        },
        _ => None,
    })?;
    let _ = n;
    let state_vars: Vec<VarId> = states
        .iter()
        .flat_map(|s| &s.slots)
        .filter_map(|s| match s {
            StateSlot::Var(v) => Some(*v),
            StateSlot::Array(..) => None,
        })
        .collect();
    let welford_var = |v: &VarId| slot_vars.contains(v) || *v == delta;
    // `g` must not read the Welford state.
    if crate::fuse::subtree(k, g)
        .iter()
        .any(|h| matches!(k.nodes[*h], Node::Var(v) if welford_var(&v)))
    {
        return None;
    }
    let temps: Vec<Op> = body
        .iter()
        .filter(|op| matches!(op, Op::Set { var, .. } if !state_vars.contains(var) && !welford_var(var)))
        .cloned()
        .collect();
    // Loop 1: everything but the Welford update, plus the block's sum (and
    // largest |g| when the state tracks it).
    let bsum = program.var(format!("{}.bsum", program.vars[mean.0 as usize].name), ty);
    let bsum_read = rw.var(bsum, ty);
    let zero = rw.float(0.0, ty);
    // A plain sum of the same `g` (layer_norm's mean) adds the block's sum
    // once per block instead of `g` per element.
    let k = &rw.kernel;
    let sums_of_g: Vec<VarId> = states
        .iter()
        .filter(|s| s.law == Law::Sum && s.slots.len() == 1)
        .filter_map(|s| match s.slots[0] {
            StateSlot::Var(v) => Some(v),
            StateSlot::Array(..) => None,
        })
        .filter(|v| {
            body.iter().any(|op| {
                matches!(op, Op::Set { var, value } if var == v
                && matches!(k.nodes[*value], Node::Binary(BinOp::Add, a, b)
                    if k.nodes[a] == Node::Var(*v) && b == g))
            })
        })
        .collect();
    let mut first: Vec<Op> = body
        .iter()
        .filter(
            |op| matches!(op, Op::Set { var, .. } if !welford_var(var) && !sums_of_g.contains(var)),
        )
        .cloned()
        .collect();
    let sum = rw.bin(BinOp::Add, bsum_read, g);
    first.push(Op::Set {
        var: bsum,
        value: sum,
    });
    let mut first_states: Vec<AccState> = states
        .iter()
        .enumerate()
        .filter(|(s, st)| {
            *s != w && !matches!(st.slots[..], [StateSlot::Var(v)] if sums_of_g.contains(&v))
        })
        .map(|(_, s)| s.clone())
        .collect();
    first_states.push(AccState {
        describe: "the block's sum".into(),
        slots: vec![StateSlot::Var(bsum)],
        law: Law::Sum,
        ty,
    });
    let mut init = vec![Op::Set {
        var: bsum,
        value: zero,
    }];
    let babs = (slot_vars.len() == 4).then(|| {
        let v = program.var(format!("{}.babs", program.vars[mean.0 as usize].name), ty);
        let read = rw.var(v, ty);
        let abs = rw.un(UnOp::Abs, g);
        let next = rw.bin(BinOp::Max, read, abs);
        first.push(Op::Set {
            var: v,
            value: next,
        });
        first_states.push(AccState {
            describe: "the block's largest |g|".into(),
            slots: vec![StateSlot::Var(v)],
            law: Law::Max,
            ty,
        });
        init.push(Op::Set {
            var: v,
            value: zero,
        });
        v
    });
    // The block's count and mean.
    let i32t = ScalarType::I32;
    let (start, end) = block_range(rw, e);
    let count = rw.add(Node::Binary(BinOp::Sub, end, start), i32t);
    let count = rw.add(Node::Cast(ty, count), ty);
    let name = program.vars[mean.0 as usize].name.clone();
    let bn = program.var(format!("{name}.bn"), ty);
    let bmean = program.var(format!("{name}.bmean"), ty);
    let bm2 = program.var(format!("{name}.bm2"), ty);
    let bmean_value = rw.bin(BinOp::Div, bsum_read, count);
    // Loop 2: the squared deviations from the block's mean, with
    // temporaries of its own.
    let (mut second, renamed) = fresh_temps(rw, program, &temps, "dev");
    let g2 = rw.rename(g, &renamed, &HashMap::new());
    let bmean_read = rw.var(bmean, ty);
    let bm2_read = rw.var(bm2, ty);
    let dev = rw.bin(BinOp::Sub, g2, bmean_read);
    let sq = rw.bin(BinOp::Mul, dev, dev);
    let next = rw.bin(BinOp::Add, bm2_read, sq);
    second.push(Op::Set {
        var: bm2,
        value: next,
    });
    let mut twin = vec![
        StateSlot::Var(bn),
        StateSlot::Var(bmean),
        StateSlot::Var(bm2),
    ];
    twin.extend(babs.map(StateSlot::Var));
    let merge = crate::split::combine_ops(rw, program, std::slice::from_ref(st), &[twin]);
    let mut ops = init;
    ops.push(Op::Loop {
        index: e,
        sweep: true,
        range: Some((start, end)),
        states: first_states,
        body: first,
        code: LoopCode::Plain,
    });
    for &v in &sums_of_g {
        let read = rw.var(v, ty);
        let next = rw.bin(BinOp::Add, read, bsum_read);
        ops.push(Op::Set {
            var: v,
            value: next,
        });
    }
    for (var, value) in [(bn, count), (bmean, bmean_value), (bm2, zero)] {
        ops.push(Op::Set { var, value });
    }
    ops.push(Op::Loop {
        index: e,
        sweep: true,
        range: Some((start, end)),
        states: vec![AccState {
            describe: "the block's squared deviations".into(),
            slots: vec![StateSlot::Var(bm2)],
            law: Law::Sum,
            ty,
        }],
        body: second,
        code: LoopCode::Plain,
    });
    ops.extend(merge);
    Some(ops)
}
