//! The index-notation IR: a checked [`Kernel`].
//!
//! A kernel is a set of named extents (the sizes of its index spaces), tensors
//! whose dimensions are affine expressions over those extents, scalar
//! parameters, and a list of statements `tensor[indices] = value`, where each
//! value is a node of one flat, hash-consed [`Node`] arena.
//!
//! Invariants (checked by [`crate::verify()`]):
//! - operands of a node always point to earlier nodes (the arena is in
//!   topological order), so printing, interpreting and lowering are forward loops;
//! - equal pure nodes share one handle (the builder hash-conses them);
//! - an index variable ranges over the extent of the same name: `i` takes the
//!   values `0..len(i)`; an [`ExtentId`] therefore names both;
//! - every node's free index variables are a subset of the indices of the
//!   statement that uses it, plus the axes of the reductions it is nested in;
//! - statements are in program order; a statement reads only inputs, parameters
//!   and tensors written by earlier statements.

use crate::arena::{Arena, Handle};
use crate::diag::Span;
use std::collections::HashMap;
use std::fmt;

/// An element type.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum ScalarType {
    /// IEEE binary32.
    F32,
    /// IEEE binary64.
    F64,
    /// Two's complement 32-bit integer (targets, gathers, index values).
    I32,
    /// The result of a comparison; never stored in a tensor.
    Bool,
}

impl ScalarType {
    /// Whether this is `f32` or `f64`.
    pub fn is_float(self) -> bool {
        matches!(self, ScalarType::F32 | ScalarType::F64)
    }

    /// Bytes per element in memory (`Bool` is never stored; it reports 1).
    pub fn size_bytes(self) -> usize {
        match self {
            ScalarType::F32 | ScalarType::I32 => 4,
            ScalarType::F64 => 8,
            ScalarType::Bool => 1,
        }
    }

    /// The DSL spelling.
    pub fn name(self) -> &'static str {
        match self {
            ScalarType::F32 => "f32",
            ScalarType::F64 => "f64",
            ScalarType::I32 => "i32",
            ScalarType::Bool => "bool",
        }
    }
}

impl fmt::Display for ScalarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The index of an extent (and of the index variable of the same name).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ExtentId(pub u32);

/// The index of a tensor in [`Kernel::tensors`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct TensorId(pub u32);

/// The index of a scalar parameter in [`Kernel::params`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ParamId(pub u32);

/// The index of a variable of a plan's loop program (see [`crate::lir`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct VarId(pub u32);

/// A named size, bound from the arguments when the kernel is called.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Extent {
    /// The name, shared with the index variable that ranges over it.
    pub name: String,
}

/// `Σ coeff·var + constant` over index variables (or, in a dimension, over extents).
///
/// Terms are sorted by extent and have non-zero coefficients, so equal forms
/// compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct Affine {
    /// `(variable, coefficient)` pairs, sorted, coefficients non-zero.
    pub terms: Vec<(ExtentId, i64)>,
    /// The constant term.
    pub constant: i64,
}

impl Affine {
    /// The form `var`.
    pub fn var(var: ExtentId) -> Self {
        Affine {
            terms: vec![(var, 1)],
            constant: 0,
        }
    }

    /// The form `c`.
    pub fn constant(c: i64) -> Self {
        Affine {
            terms: Vec::new(),
            constant: c,
        }
    }

    /// `self + scale·other`, or `None` on coefficient overflow.
    pub fn add_scaled(&self, other: &Affine, scale: i64) -> Option<Affine> {
        let mut map: std::collections::BTreeMap<ExtentId, i64> =
            self.terms.iter().copied().collect();
        for &(v, c) in &other.terms {
            let e = map.entry(v).or_insert(0);
            *e = e.checked_add(c.checked_mul(scale)?)?;
        }
        Some(Affine {
            terms: map.into_iter().filter(|&(_, c)| c != 0).collect(),
            constant: self
                .constant
                .checked_add(other.constant.checked_mul(scale)?)?,
        })
    }

    /// `scale·self`, or `None` on overflow.
    pub fn scaled(&self, scale: i64) -> Option<Affine> {
        Affine::constant(0).add_scaled(self, scale)
    }

    /// If the form is a single variable with coefficient 1 and no constant.
    pub fn as_var(&self) -> Option<ExtentId> {
        match (self.terms.as_slice(), self.constant) {
            ([(v, 1)], 0) => Some(*v),
            _ => None,
        }
    }

    /// The value at the given variable values (`values[extent]`), saturating.
    pub fn eval(&self, values: &[i64]) -> i64 {
        self.terms.iter().fold(self.constant, |acc, &(v, c)| {
            acc.saturating_add(c.saturating_mul(values[v.0 as usize]))
        })
    }

    /// The smallest and largest value over `var ∈ 0..len(var)`, given extent
    /// lengths; `None` if some variable ranges over an empty extent.
    pub fn range(&self, lens: &[i64]) -> Option<(i64, i64)> {
        let (mut lo, mut hi) = (self.constant, self.constant);
        for &(v, c) in &self.terms {
            let len = lens[v.0 as usize];
            if len <= 0 {
                return None;
            }
            let top = c.saturating_mul(len - 1);
            lo = lo.saturating_add(top.min(0));
            hi = hi.saturating_add(top.max(0));
        }
        Some((lo, hi))
    }

    /// Writes the form with extent names.
    pub fn write(&self, f: &mut impl fmt::Write, kernel_extents: &[Extent]) -> fmt::Result {
        let mut first = true;
        // Positive terms first, so `j - i` reads as written.
        let mut terms = self.terms.clone();
        terms.sort_by_key(|&(v, c)| (c < 0, v));
        for &(v, c) in &terms {
            let name = &kernel_extents[v.0 as usize].name;
            match (first, c) {
                (true, 1) => write!(f, "{name}")?,
                (true, -1) => write!(f, "-{name}")?,
                (true, c) => write!(f, "{c}*{name}")?,
                (false, 1) => write!(f, " + {name}")?,
                (false, -1) => write!(f, " - {name}")?,
                (false, c) if c < 0 => write!(f, " - {}*{name}", -(c as i128))?,
                (false, c) => write!(f, " + {c}*{name}")?,
            }
            first = false;
        }
        match (first, self.constant) {
            (true, c) => write!(f, "{c}"),
            (false, 0) => Ok(()),
            (false, c) if c < 0 => write!(f, " - {}", -(c as i128)),
            (false, c) => write!(f, " + {c}"),
        }
    }
}

/// A dimension of a tensor: the set of values of an affine form over extents.
///
/// `[i]` has length `len(i)` and origin 0; `[j - i]` holds every value of
/// `j - i`, so it has length `len(i) + len(j) - 1` and origin `len(i) - 1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Dim(pub Affine);

impl Dim {
    /// `(origin, length)` of the dimension for the given extent lengths:
    /// element `v` of the form lives at offset `v + origin`. An empty extent
    /// gives length 0. `None` on overflow.
    pub fn layout(&self, lens: &[i64]) -> Option<(i64, i64)> {
        match self.0.range(lens) {
            None => Some((0, 0)),
            Some((lo, hi)) => {
                let len = hi.checked_sub(lo)?.checked_add(1)?;
                Some((lo.checked_neg()?, len))
            }
        }
    }
}

/// What a tensor is to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TensorKind {
    /// Read-only argument.
    Input,
    /// Written by the kernel, never read before it is written.
    Output,
    /// Argument updated in place (`w: mut f32[i]`).
    InOut,
    /// Intermediate defined by a statement; scratch memory of the plan.
    Temp,
}

/// A tensor: an argument or an intermediate.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tensor {
    /// Name in the source.
    pub name: String,
    /// Role.
    pub kind: TensorKind,
    /// Element type.
    pub ty: ScalarType,
    /// Dimensions, outermost first (row-major, dense).
    pub dims: Vec<Dim>,
    /// Value read at an index outside the tensor (`pad 0.0`); `None` means
    /// such reads are impossible (checked) or, for gathers, a run-time error.
    #[serde(with = "crate::serde_bits::option")]
    pub pad: Option<f64>,
}

impl Tensor {
    /// Number of elements for the given extent lengths, `None` on overflow.
    pub fn len(&self, lens: &[i64]) -> Option<i64> {
        self.dims
            .iter()
            .try_fold(1i64, |acc, d| acc.checked_mul(d.layout(lens)?.1))
    }

    /// Whether the tensor has no dimensions.
    pub fn is_scalar(&self) -> bool {
        self.dims.is_empty()
    }
}

/// A scalar argument passed by value (`tau: f32`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Param {
    /// Name in the source.
    pub name: String,
    /// Type (`f32`, `f64` or `i32`).
    pub ty: ScalarType,
}

/// A compile-time constant (`const k: i32 = 4`), substituted during lowering.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConstParam {
    /// Name in the source.
    pub name: String,
    /// Its value for this compilation.
    pub value: i64,
}

/// One subscript of a tensor read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Index {
    /// An affine form over index variables (`i`, `j - i`, `i + 1`).
    Affine(Affine),
    /// A data-dependent index: an `i32` node (`t[b]`).
    Gather(Handle<Node>),
}

/// Element-wise unary operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[allow(missing_docs)]
pub enum UnOp {
    Neg,
    Not,
    Exp,
    Log,
    Log1p,
    Expm1,
    Sqrt,
    Rsqrt,
    Abs,
    Tanh,
    Sigmoid,
    Softplus,
    Sign,
    /// Round to the nearest integer, ties to even (a float result).
    Round,
    /// `2^x`.
    Exp2,
    /// `e^x` for an `x` the planner proved `≤ 0` (or NaN): the shifted
    /// arguments of softmax-like kernels (see [`crate::bounds`]). The same
    /// value as [`UnOp::Exp`]; code generators may use a leaner `exp`.
    ExpNonPos,
}

/// Element-wise binary operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[allow(missing_docs)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    /// NaN-propagating minimum (`min(-0, +0) = -0`).
    Min,
    /// NaN-propagating maximum (`max(-0, +0) = +0`).
    Max,
    /// `a < b ? b : a`: the maximum, except that a NaN `b` is passed over
    /// (a NaN `a` is kept), and of two zeros either may come out. One
    /// `maxps` in vector code against three for [`BinOp::Max`]. Never in a
    /// checked kernel: the planner puts it in the running maxes whose NaN
    /// another reduction carries ([`crate::nancover`]).
    MaxNum,
    And,
    Or,
}

/// Comparisons; the result is `bool`. Any comparison with NaN is false except `!=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[allow(missing_docs)]
pub enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

/// Reductions over one or more index variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ReduceOp {
    /// `Σ`; 0 over an empty range.
    Sum,
    /// NaN-propagating maximum; `-inf` over an empty range.
    Max,
    /// NaN-propagating minimum; `+inf` over an empty range.
    Min,
    /// `Σ / count`; NaN over an empty range.
    Mean,
    /// The k-th largest value (the threshold of the top-k set); `-inf` when
    /// fewer than `k` values; NaN if any value is NaN.
    TopK(u32),
}

/// A node of the expression arena. Types live in [`Kernel::node_types`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Node {
    /// A float constant, stored as `f64` bits so nodes can be hashed.
    ConstFloat(u64),
    /// An integer constant.
    ConstInt(i64),
    /// A scalar parameter.
    Param(ParamId),
    /// The value of an index variable (an `i32`).
    IndexValue(ExtentId),
    /// The length of an extent (`len(i)`, an `i32`).
    ExtentLen(ExtentId),
    /// The current value of a variable of a plan's loop program. Never in a
    /// checked kernel; only the planner creates it.
    Var(VarId),
    /// A tensor read.
    Load {
        /// The tensor read.
        tensor: TensorId,
        /// One subscript per dimension.
        index: Vec<Index>,
    },
    /// `op(arg)`.
    Unary(UnOp, Handle<Node>),
    /// `op(lhs, rhs)`.
    Binary(BinOp, Handle<Node>, Handle<Node>),
    /// `lhs op rhs`.
    Cmp(CmpOp, Handle<Node>, Handle<Node>),
    /// `select(cond, then, else)`.
    Select(Handle<Node>, Handle<Node>, Handle<Node>),
    /// `pow(base, exponent)` with a constant exponent (stored as `f64` bits).
    Powf(Handle<Node>, u64),
    /// A numeric conversion (integer to float, or between float widths).
    Cast(ScalarType, Handle<Node>),
    /// `op[axes](arg)`.
    Reduce {
        /// The reduction.
        op: ReduceOp,
        /// The index variables summed over, in source order.
        axes: Vec<ExtentId>,
        /// The reduced expression.
        arg: Handle<Node>,
    },
}

impl Node {
    /// The operands of this node, in order.
    pub fn operands(&self) -> Vec<Handle<Node>> {
        match self {
            Node::ConstFloat(_)
            | Node::ConstInt(_)
            | Node::Param(_)
            | Node::IndexValue(_)
            | Node::ExtentLen(_)
            | Node::Var(_) => Vec::new(),
            Node::Load { index, .. } => index
                .iter()
                .filter_map(|i| match i {
                    Index::Gather(h) => Some(*h),
                    Index::Affine(_) => None,
                })
                .collect(),
            Node::Unary(_, a) | Node::Powf(a, _) | Node::Cast(_, a) => vec![*a],
            Node::Binary(_, a, b) | Node::Cmp(_, a, b) => vec![*a, *b],
            Node::Select(c, a, b) => vec![*c, *a, *b],
            Node::Reduce { arg, .. } => vec![*arg],
        }
    }
}

/// `tensor[indices] = value`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stmt {
    /// The tensor written (an output, in-place argument or temporary).
    pub tensor: TensorId,
    /// The index variables of the left-hand side, one per dimension.
    pub indices: Vec<ExtentId>,
    /// The value.
    pub value: Handle<Node>,
    /// The statement's span in the source.
    pub span: Span,
}

/// A checked kernel. See the module docs for its invariants.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Kernel {
    /// The kernel's name.
    pub name: String,
    /// Extents, in order of first appearance in the signature, then the body.
    pub extents: Vec<Extent>,
    /// Arguments in signature order, then temporaries in statement order.
    pub tensors: Vec<Tensor>,
    /// Scalar parameters, in signature order.
    pub params: Vec<Param>,
    /// Compile-time constants with their values for this compilation.
    pub consts: Vec<ConstParam>,
    /// The expression arena.
    pub nodes: Arena<Node>,
    /// The type of each node, by handle index.
    pub node_types: Vec<ScalarType>,
    /// The source span of each node, by handle index (side table: `Node`
    /// equality ignores spans; a shared node keeps its first span).
    pub node_spans: Vec<Span>,
    /// The statements, in program order.
    pub stmts: Vec<Stmt>,
}

impl Kernel {
    /// The type of a node.
    pub fn ty(&self, node: Handle<Node>) -> ScalarType {
        self.node_types[node.index()]
    }

    /// The span of a node.
    pub fn span(&self, node: Handle<Node>) -> Span {
        self.node_spans[node.index()]
    }

    /// The tensor with this id.
    pub fn tensor(&self, id: TensorId) -> &Tensor {
        &self.tensors[id.0 as usize]
    }

    /// The extent with this id.
    pub fn extent(&self, id: ExtentId) -> &Extent {
        &self.extents[id.0 as usize]
    }

    /// Looks up an extent by name.
    pub fn extent_id(&self, name: &str) -> Option<ExtentId> {
        self.extents
            .iter()
            .position(|e| e.name == name)
            .map(|i| ExtentId(i as u32))
    }

    /// Looks up a tensor by name.
    pub fn tensor_id(&self, name: &str) -> Option<TensorId> {
        self.tensors
            .iter()
            .position(|t| t.name == name)
            .map(|i| TensorId(i as u32))
    }

    /// Ids of the caller-visible tensors (inputs, outputs, in-place), in order.
    pub fn arguments(&self) -> impl Iterator<Item = TensorId> + '_ {
        self.tensors
            .iter()
            .enumerate()
            .filter(|(_, t)| t.kind != TensorKind::Temp)
            .map(|(i, _)| TensorId(i as u32))
    }

    /// The free index variables of every node, as bit sets over extents
    /// (a kernel has at most 64 extents; the checker enforces it).
    pub fn free_indices(&self) -> Vec<u64> {
        let mut free = vec![0u64; self.nodes.len()];
        for (h, node) in self.nodes.iter() {
            let mut set = 0u64;
            match node {
                Node::IndexValue(e) => set |= 1 << e.0,
                Node::Load { index, .. } => {
                    for i in index {
                        match i {
                            Index::Affine(a) => {
                                for (v, _) in &a.terms {
                                    set |= 1 << v.0;
                                }
                            }
                            Index::Gather(g) => set |= free[g.index()],
                        }
                    }
                }
                Node::Reduce { axes, arg, .. } => {
                    set |= free[arg.index()];
                    for a in axes {
                        set &= !(1 << a.0);
                    }
                }
                other => {
                    for op in other.operands() {
                        set |= free[op.index()];
                    }
                }
            }
            free[h.index()] = set;
        }
        free
    }
}

/// Builds a kernel's node arena with hash-consing.
#[derive(Debug, Default, Clone)]
pub struct NodeBuilder {
    nodes: Arena<Node>,
    types: Vec<ScalarType>,
    spans: Vec<Span>,
    dedup: HashMap<(Node, ScalarType), Handle<Node>>,
}

impl NodeBuilder {
    /// Adds `node` of type `ty`, or returns the existing equal node.
    /// Equal nodes of different types (`0.0` as `f32` and as `f64`) stay apart.
    pub fn add(&mut self, node: Node, ty: ScalarType, span: Span) -> Handle<Node> {
        let key = (node, ty);
        if let Some(&h) = self.dedup.get(&key) {
            return h;
        }
        let h = self.nodes.append(key.0.clone());
        self.types.push(ty);
        self.spans.push(span);
        self.dedup.insert(key, h);
        h
    }

    /// The type of a node added earlier.
    pub fn ty(&self, h: Handle<Node>) -> ScalarType {
        self.types[h.index()]
    }

    /// The span of a node added earlier.
    pub fn span(&self, h: Handle<Node>) -> Span {
        self.spans[h.index()]
    }

    /// The node behind a handle.
    pub fn node(&self, h: Handle<Node>) -> &Node {
        &self.nodes[h]
    }

    /// A builder that continues `kernel`'s arena (for passes that add nodes).
    pub fn from_kernel(kernel: &Kernel) -> Self {
        let mut b = NodeBuilder::default();
        for (h, node) in kernel.nodes.iter() {
            let h2 = b.nodes.append(node.clone());
            debug_assert_eq!(h, h2);
            b.types.push(kernel.node_types[h.index()]);
            b.spans.push(kernel.node_spans[h.index()]);
            b.dedup
                .entry((node.clone(), kernel.node_types[h.index()]))
                .or_insert(h);
        }
        b
    }

    /// Finishes: the arena, its types and spans.
    pub fn finish(self) -> (Arena<Node>, Vec<ScalarType>, Vec<Span>) {
        (self.nodes, self.types, self.spans)
    }
}
