//! The reference interpreter on hand-computed cases.

use passfold_dsl::{LowerOptions, Precision, interpret};

fn run(src: &str, extents: &[i64], args: Vec<Vec<f64>>, params: &[f64]) -> Vec<Vec<f64>> {
    let k = passfold_dsl::check(src, &LowerOptions::default()).expect("checks");
    interpret(&k, extents, args, params, Precision::F64).expect("runs")
}

#[test]
fn softmax_by_hand() {
    let src = passfold_kernels::get("softmax").unwrap().source;
    let out = run(src, &[1, 3], vec![vec![0.0, 1.0, 2.0], vec![]], &[]);
    let e: Vec<f64> = [0.0f64, 1.0, 2.0].iter().map(|v| (v - 2.0).exp()).collect();
    let s: f64 = e.iter().sum();
    for (got, want) in out[1].iter().zip(e.iter().map(|v| v / s)) {
        assert!((got - want).abs() < 1e-15);
    }
}

#[test]
fn logsumexp_edge_rows() {
    let src = passfold_kernels::get("logsumexp").unwrap().source;
    let ninf = f64::NEG_INFINITY;
    // Rows: all -inf gives NaN under the formula (m = -inf, x - m = NaN):
    // the fused plan will offer -inf; the naive formula is what it is.
    let out = run(
        src,
        &[3, 2],
        vec![vec![ninf, ninf, 1.0, f64::INFINITY, 0.0, 0.0], vec![]],
        &[],
    );
    assert!(out[1][0].is_nan());
    assert!(out[1][1].is_nan(), "+inf - +inf under the naive formula");
    assert!((out[1][2] - 2f64.ln()).abs() < 1e-15);
}

#[test]
fn gather_out_of_range_is_an_error() {
    let src = passfold_kernels::get("cross_entropy").unwrap().source;
    let k = passfold_dsl::check(src, &LowerOptions::default()).unwrap();
    let err = interpret(
        &k,
        &[1, 2],
        vec![vec![0.0, 1.0], vec![5.0], vec![]],
        &[],
        Precision::F64,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("index 5 is outside dimension 1 of `x`"),
        "{err}"
    );
}

#[test]
fn relative_positions_and_padding() {
    // r[j - i] over i, j in 0..2 holds offsets -1, 0, 1 at 0, 1, 2.
    let src = "kernel k(r: f32[j - i], x: f32[j] pad 100.0) -> (y: f32[i, j]) {\n    y[i, j] = r[j - i] + x[j + 1];\n}";
    let out = run(
        src,
        &[2, 2],
        vec![vec![10.0, 20.0, 30.0], vec![1.0, 2.0], vec![]],
        &[],
    );
    assert_eq!(
        out[2],
        vec![20.0 + 2.0, 30.0 + 100.0, 10.0 + 2.0, 20.0 + 100.0]
    );
}

#[test]
fn topk_threshold_and_ties() {
    let src = passfold_kernels::get("topk_gate").unwrap().source;
    let out = run(src, &[1, 4], vec![vec![1.0, 3.0, 2.0, 3.0], vec![]], &[]);
    // k = 2: the threshold is 3; both 3s are kept with equal weight.
    assert_eq!(out[1], vec![0.0, 0.5, 0.0, 0.5]);
}

#[test]
fn lion_updates_in_place() {
    let src = passfold_kernels::get("lion_step").unwrap().source;
    let (w, m, g) = (vec![1.0, -2.0], vec![0.5, 0.0], vec![-1.0, 0.0]);
    let (lr, b1, b2, wd) = (0.1, 0.9, 0.99, 0.01);
    let out = run(
        src,
        &[2],
        vec![w.clone(), m.clone(), g.clone()],
        &[lr, b1, b2, wd],
    );
    for n in 0..2 {
        let u = passfold_dsl::math::sign(b1 * m[n] + (1.0 - b1) * g[n]);
        assert_eq!(out[0][n], w[n] - lr * (u + wd * w[n]));
        assert_eq!(out[1][n], b2 * m[n] + (1.0 - b2) * g[n]);
    }
}

#[test]
fn empty_rows() {
    let src = passfold_kernels::get("logsumexp").unwrap().source;
    let out = run(src, &[2, 0], vec![vec![], vec![]], &[]);
    // max over nothing is -inf and the sum is 0: y = -inf + log 0 = -inf.
    assert_eq!(out[1], vec![f64::NEG_INFINITY; 2]);
}
