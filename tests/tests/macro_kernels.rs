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

kernel! {
    #[extents(c = 16, e = 8)]
    kernel attention(q: f32[h, i, c], k: f32[h, j, c], v: f32[h, j, e], scale: f32) -> (o: f32[h, i, e]) {
        s[h, i, j] = scale * sum[c](q[h, i, c] * k[h, j, c]);
        m[h, i] = max[j](s[h, i, j]);
        l[h, i] = sum[j](exp(s[h, i, j] - m[h, i]));
        o[h, i, e] = sum[j](exp(s[h, i, j] - m[h, i]) * v[h, j, e]) / l[h, i];
    }
}

/// Extents fixed in the macro are constants in the code: the call takes
/// only the dynamic ones, matches the general kernel, and the compiled
/// kernel refuses other lengths.
#[test]
fn macro_kernel_with_fixed_extents() {
    let (h, i, j, c, e) = (2usize, 3usize, 45usize, 16usize, 8usize);
    let q: Vec<f32> = (0..h * i * c)
        .map(|k| ((k * 31) % 17) as f32 * 0.1 - 0.8)
        .collect();
    let kk: Vec<f32> = (0..h * j * c)
        .map(|k| ((k * 13) % 23) as f32 * 0.1 - 1.1)
        .collect();
    let v: Vec<f32> = (0..h * j * e)
        .map(|k| ((k * 7) % 11) as f32 - 5.0)
        .collect();
    let mut o = vec![0.0f32; h * i * e];
    attention::call(h, i, j, &q, &kk, &v, &mut o, 0.25).unwrap();
    let mut want = vec![0.0f32; h * i * e];
    runtime_call(
        attention::SOURCE,
        vec![
            passfold::Arg::new(&q, &[h, i, c]),
            passfold::Arg::new(&kk, &[h, j, c]),
            passfold::Arg::new(&v, &[h, j, e]),
            passfold::Arg::new(&mut want, &[h, i, e]),
        ],
        &[0.25],
    );
    assert_eq!(o, want);
    // The compiled kernel itself was specialized: other lengths are refused.
    let compiled = attention::compiled().unwrap();
    let q8 = vec![0.0f32; h * i * 8];
    let k8 = vec![0.0f32; h * j * 8];
    let err = compiled
        .call(
            vec![
                passfold::Arg::new(&q8, &[h, i, 8]),
                passfold::Arg::new(&k8, &[h, j, 8]),
                passfold::Arg::new(&v, &[h, j, e]),
                passfold::Arg::new(&mut o, &[h, i, e]),
            ],
            &[0.25],
        )
        .unwrap_err();
    assert!(err.to_string().contains("`c`"), "{err}");
}

kernel! {
    kernel lse_counted(x: f32[b, i]) -> (y: f32[b]) {
        m[b] = max[i](x[b, i]);
        y[b] = m[b] + log(sum[i](exp(x[b, i] - m[b])));
    }
}

/// The plan `kernel!` computed at compile time is embedded: the first call
/// compiles it with Cranelift without parsing or planning (the front end's
/// run counter on this thread does not move).
#[test]
fn first_macro_call_does_not_parse_or_plan() {
    let before = passfold::dsl::front_end_runs();
    let x: Vec<f32> = (0..64).map(|k| k as f32 * 0.5).collect();
    let mut y = vec![0.0f32; 2];
    lse_counted::call(2, 32, &x, &mut y).unwrap();
    assert_eq!(
        passfold::dsl::front_end_runs(),
        before,
        "the first call ran the front end"
    );
    let want = 15.5f32
        + (0..32)
            .map(|k| ((k as f32 - 31.0) * 0.5).exp())
            .sum::<f32>()
            .ln();
    assert!((y[0] - want).abs() < 1e-5, "{} vs {want}", y[0]);
    // Compiling the text at run time does run it.
    passfold::compile(lse_counted::SOURCE).unwrap();
    assert!(passfold::dsl::front_end_runs() > before);
}

kernel! {
    #[consts(k = 3)]
    kernel topk_gate(x: f32[b, i], const k: i32 = 2) -> (y: f32[b, i]) {
        t[b] = topk[i](x[b, i], k);
        m[b] = max[i](x[b, i]);
        s[b] = sum[i](select(x[b, i] >= t[b], exp(x[b, i] - m[b]), 0.0));
        y[b, i] = select(x[b, i] >= t[b], exp(x[b, i] - m[b]) / s[b], 0.0);
    }
}

/// A `const` parameter given in the macro is folded into the plan at
/// compile time: the same results as the run-time API with that value.
#[test]
fn macro_kernel_with_a_const_parameter() {
    let (b, i) = (2usize, 9usize);
    let x: Vec<f32> = (0..b * i)
        .map(|k| ((k * 5) % 7) as f32 - 3.0 + k as f32 * 0.01)
        .collect();
    let mut y = vec![0.0f32; b * i];
    topk_gate::call(b, i, &x, &mut y).unwrap();
    assert!(topk_gate::PLAN.contains("topk"), "{}", topk_gate::PLAN);
    let opts = passfold::LowerOptions {
        consts: vec![("k".into(), 3)],
        ..Default::default()
    };
    let k = passfold::compile_with(topk_gate::SOURCE, &opts, Default::default()).unwrap();
    let mut want = vec![0.0f32; b * i];
    k.call(
        vec![
            passfold::Arg::new(&x, &[b, i]),
            passfold::Arg::new(&mut want, &[b, i]),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(y, want);
    // Three entries per row are kept (k = 3, not the default 2).
    for r in 0..b {
        let kept = y[r * i..(r + 1) * i].iter().filter(|v| **v > 0.0).count();
        assert_eq!(kept, 3, "{y:?}");
    }
}

mod aot {
    //! `kernel!` with `#[aot]`: the same typed item, running Rust compiled
    //! ahead of time.

    passfold::kernel! {
        #[aot]
        kernel softmax(x: f32[b, i]) -> (y: f32[b, i]) {
            m[b] = max[i](x[b, i]);
            s[b] = sum[i](exp(x[b, i] - m[b]));
            y[b, i] = exp(x[b, i] - m[b]) / s[b];
        }
    }

    passfold::kernel! {
        #[aot]
        kernel cross_entropy(logits: f32[b, i], label: i32[b]) -> (loss: f32[b]) {
            m[b] = max[i](logits[b, i]);
            lse[b] = m[b] + log(sum[i](exp(logits[b, i] - m[b])));
            loss[b] = lse[b] - logits[b, label[b]];
        }
    }

    passfold::kernel! {
        #[aot]
        #[extents(i = 40)]
        kernel rms_norm(x: f32[b, i], g: f32[i], eps: f32) -> (y: f32[b, i]) {
            r[b] = rsqrt(mean[i](x[b, i] * x[b, i]) + eps);
            y[b, i] = x[b, i] * r[b] * g[i];
        }
    }

    #[test]
    fn aot_softmax_matches_the_jit_item() {
        let (b, i) = (3usize, 37usize);
        let x: Vec<f32> = (0..b * i)
            .map(|k| ((k * 7919) % 101) as f32 * 0.3 - 15.0)
            .collect();
        let mut got = vec![0.0f32; b * i];
        softmax::call(b, i, &x, &mut got).unwrap();
        let mut want = vec![0.0f32; b * i];
        super::softmax::call(b, i, &x, &mut want).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 4.0 * f32::EPSILON * w.abs(), "{g} vs {w}");
        }
        for row in got.chunks(i) {
            let s: f32 = row.iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "row sums to {s}");
        }
        // The same derivation, weighed for each back end's code: the AOT's
        // full-width `exp` is cheap next to a second read of the input, so
        // its cost model takes the blocked store; the JIT's reloads.
        assert!(
            softmax::PLAN.contains("rule: blocked store"),
            "{}",
            softmax::PLAN
        );
        assert!(
            super::softmax::PLAN.contains("rule: reload"),
            "{}",
            super::softmax::PLAN
        );
        for plan in [softmax::PLAN, super::softmax::PLAN] {
            assert!(
                plan.starts_with("plan softmax: fused, 2 pass(es)"),
                "{plan}"
            );
        }
        assert!(["avx512", "avx2+fma", "neon", "baseline"].contains(&softmax::level()));
        // Both items take a thread count the same way; rows split over
        // threads give the same bits as one thread.
        for threads in [2, 3, 8] {
            let mut aot = vec![0.0f32; b * i];
            softmax::call_threads(threads, b, i, &x, &mut aot).unwrap();
            assert_eq!(aot, got, "AOT on {threads} threads");
            let mut jit = vec![0.0f32; b * i];
            super::softmax::call_threads(threads, b, i, &x, &mut jit).unwrap();
            assert_eq!(jit, want, "JIT on {threads} threads");
        }
        let mut short = vec![0.0f32; b * i - 1];
        let err = softmax::call_threads(2, b, i, &x, &mut short).unwrap_err();
        assert!(err.to_string().contains("argument `y`"), "{err}");
    }

    #[test]
    fn aot_calls_validate_before_running() {
        let x = vec![0.0f32; 6];
        let mut y = vec![0.0f32; 5];
        let err = softmax::call(2, 3, &x, &mut y).unwrap_err();
        assert_eq!(
            err.to_string(),
            "argument `y` has 5 element(s), its shape [2, 3] needs 6"
        );
        let err = softmax::call(usize::MAX, 2, &x, &mut y).unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
        // A label outside the row: the gather's error, with its place.
        let mut loss = vec![0.0f32; 2];
        let err = cross_entropy::call(2, 3, &x, &[0, 3], &mut loss).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("a gathered index is out of range in the read of `logits` at "),
            "{err}"
        );
        cross_entropy::call(2, 3, &x, &[0, 2], &mut loss).unwrap();
        assert!((loss[0] - 3f32.ln()).abs() < 1e-6, "{loss:?}");
    }

    #[test]
    fn aot_fixed_extents_and_params() {
        let (b, i) = (2usize, 40usize);
        let x: Vec<f32> = (0..b * i).map(|k| k as f32 * 0.1 - 3.0).collect();
        let g: Vec<f32> = (0..i).map(|k| 1.0 + k as f32 * 0.01).collect();
        let mut y = vec![0.0f32; b * i];
        rms_norm::call(b, &x, &g, &mut y, 1e-5).unwrap();
        for r in 0..b {
            let row = &x[r * i..(r + 1) * i];
            let ms: f32 = row.iter().map(|v| v * v).sum::<f32>() / i as f32;
            let inv = 1.0 / (ms + 1e-5).sqrt();
            for k in 0..i {
                let want = row[k] * inv * g[k];
                assert!((y[r * i + k] - want).abs() <= 1e-5 * want.abs().max(1.0));
            }
        }
        // The fixed extent is checked through the lengths.
        assert!(rms_norm::call(b, &x[..10], &g, &mut y, 1e-5).is_err());
    }
}
