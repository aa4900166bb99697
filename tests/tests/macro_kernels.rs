//! `kernel!`: kernels checked at compile time, called through typed
//! functions, giving the run-time API's results.

use passfold::kernel;

kernel! {
    kernel softmax(x: f32[b, i]) -> (y: f32[b, i]) {
        m[b] = max[i](x[b, i]);
        s[b] = sum[i](exp(x[b, i] - m[b]));
        y[b, i] = exp(x[b, i] - m[b]) / s[b];
    }
}

kernel! {
    // Temperature softmax: a parameter after the tensors.
    kernel softmax_t(x: f32[b, i], tau: f32) -> (y: f32[b, i]) {
        m[b] = max[i](x[b, i] / tau);
        s[b] = sum[i](exp(x[b, i] / tau - m[b]));
        y[b, i] = exp(x[b, i] / tau - m[b]) / s[b];
    }
}

kernel! {
    kernel cross_entropy(logits: f32[b, i], label: i32[b]) -> (loss: f32[b]) {
        m[b] = max[i](logits[b, i]);
        lse[b] = m[b] + log(sum[i](exp(logits[b, i] - m[b])));
        loss[b] = lse[b] - logits[b, label[b]];
    }
}

fn runtime_call(src: &str, args: Vec<passfold::Arg<'_>>, params: &[f64]) {
    passfold::compile(src).unwrap().call(args, params).unwrap();
}

#[test]
fn macro_kernels_match_the_runtime_api() {
    let (b, i) = (3usize, 37usize);
    let x: Vec<f32> = (0..b * i)
        .map(|k| ((k * 7919) % 101) as f32 * 0.3 - 15.0)
        .collect();

    let mut y = vec![0.0f32; b * i];
    softmax::call(b, i, &x, &mut y).unwrap();
    let mut want = vec![0.0f32; b * i];
    runtime_call(
        softmax::SOURCE,
        vec![
            passfold::Arg::new(&x, &[b, i]),
            passfold::Arg::new(&mut want, &[b, i]),
        ],
        &[],
    );
    assert_eq!(y, want);
    assert!(softmax::PLAN.contains("2 pass(es)"), "{}", softmax::PLAN);

    let mut y = vec![0.0f32; b * i];
    softmax_t::call(b, i, &x, &mut y, 0.7).unwrap();
    let mut want = vec![0.0f32; b * i];
    runtime_call(
        softmax_t::SOURCE,
        vec![
            passfold::Arg::new(&x, &[b, i]),
            passfold::Arg::new(&mut want, &[b, i]),
        ],
        &[0.7],
    );
    assert_eq!(y, want);

    let labels: Vec<i32> = vec![0, 5, 36];
    let mut loss = vec![0.0f32; b];
    cross_entropy::call(b, i, &x, &labels, &mut loss).unwrap();
    let mut want = vec![0.0f32; b];
    runtime_call(
        cross_entropy::SOURCE,
        vec![
            passfold::Arg::new(&x, &[b, i]),
            passfold::Arg::new(&labels, &[b]),
            passfold::Arg::new(&mut want, &[b]),
        ],
        &[],
    );
    assert_eq!(loss, want);
    assert!(loss.iter().all(|v| v.is_finite() && *v >= 0.0), "{loss:?}");
}

#[test]
fn macro_kernel_calls_report_errors() {
    let x = vec![0.0f32; 10];
    let mut y = vec![0.0f32; 9];
    let err = softmax::call(2, 5, &x, &mut y).unwrap_err();
    assert!(err.to_string().contains("`y`"), "{err}");
    let labels = vec![0, 99];
    let mut loss = vec![0.0f32; 2];
    let err = cross_entropy::call(2, 5, &x, &labels, &mut loss).unwrap_err();
    assert!(err.to_string().contains("logits"), "{err}");
}
