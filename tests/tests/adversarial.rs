//! Adversarial inputs for every catalogue kernel, through the JIT (fused and
//! unfused plans, `f32` and `f64`), compared with the f64 reference
//! interpreter by `passfold::gen::check::check_args`: exact against the
//! declared-precision plan interpreter, and within the tolerance derived
//! from the kernel's operations against the f64 interpreter (see that
//! module's doc for the formula and for *unstable* elements).
//!
//! Inputs: rows of all `-inf`, one `+inf` per row, NaN first / middle /
//! last, denormals, values near ±3.4e38, `n = 0`, `n = 1`, every length
//! from 1 to 48 (3 × 4 lanes × 4 unrolled accumulators), and shapes whose
//! element or byte count overflows `usize` (a `CallError`, never a wrap).
//!
//! A "row" is a run along the last dimension of the kernel's first float
//! input (`x[b, i]` for the row kernels, `q[.., c]` for attention); the
//! other inputs are uniform in [-3, 3).

use crate::common::params_for;
use passfold::kernelgen::check::check_args;
use passfold_dsl::{Kernel, Layout, LowerOptions, PlanOptions, ScalarType, TensorKind};
use passfold_runtime::{Arg, CallError};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// An input pattern for the rows of the first float input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Pattern {
    Uniform,
    AllNegInf,
    OnePosInf,
    NanFirst,
    NanMiddle,
    NanLast,
    Denormals,
    NearMax,
}

pub(crate) const PATTERNS: [Pattern; 8] = [
    Pattern::Uniform,
    Pattern::AllNegInf,
    Pattern::OnePosInf,
    Pattern::NanFirst,
    Pattern::NanMiddle,
    Pattern::NanLast,
    Pattern::Denormals,
    Pattern::NearMax,
];

pub(crate) fn check(src: &str) -> Kernel {
    passfold_dsl::check(src, &LowerOptions::default()).expect("catalogue kernels check")
}

/// Extents: every reduced index `n`, every other index 2 (3 for rows `b`).
pub(crate) fn sizes(kernel: &Kernel, n: i64) -> Vec<i64> {
    let reduced = passfold_dsl::rules::reduced_mask(kernel);
    kernel
        .extents
        .iter()
        .enumerate()
        .map(|(e, ext)| match () {
            _ if reduced & (1 << e) != 0 => n,
            _ if ext.name == "b" => 3,
            _ => 2,
        })
        .collect()
}

/// Arguments with `pattern` written into the first float input's rows.
pub(crate) fn args_for(
    kernel: &Kernel,
    extents: &[i64],
    pattern: Pattern,
    seed: u64,
) -> Vec<Vec<f64>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut first_float = true;
    kernel
        .arguments()
        .map(|id| {
            let t = kernel.tensor(id);
            let layout = Layout::compute(t, extents).expect("small sizes");
            let len = layout.len as usize;
            if t.kind == TensorKind::Output {
                return Vec::new();
            }
            if t.ty == ScalarType::I32 {
                let bound = passfold_dsl::gather_limit(kernel, id, extents)
                    .unwrap_or(4)
                    .max(1);
                return (0..len)
                    .map(|_| rng.random_range(0..bound) as f64)
                    .collect();
            }
            // Weights of `logsumexp_weighted` must be >= 0; every other
            // input takes any value.
            let nonneg = t.name == "w" && kernel.name == "logsumexp_weighted";
            let mut values: Vec<f64> = (0..len)
                .map(|_| {
                    let v: f64 = rng.random_range(-3.0..3.0);
                    (if nonneg { v.abs() } else { v }) as f32 as f64
                })
                .collect();
            if std::mem::take(&mut first_float) {
                let row = layout.dims.last().map_or(1, |d| d.1.max(1)) as usize;
                apply(pattern, &mut values, row, &mut rng);
            }
            values
        })
        .collect()
}

fn apply(pattern: Pattern, values: &mut [f64], row: usize, rng: &mut SmallRng) {
    for (r, chunk) in values.chunks_mut(row).enumerate() {
        let n = chunk.len();
        match pattern {
            Pattern::Uniform => {}
            Pattern::AllNegInf => chunk.fill(f64::NEG_INFINITY),
            Pattern::OnePosInf => chunk[r % n] = f64::INFINITY,
            Pattern::NanFirst => chunk[0] = f64::NAN,
            Pattern::NanMiddle => chunk[n / 2] = f64::NAN,
            Pattern::NanLast => chunk[n - 1] = f64::NAN,
            Pattern::Denormals => {
                for v in chunk.iter_mut() {
                    // f32 denormals (below 1.18e-38), both signs, and the smallest one.
                    *v = (rng.random_range(-1.0..1.0) * 1e-39) as f32 as f64;
                }
                chunk[r % n] = f32::from_bits(1) as f64;
            }
            Pattern::NearMax => {
                for v in chunk.iter_mut() {
                    let mag = rng.random_range(0.9..1.0) * f32::MAX as f64;
                    *v = (if rng.random_range(0..2) == 0 {
                        mag
                    } else {
                        -mag
                    }) as f32 as f64;
                }
            }
        }
    }
}

/// The runs of one catalogue kernel: every pattern at several lengths and
/// every length from 0 to 48 on uniform rows.
fn runs() -> Vec<(Pattern, i64)> {
    let mut out = Vec::new();
    for pattern in PATTERNS {
        for n in [1, 2, 5, 17, 33] {
            out.push((pattern, n));
        }
    }
    for n in 0..=48 {
        out.push((Pattern::Uniform, n));
    }
    out
}

#[test]
fn catalogue_kernels_on_adversarial_inputs() {
    let mut failures = Vec::new();
    let mut compared = 0;
    for entry in passfold_kernels::CATALOGUE {
        let kernel = check(entry.source);
        let params = params_for(&kernel);
        for (k, (pattern, n)) in runs().into_iter().enumerate() {
            let extents = sizes(&kernel, n);
            let args = args_for(&kernel, &extents, pattern, k as u64);
            // f64 too on the patterns (where f32 and f64 ranges differ most).
            let also_f64 = pattern != Pattern::Uniform;
            match check_args(entry.source, &kernel, &extents, &args, &params, also_f64) {
                Ok(o) => compared += o.compared,
                Err(e) => failures.push(format!(
                    "{} ({pattern:?}, n = {n}, extents {extents:?}): {e}",
                    entry.name
                )),
            }
        }
    }
    assert!(compared > 10_000, "only {compared} values compared");
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// What a value is, for the all-`-inf` report.
fn class(v: f64) -> &'static str {
    match v {
        v if v.is_nan() => "NaN",
        f64::NEG_INFINITY => "-inf",
        f64::INFINITY => "+inf",
        0.0 => "0",
        _ => "finite",
    }
}

/// Rows of all `-inf`, kernel by kernel: what the formula (the interpreter
/// and the unfused plan) gives and what the fused plan gives. Where they
/// differ, the fused plan must give the limit its online normalizer is
/// documented to give (`0` for the exp-shifted sum, `-inf` for
/// logsumexp, and what follows from them: `+inf` for `-eps·logsumexp`),
/// never another number; the snapshot makes each difference a reviewed
/// decision instead of a skip.
#[test]
fn all_neg_inf_rows_give_the_documented_values() {
    let mut report = String::new();
    for entry in passfold_kernels::CATALOGUE {
        let kernel = check(entry.source);
        let params = params_for(&kernel);
        let extents = sizes(&kernel, 5);
        let args = args_for(&kernel, &extents, Pattern::AllNegInf, 7);
        let want = passfold_dsl::interpret(
            &kernel,
            &extents,
            args.clone(),
            &params,
            passfold_dsl::Precision::F64,
        )
        .expect("interpreter");
        let mut line = Vec::new();
        for unfused in [true, false] {
            let plan = passfold_dsl::plan(
                &kernel,
                PlanOptions {
                    unfused,
                    ..Default::default()
                },
            );
            let compiled = passfold_runtime::compile(&plan).expect("compiles");
            let got = compiled
                .call_f64(&extents, &args, &params, 1)
                .expect("runs");
            let mut classes: Vec<&str> = Vec::new();
            for ((id, g), w) in kernel.arguments().zip(&got).zip(&want) {
                if kernel.tensor(id).kind == TensorKind::Input {
                    continue;
                }
                for (a, b) in g.iter().zip(w) {
                    let same = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() < 1e-5;
                    if !same {
                        assert!(
                            !unfused && b.is_nan() && (*a == 0.0 || a.is_infinite()),
                            "{}: {} plan gives {a} where the formula gives {b}",
                            entry.name,
                            if unfused { "unfused" } else { "fused" }
                        );
                    }
                    if !classes.contains(&class(*a)) {
                        classes.push(class(*a));
                    }
                }
            }
            line.push(format!(
                "{} {}",
                if unfused { "unfused" } else { "fused" },
                classes.join("/")
            ));
        }
        let formula: Vec<&str> = {
            let mut c: Vec<&str> = Vec::new();
            for (id, w) in kernel.arguments().zip(&want) {
                if kernel.tensor(id).kind != TensorKind::Input {
                    for v in w {
                        if !c.contains(&class(*v)) {
                            c.push(class(*v));
                        }
                    }
                }
            }
            c
        };
        report.push_str(&format!(
            "{}: formula {}, {}\n",
            entry.name,
            formula.join("/"),
            line.join(", ")
        ));
    }
    insta::assert_snapshot!("all_neg_inf_rows", report);
}

/// Shapes whose element count or byte size overflows `usize`, and extents
/// whose temporaries cannot be allocated: every call is refused with a
/// `CallError` before machine code runs. Each call runs on its own thread
/// and must return within a few seconds (a call that was not refused would
/// loop over 2^31 rows or more).
#[test]
fn huge_extents_are_refused() {
    const HUGE: [(&str, [usize; 2]); 4] = [
        // 2^32 · 2^32 wraps to 0 elements: equal to the empty slice if wrapped.
        ("elements wrap to 0", [1 << 32, 1 << 32]),
        // 2^62 elements fit in usize, their bytes (·4 or ·8) do not.
        ("bytes overflow", [1 << 31, 1 << 31]),
        ("element count overflows", [usize::MAX, 2]),
        // No elements at all, but per-row temporaries of 2^61 rows.
        ("temporaries too large", [1 << 61, 0]),
    ];
    let mut failures = Vec::new();
    for entry in passfold_kernels::CATALOGUE {
        for unfused in [true, false] {
            for (what, dims) in HUGE {
                let label = format!(
                    "{} ({what}, {})",
                    entry.name,
                    if unfused { "unfused" } else { "fused" }
                );
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let _ = tx.send(huge_call(entry.source, unfused, dims));
                });
                match rx.recv_timeout(std::time::Duration::from_secs(10)) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => failures.push(format!("{label}: {e}")),
                    Err(_) => failures.push(format!(
                        "{label}: the call did not return within 10 s (it runs instead of being refused)"
                    )),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Calls the kernel with every argument's first two dimensions `dims`
/// (others 1) and empty buffers; `Err` describes a call that was not refused.
fn huge_call(src: &str, unfused: bool, dims: [usize; 2]) -> Result<(), String> {
    let kernel = check(src);
    let params = params_for(&kernel);
    let plan = passfold_dsl::plan(
        &kernel,
        PlanOptions {
            unfused,
            ..Default::default()
        },
    );
    let compiled = passfold_runtime::compile(&plan).map_err(|e| e.to_string())?;
    let ids: Vec<_> = kernel.arguments().collect();
    let shapes: Vec<Vec<usize>> = ids
        .iter()
        .map(|&id| {
            let rank = kernel.tensor(id).dims.len();
            (0..rank).map(|d| if d < 2 { dims[d] } else { 1 }).collect()
        })
        .collect();
    let mut f32s: Vec<Vec<f32>> = ids.iter().map(|_| Vec::new()).collect();
    let mut i32s: Vec<Vec<i32>> = ids.iter().map(|_| Vec::new()).collect();
    let args: Vec<Arg<'_>> = ids
        .iter()
        .zip(f32s.iter_mut().zip(i32s.iter_mut()))
        .zip(&shapes)
        .map(|((&id, (f, i)), shape)| match kernel.tensor(id).ty {
            ScalarType::I32 => Arg::new(i, shape),
            _ => Arg::new(f, shape),
        })
        .collect();
    // A call whose only huge extent indexes nothing but empty tensors is
    // valid (and would loop over 2^61 empty rows): only calls that some
    // temporary makes too large must be refused.
    if dims[1] == 0 {
        let shape_refs: Vec<Option<&[usize]>> = shapes.iter().map(|s| Some(&s[..])).collect();
        let too_large = match passfold_dsl::bind_extents(&kernel, &shape_refs) {
            Err(_) => true,
            Ok(extents) => kernel.tensors.iter().any(|t| {
                Layout::compute(t, &extents)
                    .is_none_or(|l| l.len.checked_mul(8).is_none_or(|b| b > isize::MAX as i64))
            }),
        };
        if !too_large {
            return Ok(());
        }
    }
    match compiled.call(args, &params) {
        Ok(()) => Err(format!(
            "a call with shapes {shapes:?} and empty buffers ran"
        )),
        Err(e @ (CallError::GatherOutOfRange { .. } | CallError::Internal { .. })) => {
            Err(format!("refused only while running: {e}"))
        }
        Err(_) => Ok(()),
    }
}
