//! The runtime's errors: [`CompileError`] and [`CallError`].

use passfold_codegen::CodegenError;
use passfold_dsl::{ScalarType, Span};

/// Why a plan could not be compiled to machine code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The code generator refused the plan (or the host ISA).
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    /// Cranelift failed to compile or link the function (a compiler bug
    /// when the verifier reports it).
    #[error("Cranelift: {0}")]
    Module(String),
    /// A specialization names an extent the kernel does not have, or gives
    /// it a negative length.
    #[error("cannot specialize extent `{name}` to {len}: {why}")]
    Specialization {
        /// The extent's name.
        name: String,
        /// The length asked for.
        len: i64,
        /// What is wrong.
        why: &'static str,
    },
}

/// Why a call was refused or failed. Every variant is detected before any
/// machine code runs, except [`CallError::GatherOutOfRange`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Wrong number of tensor arguments.
    #[error("expected {expected} tensor argument(s), found {found}")]
    ArgCount {
        /// The kernel's count (inputs, in-place, outputs).
        expected: usize,
        /// The caller's count.
        found: usize,
    },
    /// An extent differs from the length the kernel was specialized for.
    #[error("extent `{extent}` is {found}, but the kernel was compiled for {compiled}")]
    Specialized {
        /// The extent.
        extent: String,
        /// The length baked into the code.
        compiled: i64,
        /// The length the call's arguments give.
        found: i64,
    },
    /// Wrong number of extents ([`crate::CompiledKernel::call_extents`]).
    #[error("expected {expected} extent(s), found {found}")]
    ExtentCount {
        /// The kernel's count.
        expected: usize,
        /// The caller's count.
        found: usize,
    },
    /// Wrong number of scalar parameters.
    #[error("expected {expected} parameter(s), found {found}")]
    ParamCount {
        /// The kernel's count.
        expected: usize,
        /// The caller's count.
        found: usize,
    },
    /// A name bound that is not an argument tensor, parameter or extent of the kernel.
    #[error("the kernel has no {what} named `{name}`")]
    UnknownName {
        /// `"argument"`, `"parameter"` or `"extent"`.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// A name bound twice.
    #[error("{what} `{name}` is bound twice")]
    Duplicate {
        /// `"argument"`, `"parameter"` or `"extent"`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// An argument or parameter left unbound.
    #[error("{what} `{name}` is not bound")]
    Missing {
        /// `"argument"` or `"parameter"`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// An argument's element type differs from the declared one.
    #[error("argument `{arg}` is declared `{expected}` but was passed `{found}` data")]
    WrongType {
        /// The argument.
        arg: String,
        /// Declared element type.
        expected: ScalarType,
        /// Element type of the data passed.
        found: ScalarType,
    },
    /// Half-precision storage (`f16`, `bf16`) for an argument the kernel
    /// writes or that is not `f32`.
    #[error(
        "argument `{arg}`: half-precision (f16, bf16) storage is accepted for `f32` inputs only"
    )]
    HalfNotInput {
        /// The argument.
        arg: String,
    },
    /// An output or in-place argument passed as a shared slice.
    #[error("argument `{arg}` is written by the kernel and must be passed as a mutable slice")]
    NotMutable {
        /// The argument.
        arg: String,
    },
    /// A shape with the wrong number of dimensions.
    #[error("argument `{arg}` has {expected} dimension(s), its shape has {found}")]
    WrongRank {
        /// The argument.
        arg: String,
        /// Declared rank.
        expected: usize,
        /// Length of the shape passed.
        found: usize,
    },
    /// Data whose length is not the product of its shape.
    #[error("argument `{arg}` has {found} element(s), its shape {shape:?} needs {expected}")]
    Length {
        /// The argument.
        arg: String,
        /// The shape passed.
        shape: Vec<usize>,
        /// Product of the shape.
        expected: usize,
        /// Length of the data.
        found: usize,
    },
    /// A shape or extent too large to address (element or byte count overflows).
    #[error("`{name}` is too large: its size overflows")]
    TooLarge {
        /// The argument, temporary or extent.
        name: String,
    },
    /// Two arguments give an extent different values.
    #[error(
        "extent `{extent}` is {value} (from `{from}`), but dimension {dim} of `{arg}` is {found}"
    )]
    ExtentConflict {
        /// The extent.
        extent: String,
        /// Its value so far.
        value: i64,
        /// Where that value came from (an argument, or `extent` for an explicit binding).
        from: String,
        /// The conflicting argument.
        arg: String,
        /// The conflicting dimension.
        dim: usize,
        /// That dimension's length.
        found: i64,
    },
    /// An extent that no plain dimension of an argument determines.
    #[error(
        "extent `{extent}` is not bound: no argument has it as a plain dimension; bind it explicitly"
    )]
    UnboundExtent {
        /// The extent.
        extent: String,
    },
    /// An affine dimension (`j - i`) whose length disagrees with the extents.
    #[error(
        "dimension {dim} of `{arg}` is `{form}`, of length {expected} for these extents, but the shape says {found}"
    )]
    DimMismatch {
        /// The argument.
        arg: String,
        /// The dimension.
        dim: usize,
        /// The dimension's affine form.
        form: String,
        /// Its length at the bound extents.
        expected: i64,
        /// The length passed.
        found: usize,
    },
    /// Scratch memory for a temporary could not be allocated.
    #[error("cannot allocate {bytes} bytes for temporary `{tensor}`")]
    Alloc {
        /// The temporary.
        tensor: String,
        /// Bytes requested.
        bytes: usize,
    },
    /// A gathered index fell outside a tensor that has no `pad`. Outputs may
    /// be partly written.
    #[error("a gathered index is out of range in the read of `{tensor}`{}", location(*.line_col))]
    GatherOutOfRange {
        /// The tensor read.
        tensor: String,
        /// The read's place in the source.
        span: Span,
        /// 1-based line and column, when the source text is known.
        line_col: Option<(usize, usize)>,
    },
    /// The kernel returned a status the runtime does not know (a bug).
    #[error("the kernel returned unknown status {status}")]
    Internal {
        /// The status.
        status: i32,
    },
}

fn location(line_col: Option<(usize, usize)>) -> String {
    match line_col {
        Some((line, col)) => format!(" at {line}:{col}"),
        None => String::new(),
    }
}
