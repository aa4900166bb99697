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

/// `passfold bench`.
pub fn bench(
    args: &KernelArgs,
    sizes: &[String],
    params: &[String],
    iters: Option<usize>,
    verify: bool,
    threads: usize,
    json: bool,
) -> Result<bool> {
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
    let args_data = generate(kernel, &extents)?;
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

    let t1 = Instant::now();
    let compiled = exec::compile(&loaded.plan)?;
    let jit = t1.elapsed();
    if !json {
        println!(
            "compile: front end {:.3} ms, Cranelift {:.3} ms",
            ms(front_end),
            ms(jit)
        );
    }
    // The other plan through the same code generator, timed interleaved with
    // this one so the ratio is measured in one run.
    let other_plan = passfold_dsl::plan(kernel, super::commands::plan_options(args, !args.unfused));
    let other = exec::compile(&other_plan)?;
    let mut work = args_data.clone();
    exec::call(&compiled, &loaded.src, &mut work, &param_values)?;
    let n = iters.unwrap_or(0);
    let budget = Duration::from_millis(1500);
    let (mut times, mut other_times) = (Vec::new(), Vec::new());
    let start = Instant::now();
    let mut run_args = args_data.clone();
    while (n == 0 && start.elapsed() < budget && times.len() < 1000) || times.len() < n {
        for (which, out) in [(&compiled, &mut times), (&other, &mut other_times)] {
            let t = Instant::now();
            exec::call_threads(which, &loaded.src, &mut run_args, &param_values, threads)?;
            out.push(t.elapsed());
        }
    }
    let (median, min) = stats(&mut times);
    let (other_median, other_min) = stats(&mut other_times);
    let label = |unfused: bool| if unfused { "unfused" } else { "fused" };
    let ratio = median.as_secs_f64() / other_median.as_secs_f64();
    let gbps = bytes as f64 / median.as_secs_f64() / 1e9;
    if json {
        let report = serde_json::json!({
            "kernel": kernel.name,
            "sizes": kernel.extents.iter().zip(&extents).map(|(e, v)| (e.name.clone(), *v)).collect::<BTreeMap<_, _>>(),
            "threads": threads,
            "plan": label(args.unfused),
            "passes": loaded.plan.passes(),
            "compile_ms": { "front_end": ms(front_end), "cranelift": ms(jit) },
            "median_ms": ms(median),
            "min_ms": ms(min),
            "calls": times.len(),
            "gb_per_s": gbps,
            "bytes": bytes,
            "other": {
                "plan": label(!args.unfused),
                "passes": other_plan.passes(),
                "median_ms": ms(other_median),
                "min_ms": ms(other_min),
            },
            "ratio": ratio,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(true);
    }
    println!(
        "run ({}, {} pass(es)): median {:.3} ms, min {:.3} ms over {} calls; {:.2} GB/s over {} bytes of arguments",
        label(args.unfused),
        loaded.plan.passes(),
        ms(median),
        ms(min),
        times.len(),
        gbps,
        bytes
    );
    println!(
        "run ({}, {} pass(es)): median {:.3} ms, min {:.3} ms; {} / {} = {ratio:.2}",
        label(!args.unfused),
        other_plan.passes(),
        ms(other_median),
        ms(other_min),
        label(args.unfused),
        label(!args.unfused),
    );
    if verify {
        let reference =
            exec::execute(&loaded, Engine::Interpret, args_data.clone(), &param_values)?;
        report_error(kernel, &work, &reference);
    }
    Ok(true)
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

/// Random arguments: floats in [-4, 4), and `i32` tensors used as gather
/// subscripts in range of the dimension they index.
fn generate(kernel: &Kernel, extents: &[i64]) -> Result<Vec<HostTensor>> {
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
            _ => (0..n).map(|_| rng.random_range(-4.0..4.0)).collect(),
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
