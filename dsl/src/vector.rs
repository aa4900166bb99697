//! Which loops run as vector code, and what their lanes need.
//!
//! A loop over index `i` runs as vector code when each op of its body can
//! be evaluated for `W` consecutive values of `i` at once (`W` = 4 for
//! `f32`, 2 for `f64`: the 128-bit vectors both Cranelift back ends lower),
//! lane by lane, with the same result as running the lanes one after
//! another *except* for the order in which accumulator states absorb
//! elements. Each lane (and each unrolled copy) carries its own copy of
//! every accumulator state, starting from the state's identity; after the
//! loop the copies are merged by the states' combine laws
//! ([`crate::split::combine_ops`], the same laws that split a row across
//! threads), and the remaining `len mod (W·U)` elements run in a scalar
//! tail. So a vectorized sum is reassociated, a vectorized max is exact.
//!
//! The rules (see [`vectorize_loop`]): no inner loop in the body and no
//! store under an `if`; every value that varies with `i` is a float of one
//! width (or a compare of such floats) built from loads contiguous in `i`
//! (`i` the last subscript, exactly the tensor's last dimension, in no other
//! subscript), element-wise operations, selects and the body's own
//! variables; a variable set in the body is an accumulator state with a
//! combine law, or a temporary set before it is read in each iteration and
//! never read after the loop. Values that do not vary with `i` are computed
//! once per vector step as scalars and broadcast. A reduction left in a
//! value (`sum[i] x`) is vectorized over its last axis by the same rules
//! ([`vectorize_reduce`]).
//!
//! Strided, gathered and shifted (padded) loads, index values used as
//! numbers, casts and mixed widths keep the loop scalar; the plan text says
//! why next to the loop.

use crate::arena::Handle;
use crate::ir::*;
use crate::lir::{AccState, Law, Op, Program, StateSlot, has_loop, sets_in, value_roots};
use crate::rules::Rewriter;

/// How a loop of a plan is compiled.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub enum LoopCode {
    /// Not considered: the loop has inner loops (only innermost loops are
    /// vectorized), or vector code is off.
    #[default]
    Plain,
    /// Vector code.
    Vector(Box<VectorLoop>),
    /// Scalar code, with the reason the loop is not vectorized.
    Scalar(String),
    /// The loop steps by this many elements; loops over the same index in
    /// its body cover each block (see [`crate::block`]).
    Blocks(u32),
}

/// What a vectorized loop needs beyond its body.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VectorLoop {
    /// The lanes' element type (`f32` or `f64`).
    pub elem: ScalarType,
    /// Lanes per vector: 4 for `f32`, 2 for `f64`.
    pub lanes: u32,
    /// Vectors per step, each with its own copy of the lane variables.
    pub unroll: u32,
    /// Every variable set in the body (states and temporaries): one vector
    /// per unrolled copy.
    pub lane_vars: Vec<VarId>,
    /// Each state variable, the twin variable the merge reads the other
    /// partial state from, and the state's identity (its value over no
    /// elements).
    #[serde(with = "crate::serde_bits::states")]
    pub states: Vec<(VarId, VarId, f64)>,
    /// `state ⊕= twin` for every state, by the states' laws.
    pub merge: Vec<Op>,
    /// Whether the loop runs from the end of its range to the start (the
    /// scalar tail first, then whole steps downwards); see
    /// [`alternate_directions`].
    #[serde(default)]
    pub backward: bool,
}

impl VectorLoop {
    /// `f32x4×2` and the like, for the plan text.
    pub fn describe(&self) -> String {
        let lane = if self.elem == ScalarType::F64 {
            "f64x2"
        } else {
            "f32x4"
        };
        let lanes = if self.unroll > 1 {
            format!("{lane}×{}", self.unroll)
        } else {
            lane.to_string()
        };
        if self.backward {
            format!("{lanes}, backward")
        } else {
            lanes
        }
    }
}

/// Lanes per 128-bit vector of `ty`.
pub fn lanes_of(ty: ScalarType) -> u32 {
    if ty == ScalarType::F64 { 2 } else { 4 }
}

/// For every node, whether its value varies with `index` in a loop whose
/// body sets the variables marked in `lane_vars`.
pub fn varying(kernel: &Kernel, index: ExtentId, lane_vars: &[bool]) -> Vec<bool> {
    let mut out = vec![false; kernel.nodes.len()];
    for (h, node) in kernel.nodes.iter() {
        out[h.index()] = match node {
            Node::IndexValue(e) => *e == index,
            Node::Var(v) => lane_vars.get(v.0 as usize).copied().unwrap_or(false),
            Node::Load { index: subs, .. } => subs.iter().any(|s| match s {
                Index::Affine(a) => a.terms.iter().any(|&(e, _)| e == index),
                Index::Gather(g) => out[g.index()],
            }),
            other => other.operands().iter().any(|o| out[o.index()]),
        };
    }
    out
}

/// Checks that `root`'s varying part can be evaluated lane by lane over
/// `index` in `elem`; returns the reason when not. `transcendental` is
/// set when it calls an exp-like function (which changes the unroll).
fn check_value(
    kernel: &Kernel,
    index: ExtentId,
    vary: &[bool],
    elem: &mut Option<ScalarType>,
    transcendental: &mut bool,
    root: Handle<Node>,
) -> Result<(), String> {
    let mut stack = vec![root];
    let mut seen = std::collections::HashSet::new();
    while let Some(h) = stack.pop() {
        if !vary[h.index()] || !seen.insert(h) {
            continue;
        }
        let ty = kernel.ty(h);
        let mut float = |ty: ScalarType| -> Result<(), String> {
            if !ty.is_float() {
                return Err(format!("a varying `{ty}` value"));
            }
            match elem {
                None => *elem = Some(ty),
                Some(e) if *e != ty => return Err("mixed float widths".into()),
                _ => {}
            }
            Ok(())
        };
        match &kernel.nodes[h] {
            Node::IndexValue(_) => {
                return Err(format!(
                    "the index `{}` used as a number",
                    kernel.extent(index).name
                ));
            }
            Node::Load {
                tensor,
                index: subs,
            } => {
                let t = kernel.tensor(*tensor);
                float(ty)?;
                let last = subs.len().checked_sub(1);
                for (d, s) in subs.iter().enumerate() {
                    match s {
                        Index::Gather(_) => return Err(format!("a gathered load of `{}`", t.name)),
                        Index::Affine(a) if Some(d) == last => {
                            let exact = *a == t.dims[d].0;
                            if a.as_var() != Some(index) || !exact {
                                let what = if a.terms.iter().any(|&(e, _)| e == index)
                                    && a.as_var().is_none()
                                {
                                    "a shifted or scaled"
                                } else {
                                    "a strided"
                                };
                                return Err(format!("{what} load of `{}`", t.name));
                            }
                        }
                        Index::Affine(a) => {
                            if a.terms.iter().any(|&(e, _)| e == index) {
                                return Err(format!("a strided load of `{}`", t.name));
                            }
                            // A padded tensor read outside its rows gives the
                            // pad, element by element; vector code reads whole
                            // rows unchecked. (Unpadded tensors are read so only
                            // by plans, in range.)
                            if t.pad.is_some() && *a != t.dims[d].0 {
                                return Err(format!("a shifted row of padded `{}`", t.name));
                            }
                        }
                    }
                }
            }
            Node::Var(_) => float(ty)?,
            Node::Unary(op, a) => {
                match op {
                    UnOp::Not => {}
                    UnOp::Neg | UnOp::Abs | UnOp::Sqrt | UnOp::Rsqrt | UnOp::Sign => float(ty)?,
                    _ => {
                        float(ty)?;
                        *transcendental = true;
                    }
                }
                stack.push(*a);
            }
            Node::Binary(op, a, b) => {
                if !matches!(op, BinOp::And | BinOp::Or) {
                    float(ty)?;
                }
                stack.extend([*a, *b]);
            }
            Node::Cmp(_, a, b) => {
                float(kernel.ty(*a))?;
                stack.extend([*a, *b]);
            }
            Node::Select(c, a, b) => {
                float(ty)?;
                stack.extend([*c, *a, *b]);
            }
            Node::Powf(a, _) => {
                float(ty)?;
                *transcendental = true;
                stack.push(*a);
            }
            Node::Cast(to, a) => {
                if *to != kernel.ty(*a) {
                    return Err("a conversion between types".into());
                }
                stack.push(*a);
            }
            Node::Reduce { .. } => return Err("a reduction inside the loop".into()),
            Node::ConstFloat(_) | Node::ConstInt(_) | Node::Param(_) | Node::ExtentLen(_) => {}
        }
    }
    Ok(())
}

/// The vectors per step: fewer for exp-heavy bodies, whose constants
/// already fill the 16 vector registers (see `shared/CRANELIFT-NOTES.md`).
/// Three: measured against two and four on logsumexp and softmax over
/// 64 × 4096 (`passfold bench`, same run), 0.67 ns per element against
/// 0.71–0.72 (two) and 0.67 (four) for logsumexp, and 0.76 against 0.77
/// (two) and 0.81 (four) for softmax.
fn unroll_for(transcendental: bool) -> u32 {
    if transcendental { 3 } else { 4 }
}

/// Whether the reduction `h` (a `Node::Reduce`) can run as vector code over
/// its last axis; returns its element type, unroll and lanes, or the reason.
pub fn vectorize_reduce(
    kernel: &Kernel,
    h: Handle<Node>,
) -> Result<(ScalarType, u32, u32), String> {
    let Node::Reduce { op, axes, arg } = &kernel.nodes[h] else {
        return Err("not a reduction".into());
    };
    if !matches!(
        op,
        ReduceOp::Sum | ReduceOp::Mean | ReduceOp::Max | ReduceOp::Min
    ) {
        return Err("a top-k reduction".into());
    }
    let ty = kernel.ty(h);
    if !ty.is_float() || kernel.ty(*arg) != ty {
        return Err(format!("a `{ty}` reduction"));
    }
    let Some(&index) = axes.last() else {
        return Err("no axis".into());
    };
    let vary = varying(kernel, index, &[]);
    if !vary[arg.index()] {
        return Err("an argument that does not vary".into());
    }
    let mut elem = Some(ty);
    let mut tr = false;
    check_value(kernel, index, &vary, &mut elem, &mut tr, *arg)?;
    Ok((ty, lanes_of(ty), unroll_for(tr)))
}

fn collect_vars(kernel: &Kernel, root: Handle<Node>, out: &mut Vec<VarId>) {
    let mut stack = vec![root];
    let mut seen = std::collections::HashSet::new();
    while let Some(h) = stack.pop() {
        if !seen.insert(h) {
            continue;
        }
        if let Node::Var(v) = kernel.nodes[h] {
            out.push(v);
        }
        stack.extend(kernel.nodes[h].operands());
    }
}

/// Every variable read by `ops` (with repeats).
fn reads_in(kernel: &Kernel, ops: &[Op], out: &mut Vec<VarId>) {
    for op in ops {
        match op {
            Op::Barrier | Op::Toeplitz { .. } => {}
            Op::Loop { range, body, .. } => {
                if let Some((a, b)) = range {
                    collect_vars(kernel, *a, out);
                    collect_vars(kernel, *b, out);
                }
                reads_in(kernel, body, out);
            }
            Op::If { cond, then } => {
                collect_vars(kernel, *cond, out);
                reads_in(kernel, then, out);
            }
            Op::Set { value, .. } | Op::Store { value, .. } => collect_vars(kernel, *value, out),
        }
    }
}

/// Walks the body in order, checking values and that temporaries are set
/// before they are read.
#[allow(clippy::too_many_arguments)]
fn check_ops(
    kernel: &Kernel,
    index: ExtentId,
    vary: &[bool],
    states: &[VarId],
    lane: &[bool],
    defined: &mut Vec<VarId>,
    elem: &mut Option<ScalarType>,
    tr: &mut bool,
    stores: &mut Vec<(TensorId, Vec<ExtentId>)>,
    ops: &[Op],
    in_if: bool,
) -> Result<(), String> {
    let uses_ok = |defined: &Vec<VarId>, value: Handle<Node>| -> Result<(), String> {
        let mut reads = Vec::new();
        collect_vars(kernel, value, &mut reads);
        for v in reads {
            if lane[v.0 as usize] && !states.contains(&v) && !defined.contains(&v) {
                return Err("a variable carried from one element to the next".into());
            }
        }
        Ok(())
    };
    for op in ops {
        match op {
            Op::Loop { .. } => return Err("an inner loop".into()),
            Op::Barrier => return Err("a barrier".into()),
            Op::Toeplitz { .. } => return Err("a Toeplitz product".into()),
            Op::If { cond, then } => {
                uses_ok(defined, *cond)?;
                check_value(kernel, index, vary, elem, tr, *cond)?;
                let mut inner = defined.clone();
                check_ops(
                    kernel, index, vary, states, lane, &mut inner, elem, tr, stores, then, true,
                )?;
            }
            Op::Set { var, value } => {
                uses_ok(defined, *value)?;
                check_value(kernel, index, vary, elem, tr, *value)?;
                if vary[value.index()] || lane[var.0 as usize] {
                    float_var(kernel, *value, elem)?;
                }
                defined.push(*var);
            }
            Op::Store {
                tensor,
                index: subs,
                value,
            } => {
                if in_if {
                    return Err("a store under a condition".into());
                }
                if subs.last() != Some(&index) || subs[..subs.len() - 1].contains(&index) {
                    return Err(format!(
                        "a strided store to `{}`",
                        kernel.tensor(*tensor).name
                    ));
                }
                uses_ok(defined, *value)?;
                check_value(kernel, index, vary, elem, tr, *value)?;
                if kernel.ty(*value) != kernel.tensor(*tensor).ty {
                    return Err("a store of another type".into());
                }
                if !vary[value.index()] {
                    float_var(kernel, *value, elem)?;
                }
                stores.push((*tensor, subs.clone()));
            }
        }
    }
    Ok(())
}

fn float_var(
    kernel: &Kernel,
    value: Handle<Node>,
    elem: &mut Option<ScalarType>,
) -> Result<(), String> {
    let ty = kernel.ty(value);
    if !ty.is_float() {
        return Err(format!("a `{ty}` variable or store"));
    }
    match elem {
        None => *elem = Some(ty),
        Some(e) if *e != ty => return Err("mixed float widths".into()),
        _ => {}
    }
    Ok(())
}

/// Loads in `ops` of a tensor the loop stores to must read the stored element.
fn loads_match_stores(kernel: &Kernel, ops: &[Op], stores: &[(TensorId, Vec<ExtentId>)]) -> bool {
    let mut roots = Vec::new();
    value_roots(ops, &mut roots);
    let mut seen = std::collections::HashSet::new();
    while let Some(h) = roots.pop() {
        if !seen.insert(h) {
            continue;
        }
        if let Node::Load { tensor, index } = &kernel.nodes[h] {
            for (t, subs) in stores {
                if t == tensor {
                    let same = index.len() == subs.len()
                        && index
                            .iter()
                            .zip(subs)
                            .all(|(i, &e)| matches!(i, Index::Affine(a) if a.as_var() == Some(e)));
                    if !same {
                        return false;
                    }
                }
            }
        }
        roots.extend(kernel.nodes[h].operands());
    }
    true
}

/// Decides how the innermost loop `for index { body }` carrying `states`
/// is compiled; `read_after` tells whether a variable is read anywhere
/// outside the loop's body.
pub fn vectorize_loop(
    rw: &mut Rewriter,
    program: &mut Program,
    index: ExtentId,
    states: &[AccState],
    body: &[Op],
    read_outside: &dyn Fn(VarId) -> bool,
) -> Result<VectorLoop, String> {
    let kernel = &rw.kernel;
    let mut set = Vec::new();
    sets_in(body, &mut set);
    set.sort_by_key(|v| v.0);
    set.dedup();
    let mut lane = vec![false; program.vars.len()];
    for v in &set {
        lane[v.0 as usize] = true;
    }
    let mut state_vars = Vec::new();
    for st in states {
        if st.law == Law::None {
            return Err("a top-k state".into());
        }
        for slot in &st.slots {
            match slot {
                StateSlot::Var(v) if lane[v.0 as usize] => state_vars.push(*v),
                StateSlot::Var(_) => return Err("a state the body does not update".into()),
                StateSlot::Array(..) => return Err("a vector state".into()),
            }
        }
    }
    for v in &set {
        if !state_vars.contains(v) && read_outside(*v) {
            return Err(format!(
                "`${}` is read after the loop",
                program.vars[v.0 as usize].name
            ));
        }
    }
    let vary = varying(kernel, index, &lane);
    let mut elem = None;
    let mut tr = false;
    let mut stores = Vec::new();
    check_ops(
        kernel,
        index,
        &vary,
        &state_vars,
        &lane,
        &mut Vec::new(),
        &mut elem,
        &mut tr,
        &mut stores,
        body,
        false,
    )?;
    if !loads_match_stores(kernel, body, &stores) {
        return Err("a load of a stored tensor at another element".into());
    }
    let Some(elem) = elem else {
        return Err("no float value varies with the index".into());
    };
    if set.iter().any(|v| program.vars[v.0 as usize].ty != elem) {
        return Err("a variable of another type".into());
    }
    // Twins and merges, as for splitting the sweep.
    let mut twin_slots = Vec::new();
    let mut pairs = Vec::new();
    for st in states {
        let mut slots = Vec::new();
        for (k, slot) in st.slots.iter().enumerate() {
            let StateSlot::Var(v) = slot else {
                unreachable!("checked above")
            };
            let name = format!("{}.lane", program.vars[v.0 as usize].name);
            let t = program.var(name, st.ty);
            let identity = match (st.law, k) {
                (Law::Max, _) | (Law::TwoPass, 1) => f64::NEG_INFINITY,
                (Law::Min, _) => f64::INFINITY,
                _ => 0.0,
            };
            pairs.push((*v, t, identity));
            slots.push(StateSlot::Var(t));
        }
        twin_slots.push(slots);
    }
    let merge = crate::split::combine_ops(rw, program, states, &twin_slots);
    Ok(VectorLoop {
        elem,
        lanes: lanes_of(elem),
        unroll: unroll_for(tr),
        lane_vars: set,
        states: pairs,
        merge,
        backward: false,
    })
}

/// Decides the code of every innermost loop of `program` (see the module docs).
pub fn annotate(rw: &mut Rewriter, program: &mut Program) {
    let mut reads = Vec::new();
    reads_in(&rw.kernel, &program.body, &mut reads);
    let mut total = vec![0usize; program.vars.len()];
    for v in reads {
        total[v.0 as usize] += 1;
    }
    let mut body = std::mem::take(&mut program.body);
    annotate_ops(rw, program, &mut body, &total);
    alternate_directions(&rw.kernel, &mut body);
    program.body = body;
}

/// Runs a vector loop backward when the sweep before it over the same
/// index, in the same body (a row's sweeps), ran forward; a blocked sweep
/// (`[blocks of …]`) counts as forward.
///
/// Sweeps of one row over data larger than the caches each start where
/// the previous one ended: what it touched last (in L2 and L3) is read
/// first, before it is evicted, instead of after the sweep has streamed
/// the rest of the row through the caches. Softmax over one row of
/// 16,777,216 `f32` reads its row three times (max; `exp` stored and
/// summed; scaling); with the middle sweep backward the JIT's two-thread
/// split and the AOT code ran 4–8% faster here, and rows in cache are not
/// slower.
///
/// The direction changes only the order in which a loop's states absorb
/// elements, as lane splitting already does: every value a vector loop
/// computes depends on its own element only (its varying loads are at the
/// loop's element, [`vectorize_loop`]). A loop that stores a tensor and
/// also reads it at another element keeps its direction anyway.
pub fn alternate_directions(kernel: &Kernel, ops: &mut [Op]) {
    // The direction of the last sweep over each index (`true`: backward).
    let mut last: Vec<(ExtentId, bool)> = Vec::new();
    let mut set = |e: ExtentId, backward: bool| match last.iter_mut().find(|(x, _)| *x == e) {
        Some(slot) => {
            let before = slot.1;
            slot.1 = backward;
            Some(before)
        }
        None => {
            last.push((e, backward));
            None
        }
    };
    for op in ops.iter_mut() {
        match op {
            Op::Loop {
                index, body, code, ..
            } => match code {
                LoopCode::Vector(v) => {
                    if !reversible(kernel, body) {
                        set(*index, false);
                        continue;
                    }
                    // Backward after a forward sweep over the same index.
                    let before = set(*index, false);
                    v.backward = before == Some(false);
                    set(*index, v.backward);
                }
                // Blocks run forward (their loops cover a block in L1,
                // where the direction does not matter).
                LoopCode::Blocks(_) => {
                    set(*index, false);
                }
                _ => alternate_directions(kernel, body),
            },
            Op::If { then, .. } => alternate_directions(kernel, then),
            _ => {}
        }
    }
}

/// Whether every load in `ops` of a tensor `ops` store is at the store's
/// subscripts.
fn reversible(kernel: &Kernel, ops: &[Op]) -> bool {
    fn stores(ops: &[Op], out: &mut Vec<(TensorId, Vec<ExtentId>)>) {
        for op in ops {
            match op {
                Op::Store { tensor, index, .. } => out.push((*tensor, index.clone())),
                Op::Loop { body, .. } => stores(body, out),
                Op::If { then, .. } => stores(then, out),
                _ => {}
            }
        }
    }
    let mut stored = Vec::new();
    stores(ops, &mut stored);
    if stored.is_empty() {
        return true;
    }
    let mut roots = Vec::new();
    value_roots(ops, &mut roots);
    let mut stack = roots;
    let mut seen = vec![false; kernel.nodes.len()];
    while let Some(h) = stack.pop() {
        if std::mem::replace(&mut seen[h.index()], true) {
            continue;
        }
        let node = &kernel.nodes[h];
        if let Node::Load { tensor, index } = node {
            for (t, at) in &stored {
                if t != tensor {
                    continue;
                }
                let same = index.len() == at.len()
                    && index
                        .iter()
                        .zip(at)
                        .all(|(i, e)| matches!(i, Index::Affine(a) if a.as_var() == Some(*e)));
                if !same {
                    return false;
                }
            }
        }
        stack.extend(node.operands());
    }
    true
}

fn annotate_ops(rw: &mut Rewriter, program: &mut Program, ops: &mut [Op], total: &[usize]) {
    for op in ops {
        match op {
            Op::Loop {
                index,
                states,
                body,
                code,
                ..
            } => {
                if body.iter().any(has_loop) {
                    annotate_ops(rw, program, body, total);
                    continue;
                }
                let mut inside = Vec::new();
                reads_in(&rw.kernel, body, &mut inside);
                let mut count = vec![0usize; total.len()];
                for v in inside {
                    count[v.0 as usize] += 1;
                }
                let outside = |v: VarId| total[v.0 as usize] > count[v.0 as usize];
                *code = match vectorize_loop(rw, program, *index, states, body, &outside) {
                    Ok(v) => LoopCode::Vector(Box::new(v)),
                    Err(why) => LoopCode::Scalar(why),
                };
            }
            Op::If { then, .. } => annotate_ops(rw, program, then, total),
            _ => {}
        }
    }
}
