//! Accuracy of `passfold_codegen::vmath`, JIT-compiled and run on the host.
//!
//! Each function is compiled twice, for the host ISA with its features
//! (FMA where the CPU has it) and for the portable baseline (no FMA, no
//! SSE4.1), mapped over arrays with `vmath::map_function`, and compared with
//! an `f64` reference: the error in ULP of the correctly rounded `f32`
//! result, over every 1021st `f32` bit pattern (every pattern with
//! `RUN_SLOW_TESTS=1`, best in release), plus explicit special values. The
//! `f64` forms are compared with the host's `f64` libm on a sample. The
//! scalar forms must give the vector forms' bits. `--nocapture` prints
//! the measured maxima.

// `!(err <= bound)` is deliberate: a NaN error must fail.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use cranelift_codegen::ir::{Type, types};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Module, default_libcall_names};
use passfold_codegen::vmath::{MathOp, map_function, map_signature};
use passfold_codegen::{Features, IsaOptions, host_isa, isa_fingerprint, isa_for};
use std::collections::HashMap;

/// The asserted bounds in ULP: (f32 against the exact value, f64 against
/// libm). A bound below 1.5 against the exact value means at most 1 ULP
/// from the correctly rounded result.
fn bound(op: MathOp) -> (f64, f64) {
    match op {
        MathOp::Exp | MathOp::ExpNonpositive | MathOp::ExpSplit => (1.1, 1.0),
        MathOp::Log | MathOp::Log1p => (1.0, 1.0),
        MathOp::Expm1 => (1.5, 2.0),
        MathOp::Tanh => (2.5, 3.0),
        MathOp::Sigmoid => (2.5, 2.0),
        MathOp::Softplus => (2.0, 2.0),
        MathOp::Sqrt => (0.5, 0.0),
        MathOp::Rsqrt => (1.5, 1.0),
        MathOp::ScaleByPow2 => (0.5, 0.0),
    }
}

/// The distance in representable `f32`s between `got` and `want`.
fn ulp_steps(got: f32, want: f32) -> u64 {
    let ordered = |x: f32| {
        let b = i64::from(x.to_bits() as i32);
        if b < 0 { i64::from(i32::MIN) - b } else { b }
    };
    ordered(got).abs_diff(ordered(want))
}

fn reference(op: MathOp, x: f64) -> f64 {
    match op {
        MathOp::Exp | MathOp::ExpNonpositive => x.exp(),
        MathOp::Log => x.ln(),
        MathOp::Log1p => x.ln_1p(),
        MathOp::Expm1 => x.exp_m1(),
        MathOp::Tanh => x.tanh(),
        MathOp::Sigmoid => passfold_dsl::math::sigmoid(x),
        MathOp::Softplus => passfold_dsl::math::softplus(x),
        MathOp::Sqrt => x.sqrt(),
        MathOp::Rsqrt => 1.0 / x.sqrt(),
        MathOp::ExpSplit | MathOp::ScaleByPow2 => unreachable!("checked separately"),
    }
}

type MapFn<T> = unsafe extern "C" fn(*const T, *const T, *mut T, *mut T, i64);

/// Every op for every type, compiled into one JIT module for one ISA.
struct Lib {
    name: &'static str,
    features: Features,
    entries: HashMap<(MathOp, Type), *const u8>,
    _module: JITModule,
}

const TYPES: [Type; 4] = [types::F32X4, types::F64X2, types::F32, types::F64];

impl Lib {
    fn new(name: &'static str, isa: OwnedTargetIsa) -> Lib {
        let features = Features::of(&*isa);
        eprintln!("{name}: {} ({features:?})", isa_fingerprint(&*isa));
        let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        let sig = map_signature(module.isa().default_call_conv());
        let mut ids = Vec::new();
        for op in MathOp::ALL {
            for ty in TYPES {
                let id = module.declare_anonymous_function(&sig).expect("declare");
                let mut ctx = module.make_context();
                ctx.func = map_function(op, ty, features, module.isa());
                module.define_function(id, &mut ctx).unwrap_or_else(|e| {
                    panic!("{} {ty}: {e:?}\n{}", op.name(), ctx.func.display())
                });
                ids.push(((op, ty), id));
            }
        }
        module.finalize_definitions().expect("finalize");
        let entries = ids
            .into_iter()
            .map(|(key, id)| (key, module.get_finalized_function(id)))
            .collect();
        Lib {
            name,
            features,
            entries,
            _module: module,
        }
    }

    /// Runs `op` at type `ty` over `x` (and `y`): returns `(out0, out1)`.
    fn run<T: Copy + Default>(&self, op: MathOp, ty: Type, x: &[T], y: &[T]) -> (Vec<T>, Vec<T>) {
        assert_eq!(std::mem::size_of::<T>(), ty.lane_type().bytes() as usize);
        assert_eq!(x.len(), y.len());
        assert_eq!(x.len() % ty.lane_count() as usize, 0);
        let mut out0 = vec![T::default(); x.len()];
        let mut out1 = vec![T::default(); x.len()];
        let ptr = self.entries[&(op, ty)];
        // SAFETY: `ptr` is a finalized function of `self._module`, which
        // lives as long as `self`, declared with `map_signature` for the
        // host's default calling convention: five pointer-sized integers
        // and no result, i.e. `MapFn<T>` for `T` the lane type of `ty`
        // (asserted above).
        let f = unsafe { std::mem::transmute::<*const u8, MapFn<T>>(ptr) };
        // SAFETY: per `map_function`'s contract the code reads `x[..n]`
        // and `y[..n]` and writes `out0[..n]` and `out1[..n]`, with `n` a
        // multiple of the lane count (asserted above) and all four buffers
        // `n` elements long.
        unsafe {
            f(
                x.as_ptr(),
                y.as_ptr(),
                out0.as_mut_ptr(),
                out1.as_mut_ptr(),
                x.len() as i64,
            )
        };
        (out0, out1)
    }
}

fn libs() -> Vec<Lib> {
    let opts = IsaOptions::default();
    vec![
        Lib::new("host", host_isa(&opts).expect("host ISA")),
        Lib::new("portable", isa_for("host", false).expect("baseline ISA")),
    ]
}

fn slow() -> bool {
    std::env::var_os("RUN_SLOW_TESTS").is_some()
}

/// The error of `got` in ULP of the `f32` nearest `want` (`f32` ULP below
/// 2^-126 is the subnormal spacing); `INFINITY` if the classes differ.
fn ulp_f32(got: f32, want: f64) -> f64 {
    ulp_err(f64::from(got), want, -126, 23, f64::from(want as f32))
}

fn ulp_f64(got: f64, want: f64) -> f64 {
    ulp_err(got, want, -1022, 52, want)
}

fn ulp_err(got: f64, want: f64, emin: i32, mant: i32, rounded: f64) -> f64 {
    if want.is_nan() || got.is_nan() {
        return if want.is_nan() && got.is_nan() {
            0.0
        } else {
            f64::INFINITY
        };
    }
    if rounded.is_infinite() || got.is_infinite() || rounded == 0.0 && got == 0.0 {
        let same = got == rounded && got.is_sign_negative() == rounded.is_sign_negative();
        return if same { 0.0 } else { f64::INFINITY };
    }
    let e = if want == 0.0 {
        emin
    } else {
        (((want.abs().to_bits() >> 52) & 0x7ff) as i32 - 1023).max(emin)
    };
    (got - want).abs() / f64::from(e - mant).exp2()
}

/// Every `stride`-th `f32` bit pattern, in chunks of whole vectors.
fn f32_sweep(stride: u64) -> impl Iterator<Item = Vec<f32>> {
    let count = (1u64 << 32).div_ceil(stride);
    let chunk = 1u64 << 16;
    (0..count.div_ceil(chunk)).map(move |c| {
        let mut v: Vec<f32> = (c * chunk..((c + 1) * chunk).min(count))
            .map(|i| f32::from_bits((i * stride) as u32))
            .collect();
        while !v.len().is_multiple_of(4) {
            v.push(0.0);
        }
        v
    })
}

fn f32_specials() -> Vec<f32> {
    let mut v = vec![
        0.0,
        1.0,
        2.0,
        0.5,
        f32::INFINITY,
        f32::NAN,
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::from_bits(1),
        f32::from_bits(0x007f_ffff),
        88.722_84,
        87.336_55,
        88.0,
        103.972_08,
        87.68,
        17.33,
        9.0,
        10.0,
        1e-30,
        1e-8,
        0.346_573_6,
    ];
    for x in v.clone() {
        v.push(f32::from_bits(x.to_bits().wrapping_add(1)));
        v.push(f32::from_bits(x.to_bits().wrapping_sub(1)));
    }
    let neg: Vec<f32> = v.iter().map(|x| -x).collect();
    v.extend(neg);
    while !v.len().is_multiple_of(4) {
        v.push(0.0);
    }
    v
}

/// `n` pseudo-random `f64`s: a fixed xorshift over bit patterns, half of
/// them with the exponent narrowed to `|x| < 2^11` where the functions are
/// not constant.
fn f64_sample(n: usize) -> Vec<f64> {
    let mut s = 0x9e37_79b9_7f4a_7c15_u64;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            if i % 2 == 0 {
                f64::from_bits(s)
            } else {
                let exp = (s >> 52) % 1060; // 2^-1023 .. 2^36
                f64::from_bits((s & 0x800f_ffff_ffff_ffff) | (exp.min(1033) << 52))
            }
        })
        .collect()
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| x.to_bits() == y.to_bits() || x.is_nan() && y.is_nan())
}

/// The max error of `op` (f32x4) over `xs`, with the worst argument;
/// `exp_nonpositive` only below 88, subnormal results counted separately;
/// `steps` is the max distance from the correctly rounded normal result.
fn f32_errors(
    lib: &Lib,
    op: MathOp,
    xs: &[f32],
    worst: &mut (f64, f32),
    sub: &mut (f64, f32),
    steps: &mut u64,
) {
    let (got, _) = lib.run(op, types::F32X4, xs, xs);
    for (&x, &g) in xs.iter().zip(&got) {
        if op == MathOp::ExpNonpositive && x > 88.0 {
            continue;
        }
        let want = reference(op, f64::from(x));
        let e = ulp_f32(g, want);
        if e.is_finite() && want.abs() >= f64::from(f32::MIN_POSITIVE) {
            *steps = (*steps).max(ulp_steps(g, want as f32));
        }
        let slot = if want.abs() < f64::from(f32::MIN_POSITIVE) && want != 0.0 {
            &mut *sub
        } else {
            &mut *worst
        };
        if e > slot.0 || e.is_nan() {
            *slot = (e, x);
        }
    }
}

const UNARY: [MathOp; 10] = [
    MathOp::Exp,
    MathOp::ExpNonpositive,
    MathOp::Log,
    MathOp::Log1p,
    MathOp::Expm1,
    MathOp::Tanh,
    MathOp::Sigmoid,
    MathOp::Softplus,
    MathOp::Sqrt,
    MathOp::Rsqrt,
];

#[test]
fn f32_unary_functions_meet_their_bounds() {
    let mut failures = Vec::new();
    for lib in libs() {
        for op in UNARY {
            // The slow run checks every float for exp, every 13th otherwise.
            let stride = match (slow(), op) {
                (false, _) => 1021,
                (true, MathOp::Exp | MathOp::ExpNonpositive) => 1,
                (true, _) => 13,
            };
            let mut worst = (0.0, 0.0f32);
            let mut sub = (0.0, 0.0f32);
            let mut steps = 0;
            for xs in f32_sweep(stride).chain([f32_specials()]) {
                f32_errors(&lib, op, &xs, &mut worst, &mut sub, &mut steps);
            }
            eprintln!(
                "{} f32 {:16} (every {stride}) max {:.3} ULP at {:e} (x = {:#010x}), {steps} from the rounded; subnormal results {:.3} ULP at {:e}",
                lib.name,
                op.name(),
                worst.0,
                worst.1,
                worst.1.to_bits(),
                sub.0,
                sub.1
            );
            let limit = bound(op).0;
            // Subnormal results may round twice (and exp_nonpositive
            // flushes below 2^-126.5): within 1 ULP of the subnormal
            // spacing, or 1 more than the normal bound.
            let sub_limit = if op == MathOp::ExpNonpositive {
                f64::INFINITY
            } else {
                limit + 1.0
            };
            if !(worst.0 <= limit) || !(sub.0 <= sub_limit) {
                failures.push(format!("{} {}: {worst:?} {sub:?}", lib.name, op.name()));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn exp_nonpositive_flushes_to_zero_below_its_cutoff() {
    for lib in libs() {
        let xs: Vec<f32> = (0..4000).map(|i| -87.684 - i as f32 * 0.25).collect();
        let (got, _) = lib.run(MathOp::ExpNonpositive, types::F32X4, &xs, &xs);
        for (x, g) in xs.iter().zip(&got) {
            assert_eq!(g.to_bits(), 0, "{}: exp_nonpositive({x}) = {g:e}", lib.name);
        }
        let special = [f32::NEG_INFINITY, -0.0, 0.0, f32::NAN];
        let (got, _) = lib.run(MathOp::ExpNonpositive, types::F32X4, &special, &special);
        assert_eq!(got[0].to_bits(), 0);
        assert_eq!((got[1], got[2]), (1.0, 1.0));
        assert!(got[3].is_nan());
    }
}

#[test]
fn scalar_forms_give_the_vector_forms_bits() {
    let stride = 65_537;
    for lib in libs() {
        for op in MathOp::ALL {
            for xs in f32_sweep(stride).chain([f32_specials()]) {
                let ys: Vec<f32> = xs
                    .iter()
                    .map(|x| (x.to_bits() % 601) as f32 - 300.0)
                    .collect();
                let v = lib.run(op, types::F32X4, &xs, &ys);
                let s = lib.run(op, types::F32, &xs, &ys);
                assert!(
                    same_bits(&v.0, &s.0) && same_bits(&v.1, &s.1),
                    "{} {}",
                    lib.name,
                    op.name()
                );
            }
            let xs = f64_sample(1 << 12);
            let v = lib.run(op, types::F64X2, &xs, &xs);
            let s = lib.run(op, types::F64, &xs, &xs);
            let same = |a: &[f64], b: &[f64]| {
                a.iter()
                    .zip(b)
                    .all(|(x, y)| x.to_bits() == y.to_bits() || x.is_nan() && y.is_nan())
            };
            assert!(
                same(&v.0, &s.0) && same(&v.1, &s.1),
                "{} {} f64",
                lib.name,
                op.name()
            );
        }
    }
}

#[test]
fn f64_unary_functions_meet_their_bounds() {
    let n = if slow() { 1 << 24 } else { 1 << 18 };
    let mut xs = f64_sample(n);
    let specials = [
        0.0,
        f64::INFINITY,
        f64::NAN,
        f64::MIN_POSITIVE,
        f64::MAX,
        f64::from_bits(1),
        709.782712893384,
        708.3964185322641,
        745.1332191019411,
        1.0,
        1e-300,
        1e-17,
    ];
    for x in specials {
        xs.extend([
            x,
            -x,
            f64::from_bits(x.to_bits() + 1),
            -f64::from_bits(x.to_bits() + 1),
        ]);
    }
    let mut failures = Vec::new();
    for lib in libs() {
        for op in UNARY {
            let (got, _) = lib.run(op, types::F64X2, &xs, &xs);
            let mut worst = (0.0, 0.0);
            for (&x, &g) in xs.iter().zip(&got) {
                let want = reference(op, x);
                let subnormal = want.abs() < f64::MIN_POSITIVE && want != 0.0;
                if subnormal || op == MathOp::ExpNonpositive && x > 709.0 {
                    continue;
                }
                let e = ulp_f64(g, want);
                if !(e <= worst.0) {
                    worst = (e, x);
                }
            }
            eprintln!(
                "{} f64 {:16} max {:.3} ULP vs libm at {:e}",
                lib.name,
                op.name(),
                worst.0,
                worst.1
            );
            if !(worst.0 <= bound(op).1) {
                failures.push(format!("{} {}: {worst:?}", lib.name, op.name()));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn exp_split_gives_p_times_two_to_the_k() {
    let stride = if slow() { 1 } else { 1021 };
    for lib in libs() {
        // Max error in ULP of p for |x| ≤ 88.7, ≤ 2839 (|k| < 2^12), and
        // ≤ 2^21·ln 2.
        let mut worst = [(0.0, 0.0f32); 3];
        for xs in f32_sweep(stride).chain([f32_specials()]) {
            let (p, k) = lib.run(MathOp::ExpSplit, types::F32X4, &xs, &xs);
            for ((&x, &p), &k) in xs.iter().zip(&p).zip(&k) {
                let (xd, pd, kd) = (f64::from(x), f64::from(p), f64::from(k));
                if x.is_nan() {
                    assert!(p.is_nan() && k.is_nan(), "{x}: ({p}, {k})");
                    continue;
                }
                assert!(kd == kd.round(), "{}: k = {k} for {x}", lib.name);
                if x.abs() > 2097152.0 * std::f32::consts::LN_2 {
                    let exact = xd * std::f64::consts::LOG2_E;
                    // Within about ULP(x·log2 e): the argument's own ULP is as large.
                    let slack = 2.0 + exact.abs() * 2f64.powi(-22);
                    assert!(
                        p == 1.0 && (kd - exact).abs() <= slack || k.is_infinite(),
                        "{x}: ({p}, {k})"
                    );
                    continue;
                }
                // k is the rounded x·log2 e; the product's own rounding
                // widens p's range once |x| is large.
                let range = if x.abs() <= 88.7 {
                    0.707..=1.415
                } else {
                    0.5..=2.0
                };
                assert!(range.contains(&p), "{}: p = {p} for {x}", lib.name);
                let want = (xd - kd * std::f64::consts::LN_2).exp();
                let e = ulp_f32(p, want);
                let bucket = if x.abs() <= 88.7 {
                    0
                } else if x.abs() <= 2839.0 {
                    1
                } else {
                    2
                };
                let slot = &mut worst[bucket];
                if e > slot.0 {
                    *slot = (e, x);
                }
                let _ = pd;
            }
        }
        eprintln!(
            "{} f32 exp_split: p·2^k max ULP (of p) and argument, for |x| ≤ 88.7, ≤ 2839, ≤ 2^21·ln2: {worst:?}",
            lib.name
        );
        let limit = bound(MathOp::ExpSplit).0;
        assert!(
            worst[0].0 <= limit && worst[1].0 <= limit,
            "{}: {worst:?}",
            lib.name
        );
        if lib.features.fma {
            assert!(worst[2].0 <= 1.2, "{}: {worst:?}", lib.name);
        }
        let xs = [f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0];
        let (p, k) = lib.run(MathOp::ExpSplit, types::F32X4, &xs, &xs);
        assert_eq!((p[0], k[0]), (1.0, f32::INFINITY));
        assert_eq!((p[1], k[1]), (1.0, f32::NEG_INFINITY));
        assert_eq!((p[2], k[2], p[3], k[3]), (1.0, 0.0, 1.0, 0.0));
    }
}

#[test]
fn scale_by_pow2_rounds_once() {
    let ks: Vec<f32> = (-310..=310).map(|k| k as f32).collect();
    for lib in libs() {
        for xs in f32_sweep(if slow() { 4099 } else { 1 << 20 }).chain([f32_specials()]) {
            let xs: Vec<f32> = xs
                .iter()
                .flat_map(|&x| std::iter::repeat_n(x, ks.len()))
                .collect();
            let k: Vec<f32> = ks.iter().copied().cycle().take(xs.len()).collect();
            let (got, _) = lib.run(MathOp::ScaleByPow2, types::F32X4, &xs, &k);
            for ((&x, &k), &g) in xs.iter().zip(&k).zip(&got) {
                let want = (f64::from(x) * f64::from(k).exp2()) as f32;
                assert!(
                    g.to_bits() == want.to_bits() || g.is_nan() && want.is_nan(),
                    "{}: {x:e}·2^{k} = {g:e}, want {want:e}",
                    lib.name
                );
            }
        }
        let xs = [
            1.0f32,
            3.0,
            f32::MAX,
            f32::from_bits(1),
            0.0,
            1.0,
            1.0,
            f32::INFINITY,
        ];
        let ks = [
            f32::NEG_INFINITY,
            1e30,
            -1e30,
            1e30,
            f32::INFINITY,
            1e6,
            -1e6,
            -1e6,
        ];
        let (got, _) = lib.run(MathOp::ScaleByPow2, types::F32X4, &xs, &ks);
        let want = [
            0.0,
            f32::INFINITY,
            0.0,
            f32::INFINITY,
            0.0,
            f32::INFINITY,
            0.0,
            f32::INFINITY,
        ];
        assert_eq!(got, want, "{}", lib.name);
        // f64: exact wherever the result is normal.
        let xs = f64_sample(1 << 12);
        let ks: Vec<f64> = (0..xs.len())
            .map(|i| (i as f64 * 7.0) % 4401.0 - 2200.0)
            .collect();
        let (got, _) = lib.run(MathOp::ScaleByPow2, types::F64X2, &xs, &ks);
        for ((&x, &k), &g) in xs.iter().zip(&ks).zip(&got) {
            let e = ((x.to_bits() >> 52) & 0x7ff) as i32 - 1023 + k as i32;
            if x.is_finite()
                && x != 0.0
                && (-1021..1023).contains(&e)
                && x.abs() >= f64::MIN_POSITIVE
            {
                let half = (k / 2.0).trunc();
                let want = x * half.exp2() * (k - half).exp2();
                assert_eq!(g, want, "{}: {x:e}·2^{k}", lib.name);
            }
        }
    }
}
