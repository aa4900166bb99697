//! Splitting one row across threads by the accumulators' combine laws.
//!
//! [`split_row`] turns a plan into a program that `T` threads run at once,
//! each with its own index `t` (the hidden parameters `#thread` and
//! `#threads`): every sweep over the reduced index runs on the thread's
//! chunk of the row into private partial states; each thread publishes its
//! partial states to a scratch slot of its own; after a [`Op::Barrier`]
//! every thread merges all `T` partial states in thread order with the
//! states' laws (the same [`combine_ops`] that merge vector lanes), so all
//! threads hold the same merged state; after a second barrier the slots may
//! be reused. Loops over the reduced index without states (output sweeps)
//! run on the thread's chunk; stores of per-row values are made by thread 0
//! and followed by a barrier before anything reads them.
//!
//! The result is deterministic for a given `T` (the merge order is fixed)
//! but differs from other thread counts by rounding (sums are regrouped).
//! With `T = 1` it computes exactly what the plan computes.
//!
//! Only plans of this shape are split: loops over rows around a body of
//! assignments, stores of per-row values, loops over other indices, and
//! sweeps over one index whose states have a combine law. A vector-valued
//! state (attention's `o.acc[e]`, the weighted sum of value rows) lives in a
//! scratch tensor of which every thread gets its own copy
//! ([`SplitRow::private`]); loops inside a sweep may write only such
//! copies, and it merges through a slot row per thread like the others:
//! this is the flash-decoding split of attention's keys, derived from the
//! running-max law rather than written for attention. Loops over other
//! indices that write anything else (per-row outputs) run on thread 0 after
//! the merge. Anything else (top-k states, gathers, several swept indices)
//! keeps rows-only parallelism, and [`split_row`] says why.

use crate::arena::Handle;
use crate::ir::*;
use crate::lir::{AccState, Law, Op, StateSlot};
use crate::plan::Plan;
use crate::rules::Rewriter;
use crate::split::combine_ops;

/// A plan split across threads.
#[derive(Debug, Clone)]
pub struct SplitRow {
    /// The program, over a kernel with the hidden parameters and scratch.
    pub plan: Plan,
    /// `#thread`: this thread's index, `0..T`.
    pub thread: ParamId,
    /// `#threads`: `T`.
    pub threads: ParamId,
    /// The extent `#t` of the scratch slots (bind it to `T`).
    pub slots: ExtentId,
    /// The index split across threads.
    pub index: ExtentId,
    /// Scratch tensors each thread needs a copy of: the vector-valued
    /// partial states (attention's `o.acc[e]`), merged like the others.
    pub private: Vec<TensorId>,
}

/// Splits `plan`'s rows across threads; see the module docs.
pub fn split_row(plan: &Plan) -> Result<SplitRow, String> {
    if plan.kernel.nodes.iter().any(|(_, n)| {
        matches!(n, Node::Load { index, .. } if index.iter().any(|i| matches!(i, Index::Gather(_))))
    }) {
        return Err("a gathered load (its error exit would leave other threads waiting)".into());
    }
    let e = swept_index(plan)?;
    let mut kernel = plan.kernel.clone();
    kernel.params.push(Param {
        name: "#thread".into(),
        ty: ScalarType::I32,
    });
    let thread = ParamId(kernel.params.len() as u32 - 1);
    kernel.params.push(Param {
        name: "#threads".into(),
        ty: ScalarType::I32,
    });
    let threads = ParamId(kernel.params.len() as u32 - 1);
    kernel.extents.push(Extent { name: "#t".into() });
    let slots = ExtentId(kernel.extents.len() as u32 - 1);
    let mut rw = Rewriter::new(&kernel);
    let mut program = plan.program.clone();
    // The row body: the ops inside the loops over rows.
    let mut path = Vec::new();
    {
        let mut ops = &program.body;
        loop {
            match ops.as_slice() {
                [
                    Op::Loop {
                        index,
                        states,
                        body,
                        range: None,
                        ..
                    },
                ] if *index != e && states.is_empty() => {
                    path.push(*index);
                    ops = body;
                }
                _ => break,
            }
        }
    }
    let mut body = std::mem::take(row_body(&mut program.body, path.len()));
    // Vector-valued states live in scratch tensors; each thread keeps its own.
    let mut private = Vec::new();
    for op in &body {
        if let Op::Loop { index, states, .. } = op
            && *index == e
        {
            for st in states {
                for slot in &st.slots {
                    if let StateSlot::Array(t, _) = slot
                        && !private.contains(t)
                    {
                        private.push(*t);
                    }
                }
            }
        }
    }
    // Chunk bounds: t·q + min(t, r) with q = len / T, r = len - q·T.
    let i32t = ScalarType::I32;
    let len = rw.add(Node::ExtentLen(e), i32t);
    let t = rw.add(Node::Param(thread), i32t);
    let tt = rw.add(Node::Param(threads), i32t);
    let one = rw.add(Node::ConstInt(1), i32t);
    let q = rw.add(Node::Binary(BinOp::Div, len, tt), i32t);
    let qt = rw.add(Node::Binary(BinOp::Mul, q, tt), i32t);
    let r = rw.add(Node::Binary(BinOp::Sub, len, qt), i32t);
    let bound = |rw: &mut Rewriter, t: Handle<Node>| {
        let a = rw.add(Node::Binary(BinOp::Mul, t, q), i32t);
        let b = rw.add(Node::Binary(BinOp::Min, t, r), i32t);
        rw.add(Node::Binary(BinOp::Add, a, b), i32t)
    };
    let lo = bound(&mut rw, t);
    let t1 = rw.add(Node::Binary(BinOp::Add, t, one), i32t);
    let hi = bound(&mut rw, t1);
    let zero = rw.add(Node::ConstInt(0), i32t);
    let is_first = rw.add(Node::Cmp(CmpOp::Eq, t, zero), ScalarType::Bool);
    let slot_index = rw.add(Node::IndexValue(slots), i32t);
    let mine = rw.add(Node::Cmp(CmpOp::Eq, slot_index, t), ScalarType::Bool);

    let mut out = Vec::new();
    let mut pending_stores = Vec::new();
    let flush = |out: &mut Vec<Op>, pending: &mut Vec<Op>| {
        if !pending.is_empty() {
            out.push(Op::If {
                cond: is_first,
                then: std::mem::take(pending),
            });
            out.push(Op::Barrier);
        }
    };
    for op in body.drain(..) {
        match op {
            Op::Set { .. } => {
                flush(&mut out, &mut pending_stores);
                out.push(op);
            }
            Op::Store { ref index, .. } => {
                if index.contains(&e) {
                    return Err("a store over the reduced index outside its sweep".into());
                }
                pending_stores.push(op);
            }
            Op::Loop {
                index,
                sweep,
                range: None,
                states,
                body: inner,
                code,
            } if index == e => {
                flush(&mut out, &mut pending_stores);
                let mut inner = inner;
                if matches!(code, crate::vector::LoopCode::Blocks(_)) {
                    // Blocks end at the chunk's end, not the row's.
                    let mut to_chunk = std::collections::HashMap::new();
                    to_chunk.insert(len, hi);
                    chunk_blocks(&mut rw, &mut inner, e, &to_chunk, &private)?;
                } else if !inner_loops_private(&inner, e, &private) {
                    return Err("a loop inside a sweep that writes shared memory".into());
                }
                if !stores_at(&inner, e, &private) {
                    return Err("a store inside a sweep that is not at the swept index".into());
                }
                out.push(Op::Loop {
                    index,
                    sweep,
                    range: Some((lo, hi)),
                    states: states.clone(),
                    body: inner,
                    code,
                });
                if !states.is_empty() {
                    out.extend(merge_states(&mut rw, &mut program, &states, slots, mine)?);
                }
            }
            Op::Loop {
                index, ref body, ..
            } if index != e && !mentions(body, e) => {
                if writes_only(std::slice::from_ref(&op), &private) {
                    // Initializes this thread's own copy of a state.
                    flush(&mut out, &mut pending_stores);
                    out.push(op);
                } else if writes_any(std::slice::from_ref(&op), &private) {
                    // Thread 0 alone would update its own copy only.
                    return Err("a loop that writes both private state and shared memory".into());
                } else {
                    // Per-row results (attention's `o[h, i, e]`): every thread
                    // holds the same merged states, thread 0 stores.
                    pending_stores.push(op);
                }
            }
            Op::Loop { .. } => return Err("a loop over another index in the row".into()),
            Op::If { .. } => return Err("a condition outside the sweeps".into()),
            Op::Barrier => out.push(op),
            Op::Toeplitz { .. } => return Err("a Toeplitz product".into()),
        }
    }
    flush(&mut out, &mut pending_stores);
    *row_body(&mut program.body, path.len()) = out;
    let kernel = rw.finish();
    Ok(SplitRow {
        plan: Plan {
            kernel,
            program,
            ..plan.clone()
        },
        thread,
        threads,
        slots,
        index: e,
        private,
    })
}

/// The index the row's sweeps run over: the one index of its loops marked
/// as sweeps (an index reduced only inside a value, such as attention's
/// `sum[c]`, is not split).
fn swept_index(plan: &Plan) -> Result<ExtentId, String> {
    fn find(ops: &[Op], found: &mut Vec<ExtentId>) {
        for op in ops {
            match op {
                Op::Loop {
                    index, sweep, body, ..
                } => {
                    if *sweep {
                        if !found.contains(index) {
                            found.push(*index);
                        }
                    } else {
                        find(body, found);
                    }
                }
                Op::If { then, .. } => find(then, found),
                _ => {}
            }
        }
    }
    let mut found = Vec::new();
    find(&plan.program.body, &mut found);
    // A sweep over an index no reduction crosses is a map: rows cover it.
    found.retain(|e| plan.reduced.contains(e));
    match found.as_slice() {
        [e] => Ok(*e),
        [] if plan.reduced.len() == 1 => Ok(plan.reduced[0]),
        _ => Err("not exactly one swept index".into()),
    }
}

/// Whether `ops` store only to `private` tensors (and hold no barrier or
/// Toeplitz product).
fn writes_only(ops: &[Op], private: &[TensorId]) -> bool {
    ops.iter().all(|op| match op {
        Op::Store { tensor, .. } => private.contains(tensor),
        Op::If { then, .. } => writes_only(then, private),
        Op::Loop { body, .. } => writes_only(body, private),
        Op::Set { .. } => true,
        Op::Barrier | Op::Toeplitz { .. } => false,
    })
}

/// Whether `ops` store to any of `private`.
fn writes_any(ops: &[Op], private: &[TensorId]) -> bool {
    ops.iter().any(|op| match op {
        Op::Store { tensor, .. } => private.contains(tensor),
        Op::If { then, .. } => writes_any(then, private),
        Op::Loop { body, .. } => writes_any(body, private),
        _ => false,
    })
}

/// Whether every loop inside a sweep over `e` is over another index and
/// writes only private state.
fn inner_loops_private(ops: &[Op], e: ExtentId, private: &[TensorId]) -> bool {
    ops.iter().all(|op| match op {
        Op::Loop { index, body, .. } => *index != e && writes_only(body, private),
        Op::If { then, .. } => inner_loops_private(then, e, private),
        _ => true,
    })
}

/// Whether `ops` read or write anything at index `e` (loads, stores and
/// index values in their values are checked by the caller's kernel; this
/// looks at loop and store indices).
fn mentions(ops: &[Op], e: ExtentId) -> bool {
    ops.iter().any(|op| match op {
        Op::Store { index, .. } => index.contains(&e),
        Op::If { then, .. } => mentions(then, e),
        Op::Loop { index, body, .. } => *index == e || mentions(body, e),
        _ => false,
    })
}

fn row_body(ops: &mut Vec<Op>, depth: usize) -> &mut Vec<Op> {
    if depth == 0 {
        return ops;
    }
    match ops.first_mut() {
        Some(Op::Loop { body, .. }) => row_body(body, depth - 1),
        _ => unreachable!("the path was read from these loops"),
    }
}

fn stores_at(ops: &[Op], e: ExtentId, private: &[TensorId]) -> bool {
    ops.iter().all(|op| match op {
        Op::Store { index, tensor, .. } => index.contains(&e) || private.contains(tensor),
        Op::If { then, .. } => stores_at(then, e, private),
        Op::Loop { body, .. } => stores_at(body, e, private),
        _ => true,
    })
}

/// The inner loops of a blocked sweep (`crate::block`), their ranges ending
/// at the chunk's end, and every value that reads a block's end (a blocked
/// Welford sweep's count) reading the new end; any other inner loop is
/// refused.
fn chunk_blocks(
    rw: &mut Rewriter,
    ops: &mut [Op],
    e: ExtentId,
    to_chunk: &std::collections::HashMap<Handle<Node>, Handle<Node>>,
    private: &[TensorId],
) -> Result<(), String> {
    let mut ends = std::collections::HashMap::new();
    chunk_ranges(rw, ops, e, to_chunk, &mut ends, private)?;
    rw.replace_in_ops(ops, &ends);
    Ok(())
}

fn chunk_ranges(
    rw: &mut Rewriter,
    ops: &mut [Op],
    e: ExtentId,
    to_chunk: &std::collections::HashMap<Handle<Node>, Handle<Node>>,
    ends: &mut std::collections::HashMap<Handle<Node>, Handle<Node>>,
    private: &[TensorId],
) -> Result<(), String> {
    for op in ops {
        match op {
            // A block's loop over the swept index (its inner loops, as in
            // a grouped sweep's tail, only update private state).
            Op::Loop {
                index,
                range: Some((_, end)),
                body,
                ..
            } if *index == e && inner_loops_private(body, e, private) => {
                let new = rw.replace(*end, to_chunk);
                ends.insert(*end, new);
                *end = new;
            }
            // An update of private state (a grouped sweep's, `crate::jam`).
            Op::Loop { index, body, .. } if *index != e && writes_only(body, private) => {}
            Op::Loop { .. } => return Err("a loop inside a sweep".into()),
            Op::If { then, .. } => chunk_ranges(rw, then, e, to_chunk, ends, private)?,
            _ => {}
        }
    }
    Ok(())
}

/// Publish each state to this thread's slot, wait, merge all slots in
/// thread order into every thread's state, wait.
fn merge_states(
    rw: &mut Rewriter,
    program: &mut crate::lir::Program,
    states: &[AccState],
    slots: ExtentId,
    mine: Handle<Node>,
) -> Result<Vec<Op>, String> {
    let mut publish = Vec::new();
    let mut load_twins = Vec::new();
    let mut reset = Vec::new();
    let mut twins = Vec::new();
    for st in states {
        if st.law == Law::None {
            return Err("a state without a combine law (top-k)".into());
        }
        let mut tw = Vec::new();
        for (k, slot) in st.slots.iter().enumerate() {
            let identity = match (st.law, k) {
                (Law::Max, _) | (Law::TwoPass, 1) => f64::NEG_INFINITY,
                (Law::Min, _) => f64::INFINITY,
                _ => 0.0,
            };
            let v = match slot {
                StateSlot::Var(v) => v,
                StateSlot::Array(t, idx) => {
                    // `part[#t, idx..]`: this thread's copy published at its slot.
                    let src = rw.kernel.tensor(*t).clone();
                    let mut dims = vec![Dim(Affine::var(slots))];
                    dims.extend(src.dims.iter().cloned());
                    rw.kernel.tensors.push(Tensor {
                        name: format!("{}.part", src.name),
                        kind: TensorKind::Temp,
                        ty: st.ty,
                        dims,
                        pad: None,
                    });
                    let part = TensorId(rw.kernel.tensors.len() as u32 - 1);
                    let mut part_idx = vec![slots];
                    part_idx.extend(idx.iter().copied());
                    let value = slot.read(rw, st.ty);
                    publish.extend(slot.over(vec![Op::Store {
                        tensor: part,
                        index: part_idx.clone(),
                        value,
                    }]));
                    let c = rw.float(identity, st.ty);
                    reset.extend(slot.over(vec![slot.write(c)]));
                    tw.push(StateSlot::Array(part, part_idx));
                    continue;
                }
            };
            let name = format!("{}.part", program.vars[v.0 as usize].name);
            rw.kernel.tensors.push(Tensor {
                name: name.clone(),
                kind: TensorKind::Temp,
                ty: st.ty,
                dims: vec![Dim(Affine::var(slots))],
                pad: None,
            });
            let part = TensorId(rw.kernel.tensors.len() as u32 - 1);
            let value = rw.var(*v, st.ty);
            publish.push(Op::Store {
                tensor: part,
                index: vec![slots],
                value,
            });
            let twin = program.var(format!("{name}.twin"), st.ty);
            let load = rw.add(
                Node::Load {
                    tensor: part,
                    index: vec![Index::Affine(Affine::var(slots))],
                },
                st.ty,
            );
            load_twins.push(Op::Set {
                var: twin,
                value: load,
            });
            let c = rw.float(identity, st.ty);
            reset.push(Op::Set { var: *v, value: c });
            tw.push(StateSlot::Var(twin));
        }
        twins.push(tw);
    }
    let merge = combine_ops(rw, program, states, &twins);
    let mut merge_body = load_twins;
    merge_body.extend(merge);
    let mut ops = vec![Op::Loop {
        index: slots,
        sweep: false,
        range: None,
        states: Vec::new(),
        body: vec![Op::If {
            cond: mine,
            then: publish,
        }],
        code: Default::default(),
    }];
    ops.push(Op::Barrier);
    ops.extend(reset);
    ops.push(Op::Loop {
        index: slots,
        sweep: false,
        range: None,
        states: Vec::new(),
        body: merge_body,
        code: Default::default(),
    });
    ops.push(Op::Barrier);
    Ok(ops)
}
