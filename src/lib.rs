//! passfold: a kernel compiler that derives fused reduction kernels from
//! index notation and compiles them with Cranelift.
//!
//! [`compile`] takes kernel text to a callable, cached kernel; see its
//! example. This facade also re-exports the pieces underneath: the front end
//! ([`dsl`]: parse, check, plan, interpret) and the runtime ([`runtime`]:
//! JIT compilation and safe calls). [`cli`] is the command-line tool.
//!
//! [`kernel!`] checks and plans a kernel when your crate compiles (a
//! malformed kernel is a compile error at the offending token) and gives it
//! a typed function:
//!
//! ```
//! passfold::kernel! {
//!     kernel logsumexp(x: f32[b, i]) -> (y: f32[b]) {
//!         m[b] = max[i](x[b, i]);
//!         y[b] = m[b] + log(sum[i](exp(x[b, i] - m[b])));
//!     }
//! }
//! let x = [0.0f32, 0.0, 1000.0, 1000.0];
//! let mut y = [0.0f32; 2];
//! logsumexp::call(2, 2, &x, &mut y)?;
//! assert!((y[0] - 2f32.ln()).abs() < 1e-6 && (y[1] - (1000.0 + 2f32.ln())).abs() < 1e-3);
//! # Ok::<(), passfold::Error>(())
//! ```

mod api;
pub mod cli;
pub mod kernelgen;

pub use api::*;
pub use passfold_dsl as dsl;
pub use passfold_macros::kernel;
pub use passfold_runtime as runtime;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
