//! passfold: a kernel compiler that derives fused reduction kernels from
//! index notation and compiles them with Cranelift.
//!
//! [`compile`] takes kernel text to a callable, cached kernel; see its
//! example. This facade also re-exports the pieces underneath: the front end
//! ([`dsl`]: parse, check, plan, interpret) and the runtime ([`runtime`]:
//! JIT compilation and safe calls). [`cli`] is the command-line tool.

mod api;
pub mod cli;
pub mod kernelgen;

pub use api::*;
pub use passfold_dsl as dsl;
pub use passfold_runtime as runtime;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
