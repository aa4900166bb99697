//! The planner: `fuse_reductions`, which derives fused sweeps by algebra.
//!
//! Assumes a verified [`Kernel`]. Guarantees a loop [`Program`] that computes
//! what the kernel's statements compute (up to rounding, and up to the
//! documented limits on all-`-inf` rows), with consecutive statements that
//! share their row indices `R` and their reduced indices `A` fused into as few
//! sweeps over `A` as the rules allow.
//!
//! How it works, in order:
//! 1. **Inline** temporaries that vary along a reduced index and are read only
//!    at the point they were defined (`s[h, i, j]` read inside `max[j]`): their
//!    definition is substituted into their readers, so the fused sweep computes
//!    them once per element instead of storing them.
//! 2. **Group** consecutive statements: a reduction `t[R] = f(⊕_A g)` starts a
//!    group `(R, A)`; later reductions over `A` whose indices contain `R` join
//!    it (extra indices become vector accumulators, as attention's `o[h, i, e]`);
//!    element-wise statements over `R ∪ A` and per-row statements over `R` join
//!    it too. Anything else is planned alone, unfused.
//! 3. **Phase** each member: a reduction that reads an earlier reduction of its
//!    group needs a later sweep, unless a rule removes the dependency
//!    (see [`crate::rules`]): exp-shift (running-max or two-pass accumulators),
//!    shift of a max/min, linearity, moments around a mean (Welford).
//! 4. **Emit** per group: loops over `R`, then per phase an init, one sweep over
//!    `A` with every update of that phase in statement order, and a finish that
//!    stores each member's value with its reductions replaced by accumulators.
//!
//! The planner never looks at a kernel's name and matches no whole kernel.

use crate::arena::Handle;
use crate::ir::*;
use crate::lir::{Op, Program};
use crate::rules::{self, Accumulator, Rewriter};
use std::collections::HashMap;

/// How exp-shifted sums keep their range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpShift {
    /// Running-max rescaling when the shift is a max of the same sweep,
    /// otherwise (mantissa, exponent) pairs.
    #[default]
    Auto,
    /// Always the online normalizer (falls back to an extra sweep when the
    /// shift is not a max computed in the same sweep).
    RunningMax,
    /// Always the Two-Pass (mantissa, exponent) accumulator.
    TwoPass,
}

/// Whether an output sweep recomputes a value an earlier sweep computed, or
/// reloads it from a row-sized scratch buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reload {
    /// The cost model: reload a value that an earlier sweep of the same row
    /// already computed for a plain sum, when it costs a transcendental
    /// function (a store and a load of one row-sized buffer are cheaper
    /// than `exp`); otherwise recompute. An exp-shifted sum whose terms an
    /// output statement reads again (softmax) is not fused into the max's
    /// sweep: it is summed after the max and reloaded. Measured here
    /// (`passfold bench kernels/softmax.pf`, f32x4 code, one run each):
    /// b=1·i=1024, b=64·i=4096 and one row of 16,777,216: the reload form
    /// took 0.69×, 0.62× and 0.57× the time of the running-max form that
    /// recomputes `exp` in the output sweep (a vector `exp` costs about
    /// 0.5–0.8 ns per element; storing and reloading an element about 0.3 ns
    /// out of cache; the running max's rescaling about 0.3 ns).
    #[default]
    Auto,
    /// Store and reload; exp-shifted sums then keep their own sweep after the
    /// max (three sweeps for softmax, two of them over the input).
    Reload,
    /// Always recompute.
    Recompute,
    /// The running-max form with its terms stored during the max's sweep
    /// and rescaled per block in the output sweep
    /// ([`crate::blockstore`]); recompute where that does not apply.
    BlockStore,
}

/// Planner choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FuseOptions {
    /// The exp-shift representation.
    pub exp_shift: ExpShift,
    /// Recompute or reload.
    pub reload: Reload,
    /// Plan Toeplitz products (`Σ_j c[j - i]·u_j`, [`crate::toeplitz`]) as
    /// FFT products, reordering contractions to expose them.
    pub toeplitz: bool,
}

/// What the planner derived.
#[derive(Debug, Clone)]
pub struct Fused {
    /// The kernel, with the nodes and scratch tensors the program added.
    pub kernel: Kernel,
    /// The loop program.
    pub program: Program,
    /// One line per rule applied: which dependency it removed, how.
    pub rules: Vec<String>,
}

/// Statement facts the planner uses.
#[derive(Debug, Clone)]
struct Info {
    /// LHS indices as a bit set.
    lhs: u64,
    /// Top-level reductions (not nested in another reduction).
    tops: Vec<Handle<Node>>,
    /// Their axes, if they all share one set; `None` if they differ.
    axes: Option<Vec<ExtentId>>,
}

fn mask(ids: &[ExtentId]) -> u64 {
    ids.iter().fold(0, |m, e| m | 1 << e.0)
}

/// The top-level reductions of a value, in evaluation order.
pub(crate) fn top_reductions(kernel: &Kernel, root: Handle<Node>) -> Vec<Handle<Node>> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    let mut seen = std::collections::HashSet::new();
    while let Some(h) = stack.pop() {
        if !seen.insert(h) {
            continue;
        }
        match &kernel.nodes[h] {
            Node::Reduce { .. } => out.push(h),
            node => stack.extend(node.operands()),
        }
    }
    out.sort();
    out
}

fn info(kernel: &Kernel, stmt: &Stmt) -> Info {
    let tops = top_reductions(kernel, stmt.value);
    let mut axes: Option<Vec<ExtentId>> = None;
    let mut same = true;
    for &t in &tops {
        if let Node::Reduce { axes: a, op, .. } = &kernel.nodes[t] {
            // A top-k state lives in k variables: small k only, and only
            // as the whole statement (its value is the threshold).
            if let ReduceOp::TopK(k) = op
                && (*k as usize > rules::MAX_TOPK_STATE || stmt.value != t)
            {
                same = false;
            }
            match &axes {
                None => axes = Some(a.clone()),
                Some(prev) if mask(prev) != mask(a) => same = false,
                Some(_) => {}
            }
        }
    }
    Info {
        lhs: mask(&stmt.indices),
        tops,
        axes: if same { axes } else { None },
    }
}

/// Plans `kernel` with fused sweeps.
pub fn fuse_reductions(kernel: &Kernel, opts: &FuseOptions) -> Fused {
    let mut rw = Rewriter::new(kernel);
    let reordered = crate::reorder::reorder_contractions_with(&mut rw, opts.toeplitz);
    rw.rules.extend(reordered);
    let base = rw.kernel.clone();
    let (stmts, hints) = inline_temps(&base, &mut rw, opts.toeplitz);
    let segments = group(&rw.kernel, &stmts, &hints, opts.toeplitz);
    let mut program = Program::default();
    for seg in &segments {
        match seg {
            Segment::Toeplitz(s, form) => {
                let ops = emit_toeplitz(&mut rw, &stmts[*s], form);
                program.body.extend(ops);
            }
            Segment::Alone(s) => program
                .body
                .extend(rules::unfused_nest(&rw.kernel, &stmts[*s])),
            Segment::Group(g) => {
                let ops = emit_group(&mut rw, &mut program, &stmts, g, opts);
                program.body.extend(ops);
            }
        }
    }
    crate::licm::hoist_invariants(&mut rw, &mut program);
    let rules = std::mem::take(&mut rw.rules);
    let kernel = rw.finish();
    crate::verify::verify(&kernel);
    Fused {
        kernel,
        program,
        rules,
    }
}

/// Substitutes inlinable temporaries into their readers. Returns the
/// statements that remain (values rewritten), in order, each with its
/// vector hint (see [`vector_hint`]) taken before inlining.
fn inline_temps(kernel: &Kernel, rw: &mut Rewriter, toeplitz: bool) -> (Vec<Stmt>, Vec<u64>) {
    let infos: Vec<Info> = kernel.stmts.iter().map(|s| info(kernel, s)).collect();
    let mut inlinable: HashMap<TensorId, usize> = HashMap::new();
    for (d, stmt) in kernel.stmts.iter().enumerate() {
        let t = kernel.tensor(stmt.tensor);
        if t.kind != TensorKind::Temp || reads_inout(kernel, stmt.value) {
            continue;
        }
        if toeplitz && crate::toeplitz::form(kernel, stmt).is_some() {
            continue;
        }
        if is_inlinable(kernel, &infos, d) {
            inlinable.insert(stmt.tensor, d);
        }
    }
    let mut subst: HashMap<TensorId, Handle<Node>> = HashMap::new();
    let mut out = Vec::new();
    let mut hints = Vec::new();
    for (stmt, info) in kernel.stmts.iter().zip(&infos) {
        let value = rw.substitute(stmt.value, &subst);
        if inlinable.contains_key(&stmt.tensor) {
            subst.insert(stmt.tensor, value);
            let name = &kernel.tensor(stmt.tensor).name;
            rw.rules.push(format!(
                "inline `{name}`: recomputed in the sweeps that read it, never stored"
            ));
            continue;
        }
        hints.push(vector_hint(kernel, stmt, info));
        out.push(Stmt {
            value,
            ..stmt.clone()
        });
    }
    (out, hints)
}

/// The statement indices that some load inside its reductions subscripts
/// *after* a reduced index (`v[j, e]` in a sum over `j`): looping over them
/// outside the sweep would re-read that data once per value, so they become
/// vector indices of the accumulators, inside the sweep.
fn vector_hint(kernel: &Kernel, stmt: &Stmt, info: &Info) -> u64 {
    let Some(axes) = &info.axes else { return 0 };
    let a = mask(axes);
    let mut hint = 0u64;
    for &top in &info.tops {
        for h in subtree(kernel, top) {
            let Node::Load { index, .. } = &kernel.nodes[h] else {
                continue;
            };
            let mut after_axis = false;
            for i in index {
                let Index::Affine(form) = i else { continue };
                let vars = form.terms.iter().fold(0u64, |m, (v, _)| m | 1 << v.0);
                if after_axis {
                    hint |= vars;
                }
                after_axis |= vars & a != 0;
            }
        }
    }
    hint & mask(&stmt.indices) & !a
}

fn reads_inout(kernel: &Kernel, root: Handle<Node>) -> bool {
    let mut stack = vec![root];
    while let Some(h) = stack.pop() {
        let node = &kernel.nodes[h];
        if let Node::Load { tensor, .. } = node
            && kernel.tensor(*tensor).kind == TensorKind::InOut
        {
            return true;
        }
        stack.extend(node.operands());
    }
    false
}

/// A temporary is inlined when every read of it is at its own indices and
/// inside a top-level reduction over an index it varies along, whose
/// statement covers all of its indices: then fusing computes it once per
/// element of the sweep.
fn is_inlinable(kernel: &Kernel, infos: &[Info], def: usize) -> bool {
    let stmt = &kernel.stmts[def];
    let tid = stmt.tensor;
    let own = mask(&stmt.indices);
    let plain: Vec<Index> = stmt
        .indices
        .iter()
        .map(|e| Index::Affine(Affine::var(*e)))
        .collect();
    let mut any = false;
    for (r, reader) in kernel.stmts.iter().enumerate().skip(def + 1) {
        let info = &infos[r];
        // Loads of the temp anywhere in the reader.
        let mut loads = Vec::new();
        let mut stack = vec![reader.value];
        while let Some(h) = stack.pop() {
            let node = &kernel.nodes[h];
            if let Node::Load { tensor, index } = node
                && *tensor == tid
            {
                loads.push((h, index.clone()));
            }
            stack.extend(node.operands());
        }
        if loads.is_empty() {
            continue;
        }
        any = true;
        let Some(axes) = &info.axes else { return false };
        let a = mask(axes);
        // The temp must vary along the sweep, stay within the reader's
        // indices, and cover the reader's rows (else it would be recomputed
        // once per row: a sum over `j` read for every `i`).
        let rows = info.lhs & !vector_hint(kernel, reader, info);
        // A reduction inside the temp must not range over an index the reader
        // binds (it would capture it), and a gather inside it must stay where
        // the kernel evaluates it (a failing gather is an error there).
        let bound = info.lhs
            | subtree(kernel, reader.value)
                .iter()
                .fold(0u64, |m, h| match &kernel.nodes[*h] {
                    Node::Reduce { axes, .. } => m | mask(axes),
                    _ => m,
                });
        let (inner_axes, gathers) =
            subtree(kernel, stmt.value)
                .iter()
                .fold((0u64, false), |(m, g), h| match &kernel.nodes[*h] {
                    Node::Reduce { axes, .. } => (m | mask(axes), g),
                    Node::Load { index, .. } => {
                        (m, g || index.iter().any(|i| matches!(i, Index::Gather(_))))
                    }
                    _ => (m, g),
                });
        if inner_axes & bound != 0 || gathers {
            return false;
        }
        let outside = own & !(info.lhs | a) != 0;
        if loads.iter().any(|(_, idx)| *idx != plain) || own & a == 0 || outside || rows & !own != 0
        {
            return false;
        }
        // Every load must sit inside one of the top-level reductions.
        let inside: std::collections::HashSet<Handle<Node>> =
            info.tops.iter().flat_map(|&t| subtree(kernel, t)).collect();
        if loads.iter().any(|(h, _)| !inside.contains(h)) {
            return false;
        }
    }
    any
}

pub(crate) fn subtree(kernel: &Kernel, root: Handle<Node>) -> Vec<Handle<Node>> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    let mut seen = std::collections::HashSet::new();
    while let Some(h) = stack.pop() {
        if seen.insert(h) {
            out.push(h);
            stack.extend(kernel.nodes[h].operands());
        }
    }
    out
}

/// A group of consecutive statements fused over one set of reduced indices.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    /// Row indices, outermost first.
    pub rows: Vec<ExtentId>,
    /// Swept indices, outermost first.
    pub axes: Vec<ExtentId>,
    /// Member statements (indices into the remaining statements).
    pub members: Vec<usize>,
}

enum Segment {
    Alone(usize),
    Group(Group),
    Toeplitz(usize, crate::toeplitz::Form),
}

fn group(kernel: &Kernel, stmts: &[Stmt], hints: &[u64], toeplitz: bool) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    let mut current: Option<Group> = None;
    for (s, stmt) in stmts.iter().enumerate() {
        if toeplitz && let Some(form) = crate::toeplitz::form(kernel, stmt) {
            out.extend(current.take().map(Segment::Group));
            out.push(Segment::Toeplitz(s, form));
            continue;
        }
        let info = info(kernel, stmt);
        if let Some(g) = &mut current {
            let (r, a) = (mask(&g.rows), mask(&g.axes));
            let joins = match (&info.axes, info.tops.is_empty()) {
                (Some(axes), false) => mask(axes) == a && info.lhs & r == r && info.lhs & a == 0,
                (_, true) => info.lhs == r | a || info.lhs == r,
                (None, false) => false,
            };
            if joins {
                g.members.push(s);
                continue;
            }
            out.push(Segment::Group(current.take().expect("a current group")));
        }
        match (&info.axes, info.tops.is_empty()) {
            (Some(axes), false) => {
                current = Some(Group {
                    rows: stmt
                        .indices
                        .iter()
                        .copied()
                        .filter(|e| hints[s] & (1 << e.0) == 0)
                        .collect(),
                    axes: axes.clone(),
                    members: vec![s],
                });
            }
            (_, true) if !stmt.indices.is_empty() => {
                // An element-wise statement sweeps its innermost index.
                let (rows, last) = stmt.indices.split_at(stmt.indices.len() - 1);
                current = Some(Group {
                    rows: rows.to_vec(),
                    axes: last.to_vec(),
                    members: vec![s],
                });
            }
            _ => out.push(Segment::Alone(s)),
        }
    }
    if let Some(g) = current {
        out.push(Segment::Group(g));
    }
    out
}

/// A scratch tensor over plain extents.
fn scratch(rw: &mut Rewriter, name: String, ty: ScalarType, dims: &[ExtentId]) -> TensorId {
    rw.kernel.tensors.push(Tensor {
        name,
        kind: TensorKind::Temp,
        ty,
        dims: dims.iter().map(|e| Dim(Affine::var(*e))).collect(),
        pad: None,
    });
    TensorId(rw.kernel.tensors.len() as u32 - 1)
}

/// A Toeplitz product `t[p.., i] = Σ_j c(j - i)·u[p.., j]`: the first row
/// `c(j - 0)` and first column `c(0 - i)` of the matrix and the vectors
/// `u` are stored, then one [`Op::Toeplitz`] computes every product.
fn emit_toeplitz(rw: &mut Rewriter, stmt: &Stmt, form: &crate::toeplitz::Form) -> Vec<Op> {
    let ty = rw.kernel.ty(stmt.value);
    let name = rw.kernel.tensor(stmt.tensor).name.clone();
    let (row, col) = (form.row, form.col);
    let first_row = scratch(rw, format!("{name}.row"), ty, &[col]);
    let first_col = scratch(rw, format!("{name}.col"), ty, &[row]);
    let mut dims = stmt.indices[..stmt.indices.len() - 1].to_vec();
    dims.push(col);
    let vec = scratch(rw, format!("{name}.vec"), ty, &dims);
    let zero = rw.add(Node::ConstInt(0), ScalarType::I32);
    let one = rw.add(Node::ConstInt(1), ScalarType::I32);
    let first = |fixed: ExtentId, along: ExtentId, tensor: TensorId| Op::Loop {
        index: fixed,
        sweep: false,
        range: Some((zero, one)),
        states: Vec::new(),
        body: vec![Op::Loop {
            index: along,
            sweep: false,
            range: None,
            states: Vec::new(),
            body: vec![Op::Store {
                tensor,
                index: vec![along],
                value: form.coef,
            }],
            code: Default::default(),
        }],
        code: Default::default(),
    };
    let mut ops = vec![first(row, col, first_row), first(col, row, first_col)];
    let mut terms = form.rest.iter().copied();
    let first_term = terms.next().expect("a Toeplitz form has terms");
    let u = terms.fold(first_term, |acc, f| rw.bin(BinOp::Mul, acc, f));
    let u_stmt = Stmt {
        tensor: vec,
        indices: dims,
        value: u,
        span: stmt.span,
    };
    ops.extend(rules::store_over(&u_stmt, u, &[]));
    ops.push(Op::Toeplitz {
        out: stmt.tensor,
        vec,
        first_row,
        first_col,
        row,
        col,
    });
    ops
}

/// A member's place in its group's program.
struct Member {
    stmt: usize,
    phase: usize,
    /// One accumulator per top-level reduction (empty for element-wise and per-row members).
    accs: Vec<(Handle<Node>, Accumulator)>,
    elementwise: bool,
}

fn emit_group(
    rw: &mut Rewriter,
    program: &mut Program,
    stmts: &[Stmt],
    g: &Group,
    opts: &FuseOptions,
) -> Vec<Op> {
    let r = mask(&g.rows);
    let a = mask(&g.axes);
    let mut phase_of: HashMap<TensorId, usize> = HashMap::new();
    let mut pure_max: HashMap<TensorId, Handle<Node>> = HashMap::new();
    // Top-k members: their tensor and the ranked value.
    let mut topk_of: HashMap<TensorId, Handle<Node>> = HashMap::new();
    // Phases of element-wise members: read at the same point of a sweep, so
    // a reader needs the same phase or a later one, never an extra sweep.
    let mut elem_phase: HashMap<TensorId, usize> = HashMap::new();
    let mut members: Vec<Member> = Vec::new();
    for &s in &g.members {
        let stmt = &stmts[s];
        let tops = top_reductions(&rw.kernel, stmt.value);
        let scalars = rw.group_scalars_read(stmt.value, &phase_of);
        let floor = scalars.iter().map(|t| phase_of[t]).max();
        let elem_floor = rw
            .group_scalars_read(stmt.value, &elem_phase)
            .iter()
            .map(|t| elem_phase[t])
            .max()
            .unwrap_or(0);
        if tops.is_empty() {
            let elementwise = mask(&stmt.indices) == r | a && a != 0;
            let phase = match floor {
                None => 0,
                Some(p) if elementwise => p + 1,
                Some(p) => p,
            }
            .max(elem_floor);
            if elementwise {
                elem_phase.insert(stmt.tensor, phase);
            } else {
                phase_of.insert(stmt.tensor, phase);
            }
            members.push(Member {
                stmt: s,
                phase,
                accs: Vec::new(),
                elementwise,
            });
            continue;
        }
        let mut accs = Vec::new();
        let mut phase = floor.unwrap_or(0).max(elem_floor);
        for &top in &tops {
            let who = rw.kernel.tensor(stmt.tensor).name.clone();
            let vmask = mask(&stmt.indices) & !r;
            let (acc, p) = match rules::bounded_state(rw, &who, top, &g.axes, &phase_of, &topk_of) {
                Some(found) if vmask == 0 => found,
                _ => rules::choose(rw, &who, vmask, top, &g.axes, &phase_of, &pure_max, opts),
            };
            phase = phase.max(p);
            accs.push((top, acc));
        }
        // Welford state is scalar: a vector-valued moment keeps its sweep.
        let vector = mask(&stmt.indices) & !r != 0;
        for (top, acc) in &mut accs {
            if vector && matches!(acc, Accumulator::Welford { .. }) {
                *acc = Accumulator::plain(&rw.kernel, *top);
                phase = phase.max(floor.map_or(0, |p| p + 1));
            }
        }
        // A running-max accumulator needs its max in the same sweep.
        for (top, acc) in &mut accs {
            if let Accumulator::OnlineSum { max, .. } = acc
                && phase_of[max] != phase
            {
                *acc = Accumulator::plain(&rw.kernel, *top);
            }
        }
        if let [
            (
                top,
                Accumulator::Plain {
                    op: ReduceOp::TopK(_),
                    arg,
                },
            ),
        ] = accs.as_slice()
            && stmt.value == *top
        {
            if mask(&stmt.indices) != r {
                // A vector of top-k states is not supported: plan the group unfused.
                rw.rules
                    .push("top-k with vector indices: group left unfused".into());
                return g
                    .members
                    .iter()
                    .flat_map(|&s| rules::unfused_nest(&rw.kernel, &stmts[s]))
                    .collect();
            }
            topk_of.insert(stmt.tensor, *arg);
        }
        if let [(top, Accumulator::Plain { .. })] = accs.as_slice()
            && stmt.value == *top
            && matches!(
                rw.kernel.nodes[*top],
                Node::Reduce {
                    op: ReduceOp::Max,
                    ..
                }
            )
            && mask(&stmt.indices) == r
        {
            pure_max.insert(stmt.tensor, *top);
        }
        phase_of.insert(stmt.tensor, phase);
        members.push(Member {
            stmt: s,
            phase,
            accs,
            elementwise: false,
        });
    }
    let phases = members.iter().map(|m| m.phase).max().unwrap_or(0) + 1;
    let reloads = find_reloads(rw, stmts, &members, &g.axes, r | a, opts.reload);
    // Sequential semantics of in-place updates hold within one sweep (members
    // run in statement order); across sweeps a member could run after a
    // later statement's store, so such groups stay unfused.
    let writes_inout = g
        .members
        .iter()
        .any(|&s| rw.kernel.tensor(stmts[s].tensor).kind == TensorKind::InOut);
    if writes_inout && phases > 1 {
        rw.rules
            .push("in-place updates across sweeps: group left unfused".into());
        return g
            .members
            .iter()
            .flat_map(|&s| rules::unfused_nest(&rw.kernel, &stmts[s]))
            .collect();
    }
    let mut body = Vec::new();
    for p in 0..phases {
        let in_phase: Vec<&Member> = members.iter().filter(|m| m.phase == p).collect();
        let mut state = rules::SweepState::new(program, &g.rows, &g.axes);
        for m in &in_phase {
            for (_, acc) in &m.accs {
                if let Accumulator::OnlineSum { max, .. } = acc {
                    state.online_wanted.insert(*max);
                }
            }
        }
        let mut init = Vec::new();
        let mut sweep = Vec::new();
        let mut finish = Vec::new();
        for m in &in_phase {
            let stmt = &stmts[m.stmt];
            if m.elementwise {
                // Reloaded values come from the scratch row of the last sweep.
                let map: HashMap<Handle<Node>, Handle<Node>> = reloads
                    .iter()
                    .filter(|rl| rl.reader == m.stmt)
                    .map(|rl| (rl.value, scratch_load(rw, rl.scratch, &rl.index)))
                    .collect();
                let value = rw.replace(stmt.value, &map);
                sweep.push(Op::Store {
                    tensor: stmt.tensor,
                    index: stmt.indices.clone(),
                    value,
                });
                continue;
            }
            let mut replaced: HashMap<Handle<Node>, Handle<Node>> = HashMap::new();
            state.vmask = mask(&stmt.indices) & !r;
            for (top, acc) in &m.accs {
                let ops = rules::emit_accumulator(rw, &mut state, stmt, *top, acc);
                init.extend(ops.init);
                sweep.extend(ops.update);
                finish.extend(ops.before_finish);
                replaced.insert(*top, ops.result);
            }
            for rl in reloads.iter().filter(|rl| rl.writer == m.stmt) {
                let value = state.reuse(rw, rl.value);
                sweep.push(Op::Store {
                    tensor: rl.scratch,
                    index: rl.index.clone(),
                    value,
                });
            }
            let value = rw.replace(stmt.value, &replaced);
            finish.extend(rules::store_over(stmt, value, &g.rows));
        }
        let sweep = state.wrap_sweep(rw, sweep);
        body.extend(init);
        if !sweep.is_empty() {
            body.extend(sweep);
        }
        body.extend(finish);
    }
    crate::lir::wrap_loops(&g.rows, body)
}

/// A value stored by one sweep and reloaded by the next.
struct ReloadPlan {
    /// The shared subexpression.
    value: Handle<Node>,
    /// The member whose sweep computes it (for a plain sum).
    writer: usize,
    /// The element-wise member that reads it in the next sweep.
    reader: usize,
    /// Where the values wait: a row-sized scratch tensor over the swept
    /// indices, or the reader's output.
    scratch: TensorId,
    /// The indices `scratch` is stored and loaded at.
    index: Vec<ExtentId>,
}

fn scratch_load(rw: &mut Rewriter, t: TensorId, axes: &[ExtentId]) -> Handle<Node> {
    let ty = rw.kernel.tensor(t).ty;
    rw.add(
        Node::Load {
            tensor: t,
            index: axes
                .iter()
                .map(|e| Index::Affine(Affine::var(*e)))
                .collect(),
        },
        ty,
    )
}

/// Finds element-wise members that recompute a costly value a plain sum of
/// the previous sweep computed for the same element, and decides by
/// [`Reload`] which to reload.
fn find_reloads(
    rw: &mut Rewriter,
    stmts: &[Stmt],
    members: &[Member],
    axes: &[ExtentId],
    full: u64,
    reload: Reload,
) -> Vec<ReloadPlan> {
    if matches!(reload, Reload::Recompute | Reload::BlockStore) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for reader in members.iter().filter(|m| m.elementwise && m.phase > 0) {
        for writer in members.iter().filter(|w| w.phase + 1 == reader.phase) {
            for (_, acc) in &writer.accs {
                let Accumulator::Plain {
                    op: ReduceOp::Sum | ReduceOp::Mean,
                    arg,
                } = acc
                else {
                    continue;
                };
                let inside: std::collections::HashSet<Handle<Node>> =
                    subtree(&rw.kernel, *arg).into_iter().collect();
                let Some(value) = shared_costly(rw, stmts[reader.stmt].value, &inside, full) else {
                    continue;
                };
                let ty = rw.kernel.ty(value);
                // The reader's own output holds the values between the sweeps
                // when nothing else reads it: no scratch, and the output
                // sweep reads the lines it then writes (no extra line fills
                // for the stores out of cache).
                let target = stmts[reader.stmt].tensor;
                let in_output =
                    rw.kernel.tensor(target).kind == TensorKind::Output
                        && rw.kernel.tensor(target).ty == ty
                        && !out.iter().any(|r: &ReloadPlan| r.reader == reader.stmt)
                        && !rw.kernel.nodes.iter().any(
                            |(_, n)| matches!(n, Node::Load { tensor, .. } if *tensor == target),
                        );
                let (scratch, index, place) = if in_output {
                    let place = format!("the output `{}` itself", rw.kernel.tensor(target).name);
                    (target, stmts[reader.stmt].indices.clone(), place)
                } else {
                    let name = format!(
                        "{}.reload",
                        rw.kernel.tensor(stmts[writer.stmt].tensor).name
                    );
                    rw.kernel.tensors.push(Tensor {
                        name: name.clone(),
                        kind: TensorKind::Temp,
                        ty,
                        dims: axes.iter().map(|e| Dim(Affine::var(*e))).collect(),
                        pad: None,
                    });
                    let scratch = TensorId(rw.kernel.tensors.len() as u32 - 1);
                    (scratch, axes.to_vec(), format!("`{name}`, one row"))
                };
                rw.rules.push(format!(
                    "reload: `{}` reads a value the sweep of `{}` computed ({}); stored in {place}, and reloaded instead of recomputed",
                    rw.kernel.tensor(stmts[reader.stmt].tensor).name,
                    rw.kernel.tensor(stmts[writer.stmt].tensor).name,
                    if reload == Reload::Reload { "asked for" } else { "cost model: a transcendental costs more than a store and a load" },
                ));
                out.push(ReloadPlan {
                    value,
                    writer: writer.stmt,
                    reader: reader.stmt,
                    scratch,
                    index,
                });
            }
        }
    }
    out
}

/// The largest subexpression of `root` that also occurs in `inside`, varies
/// over every index of the sweep (`full`), and evaluates a transcendental.
fn shared_costly(
    rw: &Rewriter,
    root: Handle<Node>,
    inside: &std::collections::HashSet<Handle<Node>>,
    full: u64,
) -> Option<Handle<Node>> {
    let mut stack = vec![root];
    while let Some(h) = stack.pop() {
        if inside.contains(&h) && rw.free(h) == full && costly(rw, h) {
            return Some(h);
        }
        if !matches!(rw.kernel.nodes[h], Node::Reduce { .. }) {
            stack.extend(rw.kernel.nodes[h].operands());
        }
    }
    None
}

fn costly(rw: &Rewriter, h: Handle<Node>) -> bool {
    subtree(&rw.kernel, h).into_iter().any(|n| {
        matches!(&rw.kernel.nodes[n], Node::Unary(op, _) if !matches!(op, UnOp::Neg | UnOp::Not | UnOp::Abs | UnOp::Sign))
            || matches!(&rw.kernel.nodes[n], Node::Powf(..))
    })
}
