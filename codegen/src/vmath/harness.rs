//! A map over arrays applying one [`MathOp`], for tests and benchmarks of
//! the math functions (not kernel code: kernels come from plans).
//!
//! ```text
//! extern "C" fn(x: *const T, y: *const T, out0: *mut T, out1: *mut T, n: i64)
//! ```
//! applies the op to `x[i]` (and `y[i]` for `scale_by_pow2`), writing
//! `out0[i]` (and `exp_split`'s `k` to `out1[i]`) for `i < n`, one value of
//! type `ty` (`f32x4`, `f64x2`, `f32` or `f64`) at a time: `n` must be a
//! multiple of the lane count. Pointers need only element alignment.

use super::MathOp;
use crate::isa::Features;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    AbiParam, Function, InstBuilder, MemFlagsData, Signature, Type, UserFuncName, types,
};
use cranelift_codegen::isa::{CallConv, TargetIsa};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

/// The signature of [`map_function`]'s functions.
pub fn map_signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    for _ in 0..5 {
        sig.params.push(AbiParam::new(types::I64));
    }
    sig
}

/// A function for `isa` (its calling convention and front-end config)
/// mapping `op` over arrays in steps of one `ty` value (see the module
/// docs).
pub fn map_function(op: MathOp, ty: Type, features: Features, isa: &dyn TargetIsa) -> Function {
    let call_conv = isa.default_call_conv();
    let name = UserFuncName::testcase(format!("{}_{ty}", op.name()));
    let mut func = Function::with_name_signature(name, map_signature(call_conv));
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let entry = b.create_block();
    let header = b.create_block();
    let body = b.create_block();
    let exit = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.append_block_param(header, types::I64);

    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let (x, y, out0, out1, n) = (params[0], params[1], params[2], params[3], params[4]);
    let elem = i64::from(ty.lane_type().bytes());
    let n_bytes = b.ins().imul_imm_s(n, elem);
    let zero = b.ins().iconst(types::I64, 0);
    b.ins().jump(header, &[zero.into()]);

    b.switch_to_block(header);
    let offset = b.block_params(header)[0];
    let more = b.ins().icmp(IntCC::SignedLessThan, offset, n_bytes);
    b.ins().brif(more, body, &[], exit, &[]);

    b.switch_to_block(body);
    let flags = MemFlagsData::new().with_notrap();
    let x_addr = b.ins().iadd(x, offset);
    let xv = b.ins().load(ty, flags, x_addr, 0);
    let y_addr = b.ins().iadd(y, offset);
    let yv = if op == MathOp::ScaleByPow2 {
        b.ins().load(ty, flags, y_addr, 0)
    } else {
        xv
    };
    let (r0, r1) = op.emit(&mut b, features, xv, yv);
    let out0_addr = b.ins().iadd(out0, offset);
    b.ins().store(flags, r0, out0_addr, 0);
    if let Some(r1) = r1 {
        let out1_addr = b.ins().iadd(out1, offset);
        b.ins().store(flags, r1, out1_addr, 0);
    }
    let step = i64::from(ty.bytes());
    let next = b.ins().iadd_imm_s(offset, step);
    b.ins().jump(header, &[next.into()]);

    b.switch_to_block(exit);
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(isa.frontend_config());
    func
}
