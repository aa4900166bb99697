//! The planner: fused plans reach the catalogue's pass counts and compute
//! what the kernel's statements compute (checked by interpreting both, in f64).

use crate::common::{Fill, close, params_for, random_args};
use passfold_dsl::fuse::{ExpShift, Reload};
use passfold_dsl::{
    Kernel, LowerOptions, Plan, PlanOptions, Precision, interpret, interpret_program, plan,
};

fn check(src: &str) -> Kernel {
    passfold_dsl::check(src, &LowerOptions::default()).expect("checks")
}

fn sizes(kernel: &Kernel, n: i64, rows: i64) -> Vec<i64> {
    let reduced = passfold_dsl::rules::reduced_mask(kernel);
    (0..kernel.extents.len())
        .map(|e| if reduced & (1 << e) != 0 { n } else { rows })
        .collect()
}

/// Interprets the kernel and the plan's program on the same inputs and
/// compares every output; all-`-inf` rows are skipped where `skip_neg_inf`.
fn agree(
    kernel: &Kernel,
    plan: &Plan,
    extents: &[i64],
    fill: Fill,
    seed: u64,
) -> Result<(), String> {
    let args = random_args(kernel, extents, fill, seed);
    let params = params_for(kernel);
    let want = interpret(kernel, extents, args.clone(), &params, Precision::F64);
    let got = interpret_program(
        &plan.kernel,
        &plan.program,
        extents,
        args,
        &params,
        Precision::F64,
    );
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
            if b.is_nan()
                && !a.is_nan()
                && matches!(fill, Fill::Special(v) if v == f64::NEG_INFINITY)
            {
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
        let variants = [
            (ExpShift::Auto, Reload::Auto),
            (ExpShift::TwoPass, Reload::Auto),
            (ExpShift::RunningMax, Reload::Auto),
            (ExpShift::Auto, Reload::Reload),
            (ExpShift::Auto, Reload::Recompute),
        ];
        for (exp_shift, reload) in variants {
            let p = plan(
                &kernel,
                PlanOptions {
                    unfused: false,
                    exp_shift,
                    reload,
                    ..Default::default()
                },
            );
            for (n, rows) in [(0, 2), (1, 2), (5, 3), (17, 2)] {
                let extents = sizes(&kernel, n, rows);
                for (f, fill) in fills.iter().enumerate() {
                    // The two-pass accumulator's domain is |q| < 2^16·ln 2 (see rules.rs).
                    if exp_shift == ExpShift::TwoPass && *fill == Fill::Special(3e38) {
                        continue;
                    }
                    if let Err(e) = agree(&kernel, &p, &extents, *fill, f as u64 * 31 + n as u64) {
                        failures.push(format!("{} ({exp_shift:?}, {reload:?}): {e}", entry.name));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn catalogue_pass_counts() {
    let mut report = String::new();
    for entry in passfold_kernels::CATALOGUE {
        let kernel = check(entry.source);
        let fused = plan(&kernel, PlanOptions::default());
        let unfused = plan(
            &kernel,
            PlanOptions {
                unfused: true,
                ..Default::default()
            },
        );
        report.push_str(&format!(
            "{}: {} fused, {} unfused, target {:?}\n",
            entry.name,
            fused.passes(),
            unfused.passes(),
            entry.target_passes
        ));
    }
    insta::assert_snapshot!("pass_counts", report);
    for entry in passfold_kernels::CATALOGUE {
        let Some(target) = entry.target_passes else {
            continue;
        };
        let fused = plan(&check(entry.source), PlanOptions::default());
        assert_eq!(
            fused.passes(),
            target,
            "{} does not reach its pass count:\n{fused}",
            entry.name
        );
    }
}

/// Kernels the catalogue does not have: each with the passes its plan must
/// take and a fragment of the rule that decides it.
const UNSEEN: &[(&str, &str, usize, &str)] = &[
    (
        "max_abs_deviation",
        "kernel k(x: f32[b, i]) -> (y: f32[b]) {\n    mu[b] = mean[i](x[b, i]);\n    y[b] = max[i](abs(x[b, i] - mu[b]));\n}",
        2,
        "no rule",
    ),
    (
        "sqrt_distance_to_max",
        "kernel k(x: f32[b, i]) -> (y: f32[b]) {\n    m[b] = max[i](x[b, i]);\n    y[b] = sum[i](sqrt(abs(x[b, i] - m[b])));\n}",
        2,
        "no rule",
    ),
    (
        "max_minus_mean",
        "kernel k(x: f32[b, i]) -> (y: f32[b]) {\n    mu[b] = mean[i](x[b, i]);\n    y[b] = max[i](x[b, i] - mu[b]);\n}",
        1,
        "shift",
    ),
    (
        "affine_sum",
        "kernel k(x: f32[b, i]) -> (y: f32[b]) {\n    m[b] = max[i](x[b, i]);\n    y[b] = sum[i](2.0 * x[b, i] + m[b]);\n}",
        1,
        "linearity",
    ),
    (
        "spread_around_max",
        "kernel k(x: f32[b, i]) -> (y: f32[b]) {\n    m[b] = max[i](x[b, i]);\n    y[b] = sum[i](pow(x[b, i] - m[b], 2));\n}",
        1,
        "moments",
    ),
    (
        "scaled_logsumexp",
        "kernel k(x: f32[b, i]) -> (y: f32[b]) {\n    t[b] = max[i](2.0 * x[b, i]);\n    z[b] = sum[i](exp(2.0 * x[b, i] - t[b]));\n    y[b] = t[b] + log(z[b]);\n}",
        1,
        "running-max",
    ),
    (
        "shift_by_mean",
        "kernel k(x: f32[b, i]) -> (y: f32[b]) {\n    c[b] = mean[i](x[b, i]);\n    s[b] = sum[i](exp(x[b, i] - c[b]));\n    y[b] = log(s[b]) + c[b];\n}",
        1,
        "two-pass",
    ),
    (
        "column_softmax",
        "kernel k(x: f32[i, b]) -> (y: f32[i, b]) {\n    m[b] = max[i](x[i, b]);\n    s[b] = sum[i](exp(x[i, b] - m[b]));\n    y[i, b] = exp(x[i, b] - m[b]) / s[b];\n}",
        // Columns are swept with `b` as a vector index (contiguous reads);
        // exp-shift with a per-column max is not implemented for vector
        // accumulators yet, so the sum keeps its sweep.
        3,
        "no rule",
    ),
    (
        "sum_of_top3_squares",
        "kernel k(x: f32[b, i]) -> (y: f32[b]) {\n    kth[b] = topk[i](x[b, i], 3);\n    y[b] = sum[i](select(x[b, i] >= kth[b], x[b, i] * x[b, i], 0.0));\n}",
        1,
        "bounded state",
    ),
    (
        "top3_with_weights_is_not_bounded",
        "kernel k(x: f32[b, i], w: f32[b, i]) -> (y: f32[b]) {\n    kth[b] = topk[i](x[b, i], 3);\n    y[b] = sum[i](select(x[b, i] >= kth[b], w[b, i], 0.0));\n}",
        2,
        "no rule",
    ),
];

#[test]
fn unseen_kernels_get_the_same_rules() {
    let mut failures = Vec::new();
    for &(name, src, passes, rule) in UNSEEN {
        let kernel = check(src);
        let p = plan(&kernel, PlanOptions::default());
        if p.passes() != passes {
            failures.push(format!("{name}: {} passes, want {passes}\n{p}", p.passes()));
        }
        if !p.rules.iter().any(|r| r.contains(rule)) {
            failures.push(format!("{name}: no rule mentions `{rule}`: {:?}", p.rules));
        }
        for (f, fill) in [
            Fill::Uniform(3.0),
            Fill::Uniform(1e4),
            Fill::Special(f64::NAN),
            Fill::Special(f64::NEG_INFINITY),
        ]
        .into_iter()
        .enumerate()
        {
            for (n, rows) in [(0, 1), (1, 2), (9, 3)] {
                if let Err(e) = agree(&kernel, &p, &sizes(&kernel, n, rows), fill, f as u64) {
                    failures.push(format!("{name}: {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn both_exp_shift_forms_agree() {
    // The two accumulators against each other, on every kernel with an
    // exp-shifted sum, at moderate and large magnitudes.
    for entry in passfold_kernels::CATALOGUE {
        let kernel = check(entry.source);
        let online = plan(
            &kernel,
            PlanOptions {
                exp_shift: ExpShift::RunningMax,
                ..Default::default()
            },
        );
        let two_pass = plan(
            &kernel,
            PlanOptions {
                exp_shift: ExpShift::TwoPass,
                ..Default::default()
            },
        );
        assert_eq!(online.passes(), two_pass.passes(), "{}", entry.name);
        for fill in [Fill::Uniform(5.0), Fill::Uniform(3e4)] {
            let extents = sizes(&kernel, 33, 2);
            let args = random_args(&kernel, &extents, fill, 7);
            let params = params_for(&kernel);
            let run = |p: &Plan| {
                interpret_program(
                    &p.kernel,
                    &p.program,
                    &extents,
                    args.clone(),
                    &params,
                    Precision::F64,
                )
            };
            let (a, b) = (run(&online), run(&two_pass));
            let (Ok(a), Ok(b)) = (a, b) else { continue };
            for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
                assert!(close(*x, *y, 1e-9, 1e-12), "{}: {x} vs {y}", entry.name);
            }
        }
    }
}

/// The plan with every mergeable sweep split at `at` (see `dsl::split`).
fn split_plan(p: &Plan, at: i64) -> (Plan, usize) {
    let mut rw = passfold_dsl::rules::Rewriter::new(&p.kernel);
    let mut program = p.program.clone();
    let at = rw.add(
        passfold_dsl::Node::ConstInt(at),
        passfold_dsl::ScalarType::I32,
    );
    let n = passfold_dsl::split::split_sweeps(&mut rw, &mut program, at);
    let mut out = p.clone();
    out.kernel = rw.finish();
    out.program = program;
    (out, n)
}

#[test]
fn combine_laws_merge_split_sweeps() {
    // Every accumulator's combine, exercised by splitting each sweep in two
    // parts with separate states and merging them: the results must match
    // the unsplit plan, in the interpreter and in machine code.
    let mut split_any = 0;
    for entry in passfold_kernels::CATALOGUE {
        let kernel = check(entry.source);
        for exp_shift in [ExpShift::RunningMax, ExpShift::TwoPass] {
            let p = plan(
                &kernel,
                PlanOptions {
                    unfused: false,
                    exp_shift,
                    // Scalar code: the split plan's machine code must match
                    // its interpretation bit for bit.
                    scalar: true,
                    ..Default::default()
                },
            );
            for at in [0, 1, 3, 16] {
                let (sp, n) = split_plan(&p, at);
                split_any += n;
                let compiled = passfold_runtime::compile(&sp).expect("split plans compile");
                for fill in [
                    Fill::Uniform(3.0),
                    Fill::Special(f64::NEG_INFINITY),
                    Fill::Special(f64::NAN),
                ] {
                    let extents = sizes(&kernel, 9, 2);
                    let args = random_args(&kernel, &extents, fill, at as u64);
                    let params = params_for(&kernel);
                    let whole = interpret_program(
                        &p.kernel,
                        &p.program,
                        &extents,
                        args.clone(),
                        &params,
                        Precision::F64,
                    );
                    let parts = interpret_program(
                        &sp.kernel,
                        &sp.program,
                        &extents,
                        args.clone(),
                        &params,
                        Precision::F64,
                    );
                    let (Ok(whole), Ok(parts)) = (whole, parts) else {
                        continue;
                    };
                    for (x, y) in parts.iter().flatten().zip(whole.iter().flatten()) {
                        assert!(
                            close(*x, *y, 1e-9, 1e-12),
                            "{} split at {at}: {x} vs {y}",
                            entry.name
                        );
                    }
                    // Machine code of the split plan against its interpretation.
                    let declared = interpret_program(
                        &sp.kernel,
                        &sp.program,
                        &extents,
                        args.clone(),
                        &params,
                        Precision::Declared,
                    )
                    .unwrap();
                    let got = compiled
                        .call_f64(&extents, &args, &params, 1)
                        .expect("the call succeeds");
                    for (x, y) in got.iter().flatten().zip(declared.iter().flatten()) {
                        assert!(
                            close(*x, *y, 0.0, 0.0),
                            "{} split at {at} (jit): {x} vs {y}",
                            entry.name
                        );
                    }
                }
            }
        }
    }
    assert!(split_any > 50, "only {split_any} sweeps were split");
}

/// Plans read back from their JSON form (what `kernel!` embeds) are the
/// same plans: same text, same kernel.
#[test]
fn plans_round_trip_through_json() {
    for entry in passfold_kernels::CATALOGUE {
        let kernel = check(entry.source);
        for opts in [
            PlanOptions::default(),
            PlanOptions {
                unfused: true,
                ..Default::default()
            },
            PlanOptions {
                scalar: true,
                exp_shift: ExpShift::TwoPass,
                ..Default::default()
            },
        ] {
            let p = plan(&kernel, opts);
            let json = serde_json::to_string(&p).expect("serializes");
            let back: passfold_dsl::Plan = serde_json::from_str(&json).expect("reads back");
            assert_eq!(back.to_string(), p.to_string(), "{}", entry.name);
            assert_eq!(
                back.kernel.to_string(),
                p.kernel.to_string(),
                "{}",
                entry.name
            );
            assert_eq!(
                back.kernel.node_spans, p.kernel.node_spans,
                "{}",
                entry.name
            );
            assert_eq!(back.program, p.program, "{}", entry.name);
        }
    }
}

/// The work estimate (`dsl::cost::work`) grows linearly with the swept
/// length for blocked sweeps (`[blocks of 1024]`, the grouped attention
/// sweep `[blocks of 4]`): a block loop runs `len / block` times and the
/// ranged loops inside it one block each.
#[test]
fn work_estimate_is_linear_in_blocked_sweeps() {
    for (name, swept) in [("logsumexp", "i"), ("attention", "j"), ("layer_norm", "i")] {
        let entry = passfold_kernels::get(name).expect("in the catalogue");
        let kernel = passfold_dsl::check(entry.source, &LowerOptions::default()).expect("checks");
        let plan = passfold_dsl::plan(&kernel, PlanOptions::default());
        assert!(plan.to_string().contains("[blocks of"), "{name}");
        let at = |n: i64| {
            let extents: Vec<i64> = kernel
                .extents
                .iter()
                .map(|e| if e.name == swept { n } else { 8 })
                .collect();
            passfold_dsl::cost::work(&plan, &extents)
        };
        let ratio = at(1 << 16) / at(1 << 15);
        assert!((1.9..=2.1).contains(&ratio), "{name}: {ratio}");
    }
}
