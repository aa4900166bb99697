//! Toeplitz products by FFT (`kernelized_attention_rpe`): the FFT form, the
//! direct form and the per-call choice between them agree with the `f64`
//! interpreter.

use crate::common::{Fill, close, random_args};
use passfold_dsl::{LowerOptions, Precision, Toeplitz};

fn rpe() -> passfold_dsl::Kernel {
    let src = passfold_kernels::CATALOGUE
        .iter()
        .find(|k| k.name == "kernelized_attention_rpe")
        .expect("in the catalogue")
        .source;
    passfold_dsl::check(src, &LowerOptions::default()).expect("checks")
}

fn plan(kernel: &passfold_dsl::Kernel, toeplitz: Toeplitz) -> passfold_dsl::Plan {
    passfold_dsl::plan(
        kernel,
        passfold_dsl::PlanOptions {
            toeplitz,
            ..Default::default()
        },
    )
}

/// Extents in the kernel's order `i, c, j, e, f`: empty and one-element
/// sequences, `i ≠ j` both ways, and products above the helper's direct
/// threshold (1024 matrix entries), so the FFT path runs. Inputs uniform in
/// ±0.5 (features, keys, values, relative-position logits). Outputs within
/// `1e-4` relative (f32 sums of up to a few hundred terms) of the
/// interpreter's `f64` direct evaluation.
#[test]
fn fft_and_direct_forms_match_the_interpreter() {
    let kernel = rpe();
    let names: Vec<&str> = kernel.extents.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["i", "c", "j", "e", "f"]);
    let fft = plan(&kernel, Toeplitz::Always);
    let text = fft.to_string();
    assert!(text.contains("toeplitz[j]"), "{text}");
    assert!(fft.variant.is_none());
    let direct = plan(&kernel, Toeplitz::Never);
    assert!(!direct.program_has_toeplitz() && direct.variant.is_none());
    let auto = plan(&kernel, Toeplitz::Auto);
    assert!(auto.variant.is_some());
    let compiled: Vec<_> = [&fft, &direct, &auto]
        .into_iter()
        .map(|p| passfold_runtime::compile(p).expect("compiles"))
        .collect();
    let cases: [[i64; 5]; 8] = [
        [0, 2, 3, 2, 2],
        [3, 2, 0, 2, 2],
        [1, 1, 1, 1, 1],
        [3, 2, 1, 3, 2],
        [5, 3, 7, 2, 4],
        [17, 4, 9, 5, 3],
        [70, 3, 90, 3, 5],
        [150, 2, 40, 2, 3],
    ];
    for (seed, extents) in cases.iter().enumerate() {
        let args = random_args(&kernel, extents, Fill::Uniform(0.5), seed as u64);
        let want = passfold_dsl::interpret(&kernel, extents, args.clone(), &[], Precision::F64)
            .expect("interprets");
        let out = want.len() - 1;
        let scale = want[out].iter().fold(1e-30f64, |m, v| m.max(v.abs()));
        // With no keys every output is 0/0, NaN.
        assert!(
            scale > 1e-3 || want[out].is_empty() || extents[2] == 0,
            "outputs of size: {extents:?}"
        );
        for (k, name) in compiled.iter().zip(["fft", "direct", "auto"]) {
            let got = k.call_f64(extents, &args, &[], 1).expect("runs");
            assert_eq!(got[out].len(), want[out].len());
            for (g, w) in got[out].iter().zip(&want[out]) {
                assert!(
                    close(*g, *w, 1e-4, 1e-6 * scale),
                    "{name} at {extents:?}: {g} vs {w}"
                );
            }
        }
    }
}

/// The cost model runs the direct plan on short sequences and the FFT
/// variant on long ones.
#[test]
fn the_cost_model_switches_to_fft_on_long_sequences() {
    let kernel = rpe();
    let auto = plan(&kernel, Toeplitz::Auto);
    let at = |n: i64| [n, 16, n, 16, 16];
    assert!(!auto.prefers_variant(&at(16)));
    assert!(auto.prefers_variant(&at(16384)));
    // The cache tells the plan with its FFT variant from the same plan without.
    let direct = plan(&kernel, Toeplitz::Never);
    assert_ne!(
        passfold_runtime::cache_key(&auto),
        passfold_runtime::cache_key(&direct)
    );
    let a = passfold_runtime::cache()
        .get_or_compile(&auto)
        .expect("compiles");
    assert!(a.runs_variant(&at(16384)) && !a.runs_variant(&at(16)));
    let json = auto.to_json();
    assert!(
        json["variant"]["plan"]["program"]
            .as_str()
            .unwrap_or("")
            .contains("toeplitz")
    );
}
