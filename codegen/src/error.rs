//! [`CodegenError`]: what the code generator refuses to lower.
//!
//! A verified kernel never makes the code generator panic; anything it
//! cannot (yet) lower comes back as one of these variants, with the span of
//! the offending node where there is one.

use passfold_dsl::Span;

/// Why a plan could not be lowered to CLIF (or an ISA could not be built).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodegenError {
    /// `topk[..](x, k)` with `k` above [`crate::MAX_TOPK`]: the scalar
    /// lowering keeps the `k` largest values in a stack array.
    #[error("`topk` with k = {k} is not supported (at most {max})")]
    TopKTooLarge {
        /// The requested `k`.
        k: u32,
        /// The largest supported `k`.
        max: u32,
        /// The reduction's place in the source.
        span: Span,
    },
    /// A node shape the checker does not produce and the code generator
    /// does not lower (for example a float-to-integer cast).
    #[error("cannot lower {what}")]
    Unsupported {
        /// What was found.
        what: String,
        /// The node's place in the source.
        span: Span,
    },
    /// An index variable is read where no loop binds it (a plan bug).
    #[error("index `{extent}` is not bound by any enclosing loop")]
    UnboundIndex {
        /// The extent's name.
        extent: String,
    },
    /// The target's pointers are not 64 bits wide.
    #[error("only 64-bit targets are supported")]
    PointerWidth,
    /// The target triple is unknown or its ISA could not be built.
    #[error("target ISA: {0}")]
    Isa(String),
}
