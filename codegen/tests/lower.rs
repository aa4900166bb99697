//! Lowering tests: every catalogue kernel and a few constructs compile
//! through Cranelift for both x86-64 (baseline) and aarch64, independent of
//! the host, so we only emit what both back ends lower.

use cranelift_codegen::Context;
use cranelift_codegen::control::ControlPlane;
use passfold_codegen::{CodegenError, clif_text, isa_for, lower};
use passfold_dsl::{LowerOptions, PlanOptions};

const EXTRA: &[&str] = &[
    "kernel g(x: f32[b, i], t: i32[b], r: f32[j - i] pad 0.0) -> (y: f32[b], z: f32[i, j]) {
        y[b] = x[b, t[b]] + max[i](x[b, i]);
        z[i, j] = select(j <= i, r[j - i] + r[i - j + 1], -inf);
    }",
    "kernel ints(a: i32[i], c: i32[i], d: i32[j], n: i32) -> (y: i32[i], s: i32[i], f: f64[i]) {
        y[i] = min(a[i] * c[i] - n, -a[i]) + max(c[i], len(i)) + i;
        s[i] = sum[j](d[j]) + max[j](d[j]) - min[j](d[j] - c[i]);
        f[i] = mean[j](d[j]) + pow(a[i] + 0.0, 3.5) + sign(tanh(a[i] + 0.5)) + 0.0;
    }",
    "kernel tk(x: f64[b, i], w: mut f32[i], p: f32[i] pad 1.5) -> (y: f64[b]) {
        y[b] = topk[i](x[b, i], 3) + log1p(expm1(sum[i](x[b, i])));
        w[i] = sigmoid(softplus(w[i])) * rsqrt(p[i + 1]) + pow(w[i], 0.5) - pow(w[i], 2);
    }",
    "kernel g2(x: f32[i, j], t: i32[i], u: i32[i]) -> (y: f32[i]) {
        y[i] = x[t[i], u[t[i]]] * select(!(x[i, t[i]] > 0.0) && x[i, t[i]] != 1.0 || x[i, t[i]] == 2.0, 1.0, 2.0);
    }",
];

fn sources() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../kernels");
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "pf"))
                .filter_map(|p| Some((p.display().to_string(), std::fs::read_to_string(&p).ok()?)))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.extend(
        EXTRA
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("extra {i}"), s.to_string())),
    );
    out
}

fn plan(src: &str) -> passfold_dsl::Plan {
    let kernel = passfold_dsl::check(src, &LowerOptions::default())
        .unwrap_or_else(|d| panic!("{}", d.render("kernel.pf", src)));
    passfold_dsl::plan(&kernel, PlanOptions::default())
}

#[test]
fn every_kernel_compiles_for_x86_64_and_aarch64() {
    let targets = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"];
    let isas: Vec<_> = targets.iter().map(|t| isa_for(t, false).unwrap()).collect();
    for (name, src) in sources() {
        let plan = plan(&src);
        for isa in &isas {
            let lowered = lower(&plan, &**isa).unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut ctx = Context::for_function(lowered.func);
            if let Err(e) = ctx.compile(&**isa, &mut ControlPlane::default()) {
                panic!(
                    "{name} on {}: {:?}\n{}",
                    isa.triple(),
                    e.inner,
                    ctx.func.display()
                );
            }
        }
    }
}

#[test]
fn clif_text_names_the_kernel() {
    let isa = isa_for("x86_64-unknown-linux-gnu", false).unwrap();
    let text = clif_text(&plan(EXTRA[0]), &*isa).unwrap();
    assert!(
        text.starts_with("function %g(i64, i64, i64, i64) -> i32"),
        "{text}"
    );
}

#[test]
fn topk_above_the_limit_is_an_error() {
    let isa = isa_for("x86_64-unknown-linux-gnu", false).unwrap();
    let src = "kernel t(x: f32[i]) -> (y: f32[j]) { y[j] = topk[i](x[i], 5000) + len(j); }";
    let err = lower(&plan(src), &*isa).unwrap_err();
    assert!(
        matches!(err, CodegenError::TopKTooLarge { k: 5000, .. }),
        "{err}"
    );
}

#[test]
fn unknown_triple_is_an_error() {
    assert!(matches!(
        isa_for("nonsense-triple", false),
        Err(CodegenError::Isa(_))
    ));
}
