//! The separability rules and the accumulators they produce.
//!
//! A reduction `R_b = ⊕_A f(x, R_a)` that reads an earlier reduction `R_a` of
//! its sweep can still be computed in the same sweep when `f` depends on
//! `R_a` only through a separable factor. Each rule below states its identity;
//! [`choose`] tries them in order and otherwise keeps the extra sweep.
//!
//! - **exp-shift** `Σ p·exp(q - m) = exp(-m)·Σ p·exp(q)`, kept range-safe by
//!   either the *running-max* accumulator (online normalizer, Milakov &
//!   Gimelshein: when `m = max_A e` is in the same sweep, `S ← S·exp(m - m') +
//!   p·exp(q - m')`) or the *two-pass* accumulator (Dukhan & Ablavatski:
//!   `exp(q) = μ·2^k`, accumulated as `(S, E)` with `S ← S·2^(E - E') + p·μ·2^(k - E')`).
//! - **shift of max/min** `max(g + c) = max(g) + c`.
//! - **linearity** `Σ (a·g + c) = a·Σ g + c·N` (and for `mean`).
//! - **moments** `Σ (g - c)² = M2 + N·(ḡ - c)²` with Welford's `(N, ḡ, M2)`,
//!   never the cancelling `Σg² - N·ḡ²`.
//!
//! Every accumulator has an identity, an update, a combine (merging two
//! partial states; used by vector lanes and threads in later work, and
//! documented with each variant) and a finish.

use crate::arena::Handle;
use crate::fuse::{ExpShift, FuseOptions};
use crate::ir::*;
use crate::lir::{AccState, Law, Op, Program, StateSlot};
use std::collections::{HashMap, HashSet};

/// An accumulator the planner chose for one top-level reduction.
#[derive(Debug, Clone, PartialEq)]
pub enum Accumulator {
    /// `acc = acc ⊕ arg`. Combine: `⊕`.
    Plain {
        /// The reduction.
        op: ReduceOp,
        /// Its argument.
        arg: Handle<Node>,
    },
    /// `Σ p·exp(q - m)` with `m` a max of the same sweep. State `(m, S)`;
    /// combine `(m_a, S_a) ⊕ (m_b, S_b) = (m, S_a·e^(m_a - m) + S_b·e^(m_b - m))`, `m = max(m_a, m_b)`.
    OnlineSum {
        /// The max's tensor.
        max: TensorId,
        /// The factor outside the exponential.
        p: Handle<Node>,
        /// The exponent before the shift.
        q: Handle<Node>,
    },
    /// `Σ p·exp(q - m)` for any per-row `m` finished by the end of the sweep.
    /// State `(S, E)`; combine `(S_a, E_a) ⊕ (S_b, E_b) = (S_a·2^(E_a - E) + S_b·2^(E_b - E), E)`, `E = max`.
    TwoPassSum {
        /// The load of the shift `m`.
        shift: Handle<Node>,
        /// The factor outside the exponential.
        p: Handle<Node>,
        /// The exponent before the shift.
        q: Handle<Node>,
    },
    /// `max(g + sign·c)` (or `min`) as `max(g) + sign·c`. Combine: `max`.
    Shift {
        /// `Max` or `Min`.
        op: ReduceOp,
        /// The varying part.
        g: Handle<Node>,
        /// The per-row part.
        c: Handle<Node>,
        /// Whether `c` is subtracted.
        negate: bool,
    },
    /// `Σ (a·g + c)` as `a·Σ g + c·N` (`mean`: `a·mean g + c`). Combine: `+`.
    Linear {
        /// `Sum` or `Mean`.
        op: ReduceOp,
        /// The per-row scale.
        a: Handle<Node>,
        /// The varying part.
        g: Handle<Node>,
        /// The per-row offset.
        c: Handle<Node>,
    },
    /// `Σ select(e ≥ kth, h(e), 0)` where `kth = topk(e, k)` of the same
    /// sweep: finished from the top-k state (the k largest values, their
    /// count and the ties at the threshold), with no work in the sweep.
    /// Combine: merge two sorted k-lists, adding tie counts at the threshold.
    TopKRestricted {
        /// The top-k member.
        topk: TensorId,
        /// The ranked value `e`.
        ranked: Handle<Node>,
        /// The kept term `h(e)`.
        kept: Handle<Node>,
    },
    /// `Σ (g - c)²` (or `mean`) from Welford's `(N, ḡ, M2)`; combine is Chan's:
    /// `N = N_a + N_b`, `δ = ḡ_b - ḡ_a`, `ḡ = ḡ_a + δ·N_b/N`, `M2 = M2_a + M2_b + δ²·N_a·N_b/N`.
    Welford {
        /// `Sum` or `Mean`.
        op: ReduceOp,
        /// The varying part.
        g: Handle<Node>,
        /// The per-row center.
        c: Handle<Node>,
        /// Whether `c` is exactly `mean_A g` (then the correction term is 0).
        exact: bool,
    },
}

impl Accumulator {
    /// The plain accumulator of a reduction node.
    pub fn plain(kernel: &Kernel, top: Handle<Node>) -> Accumulator {
        match &kernel.nodes[top] {
            Node::Reduce { op, arg, .. } => Accumulator::Plain { op: *op, arg: *arg },
            _ => unreachable!("accumulators are made for reductions"),
        }
    }
}

/// Adds nodes to a kernel being planned (hash-consed), and records the rules applied.
#[derive(Debug, Clone)]
pub struct Rewriter {
    /// The kernel with every node added so far.
    pub kernel: Kernel,
    dedup: HashMap<(Node, ScalarType), Handle<Node>>,
    free: Vec<u64>,
    reads_var: Vec<bool>,
    /// Rule descriptions, in the order applied.
    pub rules: Vec<String>,
}

impl Rewriter {
    /// Starts from a kernel.
    pub fn new(kernel: &Kernel) -> Self {
        let mut dedup = HashMap::new();
        for (h, n) in kernel.nodes.iter() {
            dedup.entry((n.clone(), kernel.ty(h))).or_insert(h);
        }
        let free = kernel.free_indices();
        Rewriter {
            kernel: kernel.clone(),
            dedup,
            reads_var: vec![false; free.len()],
            free,
            rules: Vec::new(),
        }
    }

    /// The kernel with the added nodes.
    pub fn finish(self) -> Kernel {
        self.kernel
    }

    /// Adds a node (or finds the equal one).
    pub fn add(&mut self, node: Node, ty: ScalarType) -> Handle<Node> {
        if let Some(&h) = self.dedup.get(&(node.clone(), ty)) {
            return h;
        }
        let mut free = 0u64;
        let mut var = matches!(node, Node::Var(_));
        match &node {
            Node::IndexValue(e) => free |= 1 << e.0,
            Node::Load { index, .. } => {
                for i in index {
                    match i {
                        Index::Affine(a) => a.terms.iter().for_each(|(v, _)| free |= 1 << v.0),
                        Index::Gather(g) => {
                            free |= self.free[g.index()];
                            var |= self.reads_var[g.index()];
                        }
                    }
                }
            }
            Node::Reduce { axes, arg, .. } => {
                free = self.free[arg.index()] & !axes.iter().fold(0, |m, a| m | 1 << a.0);
                var |= self.reads_var[arg.index()];
            }
            other => {
                for o in other.operands() {
                    free |= self.free[o.index()];
                    var |= self.reads_var[o.index()];
                }
            }
        }
        let span = node
            .operands()
            .first()
            .map(|o| self.kernel.span(*o))
            .unwrap_or_default();
        let h = self.kernel.nodes.append(node.clone());
        self.kernel.node_types.push(ty);
        self.kernel.node_spans.push(span);
        self.free.push(free);
        self.reads_var.push(var);
        self.dedup.insert((node, ty), h);
        h
    }

    /// The free index variables of a node.
    pub fn free(&self, h: Handle<Node>) -> u64 {
        self.free[h.index()]
    }

    fn ty(&self, h: Handle<Node>) -> ScalarType {
        self.kernel.ty(h)
    }

    /// A constant of type `ty`; for `i32`, infinities become the extreme
    /// integers (the identities of integer max and min).
    pub fn float(&mut self, v: f64, ty: ScalarType) -> Handle<Node> {
        if ty == ScalarType::I32 {
            let i = if v == f64::INFINITY {
                i32::MAX as i64
            } else if v == f64::NEG_INFINITY {
                i32::MIN as i64
            } else {
                v as i64
            };
            return self.add(Node::ConstInt(i), ty);
        }
        self.add(Node::ConstFloat(v.to_bits()), ty)
    }

    /// `op(a, b)` typed as `a`.
    pub fn bin(&mut self, op: BinOp, a: Handle<Node>, b: Handle<Node>) -> Handle<Node> {
        let ty = self.ty(a);
        self.add(Node::Binary(op, a, b), ty)
    }

    /// `op(a)` typed as `a`.
    pub fn un(&mut self, op: UnOp, a: Handle<Node>) -> Handle<Node> {
        let ty = self.ty(a);
        self.add(Node::Unary(op, a), ty)
    }

    /// `a == b`.
    pub fn eq(&mut self, a: Handle<Node>, b: Handle<Node>) -> Handle<Node> {
        self.cmp(CmpOp::Eq, a, b)
    }

    /// `op(a, b)`, a `bool`.
    pub fn cmp(&mut self, op: CmpOp, a: Handle<Node>, b: Handle<Node>) -> Handle<Node> {
        self.add(Node::Cmp(op, a, b), ScalarType::Bool)
    }

    /// `select(c, a, b)`.
    pub fn select(&mut self, c: Handle<Node>, a: Handle<Node>, b: Handle<Node>) -> Handle<Node> {
        let ty = self.ty(a);
        self.add(Node::Select(c, a, b), ty)
    }

    /// The value of a variable.
    pub fn var(&mut self, v: VarId, ty: ScalarType) -> Handle<Node> {
        self.add(Node::Var(v), ty)
    }

    /// The number of points of `axes`, as a float of type `ty`.
    pub fn count(&mut self, axes: &[ExtentId], ty: ScalarType) -> Handle<Node> {
        let mut n: Option<Handle<Node>> = None;
        for &a in axes {
            let len = self.add(Node::ExtentLen(a), ScalarType::I32);
            let f = self.add(Node::Cast(ty, len), ty);
            n = Some(match n {
                None => f,
                Some(prev) => self.bin(BinOp::Mul, prev, f),
            });
        }
        n.unwrap_or_else(|| self.float(1.0, ty))
    }

    /// Rebuilds `root` with `map` applied to nodes (bottom-up).
    pub fn replace(
        &mut self,
        root: Handle<Node>,
        map: &HashMap<Handle<Node>, Handle<Node>>,
    ) -> Handle<Node> {
        if map.is_empty() {
            return root;
        }
        let mut memo = HashMap::new();
        self.rebuild(root, &mut |_, h| map.get(&h).copied(), &mut memo)
    }

    /// [`Rewriter::replace`] in every value and condition of `ops`.
    pub fn replace_in_ops(&mut self, ops: &mut [Op], map: &HashMap<Handle<Node>, Handle<Node>>) {
        for op in ops {
            match op {
                Op::Set { value, .. } | Op::Store { value, .. } => {
                    *value = self.replace(*value, map)
                }
                Op::If { cond, then } => {
                    *cond = self.replace(*cond, map);
                    self.replace_in_ops(then, map);
                }
                Op::Loop { body, .. } => self.replace_in_ops(body, map),
                Op::Barrier | Op::Toeplitz { .. } => {}
            }
        }
    }

    /// Rebuilds `root` with each plain load of a tensor in `subst` replaced by its value.
    pub fn substitute(
        &mut self,
        root: Handle<Node>,
        subst: &HashMap<TensorId, Handle<Node>>,
    ) -> Handle<Node> {
        if subst.is_empty() {
            return root;
        }
        let mut memo = HashMap::new();
        self.rebuild(
            root,
            &mut |k: &Kernel, h| match &k.nodes[h] {
                Node::Load { tensor, .. } => subst.get(tensor).copied(),
                _ => None,
            },
            &mut memo,
        )
    }

    fn rebuild(
        &mut self,
        h: Handle<Node>,
        f: &mut dyn FnMut(&Kernel, Handle<Node>) -> Option<Handle<Node>>,
        memo: &mut HashMap<Handle<Node>, Handle<Node>>,
    ) -> Handle<Node> {
        if let Some(&r) = memo.get(&h) {
            return r;
        }
        if let Some(r) = f(&self.kernel, h) {
            memo.insert(h, r);
            return r;
        }
        let node = self.kernel.nodes[h].clone();
        let ty = self.ty(h);
        let mut go = |s: &mut Self, x: Handle<Node>| s.rebuild(x, f, memo);
        let new = match node {
            Node::Load { tensor, index } => {
                let index = index
                    .into_iter()
                    .map(|i| match i {
                        Index::Gather(g) => Index::Gather(go(self, g)),
                        a => a,
                    })
                    .collect();
                Node::Load { tensor, index }
            }
            Node::Unary(op, a) => Node::Unary(op, go(self, a)),
            Node::Binary(op, a, b) => {
                let a = go(self, a);
                Node::Binary(op, a, go(self, b))
            }
            Node::Cmp(op, a, b) => {
                let a = go(self, a);
                Node::Cmp(op, a, go(self, b))
            }
            Node::Select(c, a, b) => {
                let c = go(self, c);
                let a = go(self, a);
                Node::Select(c, a, go(self, b))
            }
            Node::Powf(a, p) => Node::Powf(go(self, a), p),
            Node::Cast(t, a) => Node::Cast(t, go(self, a)),
            Node::Reduce { op, axes, arg } => Node::Reduce {
                op,
                axes,
                arg: go(self, arg),
            },
            leaf => leaf,
        };
        let r = self.add(new, ty);
        memo.insert(h, r);
        r
    }

    /// Rebuilds `root` with variables and loaded tensors renamed.
    pub fn rename(
        &mut self,
        root: Handle<Node>,
        vars: &HashMap<VarId, VarId>,
        tensors: &HashMap<TensorId, TensorId>,
    ) -> Handle<Node> {
        let mut memo = HashMap::new();
        let mut map = |k: &Kernel, h: Handle<Node>| -> Option<Node> {
            match &k.nodes[h] {
                Node::Var(v) => vars.get(v).map(|t| Node::Var(*t)),
                Node::Load { tensor, index } => tensors.get(tensor).map(|t| Node::Load {
                    tensor: *t,
                    index: index.clone(),
                }),
                _ => None,
            }
        };
        self.rebuild_renamed(root, &mut map, &mut memo)
    }

    /// Rebuilds `root` with variables renamed and the index `e` read as
    /// `e + by` (a later element of the same sweep): in subscripts, where
    /// `c·e` adds `c·by` to the constant, and as a value.
    pub fn shift_index(
        &mut self,
        root: Handle<Node>,
        e: ExtentId,
        by: i64,
        vars: &HashMap<VarId, VarId>,
    ) -> Handle<Node> {
        let i32t = ScalarType::I32;
        let at = self.add(Node::IndexValue(e), i32t);
        let step = self.add(Node::ConstInt(by), i32t);
        let moved = self.add(Node::Binary(BinOp::Add, at, step), i32t);
        let mut memo = HashMap::new();
        if by != 0 {
            memo.insert(at, moved);
        }
        let mut map = |k: &Kernel, h: Handle<Node>| -> Option<Node> {
            match &k.nodes[h] {
                Node::Var(v) => vars.get(v).map(|t| Node::Var(*t)),
                Node::Load { tensor, index } if by != 0 => {
                    let coef = |i: &Index| match i {
                        Index::Affine(a) => a.terms.iter().find(|(v, _)| *v == e).map(|t| t.1),
                        Index::Gather(_) => None,
                    };
                    index.iter().any(|i| coef(i).is_some()).then(|| Node::Load {
                        tensor: *tensor,
                        index: index
                            .iter()
                            .map(|i| match (i, coef(i)) {
                                (Index::Affine(a), Some(c)) => Index::Affine(Affine {
                                    terms: a.terms.clone(),
                                    constant: a.constant.saturating_add(c.saturating_mul(by)),
                                }),
                                _ => i.clone(),
                            })
                            .collect(),
                    })
                }
                _ => None,
            }
        };
        self.rebuild_renamed(root, &mut map, &mut memo)
    }

    fn rebuild_renamed(
        &mut self,
        h: Handle<Node>,
        f: &mut dyn FnMut(&Kernel, Handle<Node>) -> Option<Node>,
        memo: &mut HashMap<Handle<Node>, Handle<Node>>,
    ) -> Handle<Node> {
        if let Some(&r) = memo.get(&h) {
            return r;
        }
        let ty = self.ty(h);
        let node = match f(&self.kernel, h) {
            // Renamed loads still need their gathers renamed.
            Some(Node::Load { tensor, index }) => Node::Load {
                tensor,
                index: index
                    .into_iter()
                    .map(|i| match i {
                        Index::Gather(g) => Index::Gather(self.rebuild_renamed(g, f, memo)),
                        a => a,
                    })
                    .collect(),
            },
            Some(leaf) => leaf,
            None => {
                let mut ops = HashMap::new();
                for o in self.kernel.nodes[h].operands() {
                    let r = self.rebuild_renamed(o, f, memo);
                    ops.insert(o, r);
                }
                let r = self.replace_shallow(h, &ops);
                memo.insert(h, r);
                return r;
            }
        };
        let r = self.add(node, ty);
        memo.insert(h, r);
        r
    }

    /// `h` with its direct operands mapped.
    fn replace_shallow(
        &mut self,
        h: Handle<Node>,
        ops: &HashMap<Handle<Node>, Handle<Node>>,
    ) -> Handle<Node> {
        if ops.iter().all(|(a, b)| a == b) {
            return h;
        }
        let mut memo = HashMap::new();
        self.rebuild(
            h,
            &mut |_, x| if x == h { None } else { ops.get(&x).copied() },
            &mut memo,
        )
    }

    /// The group scalars (tensors in `phase_of`) that `root` loads.
    pub fn group_scalars_read(
        &self,
        root: Handle<Node>,
        phase_of: &HashMap<TensorId, usize>,
    ) -> Vec<TensorId> {
        let mut out = Vec::new();
        for h in crate::fuse::subtree(&self.kernel, root) {
            if let Node::Load { tensor, .. } = &self.kernel.nodes[h]
                && phase_of.contains_key(tensor)
                && !out.contains(tensor)
            {
                out.push(*tensor);
            }
        }
        out.sort();
        out
    }
}

/// Whether some statement reads, outside any reduction, an `exp` node that
/// `arg` contains (the softmax output reading the normalizer's terms).
fn exp_reread(rw: &Rewriter, arg: Handle<Node>) -> bool {
    let k = &rw.kernel;
    let exps: std::collections::HashSet<Handle<Node>> = crate::fuse::subtree(k, arg)
        .into_iter()
        .filter(|&n| matches!(k.nodes[n], Node::Unary(UnOp::Exp, _)))
        .collect();
    if exps.is_empty() {
        return false;
    }
    k.stmts.iter().any(|stmt| {
        let mut stack = vec![stmt.value];
        let mut seen = std::collections::HashSet::new();
        while let Some(h) = stack.pop() {
            if !seen.insert(h) {
                continue;
            }
            if exps.contains(&h) {
                return true;
            }
            if !matches!(k.nodes[h], Node::Reduce { .. }) {
                stack.extend(k.nodes[h].operands());
            }
        }
        false
    })
}

/// Chooses the accumulator of a top-level reduction and the earliest phase
/// it can run in.
#[allow(clippy::too_many_arguments)]
pub fn choose(
    rw: &mut Rewriter,
    who: &str,
    vmask: u64,
    top: Handle<Node>,
    axes: &[ExtentId],
    phase_of: &HashMap<TensorId, usize>,
    pure_max: &HashMap<TensorId, Handle<Node>>,
    opts: &FuseOptions,
) -> (Accumulator, usize) {
    let Node::Reduce { op, arg, .. } = rw.kernel.nodes[top].clone() else {
        unreachable!("choose is called on reductions")
    };
    let deps = rw.group_scalars_read(arg, phase_of);
    if deps.is_empty() {
        return (Accumulator::Plain { op, arg }, 0);
    }
    let latest = deps.iter().map(|t| phase_of[t]).max().unwrap_or(0);
    let names = |rw: &Rewriter| {
        deps.iter()
            .map(|t| format!("`{}`", rw.kernel.tensor(*t).name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let free_of_deps =
        |rw: &Rewriter, h: Handle<Node>| rw.group_scalars_read(h, phase_of).is_empty();
    let a_mask = axes.iter().fold(0u64, |m, a| m | 1 << a.0);
    if deps.len() == 1 {
        let m = deps[0];
        let m_name = rw.kernel.tensor(m).name.clone();
        let phase = phase_of[&m];
        if op == ReduceOp::Sum
            && let Some((p, q, shift)) = match_exp_shift(rw, arg, m)
            && free_of_deps(rw, p)
            && free_of_deps(rw, q)
            && rw.free(q) & vmask == 0
        {
            // Cost model (measured with `passfold bench`, see
            // `fuse::Reload`): when an element-wise statement reads the same
            // exp(q - m) again, summing it after `m` is final and reloading
            // it (one exp per element, one more sweep over a row-sized
            // buffer) beats the running max (two exps per element plus the
            // rescaling), in cache and out of it.
            let reread = opts.reload == crate::fuse::Reload::Auto && exp_reread(rw, arg);
            if opts.reload == crate::fuse::Reload::Reload || reread {
                let why = if reread {
                    "cost model: an output statement reads the same exp again, and one exp per element and a reload cost less than a running max and two exps"
                } else {
                    "reload asked"
                };
                rw.rules.push(format!(
                    "exp-shift not applied to `{who}`: {why}, so it sums exp(q - {m_name}) after `{m_name}` is final and the output sweep can reload it"
                ));
                return (Accumulator::Plain { op, arg }, phase + 1);
            }
            // The running max bounds exp(q - max) only when q is exactly what
            // the max ranges over; any other q could overflow before the
            // max moves (and inf·0 is NaN), so it takes the two-pass form.
            let same_arg = pure_max.get(&m).is_some_and(
                |top| matches!(rw.kernel.nodes[*top], Node::Reduce { arg, .. } if arg == q),
            );
            let online_ok = same_arg && opts.exp_shift != ExpShift::TwoPass;
            if online_ok {
                rw.rules.push(format!(
                    "exp-shift: `{who}` reads `{m_name}` only as exp(q - {m_name}); running-max accumulator, since `{m_name}` is a max in the same sweep"
                ));
                return (Accumulator::OnlineSum { max: m, p, q }, phase);
            }
            if opts.exp_shift != ExpShift::RunningMax {
                let why = if opts.exp_shift == ExpShift::TwoPass {
                    "asked for"
                } else {
                    "the shift is not a max of the same values in this sweep"
                };
                rw.rules.push(format!(
                    "exp-shift: `{who}` reads `{m_name}` only as exp(q - {m_name}); two-pass (mantissa, exponent) accumulator ({why})"
                ));
                return (Accumulator::TwoPassSum { shift, p, q }, phase);
            }
        }
        if matches!(op, ReduceOp::Sum | ReduceOp::Mean)
            && let Some((g, c)) = match_square_deviation(rw, arg)
            && free_of_deps(rw, g)
            && rw.free(c) & a_mask == 0
        {
            let exact = is_mean_of(rw, c, g, axes);
            rw.rules.push(format!(
                "moments: `{who}` is a {} of (g - {m_name})²: Welford states (N, mean, M2){}",
                if op == ReduceOp::Sum { "sum" } else { "mean" },
                if exact {
                    ", and `{m}` is mean(g), so no correction term".replace("{m}", &m_name)
                } else {
                    String::new()
                }
            ));
            return (Accumulator::Welford { op, g, c, exact }, phase);
        }
        if matches!(op, ReduceOp::Max | ReduceOp::Min)
            && let Some((g, c, negate)) = match_shift(rw, arg, a_mask)
            && free_of_deps(rw, g)
            && !has_gather(rw, c)
        {
            rw.rules.push(format!(
                "shift: `{who}` = {}(g ± {m_name}) = {}(g) ± {m_name}",
                reduce_word(op),
                reduce_word(op)
            ));
            return (Accumulator::Shift { op, g, c, negate }, phase);
        }
        if matches!(op, ReduceOp::Sum | ReduceOp::Mean)
            && let Some((a, g, c)) = match_linear(rw, arg, a_mask)
            && free_of_deps(rw, g)
            && !has_gather(rw, a)
            && !has_gather(rw, c)
        {
            rw.rules.push(format!(
                "linearity: `{who}` = Σ(a·g + c) = a·Σg + c·N, with a, c per row (from `{m_name}`)"
            ));
            return (Accumulator::Linear { op, a, g, c }, phase);
        }
    }
    let n = names(rw);
    rw.rules.push(format!(
        "no rule: the {} in `{who}` reads {n} in a way no rule separates; it keeps an extra sweep",
        reduce_word(op)
    ));
    (Accumulator::Plain { op, arg }, latest + 1)
}

/// The largest `k` whose top-k state is kept in variables.
pub const MAX_TOPK_STATE: usize = 64;

/// The bounded-state rule: a sum restricted to the top-k set of its sweep,
/// `Σ select(e ≥ kth, h(e), 0)` with `h` depending on the swept indices only
/// through `e`, is finished from the top-k state.
pub fn bounded_state(
    rw: &mut Rewriter,
    who: &str,
    top: Handle<Node>,
    axes: &[ExtentId],
    phase_of: &HashMap<TensorId, usize>,
    topk_of: &HashMap<TensorId, Handle<Node>>,
) -> Option<(Accumulator, usize)> {
    let Node::Reduce {
        op: ReduceOp::Sum,
        arg,
        ..
    } = rw.kernel.nodes[top].clone()
    else {
        return None;
    };
    let Node::Select(cond, kept, other) = rw.kernel.nodes[arg].clone() else {
        return None;
    };
    if !is_zero(rw, other) {
        return None;
    }
    let Node::Cmp(CmpOp::Ge, ranked, threshold) = rw.kernel.nodes[cond].clone() else {
        return None;
    };
    let Node::Load { tensor: kt, .. } = rw.kernel.nodes[threshold].clone() else {
        return None;
    };
    if topk_of.get(&kt) != Some(&ranked) {
        return None;
    }
    let a_mask = axes.iter().fold(0u64, |m, a| m | 1 << a.0);
    if !only_through(rw, kept, ranked, a_mask) {
        return None;
    }
    let phase = rw
        .group_scalars_read(arg, phase_of)
        .iter()
        .map(|t| phase_of[t])
        .max()
        .unwrap_or(0);
    let name = rw.kernel.tensor(kt).name.clone();
    rw.rules.push(format!(
        "bounded state: `{who}` sums over the top-k set of `{name}`; finished from the k largest values and their ties, no extra sweep"
    ));
    Some((
        Accumulator::TopKRestricted {
            topk: kt,
            ranked,
            kept,
        },
        phase,
    ))
}

/// Whether `h` depends on the swept indices only through `e`.
fn only_through(rw: &Rewriter, h: Handle<Node>, e: Handle<Node>, a_mask: u64) -> bool {
    if h == e || rw.free(h) & a_mask == 0 {
        return true;
    }
    match &rw.kernel.nodes[h] {
        Node::Load { .. } | Node::IndexValue(_) | Node::Reduce { .. } => false,
        node => node
            .operands()
            .into_iter()
            .all(|o| only_through(rw, o, e, a_mask)),
    }
}

fn reduce_word(op: ReduceOp) -> &'static str {
    match op {
        ReduceOp::Sum => "sum",
        ReduceOp::Max => "max",
        ReduceOp::Min => "min",
        ReduceOp::Mean => "mean",
        ReduceOp::TopK(_) => "topk",
    }
}

fn loads_tensor(rw: &Rewriter, h: Handle<Node>, t: TensorId) -> bool {
    matches!(&rw.kernel.nodes[h], Node::Load { tensor, .. } if *tensor == t)
}

/// Matches `f = p·exp(q - m)`: returns `(p, q, the load of m)`.
fn match_exp_shift(
    rw: &mut Rewriter,
    f: Handle<Node>,
    m: TensorId,
) -> Option<(Handle<Node>, Handle<Node>, Handle<Node>)> {
    let ty = rw.kernel.ty(f);
    match rw.kernel.nodes[f].clone() {
        Node::Unary(UnOp::Exp, arg) => match rw.kernel.nodes[arg].clone() {
            Node::Binary(BinOp::Sub, q, load) if loads_tensor(rw, load, m) => {
                Some((rw.float(1.0, ty), q, load))
            }
            _ => None,
        },
        Node::Binary(BinOp::Mul, a, b) => {
            if let Some((p, q, l)) = match_exp_shift(rw, b, m) {
                let p = if is_one(rw, p) {
                    a
                } else {
                    rw.bin(BinOp::Mul, a, p)
                };
                Some((p, q, l))
            } else {
                let (p, q, l) = match_exp_shift(rw, a, m)?;
                let p = if is_one(rw, p) {
                    b
                } else {
                    rw.bin(BinOp::Mul, p, b)
                };
                Some((p, q, l))
            }
        }
        Node::Binary(BinOp::Div, a, b) => {
            let (p, q, l) = match_exp_shift(rw, a, m)?;
            Some((rw.bin(BinOp::Div, p, b), q, l))
        }
        Node::Select(c, a, b) if is_zero(rw, b) => {
            let (p, q, l) = match_exp_shift(rw, a, m)?;
            let zero = rw.float(0.0, ty);
            Some((rw.select(c, p, zero), q, l))
        }
        _ => None,
    }
}

fn is_one(rw: &Rewriter, h: Handle<Node>) -> bool {
    matches!(rw.kernel.nodes[h], Node::ConstFloat(b) if f64::from_bits(b) == 1.0)
}

fn is_zero(rw: &Rewriter, h: Handle<Node>) -> bool {
    matches!(rw.kernel.nodes[h], Node::ConstFloat(b) if f64::from_bits(b) == 0.0)
}

/// Matches `(g - c)²` as `pow(g - c, 2)` or `(g - c)·(g - c)`.
fn match_square_deviation(rw: &Rewriter, f: Handle<Node>) -> Option<(Handle<Node>, Handle<Node>)> {
    let base = match &rw.kernel.nodes[f] {
        Node::Powf(b, p) if f64::from_bits(*p) == 2.0 => *b,
        Node::Binary(BinOp::Mul, a, b) if a == b => *a,
        _ => return None,
    };
    match &rw.kernel.nodes[base] {
        Node::Binary(BinOp::Sub, g, c) => Some((*g, *c)),
        _ => None,
    }
}

/// Whether `c` loads a tensor whose only statement value is `mean_axes g`.
fn is_mean_of(rw: &Rewriter, c: Handle<Node>, g: Handle<Node>, axes: &[ExtentId]) -> bool {
    let Node::Load { tensor, .. } = &rw.kernel.nodes[c] else {
        return false;
    };
    rw.kernel.stmts.iter().any(|s| {
        s.tensor == *tensor
            && matches!(&rw.kernel.nodes[s.value], Node::Reduce { op: ReduceOp::Mean, axes: a, arg } if *arg == g && a == axes)
    })
}

/// Matches `g + c`, `c + g` or `g - c` with `c` constant along the swept indices.
fn match_shift(
    rw: &Rewriter,
    f: Handle<Node>,
    a_mask: u64,
) -> Option<(Handle<Node>, Handle<Node>, bool)> {
    match &rw.kernel.nodes[f] {
        Node::Binary(BinOp::Add, x, y) if rw.free(*y) & a_mask == 0 => Some((*x, *y, false)),
        Node::Binary(BinOp::Add, x, y) if rw.free(*x) & a_mask == 0 => Some((*y, *x, false)),
        Node::Binary(BinOp::Sub, x, y) if rw.free(*y) & a_mask == 0 => Some((*x, *y, true)),
        _ => None,
    }
}

/// Matches `a·g + c` (and `a·g`, `g·a`, `g/a`, `g + c`, `g - c`) with `a`, `c`
/// constant along the swept indices.
fn match_linear(
    rw: &mut Rewriter,
    f: Handle<Node>,
    a_mask: u64,
) -> Option<(Handle<Node>, Handle<Node>, Handle<Node>)> {
    let ty = rw.kernel.ty(f);
    let row = |rw: &Rewriter, h: Handle<Node>| rw.free(h) & a_mask == 0;
    let (scaled, c) = match rw.kernel.nodes[f].clone() {
        Node::Binary(BinOp::Add, x, y) if row(rw, y) => (x, y),
        Node::Binary(BinOp::Add, x, y) if row(rw, x) => (y, x),
        Node::Binary(BinOp::Sub, x, y) if row(rw, y) => (x, rw.un(UnOp::Neg, y)),
        _ => (f, rw.float(0.0, ty)),
    };
    let (a, g) = match rw.kernel.nodes[scaled].clone() {
        Node::Binary(BinOp::Mul, x, y) if row(rw, x) => (x, y),
        Node::Binary(BinOp::Mul, x, y) if row(rw, y) => (y, x),
        Node::Binary(BinOp::Div, x, y) if row(rw, y) => {
            let one = rw.float(1.0, ty);
            (rw.bin(BinOp::Div, one, y), x)
        }
        _ => (rw.float(1.0, ty), scaled),
    };
    if g == f {
        return None;
    }
    Some((a, g, c))
}

/// The ops one accumulator contributes to its phase, and the node that
/// replaces its reduction in the statement's value at the finish.
pub struct AccOps {
    /// Before the sweep.
    pub init: Vec<Op>,
    /// In the sweep body.
    pub update: Vec<Op>,
    /// After the sweep, before the statement's store.
    pub before_finish: Vec<Op>,
    /// The finished value.
    pub result: Handle<Node>,
}

/// The running max of an online normalizer within one sweep.
struct Online {
    /// The max's current value (after the branch: the new max).
    current: Handle<Node>,
    /// `exp(old - new)`, valid inside the branch.
    rescale: Handle<Node>,
    /// `new != old` (true for NaN, so NaN propagates).
    cond: Handle<Node>,
    /// The branch body: the rescale factor, each dependent's rescale, the commit.
    then: Vec<Op>,
    /// The commit `max = new`, appended last.
    commit: Op,
}

/// Per-phase emission state: variables hoisted in the sweep body, ops
/// deferred to its end, and the running-max state shared by online sums.
pub struct SweepState<'p> {
    program: &'p mut Program,
    rows: Vec<ExtentId>,
    axes: Vec<ExtentId>,
    hoisted: HashMap<Handle<Node>, Handle<Node>>,
    end: Vec<Op>,
    /// Per running max: its accumulator read, the rescale factor (read
    /// inside the branch), the branch condition, and the ops the branch runs.
    online: HashMap<TensorId, Online>,
    /// Max tensors that online sums of this phase rescale against.
    pub online_wanted: HashSet<TensorId>,
    /// The vector indices of the member being emitted.
    pub vmask: u64,
    /// Top-k states of this sweep: slots (largest first), count, ties.
    topk: HashMap<TensorId, (Vec<VarId>, VarId, VarId)>,
    /// Every accumulator state of this sweep, with its combine law.
    states: Vec<AccState>,
    /// The position in `states` of each online max.
    max_state: HashMap<TensorId, usize>,
}

impl<'p> SweepState<'p> {
    /// State for one phase of a group.
    pub fn new(program: &'p mut Program, rows: &[ExtentId], axes: &[ExtentId]) -> Self {
        SweepState {
            program,
            rows: rows.to_vec(),
            axes: axes.to_vec(),
            hoisted: HashMap::new(),
            end: Vec::new(),
            online: HashMap::new(),
            online_wanted: HashSet::new(),
            vmask: 0,
            topk: HashMap::new(),
            states: Vec::new(),
            max_state: HashMap::new(),
        }
    }

    /// Wraps a sweep body (and the deferred ops) in the loops over the swept indices.
    pub fn wrap_sweep(mut self, _rw: &mut Rewriter, mut body: Vec<Op>) -> Vec<Op> {
        if body.is_empty() {
            return body;
        }
        body.append(&mut self.end);
        // Fill each running max's branch: rescale every dependent, then commit.
        for online in self.online.values_mut() {
            let mut then = std::mem::take(&mut online.then);
            then.push(online.commit.clone());
            fill_branch(&mut body, online.cond, then);
        }
        let n = self.axes.len();
        for (k, &a) in self.axes.iter().enumerate().rev() {
            // The states belong to the outermost loop of the sweep.
            let states = if k == 0 {
                std::mem::take(&mut self.states)
            } else {
                Vec::new()
            };
            let _ = n;
            body = vec![Op::Loop {
                index: a,
                sweep: true,
                range: None,
                states,
                body,
                code: Default::default(),
            }];
        }
        body
    }

    /// `value` with the subexpressions already computed in this sweep's body
    /// replaced by their variables.
    pub fn reuse(&self, rw: &mut Rewriter, value: Handle<Node>) -> Handle<Node> {
        rw.replace(value, &self.hoisted)
    }

    /// Records an accumulator state of this sweep; returns its position.
    fn record(
        &mut self,
        describe: String,
        slots: &[&StateSlot],
        law: Law,
        ty: ScalarType,
    ) -> usize {
        self.states.push(AccState {
            describe,
            slots: slots.iter().map(|s| (*s).clone()).collect(),
            law,
            ty,
        });
        self.states.len() - 1
    }

    /// Computes `value` once into a variable in the sweep body (if it is not
    /// trivial) and returns the node to use instead.
    fn hoist(
        &mut self,
        rw: &mut Rewriter,
        ops: &mut Vec<Op>,
        value: Handle<Node>,
        name: &str,
    ) -> Handle<Node> {
        let value = rw.replace(value, &self.hoisted);
        // A value that varies along a vector index is computed inside the
        // vector loop, where that index is bound.
        // Nor is a gather hoisted out of a vector loop that may run zero
        // times: the kernel only evaluates it for existing elements.
        let gathers_out_of_vector = self.vmask != 0 && has_gather(rw, value);
        if is_leaf(rw, value)
            || reads_inout(rw, value)
            || rw.free(value) & self.vmask != 0
            || gathers_out_of_vector
        {
            return value;
        }
        let ty = rw.kernel.ty(value);
        let v = self.program.var(name, ty);
        ops.push(Op::Set { var: v, value });
        let read = rw.var(v, ty);
        self.hoisted.insert(value, read);
        read
    }
}

/// Puts `then` into the (empty) branch on `cond` in `ops`.
fn fill_branch(ops: &mut [Op], cond: Handle<Node>, then: Vec<Op>) {
    let mut then = Some(then);
    for op in ops.iter_mut() {
        if let Op::If {
            cond: c,
            then: body,
        } = op
            && *c == cond
            && body.is_empty()
            && let Some(t) = then.take()
        {
            *body = t;
        }
    }
}

fn has_gather(rw: &Rewriter, h: Handle<Node>) -> bool {
    crate::fuse::subtree(&rw.kernel, h).into_iter().any(|n| {
        matches!(&rw.kernel.nodes[n], Node::Load { index, .. } if index.iter().any(|i| matches!(i, Index::Gather(_))))
    })
}

fn is_leaf(rw: &Rewriter, h: Handle<Node>) -> bool {
    matches!(
        rw.kernel.nodes[h],
        Node::ConstFloat(_)
            | Node::ConstInt(_)
            | Node::Param(_)
            | Node::IndexValue(_)
            | Node::ExtentLen(_)
            | Node::Var(_)
    )
}

fn reads_inout(rw: &Rewriter, h: Handle<Node>) -> bool {
    crate::fuse::subtree(&rw.kernel, h).into_iter().any(|n| {
        matches!(&rw.kernel.nodes[n], Node::Load { tensor, .. } if rw.kernel.tensor(*tensor).kind == TensorKind::InOut)
    })
}

fn slot(
    rw: &mut Rewriter,
    state: &mut SweepState,
    stmt: &Stmt,
    name: &str,
    ty: ScalarType,
) -> StateSlot {
    let vec_idx: Vec<ExtentId> = stmt
        .indices
        .iter()
        .copied()
        .filter(|e| !state.rows.contains(e))
        .collect();
    if vec_idx.is_empty() {
        return StateSlot::Var(state.program.var(name, ty));
    }
    rw.kernel.tensors.push(Tensor {
        name: name.to_string(),
        kind: TensorKind::Temp,
        ty,
        dims: vec_idx.iter().map(|e| Dim(Affine::var(*e))).collect(),
        pad: None,
    });
    StateSlot::Array(TensorId(rw.kernel.tensors.len() as u32 - 1), vec_idx)
}

fn identity(op: ReduceOp) -> f64 {
    match op {
        ReduceOp::Sum | ReduceOp::Mean => 0.0,
        ReduceOp::Max | ReduceOp::TopK(_) => f64::NEG_INFINITY,
        ReduceOp::Min => f64::INFINITY,
    }
}

fn combine(rw: &mut Rewriter, op: ReduceOp, acc: Handle<Node>, x: Handle<Node>) -> Handle<Node> {
    match op {
        ReduceOp::Sum | ReduceOp::Mean => rw.bin(BinOp::Add, acc, x),
        ReduceOp::Max | ReduceOp::TopK(_) => rw.bin(BinOp::Max, acc, x),
        ReduceOp::Min => rw.bin(BinOp::Min, acc, x),
    }
}

/// Emits one accumulator of `stmt`'s reduction `top`.
pub fn emit_accumulator(
    rw: &mut Rewriter,
    state: &mut SweepState,
    stmt: &Stmt,
    top: Handle<Node>,
    acc: &Accumulator,
) -> AccOps {
    let ty = rw.kernel.ty(top);
    let name = rw.kernel.tensor(stmt.tensor).name.clone();
    let Node::Reduce { axes, .. } = rw.kernel.nodes[top].clone() else {
        unreachable!("a reduction")
    };
    let mut update = Vec::new();
    match acc.clone() {
        Accumulator::Plain {
            op: ReduceOp::TopK(k),
            arg,
        } => topk_state(rw, state, stmt, ty, k as usize, arg, update),
        Accumulator::TopKRestricted { topk, ranked, kept } => {
            let (slots, n, ties) = state.topk[&topk].clone();
            let kth = rw.var(*slots.last().expect("k >= 1"), ty);
            let n_v = rw.var(n, ty);
            let zero = rw.float(0.0, ty);
            let mut total: Option<Handle<Node>> = None;
            let mut add = |rw: &mut Rewriter, term: Handle<Node>| {
                total = Some(match total {
                    None => term,
                    Some(t) => rw.bin(BinOp::Add, t, term),
                });
            };
            for (j, &slot_var) in slots.iter().enumerate() {
                let v = rw.var(slot_var, ty);
                let term = rw.replace(kept, &[(ranked, v)].into_iter().collect());
                let j_f = rw.float(j as f64, ty);
                let real = rw.add(Node::Cmp(CmpOp::Lt, j_f, n_v), ScalarType::Bool);
                let kept_here = rw.add(Node::Cmp(CmpOp::Ge, v, kth), ScalarType::Bool);
                let both = rw.add(Node::Binary(BinOp::And, real, kept_here), ScalarType::Bool);
                let term = rw.select(both, term, zero);
                add(rw, term);
            }
            // Values tied with the threshold beyond the k kept ones.
            let at_kth = rw.replace(kept, &[(ranked, kth)].into_iter().collect());
            let ties_v = rw.var(ties, ty);
            let tied = rw.bin(BinOp::Mul, ties_v, at_kth);
            let some = rw.add(Node::Cmp(CmpOp::Gt, ties_v, zero), ScalarType::Bool);
            let tied = rw.select(some, tied, zero);
            add(rw, tied);
            let result = total.expect("k >= 1");
            AccOps {
                init: Vec::new(),
                update,
                before_finish: Vec::new(),
                result,
            }
        }
        Accumulator::Plain { op, arg } => {
            let s = slot(rw, state, stmt, &format!("{name}.acc"), ty);
            let online = matches!(s, StateSlot::Var(_))
                && op == ReduceOp::Max
                && state.online_wanted.contains(&stmt.tensor);
            let arg = state.hoist(rw, &mut update, arg, &format!("{name}.arg"));
            let init = s.over(vec![s.write(rw.float(identity(op), ty))]);
            let law = match op {
                ReduceOp::Max => Law::Max,
                ReduceOp::Min => Law::Min,
                _ => Law::Sum,
            };
            let kind = if online {
                "running max"
            } else {
                reduce_word(op)
            };
            let at = state.record(format!("`{name}`: {kind}, combine {law:?}"), &[&s], law, ty);
            if online {
                state.max_state.insert(stmt.tensor, at);
                // The running max of an online normalizer: when the max moves
                // (rarely, after the first elements), a branch rescales every
                // sum that depends on it and commits the new max; the common
                // path costs one max and one compare.
                let cur = s.read(rw, ty);
                let new_max = rw.bin(BinOp::Max, cur, arg);
                let new_max = state.hoist(rw, &mut update, new_max, &format!("{name}.new"));
                let moved = rw.add(Node::Cmp(CmpOp::Ne, new_max, cur), ScalarType::Bool);
                let rescale_var = state.program.var(format!("{name}.rescale"), ty);
                // old - max(old, x) ≤ 0 (or NaN).
                let diff = rw.bin(BinOp::Sub, cur, new_max);
                let e = rw.un(UnOp::ExpNonPos, diff);
                let rescale = rw.var(rescale_var, ty);
                update.push(Op::If {
                    cond: moved,
                    then: Vec::new(),
                });
                state.online.insert(
                    stmt.tensor,
                    Online {
                        current: cur,
                        rescale,
                        cond: moved,
                        then: vec![Op::Set {
                            var: rescale_var,
                            value: e,
                        }],
                        commit: s.write(new_max),
                    },
                );
            } else {
                let cur = s.read(rw, ty);
                let next = combine(rw, op, cur, arg);
                update.extend(s.over(vec![s.write(next)]));
            }
            let mut result = s.read(rw, ty);
            if op == ReduceOp::Mean {
                let n = rw.count(&axes, ty);
                result = rw.bin(BinOp::Div, result, n);
            }
            AccOps {
                init,
                update,
                before_finish: Vec::new(),
                result,
            }
        }
        Accumulator::OnlineSum { max, p, q } => {
            let (current, rescale) = {
                let o = &state.online[&max];
                (o.current, o.rescale)
            };
            let s = slot(rw, state, stmt, &format!("{name}.acc"), ty);
            let init = s.over(vec![s.write(rw.float(0.0, ty))]);
            let max_at = state.max_state[&max];
            state.record(
                format!("`{name}`: sum rescaled to the running max"),
                &[&s],
                Law::OnlineSum { max: max_at },
                ty,
            );
            // In the branch where the max moved: S ← S·exp(old - new).
            let cur = s.read(rw, ty);
            let scaled = rw.bin(BinOp::Mul, cur, rescale);
            let rescale_ops = s.over(vec![s.write(scaled)]);
            if let Some(o) = state.online.get_mut(&max) {
                o.then.extend(rescale_ops);
            }
            // Then, with the max committed: S ← S + p·exp(q - max), and
            // exp(q - max) is 0 for q = -inf, also when the max is still
            // -inf (its limit, not the NaN of -inf - -inf); a finite q over a
            // -inf max gives +inf, as the formula does.
            let q = state.hoist(rw, &mut update, q, &format!("{name}.q"));
            let neg_inf = rw.float(f64::NEG_INFINITY, ty);
            let empty = rw.eq(q, neg_inf);
            let zero = rw.float(0.0, ty);
            // The committed max has absorbed q: q - max ≤ 0 (or NaN).
            let shifted = rw.bin(BinOp::Sub, q, current);
            let e = rw.un(UnOp::ExpNonPos, shifted);
            let e = rw.select(empty, zero, e);
            let e = state.hoist(rw, &mut update, e, &format!("{name}.exp"));
            let p = rw.replace(p, &state.hoisted);
            let cur = s.read(rw, ty);
            let term = if is_one(rw, p) {
                e
            } else {
                rw.bin(BinOp::Mul, p, e)
            };
            let next = rw.bin(BinOp::Add, cur, term);
            update.extend(s.over(vec![s.write(next)]));
            let result = s.read(rw, ty);
            AccOps {
                init,
                update,
                before_finish: Vec::new(),
                result,
            }
        }
        Accumulator::TwoPassSum { shift, p, q } => {
            two_pass(rw, state, stmt, ty, &axes, shift, p, q, update)
        }
        Accumulator::Shift { op, g, c, negate } => {
            let s = slot(rw, state, stmt, &format!("{name}.acc"), ty);
            let init = s.over(vec![s.write(rw.float(identity(op), ty))]);
            let law = if op == ReduceOp::Min {
                Law::Min
            } else {
                Law::Max
            };
            state.record(
                format!(
                    "`{name}`: {} of the unshifted term, combine {law:?}",
                    reduce_word(op)
                ),
                &[&s],
                law,
                ty,
            );
            let g = state.hoist(rw, &mut update, g, &format!("{name}.arg"));
            let cur = s.read(rw, ty);
            let next = combine(rw, op, cur, g);
            update.extend(s.over(vec![s.write(next)]));
            let acc = s.read(rw, ty);
            let mut shifted = rw.bin(if negate { BinOp::Sub } else { BinOp::Add }, acc, c);
            let mut init = init;
            if ty.is_float() {
                // An infinite shift: min(g - inf) is NaN, not -inf, when
                // some g is +inf (inf - inf), which min(g) cannot see; the
                // opposite extreme of g, tracked alongside, can. (max alike.)
                let opp_op = if op == ReduceOp::Min {
                    ReduceOp::Max
                } else {
                    ReduceOp::Min
                };
                let o = slot(rw, state, stmt, &format!("{name}.opp"), ty);
                init.extend(o.over(vec![o.write(rw.float(identity(opp_op), ty))]));
                state.record(
                    format!(
                        "`{name}`: {} of the unshifted term (for an infinite shift)",
                        reduce_word(opp_op)
                    ),
                    &[&o],
                    if opp_op == ReduceOp::Min {
                        Law::Min
                    } else {
                        Law::Max
                    },
                    ty,
                );
                let cur = o.read(rw, ty);
                let next = combine(rw, opp_op, cur, g);
                update.extend(o.over(vec![o.write(next)]));
                let inf = f64::INFINITY;
                // The shift that cancels an infinite g of the opposite extreme.
                let bad_c = match (op, negate) {
                    (ReduceOp::Min, true) | (ReduceOp::Max, false) => inf,
                    _ => -inf,
                };
                let bad_g = if op == ReduceOp::Min { inf } else { -inf };
                let bad_c = rw.float(bad_c, ty);
                let bad_g = rw.float(bad_g, ty);
                let opp = o.read(rw, ty);
                let c_bad = rw.eq(c, bad_c);
                let g_bad = rw.eq(opp, bad_g);
                let both = rw.bin(BinOp::And, c_bad, g_bad);
                let nan = rw.float(f64::NAN, ty);
                shifted = rw.select(both, nan, shifted);
            }
            let result = guard_empty(rw, &axes, identity(op), shifted);
            AccOps {
                init,
                update,
                before_finish: Vec::new(),
                result,
            }
        }
        Accumulator::Linear { op, a, g, c } => {
            let s = slot(rw, state, stmt, &format!("{name}.acc"), ty);
            let init = s.over(vec![s.write(rw.float(0.0, ty))]);
            state.record(
                format!("`{name}`: sum of the varying term, combine Sum"),
                &[&s],
                Law::Sum,
                ty,
            );
            let g = state.hoist(rw, &mut update, g, &format!("{name}.arg"));
            let cur = s.read(rw, ty);
            let next = rw.bin(BinOp::Add, cur, g);
            update.extend(s.over(vec![s.write(next)]));
            let mut init = init;
            // An infinite factor: Σ a·g is NaN when some g is 0 or NaN or
            // the g have both signs (inf - inf), which Σg cannot see; the
            // extremes of g, tracked alongside, can.
            let extremes = ty.is_float().then(|| {
                let what = "the varying term (for an infinite factor)";
                let mut ops = (&mut init, &mut update);
                track_extremes(rw, state, stmt, ty, g, ["min", "max"], what, &mut ops)
            });
            let acc = s.read(rw, ty);
            let n = rw.count(&axes, ty);
            let mut value = if op == ReduceOp::Mean {
                let mean = rw.bin(BinOp::Div, acc, n);
                let scaled = rw.bin(BinOp::Mul, a, mean);
                rw.bin(BinOp::Add, scaled, c)
            } else {
                let scaled = rw.bin(BinOp::Mul, a, acc);
                let offset = rw.bin(BinOp::Mul, c, n);
                rw.bin(BinOp::Add, scaled, offset)
            };
            if let Some(ext) = extremes {
                let (lo, hi) = (ext[0].read(rw, ty), ext[1].read(rw, ty));
                let zero = rw.float(0.0, ty);
                let inf = rw.float(f64::INFINITY, ty);
                let pos = rw.add(Node::Cmp(CmpOp::Gt, lo, zero), ScalarType::Bool);
                let neg = rw.add(Node::Cmp(CmpOp::Lt, hi, zero), ScalarType::Bool);
                let one_sign = rw.bin(BinOp::Or, pos, neg);
                let mixed = rw.un(UnOp::Not, one_sign);
                let abs_a = rw.un(UnOp::Abs, a);
                let a_inf = rw.eq(abs_a, inf);
                let bad = rw.bin(BinOp::And, a_inf, mixed);
                let nan = rw.float(f64::NAN, ty);
                value = rw.select(bad, nan, value);
            }
            let result = if op == ReduceOp::Mean {
                value
            } else {
                guard_empty(rw, &axes, 0.0, value)
            };
            AccOps {
                init,
                update,
                before_finish: Vec::new(),
                result,
            }
        }
        Accumulator::Welford { op, g, c, exact } => {
            welford(rw, state, stmt, ty, op, g, c, exact, update)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn welford(
    rw: &mut Rewriter,
    state: &mut SweepState,
    stmt: &Stmt,
    ty: ScalarType,
    op: ReduceOp,
    g: Handle<Node>,
    c: Handle<Node>,
    exact: bool,
    mut update: Vec<Op>,
) -> AccOps {
    let name = rw.kernel.tensor(stmt.tensor).name.clone();
    let n = state.program.var(format!("{name}.n"), ty);
    let mean = state.program.var(format!("{name}.mean"), ty);
    let m2 = state.program.var(format!("{name}.m2"), ty);
    let d = state.program.var(format!("{name}.delta"), ty);
    let at = state.record(
        format!("`{name}`: Welford (N, mean, M2)"),
        &[
            &StateSlot::Var(n),
            &StateSlot::Var(mean),
            &StateSlot::Var(m2),
        ],
        Law::Welford,
        ty,
    );
    let zero = rw.float(0.0, ty);
    let one = rw.float(1.0, ty);
    let mut init = vec![
        Op::Set {
            var: n,
            value: zero,
        },
        Op::Set {
            var: mean,
            value: zero,
        },
        Op::Set {
            var: m2,
            value: zero,
        },
    ];
    let g = state.hoist(rw, &mut update, g, &format!("{name}.arg"));
    let (n_v, mean_v, m2_v, d_v) = (
        rw.var(n, ty),
        rw.var(mean, ty),
        rw.var(m2, ty),
        rw.var(d, ty),
    );
    // Welford's update, in this order: N' = N + 1; δ = g - ḡ; ḡ' = ḡ + δ/N';
    // M2' = M2 + δ·(g - ḡ'). Each op reads the variables as the previous left them.
    let n_next = rw.bin(BinOp::Add, n_v, one);
    update.push(Op::Set {
        var: n,
        value: n_next,
    });
    let delta = rw.bin(BinOp::Sub, g, mean_v);
    update.push(Op::Set {
        var: d,
        value: delta,
    });
    let step = rw.bin(BinOp::Div, d_v, n_v);
    let mean_next = rw.bin(BinOp::Add, mean_v, step);
    update.push(Op::Set {
        var: mean,
        value: mean_next,
    });
    let after = rw.bin(BinOp::Sub, g, mean_v);
    let prod = rw.bin(BinOp::Mul, d_v, after);
    let m2_next = rw.bin(BinOp::Add, m2_v, prod);
    update.push(Op::Set {
        var: m2,
        value: m2_next,
    });
    let mut total = m2_v;
    if !exact {
        let dev = rw.bin(BinOp::Sub, mean_v, c);
        let sq = rw.bin(BinOp::Mul, dev, dev);
        let corr = rw.bin(BinOp::Mul, n_v, sq);
        total = rw.bin(BinOp::Add, total, corr);
        // Welford's state turns an infinite g into NaN, where the formula
        // gives (±inf - c)² = inf for a finite c: track the largest |g|.
        let big = state.program.var(format!("{name}.absmax"), ty);
        state.states[at].slots.push(StateSlot::Var(big));
        let big_v = rw.var(big, ty);
        init.push(Op::Set {
            var: big,
            value: zero,
        });
        let abs_g = rw.un(UnOp::Abs, g);
        let next = rw.bin(BinOp::Max, big_v, abs_g);
        update.push(Op::Set {
            var: big,
            value: next,
        });
        let inf = rw.float(f64::INFINITY, ty);
        let infinite = rw.eq(big_v, inf);
        let abs_c = rw.un(UnOp::Abs, c);
        let gap = rw.bin(BinOp::Sub, big_v, abs_c);
        let limit = rw.bin(BinOp::Mul, gap, gap);
        total = rw.select(infinite, limit, total);
    }
    let result = if op == ReduceOp::Mean {
        rw.bin(BinOp::Div, total, n_v)
    } else {
        let Node::Reduce { axes, .. } = rw.kernel.nodes[stmt_top(rw, stmt, g)].clone() else {
            unreachable!("a reduction")
        };
        guard_empty(rw, &axes, 0.0, total)
    };
    AccOps {
        init,
        update,
        before_finish: Vec::new(),
        result,
    }
}

/// The top-level reduction of `stmt` whose argument mentions `g`.
fn stmt_top(rw: &Rewriter, stmt: &Stmt, g: Handle<Node>) -> Handle<Node> {
    let tops = crate::fuse::top_reductions(&rw.kernel, stmt.value);
    tops.iter()
        .copied()
        .find(|t| crate::fuse::subtree(&rw.kernel, *t).contains(&g))
        .unwrap_or(tops[0])
}

/// `select(count(axes) == 0, empty, value)`: a reduction over nothing is its
/// identity whatever the per-row terms of its finish are (even NaN).
fn guard_empty(
    rw: &mut Rewriter,
    axes: &[ExtentId],
    empty: f64,
    value: Handle<Node>,
) -> Handle<Node> {
    let ty = rw.kernel.ty(value);
    let n = rw.count(axes, ty);
    let zero = rw.float(0.0, ty);
    let none = rw.eq(n, zero);
    let empty = rw.float(empty, ty);
    rw.select(none, empty, value)
}

/// The top-k state in variables: the k largest values so far, largest
/// first (`-inf` until filled), kept sorted by one bubble step per slot; the
/// count of values; and how many values tied with the threshold were pushed
/// out of the slots (so a sum over `e ≥ kth` counts every tie, as the
/// formula does). NaN propagates through the max/min chain into every slot.
#[allow(clippy::too_many_arguments)]
fn topk_state(
    rw: &mut Rewriter,
    state: &mut SweepState,
    stmt: &Stmt,
    ty: ScalarType,
    k: usize,
    arg: Handle<Node>,
    mut update: Vec<Op>,
) -> AccOps {
    let name = rw.kernel.tensor(stmt.tensor).name.clone();
    let slots: Vec<VarId> = (0..k)
        .map(|j| state.program.var(format!("{name}.top{j}"), ty))
        .collect();
    let n = state.program.var(format!("{name}.n"), ty);
    let ties = state.program.var(format!("{name}.ties"), ty);
    let carry = state.program.var(format!("{name}.carry"), ty);
    let hi = state.program.var(format!("{name}.hi"), ty);
    let old_kth = state.program.var(format!("{name}.kth.old"), ty);
    let neg_inf = rw.float(f64::NEG_INFINITY, ty);
    let zero = rw.float(0.0, ty);
    let one = rw.float(1.0, ty);
    let mut init: Vec<Op> = slots
        .iter()
        .map(|&v| Op::Set {
            var: v,
            value: neg_inf,
        })
        .collect();
    init.push(Op::Set {
        var: n,
        value: zero,
    });
    init.push(Op::Set {
        var: ties,
        value: zero,
    });
    let mut parts: Vec<StateSlot> = slots.iter().map(|v| StateSlot::Var(*v)).collect();
    parts.push(StateSlot::Var(n));
    parts.push(StateSlot::Var(ties));
    let refs: Vec<&StateSlot> = parts.iter().collect();
    state.record(
        format!("`{name}`: the {k} largest values, count and ties (no combine)"),
        &refs,
        Law::None,
        ty,
    );
    let x = state.hoist(rw, &mut update, arg, &format!("{name}.arg"));
    let last = *slots.last().expect("k >= 1");
    let last_v = rw.var(last, ty);
    update.push(Op::Set {
        var: old_kth,
        value: last_v,
    });
    update.push(Op::Set {
        var: carry,
        value: x,
    });
    let carry_v = rw.var(carry, ty);
    let hi_v = rw.var(hi, ty);
    for &slot_var in &slots {
        let a = rw.var(slot_var, ty);
        let big = rw.bin(BinOp::Max, a, carry_v);
        let small = rw.bin(BinOp::Min, a, carry_v);
        update.push(Op::Set {
            var: hi,
            value: big,
        });
        update.push(Op::Set {
            var: carry,
            value: small,
        });
        update.push(Op::Set {
            var: slot_var,
            value: hi_v,
        });
    }
    let n_v = rw.var(n, ty);
    let n_next = rw.bin(BinOp::Add, n_v, one);
    update.push(Op::Set {
        var: n,
        value: n_next,
    });
    // Once a real value is pushed out (n > k): ties' = [evicted == kth'] + [kth == kth']·ties.
    let k_f = rw.float(k as f64, ty);
    let full = rw.add(Node::Cmp(CmpOp::Gt, n_v, k_f), ScalarType::Bool);
    let evicted_tie = rw.eq(carry_v, last_v);
    let one_if = rw.select(evicted_tie, one, zero);
    let old_v = rw.var(old_kth, ty);
    let same = rw.eq(old_v, last_v);
    let ties_v = rw.var(ties, ty);
    let kept_ties = rw.select(same, ties_v, zero);
    let sum = rw.bin(BinOp::Add, one_if, kept_ties);
    let next = rw.select(full, sum, zero);
    update.push(Op::Set {
        var: ties,
        value: next,
    });
    state.topk.insert(stmt.tensor, (slots, n, ties));
    AccOps {
        init,
        update,
        before_finish: Vec::new(),
        result: last_v,
    }
}

/// Tracks the least and the largest `g` beside an accumulator, in slots
/// `{name}.{suffix}` merged by Min and Max, for the results an infinite or
/// huge operand decides (`what` names `g` in the plan text); `ops` are the
/// accumulator's init and update ops. Returns the `[least, largest]` slots.
#[allow(clippy::too_many_arguments)]
fn track_extremes(
    rw: &mut Rewriter,
    state: &mut SweepState,
    stmt: &Stmt,
    ty: ScalarType,
    g: Handle<Node>,
    suffixes: [&str; 2],
    what: &str,
    ops: &mut (&mut Vec<Op>, &mut Vec<Op>),
) -> [StateSlot; 2] {
    let name = rw.kernel.tensor(stmt.tensor).name.clone();
    let mut slots = Vec::with_capacity(2);
    for ((op, law), suffix) in [(ReduceOp::Min, Law::Min), (ReduceOp::Max, Law::Max)]
        .into_iter()
        .zip(suffixes)
    {
        let e = slot(rw, state, stmt, &format!("{name}.{suffix}"), ty);
        ops.0
            .extend(e.over(vec![e.write(rw.float(identity(op), ty))]));
        state.record(
            format!("`{name}`: {} of {what}", reduce_word(op)),
            &[&e],
            law,
            ty,
        );
        let cur = e.read(rw, ty);
        let next = combine(rw, op, cur, g);
        ops.1.extend(e.over(vec![e.write(next)]));
        slots.push(e);
    }
    let hi = slots.pop().expect("two slots");
    let lo = slots.pop().expect("two slots");
    [lo, hi]
}

/// Cody–Waite split of ln 2 in three parts whose products with an integer
/// below 2^16 are exact in `f32`.
const LN2_HI: f64 = 0.69140625; // 0x1.62p-1, 8 significant bits
const LN2_MID: f64 = 0.001_739_501_953_125; // 0x1.c8p-10, 8 significant bits
const LN2_LO: f64 = std::f64::consts::LN_2 - LN2_HI - LN2_MID;

/// `v - k·ln 2`, accurate for integer `k` with `|k| < 2^16`.
fn reduce_ln2(rw: &mut Rewriter, v: Handle<Node>, k: Handle<Node>, ty: ScalarType) -> Handle<Node> {
    let mut r = v;
    for part in [LN2_HI, LN2_MID, LN2_LO] {
        let c = rw.float(part, ty);
        let kc = rw.bin(BinOp::Mul, k, c);
        r = rw.bin(BinOp::Sub, r, kc);
    }
    r
}

/// The exponent a finite `q` takes when `q·log2 e` overflows: an integer
/// of the type whose differences with ordinary exponents stay finite.
fn exponent_cap(ty: ScalarType) -> f64 {
    if ty == ScalarType::F64 {
        2f64.powi(1023)
    } else {
        2f64.powi(127)
    }
}

/// A gap `q - m` beyond which `p·exp(q - m)` underflows to 0 (or
/// overflows) for every finite `p` of the type: `ln max + ln(1/min subnormal) + ln max`.
fn vanishing_gap(ty: ScalarType) -> f64 {
    if ty == ScalarType::F64 { 2200.0 } else { 300.0 }
}

#[allow(clippy::too_many_arguments)]
fn two_pass(
    rw: &mut Rewriter,
    state: &mut SweepState,
    stmt: &Stmt,
    ty: ScalarType,
    axes: &[ExtentId],
    shift: Handle<Node>,
    p: Handle<Node>,
    q: Handle<Node>,
    mut update: Vec<Op>,
) -> AccOps {
    let name = rw.kernel.tensor(stmt.tensor).name.clone();
    let s = slot(rw, state, stmt, &format!("{name}.mant"), ty);
    let e_var = state.program.var(format!("{name}.exp"), ty);
    state.record(
        format!("`{name}`: (mantissa, exponent) pairs"),
        &[&s, &StateSlot::Var(e_var)],
        Law::TwoPass,
        ty,
    );
    let zero = rw.float(0.0, ty);
    let neg_inf = rw.float(f64::NEG_INFINITY, ty);
    let pos_inf = rw.float(f64::INFINITY, ty);
    let mut init = s.over(vec![s.write(zero)]);
    init.push(Op::Set {
        var: e_var,
        value: neg_inf,
    });
    let q = state.hoist(rw, &mut update, q, &format!("{name}.q"));
    // The extremes of q decide the sum where the pairs cannot: under an
    // infinite or huge shift (exp(-inf - -inf) is NaN, exp(q - m) with
    // both beyond the exponent's range is 0, 1 or inf by q - m).
    let what = "the exponent's argument (for an infinite or huge shift)";
    let extremes = track_extremes(
        rw,
        state,
        stmt,
        ty,
        q,
        ["qlo", "qhi"],
        what,
        &mut (&mut init, &mut update),
    );
    let log2e = rw.float(std::f64::consts::LOG2_E, ty);
    let scaled = rw.bin(BinOp::Mul, q, log2e);
    let k_raw = rw.un(UnOp::Round, scaled);
    let k_raw = state.hoist(rw, &mut update, k_raw, &format!("{name}.k.raw"));
    let e_cur = rw.var(e_var, ty);
    // An infinite q keeps k finite (so q - k·ln 2 is not inf - inf): +inf
    // uses k = 0 (μ = inf), -inf keeps E (μ = 0); NaN flows through μ. A
    // finite q whose k overflows takes the exponent ±cap.
    let fin = finite(rw, k_raw);
    let q_fin = finite(rw, q);
    let cap = rw.float(exponent_cap(ty), ty);
    let neg_cap = rw.float(-exponent_cap(ty), ty);
    let q_pos = rw.cmp(CmpOp::Gt, q, zero);
    let k_cap = rw.select(q_pos, cap, neg_cap);
    let neg_inf_c = rw.float(f64::NEG_INFINITY, ty);
    let neg_inf_k = rw.eq(k_raw, neg_inf_c);
    let zero_k = rw.float(0.0, ty);
    let other = rw.select(neg_inf_k, e_cur, zero_k);
    let other = rw.select(q_fin, k_cap, other);
    let k = rw.select(fin, k_raw, other);
    let k = state.hoist(rw, &mut update, k, &format!("{name}.k"));
    let e_new = rw.bin(BinOp::Max, e_cur, k);
    let e_new = state.hoist(rw, &mut update, e_new, &format!("{name}.exp.new"));
    // S·2^(E - E'), exactly S while E does not move (also for E = -inf).
    let one = rw.float(1.0, ty);
    let same = rw.eq(e_cur, e_new);
    let diff = rw.bin(BinOp::Sub, e_cur, e_new);
    let pow = rw.un(UnOp::Exp2, diff);
    let rescale = rw.select(same, one, pow);
    let rescale = state.hoist(rw, &mut update, rescale, &format!("{name}.rescale"));
    // μ·2^(k - E'), with μ = exp(q - k·ln 2) in [√½, √2]; 0 for q = -inf.
    // Beyond |k| = 2^16 the reduction loses bits, and beyond the type's
    // integers (or at the cap) r is no longer small: a finite q keeps
    // |r| ≤ 1 so μ stays finite and nonzero (its error is then below what
    // rounding q itself does to exp(q)).
    let r = reduce_ln2(rw, q, k, ty);
    let r_lo = rw.float(-1.0, ty);
    let r_clamped = rw.bin(BinOp::Max, r, r_lo);
    let r_clamped = rw.bin(BinOp::Min, r_clamped, one);
    let r = rw.select(q_fin, r_clamped, r);
    let mu = rw.un(UnOp::Exp, r);
    let dk = rw.bin(BinOp::Sub, k, e_new);
    let pk = rw.un(UnOp::Exp2, dk);
    let term = scale_keeping_nonfinite(rw, mu, pk);
    let is_empty = rw.eq(k, neg_inf);
    let term = rw.select(is_empty, zero, term);
    let term = state.hoist(rw, &mut update, term, &format!("{name}.term"));
    let p = rw.replace(p, &state.hoisted);
    let cur = s.read(rw, ty);
    // An infinite (or NaN) mantissa keeps its value: rescaling it by an
    // underflowing 2^(E - E') would turn inf into inf·0 = NaN.
    let scaled_cur = scale_keeping_nonfinite(rw, cur, rescale);
    let add = if is_one(rw, p) {
        term
    } else {
        rw.bin(BinOp::Mul, p, term)
    };
    let next = rw.bin(BinOp::Add, scaled_cur, add);
    update.extend(s.over(vec![s.write(next)]));
    state.end.push(Op::Set {
        var: e_var,
        value: e_new,
    });
    // Finish: S·2^E·exp(-m) = S·2^(E - k_m)·exp(-(m - k_m·ln 2)), each factor in range.
    let mant = s.read(rw, ty);
    let m_scaled = rw.bin(BinOp::Mul, shift, log2e);
    let km_raw = rw.un(UnOp::Round, m_scaled);
    // The pairs finish exactly while k_m is a small integer of the type;
    // beyond (and for an infinite or NaN m) the extremes of q decide.
    let km_abs = rw.un(UnOp::Abs, km_raw);
    let km_limit = rw.float(
        if ty == ScalarType::F64 {
            2f64.powi(53)
        } else {
            2f64.powi(24)
        },
        ty,
    );
    let fin_m = rw.cmp(CmpOp::Le, km_abs, km_limit);
    let zero_km = rw.float(0.0, ty);
    let km = rw.select(fin_m, km_raw, zero_km);
    let rm = reduce_ln2(rw, shift, km, ty);
    let neg_rm = rw.un(UnOp::Neg, rm);
    let em = rw.un(UnOp::Exp, neg_rm);
    let e_final = rw.var(e_var, ty);
    let de = rw.bin(BinOp::Sub, e_final, km);
    let pe = rw.un(UnOp::Exp2, de);
    let f1 = scale_keeping_nonfinite(rw, mant, pe);
    let f2 = rw.bin(BinOp::Mul, f1, em);
    let is_zero = rw.eq(mant, zero);
    let result = rw.select(is_zero, zero, f2);
    // An infinite mantissa over a finite shift is the sum itself (every
    // factor above is positive and finite in exact arithmetic); computed,
    // the finish's factors leave their range for |m| beyond 2^16·ln 2 and
    // could turn inf into inf·0 = NaN.
    let mant_finite = finite(rw, mant);
    let mant_infinite = rw.un(UnOp::Not, mant_finite);
    let shift_finite = finite(rw, shift);
    let keep = rw.bin(BinOp::And, mant_infinite, shift_finite);
    let result = rw.select(keep, mant, result);
    // A shift beyond the exponent's range: exp(q - m) by the gap between
    // the largest q and m (a q that far from the largest adds nothing).
    let qlo = extremes[0].read(rw, ty);
    let qhi = extremes[1].read(rw, ty);
    let mant_zero = rw.bin(BinOp::Mul, mant, zero);
    let mant_inf = rw.bin(BinOp::Mul, mant, pos_inf);
    let gap = rw.bin(BinOp::Sub, qhi, shift);
    let near = {
        let eg = rw.un(UnOp::Exp, gap);
        rw.bin(BinOp::Mul, mant, eg)
    };
    let t = vanishing_gap(ty);
    let t_hi = rw.float(t, ty);
    let t_lo = rw.float(-t, ty);
    let above = rw.cmp(CmpOp::Gt, gap, t_hi);
    let huge = rw.select(above, mant_inf, near);
    let below = rw.cmp(CmpOp::Lt, gap, t_lo);
    let huge = rw.select(below, mant_zero, huge);
    // m = +inf: p·exp(q - inf) is 0, NaN for q = +inf or p = ±inf (both
    // leave S infinite). m = -inf: ±inf, NaN where some q = -inf.
    let nan = rw.float(f64::NAN, ty);
    let q_neg_inf = rw.eq(qlo, neg_inf);
    let by_neg_inf = rw.select(is_zero, zero, mant_inf);
    let by_neg_inf = rw.select(q_neg_inf, nan, by_neg_inf);
    let m_neg_inf = rw.eq(shift, neg_inf);
    let m_pos_inf = rw.eq(shift, pos_inf);
    let infinite = rw.select(m_neg_inf, by_neg_inf, nan);
    let infinite = rw.select(m_pos_inf, mant_zero, infinite);
    let out_of_range = rw.select(shift_finite, huge, infinite);
    let result = rw.select(fin_m, result, out_of_range);
    let result = guard_empty(rw, axes, 0.0, result);
    AccOps {
        init,
        update,
        before_finish: Vec::new(),
        result,
    }
}

/// `x·f`, or `x` itself when `x` is not finite (so `inf·0` stays `inf`).
pub fn scale_keeping_nonfinite(
    rw: &mut Rewriter,
    x: Handle<Node>,
    f: Handle<Node>,
) -> Handle<Node> {
    let fin = finite(rw, x);
    let scaled = rw.bin(BinOp::Mul, x, f);
    rw.select(fin, scaled, x)
}

/// `x - x == 0`: false for infinities and NaN.
fn finite(rw: &mut Rewriter, x: Handle<Node>) -> Handle<Node> {
    let ty = rw.kernel.ty(x);
    let d = rw.bin(BinOp::Sub, x, x);
    let zero = rw.float(0.0, ty);
    rw.eq(d, zero)
}

/// `tensor[indices] = value` inside loops over the indices that are not rows.
pub fn store_over(stmt: &Stmt, value: Handle<Node>, rows: &[ExtentId]) -> Vec<Op> {
    let mut ops = vec![Op::Store {
        tensor: stmt.tensor,
        index: stmt.indices.clone(),
        value,
    }];
    for &e in stmt.indices.iter().rev() {
        if !rows.contains(&e) {
            ops = vec![Op::Loop {
                index: e,
                sweep: false,
                range: None,
                states: Vec::new(),
                body: ops,
                code: Default::default(),
            }];
        }
    }
    ops
}

/// The unfused loop nest of one statement: loops over its indices around a
/// store of its value (reductions evaluated inline).
pub fn unfused_nest(kernel: &Kernel, stmt: &Stmt) -> Vec<Op> {
    let reduced = reduced_mask(kernel);
    let mut ops = vec![Op::Store {
        tensor: stmt.tensor,
        index: stmt.indices.clone(),
        value: stmt.value,
    }];
    for &e in stmt.indices.iter().rev() {
        ops = vec![Op::Loop {
            index: e,
            sweep: reduced & (1 << e.0) != 0,
            range: None,
            states: Vec::new(),
            body: ops,
            code: Default::default(),
        }];
    }
    ops
}

/// The indices some reduction of the kernel ranges over.
pub fn reduced_mask(kernel: &Kernel) -> u64 {
    kernel.nodes.iter().fold(0, |m, (_, n)| match n {
        Node::Reduce { axes, .. } => axes.iter().fold(m, |m, a| m | 1 << a.0),
        _ => m,
    })
}
