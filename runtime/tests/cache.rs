//! The kernel cache: hits, single compilation under concurrency, and code
//! freed when the last handle goes (resident memory stays flat).

mod common;

use passfold_dsl::{LowerOptions, PlanOptions};
use passfold_runtime::{Arg, KernelCache};
use std::sync::Arc;

fn plan(scale: usize) -> passfold_dsl::Plan {
    let src = format!(
        "kernel k(x: f32[b, i]) -> (y: f32[b]) {{\n    m[b] = max[i](x[b, i]);\n    y[b] = m[b] + log(sum[i](exp(x[b, i] - m[b]))) * {scale}.0;\n}}"
    );
    common::plan_with(&src, &LowerOptions::default(), PlanOptions::default())
}

#[test]
fn same_plan_same_kernel() {
    let cache = KernelCache::default();
    let (a, b) = (
        cache.get_or_compile(&plan(1)).unwrap(),
        cache.get_or_compile(&plan(1)).unwrap(),
    );
    assert!(Arc::ptr_eq(&a, &b));
    let c = cache.get_or_compile(&plan(2)).unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
    let unfused = common::plan_with(
        &plan_src(),
        &LowerOptions::default(),
        PlanOptions {
            unfused: true,
            ..Default::default()
        },
    );
    let d = cache.get_or_compile(&unfused).unwrap();
    assert!(!Arc::ptr_eq(&a, &d), "plan choices are part of the key");
}

fn plan_src() -> String {
    "kernel k(x: f32[b, i]) -> (y: f32[b]) {\n    m[b] = max[i](x[b, i]);\n    y[b] = m[b] + log(sum[i](exp(x[b, i] - m[b]))) * 1.0;\n}".into()
}

#[test]
fn concurrent_compiles_and_calls_from_eight_threads() {
    let cache = Arc::new(KernelCache::default());
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                for round in 0..20 {
                    let k = cache.get_or_compile(&plan(round % 3)).unwrap();
                    let x: Vec<f32> = (0..64).map(|v| (v * (t + 1)) as f32 * 0.01).collect();
                    let mut y = vec![0.0f32; 4];
                    k.call(vec![Arg::new(&x, &[4, 16]), Arg::new(&mut y, &[4])], &[])
                        .unwrap();
                    assert!(y.iter().all(|v| v.is_finite()));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[test]
fn compiling_and_dropping_ten_thousand_kernels_keeps_memory_flat() {
    let cache = KernelCache::default();
    let plans: Vec<_> = (0..50).map(plan).collect();
    // Warm up allocator pools and lazy statics.
    for p in &plans {
        drop(cache.get_or_compile(p).unwrap());
    }
    let before = resident_bytes();
    for n in 0..10_000 {
        drop(cache.get_or_compile(&plans[n % plans.len()]).unwrap());
    }
    let after = resident_bytes();
    let growth = after.saturating_sub(before);
    assert!(
        growth < 16 << 20,
        "resident memory grew by {growth} bytes over 10,000 compile/drop cycles"
    );
    assert!(
        cache.len() <= 65,
        "dead keys are pruned ({} held)",
        cache.len()
    );
}
