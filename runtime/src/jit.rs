//! Building one JIT module for one kernel: helpers, definition, finalization.
//!
//! The module declares every helper of `passfold_codegen::Helper::ALL` first,
//! in order, so their function ids equal the indices the generated code
//! names them by, then defines the kernel function and finalizes it.

use crate::call::{JitCode, OwnedModule};
use crate::{CompileError, helpers};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};
use passfold_codegen::{
    GatherSite, Helper, IsaOptions, host_isa, kernel_signature, lower_specialized,
};
use passfold_dsl::Plan;

fn module_error(e: impl std::fmt::Display) -> CompileError {
    CompileError::Module(e.to_string())
}

/// Lowers and compiles `plan` for the host; returns the code and its gather sites.
/// Extents given in `fixed` are baked in (see `passfold_codegen::lower_specialized`).
pub(crate) fn build_specialized(
    plan: &Plan,
    fixed: &[Option<i64>],
) -> Result<(JitCode, Vec<GatherSite>), CompileError> {
    let options = IsaOptions {
        opt_level: "speed",
        verifier: cfg!(debug_assertions),
    };
    let isa = host_isa(&options)?;
    let lowered = lower_specialized(plan, &*isa, fixed)?;
    let call_conv = isa.default_call_conv();
    let mut builder = JITBuilder::with_isa(isa, default_libcall_names());
    for h in Helper::ALL {
        builder.symbol(h.symbol(), helpers::address(h));
    }
    let mut owned = OwnedModule::new(JITModule::new(builder));
    let module = owned.get_mut();
    for h in Helper::ALL {
        let id = module
            .declare_function(h.symbol(), Linkage::Import, &h.signature(call_conv))
            .map_err(module_error)?;
        if id.as_u32() != h.index() {
            return Err(CompileError::Module(format!(
                "helper `{}` got function id {id}",
                h.symbol()
            )));
        }
    }
    let id = module
        .declare_anonymous_function(&kernel_signature(call_conv))
        .map_err(module_error)?;
    let mut ctx = module.make_context();
    ctx.func = lowered.func;
    module.define_function(id, &mut ctx).map_err(|e| match e {
        cranelift_module::ModuleError::Compilation(inner) => {
            CompileError::Module(format!("{inner:?}\n{}", ctx.func.display()))
        }
        other => module_error(other),
    })?;
    module.finalize_definitions().map_err(module_error)?;
    let code = JitCode::new(owned, id)
        .ok_or_else(|| CompileError::Module("the kernel function is missing".into()))?;
    Ok((code, lowered.gather_sites))
}
