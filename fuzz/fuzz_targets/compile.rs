//! The whole front end on structured random kernels: the fuzzer's bytes
//! drive `passfold::gen`'s choices (so mutations change kernels structurally),
//! the kernel is checked, planned fused and unfused, both plans are
//! interpreted on small inputs and compared with the reference interpreter.
//! Set `PASSFOLD_FUZZ_JIT=1` to also
//! run both plans through the JIT (the full differential check).
#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use passfold::kernelgen::{Choices, check, generate_case_with};
use passfold_dsl::{LowerOptions, PlanOptions, Precision};

/// Choices read from the fuzzer's bytes (zeros once they run out).
struct Bytes<'a>(Unstructured<'a>);

impl Choices for Bytes<'_> {
    fn below(&mut self, n: u32) -> u32 {
        self.0.int_in_range(0..=n.max(1) - 1).unwrap_or(0)
    }
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= tol * (1.0 + b.abs())
}

fuzz_target!(|data: &[u8]| {
    let case = generate_case_with(&mut Bytes(Unstructured::new(data)));
    if std::env::var_os("PASSFOLD_FUZZ_JIT").is_some() {
        if let Err(e) = check::check_case(&case) {
            panic!("{e}");
        }
        return;
    }
    let src = case.spec.to_string();
    let kernel = passfold_dsl::check(&src, &LowerOptions::default())
        .unwrap_or_else(|d| panic!("the generator made a kernel that does not check:\n{src}\n{d}"));
    let extents: Vec<i64> = kernel
        .extents
        .iter()
        .map(|e| match e.name.as_str() {
            "b" => case.extents[0],
            "i" => case.extents[1],
            _ => case.extents[2],
        })
        .collect();
    let args = check::random_args(&kernel, &extents, case.fill, case.input_seed);
    let params = vec![0.75; kernel.params.len()];
    let want = passfold_dsl::interpret(&kernel, &extents, args.clone(), &params, Precision::F64);
    for unfused in [true, false] {
        let plan = passfold_dsl::plan(
            &kernel,
            PlanOptions {
                unfused,
                ..Default::default()
            },
        );
        let _ = (plan.passes(), plan.to_string());
        let got = passfold_dsl::interpret_program(
            &plan.kernel,
            &plan.program,
            &extents,
            args.clone(),
            &params,
            Precision::F64,
        );
        match (&want, &got) {
            (Ok(w), Ok(g)) => {
                for (wt, gt) in w.iter().zip(g) {
                    for (a, b) in gt.iter().zip(wt) {
                        // The fused plan's documented -inf-row limit (see gen::check).
                        let limit = !unfused && b.is_nan() && !a.is_nan();
                        assert!(
                            limit || close(*a, *b, 1e-6),
                            "{} plan: {a} vs interpreter {b}\n{src}",
                            if unfused { "unfused" } else { "fused" }
                        );
                    }
                }
            }
            (Err(_), Err(_)) => {}
            (w, g) => panic!("interpreter {w:?}, plan {g:?}\n{src}"),
        }
    }
});
