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
