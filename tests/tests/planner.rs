//! The planner: fused plans reach the catalogue's pass counts and compute
//! what the kernel's statements compute (checked by interpreting both, in f64).

use crate::common::{Fill, close, params_for, random_args};
use passfold_dsl::fuse::ExpShift;
use passfold_dsl::{Kernel, LowerOptions, Plan, PlanOptions, Precision, interpret, interpret_program, plan};

fn check(src: &str) -> Kernel {
    passfold_dsl::check(src, &LowerOptions::default()).expect("checks")
}

fn sizes(kernel: &Kernel, n: i64, rows: i64) -> Vec<i64> {
    let reduced = passfold_dsl::rules::reduced_mask(kernel);
    (0..kernel.extents.len()).map(|e| if reduced & (1 << e) != 0 { n } else { rows }).collect()
}

/// Interprets the kernel and the plan's program on the same inputs and
/// compares every output; all-`-inf` rows are skipped where `skip_neg_inf`.
fn agree(kernel: &Kernel, plan: &Plan, extents: &[i64], fill: Fill, seed: u64) -> Result<(), String> {
    let args = random_args(kernel, extents, fill, seed);
    let params = params_for(kernel);
    let want = interpret(kernel, extents, args.clone(), &params, Precision::F64);
    let got = interpret_program(&plan.kernel, &plan.program, extents, args, &params, Precision::F64);
    let (want, got) = match (want, got) {
        (Ok(w), Ok(g)) => (w, g),
        // Both refuse the same input (a gather out of range): they agree.
        (Err(w), Err(g)) if w.to_string() == g.to_string() => return Ok(()),
        (w, g) => return Err(format!("interpreter {:?}, plan {:?}", w.err(), g.err())),
    };
    for (id, (w, g)) in kernel.arguments().zip(want.iter().zip(&got)) {
        for (n, (a, b)) in g.iter().zip(w).enumerate() {
            // The fused plan gives the limit where the naive formula gives
            // NaN from -inf - -inf (a row whose every term is -inf).
            if b.is_nan() && !a.is_nan() && matches!(fill, Fill::Special(v) if v == f64::NEG_INFINITY) {
                continue;
            }
            if !close(*a, *b, 1e-9, 1e-12) {
                return Err(format!(
                    "`{}`[{n}] = {a}, interpreter says {b} (extents {extents:?}, fill {fill:?})",
                    kernel.tensor(id).name
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn catalogue_plans_agree_with_the_interpreter() {
    let fills = [
        Fill::Uniform(3.0),
        Fill::Uniform(1e4),
        Fill::Special(f64::NEG_INFINITY),
        Fill::Special(f64::INFINITY),
        Fill::Special(f64::NAN),
        Fill::Special(3e38),
    ];
    let mut failures = Vec::new();
    for entry in passfold_kernels::CATALOGUE {
        let kernel = check(entry.source);
        for exp_shift in [ExpShift::Auto, ExpShift::TwoPass, ExpShift::RunningMax] {
            let p = plan(&kernel, PlanOptions { unfused: false, exp_shift });
            for (n, rows) in [(0, 2), (1, 2), (5, 3), (17, 2)] {
                let extents = sizes(&kernel, n, rows);
                for (f, fill) in fills.iter().enumerate() {
                    // The two-pass accumulator's domain is |q| < 2^16·ln 2 (see rules.rs).
                    if exp_shift == ExpShift::TwoPass && *fill == Fill::Special(3e38) {
                        continue;
                    }
                    if let Err(e) = agree(&kernel, &p, &extents, *fill, f as u64 * 31 + n as u64) {
                        failures.push(format!("{} ({exp_shift:?}): {e}", entry.name));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn catalogue_pass_counts() {
    let mut report = String::new();
    for entry in passfold_kernels::CATALOGUE {
        let kernel = check(entry.source);
        let fused = plan(&kernel, PlanOptions::default());
        let unfused = plan(&kernel, PlanOptions { unfused: true, ..Default::default() });
        report.push_str(&format!(
            "{}: {} fused, {} unfused, target {:?}\n",
            entry.name,
            fused.passes(),
            unfused.passes(),
            entry.target_passes
        ));
    }
    insta::assert_snapshot!("pass_counts", report);
}
