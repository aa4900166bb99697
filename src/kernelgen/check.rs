//! The differential check of one kernel on one input: the JIT (fused and
//! unfused plans, in `f32` and optionally `f64`) and the plan interpreter
//! against the kernel's reference interpreter.
//!
//! Three comparisons, from strict to loose:
//! 1. **Exact.** The JIT is scalar and calls the interpreter's own formulas
//!    (`runtime/src/helpers.rs`), so for every plan its results equal
//!    `interpret_program(plan, Precision::Declared)` bit for bit (NaN equal to
//!    NaN, zeros of equal sign), and the unfused plan's program equals
//!    `interpret(kernel, Declared)`. If the code generator starts
//!    reassociating (vector lanes), turn [`EXACT_JIT`] off: the tolerance
//!    checks below still hold.
//! 2. **Planner in `f64`.** `interpret_program(fused plan, F64)` against
//!    `interpret(kernel, F64)`, within the tolerance below with `f64`'s epsilon.
//! 3. **Oracle.** Every JIT result against `interpret(kernel, F64)`.
//!
//! The tolerance of an output element is derived from the operations that
//! produce it and from how sensitive this input makes them:
//!
//! `tol = 4 · budget · eps · (|want| + 1e-6) + 24 · (eps / eps_f32) · |naive_f32 - want|`
//!
//! - `budget` (in ULPs) adds, along the statement chain that computes the
//!   element, 1 per `+ - * /` and literal rounding, 2 per library function
//!   (`exp`, `log`, `tanh`, …), `p` per `pow(_, p)`, and the length of the
//!   reduced range per `sum`/`mean` (recursive summation); `max`, `min`,
//!   `select` and loads add nothing.
//! - `naive_f32` is `interpret(kernel, Declared)` with `f32` rounding:
//!   the straightforward evaluation's error measures the conditioning
//!   (cancellation, `exp` of a large argument) that a static budget cannot
//!   see. A fused plan may be a few times worse than the naive formula on an
//!   ill-conditioned element, never orders of magnitude worse
//!   ([`CONDITIONING`]). For the `f64` engine that error is scaled by
//!   `eps_f64 / eps_f32`.
//! - An element whose naive `f32` evaluation leaves the finite numbers, or
//!   loses more than half its value, where `f64` does not (a `log` at the
//!   edge of its domain, an `exp` overflow, a `select` whose comparison flips)
//!   is *unstable*: only the exact comparison applies to it, and it is
//!   counted, not hidden.
//!
//! NaN must meet NaN, except where the fused plan documents otherwise: on a
//! row whose exp-shifted terms are all `-inf`, the online normalizer gives
//! the limit (`0` for the sum, `-inf` for logsumexp) where the naive formula
//! gives NaN (`-inf - -inf`). That is accepted only for fused plans of
//! kernels that can see `-inf` (an input, a literal, an empty `max`, a
//! `topk` over too few values) and is counted.

use passfold_dsl::{
    Kernel, Layout, LowerOptions, Node, PlanOptions, Precision, ReduceOp, ScalarType, TensorKind,
    interpret, interpret_program,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{Case, Fill};

/// How many times the naive `f32` evaluation's error an engine may make on
/// an ill-conditioned element: 8 for reassociation and the plan's other
/// roundings, times 3 because vector code's own math functions are up to
/// 3 ULP (`tanh` in `f64`) where the naive evaluation's libm is within 1.
/// (A cancelling `f64` sum of vector `expm1(tanh(z))` terms, generator seed
/// 473, was 1.6× beyond the factor 8.)
pub const CONDITIONING: f64 = 24.0;

/// Whether the JIT must equal the declared-precision plan interpreter bit for bit.
pub const EXACT_JIT: bool = true;

/// What one case exercised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// JIT calls made (one per plan and float type).
    pub jit_runs: usize,
    /// Output elements compared against the f64 oracle.
    pub compared: usize,
    /// Elements left to the exact check only (see the module doc).
    pub unstable: usize,
    /// NaN-vs-limit differences on all-`-inf` rows, accepted as documented.
    pub documented: usize,
}

impl std::ops::AddAssign for Outcome {
    fn add_assign(&mut self, o: Outcome) {
        self.jit_runs += o.jit_runs;
        self.compared += o.compared;
        self.unstable += o.unstable;
        self.documented += o.documented;
    }
}

/// Runs the differential check on a generated case.
pub fn check_case(case: &Case) -> Result<Outcome, String> {
    let src = case.spec.to_string();
    check_kernel_text(
        &src,
        case.extents,
        case.input_seed,
        case.fill,
        case.also_f64,
    )
}

/// Runs the differential check on kernel text: extents named `b`, `i`, `j`
/// take `extents`, any other extent 3. Panics inside the compiler are
/// reported as mismatches.
pub fn check_kernel_text(
    src: &str,
    extents: [i64; 3],
    input_seed: u64,
    fill: Fill,
    also_f64: bool,
) -> Result<Outcome, String> {
    let run = || run_text(src, extents, input_seed, fill, also_f64);
    match std::panic::catch_unwind(run) {
        Ok(res) => res.map_err(|e| {
            format!("{e}\n  extents {extents:?} (b, i, j), input seed {input_seed}, fill {fill:?}, f64 {also_f64}\n{src}")
        }),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!(
                "panic: {msg}\n  extents {extents:?} (b, i, j), input seed {input_seed}, fill {fill:?}\n{src}"
            ))
        }
    }
}

fn run_text(
    src: &str,
    by_name: [i64; 3],
    input_seed: u64,
    fill: Fill,
    also_f64: bool,
) -> Result<Outcome, String> {
    let k32 = passfold_dsl::check(src, &LowerOptions::default())
        .map_err(|d| format!("does not check:\n{}", d.render("gen.pf", src)))?;
    let extents: Vec<i64> = k32
        .extents
        .iter()
        .map(|e| match e.name.as_str() {
            "b" => by_name[0],
            "i" => by_name[1],
            "j" => by_name[2],
            _ => 3,
        })
        .collect();
    let args = random_args(&k32, &extents, fill, input_seed);
    let params: Vec<f64> = (0..k32.params.len())
        .map(|p| [0.75, -1.5, 2.0][p % 3])
        .collect();
    check_args(src, &k32, &extents, &args, &params, also_f64)
}

/// The differential check of `src` (checked as `k32`) on given arguments
/// (`Kernel::arguments` order, outputs empty) and parameters.
pub fn check_args(
    src: &str,
    k32: &Kernel,
    extents: &[i64],
    args: &[Vec<f64>],
    params: &[f64],
    also_f64: bool,
) -> Result<Outcome, String> {
    let (k32, extents, params) = (k32, extents.to_vec(), params.to_vec());
    let args = args.to_vec();
    // `-inf` reaches a kernel through an input, a literal, a `max` over an
    // empty range or a `topk` over too few values.
    let sees_neg_inf = src.contains("-inf")
        || src.contains("topk")
        || extents.contains(&0)
        || args
            .iter()
            .flatten()
            .any(|v| *v == f64::NEG_INFINITY || v.is_nan());
    let want = interpret(k32, &extents, args.clone(), &params, Precision::F64);
    let naive = interpret(k32, &extents, args.clone(), &params, Precision::Declared);
    let (want, naive) = match (want, naive) {
        (Ok(w), Ok(n)) => (w, n),
        (Err(w), Err(_)) => {
            // A refused input (a gather out of range): every engine must refuse it.
            return refused_everywhere(k32, &extents, &args, &params, &w.to_string());
        }
        (w, n) => return Err(format!("f64 interpreter {w:?}, declared {n:?}")),
    };
    let budget = ulp_budget(k32, &extents);
    let mut outcome = Outcome::default();
    let floats: &[Option<ScalarType>] = if also_f64 {
        &[None, Some(ScalarType::F64)]
    } else {
        &[None]
    };
    for &float in floats {
        let kernel = passfold_dsl::check(
            src,
            &LowerOptions {
                float,
                ..Default::default()
            },
        )
        .map_err(|d| d.to_string())?;
        let eps = if float.is_some() {
            f64::EPSILON / 2.0
        } else {
            f32::EPSILON as f64 / 2.0
        };
        // Scalar code must match the plan interpreter bit for bit; vector
        // code (reassociated sums, inline math) is checked with tolerance.
        for (unfused, scalar) in [(true, true), (false, true), (true, false), (false, false)] {
            let plan = passfold_dsl::plan(
                &kernel,
                PlanOptions {
                    unfused,
                    scalar,
                    ..Default::default()
                },
            );
            let _ = (plan.passes(), plan.to_string());
            let label = format!(
                "{} plan, {}{}",
                if unfused { "unfused" } else { "fused" },
                if float.is_some() { "f64" } else { "f32" },
                if scalar {
                    ", scalar code"
                } else {
                    ", vector code"
                }
            );
            let compiled = passfold_runtime::compile(&plan)
                .map_err(|e| format!("{label}: the JIT refuses a checked kernel: {e}"))?;
            let got = compiled
                .call_f64(&extents, &args, &params, 1)
                .map_err(|e| format!("{label}: the JIT call fails: {e}"))?;
            outcome.jit_runs += 1;
            let program = |precision| {
                interpret_program(
                    &plan.kernel,
                    &plan.program,
                    &extents,
                    args.clone(),
                    &params,
                    precision,
                )
                .map_err(|e| format!("{label}: the plan interpreter fails: {e}"))
            };
            let declared = program(Precision::Declared)?;
            if EXACT_JIT && scalar {
                exact(
                    &kernel,
                    &got,
                    &declared,
                    &format!("{label}: JIT vs plan interpreter"),
                )?;
            }
            if unfused && scalar && float.is_none() {
                exact(
                    &kernel,
                    &declared,
                    &naive,
                    &format!("{label}: plan vs kernel interpreter"),
                )?;
            }
            let cx = Compare {
                kernel: &kernel,
                want: &want,
                naive: &naive,
                budget: &budget,
                eps,
                allow_limit: !unfused && sees_neg_inf,
            };
            if !unfused && scalar && float.is_some() {
                let f64_program = program(Precision::F64)?;
                cx.tolerant(&f64_program, &format!("{label}: plan interpreter (F64)"))?;
            }
            outcome += cx.tolerant(&got, &format!("{label}: JIT"))?;
        }
    }
    Ok(outcome)
}

/// Results of another engine for one plan variant: `Ok(None)` when the
/// engine has no code for the variant, `Err` when it refused the call.
pub type EngineResult = Result<Option<Vec<Vec<f64>>>, String>;

/// The oracle comparison of [`check_args`] for another engine (the
/// ahead-of-time back end): `run(float, unfused)` gives the engine's
/// results for the fused and unfused plans in `f32` (and the fused plan in
/// `f64` with `also_f64`), each compared with the f64 interpreter within
/// the tolerance the JIT's vector code meets. An input the interpreter
/// refuses (a gather out of range) must be refused by every variant.
pub fn check_engine(
    src: &str,
    k32: &Kernel,
    extents: &[i64],
    args: &[Vec<f64>],
    params: &[f64],
    also_f64: bool,
    run: &mut dyn FnMut(Option<ScalarType>, bool) -> EngineResult,
) -> Result<Outcome, String> {
    let sees_neg_inf = src.contains("-inf")
        || src.contains("topk")
        || extents.contains(&0)
        || args
            .iter()
            .flatten()
            .any(|v| *v == f64::NEG_INFINITY || v.is_nan());
    let want = interpret(k32, extents, args.to_vec(), params, Precision::F64);
    let naive = interpret(k32, extents, args.to_vec(), params, Precision::Declared);
    let variants: &[(Option<ScalarType>, bool)] = if also_f64 {
        &[(None, false), (None, true), (Some(ScalarType::F64), false)]
    } else {
        &[(None, false), (None, true)]
    };
    let (want, naive) = match (want, naive) {
        (Ok(w), Ok(n)) => (w, n),
        (Err(w), Err(_)) => {
            let mut outcome = Outcome::default();
            for &(float, unfused) in variants {
                if let Ok(Some(_)) = run(float, unfused) {
                    return Err(format!(
                        "the interpreter refuses the input ({w}) but the engine runs it"
                    ));
                }
                outcome.jit_runs += 1;
            }
            return Ok(outcome);
        }
        (w, n) => return Err(format!("f64 interpreter {w:?}, declared {n:?}")),
    };
    let budget = ulp_budget(k32, extents);
    let mut outcome = Outcome::default();
    for &(float, unfused) in variants {
        let kernel = passfold_dsl::check(
            src,
            &LowerOptions {
                float,
                ..Default::default()
            },
        )
        .map_err(|d| d.to_string())?;
        let label = format!(
            "{} plan, {}",
            if unfused { "unfused" } else { "fused" },
            if float.is_some() { "f64" } else { "f32" }
        );
        let Some(got) = run(float, unfused).map_err(|e| format!("{label}: the call fails: {e}"))?
        else {
            continue;
        };
        outcome.jit_runs += 1;
        let cx = Compare {
            kernel: &kernel,
            want: &want,
            naive: &naive,
            budget: &budget,
            eps: if float.is_some() {
                f64::EPSILON / 2.0
            } else {
                f32::EPSILON as f64 / 2.0
            },
            allow_limit: !unfused && sees_neg_inf,
        };
        outcome += cx.tolerant(&got, &label)?;
    }
    Ok(outcome)
}

/// Every engine refuses an input the interpreter refused.
fn refused_everywhere(
    kernel: &Kernel,
    extents: &[i64],
    args: &[Vec<f64>],
    params: &[f64],
    why: &str,
) -> Result<Outcome, String> {
    let mut outcome = Outcome::default();
    for unfused in [true, false] {
        let plan = passfold_dsl::plan(
            kernel,
            PlanOptions {
                unfused,
                ..Default::default()
            },
        );
        let compiled = passfold_runtime::compile(&plan).map_err(|e| e.to_string())?;
        if compiled.call_f64(extents, args, params, 1).is_ok() {
            return Err(format!(
                "the interpreter refuses the input ({why}) but the JIT runs the {} plan",
                if unfused { "unfused" } else { "fused" }
            ));
        }
        outcome.jit_runs += 1;
    }
    Ok(outcome)
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan())
        || (a == b && (a != 0.0 || a.is_sign_negative() == b.is_sign_negative()))
}

fn exact(kernel: &Kernel, got: &[Vec<f64>], want: &[Vec<f64>], what: &str) -> Result<(), String> {
    for ((id, g), w) in kernel.arguments().zip(got).zip(want) {
        if kernel.tensor(id).kind == TensorKind::Input {
            continue;
        }
        for (pos, (a, b)) in g.iter().zip(w).enumerate() {
            if !same(*a, *b) {
                return Err(format!(
                    "{what}: `{}`[{pos}] = {a:e}, expected exactly {b:e}",
                    kernel.tensor(id).name
                ));
            }
        }
    }
    Ok(())
}

struct Compare<'a> {
    kernel: &'a Kernel,
    want: &'a [Vec<f64>],
    naive: &'a [Vec<f64>],
    /// ULP budget per argument (see the module doc).
    budget: &'a [f64],
    eps: f64,
    allow_limit: bool,
}

impl Compare<'_> {
    fn tolerant(&self, got: &[Vec<f64>], what: &str) -> Result<Outcome, String> {
        let mut outcome = Outcome::default();
        let eps32 = f32::EPSILON as f64 / 2.0;
        for (n, id) in self.kernel.arguments().enumerate() {
            if self.kernel.tensor(id).kind == TensorKind::Input {
                continue;
            }
            let budget = self.budget[n];
            for (pos, ((&g, &w), &v)) in got[n]
                .iter()
                .zip(&self.want[n])
                .zip(&self.naive[n])
                .enumerate()
            {
                let fail = |why: &str| {
                    Err(format!(
                        "{what}: `{}`[{pos}] = {g:e}, f64 interpreter {w:e}, naive f32 {v:e} ({why}, budget {budget} ulps)",
                        self.kernel.tensor(id).name
                    ))
                };
                if w.is_nan() {
                    if g.is_nan() {
                        outcome.compared += 1;
                    } else if self.allow_limit {
                        outcome.documented += 1;
                    } else if !v.is_nan() {
                        outcome.unstable += 1;
                    } else {
                        return fail("NaN expected");
                    }
                    continue;
                }
                let unstable = v.is_nan()
                    || (v.is_infinite() != w.is_infinite())
                    || (w.is_finite() && (v - w).abs() > 0.5 * w.abs());
                if unstable {
                    outcome.unstable += 1;
                    continue;
                }
                if w.is_infinite() {
                    if g != w {
                        return fail("infinity expected");
                    }
                    outcome.compared += 1;
                    continue;
                }
                let tol = 4.0 * budget * self.eps * (w.abs() + 1e-6)
                    + CONDITIONING * (self.eps / eps32) * (v - w).abs();
                if !((g - w).abs() <= tol) {
                    return fail(&format!("off by {:e}, tolerance {tol:e}", (g - w).abs()));
                }
                outcome.compared += 1;
            }
        }
        Ok(outcome)
    }
}

/// The ULP budget of every argument tensor (see the module doc), in
/// `Kernel::arguments` order; inputs 0.
pub fn ulp_budget(kernel: &Kernel, extents: &[i64]) -> Vec<f64> {
    let mut cost = vec![0.0f64; kernel.nodes.len()];
    let mut tensor_cost = vec![0.0f64; kernel.tensors.len()];
    let len = |axes: &[passfold_dsl::ExtentId]| -> f64 {
        axes.iter()
            .map(|a| extents[a.0 as usize] as f64)
            .product::<f64>()
    };
    let stmt_of = |h: usize| kernel.stmts.iter().filter(move |s| s.value.index() == h);
    for (h, node) in kernel.nodes.iter() {
        let c = |x: &passfold_dsl::Handle<Node>| cost[x.index()];
        let v = match node {
            Node::ConstFloat(_) | Node::Cast(..) => 0.5,
            Node::Load { tensor, .. } => tensor_cost[tensor.0 as usize],
            Node::Unary(op, a) => {
                use passfold_dsl::UnOp::*;
                c(a) + match op {
                    Neg | Not | Abs | Sign => 0.0,
                    Sqrt => 1.0,
                    _ => 2.0,
                }
            }
            Node::Binary(op, a, b) => {
                use passfold_dsl::BinOp::*;
                match op {
                    Min | Max | And | Or => c(a).max(c(b)),
                    _ => c(a) + c(b) + 1.0,
                }
            }
            Node::Cmp(..) => 0.0,
            Node::Select(_, a, b) => c(a).max(c(b)),
            Node::Powf(a, p) => c(a) * f64::from_bits(*p).abs().max(1.0) + 1.0,
            Node::Reduce { op, axes, arg } => match op {
                ReduceOp::Sum | ReduceOp::Mean => c(arg) + len(axes) + 1.0,
                _ => c(arg),
            },
            _ => 0.0,
        };
        cost[h.index()] = v;
        for s in stmt_of(h.index()) {
            tensor_cost[s.tensor.0 as usize] = v;
        }
    }
    kernel
        .arguments()
        .map(|id| tensor_cost[id.0 as usize])
        .collect()
}

/// Random values for every argument (outputs empty): floats from `fill`,
/// rounded to `f32`; `i32` gather targets inside the dimension they index.
pub fn random_args(kernel: &Kernel, extents: &[i64], fill: Fill, seed: u64) -> Vec<Vec<f64>> {
    const SPECIALS: [f64; 9] = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
        1e38,
        -1e38,
        1e-40,
        -3e-39,
    ];
    let mut rng = SmallRng::seed_from_u64(seed);
    kernel
        .arguments()
        .map(|id| {
            let t = kernel.tensor(id);
            if t.kind == TensorKind::Output {
                return Vec::new();
            }
            let n = Layout::compute(t, extents).map_or(0, |l| l.len as usize);
            if t.ty == ScalarType::I32 {
                let bound = passfold_dsl::gather_limit(kernel, id, extents)
                    .unwrap_or(4)
                    .max(1);
                return (0..n).map(|_| rng.random_range(0..bound) as f64).collect();
            }
            (0..n)
                .map(|_| {
                    let v = match fill {
                        Fill::Uniform(s) => rng.random_range(-s..s),
                        Fill::Specials if rng.random_range(0..8) == 0 => {
                            SPECIALS[rng.random_range(0..SPECIALS.len())]
                        }
                        Fill::Specials => rng.random_range(-3.0..3.0),
                    };
                    v as f32 as f64
                })
                .collect()
        })
        .collect()
}
