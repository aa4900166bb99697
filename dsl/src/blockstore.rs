//! Blocked stores: an exp-shifted sum's terms stored during the running
//! max's sweep and rescaled per block in the output sweep.
//!
//! The running-max form of softmax reads the row twice: the blocked sweep
//! (block max, then the block's terms `exp(x - M)` against the running max
//! `M`) and an output sweep that computes `exp(x - m)` again against the
//! final max `m`. The reload form computes each `exp` once but reads the
//! row three times (max; terms stored and summed; scaling). By the same
//! separable factor the running max uses, `exp(x - m) = exp(x - M_k) ·
//! exp(M_k - m)` with `M_k` the running max while block `k` was summed, so:
//!
//! - the blocked sweep also stores each term `exp(x - M_k)` into the output
//!   (its guarded value: 0 while the max is `-inf`), and then `M_k` itself
//!   into the output at the block's first element;
//! - the output sweep runs over the same blocks: it reads `M_k` back, takes
//!   `f = exp(M_k - m)`, computes the block's first element exactly as
//!   before (overwriting `M_k`), and the rest of the block with the stored
//!   term times `f` in place of `exp(x - m)`.
//!
//! One `exp` per element and the row read from memory once: the output
//! sweep reads and writes only the output. The blocks of both sweeps start
//! at the same places (the row's start, or a thread's chunk's start in a
//! split row, `crate::threads`), which the rescaling relies on.
//!
//! Special values: a block summed while the max was `-inf` stored zeros
//! and `M_k = -inf`, so `f = exp(-inf - m)` is 0 for a finite `m` (and NaN
//! when `m` is `-inf` too, as `exp(x - m)` is); a NaN or `+inf` anywhere
//! makes the sum NaN, so every output is NaN, as in the other forms.

use crate::arena::Handle;
use crate::block::BLOCK;
use crate::ir::*;
use crate::lir::{Law, Op, Program, StateSlot};
use crate::rules::Rewriter;
use crate::vector::LoopCode;
use std::collections::HashMap;

/// What [`store_terms`] did to a row body, for [`rescale_output`].
#[derive(Debug, Clone)]
pub struct Pending {
    /// The path of loop indices to the row body.
    path: Vec<ExtentId>,
    /// Positions of the sweep and of the output loop in the row body.
    sweep: usize,
    output: usize,
    /// The output tensor and its subscripts.
    tensor: TensorId,
    index: Vec<ExtentId>,
    /// The running max of the sweep.
    acc: VarId,
    /// `exp(q - w)` in the output loop, and `w` (the final max).
    term: Handle<Node>,
    shift: Handle<Node>,
}

/// Before blocking: in the first row body with an online sweep over `e`
/// (a max state and sums rescaled to it) followed by an output loop over
/// `e` whose stored value reads `exp.nonpos(q - w)`, with `q` the max's
/// argument and `w` a variable holding the max read back, adds the store of
/// the sweep's term to the output. Returns what [`rescale_output`] needs.
pub fn store_terms(rw: &mut Rewriter, program: &mut Program) -> Option<Pending> {
    let mut path = Vec::new();
    let mut ops = &mut program.body;
    loop {
        // Descend through single loops over rows.
        let descend = matches!(ops.as_slice(), [Op::Loop { states, range: None, sweep: false, .. }] if states.is_empty());
        if !descend {
            break;
        }
        let Op::Loop { index, body, .. } = &mut ops[0] else {
            return None;
        };
        path.push(*index);
        ops = body;
    }
    let k = &rw.kernel;
    for s in 0..ops.len() {
        let Op::Loop {
            index: e,
            sweep: true,
            range: None,
            states,
            body,
            code: LoopCode::Plain,
        } = &ops[s]
        else {
            continue;
        };
        let e = *e;
        let Some(max_at) = states.iter().position(|st| st.law == Law::Max) else {
            continue;
        };
        let [StateSlot::Var(acc)] = states[max_at].slots[..] else {
            continue;
        };
        // The term: `t = select(a == -inf, 0, exp.nonpos(a - acc))` or
        // `exp.nonpos(a - acc)`, `a` set from the max's argument `q`.
        let mut found = None;
        for (at, op) in body.iter().enumerate() {
            let Op::Set { var, value } = op else { continue };
            let exp = match k.nodes[*value] {
                Node::Select(_, _, x) => x,
                _ => *value,
            };
            let Node::Unary(UnOp::ExpNonPos, d) = k.nodes[exp] else {
                continue;
            };
            let Node::Binary(BinOp::Sub, a, m) = k.nodes[d] else {
                continue;
            };
            if k.nodes[m] != Node::Var(acc) {
                continue;
            }
            let Node::Var(av) = k.nodes[a] else { continue };
            let q = body.iter().find_map(|op| match op {
                Op::Set { var, value } if *var == av => Some(*value),
                _ => None,
            })?;
            found = Some((at, *var, q));
            break;
        }
        let Some((at, term_var, q)) = found else {
            continue;
        };
        // The output loop: stores of one tensor at the row's and `e`'s
        // indices whose value reads `exp.nonpos(q - w)`.
        for o in s + 1..ops.len() {
            let Op::Loop {
                index,
                range: None,
                states,
                body: ob,
                code: LoopCode::Plain,
                ..
            } = &ops[o]
            else {
                continue;
            };
            if *index != e || !states.is_empty() || ob.iter().any(crate::lir::has_loop) {
                continue;
            }
            let stores: Vec<(TensorId, &Vec<ExtentId>, Handle<Node>)> = ob
                .iter()
                .filter_map(|op| match op {
                    Op::Store {
                        tensor,
                        index,
                        value,
                    } => Some((*tensor, index, *value)),
                    _ => None,
                })
                .collect();
            let [(tensor, index, value)] = stores[..] else {
                continue;
            };
            let t = k.tensor(tensor);
            let plain = t.pad.is_none()
                && t.kind == TensorKind::Output
                && index.len() == t.dims.len()
                && index.last() == Some(&e)
                && index[..index.len() - 1].iter().all(|x| path.contains(x))
                && t.dims
                    .iter()
                    .zip(index)
                    .all(|(d, x)| d.0.as_var() == Some(*x));
            if !plain {
                continue;
            }
            let Some((term, shift)) = find_term(k, value, q, ob) else {
                continue;
            };
            // The output must not be read elsewhere in the row body.
            if reads(k, ops, tensor) {
                continue;
            }
            let index = index.clone();
            let ty = k.ty(term);
            if ty != t.ty {
                continue;
            }
            let store = Op::Store {
                tensor,
                index: index.clone(),
                value: rw.var(term_var, ty),
            };
            let Op::Loop { body, .. } = &mut ops[s] else {
                return None;
            };
            body.insert(at + 1, store);
            return Some(Pending {
                path,
                sweep: s,
                output: o,
                tensor,
                index,
                acc,
                term,
                shift,
            });
        }
    }
    None
}

/// `(exp.nonpos(q - w), w)` among the nodes of `value`, with `w` a variable
/// set outside the loop body `ob`.
fn find_term(
    k: &Kernel,
    value: Handle<Node>,
    q: Handle<Node>,
    ob: &[Op],
) -> Option<(Handle<Node>, Handle<Node>)> {
    let mut stack = vec![value];
    while let Some(h) = stack.pop() {
        if let Node::Unary(UnOp::ExpNonPos, d) = k.nodes[h]
            && let Node::Binary(BinOp::Sub, a, w) = k.nodes[d]
            && a == q
            && let Node::Var(v) = k.nodes[w]
        {
            let set_inside = ob
                .iter()
                .any(|op| matches!(op, Op::Set { var, .. } if *var == v));
            if !set_inside {
                return Some((h, w));
            }
        }
        stack.extend(k.nodes[h].operands());
    }
    None
}

/// Whether `ops` load `tensor` anywhere.
fn reads(k: &Kernel, ops: &[Op], tensor: TensorId) -> bool {
    let mut roots = Vec::new();
    crate::lir::value_roots(ops, &mut roots);
    let mut stack = roots;
    let mut seen = vec![false; k.nodes.len()];
    while let Some(h) = stack.pop() {
        if std::mem::replace(&mut seen[h.index()], true) {
            continue;
        }
        if let Node::Load { tensor: t, .. } = &k.nodes[h]
            && *t == tensor
        {
            return true;
        }
        stack.extend(k.nodes[h].operands());
    }
    false
}

/// After blocking: finishes what [`store_terms`] started when the sweep was
/// blocked (stores `M_k` at each block's first element, runs the output
/// loop over the same blocks with the stored terms); otherwise removes the
/// term store again. Returns the rule's text when it applied.
pub fn rescale_output(rw: &mut Rewriter, program: &mut Program, p: Pending) -> Option<String> {
    let name = rw.kernel.tensor(p.tensor).name.clone();
    let ty = rw.kernel.ty(p.term);
    let f = program.var(format!("{name}.rescale"), ty);
    let mut ops = &mut program.body;
    for _ in &p.path {
        let Op::Loop { body, .. } = &mut ops[0] else {
            return None;
        };
        ops = body;
    }
    let blocked =
        matches!(&ops[p.sweep], Op::Loop { code: LoopCode::Blocks(n), .. } if *n == BLOCK);
    if !blocked {
        // Per-element running maxima cannot be rescaled per block: undo.
        if let Op::Loop { body, .. } = &mut ops[p.sweep] {
            remove_store(body, p.tensor);
        }
        return None;
    }
    let e = *p.index.last()?;
    // `M_k` at the block's first element.
    let acc = rw.var(p.acc, ty);
    if let Op::Loop { body, .. } = &mut ops[p.sweep] {
        body.push(Op::Store {
            tensor: p.tensor,
            index: p.index.clone(),
            value: acc,
        });
    }
    // The output loop over the same blocks.
    let Op::Loop {
        index,
        sweep,
        states,
        body: ob,
        ..
    } = ops[p.output].clone()
    else {
        return None;
    };
    let stored = rw.add(
        Node::Load {
            tensor: p.tensor,
            index: p
                .index
                .iter()
                .map(|x| Index::Affine(Affine::var(*x)))
                .collect(),
        },
        ty,
    );
    let factor_arg = rw.bin(BinOp::Sub, stored, p.shift);
    let factor_value = rw.un(UnOp::ExpNonPos, factor_arg);
    let f_read = rw.var(f, ty);
    let rescaled = rw.bin(BinOp::Mul, stored, f_read);
    let mut inner = ob.clone();
    rw.replace_in_ops(&mut inner, &HashMap::from([(p.term, rescaled)]));
    // The block after its first element.
    let (first, end) = crate::block::block_range(rw, e);
    let one = rw.add(Node::ConstInt(1), ScalarType::I32);
    let start = rw.add(Node::Binary(BinOp::Add, first, one), ScalarType::I32);
    let mut body = vec![Op::Set {
        var: f,
        value: factor_value,
    }];
    body.extend(ob);
    body.push(Op::Loop {
        index,
        sweep,
        range: Some((start, end)),
        states: states.clone(),
        body: inner,
        code: LoopCode::Plain,
    });
    ops[p.output] = Op::Loop {
        index,
        sweep,
        range: None,
        states,
        body,
        code: LoopCode::Blocks(BLOCK),
    };
    Some(format!(
        "blocked store: the sweep stores its terms exp(q - M) in `{name}` and each block's running max M; the output sweep rescales them by exp(M - max) per block instead of computing exp again (asked for)"
    ))
}

fn remove_store(ops: &mut Vec<Op>, tensor: TensorId) {
    ops.retain(|op| !matches!(op, Op::Store { tensor: t, .. } if *t == tensor));
    for op in ops.iter_mut() {
        match op {
            Op::Loop { body, .. } => remove_store(body, tensor),
            Op::If { then, .. } => remove_store(then, tensor),
            _ => {}
        }
    }
}
