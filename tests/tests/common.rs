//! Render helpers shared by the tests: each boundary has one, and the tests
//! are data.

use passfold_dsl::{LowerOptions, PlanOptions};

/// The `Display` text of the checked kernel, or the rendered diagnostics.
pub fn ir_text(src: &str) -> String {
    match passfold_dsl::check(src, &LowerOptions::default()) {
        Ok(k) => k.to_string(),
        Err(d) => d.render("kernel.pf", src),
    }
}

/// The plan text, or the rendered diagnostics.
pub fn plan_text(src: &str) -> String {
    match passfold_dsl::compile(src, &LowerOptions::default(), PlanOptions::default()) {
        Ok(p) => p.to_string(),
        Err(d) => d.render("kernel.pf", src),
    }
}

/// The rendered diagnostics of a kernel that must fail to check, with the
/// first one's message and 1-based line and column.
pub fn first_error(src: &str) -> (String, usize, usize, String) {
    let res = std::panic::catch_unwind(|| passfold_dsl::check(src, &LowerOptions::default()));
    let res = res.unwrap_or_else(|_| panic!("the checker panicked on:\n{src}"));
    let Err(diags) = res else {
        panic!("expected an error for:\n{src}");
    };
    let first = &diags.0[0];
    let (line, col) = first.span().line_col(src);
    (
        first.message.clone(),
        line,
        col,
        diags.render("kernel.pf", src),
    )
}

use passfold_dsl::{Kernel, ScalarType, TensorKind};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// How to fill the float inputs of a generated case.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fill {
    /// Uniform in [-scale, scale).
    Uniform(f64),
    /// Uniform, with some entries replaced by the given special value.
    Special(f64),
}

/// Random arguments for `kernel` at `extents` (one buffer per argument,
/// outputs empty): floats from `fill`, `i32` gather subscripts in range,
/// other `i32` in [0, 4).
pub fn random_args(kernel: &Kernel, extents: &[i64], fill: Fill, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    kernel
        .arguments()
        .map(|id| {
            let t = kernel.tensor(id);
            if t.kind == TensorKind::Output {
                return Vec::new();
            }
            let n = passfold_dsl::Layout::compute(t, extents)
                .expect("small sizes")
                .len as usize;
            match t.ty {
                ScalarType::I32 => {
                    let bound = passfold_dsl::gather_limit(kernel, id, extents)
                        .unwrap_or(4)
                        .max(1);
                    (0..n).map(|_| rng.random_range(0..bound) as f64).collect()
                }
                _ => (0..n)
                    .map(|_| match fill {
                        Fill::Uniform(s) => rng.random_range(-s..s),
                        Fill::Special(v) => {
                            if rng.random_range(0..4) == 0 {
                                v
                            } else {
                                rng.random_range(-3.0..3.0)
                            }
                        }
                    })
                    .map(|v| {
                        if t.ty == ScalarType::F32 {
                            v as f32 as f64
                        } else {
                            v
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Default parameter values that keep every catalogue kernel in its domain.
pub fn params_for(kernel: &Kernel) -> Vec<f64> {
    kernel
        .params
        .iter()
        .map(|p| match p.name.as_str() {
            "eps" => 0.1,
            "scale" => 0.5,
            "tau" => 0.7,
            "beta1" => 0.9,
            "beta2" => 0.99,
            "wd" => 0.01,
            "lr" => 0.1,
            "z_scale" => 1.5,
            "z_margin" => 0.5,
            _ => 1.0,
        })
        .collect()
}

/// `|a - b| <= atol + rtol·|b|`, with NaN equal to NaN and infinities equal
/// to themselves.
pub fn close(a: f64, b: f64, rtol: f64, atol: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a.is_infinite() || b.is_infinite() {
        return a == b;
    }
    (a - b).abs() <= atol + rtol * b.abs()
}
