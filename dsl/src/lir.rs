//! The loop program of a plan: what the code generator lowers.
//!
//! A [`Program`] is a tree of [`Op`]s over the plan's kernel: loops over
//! extents, assignments to scalar variables, and stores to tensors. Values are
//! nodes of the kernel's arena (so the code generator has one expression
//! lowering), read at the program point where they are used: a node that
//! reads [`Node::Var`] sees the variable's current value, and a
//! [`Node::Reduce`] left in a value is evaluated there by an inner loop.
//!
//! Invariants: a `Loop` binds its index for its body and the index is not
//! already bound; the indices used by a value are bound at its op; every
//! variable is set before it is read.

use crate::arena::Handle;
use crate::ir::*;
use std::fmt;

/// A scalar variable of a program.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Var {
    /// A readable name for the text form (`m.run`, `s.acc`).
    pub name: String,
    /// Its type.
    pub ty: ScalarType,
}

/// One step of a loop program.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// `for index in start..end { body }`, the range clamped to
    /// `0..len(index)`; without a range, the whole extent.
    Loop {
        /// The index bound by the loop.
        index: ExtentId,
        /// Whether this loop is a sweep over a reduced index (for the text
        /// form and the pass count).
        sweep: bool,
        /// `(start, end)` as `i32` nodes, or `None` for `0..len(index)`.
        range: Option<(Handle<Node>, Handle<Node>)>,
        /// The accumulator states the sweep carries, with their combine laws
        /// (empty for loops that are not sweeps).
        states: Vec<AccState>,
        /// The body.
        body: Vec<Op>,
        /// Vector or scalar code (decided last, by [`crate::vector::annotate`]).
        code: crate::vector::LoopCode,
    },
    /// `var = value`.
    Set {
        /// The variable.
        var: VarId,
        /// The value.
        value: Handle<Node>,
    },
    /// `if cond { then }`: a branch taken rarely (a running max moving), so
    /// the common path skips its work.
    If {
        /// A `bool` node.
        cond: Handle<Node>,
        /// Ops run when `cond` holds.
        then: Vec<Op>,
    },
    /// Every thread of a split-row call waits here until all have arrived
    /// (see [`crate::threads`]); a no-op for one thread.
    Barrier,
    /// Toeplitz products, all at once: `out[p.., i] = Σ_j c(j - i)·vec[p.., j]`
    /// for every `p` over the leading extents of `out` (the same as
    /// `vec`'s), with `c(d) = first_row[d]` for `d ≥ 0` and
    /// `first_col[-d]` for `d ≤ 0` ([`crate::toeplitz`]). Runs outside any
    /// loop; code generators compute it by FFT, the interpreter directly.
    Toeplitz {
        /// The products, `[p.., row]`, row contiguous.
        out: TensorId,
        /// The vectors, `[p.., col]`.
        vec: TensorId,
        /// `c(j - 0)` over `col`.
        first_row: TensorId,
        /// `c(0 - i)` over `row`.
        first_col: TensorId,
        /// The row index `i`.
        row: ExtentId,
        /// The summed index `j`.
        col: ExtentId,
    },
    /// `tensor[index] = value`, each subscript a bound index variable.
    Store {
        /// The tensor written.
        tensor: TensorId,
        /// Subscripts.
        index: Vec<ExtentId>,
        /// The value.
        value: Handle<Node>,
    },
}

/// One component of an accumulator state: a variable, or a scratch tensor
/// over vector indices.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum StateSlot {
    /// A program variable.
    Var(VarId),
    /// A scratch tensor indexed by plain extents.
    Array(TensorId, Vec<ExtentId>),
}

/// How two partial states of one accumulator merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Law {
    /// `a + b` per slot.
    Sum,
    /// `max(a, b)` per slot (NaN-propagating).
    Max,
    /// `min(a, b)` per slot (NaN-propagating).
    Min,
    /// Online sums against the running max at `states[max]` of the same
    /// sweep: `S = S_a·e^(m_a - m) + S_b·e^(m_b - m)`, `m = max(m_a, m_b)`.
    OnlineSum {
        /// Position of the max's state in the sweep's `states`.
        max: usize,
    },
    /// Two-pass pairs `(S, E)`: `S = S_a·2^(E_a - E) + S_b·2^(E_b - E)`, `E = max`.
    TwoPass,
    /// Welford `(N, mean, M2[, max |g|])` merged by Chan's formula.
    Welford,
    /// No merge (a top-k state): the sweep cannot be split.
    None,
}

/// An accumulator state carried by a sweep.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AccState {
    /// What it accumulates, for the plan text.
    pub describe: String,
    /// Its components, in the order its law expects.
    pub slots: Vec<StateSlot>,
    /// How two partial states merge.
    pub law: Law,
    /// The scalar type of its components.
    pub ty: ScalarType,
}

/// A loop program.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Program {
    /// Its variables.
    pub vars: Vec<Var>,
    /// Its top-level ops.
    pub body: Vec<Op>,
}

impl Program {
    /// Adds a variable. Names are unique in the program text: a second
    /// variable asking for a name already taken becomes `name_2`, and so on.
    pub fn var(&mut self, name: impl Into<String>, ty: ScalarType) -> VarId {
        let base = name.into();
        let taken = |n: &str| self.vars.iter().any(|v| v.name == n);
        let mut name = base.clone();
        let mut k = 2;
        while taken(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.vars.push(Var { name, ty });
        VarId(self.vars.len() as u32 - 1)
    }

    /// Writes the program with the kernel's names, one op per line, and
    /// every node a value uses that is not a plain leaf printed before it.
    pub fn write(&self, f: &mut impl fmt::Write, kernel: &Kernel) -> fmt::Result {
        let mut printed = vec![false; kernel.nodes.len()];
        let reads_var = reads_vars(kernel);
        self.write_ops(f, kernel, &self.body, 1, &mut printed, &reads_var)
    }

    fn write_ops(
        &self,
        f: &mut impl fmt::Write,
        kernel: &Kernel,
        ops: &[Op],
        depth: usize,
        printed: &mut Vec<bool>,
        reads_var: &[bool],
    ) -> fmt::Result {
        let pad = "  ".repeat(depth);
        for op in ops {
            match op {
                Op::Barrier => writeln!(f, "{pad}barrier")?,
                Op::Toeplitz {
                    out,
                    vec,
                    first_row,
                    first_col,
                    row,
                    col,
                } => {
                    let t = |t: &TensorId| kernel.tensor(*t).name.clone();
                    let e = |e: &ExtentId| kernel.extent(*e).name.clone();
                    writeln!(
                        f,
                        "{pad}{}[.., {}] = toeplitz[{}]({}, {}, {}[.., {}]) by FFT",
                        t(out),
                        e(row),
                        e(col),
                        t(first_row),
                        t(first_col),
                        t(vec),
                        e(col)
                    )?
                }
                Op::Loop {
                    index,
                    sweep,
                    range,
                    states,
                    body,
                    code,
                } => {
                    let kind = if *sweep { " sweep" } else { "" };
                    let kind = match code {
                        crate::vector::LoopCode::Plain => kind.to_string(),
                        crate::vector::LoopCode::Vector(v) => format!("{kind} [{}]", v.describe()),
                        crate::vector::LoopCode::Scalar(why) => format!("{kind} [scalar: {why}]"),
                        crate::vector::LoopCode::Blocks(n) => format!("{kind} [blocks of {n}]"),
                    };
                    if let Some((a, b)) = range {
                        self.write_nodes(f, kernel, *a, &pad, printed)?;
                        self.write_nodes(f, kernel, *b, &pad, printed)?;
                    }
                    let range = match range {
                        Some((a, b)) => format!(
                            " in {}..{}",
                            self.operand(kernel, *a),
                            self.operand(kernel, *b)
                        ),
                        None => String::new(),
                    };
                    for st in states {
                        writeln!(f, "{pad}// state {}", st.describe)?;
                    }
                    writeln!(f, "{pad}for {}{range}{kind} {{", kernel.extent(*index).name)?;
                    // Nodes printed inside a loop are scoped to it.
                    let mut inner = printed.clone();
                    self.write_ops(f, kernel, body, depth + 1, &mut inner, reads_var)?;
                    writeln!(f, "{pad}}}")?;
                }
                Op::If { cond, then } => {
                    self.write_nodes(f, kernel, *cond, &pad, printed)?;
                    writeln!(f, "{pad}if {} {{", self.operand(kernel, *cond))?;
                    let mut inner = printed.clone();
                    self.write_ops(f, kernel, then, depth + 1, &mut inner, reads_var)?;
                    writeln!(f, "{pad}}}")?;
                    // Variables may have changed inside.
                    for (p, r) in printed.iter_mut().zip(reads_var) {
                        *p &= !r;
                    }
                }
                Op::Set { var, value } => {
                    self.write_nodes(f, kernel, *value, &pad, printed)?;
                    writeln!(
                        f,
                        "{pad}{} = {}",
                        self.var_name(*var),
                        self.operand(kernel, *value)
                    )?;
                    // A node that reads a variable means its value at each
                    // use: print it again after the variable changes.
                    for (p, r) in printed.iter_mut().zip(reads_var) {
                        *p &= !r;
                    }
                }
                Op::Store {
                    tensor,
                    index,
                    value,
                } => {
                    self.write_nodes(f, kernel, *value, &pad, printed)?;
                    write!(f, "{pad}{}", kernel.tensor(*tensor).name)?;
                    kernel.write_indices(f, index)?;
                    writeln!(f, " = {}", self.operand(kernel, *value))?;
                }
            }
        }
        Ok(())
    }

    /// An operand: a variable's name, or the node's `%N`.
    pub fn operand(&self, kernel: &Kernel, h: Handle<Node>) -> String {
        match kernel.nodes[h] {
            Node::Var(v) => self.var_name(v),
            _ => h.to_string(),
        }
    }

    fn var_name(&self, v: VarId) -> String {
        format!("${}", self.vars[v.0 as usize].name)
    }

    fn write_nodes(
        &self,
        f: &mut impl fmt::Write,
        kernel: &Kernel,
        root: Handle<Node>,
        pad: &str,
        printed: &mut [bool],
    ) -> fmt::Result {
        let mut need = vec![false; root.index() + 1];
        need[root.index()] = true;
        for i in (0..=root.index()).rev() {
            if !need[i] || printed[i] {
                continue;
            }
            for op in kernel.nodes[Handle::from_index(i)].operands() {
                need[op.index()] = true;
            }
        }
        for (i, &needed) in need.iter().enumerate() {
            let h: Handle<Node> = Handle::from_index(i);
            // Variables are named where they are read, never given a line.
            if !needed || printed[i] || matches!(kernel.nodes[h], Node::Var(_)) {
                continue;
            }
            printed[i] = true;
            write!(f, "{pad}{h}: {} = ", kernel.ty(h))?;
            kernel.write_node_with(f, &kernel.nodes[h], &|o| self.operand(kernel, o))?;
            writeln!(f)?;
        }
        Ok(())
    }
}

/// For every node, whether its value depends on a program variable.
pub fn reads_vars(kernel: &Kernel) -> Vec<bool> {
    let mut out = vec![false; kernel.nodes.len()];
    for (h, node) in kernel.nodes.iter() {
        out[h.index()] =
            matches!(node, Node::Var(_)) || node.operands().iter().any(|o| out[o.index()]);
    }
    out
}

/// `ops` inside plain loops over `indices` (outermost first).
pub fn wrap_loops(indices: &[ExtentId], ops: Vec<Op>) -> Vec<Op> {
    let mut ops = ops;
    for &e in indices.iter().rev() {
        ops = vec![Op::Loop {
            index: e,
            sweep: false,
            range: None,
            states: Vec::new(),
            body: ops,
            code: Default::default(),
        }];
    }
    ops
}

impl StateSlot {
    /// The node reading the slot's current value (at its own indices).
    pub fn read(&self, rw: &mut crate::rules::Rewriter, ty: ScalarType) -> Handle<Node> {
        match self {
            StateSlot::Var(v) => rw.var(*v, ty),
            StateSlot::Array(t, idx) => rw.add(
                Node::Load {
                    tensor: *t,
                    index: idx.iter().map(|e| Index::Affine(Affine::var(*e))).collect(),
                },
                ty,
            ),
        }
    }

    /// The op writing `value` to the slot.
    pub fn write(&self, value: Handle<Node>) -> Op {
        match self {
            StateSlot::Var(v) => Op::Set { var: *v, value },
            StateSlot::Array(t, idx) => Op::Store {
                tensor: *t,
                index: idx.clone(),
                value,
            },
        }
    }

    /// `ops` inside loops over the slot's vector indices (none for a variable).
    pub fn over(&self, ops: Vec<Op>) -> Vec<Op> {
        match self {
            StateSlot::Var(_) => ops,
            StateSlot::Array(_, idx) => wrap_loops(idx, ops),
        }
    }
}

/// Whether `op` is a loop or contains one.
pub fn has_loop(op: &Op) -> bool {
    match op {
        Op::Loop { .. } => true,
        Op::If { then, .. } => then.iter().any(has_loop),
        _ => false,
    }
}

/// Every variable `ops` assign (nested loops and branches included), once each.
pub fn sets_in(ops: &[Op], out: &mut Vec<VarId>) {
    for op in ops {
        match op {
            Op::Loop { body, .. } => sets_in(body, out),
            Op::If { then, .. } => sets_in(then, out),
            Op::Set { var, .. } => {
                if !out.contains(var) {
                    out.push(*var)
                }
            }
            Op::Store { .. } | Op::Barrier | Op::Toeplitz { .. } => {}
        }
    }
}

/// The values and conditions of `ops` (nested loops and branches included).
pub fn value_roots(ops: &[Op], out: &mut Vec<Handle<Node>>) {
    for op in ops {
        match op {
            Op::Loop { body, .. } => value_roots(body, out),
            Op::If { cond, then } => {
                out.push(*cond);
                value_roots(then, out);
            }
            Op::Set { value, .. } | Op::Store { value, .. } => out.push(*value),
            Op::Barrier | Op::Toeplitz { .. } => {}
        }
    }
}
