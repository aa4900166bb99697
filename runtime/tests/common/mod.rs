//! Shared helpers of the runtime tests: random inputs, running a kernel
//! through both the JIT and `passfold_dsl::interpret`, comparing results.

#![allow(dead_code)]

use passfold_dsl::{
    Kernel, Layout, LowerOptions, Plan, PlanOptions, Precision, ScalarType, TensorKind, interpret,
    interpret_program,
};
use passfold_runtime::{Arg, CallError, CompiledKernel, compile};

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

pub const SPECIALS: [f64; 9] = [
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    0.0,
    -0.0,
    1e38,
    -1e38,
    1e-40,
    -3.5,
];

pub fn plan_of(src: &str, opts: &LowerOptions) -> Plan {
    plan_with(src, opts, PlanOptions::default())
}

pub fn plan_with(src: &str, opts: &LowerOptions, plan_opts: PlanOptions) -> Plan {
    let kernel =
        passfold_dsl::check(src, opts).unwrap_or_else(|d| panic!("{}", d.render("kernel.pf", src)));
    passfold_dsl::plan(&kernel, plan_opts)
}

/// A compiled plan, with the plan kept as the reference.
pub struct Compiled {
    pub jit: CompiledKernel,
    pub plan: Plan,
}

impl std::ops::Deref for Compiled {
    type Target = CompiledKernel;
    fn deref(&self) -> &CompiledKernel {
        &self.jit
    }
}

/// Compiles `src`'s unfused and fused plans.
pub fn variants_with(src: &str, opts: &LowerOptions) -> Vec<Compiled> {
    [true, false]
        .into_iter()
        .map(|unfused| {
            let plan = plan_with(
                src,
                opts,
                PlanOptions {
                    unfused,
                    // Scalar code: compared bit for bit with the interpreter
                    // in declared precision (vector code is checked with
                    // tolerance by the integration tests).
                    scalar: true,
                    ..PlanOptions::default()
                },
            );
            let jit = compile(&plan)
                .unwrap_or_else(|e| panic!("{e}"))
                .with_source(src);
            Compiled { jit, plan }
        })
        .collect()
}

/// Runs `f` on `src`'s unfused and fused plans.
pub fn for_each_plan(src: &str, f: impl Fn(&Compiled)) {
    for c in variants_with(src, &LowerOptions::default()) {
        f(&c);
    }
}

pub fn compile_src(src: &str) -> CompiledKernel {
    compile(&plan_of(src, &LowerOptions::default()))
        .expect("compiles")
        .with_source(src)
}

/// A typed buffer for one argument.
#[derive(Debug, Clone)]
pub enum Buf {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
}

impl Buf {
    pub fn from_f64(ty: ScalarType, values: &[f64]) -> Buf {
        match ty {
            ScalarType::F32 => Buf::F32(values.iter().map(|&v| v as f32).collect()),
            ScalarType::F64 => Buf::F64(values.to_vec()),
            _ => Buf::I32(values.iter().map(|&v| v as i32).collect()),
        }
    }
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            Buf::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Buf::F64(v) => v.clone(),
            Buf::I32(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }
    pub fn arg(&mut self, shape: &[usize]) -> Arg<'_> {
        match self {
            Buf::F32(v) => Arg::new(v, shape),
            Buf::F64(v) => Arg::new(v, shape),
            Buf::I32(v) => Arg::new(v, shape),
        }
    }
}

/// How inputs are generated.
#[derive(Clone, Copy)]
pub struct Inputs {
    pub seed: u64,
    /// Probability of a special value (NaN, ±inf, ±0, ±1e38, subnormal).
    pub special: f64,
    /// Float inputs are uniform in `[-range, range)`.
    pub range: f64,
}

/// The shape of each argument at `extents`.
pub fn shapes(kernel: &Kernel, extents: &[i64]) -> Vec<Vec<usize>> {
    kernel
        .arguments()
        .map(|t| {
            let layout = Layout::compute(kernel.tensor(t), extents).expect("layout");
            layout.dims.iter().map(|&(_, n)| n as usize).collect()
        })
        .collect()
}

/// Random argument values (as f64) for every argument; outputs zero.
pub fn random_args(kernel: &Kernel, extents: &[i64], inputs: Inputs) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(inputs.seed);
    // Gather indices stay within every plain extent, so reads are in range.
    let index_bound = extents
        .iter()
        .copied()
        .filter(|&e| e > 0)
        .min()
        .unwrap_or(1) as u64;
    kernel
        .arguments()
        .map(|t| {
            let tensor = kernel.tensor(t);
            let len = Layout::compute(tensor, extents).expect("layout").len as usize;
            (0..len)
                .map(|_| match (tensor.kind, tensor.ty) {
                    (TensorKind::Output, _) => 0.0,
                    (_, ScalarType::I32) => rng.below(index_bound) as f64,
                    _ if rng.uniform(0.0, 1.0) < inputs.special => {
                        SPECIALS[rng.below(SPECIALS.len() as u64) as usize]
                    }
                    _ => rng.uniform(-inputs.range, inputs.range),
                })
                .collect()
        })
        .collect()
}

/// Distance in units in the last place between two floats of type `ty`
/// (0 for two NaNs; `u64::MAX` for NaN against a number).
pub fn ulps(ty: ScalarType, a: f64, b: f64) -> u64 {
    if a.is_nan() || b.is_nan() {
        return if a.is_nan() && b.is_nan() {
            0
        } else {
            u64::MAX
        };
    }
    match ty {
        ScalarType::F32 => {
            let key = |x: f32| {
                let bits = x.to_bits() as i32;
                (if bits < 0 { i32::MIN - bits } else { bits }) as i64
            };
            key(a as f32).abs_diff(key(b as f32))
        }
        ScalarType::F64 => {
            let key = |x: f64| {
                let bits = x.to_bits() as i64;
                (if bits < 0 { i64::MIN - bits } else { bits }) as i128
            };
            key(a).abs_diff(key(b)).min(u64::MAX as u128) as u64
        }
        _ => {
            if a == b {
                0
            } else {
                u64::MAX
            }
        }
    }
}

/// Compares the JIT with the declared-precision interpreter on written
/// arguments; returns the largest ULP distance seen. Panics past `max_ulps`.
pub fn compare_declared(
    compiled: &Compiled,
    extents: &[i64],
    args: Vec<Vec<f64>>,
    params: &[f64],
    max_ulps: u64,
    what: &str,
) -> u64 {
    let kernel = compiled.kernel();
    // The unfused plan computes exactly the statements; a fused plan
    // computes its own loop program (other rounding).
    let want = if compiled.plan.fused {
        interpret_program(
            kernel,
            &compiled.plan.program,
            extents,
            args.clone(),
            params,
            Precision::Declared,
        )
    } else {
        interpret(kernel, extents, args.clone(), params, Precision::Declared)
    };
    let what = format!(
        "{what} ({})",
        if compiled.plan.fused {
            "fused"
        } else {
            "unfused"
        }
    );
    let got = compiled.call_f64(extents, &args, params, 1);
    let (want, got) = match (want, got) {
        (Ok(w), Ok(g)) => (w, g),
        (Err(_), Err(CallError::GatherOutOfRange { .. })) => return 0,
        (w, g) => panic!("{what}: interpreter {w:?} but JIT {g:?}"),
    };
    let mut worst = 0;
    for ((t, w), g) in kernel.arguments().zip(&want).zip(&got) {
        let tensor = kernel.tensor(t);
        if tensor.kind == TensorKind::Input {
            continue;
        }
        for (pos, (&w, &g)) in w.iter().zip(g).enumerate() {
            let d = ulps(tensor.ty, w, g);
            // Zeros must agree in sign too.
            let sign_ok = !(w == 0.0 && g == 0.0) || w.is_sign_negative() == g.is_sign_negative();
            assert!(
                d <= max_ulps && sign_ok,
                "{what}: `{}`[{pos}] JIT {g:e} vs interpreter {w:e} ({d} ulps), extents {extents:?}",
                tensor.name
            );
            worst = worst.max(d);
        }
    }
    worst
}

/// Compares the JIT with the f64 interpreter within a relative tolerance.
pub fn compare_f64(
    compiled: &CompiledKernel,
    extents: &[i64],
    args: Vec<Vec<f64>>,
    params: &[f64],
    rel: f64,
    what: &str,
) {
    let kernel = compiled.kernel();
    let want =
        interpret(kernel, extents, args.clone(), params, Precision::F64).expect("interpreter");
    let got = compiled.call_f64(extents, &args, params, 1).expect("JIT");
    for ((t, w), g) in kernel.arguments().zip(&want).zip(&got) {
        let tensor = kernel.tensor(t);
        if tensor.kind == TensorKind::Input {
            continue;
        }
        for (pos, (&w, &g)) in w.iter().zip(g).enumerate() {
            let ok =
                (w.is_nan() && g.is_nan()) || w == g || (w - g).abs() <= rel * w.abs().max(1.0);
            assert!(
                ok,
                "{what}: `{}`[{pos}] JIT {g:e} vs f64 interpreter {w:e}, extents {extents:?}",
                tensor.name
            );
        }
    }
}
