//! `passfold bench`: the main job shown in the README. Compiles a catalogue
//! kernel, prints its IR and plan, runs it on generated data, checks it
//! against the reference interpreter and prints timings.

use super::KernelArgs;
use super::commands::{load, pairs};
use super::exec::{self, Engine};
use super::tensor::HostTensor;
use anyhow::{Context, Result, bail};
use passfold_dsl::{Kernel, ScalarType, TensorKind, shape_of};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How `passfold bench` measures.
pub struct Options {
    /// Compare with the reference interpreter.
    pub verify: bool,
    /// Threads per call.
    pub threads: usize,
    /// Bake the extents into the code.
    pub specialize: bool,
    /// One JSON object instead of text.
    pub json: bool,
    /// Float inputs are uniform in `[-range, range)`.
    pub range: f64,
}

/// `passfold bench`.
pub fn bench(
    args: &KernelArgs,
    sizes: &[String],
    params: &[String],
    iters: Option<usize>,
    options: Options,
) -> Result<bool> {
    let Options {
        verify,
        threads,
        specialize,
        json,
        range,
    } = options;
    let t0 = Instant::now();
    let Some(loaded) = load(args)? else {
        return Ok(false);
    };
    let front_end = t0.elapsed();
    let kernel = &loaded.kernel;
    if !json {
        println!("== IR\n{}", kernel);
        println!("== plan\n{}", loaded.plan);
    }

    let mut sizes: BTreeMap<String, i64> = pairs::<i64>(sizes, "--size")?.into_iter().collect();
    let extents: Vec<i64> = kernel
        .extents
        .iter()
        .enumerate()
        .map(|(e, ext)| {
            sizes.remove(&ext.name).unwrap_or_else(|| {
                let reduced = loaded.plan.reduced.iter().any(|r| r.0 as usize == e);
                default_extent(&ext.name, reduced)
            })
        })
        .collect();
    if let Some(name) = sizes.keys().next() {
        bail!("`{}` has no extent `{name}`", kernel.name);
    }
    if let Some(e) = extents.iter().position(|&v| v < 0) {
        bail!("extent `{}` must not be negative", kernel.extents[e].name);
    }
    let mut params: BTreeMap<String, f64> = pairs::<f64>(params, "--param")?.into_iter().collect();
    let param_values: Vec<f64> = kernel
        .params
        .iter()
        .map(|p| {
            params
                .remove(&p.name)
                .unwrap_or_else(|| default_param(&p.name))
        })
        .collect();
    if let Some(name) = params.keys().next() {
        bail!("`{}` has no parameter `{name}`", kernel.name);
    }
    let args_data = generate(kernel, &extents, range)?;
    let sizes_text: Vec<String> = kernel
        .extents
        .iter()
        .zip(&extents)
        .map(|(e, v)| format!("{}={v}", e.name))
        .collect();
    if !json {
        println!("== run ({})", sizes_text.join(", "));
    }
    let bytes: usize = args_data
        .iter()
        .map(|t| t.shape.iter().product::<usize>() * t.ty().size_bytes())
        .sum();

    // Text to callable, as a user's first call pays it: read, parse, check,
    // plan and JIT-compile the chosen plan; the median of five.
    let fixed: Vec<(&str, i64)> = if specialize {
        kernel
            .extents
            .iter()
            .zip(&extents)
            .map(|(e, &v)| (e.name.as_str(), v))
            .collect()
    } else {
        Vec::new()
    };
    let mut compile_times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let again = load(args)?.context("the kernel checked a moment ago")?;
        exec::compile_fixed(&again.plan, &fixed)?;
        compile_times.push(t.elapsed());
    }
    let (compile_median, _) = stats(&mut compile_times);

    // Every plan the planner weighed, each timed on the same data,
    // interleaved, so the choice can be checked against the fastest.
    let mut candidates = candidate_plans(args, kernel)?;
    let chosen_text = loaded.plan.to_string();
    for c in &mut candidates {
        c.chosen = c.plan.to_string() == chosen_text;
    }
    if !candidates.iter().any(|c| c.chosen) {
        bail!("the chosen plan is not among the candidates");
    }
    let t1 = Instant::now();
    let compiled: Vec<exec::Compiled> = candidates
        .iter()
        .map(|c| exec::compile_fixed(&c.plan, &fixed))
        .collect::<Result<_>>()?;
    let jit = t1.elapsed() / candidates.len() as u32;
    if !json {
        println!(
            "compile: text to callable {:.3} ms (median of 5; front end {:.3} ms of the first), Cranelift {:.3} ms per plan",
            ms(compile_median),
            ms(front_end),
            ms(jit)
        );
    }
    let chosen = candidates.iter().position(|c| c.chosen).unwrap_or(0);
    let mut work = args_data.clone();
    exec::call_threads(
        &compiled[chosen],
        &loaded.src,
        &mut work,
        &param_values,
        threads,
    )?;
    let n = iters.unwrap_or(0);
    let budget = Duration::from_millis(1500);
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); candidates.len()];
    let start = Instant::now();
    let mut run_args = args_data.clone();
    while (n == 0 && start.elapsed() < budget && times[0].len() < 1000) || times[0].len() < n {
        for (which, out) in compiled.iter().zip(&mut times) {
            let t = Instant::now();
            exec::call_threads(which, &loaded.src, &mut run_args, &param_values, threads)?;
            out.push(t.elapsed());
        }
    }
    let elements = args_data
        .iter()
        .zip(kernel.arguments())
        .filter(|(_, id)| kernel.tensor(*id).kind != TensorKind::Output)
        .map(|(t, _)| t.shape.iter().product::<usize>())
        .max()
        .unwrap_or(0)
        .max(1);
    let measured: Vec<(f64, f64)> = times
        .iter_mut()
        .map(|t| {
            let (median, min) = stats(t);
            (ms(median), ms(min))
        })
        .collect();
    let summary = |median_ms: f64| {
        serde_json::json!({
            "median_ms": median_ms,
            "ns_per_elem": median_ms * 1e6 / elements as f64,
            "gbps": bytes as f64 / (median_ms * 1e-3) / 1e9,
        })
    };
    let fused_at = candidates
        .iter()
        .position(|c| c.chosen && c.plan.fused)
        .or_else(|| candidates.iter().position(|c| c.plan.fused))
        .unwrap_or(0);
    let unfused_at = candidates.iter().position(|c| !c.plan.fused).unwrap_or(0);
    let speedup = measured[unfused_at].0 / measured[fused_at].0;
    if json {
        let report = serde_json::json!({
            "kernel": kernel.name,
            "sizes": kernel.extents.iter().zip(&extents).map(|(e, v)| (e.name.clone(), *v)).collect::<BTreeMap<_, _>>(),
            "threads": threads,
            "compile_ms": ms(compile_median),
            "fused": summary(measured[fused_at].0),
            "unfused": summary(measured[unfused_at].0),
            "speedup": speedup,
            "candidates": candidates.iter().zip(&measured).map(|(c, m)| serde_json::json!({
                "name": c.name,
                "chosen": c.chosen,
                "passes": c.plan.passes(),
                "median_ms": m.0,
                "min_ms": m.1,
            })).collect::<Vec<_>>(),
            "elements": elements,
            "bytes": bytes,
            "calls": times[0].len(),
        });
        println!("{}", serde_json::to_string(&report)?);
        return Ok(true);
    }
    for (c, (median, min)) in candidates.iter().zip(&measured) {
        println!(
            "run {}{} ({} pass(es)): median {}, min {}, {:.3} ns/element, {:.2} GB/s",
            c.name,
            if c.chosen { " [chosen]" } else { "" },
            c.plan.passes(),
            time_text(*median),
            time_text(*min),
            median * 1e6 / elements as f64,
            bytes as f64 / (median * 1e-3) / 1e9,
        );
    }
    println!(
        "{} calls each over {elements} elements, {bytes} bytes of arguments; unfused / fused = {speedup:.2}",
        times[0].len()
    );
    let fastest = measured
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.0.total_cmp(&b.1.0))
        .map(|(i, _)| i)
        .unwrap_or(0);
    println!(
        "chosen plan: {}; fastest: {} at {} ({:+.1}%)",
        time_text(measured[chosen].0),
        candidates[fastest].name,
        time_text(measured[fastest].0),
        (measured[chosen].0 / measured[fastest].0 - 1.0) * 100.0
    );
    if let Some(v) = &loaded.plan.variant {
        let main = passfold_dsl::cost::work(&loaded.plan, &extents);
        let other = passfold_dsl::cost::work(&v.plan, &extents);
        println!(
            "cost model: main plan {main:.3e}, variant ({}) {other:.3e}: runs the {}",
            v.why,
            if loaded.plan.prefers_variant(&extents) {
                "variant"
            } else {
                "main plan"
            }
        );
    }
    if verify {
        let reference =
            exec::execute(&loaded, Engine::Interpret, args_data.clone(), &param_values)?;
        report_error(kernel, &work, &reference);
    }
    Ok(true)
}

/// A plan the planner could have picked.
struct Candidate {
    name: String,
    plan: passfold_dsl::Plan,
    chosen: bool,
}

/// The planner's alternatives under the command line's other flags: the
/// automatic choice, recompute, reload and the blocked store, both exp-shift forms, and the
/// unfused plan; plans with the same text once.
fn candidate_plans(args: &KernelArgs, kernel: &Kernel) -> Result<Vec<Candidate>> {
    use passfold_dsl::fuse::{ExpShift, Reload};
    let base = super::commands::plan_options(args, false);
    let variants = [
        ("fused", base),
        (
            "fused, recompute",
            passfold_dsl::PlanOptions {
                reload: Reload::Recompute,
                ..base
            },
        ),
        (
            "fused, reload",
            passfold_dsl::PlanOptions {
                reload: Reload::Reload,
                ..base
            },
        ),
        (
            "fused, blocked store",
            passfold_dsl::PlanOptions {
                reload: Reload::BlockStore,
                ..base
            },
        ),
        (
            "fused, running max",
            passfold_dsl::PlanOptions {
                exp_shift: ExpShift::RunningMax,
                ..base
            },
        ),
        (
            "fused, two-pass",
            passfold_dsl::PlanOptions {
                exp_shift: ExpShift::TwoPass,
                ..base
            },
        ),
        (
            "unfused",
            passfold_dsl::PlanOptions {
                unfused: true,
                ..base
            },
        ),
    ];
    let toeplitz = [
        (
            "fused, Toeplitz direct",
            passfold_dsl::PlanOptions {
                toeplitz: passfold_dsl::Toeplitz::Never,
                ..base
            },
        ),
        (
            "fused, Toeplitz by FFT",
            passfold_dsl::PlanOptions {
                toeplitz: passfold_dsl::Toeplitz::Always,
                ..base
            },
        ),
    ];
    let with_variant = passfold_dsl::plan(kernel, base).variant.is_some();
    let variants = variants
        .into_iter()
        .chain(toeplitz.into_iter().filter(|_| with_variant));
    let mut out: Vec<Candidate> = Vec::new();
    for (name, opts) in variants {
        let plan = passfold_dsl::plan(kernel, opts);
        let text = plan.to_string();
        if out.iter().any(|c| c.plan.to_string() == text) {
            continue;
        }
        out.push(Candidate {
            name: name.to_string(),
            plan,
            chosen: false,
        });
    }
    Ok(out)
}

fn stats(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort();
    (times[times.len() / 2], times[0])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn default_extent(name: &str, reduced: bool) -> i64 {
    match name {
        "b" => 64,
        "h" => 4,
        "c" | "e" | "f" => 64,
        _ if reduced => 1024,
        _ => 128,
    }
}

fn default_param(name: &str) -> f64 {
    match name {
        "eps" => 1e-5,
        "scale" => 0.125,
        "beta1" => 0.9,
        "beta2" => 0.99,
        "wd" => 0.01,
        "lr" => 1e-3,
        _ => 1.0,
    }
}

/// Random arguments: floats in [-range, range), and `i32` tensors used as
/// gather subscripts in range of the dimension they index.
fn generate(kernel: &Kernel, extents: &[i64], range: f64) -> Result<Vec<HostTensor>> {
    if !(range.is_finite() && range > 0.0) {
        bail!("--range must be a positive finite number, not {range}");
    }
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let mut out = Vec::new();
    for id in kernel.arguments() {
        let t = kernel.tensor(id);
        let shape = shape_of(t, extents).context("argument too large")?;
        let n: usize = shape.iter().product();
        if t.kind == TensorKind::Output {
            out.push(HostTensor::zeros(t.ty, shape)?);
            continue;
        }
        let values: Vec<f64> = match t.ty {
            ScalarType::I32 => {
                let bound = passfold_dsl::gather_limit(kernel, id, extents)
                    .unwrap_or(1)
                    .max(1);
                (0..n).map(|_| rng.random_range(0..bound) as f64).collect()
            }
            _ => (0..n).map(|_| rng.random_range(-range..range)).collect(),
        };
        out.push(HostTensor::from_f64(t.ty, shape, &values));
    }
    Ok(out)
}

fn report_error(kernel: &Kernel, got: &[HostTensor], want: &[HostTensor]) {
    for ((id, g), w) in kernel.arguments().zip(got).zip(want) {
        let t = kernel.tensor(id);
        if t.kind == TensorKind::Input {
            continue;
        }
        let (g, w) = (g.to_f64(), w.to_f64());
        // Relative error where it means something: outputs that cancel to
        // near zero (layer norm's `... + beta`) are judged by the absolute
        // error against the output's scale instead.
        let scale = w
            .iter()
            .filter(|v| v.is_finite())
            .fold(0.0f64, |m, v| m.max(v.abs()));
        let (mut worst_rel, mut worst_abs) = (0.0f64, 0.0f64);
        let mut mismatched = 0usize;
        for (a, b) in g.iter().zip(&w) {
            if a.is_nan() || b.is_nan() {
                mismatched += (a.is_nan() != b.is_nan()) as usize;
                continue;
            }
            if a == b {
                continue;
            }
            let err = (a - b).abs();
            worst_abs = worst_abs.max(err);
            if b.abs() >= 1e-3 * scale {
                worst_rel = worst_rel.max(err / b.abs());
            }
        }
        println!(
            "check `{}` against the f64 interpreter: max relative error {worst_rel:.3e} (outputs above 1e-3 of the largest), max absolute error {:.3e} of the output scale, {mismatched} NaN mismatches",
            t.name,
            worst_abs / scale.max(f64::MIN_POSITIVE)
        );
    }
}

/// A time in milliseconds as text: in µs below 0.1 ms, so short calls keep
/// three significant digits.
fn time_text(ms: f64) -> String {
    if ms < 0.1 {
        format!("{:.3} µs", ms * 1e3)
    } else {
        format!("{ms:.3} ms")
    }
}
