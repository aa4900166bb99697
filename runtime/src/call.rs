//! The only module with `unsafe`: owning JIT code, and calling it.
//!
//! [`OwnedModule`] frees a `JITModule`'s memory when dropped (Cranelift
//! only frees code per whole module, in the `unsafe` `free_memory`).
//! [`JitCode`] turns the finalized kernel function into a callable — the
//! crate's one function-pointer transmute — and calls it on a validated
//! [`Frame`], after `vzeroupper` on x86-64 CPUs with AVX (Cranelift mixes
//! legacy-SSE and VEX code, which is slow with dirty upper ymm halves).

use crate::args::Frame;
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Module};
use passfold_codegen::kernel_signature;

/// The kernel ABI of `passfold_codegen` (see its crate docs).
type KernelFn = unsafe extern "C" fn(*const *mut u8, *const i64, *const f64, *const i64) -> i32;

/// A JIT module whose code and data are freed on drop.
pub(crate) struct OwnedModule(Option<JITModule>);

impl OwnedModule {
    pub fn new(module: JITModule) -> Self {
        OwnedModule(Some(module))
    }

    /// The module (present until drop).
    pub fn get_mut(&mut self) -> &mut JITModule {
        self.0
            .as_mut()
            .expect("an OwnedModule holds its module until dropped")
    }

    fn get(&self) -> &JITModule {
        self.0
            .as_ref()
            .expect("an OwnedModule holds its module until dropped")
    }
}

impl Drop for OwnedModule {
    fn drop(&mut self) {
        if let Some(module) = self.0.take() {
            // SAFETY: no pointer into this module's memory outlives it: the
            // only one taken is `JitCode::entry`, which lives in the same
            // `JitCode` as this module and is dropped with it; no call can
            // be running since dropping needs the `JitCode` by value.
            unsafe { module.free_memory() };
        }
    }
}

/// A finalized kernel function and the module that owns its code.
pub(crate) struct JitCode {
    entry: KernelFn,
    /// Never touched after construction; the mutex only makes the kernel
    /// `Sync` (a `JITModule` is `Send` but not `Sync`), so compiled kernels
    /// can be shared between threads.
    _module: std::sync::Mutex<OwnedModule>,
}

impl JitCode {
    /// Takes the finalized function `func` of `module`. Returns `None` if
    /// `func` was not declared with the kernel signature or is not defined.
    pub fn new(module: OwnedModule, func: FuncId) -> Option<JitCode> {
        let m = module.get();
        let decl = m.declarations().get_function_decl(func);
        let expected = kernel_signature(m.isa().default_call_conv());
        if decl.signature != expected || !decl.linkage.is_definable() {
            return None;
        }
        let ptr = m.get_finalized_function(func);
        if ptr.is_null() {
            return None;
        }
        // SAFETY: `ptr` is the entry of a finalized function of this module
        // whose declared signature is exactly `kernel_signature` for the
        // host's default calling convention, which is `extern "C"` with
        // three pointer-sized integer arguments and an `i32` result:
        // `KernelFn`. The pointer stays valid while `module` lives, and it
        // is stored next to it.
        let entry = unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) };
        Some(JitCode {
            entry,
            _module: std::sync::Mutex::new(module),
        })
    }

    /// Runs the kernel on the arrays of a validated call and returns its
    /// status. `call` comes from a frame of `args::prepare` ([`Self::invoke`])
    /// or from `args::Direct::run`, the only places that build it.
    pub fn invoke_arrays(&self, call: &crate::args::Arrays<'_>) -> i32 {
        clear_upper_vector_state();
        // SAFETY: the arrays were built for this kernel by `args::prepare`
        // (a `Frame`) or `args::Direct::run`, which checked them before:
        // `tensors` has one pointer per kernel tensor, each to a live buffer
        // (an argument's slice borrowed for the call, whose length was
        // checked to be its layout's element count at `extents`, of the
        // kernel's element type, mutable wherever the kernel writes; or a
        // temporary of at least its layout's bytes that outlives the call);
        // `extents` and `params` have one entry per extent and parameter;
        // `rows` is a row range of `Plan::row_extent` (and, for split rows,
        // the barrier counter the frame keeps alive). The generated code
        // reads and writes only inside those layouts (the ABI contract of
        // `passfold_codegen`), and its helpers are the safe `extern "C"`
        // functions of `helpers`.
        unsafe {
            (self.entry)(
                call.tensors.as_ptr(),
                call.extents.as_ptr(),
                call.params.as_ptr(),
                call.rows.as_ptr(),
            )
        }
    }

    /// Runs the kernel on a validated frame and returns its status.
    pub fn invoke(&self, frame: &mut Frame<'_>) -> i32 {
        self.invoke_arrays(&crate::args::Arrays {
            tensors: &frame.tensors,
            extents: &frame.extents,
            params: &frame.params,
            rows: &frame.rows,
        })
    }
}

/// A frame handed to another thread of the same call.
struct SendFrame<'a>(Frame<'a>);

// SAFETY: the frames of one parallel call (see `JitCode::invoke_rows`)
// point at the same argument buffers but compute disjoint row ranges of
// `Plan::row_extent`, and every store the code makes outside its own
// temporaries is at its current row (the `row_extent` contract), so no two
// threads write the same element and no thread reads an element another
// writes; each frame owns its temporaries. The borrows the frames carry
// outlive the scope that runs them.
unsafe impl Send for SendFrame<'_> {}

impl<'a> SendFrame<'a> {
    /// The frame (a method, so closures capture the whole `Send` wrapper).
    fn frame(&mut self) -> &mut Frame<'a> {
        &mut self.0
    }
}

impl JitCode {
    /// Runs the kernel once per frame, in parallel on the rayon pool (frames
    /// from [`Frame::fork`] over disjoint row ranges); returns the first
    /// failing status, or 0.
    pub fn invoke_rows(&self, frames: Vec<Frame<'_>>) -> i32 {
        let frames: Vec<SendFrame<'_>> = frames.into_iter().map(SendFrame).collect();
        let status = std::sync::atomic::AtomicI32::new(0);
        rayon::scope(|scope| {
            for mut f in frames {
                let status = &status;
                scope.spawn(move |_| {
                    let s = self.invoke(f.frame());
                    if s != 0 {
                        let _ = status.compare_exchange(
                            0,
                            s,
                            std::sync::atomic::Ordering::Relaxed,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                    }
                });
            }
        });
        status.into_inner()
    }
}

impl JitCode {
    /// Runs a split-row kernel on `frames` (from [`Frame::split`], one per
    /// thread, all sharing `counter`) on threads of their own, all at once:
    /// the code waits at barriers for every thread, so the threads are
    /// started only when all could be spawned, and never on a pool that
    /// might run them one after another. Returns the first failing status,
    /// or 0; `None` when the threads could not be spawned (nothing ran).
    pub fn invoke_split(&self, frames: &mut [Frame<'_>]) -> Option<i32> {
        use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
        let (first, rest) = frames.split_first_mut()?;
        let gate = AtomicU8::new(0); // 0 wait, 1 go, 2 abort
        let status = AtomicI32::new(0);
        let record = |s: i32| {
            if s != 0 {
                let _ = status.compare_exchange(0, s, Ordering::Relaxed, Ordering::Relaxed);
            }
        };
        let mut spawned_all = true;
        std::thread::scope(|scope| {
            for f in rest.iter_mut() {
                let mut f = SendFrameRef(f);
                let (gate, record) = (&gate, &record);
                let spawned = std::thread::Builder::new().spawn_scoped(scope, move || {
                    loop {
                        match gate.load(Ordering::Acquire) {
                            0 => std::thread::yield_now(),
                            1 => break,
                            _ => return,
                        }
                    }
                    record(self.invoke(f.frame()));
                });
                if spawned.is_err() {
                    spawned_all = false;
                    break;
                }
            }
            if !spawned_all {
                gate.store(2, Ordering::Release);
                return;
            }
            gate.store(1, Ordering::Release);
            record(self.invoke(first));
        });
        spawned_all.then(|| status.into_inner())
    }
}

/// A frame of a split-row call, lent to another thread of the same call.
struct SendFrameRef<'f, 'a>(&'f mut Frame<'a>);

// SAFETY: the frames of one split-row call (`Frame::split`) point at the
// same buffers; the split program (`passfold_dsl::threads`) makes each thread
// write only its own chunk of the swept index, its own slot of the partial
// states, and per-row values only on thread 0, with a barrier (sequentially
// consistent atomics in the generated code) between every write and any
// read of it by another thread. The frames outlive the scope that runs them.
unsafe impl Send for SendFrameRef<'_, '_> {}

impl<'a> SendFrameRef<'_, 'a> {
    fn frame(&mut self) -> &mut Frame<'a> {
        self.0
    }
}

/// `vzeroupper` before JIT code on x86-64 CPUs with AVX.
fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU supports AVX (checked above), so `vzeroupper`
        // exists; it only zeroes the upper halves of the vector registers,
        // which `clobber_abi("C")` declares clobbered, and touches neither
        // memory, the stack nor the flags.
        unsafe {
            std::arch::asm!(
                "vzeroupper",
                clobber_abi("C"),
                options(nomem, nostack, preserves_flags)
            )
        };
    }
}
