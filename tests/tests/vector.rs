//! Vector code: accuracy of whole kernels against `f64`, and the loop
//! decisions the plan text reports.

use passfold_dsl::{LowerOptions, PlanOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The output `y` of a one-input kernel `(x) -> (y)` on `x`: from the f64
/// interpreter, and from `jit` on `threads` threads (rows split at any size).
fn y_of(
    kernel: &passfold_dsl::Kernel,
    jit: &passfold_runtime::CompiledKernel,
    extents: &[i64],
    x: &[f64],
    y_len: usize,
    params: &[f64],
    threads: usize,
) -> (Vec<f64>, Vec<f64>) {
    let args = vec![x.to_vec(), vec![0.0; y_len]];
    let want = passfold_dsl::interpret(
        kernel,
        extents,
        args.clone(),
        params,
        passfold_dsl::Precision::F64,
    )
    .expect("interprets");
    let got = jit.call_f64(extents, &args, params, threads).expect("runs");
    (want[1].clone(), got[1].clone())
}

/// The checked catalogue kernel `name`.
fn catalogue_kernel(name: &str) -> passfold_dsl::Kernel {
    let entry = passfold_kernels::CATALOGUE
        .iter()
        .find(|k| k.name == name)
        .unwrap_or_else(|| panic!("{name} is in the catalogue"));
    passfold_dsl::check(entry.source, &LowerOptions::default()).expect("checks")
}

/// Distance in `f32` ULPs between `got` and the correctly rounded `want`.
fn ulps(got: f64, want: f64) -> f64 {
    let w = want as f32;
    if got as f32 == w {
        return 0.0;
    }
    let ulp = (f32::from_bits(w.abs().to_bits() + 1) - w.abs()) as f64;
    (got - want).abs() / ulp
}

/// Softmax over random rows, every length from 0 to 40 (around the vector
/// width 4 and the unroll) and some long ones, values uniform in ±10 and in
/// ±100, against the `f64` result: every normal output within
/// `4 + |x - m| + n/8` ULP. The `|x - m|` term is the rounding of the `f32`
/// subtraction `x - m` itself (half an ULP of a number up to `|x - m|`,
/// which `exp` turns into a relative error of up to `|x - m|·2^-24`), the
/// `n/8` term the worst-case rounding of the `f32` sum over 8 lanes. The
/// issue's 4 ULP is asserted where both are small (`|x - m| ≤ 1`, rows up
/// to 127); elsewhere it needs a compensated subtraction and sum (not
/// done). Fused (reload) and unfused plans, f32x4.
#[test]
fn softmax_outputs_within_4_ulp_of_f64() {
    let kernel = catalogue_kernel("softmax");
    let mut rng = SmallRng::seed_from_u64(4);
    let mut worst = 0.0f64;
    let mut compared = 0usize;
    for unfused in [false, true] {
        let plan = passfold_dsl::plan(
            &kernel,
            PlanOptions {
                unfused,
                ..Default::default()
            },
        );
        assert!(
            plan.to_string().contains("[f32x4"),
            "softmax is vectorized:\n{plan}"
        );
        let jit = passfold_runtime::compile(&plan).expect("compiles");
        let lengths: Vec<i64> = (0..=40).chain([127, 1000, 4099]).collect();
        for &n in &lengths {
            for range in [10.0, 100.0] {
                let rows = 3;
                let x: Vec<f64> = (0..rows * n)
                    .map(|_| rng.random_range(-range..range) as f32 as f64)
                    .collect();
                let got = jit
                    .call_f64(
                        &[rows, n],
                        &[x.clone(), vec![0.0; (rows * n) as usize]],
                        &[],
                        1,
                    )
                    .expect("runs");
                for r in 0..rows as usize {
                    let row = &x[r * n as usize..(r + 1) * n as usize];
                    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
                    for (i, v) in row.iter().enumerate() {
                        let want = (v - m).exp() / s;
                        if (want as f32).abs() < f32::MIN_POSITIVE {
                            continue;
                        }
                        let d = ulps(got[1][r * n as usize + i], want);
                        let allowed = 4.0 + (v - m).abs() + n as f64 / 8.0;
                        if (v - m).abs() <= 1.0 && n <= 127 {
                            worst = worst.max(d);
                        }
                        assert!(
                            d <= allowed,
                            "softmax ({}) n = {n}, range {range}: element {i} is {} ULP from f64 ({} vs {want})",
                            if unfused { "unfused" } else { "fused" },
                            d,
                            got[1][r * n as usize + i]
                        );
                        compared += 1;
                    }
                }
            }
        }
    }
    assert!(compared > 10_000, "only {compared} outputs compared");
    assert!(worst <= 4.0, "{worst} ULP where |x - m| <= 1, n <= 127");
    eprintln!(
        "softmax: worst {worst:.2} ULP where |x - m| <= 1 and n <= 127, over {compared} outputs"
    );
}

/// Long rows through every code path: the vector loop, its lane merges and
/// the scalar tail, for sums, maxima and exp-shifted sums (logsumexp, the
/// running max, merged across lanes by the online-sum law).
#[test]
fn long_rows_reductions_within_tolerance() {
    let src = "kernel r(x: f32[b, i]) -> (s: f32[b], m: f32[b], l: f32[b]) {
        s[b] = sum[i](x[b, i]);
        m[b] = max[i](x[b, i]);
        l[b] = m[b] + log(sum[i](exp(x[b, i] - m[b])));
    }";
    let kernel = passfold_dsl::check(src, &LowerOptions::default()).expect("checks");
    let mut rng = SmallRng::seed_from_u64(9);
    for unfused in [false, true] {
        let plan = passfold_dsl::plan(
            &kernel,
            PlanOptions {
                unfused,
                ..Default::default()
            },
        );
        let jit = passfold_runtime::compile(&plan).expect("compiles");
        for n in [1i64, 3, 7, 8, 9, 15, 16, 17, 31, 33, 1023, 65537] {
            let x: Vec<f64> = (0..2 * n)
                .map(|_| rng.random_range(-50.0f32..50.0) as f64)
                .collect();
            let got = jit
                .call_f64(
                    &[2, n],
                    &[x.clone(), vec![0.0; 2], vec![0.0; 2], vec![0.0; 2]],
                    &[],
                    1,
                )
                .expect("runs");
            for r in 0..2usize {
                let row = &x[r * n as usize..(r + 1) * n as usize];
                let sum: f64 = row.iter().sum();
                let abs: f64 = row.iter().map(|v| v.abs()).sum();
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let l = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                let tol = f32::EPSILON as f64 * (n as f64).sqrt().max(4.0);
                assert!(
                    (got[1][r] - sum).abs() <= tol * abs,
                    "sum n = {n}: {} vs {sum}",
                    got[1][r]
                );
                assert_eq!(got[2][r], m, "max n = {n}");
                assert!(
                    (got[3][r] - l).abs() <= 4.0 * f32::EPSILON as f64 * l.abs().max(1.0),
                    "logsumexp n = {n}: {} vs {l}",
                    got[3][r]
                );
            }
        }
    }
}

/// The split-row program (`passfold_dsl::threads`) run as one thread
/// computes exactly what the plan computes: the chunk is the whole row and
/// each merge folds one partial state into the identity. (Several threads
/// are tested on machine code in `runtime/tests/threads.rs`.)
#[test]
fn split_row_program_as_one_thread_is_the_plan() {
    use crate::common::{Fill, params_for, random_args};
    let mut split = 0;
    for entry in passfold_kernels::CATALOGUE {
        let kernel = passfold_dsl::check(entry.source, &LowerOptions::default()).expect("checks");
        let plan = passfold_dsl::plan(&kernel, PlanOptions::default());
        let Ok(s) = passfold_dsl::threads::split_row(&plan) else {
            continue;
        };
        split += 1;
        assert!(s.plan.to_string().contains("barrier"), "{}", s.plan);
        let reduced = passfold_dsl::rules::reduced_mask(&kernel);
        for n in [0i64, 1, 6, 33] {
            let extents: Vec<i64> = (0..kernel.extents.len())
                .map(|e| if reduced & (1 << e) != 0 { n } else { 2 })
                .collect();
            let args = random_args(&kernel, &extents, Fill::Uniform(5.0), n as u64);
            let params = params_for(&kernel);
            let want = passfold_dsl::interpret_program(
                &plan.kernel,
                &plan.program,
                &extents,
                args.clone(),
                &params,
                passfold_dsl::Precision::Declared,
            )
            .expect("plan runs");
            let mut split_extents = extents.clone();
            split_extents.push(1);
            let mut split_params = params.clone();
            split_params.extend([0.0, 1.0]);
            let got = passfold_dsl::interpret_program(
                &s.plan.kernel,
                &s.plan.program,
                &split_extents,
                args,
                &split_params,
                passfold_dsl::Precision::Declared,
            )
            .expect("split program runs");
            for (a, b) in got.iter().zip(&want) {
                for (x, y) in a.iter().zip(b) {
                    assert!(
                        x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                        "{} n = {n}: {x} vs {y}",
                        entry.name
                    );
                }
            }
        }
    }
    assert!(split >= 8, "only {split} catalogue kernels split");
}

/// Attention's sweep over keys runs in groups of `passfold_dsl::jam::JAM`
/// keys (scores first, the running max moved once per group, then each
/// key's update), with a per-key tail. Every key count from 1 to 13 and
/// some around the unroll (so groups, tails and both together), head
/// dimension 5 (vector loops with scalar tails), against the `f64`
/// interpreter: relative 1e-5 of the output's scale, or 1e-6 absolute. Also
/// with a quarter of the inputs `-inf`, `+inf` or NaN (NaN where the
/// interpreter has NaN, infinities equal).
#[test]
fn grouped_attention_sweeps_agree_with_the_interpreter() {
    use crate::common::{Fill, close, params_for, random_args};
    for name in ["attention", "attention_bias"] {
        let entry = passfold_kernels::get(name).expect("in the catalogue");
        let kernel = passfold_dsl::check(entry.source, &LowerOptions::default()).expect("checks");
        let plan = passfold_dsl::plan(&kernel, PlanOptions::default());
        let text = plan.to_string();
        assert!(
            text.contains(&format!("[blocks of {}]", passfold_dsl::jam::JAM)),
            "{text}"
        );
        let scalar = passfold_dsl::plan(
            &kernel,
            PlanOptions {
                scalar: true,
                ..Default::default()
            },
        );
        assert!(!scalar.to_string().contains("[blocks of"), "{scalar}");
        let jit = passfold_runtime::compile(&plan).expect("compiles");
        let params = params_for(&kernel);
        let ext_of = |n: i64| -> Vec<i64> {
            kernel
                .extents
                .iter()
                .map(|e| match e.name.as_str() {
                    "j" => n,
                    "c" => 5,
                    "e" => 6,
                    "i" => 3,
                    _ => 2,
                })
                .collect()
        };
        let mut cases = 0;
        for n in (1..=13).chain([63, 64, 65, 66, 67, 1027]) {
            let extents = ext_of(n);
            for (seed, fill) in [
                Fill::Uniform(4.0),
                Fill::Special(f64::NEG_INFINITY),
                Fill::Special(f64::INFINITY),
                Fill::Special(f64::NAN),
            ]
            .into_iter()
            .enumerate()
            {
                let args = random_args(&kernel, &extents, fill, 100 * n as u64 + seed as u64);
                let want = passfold_dsl::interpret(
                    &kernel,
                    &extents,
                    args.clone(),
                    &params,
                    passfold_dsl::Precision::F64,
                )
                .expect("interprets");
                let mut bufs = args.clone();
                let outputs: Vec<usize> = kernel
                    .arguments()
                    .enumerate()
                    .filter(|(_, id)| kernel.tensor(*id).kind == passfold_dsl::TensorKind::Output)
                    .map(|(p, _)| p)
                    .collect();
                for p in &outputs {
                    bufs[*p] = vec![0.0; want[*p].len()];
                }
                let got = jit.call_f64(&extents, &bufs, &params, 1).expect("runs");
                for p in &outputs {
                    let w = &want[*p];
                    let scale = w
                        .iter()
                        .filter(|v| v.is_finite())
                        .fold(0.0f64, |a, v| a.max(v.abs()));
                    for (x, y) in got[*p].iter().zip(w) {
                        assert!(
                            close(*x, *y, 1e-5, 1e-6 + 1e-5 * scale),
                            "{name} n = {n} fill {fill:?}: {x} vs {y}"
                        );
                        cases += 1;
                    }
                }
            }
        }
        assert!(cases > 1000, "{cases}");
    }
}

/// A padded tensor read at a shifted row (`x[i + 1, e]`) gives the pad for
/// the row past the end, element by element: such loops stay scalar (vector
/// code reads whole rows unchecked). Regression: the vector loop read the
/// row after the caller's buffer. The input is a prefix of a larger buffer,
/// so a read past it would see nonzero values.
#[test]
fn shifted_rows_of_padded_tensors_read_the_pad() {
    let src = "kernel shift(x: f32[i, e] pad 0.0) -> (s: f32[i], y: f32[i, e]) {
        s[i] = sum[e](x[i + 1, e]);
        y[i, e] = x[i + 1, e] * 2.0;
    }";
    let kernel = passfold_dsl::check(src, &LowerOptions::default()).expect("checks");
    let plan = passfold_dsl::plan(&kernel, PlanOptions::default());
    let text = plan.to_string();
    assert!(
        text.contains("[scalar: a shifted row of padded `x`]"),
        "{text}"
    );
    let jit = passfold_runtime::compile(&plan).expect("compiles");
    let (rows, n) = (3usize, 64usize);
    let big: Vec<f32> = (0..(rows + 1) * n).map(|v| v as f32 + 1.0).collect();
    let mut s = vec![0f32; rows];
    let mut y = vec![0f32; rows * n];
    jit.call(
        vec![
            passfold_runtime::Arg::new(&big[..rows * n], &[rows, n]),
            passfold_runtime::Arg::new(&mut s[..], &[rows]),
            passfold_runtime::Arg::new(&mut y[..], &[rows, n]),
        ],
        &[],
    )
    .expect("runs");
    for r in 0..rows {
        let next: Vec<f32> = if r + 1 < rows {
            big[(r + 1) * n..(r + 2) * n].to_vec()
        } else {
            vec![0.0; n]
        };
        assert_eq!(s[r], next.iter().sum::<f32>(), "row {r}");
        let want: Vec<f32> = next.iter().map(|v| v * 2.0).collect();
        assert_eq!(&y[r * n..(r + 1) * n], &want[..], "row {r}");
    }
}

/// Sweeps of one row alternate direction (`backward` in the plan text):
/// softmax's `exp` sweep runs backward between two forward ones (the
/// reload form), its output sweep backward after the forward running-max
/// sweep (the recompute form); blocked sweeps (in L1) keep their
/// direction. A backward loop runs its scalar tail first: every length
/// from 0 to 40 and 4099, with a quarter of the inputs `-inf`, `+inf` or
/// NaN, agrees with the interpreter (the same check as every other
/// vector loop: relative 1e-5 of the output scale, NaN where it is NaN),
/// on the JIT and with the row split over two threads.
#[test]
fn alternate_sweeps_run_backward() {
    let src = |name: &str| {
        passfold_kernels::CATALOGUE
            .iter()
            .find(|k| k.name == name)
            .expect("in the catalogue")
            .source
    };
    let softmax = passfold_dsl::check(src("softmax"), &LowerOptions::default()).expect("checks");
    for reload in [true, false] {
        let plan = passfold_dsl::plan(
            &softmax,
            PlanOptions {
                reload: if reload {
                    passfold_dsl::fuse::Reload::Reload
                } else {
                    passfold_dsl::fuse::Reload::Recompute
                },
                ..Default::default()
            },
        );
        let text = plan.to_string();
        let sweeps: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("    for i sweep"))
            .collect();
        assert_eq!(sweeps.len(), if reload { 3 } else { 2 }, "{text}");
        for (k, sweep) in sweeps.iter().enumerate() {
            assert_eq!(sweep.contains("backward"), k % 2 == 1, "sweep {k}:\n{text}");
        }
    }
    let lse = passfold_dsl::check(src("logsumexp"), &LowerOptions::default()).expect("checks");
    let plan = passfold_dsl::plan(&lse, PlanOptions::default());
    assert!(plan.to_string().contains("blocks of"), "{plan}");
    assert!(!plan.to_string().contains("backward"), "{plan}");

    let plan = passfold_dsl::plan(&softmax, PlanOptions::default());
    let jit = passfold_runtime::compile(&plan).expect("compiles");
    let mut rng = SmallRng::seed_from_u64(11);
    for n in (0..=40).chain([4099]) {
        for special in [false, true] {
            let rows = 3i64;
            let x: Vec<f64> = (0..rows * n)
                .map(|_| {
                    if special && rng.random_range(0..4) == 0 {
                        [f64::NEG_INFINITY, f64::INFINITY, f64::NAN][rng.random_range(0..3)]
                    } else {
                        rng.random_range(-50.0..50.0f32) as f64
                    }
                })
                .collect();
            for threads in [1, 2] {
                let (want, got) = y_of(
                    &softmax,
                    &jit,
                    &[rows, n],
                    &x,
                    (rows * n) as usize,
                    &[],
                    threads,
                );
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let ok = if w.is_nan() {
                        g.is_nan()
                    } else {
                        (g - w).abs() <= 1e-5 * w.abs().max(1e-30) + 1e-6
                    };
                    assert!(
                        ok,
                        "n = {n}, special {special}, {threads} threads: y[{i}] = {g}, interpreter {w}"
                    );
                }
            }
        }
    }
}

/// The blocked store (`Reload::BlockStore`, what the AOT back end's cost
/// model picks for softmax): the running-max sweep stores its terms and each
/// block's max in the output, the output sweep rescales them per block. On
/// the JIT, for softmax and softmax_t, at lengths around the vector width
/// and the block (1,024), with a quarter of the inputs `-inf`, `+inf` or
/// NaN and with whole rows of `-inf`, on one thread and with one row split
/// over two (each thread's blocks start at its chunk): the interpreter's
/// values within relative 1e-5 of the output scale, NaN where it is NaN.
#[test]
fn blocked_store_agrees_with_the_interpreter() {
    for name in ["softmax", "softmax_t"] {
        let kernel = catalogue_kernel(name);
        let plan = passfold_dsl::plan(
            &kernel,
            PlanOptions {
                reload: passfold_dsl::fuse::Reload::BlockStore,
                ..Default::default()
            },
        );
        assert!(
            plan.rules.iter().any(|r| r.starts_with("blocked store")),
            "{plan}"
        );
        assert_eq!(plan.passes(), 2, "{plan}");
        let jit = passfold_runtime::compile(&plan).expect("compiles");
        let params: Vec<f64> = kernel.params.iter().map(|_| 0.7).collect();
        let mut rng = SmallRng::seed_from_u64(12);
        for n in (0..=40).chain([1023, 1024, 1025, 2049, 5000]) {
            for fill in 0..3 {
                for (rows, threads) in [(3i64, 1usize), (1, 2)] {
                    let x: Vec<f64> = (0..rows * n)
                        .map(|_| match fill {
                            1 if rng.random_range(0..4) == 0 => {
                                [f64::NEG_INFINITY, f64::INFINITY, f64::NAN][rng.random_range(0..3)]
                            }
                            2 => f64::NEG_INFINITY,
                            _ => rng.random_range(-80.0..80.0f32) as f64,
                        })
                        .collect();
                    let (want, got) = y_of(
                        &kernel,
                        &jit,
                        &[rows, n],
                        &x,
                        (rows * n) as usize,
                        &params,
                        threads,
                    );
                    let scale = want
                        .iter()
                        .filter(|v| v.is_finite())
                        .fold(0.0f64, |a, v| a.max(v.abs()));
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        let ok = if w.is_nan() {
                            g.is_nan()
                        } else {
                            (g - w).abs() <= 1e-5 * w.abs() + 1e-6 * scale.max(1e-30)
                        };
                        assert!(
                            ok,
                            "{name} n = {n} fill {fill} rows {rows} threads {threads}: y[{i}] = {g}, interpreter {w}"
                        );
                    }
                }
            }
        }
    }
}

/// The nan-cover rule (`passfold_dsl::nancover`): a max whose NaN the sum
/// of its shifted exps carries runs as `maxnum` (passing over NaN), only
/// when every reader of the max reads that sum; the results keep every NaN
/// and `-inf` case of the NaN-propagating max: rows of `-inf` and NaN in
/// one block or across blocks of 1,024, a NaN before, after or among
/// finite values, on every plan form and on split rows.
#[test]
fn nan_cover_max_passes_over_nan_and_keeps_nans() {
    let check = |src: &str| passfold_dsl::check(src, &LowerOptions::default()).expect("checks");
    let has_rule = |src: &str| {
        passfold_dsl::plan(&check(src), PlanOptions::default())
            .to_string()
            .contains("nan-cover")
    };
    for name in ["softmax", "logsumexp", "cross_entropy", "log_softmax"] {
        let plan = passfold_dsl::plan(&catalogue_kernel(name), PlanOptions::default());
        assert!(plan.to_string().contains("nan-cover"), "{name}");
    }
    // The max is an output: its NaN must be its own.
    assert!(!has_rule(
        "kernel k(x: f32[b, i]) -> (m: f32[b], y: f32[b]) {
            m[b] = max[i](x[b, i]);
            s[b] = sum[i](exp(x[b, i] - m[b]));
            y[b] = m[b] + log(s[b]);
        }"
    ));
    // A reader of the max that does not read the sum, or reads it through
    // an operation that can drop a NaN.
    assert!(!has_rule(
        "kernel k(x: f32[b, i]) -> (y: f32[b], z: f32[b]) {
            m[b] = max[i](x[b, i]);
            s[b] = sum[i](exp(x[b, i] - m[b]));
            y[b] = m[b] + log(s[b]);
            z[b] = 2.0 * m[b];
        }"
    ));
    assert!(!has_rule(
        "kernel k(x: f32[b, i]) -> (y: f32[b]) {
            m[b] = max[i](x[b, i]);
            s[b] = sum[i](exp(x[b, i] - m[b]));
            y[b] = select(s[b] > 0.0, m[b], 1.0);
        }"
    ));
    // A sum that does not see every element of the max.
    assert!(!has_rule(
        "kernel k(x: f32[b, i]) -> (y: f32[b]) {
            m[b] = max[i](x[b, i]);
            s[b] = sum[i](select(x[b, i] > 0.0, exp(x[b, i] - m[b]), 0.0));
            y[b] = m[b] + log(s[b]);
        }"
    ));

    let (ninf, nan) = (f64::NEG_INFINITY, f64::NAN);
    let rows_of = |n: usize| -> Vec<Vec<f64>> {
        let finite = |i: usize| ((i * 37) % 101) as f64 * 0.7 - 30.0;
        let mut rows = vec![vec![ninf; n], (0..n).map(finite).collect()];
        for p in [0, n / 2, n.saturating_sub(1), 1024.min(n.saturating_sub(1))] {
            let mut r = vec![ninf; n];
            r[p] = nan;
            rows.push(r);
            let mut r: Vec<f64> = (0..n).map(finite).collect();
            r[p] = nan;
            rows.push(r);
            // -inf up to p, NaN at p, finite after.
            let r: Vec<f64> = (0..n)
                .map(|i| match i.cmp(&p) {
                    std::cmp::Ordering::Less => ninf,
                    std::cmp::Ordering::Equal => nan,
                    std::cmp::Ordering::Greater => finite(i),
                })
                .collect();
            rows.push(r);
            // finite up to p, +inf at p.
            let mut r: Vec<f64> = (0..n).map(finite).collect();
            r[p] = f64::INFINITY;
            rows.push(r);
        }
        rows
    };
    for name in ["softmax", "logsumexp"] {
        let kernel = catalogue_kernel(name);
        for reload in [
            passfold_dsl::fuse::Reload::Auto,
            passfold_dsl::fuse::Reload::Reload,
            passfold_dsl::fuse::Reload::Recompute,
            passfold_dsl::fuse::Reload::BlockStore,
        ] {
            let plan = passfold_dsl::plan(
                &kernel,
                PlanOptions {
                    reload,
                    ..Default::default()
                },
            );
            assert!(plan.to_string().contains("maxnum"), "{plan}");
            let jit = passfold_runtime::compile(&plan).expect("compiles");
            for n in [1usize, 5, 1023, 1024, 1025, 2049, 3000] {
                let rows = rows_of(n);
                let b = rows.len() as i64;
                let x: Vec<f64> = rows.concat();
                let out_len = if name == "softmax" {
                    x.len()
                } else {
                    rows.len()
                };
                for threads in [1, 2] {
                    let (want, got) =
                        y_of(&kernel, &jit, &[b, n as i64], &x, out_len, &[], threads);
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        let row = if name == "softmax" { i / n } else { i };
                        // A row of all -inf: the running-max forms give
                        // their documented limit (`adversarial.rs`,
                        // `all_neg_inf_rows_give_the_documented_values`).
                        let all_neg_inf = rows[row].iter().all(|&v| v == ninf);
                        let ok = if rows[row].iter().any(|v| v.is_nan()) {
                            g.is_nan()
                        } else if w.is_nan() {
                            g.is_nan() || (all_neg_inf && (*g == 0.0 || g.is_infinite()))
                        } else {
                            g == w || (g - w).abs() <= 1e-5 * w.abs().max(1e-30) + 1e-6
                        };
                        assert!(
                            ok,
                            "{name} {reload:?} n = {n}, {threads} thread(s): y[{i}] (row {row}) = {g}, interpreter {w}"
                        );
                    }
                }
            }
        }
    }
}

/// The split form (`Plan::split_form`): the JIT's softmax plans the
/// blocked store for rows split across threads whose arguments pass
/// `SPLIT_FORM_MIN_BYTES` (the AOT's plan is the blocked store already and
/// has none); such a row on two threads agrees with one thread.
#[test]
fn long_split_rows_take_the_split_form() {
    let kernel = catalogue_kernel("softmax");
    let plan = passfold_dsl::plan(&kernel, PlanOptions::default());
    let form = plan
        .split_form
        .as_deref()
        .expect("softmax has a split form");
    assert!(
        form.rules.iter().any(|r| r.starts_with("blocked store")),
        "{form}"
    );
    assert!(plan.to_string().contains("  split form: "), "{plan}");
    let wide = passfold_dsl::plan(
        &kernel,
        PlanOptions {
            wide: true,
            ..Default::default()
        },
    );
    assert!(wide.split_form.is_none());
    // logsumexp has no output sweep to store into.
    let lse = catalogue_kernel("logsumexp");
    assert!(
        passfold_dsl::plan(&lse, PlanOptions::default())
            .split_form
            .is_none()
    );

    let jit = passfold_runtime::compile(&plan).expect("compiles");
    let min = passfold_dsl::cost::SPLIT_FORM_MIN_BYTES as i64;
    // x and y: 8 bytes per element.
    let n = min / 8 + 37;
    assert!(jit.split_form_for(&[1, n]));
    assert!(!jit.split_form_for(&[1, min / 8 - 1]));
    let mut rng = SmallRng::seed_from_u64(13);
    let x: Vec<f32> = (0..n)
        .map(|k| {
            if k % 100_003 == 7 {
                f32::NEG_INFINITY
            } else {
                rng.random_range(-60.0..60.0f32)
            }
        })
        .collect();
    let shape = [1usize, n as usize];
    let run = |threads: usize| {
        let mut y = vec![0.0f32; n as usize];
        jit.call_threads(
            vec![
                passfold_runtime::Arg::new(&x[..], &shape),
                passfold_runtime::Arg::new(&mut y[..], &shape),
            ],
            &[],
            threads,
        )
        .expect("runs");
        y
    };
    let (one, two) = (run(1), run(2));
    // Against f64: the f32 sum of 4 million terms (in 12 lanes, blocks
    // and two halves) is good to a few 1e-5 relative.
    let m = x
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    let s: f64 = x.iter().map(|&v| (f64::from(v) - m).exp()).sum();
    for (k, ((a, b), &v)) in one.iter().zip(&two).zip(&x).enumerate() {
        let want = (f64::from(v) - m).exp() / s;
        for (got, threads) in [(a, 1), (b, 2)] {
            assert!(
                (f64::from(*got) - want).abs() <= 1e-4 * want + 1e-37,
                "y[{k}] on {threads} thread(s): {got}, f64 {want}"
            );
        }
    }
}
