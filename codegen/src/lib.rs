//! passfold's back end: a [`Plan`] → one Cranelift [`Function`].
//!
//! [`lower`] turns a plan's loop program (`plan.program`: loops over
//! extents, assignments to scalar variables, stores) into the CLIF of one
//! function, as simply as possible: each `Loop` a counted loop, each
//! variable a Cranelift `Variable`, each value evaluated at its op in the
//! node's own type, and each reduction left in a value an inner loop nest
//! with a scalar accumulator. Operations happen in the order of
//! `passfold_dsl::interp` (`interpret` for the unfused plan,
//! `interpret_program` for a fused one), so `f32` results match
//! `Precision::Declared`. This crate never owns a JIT module and never
//! executes code: its output is testable as text ([`clif_text`]).
//!
//! # ABI
//!
//! ```text
//! extern "C" fn(tensors: *const *mut u8, extents: *const i64, params: *const f64) -> i32
//! ```
//! with the ISA's default calling convention (SystemV on x86-64 Linux,
//! AAPCS64 on aarch64), which is Rust's `extern "C"`.
//!
//! - `tensors[t]` is the base address of `kernel.tensors[t]`, for every
//!   tensor, temporaries included (scratch memory the caller allocates).
//!   Elements are `f32`, `f64` or `i32`, naturally aligned. Element
//!   `(v_0, .., v_n)` lives at offset `Σ_d (v_d + origin_d) · stride_d`
//!   (in elements), row-major, where `(origin_d, len_d)` is
//!   `Dim::layout` at the call's extents: `passfold_dsl::Layout`.
//! - `extents[e]` is `len(kernel.extents[e])`, non-negative.
//! - `params[p]` is parameter `p` as an `f64`; `f32` parameters are rounded
//!   (`fdemote`), `i32` ones truncated with saturation (`fcvt_to_sint_sat`).
//! - The result is 0 on success. A gathered index outside its dimension on a
//!   tensor without `pad` stops the kernel and returns `site + 1`, where
//!   `site` indexes [`gather_sites`] (see [`site_for_status`]); outputs may
//!   then be partly written.
//!
//! The function reads and writes only inside the tensors' layouts, provided
//! the caller's buffers have the layouts' lengths: affine subscripts of
//! unpadded tensors are in range by the checker's rules, every other
//! subscript is compared with its dimension before the read.
//!
//! Transcendental functions call imported helpers ([`Helper`]), named
//! `UserExternalName { namespace: 0, index: Helper::index() }`.

mod emit;
mod error;
mod expr;
mod helpers;
mod isa;
mod reduce;
mod sites;
mod vector;
pub mod vmath;

pub use error::CodegenError;
pub use helpers::{Helper, MathFn};
pub use isa::{Features, IsaOptions, host_isa, isa_fingerprint, isa_for, isa_with, isa_with_flags};
pub use sites::{GatherSite, gather_sites, site_for_status};

use cranelift_codegen::ir::{AbiParam, Function, Signature, UserFuncName, types};
use cranelift_codegen::isa::{CallConv, TargetIsa};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use passfold_dsl::Plan;

/// The largest `k` of `topk[..](x, k)` the scalar lowering supports.
pub const MAX_TOPK: u32 = 1024;

/// A lowered kernel: the function and what the caller must provide for it.
#[derive(Debug, Clone)]
pub struct Lowered {
    /// The kernel's function, with the ABI of the crate docs.
    pub func: Function,
    /// The reads whose failure the function reports (status = position + 1).
    pub gather_sites: Vec<GatherSite>,
    /// The helpers the function calls.
    pub helpers: Vec<Helper>,
}

/// The kernel function's signature (see the crate docs).
pub fn kernel_signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    for _ in 0..4 {
        sig.params.push(AbiParam::new(types::I64));
    }
    sig.returns.push(AbiParam::new(types::I32));
    sig
}

/// Lowers `plan` for `isa` (only its pointer width, calling convention and
/// front-end configuration matter).
pub fn lower(plan: &Plan, isa: &dyn TargetIsa) -> Result<Lowered, CodegenError> {
    lower_specialized(plan, isa, &[])
}

/// [`lower`] with some extents known when compiling: `fixed[e]` is
/// `Some(len)` for an extent baked into the code as a constant (the caller
/// must check every call's extents against it), `None` (or absent) for one
/// read from the call's `extents` array.
pub fn lower_specialized(
    plan: &Plan,
    isa: &dyn TargetIsa,
    fixed: &[Option<i64>],
) -> Result<Lowered, CodegenError> {
    if isa.pointer_type() != types::I64 {
        return Err(CodegenError::PointerWidth);
    }
    let kernel = &plan.kernel;
    let call_conv = isa.default_call_conv();
    let mut func = Function::with_name_signature(
        UserFuncName::testcase(&kernel.name),
        kernel_signature(call_conv),
    );
    let mut fctx = FunctionBuilderContext::new();
    let gather_sites = gather_sites(kernel);
    let helpers = {
        let builder = FunctionBuilder::new(&mut func, &mut fctx);
        let mut emitter = emit::Emitter::new(
            kernel,
            builder,
            call_conv,
            &gather_sites,
            Features::of(isa),
            fixed,
        );
        emitter.run(plan)?;
        emitter.finish(isa.frontend_config())
    };
    Ok(Lowered {
        func,
        gather_sites,
        helpers,
    })
}

/// The CLIF text of `plan`'s function for `isa` (`passfold clif`).
pub fn clif_text(plan: &Plan, isa: &dyn TargetIsa) -> Result<String, CodegenError> {
    Ok(lower(plan, isa)?.func.display().to_string())
}

/// The machine code of `plan`'s function for `isa`, as Cranelift's
/// register-allocated listing (`passfold clif --asm`): what to read when a
/// change should have removed spills or instructions.
pub fn asm_text(plan: &Plan, isa: &dyn TargetIsa) -> Result<String, CodegenError> {
    let func = lower(plan, isa)?.func;
    let mut ctx = cranelift_codegen::Context::for_function(func);
    ctx.set_disasm(true);
    let mut ctrl = cranelift_codegen::control::ControlPlane::default();
    let code = ctx
        .compile(isa, &mut ctrl)
        .map_err(|e| CodegenError::Isa(format!("{:?}", e.inner)))?;
    Ok(code.vcode.clone().unwrap_or_default())
}
