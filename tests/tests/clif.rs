//! The Cranelift IR of a few kernels for a fixed target (x86-64 with
//! baseline flags), so snapshots do not depend on the machine.

use passfold_dsl::{LowerOptions, PlanOptions};

fn clif(name: &str, unfused: bool) -> String {
    let src = passfold_kernels::get(name)
        .expect("catalogue kernel")
        .source;
    let kernel = passfold_dsl::check(src, &LowerOptions::default()).expect("checks");
    let plan = passfold_dsl::plan(
        &kernel,
        PlanOptions {
            unfused,
            ..Default::default()
        },
    );
    let isa =
        passfold_codegen::isa_for("x86_64-unknown-linux-gnu", false).expect("x86-64 is built in");
    passfold_codegen::clif_text(&plan, &*isa).expect("lowers")
}

#[test]
fn clif_snapshots() {
    for (name, unfused) in [
        ("softmax", false),
        ("softmax", true),
        ("cross_entropy", false),
        ("attention_bias", false),
    ] {
        let label = if unfused { "unfused" } else { "fused" };
        insta::assert_snapshot!(format!("clif_{name}_{label}"), clif(name, unfused));
    }
}

/// Every catalogue kernel, f32 and f64, fused and unfused, vector and
/// scalar code, compiles to machine code for aarch64 (NEON) and for the
/// x86-64 baseline (SSE2: no SSE4.1 rounding or `ptest`, no FMA), so the
/// code generator only emits what both back ends lower.
#[test]
fn every_catalogue_kernel_lowers_for_aarch64() {
    for triple in ["aarch64-unknown-linux-gnu", "x86_64-unknown-linux-gnu"] {
        compile_catalogue_for(triple);
    }
}

fn compile_catalogue_for(triple: &str) {
    let isa = passfold_codegen::isa_for(triple, false).expect("the target is built in");
    for k in passfold_kernels::CATALOGUE {
        for float in [None, Some(passfold_dsl::ScalarType::F64)] {
            let opts = LowerOptions {
                float,
                ..Default::default()
            };
            let kernel = passfold_dsl::check(k.source, &opts).unwrap();
            for (unfused, scalar) in [(false, false), (true, false), (false, true), (true, true)] {
                let plan = passfold_dsl::plan(
                    &kernel,
                    PlanOptions {
                        unfused,
                        scalar,
                        ..Default::default()
                    },
                );
                let lowered = passfold_codegen::lower(&plan, &*isa)
                    .unwrap_or_else(|e| panic!("{}: {e}", k.name));
                let mut ctx = cranelift_codegen::Context::for_function(lowered.func);
                ctx.compile(&*isa, &mut Default::default())
                    .unwrap_or_else(|e| {
                        panic!(
                            "{} ({triple}, {float:?}, unfused {unfused}, scalar {scalar}): {e:?}",
                            k.name
                        )
                    });
            }
        }
    }
}
