//! passfold: a kernel compiler that derives fused reduction kernels from
//! index notation and compiles them with Cranelift.
//!
//! This facade re-exports the pieces a user needs: the front end
//! ([`dsl`]: parse, check, plan, interpret) and the runtime ([`runtime`]:
//! JIT compilation and safe calls). [`cli`] is the command-line tool.

pub mod cli;

pub use passfold_dsl as dsl;
pub use passfold_runtime as runtime;
