//! passfold's front end: text → [`Ast`] → [`Kernel`] → [`Plan`].
//!
//! The central type is [`Kernel`], a checked kernel in index notation: named
//! extents, tensors whose dimensions are affine forms of extents, and
//! statements whose values live in one flat, hash-consed arena of [`Node`]s
//! in topological order. [`interpret`] gives every kernel its meaning;
//! every later stage (planner, code generator, runtime) is tested against it.
//!
//! This crate does no IO and no threading, has no `unsafe`, and does not
//! depend on Cranelift.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod arena;
pub mod ast;
pub mod bind;
pub mod block;
pub mod blockstore;
pub mod bounds;
pub mod cost;
pub mod diag;
pub mod fuse;
pub mod interp;
pub mod ir;
pub mod jam;
pub mod licm;
pub mod lir;
pub mod lower;
pub mod math;
pub mod nancover;
pub mod parse;
pub mod plan;
pub mod recip;
pub mod reorder;
pub mod rules;
mod serde_bits;
pub mod split;
pub mod text;
pub mod threads;
pub mod toeplitz;
pub mod vector;
pub mod verify;

pub use arena::{Arena, Handle};
pub use ast::Ast;
pub use bind::{BindError, bind_extents, gather_limit, shape_of};
pub use diag::{Diagnostic, Diagnostics, Span};
pub use interp::{InterpError, Layout, Precision, interpret, interpret_program};
pub use ir::*;
pub use lower::{LowerOptions, lower};
pub use parse::{parse, parse_tokens};
pub use plan::{LoopNest, Plan, PlanOptions, Toeplitz, Variant, plan};

thread_local! {
    static FRONT_END_RUNS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many times this thread has run [`check`] or [`plan`] (so tests can
/// show that a kernel planned at compile time is not planned again).
pub fn front_end_runs() -> usize {
    FRONT_END_RUNS.with(|c| c.get())
}

pub(crate) fn count_front_end_run() {
    FRONT_END_RUNS.with(|c| c.set(c.get() + 1));
}

/// Parses and checks kernel text.
pub fn check(src: &str, opts: &LowerOptions) -> Result<Kernel, Diagnostics> {
    count_front_end_run();
    let ast = parse(src)?;
    lower(&ast, opts)
}

/// Parses, checks and plans kernel text: the whole front end.
pub fn compile(
    src: &str,
    opts: &LowerOptions,
    plan_opts: PlanOptions,
) -> Result<Plan, Diagnostics> {
    let kernel = check(src, opts)?;
    Ok(plan(&kernel, plan_opts))
}
