//! The compiled-kernel cache.
//!
//! A key lists everything that changes the machine code: the planned
//! kernel's canonical text (its IR and loop program, which include element
//! types, constants and the plan choices), the target ISA with its enabled
//! features, and the Cranelift version. Entries hold `Weak` handles: the
//! code of a kernel is freed when its last `Arc` is dropped, and a later
//! request compiles it again. Compilation is single-flight per key: threads
//! asking for the same kernel at once wait for one compilation.

use crate::{CompileError, CompiledKernel};
use passfold_dsl::Plan;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// The Cranelift line the code is compiled with, part of every key.
const CRANELIFT: &str = "cranelift-0.135";

type Slot = Arc<Mutex<Weak<CompiledKernel>>>;

/// A thread-safe cache of compiled kernels.
#[derive(Default)]
pub struct KernelCache {
    entries: Mutex<HashMap<String, Slot>>,
}

impl std::fmt::Debug for KernelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelCache")
            .field("entries", &self.len())
            .finish()
    }
}

/// The process-wide cache.
pub fn cache() -> &'static KernelCache {
    static CACHE: OnceLock<KernelCache> = OnceLock::new();
    CACHE.get_or_init(KernelCache::default)
}

/// The cache key of a plan for the host.
pub fn cache_key(plan: &Plan) -> String {
    specialized_key(plan, &[])
}

/// The cache key of a plan specialized to `fixed` extents (sorted by name).
pub fn specialized_key(plan: &Plan, fixed: &[(&str, i64)]) -> String {
    let mut fixed: Vec<String> = fixed.iter().map(|(n, v)| format!("{n}={v}")).collect();
    fixed.sort();
    // The variant is compiled with the plan and picked per call: a plan
    // with one is another kernel than the same plan without.
    let variant = plan.variant.as_ref().map_or(String::new(), |v| {
        format!("\nvariant:\n{}\n{}", v.plan.kernel, v.plan.program_text())
    });
    format!(
        "{CRANELIFT}\n{}\nscalar={} fixed=[{}]\n{}\n{}{variant}",
        host_fingerprint(),
        plan.scalar,
        fixed.join(","),
        plan.kernel,
        plan.program_text()
    )
}

fn host_fingerprint() -> &'static str {
    static FINGERPRINT: OnceLock<String> = OnceLock::new();
    FINGERPRINT.get_or_init(|| match passfold_codegen::host_isa(&Default::default()) {
        Ok(isa) => passfold_codegen::isa_fingerprint(&*isa),
        Err(e) => format!("no host isa: {e}"),
    })
}

impl KernelCache {
    /// The compiled kernel for `plan`: the cached one while any handle to it
    /// lives, else a fresh compilation (one per key at a time).
    pub fn get_or_compile(&self, plan: &Plan) -> Result<Arc<CompiledKernel>, CompileError> {
        self.get_or_compile_specialized(plan, &[])
    }

    /// [`KernelCache::get_or_compile`] for a plan specialized to `fixed`
    /// extents (see [`crate::compile_specialized`]); the extents are part of
    /// the key.
    pub fn get_or_compile_specialized(
        &self,
        plan: &Plan,
        fixed: &[(&str, i64)],
    ) -> Result<Arc<CompiledKernel>, CompileError> {
        let key = specialized_key(plan, fixed);
        let slot = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if entries.len() > 64 {
                // Forget keys whose kernels are gone (and that no one is compiling).
                entries.retain(|_, s| s.try_lock().map_or(true, |w| w.strong_count() > 0));
            }
            entries.entry(key).or_default().clone()
        };
        let mut weak = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(kernel) = weak.upgrade() {
            return Ok(kernel);
        }
        let kernel = Arc::new(crate::compile_specialized(plan, fixed)?);
        *weak = Arc::downgrade(&kernel);
        Ok(kernel)
    }

    /// The number of keys held (live or not yet pruned).
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }

    /// Whether the cache holds no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
