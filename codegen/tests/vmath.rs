//! Every `vmath` function compiles, without calls, for x86-64 (baseline and
//! with AVX + FMA + SSE4.1) and aarch64, with and without `fma`, for every
//! value type: the library only emits what both back ends lower inline.

use cranelift_codegen::Context;
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::types;
use passfold_codegen::vmath::{MathOp, map_function};
use passfold_codegen::{Features, IsaOptions, isa_fingerprint, isa_for, isa_with_flags};

const X86: &str = "x86_64-unknown-linux-gnu";
const ARM: &str = "aarch64-unknown-linux-gnu";
const TYPES: [cranelift_codegen::ir::Type; 4] =
    [types::F32X4, types::F64X2, types::F32, types::F64];

fn compile_all(isa: &dyn cranelift_codegen::isa::TargetIsa, features: Features) {
    for op in MathOp::ALL {
        for ty in TYPES {
            let func = map_function(op, ty, features, isa);
            let mut ctx = Context::for_function(func);
            let what = format!("{} {ty} on {} with {features:?}", op.name(), isa.triple());
            let code = match ctx.compile(isa, &mut ControlPlane::default()) {
                Ok(code) => code,
                Err(e) => panic!("{what}: {:?}\n{}", e.inner, ctx.func.display()),
            };
            assert!(
                code.buffer.relocs().is_empty(),
                "{what} calls a library function:\n{}",
                ctx.func.display()
            );
        }
    }
}

#[test]
fn compiles_for_aarch64_with_and_without_fma() {
    let isa = isa_for(ARM, false).unwrap();
    assert!(Features::of(&*isa).fma);
    compile_all(&*isa, Features::of(&*isa));
    compile_all(&*isa, Features::PORTABLE);
}

#[test]
fn compiles_for_x86_64_baseline() {
    let isa = isa_for(X86, false).unwrap();
    assert_eq!(Features::of(&*isa), Features::PORTABLE);
    compile_all(&*isa, Features::of(&*isa));
}

#[test]
fn compiles_for_x86_64_with_avx_fma_sse41() {
    let flags = [
        "has_sse3",
        "has_ssse3",
        "has_sse41",
        "has_sse42",
        "has_avx",
        "has_fma",
    ];
    let isa = isa_with_flags(X86, &flags, &IsaOptions::default()).unwrap();
    let features = Features::of(&*isa);
    assert!(features.fma && features.round && features.avx && !features.avx2);
    compile_all(&*isa, features);
}

#[test]
fn fingerprint_names_triple_opt_level_and_flags() {
    let opts = IsaOptions::default();
    let base = isa_fingerprint(&*isa_for(X86, false).unwrap());
    assert_eq!(base, format!("{X86} opt_level=speed"));
    let fma = isa_with_flags(X86, &["has_avx", "has_fma"], &opts).unwrap();
    assert_eq!(
        isa_fingerprint(&*fma),
        format!("{X86} opt_level=speed has_avx has_fma")
    );
    assert!(isa_fingerprint(&*isa_for(ARM, false).unwrap()).starts_with(ARM));
}
