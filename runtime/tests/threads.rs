//! Rows split over threads give the same results as one thread, bit for bit.

mod common;

use passfold_dsl::{LowerOptions, PlanOptions, ScalarType};
use passfold_runtime::{Arg, compile};

#[test]
fn threads_split_rows_and_agree_bit_for_bit() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../kernels");
    let mut parallel = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "pf") {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        let plan = common::plan_with(&src, &LowerOptions::default(), PlanOptions::default());
        let jit = compile(&plan).unwrap();
        let kernel = jit.kernel().clone();
        if jit.row_parallel() {
            parallel.push(kernel.name.clone());
        }
        let reduced = passfold_dsl::rules::reduced_mask(&kernel);
        let extents: Vec<i64> = (0..kernel.extents.len())
            .map(|e| if reduced & (1 << e) != 0 { 37 } else { 7 })
            .collect();
        let args = common::random_args(
            &kernel,
            &extents,
            common::Inputs {
                seed: 3,
                special: 0.05,
                range: 3.0,
            },
        );
        let params: Vec<f64> = (0..kernel.params.len())
            .map(|p| 0.5 + 0.25 * p as f64)
            .collect();
        let run = |threads: usize| -> Vec<Vec<u64>> {
            let shapes = common::shapes(&kernel, &extents);
            let mut bufs: Vec<common::Buf> = kernel
                .arguments()
                .zip(&args)
                .map(|(id, v)| {
                    let n: usize = passfold_dsl::shape_of(kernel.tensor(id), &extents)
                        .unwrap()
                        .iter()
                        .product();
                    let v = if v.is_empty() {
                        vec![0.0; n]
                    } else {
                        v.clone()
                    };
                    common::Buf::from_f64(kernel.tensor(id).ty, &v)
                })
                .collect();
            let call_args: Vec<Arg> = bufs
                .iter_mut()
                .zip(&shapes)
                .map(|(b, s)| b.arg(s))
                .collect();
            jit.call_threads(call_args, &params, threads).unwrap();
            bufs.iter()
                .map(|b| b.to_f64().iter().map(|v| v.to_bits()).collect())
                .collect()
        };
        let one = run(1);
        for threads in [2, 3, 8] {
            assert!(
                run(threads) == one,
                "{}: {threads} threads differ from one",
                kernel.name
            );
        }
        let _ = ScalarType::F32;
    }
    for name in [
        "softmax",
        "logsumexp",
        "layer_norm",
        "attention",
        "cross_entropy",
        "lion_step",
    ] {
        assert!(
            parallel.iter().any(|p| p == name),
            "{name} should split rows: {parallel:?}"
        );
    }
}

/// One row split across threads by the combine laws: every catalogue kernel
/// whose plan splits (`CompiledKernel::row_splits`) gives, with two threads,
/// the one-thread result up to the regrouping of its sums (NaN where it
/// gives NaN, infinities where it does), the same bits on every two-thread
/// run, at lengths around the vector width and long ones.
#[test]
fn one_row_splits_across_threads() {
    let mut split = Vec::new();
    let mut not_split = Vec::new();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../kernels");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pf"))
        .collect();
    files.sort();
    for path in files {
        let src = std::fs::read_to_string(&path).unwrap();
        let plan = common::plan_with(&src, &LowerOptions::default(), PlanOptions::default());
        let jit = compile(&plan).unwrap();
        let name = jit.kernel().name.clone();
        let entry = &name;
        match jit.row_splits() {
            Ok(()) => split.push(name.clone()),
            Err(why) => {
                not_split.push(format!("{name}: {why}"));
                continue;
            }
        }
        let kernel = jit.kernel().clone();
        let reduced = passfold_dsl::rules::reduced_mask(&kernel);
        for n in [1i64, 2, 5, 9, 17, 37, 1000, 4099] {
            let extents: Vec<i64> = (0..kernel.extents.len())
                .map(|e| if reduced & (1 << e) != 0 { n } else { 1 })
                .collect();
            for special in [0.0, 0.05] {
                let args = common::random_args(
                    &kernel,
                    &extents,
                    common::Inputs {
                        seed: n as u64,
                        special,
                        range: 20.0,
                    },
                );
                let params: Vec<f64> = (0..kernel.params.len())
                    .map(|p| 0.5 + 0.25 * p as f64)
                    .collect();
                let one = jit.call_f64(&extents, &args, &params, 1).unwrap();
                let two = jit.call_f64(&extents, &args, &params, 2).unwrap();
                let again = jit.call_f64(&extents, &args, &params, 2).unwrap();
                for (((id, a), b), c) in kernel.arguments().zip(&one).zip(&two).zip(&again) {
                    let scale = a
                        .iter()
                        .filter(|v| v.is_finite())
                        .fold(1e-30f64, |m, v| m.max(v.abs()));
                    for (k, ((x, y), z)) in a.iter().zip(b).zip(c).enumerate() {
                        let what = format!(
                            "{entry} n={n} special={special} `{}`[{k}]",
                            kernel.tensor(id).name
                        );
                        assert_eq!(y.to_bits(), z.to_bits(), "{what}: two-thread runs differ");
                        if x.is_nan() || y.is_nan() {
                            assert!(x.is_nan() && y.is_nan(), "{what}: {x} vs {y}");
                            continue;
                        }
                        if x.is_infinite() || y.is_infinite() {
                            assert_eq!(x, y, "{what}");
                            continue;
                        }
                        assert!(
                            (x - y).abs() <= 1e-5 * x.abs().max(scale),
                            "{what}: one thread {x}, two threads {y}"
                        );
                    }
                }
            }
        }
    }
    eprintln!(
        "split across threads: {split:?}\nnot split:\n{}",
        not_split.join("\n")
    );
    for name in [
        "softmax",
        "logsumexp",
        "layer_norm",
        "rms_norm",
        "attention",
        "attention_bias",
    ] {
        assert!(
            split.iter().any(|s| s == name),
            "{name} does not split:\n{}",
            not_split.join("\n")
        );
    }
}

/// `call_threads` splits a row only when the plan's estimated work reaches
/// `SPLIT_MIN_WORK`: a short softmax row on two threads gives the
/// one-thread bits (not split), a long one gives exactly what the forced
/// split (`call_split`) gives.
#[test]
fn short_rows_do_not_split() {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../kernels/softmax.pf"
    ))
    .unwrap();
    let plan = common::plan_with(&src, &LowerOptions::default(), PlanOptions::default());
    let jit = compile(&plan).unwrap();
    assert!(jit.row_splits().is_ok());
    let run = |n: usize, how: &str| -> Vec<f32> {
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 50.0).collect();
        let mut y = vec![0f32; n];
        let args = vec![Arg::new(&x[..], &[1, n]), Arg::new(&mut y[..], &[1, n])];
        match how {
            "one" => jit.call_threads(args, &[], 1),
            "two" => jit.call_threads(args, &[], 2),
            _ => jit.call_split(args, &[], 2),
        }
        .unwrap();
        y
    };
    let work = |n: i64| passfold_dsl::cost::work(&plan, &[1, n]);
    let short = 1000;
    assert!(work(short as i64) < passfold_runtime::SPLIT_MIN_WORK);
    let one = run(short, "one");
    assert_eq!(run(short, "two"), one);
    let long = 1 << 20;
    assert!(work(long as i64) >= passfold_runtime::SPLIT_MIN_WORK);
    assert_eq!(run(long, "two"), run(long, "split"));
}
