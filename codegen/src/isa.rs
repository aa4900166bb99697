//! Target ISAs: the host's (for the JIT) and fixed ones (for snapshots).
//!
//! Every ISA is built with `opt_level` from [`IsaOptions`] (default
//! `speed`), `is_pic = false` and the verifier on in debug builds only.
//!
//! The host ISA enables every CPU feature cranelift-native detects (on
//! x86-64: SSE3 to SSE4.2, AVX, AVX2, FMA, AVX-512, BMI, ...); a fixed
//! triple without host features is the architecture's portable baseline
//! (x86-64: SSE2 only, so no FMA and no SSE4.1 rounding). The code
//! generator reads what it may use from [`Features::of`], and code compiled
//! for one ISA must be cached under [`isa_fingerprint`], which names every
//! enabled flag, so it never runs where the features differ.

use crate::CodegenError;
use cranelift_codegen::isa::{self, OwnedTargetIsa, TargetIsa};
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

/// [`isa_with`] for a fixed `triple` with extra ISA flags enabled on top of
/// its baseline, e.g. `["has_avx", "has_fma", "has_sse41"]` on x86-64: a
/// machine-independent ISA for a known feature level.
pub fn isa_with_flags(
    triple: &str,
    isa_flags: &[&str],
    opts: &IsaOptions,
) -> Result<OwnedTargetIsa, CodegenError> {
    let triple = if triple == "host" {
        Triple::host()
    } else {
        Triple::from_str(triple).map_err(|e| CodegenError::Isa(format!("`{triple}`: {e}")))?
    };
    let mut builder = isa::lookup(triple).map_err(|e| CodegenError::Isa(e.to_string()))?;
    for flag in isa_flags {
        builder
            .enable(flag)
            .map_err(|e| CodegenError::Isa(format!("enabling {flag}: {e}")))?;
    }
    builder
        .finish(flags(opts)?)
        .map_err(|e| CodegenError::Isa(e.to_string()))
}

/// What the code generator may emit for an ISA, read from its flags.
///
/// `fma` and `round` are what `vmath` and the lowering consult; the x86-64
/// flags are exposed for cost models and reports (all `false` elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Features {
    /// `fma` on `f32`, `f64`, `f32x4`, `f64x2` is one instruction (x86-64:
    /// AVX and FMA; aarch64: always). Without it Cranelift lowers `fma` to
    /// a library call per lane, so code uses `fmul` + `fadd` instead.
    pub fma: bool,
    /// `nearest`/`floor`/`ceil`/`trunc` are instructions (x86-64: SSE4.1;
    /// aarch64: always); without it they are library calls.
    pub round: bool,
    /// x86-64 SSE4.1.
    pub sse41: bool,
    /// x86-64 AVX (VEX encodings; Cranelift still allocates only xmm0–15).
    pub avx: bool,
    /// x86-64 AVX2.
    pub avx2: bool,
    /// x86-64 AVX-512F.
    pub avx512f: bool,
}

impl Features {
    /// The portable baseline: no FMA, no rounding instructions.
    pub const PORTABLE: Features = Features {
        fma: false,
        round: false,
        sse41: false,
        avx: false,
        avx2: false,
        avx512f: false,
    };

    /// The features `isa` was built with.
    pub fn of(isa: &dyn TargetIsa) -> Features {
        let enabled: Vec<&str> = isa
            .isa_flags()
            .iter()
            .filter(|v| v.as_bool() == Some(true))
            .map(|v| v.name)
            .collect();
        let has = |name: &str| enabled.contains(&name);
        match isa.triple().architecture {
            target_lexicon::Architecture::X86_64 => Features {
                fma: has("has_avx") && has("has_fma"),
                round: has("has_sse41"),
                sse41: has("has_sse41"),
                avx: has("has_avx"),
                avx2: has("has_avx2"),
                avx512f: has("has_avx512f"),
            },
            target_lexicon::Architecture::Aarch64(_) => Features {
                fma: true,
                round: true,
                ..Features::PORTABLE
            },
            _ => Features::PORTABLE,
        }
    }
}

/// A stable text naming everything about `isa` that changes generated
/// code: the triple, `opt_level` and every enabled ISA flag, e.g.
/// `x86_64-unknown-linux-gnu opt_level=speed has_avx has_fma has_sse41 ...`.
/// Compiled-kernel caches key on it.
pub fn isa_fingerprint(isa: &dyn TargetIsa) -> String {
    let mut out = format!("{} opt_level={}", isa.triple(), isa.flags().opt_level());
    let mut enabled: Vec<&str> = isa
        .isa_flags()
        .iter()
        .filter(|v| v.as_bool() == Some(true))
        .map(|v| v.name)
        .collect();
    enabled.sort_unstable();
    for name in enabled {
        out.push(' ');
        out.push_str(name);
    }
    out
}
