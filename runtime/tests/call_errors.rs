//! Every refused call returns its `CallError` before any machine code runs.

mod common;

use common::compile_src;
use passfold_runtime::{Arg, CallError};

const SOFTMAX_T: &str = "kernel softmax_t(x: f32[b, i], tau: f32) -> (y: f32[b, i]) {
    m[b] = max[i](x[b, i] / tau);
    s[b] = sum[i](exp(x[b, i] / tau - m[b]));
    y[b, i] = exp(x[b, i] / tau - m[b]) / s[b];
}";

#[test]
fn argument_errors() {
    let k = compile_src(SOFTMAX_T);
    let x = vec![0.0f32; 6];
    let x64 = vec![0.0f64; 6];
    let mut y = vec![0.0f32; 6];
    let y_shared = vec![0.0f32; 6];

    let err = k.call(vec![Arg::new(&x, &[2, 3])], &[1.0]).unwrap_err();
    assert_eq!(
        err,
        CallError::ArgCount {
            expected: 2,
            found: 1
        }
    );

    let err = k
        .call(vec![Arg::new(&x, &[2, 3]), Arg::new(&mut y, &[2, 3])], &[])
        .unwrap_err();
    assert_eq!(
        err,
        CallError::ParamCount {
            expected: 1,
            found: 0
        }
    );

    let err = k
        .call(
            vec![Arg::new(&x64, &[2, 3]), Arg::new(&mut y, &[2, 3])],
            &[1.0],
        )
        .unwrap_err();
    assert!(
        matches!(&err, CallError::WrongType { arg, .. } if arg == "x"),
        "{err}"
    );

    let err = k
        .call(
            vec![Arg::new(&x, &[2, 3]), Arg::new(&y_shared, &[2, 3])],
            &[1.0],
        )
        .unwrap_err();
    assert_eq!(err, CallError::NotMutable { arg: "y".into() });

    let err = k
        .call(vec![Arg::new(&x, &[6]), Arg::new(&mut y, &[2, 3])], &[1.0])
        .unwrap_err();
    assert!(
        matches!(&err, CallError::WrongRank { arg, expected: 2, found: 1 } if arg == "x"),
        "{err}"
    );

    let err = k
        .call(
            vec![Arg::new(&x, &[2, 4]), Arg::new(&mut y, &[2, 3])],
            &[1.0],
        )
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Length { arg, expected: 8, found: 6, .. } if arg == "x"),
        "{err}"
    );

    let err = k
        .call(
            vec![Arg::new(&x, &[3, 2]), Arg::new(&mut y, &[2, 3])],
            &[1.0],
        )
        .unwrap_err();
    assert!(
        matches!(&err, CallError::ExtentConflict { extent, arg, from, .. } if extent == "b" && arg == "y" && from == "x"),
        "{err}"
    );
    assert!(err.to_string().contains("extent `b`"), "{err}");

    let empty: Vec<f32> = Vec::new();
    let err = k
        .call(
            vec![
                Arg::new(&empty, &[usize::MAX, 2, 0][..2]),
                Arg::new(&mut y, &[2, 3]),
            ],
            &[1.0],
        )
        .unwrap_err();
    assert!(
        matches!(&err, CallError::TooLarge { name } if name == "x"),
        "{err}"
    );

    // An input passed mutably is accepted, and the call still works.
    let mut x_mut = vec![1.0f32; 6];
    k.call(
        vec![Arg::new(&mut x_mut, &[2, 3]), Arg::new(&mut y, &[2, 3])],
        &[1.0],
    )
    .unwrap();
    assert!(y.iter().all(|&v| (v - 1.0 / 3.0).abs() < 1e-6), "{y:?}");
}

#[test]
fn binding_by_name_errors() {
    let k = compile_src(SOFTMAX_T);
    let x = vec![0.0f32; 6];
    let mut y = vec![0.0f32; 6];
    let err = k
        .bind()
        .arg("x", Arg::new(&x, &[2, 3]))
        .param("tau", 1.0)
        .run()
        .unwrap_err();
    assert_eq!(
        err,
        CallError::Missing {
            what: "argument",
            name: "y".into()
        }
    );
    let err = k
        .bind()
        .arg("x", Arg::new(&x, &[2, 3]))
        .arg("y", Arg::new(&mut y, &[2, 3]))
        .run()
        .unwrap_err();
    assert_eq!(
        err,
        CallError::Missing {
            what: "parameter",
            name: "tau".into()
        }
    );
    let err = k.bind().arg("z", Arg::new(&x, &[2, 3])).run().unwrap_err();
    assert_eq!(
        err,
        CallError::UnknownName {
            what: "argument",
            name: "z".into()
        }
    );
    let err = k
        .bind()
        .param("tau", 1.0)
        .param("tau", 2.0)
        .run()
        .unwrap_err();
    assert_eq!(
        err,
        CallError::Duplicate {
            what: "parameter",
            name: "tau".into()
        }
    );
    let err = k.bind().extent("q", 3).run().unwrap_err();
    assert_eq!(
        err,
        CallError::UnknownName {
            what: "extent",
            name: "q".into()
        }
    );
    let err = k
        .bind()
        .arg("x", Arg::new(&x, &[2, 3]))
        .arg("y", Arg::new(&mut y, &[2, 3]))
        .param("tau", 1.0)
        .extent("i", 4)
        .run()
        .unwrap_err();
    assert!(
        matches!(&err, CallError::ExtentConflict { extent, from, .. } if extent == "i" && from == "extent"),
        "{err}"
    );
    k.bind()
        .arg("y", Arg::new(&mut y, &[2, 3]))
        .arg("x", Arg::new(&x, &[2, 3]))
        .param("tau", 2.0)
        .extent("i", 3)
        .run()
        .unwrap();
}

#[test]
fn extent_errors() {
    let src =
        "kernel u(x: f32[j - i], a: f32[i]) -> (y: f32[i]) { y[i] = a[i] + sum[j](x[j - i]); }";
    let k = compile_src(src);
    let a = vec![1.0f32; 2];
    let x = vec![1.0f32; 4];
    let mut y = vec![0.0f32; 2];
    let err = k
        .call(
            vec![
                Arg::new(&x, &[4]),
                Arg::new(&a, &[2]),
                Arg::new(&mut y, &[2]),
            ],
            &[],
        )
        .unwrap_err();
    assert_eq!(err, CallError::UnboundExtent { extent: "j".into() });
    // len(j - i) = len(i) + len(j) - 1 = 2 + 3 - 1 = 4.
    let err = k
        .bind()
        .arg("x", Arg::new(&x[..3], &[3]))
        .arg("a", Arg::new(&a, &[2]))
        .arg("y", Arg::new(&mut y, &[2]))
        .extent("j", 3)
        .run()
        .unwrap_err();
    assert!(
        matches!(&err, CallError::DimMismatch { arg, expected: 4, found: 3, form, .. } if arg == "x" && form == "j - i"),
        "{err}"
    );
    k.bind()
        .arg("x", Arg::new(&x, &[4]))
        .arg("a", Arg::new(&a, &[2]))
        .arg("y", Arg::new(&mut y, &[2]))
        .extent("j", 3)
        .run()
        .unwrap();
    assert_eq!(y, [4.0, 4.0]);
}

#[test]
fn temporaries_too_large_to_address() {
    let src = "kernel t(a: f32[k, i], b: f32[k, j]) -> (y: f32[k]) {
        s[i, j] = 1.0;
        y[k] = 0.0;
    }";
    let k = compile_src(src);
    let empty: Vec<f32> = Vec::new();
    let mut y: Vec<f32> = Vec::new();
    let big = 1usize << 40;
    let err = k
        .call(
            vec![
                Arg::new(&empty, &[0, big]),
                Arg::new(&empty, &[0, big]),
                Arg::new(&mut y, &[0]),
            ],
            &[],
        )
        .unwrap_err();
    assert_eq!(err, CallError::TooLarge { name: "s".into() });
}

#[test]
fn compiled_kernels_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<passfold_runtime::CompiledKernel>();
}

/// Half-precision storage: accepted for `f32` inputs (widened exactly, so
/// the result equals the `f32` call's bit for bit), refused with an error
/// naming the argument for outputs and for `f64` inputs.
#[test]
fn half_precision_inputs() {
    use half::{bf16, f16};
    let k = compile_src(SOFTMAX_T);
    let values: Vec<f32> = (0..24).map(|i| (i as f32 - 11.0) * 0.75).collect();
    let as_bf16: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
    let as_f16: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
    let widened_bf16: Vec<f32> = as_bf16.iter().map(|h| h.to_f32()).collect();
    let widened_f16: Vec<f32> = as_f16.iter().map(|h| h.to_f32()).collect();
    for (data, widened) in [
        (passfold_runtime::Data::from(&as_bf16), &widened_bf16),
        (passfold_runtime::Data::from(&as_f16), &widened_f16),
    ] {
        let mut y_half = vec![0.0f32; 24];
        k.call(
            vec![
                Arg {
                    data,
                    shape: vec![4, 6],
                },
                Arg::new(&mut y_half, &[4, 6]),
            ],
            &[1.5],
        )
        .unwrap();
        let mut y = vec![0.0f32; 24];
        k.call(
            vec![Arg::new(widened, &[4, 6]), Arg::new(&mut y, &[4, 6])],
            &[1.5],
        )
        .unwrap();
        assert_eq!(y_half, y);
        assert!(y.iter().all(|v| v.is_finite() && *v > 0.0));
    }
    // As an output: refused, naming the argument.
    let x = vec![0.0f32; 24];
    let out = vec![bf16::ZERO; 24];
    let err = k
        .call(vec![Arg::new(&x, &[4, 6]), Arg::new(&out, &[4, 6])], &[1.0])
        .unwrap_err();
    assert_eq!(err, CallError::HalfNotInput { arg: "y".into() });
    assert!(err.to_string().contains("`y`"), "{err}");
    // For an f64 input: refused.
    let k64 = compile_src("kernel s(x: f64[i]) -> (y: f64[]) { y[] = sum[i](x[i]); }");
    let mut y = vec![0.0f64; 1];
    let err = k64
        .call(
            vec![Arg::new(&as_f16[..4], &[4]), Arg::new(&mut y, &[])],
            &[],
        )
        .unwrap_err();
    assert_eq!(err, CallError::HalfNotInput { arg: "x".into() });
}

/// Extents baked into the code: the same results as the general kernel at
/// those extents, `CallError::Specialized` (naming the extent) at others,
/// and `CompileError::Specialization` for an extent the kernel lacks.
#[test]
fn specialized_extents() {
    use passfold_runtime::{CompileError, compile_specialized};
    let plan = common::plan_of(SOFTMAX_T, &Default::default());
    let general = passfold_runtime::compile(&plan).unwrap();
    let fixed = compile_specialized(&plan, &[("i", 7)]).unwrap();
    let x: Vec<f32> = (0..21).map(|v| (v as f32 * 0.37).sin() * 4.0).collect();
    let mut a = vec![0.0f32; 21];
    let mut b = vec![0.0f32; 21];
    general
        .call(
            vec![Arg::new(&x, &[3, 7]), Arg::new(&mut a, &[3, 7])],
            &[0.7],
        )
        .unwrap();
    fixed
        .call(
            vec![Arg::new(&x, &[3, 7]), Arg::new(&mut b, &[3, 7])],
            &[0.7],
        )
        .unwrap();
    assert_eq!(a, b);
    let err = fixed
        .call(
            vec![Arg::new(&x, &[7, 3]), Arg::new(&mut b, &[7, 3])],
            &[0.7],
        )
        .unwrap_err();
    assert_eq!(
        err,
        CallError::Specialized {
            extent: "i".into(),
            compiled: 7,
            found: 3
        }
    );
    assert!(err.to_string().contains("`i`"), "{err}");
    assert!(matches!(
        compile_specialized(&plan, &[("q", 7)]),
        Err(CompileError::Specialization { .. })
    ));
    assert!(matches!(
        compile_specialized(&plan, &[("i", -1)]),
        Err(CompileError::Specialization { .. })
    ));
    // The cache keys on the specialization.
    let cache = passfold_runtime::KernelCache::default();
    let s7 = cache
        .get_or_compile_specialized(&plan, &[("i", 7)])
        .unwrap();
    let s8 = cache
        .get_or_compile_specialized(&plan, &[("i", 8)])
        .unwrap();
    let again = cache
        .get_or_compile_specialized(&plan, &[("i", 7)])
        .unwrap();
    let plain = cache.get_or_compile(&plan).unwrap();
    assert!(std::sync::Arc::ptr_eq(&s7, &again));
    assert!(!std::sync::Arc::ptr_eq(&s7, &s8));
    assert!(!std::sync::Arc::ptr_eq(&s7, &plain));
}

/// `call_extents` (the typed `kernel!` call): the short path agrees with
/// `call` bit for bit, and each misuse gets the error `call` gives.
#[test]
fn call_extents_checks_like_call() {
    use passfold_runtime::{Data, compile_specialized};
    let k = compile_src(SOFTMAX_T);
    let x: Vec<f32> = (0..21).map(|v| (v as f32 * 0.37).sin() * 40.0).collect();
    let mut want = vec![0.0f32; 21];
    k.call(
        vec![Arg::new(&x, &[3, 7]), Arg::new(&mut want, &[3, 7])],
        &[0.7],
    )
    .unwrap();
    for threads in [1, 2] {
        let mut y = vec![0.0f32; 21];
        k.call_extents(
            &[3, 7],
            &mut [Data::from(&x[..]), Data::from(&mut y[..])],
            &[0.7],
            threads,
        )
        .unwrap();
        assert_eq!(y, want, "{threads} thread(s)");
    }
    // Half-precision inputs take the general path.
    let xh: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
    let mut y = vec![0.0f32; 21];
    k.call_extents(
        &[3, 7],
        &mut [Data::from(&xh[..]), Data::from(&mut y[..])],
        &[0.7],
        1,
    )
    .unwrap();
    assert!(y.iter().all(|v| v.is_finite()));

    let mut y = vec![0.0f32; 21];
    let y_shared = vec![0.0f32; 21];
    let x64 = vec![0.0f64; 21];
    assert_eq!(
        k.call_extents(
            &[21],
            &mut [Data::from(&x[..]), Data::from(&mut y[..])],
            &[0.7],
            1
        ),
        Err(CallError::ExtentCount {
            expected: 2,
            found: 1,
        })
    );
    assert_eq!(
        k.call_extents(&[3, 7], &mut [Data::from(&x[..])], &[0.7], 1),
        Err(CallError::ArgCount {
            expected: 2,
            found: 1,
        })
    );
    assert_eq!(
        k.call_extents(
            &[3, 7],
            &mut [Data::from(&x[..]), Data::from(&mut y[..])],
            &[],
            1
        ),
        Err(CallError::ParamCount {
            expected: 1,
            found: 0,
        })
    );
    assert_eq!(
        k.call_extents(
            &[3, 8],
            &mut [Data::from(&x[..]), Data::from(&mut y[..])],
            &[0.7],
            1
        ),
        Err(CallError::Length {
            arg: "x".into(),
            shape: vec![3, 8],
            expected: 24,
            found: 21,
        })
    );
    assert_eq!(
        k.call_extents(
            &[3, 7],
            &mut [Data::from(&x[..]), Data::from(&y_shared[..])],
            &[0.7],
            1
        ),
        Err(CallError::NotMutable { arg: "y".into() })
    );
    assert_eq!(
        k.call_extents(
            &[usize::MAX / 2, 3],
            &mut [Data::from(&x[..]), Data::from(&mut y[..])],
            &[0.7],
            1,
        ),
        Err(CallError::TooLarge { name: "x".into() })
    );
    assert_eq!(
        k.call_extents(
            &[usize::MAX, 3],
            &mut [Data::from(&x[..]), Data::from(&mut y[..])],
            &[0.7],
            1
        ),
        Err(CallError::TooLarge { name: "b".into() })
    );
    let err = k
        .call_extents(
            &[3, 7],
            &mut [Data::from(&x64[..]), Data::from(&mut y[..])],
            &[0.7],
            1,
        )
        .unwrap_err();
    assert!(
        matches!(&err, CallError::WrongType { arg, .. } if arg == "x"),
        "{err}"
    );

    let plan = common::plan_of(SOFTMAX_T, &Default::default());
    let fixed = compile_specialized(&plan, &[("i", 7)]).unwrap();
    let err = fixed
        .call_extents(
            &[7, 3],
            &mut [Data::from(&x[..]), Data::from(&mut y[..])],
            &[0.7],
            1,
        )
        .unwrap_err();
    assert_eq!(
        err,
        CallError::Specialized {
            extent: "i".into(),
            compiled: 7,
            found: 3
        }
    );
}

/// The short path's temporaries: on the stack when small, pooled when
/// large (a row temporary of 2,000 rows), and the results agree with
/// `call` either way.
#[test]
fn call_extents_with_large_temporaries() {
    use passfold_runtime::Data;
    let k = compile_src(SOFTMAX_T);
    for (rows, n) in [(1usize, 1usize), (2, 5), (2000, 3), (0, 4), (3, 0)] {
        let x: Vec<f32> = (0..rows * n)
            .map(|v| (v as f32 * 0.91).cos() * 30.0)
            .collect();
        let mut want = vec![0.0f32; rows * n];
        k.call(
            vec![Arg::new(&x, &[rows, n]), Arg::new(&mut want, &[rows, n])],
            &[1.3],
        )
        .unwrap();
        let mut y = vec![0.0f32; rows * n];
        k.call_extents(
            &[rows, n],
            &mut [Data::from(&x[..]), Data::from(&mut y[..])],
            &[1.3],
            1,
        )
        .unwrap();
        assert_eq!(
            y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{rows}x{n}"
        );
    }
}
