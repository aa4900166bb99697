//! Target ISAs: the host's (for the JIT) and fixed ones (for snapshots).
//!
//! Every ISA is built with `opt_level` from [`IsaOptions`] (default
//! `speed`), `is_pic = false` and the verifier on in debug builds only.

use crate::CodegenError;
use cranelift_codegen::isa::{self, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use std::str::FromStr;
use target_lexicon::Triple;

/// Shared flags for building an ISA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsaOptions {
    /// Cranelift's `opt_level`: `"none"`, `"speed"` or `"speed_and_size"`.
    pub opt_level: &'static str,
    /// Run the CLIF verifier before compiling (costs 25–35% of compile time).
    pub verifier: bool,
}

impl Default for IsaOptions {
    fn default() -> Self {
        IsaOptions {
            opt_level: "speed",
            verifier: cfg!(debug_assertions),
        }
    }
}

fn flags(opts: &IsaOptions) -> Result<settings::Flags, CodegenError> {
    let mut b = settings::builder();
    let set = |b: &mut settings::Builder, k: &str, v: &str| {
        b.set(k, v)
            .map_err(|e| CodegenError::Isa(format!("setting {k}={v}: {e}")))
    };
    set(&mut b, "opt_level", opts.opt_level)?;
    set(&mut b, "is_pic", "false")?;
    set(&mut b, "use_colocated_libcalls", "false")?;
    set(
        &mut b,
        "enable_verifier",
        if opts.verifier { "true" } else { "false" },
    )?;
    Ok(settings::Flags::new(b))
}

/// The host's ISA with every CPU feature the host has.
pub fn host_isa(opts: &IsaOptions) -> Result<OwnedTargetIsa, CodegenError> {
    let builder = cranelift_native::builder().map_err(|e| CodegenError::Isa(e.to_string()))?;
    builder
        .finish(flags(opts)?)
        .map_err(|e| CodegenError::Isa(e.to_string()))
}

/// The ISA for `triple` (e.g. `"x86_64-unknown-linux-gnu"`, `"aarch64-unknown-linux-gnu"`)
/// with default [`IsaOptions`].
///
/// With `host_features` false the ISA has the baseline features of the
/// architecture, so its output does not depend on the machine (snapshots).
/// With `host_features` true, `triple` must be the host's (or `"host"`) and
/// the host's features are detected.
pub fn isa_for(triple: &str, host_features: bool) -> Result<OwnedTargetIsa, CodegenError> {
    isa_with(triple, host_features, &IsaOptions::default())
}

/// [`isa_for`] with explicit options.
pub fn isa_with(
    triple: &str,
    host_features: bool,
    opts: &IsaOptions,
) -> Result<OwnedTargetIsa, CodegenError> {
    if host_features {
        if triple != "host" && Triple::from_str(triple).ok() != Some(Triple::host()) {
            return Err(CodegenError::Isa(format!(
                "host features requested for `{triple}`, which is not the host"
            )));
        }
        return host_isa(opts);
    }
    let triple = if triple == "host" {
        Triple::host()
    } else {
        Triple::from_str(triple).map_err(|e| CodegenError::Isa(format!("`{triple}`: {e}")))?
    };
    let builder = isa::lookup(triple).map_err(|e| CodegenError::Isa(e.to_string()))?;
    builder
        .finish(flags(opts)?)
        .map_err(|e| CodegenError::Isa(e.to_string()))
}
