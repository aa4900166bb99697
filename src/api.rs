//! The one-call API: kernel text in, a shared compiled kernel out.

use std::sync::Arc;

pub use passfold_dsl::fuse::{ExpShift, Reload};
pub use passfold_dsl::{LowerOptions, PlanOptions, Toeplitz};
pub use passfold_runtime::{Arg, CallError, CompiledKernel, Data};

/// Why kernel text did not compile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text has errors; `rendered` shows each with its line, column and source.
    #[error("the kernel has errors:\n{rendered}")]
    Check {
        /// The diagnostics, with spans.
        diagnostics: passfold_dsl::Diagnostics,
        /// The diagnostics rendered with source context.
        rendered: String,
    },
    /// Code generation or the JIT failed (a compiler bug or an unsupported target).
    #[error(transparent)]
    Compile(#[from] passfold_runtime::CompileError),
    /// A plan embedded by `kernel!` does not read back (a passfold version
    /// mismatch between the macro and the library).
    #[error("the embedded plan does not read back: {0}")]
    Embedded(String),
    /// A call was refused or failed (from the functions `kernel!` generates).
    #[error(transparent)]
    Call(#[from] passfold_runtime::CallError),
}

/// Checks, plans (fused) and JIT-compiles kernel text for the host CPU,
/// through the process-wide cache: compiling the same text again returns the
/// same kernel while a handle to it lives.
///
/// ```
/// use passfold::Arg;
/// let softmax = passfold::compile(
///     "kernel softmax(x: f32[b, i]) -> (y: f32[b, i]) {
///          m[b] = max[i](x[b, i]);
///          s[b] = sum[i](exp(x[b, i] - m[b]));
///          y[b, i] = exp(x[b, i] - m[b]) / s[b];
///      }",
/// )?;
/// let x = [1.0f32, 2.0, 3.0, 5.0, 5.0, 5.0];
/// let mut y = [0.0f32; 6];
/// softmax.call(vec![Arg::new(&x[..], &[2, 3]), Arg::new(&mut y[..], &[2, 3])], &[])?;
/// assert!((y[3] - 1.0 / 3.0).abs() < 1e-6);
/// assert!((y[0] + y[1] + y[2] - 1.0).abs() < 1e-6);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn compile(src: &str) -> Result<Arc<CompiledKernel>, Error> {
    compile_with(src, &LowerOptions::default(), PlanOptions::default())
}

/// [`compile`] with extents known when compiling baked into the code
/// (`&[("d", 64)]`: a fixed head size); every call checks its extents
/// against them. Cached per specialization.
pub fn compile_specialized(src: &str, fixed: &[(&str, i64)]) -> Result<Arc<CompiledKernel>, Error> {
    let kernel =
        passfold_dsl::check(src, &LowerOptions::default()).map_err(|diagnostics| Error::Check {
            rendered: diagnostics.render("kernel", src),
            diagnostics,
        })?;
    let plan = passfold_dsl::plan(&kernel, PlanOptions::default());
    Ok(passfold_runtime::cache().get_or_compile_specialized(&plan, fixed)?)
}

/// A plan computed at compile time by `kernel!` (its JSON form), compiled
/// through the cache without parsing or planning again.
pub fn compile_planned(
    plan_json: &str,
    fixed: &[(&str, i64)],
) -> Result<Arc<CompiledKernel>, Error> {
    let plan: passfold_dsl::Plan =
        serde_json::from_str(plan_json).map_err(|e| Error::Embedded(e.to_string()))?;
    Ok(passfold_runtime::cache().get_or_compile_specialized(&plan, fixed)?)
}

/// [`compile`] with explicit front-end and planner options (`f64`, constants,
/// the unfused plan, exp-shift and reload choices).
pub fn compile_with(
    src: &str,
    opts: &LowerOptions,
    plan_opts: PlanOptions,
) -> Result<Arc<CompiledKernel>, Error> {
    let kernel = passfold_dsl::check(src, opts).map_err(|diagnostics| Error::Check {
        rendered: diagnostics.render("kernel", src),
        diagnostics,
    })?;
    let plan = passfold_dsl::plan(&kernel, plan_opts);
    Ok(passfold_runtime::cache().get_or_compile(&plan)?)
}
