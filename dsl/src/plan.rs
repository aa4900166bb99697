//! Plans: how a kernel's statements become loops over memory.
//!
//! A [`Plan`] holds the kernel (with the nodes and scratch tensors the
//! planner added) and its loop [`Program`]. The unfused plan is one loop nest
//! per statement, reductions evaluated inline; the fused plan comes from
//! [`crate::fuse::fuse_reductions`]. Both go through the same code generator,
//! so they are measured on the same machine-code quality.

use crate::fuse::{ExpShift, FuseOptions, fuse_reductions};
use crate::ir::*;
use crate::lir::{Op, Program};
use crate::rules::{reduced_mask, unfused_nest};
use std::fmt;

/// Planner choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlanOptions {
    /// The naive plan: one loop nest per statement.
    pub unfused: bool,
    /// The exp-shift representation for fused plans.
    pub exp_shift: ExpShift,
    /// Recompute or reload values an output sweep shares with an earlier one.
    pub reload: crate::fuse::Reload,
    /// Scalar code only: no loop is vectorized (see [`crate::vector`]), so
    /// the JIT computes in the interpreter's order, bit for bit.
    pub scalar: bool,
    /// Toeplitz products by FFT ([`crate::toeplitz`]).
    pub toeplitz: Toeplitz,
    /// The code has full-width vectors (the ahead-of-time back end: AVX-512
    /// or AVX2), so an `exp` costs a quarter of what it costs in 128-bit
    /// JIT code while memory costs the same. With [`Reload::Auto`] the cost
    /// model then takes the blocked store ([`crate::blockstore`]) where it
    /// applies: it reads the input once instead of twice. Measured here
    /// (`passfold emit-rust --block-store` against the default, softmax, the
    /// module alone): one row of 16,777,216 in 8.2–8.5 against 11.1–11.3 ms,
    /// 256 rows of 32,000 in 3.4–3.5 against 4.2–4.3 ms, rows in cache
    /// (64×4,096) 0.102 against 0.090 ms, 1×1,024 the same. In the JIT the
    /// blocked store is slower at every size (its `exp` sweep is
    /// compute-bound: 19 against 17 ms for the long row, 0.28 against 0.20
    /// ms for 64×4,096), so the JIT keeps the reload form.
    ///
    /// [`Reload::Auto`]: crate::fuse::Reload::Auto
    pub wide: bool,
}

/// When Toeplitz products (`Σ_j c[j - i]·u_j`) are computed by FFT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Toeplitz {
    /// Plan both forms: the direct plan, and the FFT form as its
    /// [`Plan::variant`], which a call runs when [`crate::cost::work`]
    /// estimates it cheaper at the call's extents.
    #[default]
    Auto,
    /// The direct form only.
    Never,
    /// The FFT form only.
    Always,
}

/// Another plan of the same kernel, run instead of the main one when it is
/// estimated cheaper at a call's extents ([`Plan::prefers_variant`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Variant {
    /// What it does differently, for the plan text.
    pub why: String,
    /// The plan.
    pub plan: Plan,
}

/// One loop nest of the unfused plan (kept for reports).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoopNest {
    /// The statement it executes (index into [`Kernel::stmts`]).
    pub stmt: usize,
    /// The loops, outermost first: the statement's indices.
    pub loops: Vec<ExtentId>,
}

/// An executable schedule of a kernel.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// The kernel, with any nodes and scratch tensors the planner added.
    pub kernel: Kernel,
    /// The loop program the code generator lowers.
    pub program: Program,
    /// The unfused loop nests, one per statement (the naive plan's shape).
    pub nests: Vec<LoopNest>,
    /// Whether this is the fused plan.
    pub fused: bool,
    /// The indices some reduction ranges over.
    pub reduced: Vec<ExtentId>,
    /// The rules the planner applied, one line each.
    pub rules: Vec<String>,
    /// Sweeps per row of the unfused plan, for comparison.
    pub unfused_passes: usize,
    /// Scalar code only ([`PlanOptions::scalar`]): no loop or reduction is
    /// vectorized.
    pub scalar: bool,
    /// A plan of the same kernel for other extents (the FFT form of
    /// Toeplitz products, [`Toeplitz::Auto`]); its kernel has the same
    /// arguments and parameters, in the same order.
    #[serde(default)]
    pub variant: Option<Box<Variant>>,
    /// The plan a row split across threads takes when its arguments are
    /// larger than the last-level cache ([`crate::cost::SPLIT_FORM_MIN_BYTES`]):
    /// the blocked store ([`crate::blockstore`]), where it applies to 128-bit
    /// code. There, on several threads, the sweeps are memory-bound, and
    /// reading the input once (five row-sized streams instead of six) wins
    /// over the reload form's cheaper `exp` sweep; in cache the reload form
    /// wins. Measured with `passfold bench kernels/softmax.pf --threads 2`
    /// (both candidates split): one row of 16,777,216 in 8.6–9.1 against
    /// 9.1–10.0 ms, 4,194,304 the same (1.85 ms), 1,048,576 in 0.50
    /// against 0.46 ms; on one thread the two forms are within 3% out of
    /// cache and the reload form 18% faster in cache.
    #[serde(default)]
    pub split_form: Option<Box<Plan>>,
}

impl Plan {
    /// Sweeps per row over a reduced index of the inputs, as KERNELS.md
    /// counts passes: for each reduced index, the outermost loops over it (or
    /// reductions over it evaluated inline) that read an input along it; the
    /// largest such count.
    pub fn passes(&self) -> usize {
        count_passes(&self.kernel, &self.program)
    }

    /// The plan as one JSON object (`passfold plan --json`).
    pub fn to_json(&self) -> serde_json::Value {
        let k = &self.kernel;
        let name = |e: &ExtentId| k.extent(*e).name.clone();
        let mut json = serde_json::json!({
            "kernel": k.name,
            "passes": self.passes(),
            "unfused_passes": self.unfused_passes,
            "fused": self.fused,
            "reduced": self.reduced.iter().map(name).collect::<Vec<_>>(),
            "rules": self.rules,
            "program": self.program_text(),
        });
        if let Some(v) = &self.variant {
            json["variant"] = serde_json::json!({ "why": v.why, "plan": v.plan.to_json() });
        }
        json
    }

    /// Whether a call with these extents (by extent, as bound) runs
    /// [`Plan::variant`]: when [`crate::cost::work`] estimates it cheaper.
    pub fn prefers_variant(&self, extents: &[i64]) -> bool {
        self.variant
            .as_ref()
            .is_some_and(|v| crate::cost::work(&v.plan, extents) < crate::cost::work(self, extents))
    }

    /// The loop program as text.
    pub fn program_text(&self) -> String {
        let mut s = String::new();
        let _ = self.program.write(&mut s, &self.kernel);
        s
    }
}

/// Plans `kernel`.
pub fn plan(kernel: &Kernel, opts: PlanOptions) -> Plan {
    let mut main = plan_one(kernel, opts);
    // The split form: for 128-bit code, the blocked store where it applies.
    if !opts.wide && !opts.unfused && !opts.scalar && opts.reload == crate::fuse::Reload::Auto {
        let store = plan_one(
            kernel,
            PlanOptions {
                reload: crate::fuse::Reload::BlockStore,
                ..opts
            },
        );
        if store.rules.iter().any(|r| r.starts_with("blocked store")) {
            main.split_form = Some(Box::new(store));
        }
    }
    main
}

/// [`plan`] without the split form.
fn plan_one(kernel: &Kernel, opts: PlanOptions) -> Plan {
    if opts.wide && opts.reload == crate::fuse::Reload::Auto && !opts.unfused {
        let mut p = plan_one(
            kernel,
            PlanOptions {
                reload: crate::fuse::Reload::BlockStore,
                wide: false,
                ..opts
            },
        );
        if let Some(rule) = p.rules.iter_mut().find(|r| r.starts_with("blocked store")) {
            *rule = rule.replace(
                "(asked for)",
                "(cost model: full-width vectors make exp cheap next to a second read of the input)",
            );
            return p;
        }
    }
    crate::count_front_end_run();
    let toeplitz = !opts.unfused
        && opts.toeplitz != Toeplitz::Never
        && crate::toeplitz::has_relative_index(kernel);
    let fft = toeplitz.then(|| finish(plan_loops(kernel, opts, true), opts));
    let fft = fft.filter(|p| p.program_has_toeplitz());
    match (fft, opts.toeplitz) {
        (Some(fft), Toeplitz::Always) => fft,
        (fft, _) => {
            let mut plan = finish(plan_loops(kernel, opts, false), opts);
            plan.variant = fft.map(|plan| {
                Box::new(Variant {
                    why: "Toeplitz products by FFT".into(),
                    plan,
                })
            });
            plan
        }
    }
}

/// The steps after loop planning: sign facts, blocking, vector code.
fn finish(mut plan: Plan, opts: PlanOptions) -> Plan {
    plan.scalar = opts.scalar;
    let mut rw = crate::rules::Rewriter::new(&plan.kernel);
    crate::bounds::mark_nonpositive_exps(&mut rw, &mut plan.program);
    let pending = (plan.fused && opts.reload == crate::fuse::Reload::BlockStore)
        .then(|| crate::blockstore::store_terms(&mut rw, &mut plan.program))
        .flatten();
    let covered = crate::nancover::covered_maxes(&rw.kernel);
    let vars = crate::nancover::covered_vars(&rw.kernel, &plan.program, &covered);
    crate::block::block_online_sweeps(&mut rw, &mut plan.program, &vars);
    if let Some(p) = pending
        && let Some(rule) = crate::blockstore::rescale_output(&mut rw, &mut plan.program, p)
    {
        plan.rules.push(rule);
    }
    let vars = crate::nancover::covered_vars(&rw.kernel, &plan.program, &covered);
    if crate::nancover::ignore_nans(&mut rw, &mut plan.program, &vars) > 0 {
        let mut names: Vec<(String, String)> = covered
            .iter()
            .filter_map(|&m| {
                crate::nancover::carrier(&rw.kernel, m).map(|s| {
                    (
                        rw.kernel.tensor(m).name.clone(),
                        rw.kernel.tensor(s).name.clone(),
                    )
                })
            })
            .collect();
        names.sort();
        for (m, s) in names {
            plan.rules.push(format!(
                "nan-cover: a NaN in the row makes `{s}` NaN and every reader of `{m}` reads `{s}`, so the running max of `{m}` passes over NaN (maxnum)"
            ));
        }
    }
    if !opts.scalar {
        crate::jam::jam_online_sweeps(&mut rw, &mut plan.program);
        crate::recip::divide_by_reciprocal(&mut rw, &mut plan.program);
        crate::vector::annotate(&mut rw, &mut plan.program);
    }
    plan.kernel = rw.finish();
    plan
}

impl Plan {
    /// Whether the program computes a Toeplitz product.
    pub fn program_has_toeplitz(&self) -> bool {
        fn any(ops: &[Op]) -> bool {
            ops.iter().any(|op| match op {
                Op::Toeplitz { .. } => true,
                Op::Loop { body, .. } => any(body),
                Op::If { then, .. } => any(then),
                _ => false,
            })
        }
        any(&self.program.body)
    }
}

/// [`plan`] without deciding vector code; `toeplitz`: Toeplitz products by FFT.
fn plan_loops(kernel: &Kernel, opts: PlanOptions, toeplitz: bool) -> Plan {
    let unfused = plan_unfused(kernel);
    if opts.unfused {
        return unfused;
    }
    let fused = fuse_reductions(
        kernel,
        &FuseOptions {
            exp_shift: opts.exp_shift,
            reload: opts.reload,
            toeplitz,
        },
    );
    Plan {
        kernel: fused.kernel,
        program: fused.program,
        fused: true,
        rules: fused.rules,
        unfused_passes: unfused.passes(),
        ..unfused
    }
}

/// The unfused plan: one loop nest per statement.
pub fn plan_unfused(kernel: &Kernel) -> Plan {
    let reduced = reduced_mask(kernel);
    let mut program = Program::default();
    for stmt in &kernel.stmts {
        program.body.extend(unfused_nest(kernel, stmt));
    }
    // The same loop-invariant code motion as the fused plan, so both are
    // measured on the same machine-code quality.
    let mut rw = crate::rules::Rewriter::new(kernel);
    crate::licm::hoist_invariants(&mut rw, &mut program);
    let kernel = &rw.finish();
    let nests = kernel
        .stmts
        .iter()
        .enumerate()
        .map(|(s, stmt)| LoopNest {
            stmt: s,
            loops: stmt.indices.clone(),
        })
        .collect();
    let passes = count_passes(kernel, &program);
    Plan {
        kernel: kernel.clone(),
        program,
        nests,
        fused: false,
        reduced: (0..kernel.extents.len() as u32)
            .filter(|e| reduced & (1 << e) != 0)
            .map(ExtentId)
            .collect(),
        rules: Vec::new(),
        unfused_passes: passes,
        scalar: false,
        variant: None,
        split_form: None,
    }
}

/// Counts sweeps: see [`Plan::passes`]. For each reduced index, the number
/// of sweeps over it that read an input along it (a loop over the index, or
/// a reduction over it evaluated inline, not nested in another sweep); the
/// plan's count is the largest. A kernel without reductions counts sweeps
/// over any index.
pub fn count_passes(kernel: &Kernel, program: &Program) -> usize {
    let mut reduced = reduced_mask(kernel);
    if reduced == 0 {
        reduced = u64::MAX;
    }
    (0..kernel.extents.len().min(64))
        .filter(|e| reduced & (1 << e) != 0)
        .map(|e| count_ops(kernel, &program.body, 1 << e, false))
        .max()
        .unwrap_or(0)
}

fn count_ops(kernel: &Kernel, ops: &[Op], axis: u64, inside: bool) -> usize {
    let mut n = 0;
    for op in ops {
        match op {
            Op::Barrier | Op::Toeplitz { .. } => {}
            Op::Loop { index, body, .. } => {
                let reads = body_reads_along(kernel, body, 1 << index.0);
                let is_sweep = !inside && axis & (1 << index.0) != 0 && reads;
                // Any sweep over a reduced index that reads inputs hides the
                // loops and reductions nested in it.
                let nested = inside || (reads && reduced_loop(kernel, *index));
                n += is_sweep as usize + count_ops(kernel, body, axis, nested);
            }
            Op::If { cond, then } => {
                n += (!inside && inline_sweep(kernel, *cond, axis)) as usize;
                n += count_ops(kernel, then, axis, inside);
            }
            Op::Set { value, .. } | Op::Store { value, .. } => {
                if !inside && inline_sweep(kernel, *value, axis) {
                    n += 1;
                }
            }
        }
    }
    n
}

fn reduced_loop(kernel: &Kernel, index: ExtentId) -> bool {
    let r = reduced_mask(kernel);
    r == 0 || r & (1 << index.0) != 0
}

/// Whether a value evaluates, outside any other reduction, a reduction over
/// `axis` that reads an input along it.
fn inline_sweep(kernel: &Kernel, value: crate::arena::Handle<Node>, axis: u64) -> bool {
    crate::fuse::top_reductions(kernel, value)
        .into_iter()
        .any(|h| match &kernel.nodes[h] {
            Node::Reduce { axes, arg, .. } => {
                let m = axes.iter().fold(0u64, |m, a| m | 1 << a.0);
                m & axis != 0 && reads_input_along(kernel, *arg, axis)
            }
            _ => false,
        })
}

fn body_reads_along(kernel: &Kernel, ops: &[Op], along: u64) -> bool {
    ops.iter().any(|op| match op {
        Op::Barrier | Op::Toeplitz { .. } => false,
        Op::Loop { body, .. } => body_reads_along(kernel, body, along),
        Op::If { cond, then } => {
            reads_input_along(kernel, *cond, along) || body_reads_along(kernel, then, along)
        }
        Op::Set { value, .. } | Op::Store { value, .. } => reads_input_along(kernel, *value, along),
    })
}

fn reads_input_along(kernel: &Kernel, root: crate::arena::Handle<Node>, along: u64) -> bool {
    crate::fuse::subtree(kernel, root)
        .into_iter()
        .any(|h| match &kernel.nodes[h] {
            // Temporaries and the kernel's own outputs (values it stored
            // earlier, as a reload) are not inputs.
            Node::Load { tensor, index } => {
                !matches!(
                    kernel.tensor(*tensor).kind,
                    TensorKind::Temp | TensorKind::Output
                ) && index.iter().any(|i| match i {
                    Index::Affine(a) => a.terms.iter().any(|(v, _)| along & (1 << v.0) != 0),
                    Index::Gather(_) => false,
                })
            }
            _ => false,
        })
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.kernel;
        let names: Vec<&str> = self
            .reduced
            .iter()
            .map(|e| k.extent(*e).name.as_str())
            .collect();
        writeln!(
            f,
            "plan {}: {}, {} pass(es) over [{}] (unfused: {}){}",
            k.name,
            if self.fused { "fused" } else { "unfused" },
            self.passes(),
            names.join(", "),
            self.unfused_passes,
            if self.scalar { ", scalar code" } else { "" }
        )?;
        for r in &self.rules {
            writeln!(f, "  rule: {r}")?;
        }
        if let Some(v) = &self.variant {
            writeln!(
                f,
                "  variant: {}, run when its estimated work is smaller (see below)",
                v.why
            )?;
        }
        if self.split_form.is_some() {
            writeln!(
                f,
                "  split form: a row split across threads whose arguments pass {} MiB takes the blocked store (`--block-store`): memory-bound there, it reads the input once",
                crate::cost::SPLIT_FORM_MIN_BYTES >> 20
            )?;
        }
        for t in k
            .tensors
            .iter()
            .skip(k.tensors.len().saturating_sub(k.tensors.len()))
        {
            if t.kind == TensorKind::Temp && t.name.contains('.') {
                writeln!(
                    f,
                    "  scratch {}: {}[{}]",
                    t.name,
                    t.ty,
                    t.dims
                        .iter()
                        .map(|d| crate::lower::affine_text(&d.0, &k.extents))
                        .collect::<Vec<_>>()
                        .join(", ")
                )?;
            }
        }
        write!(f, "{}", self.program_text())?;
        if let Some(v) = &self.variant {
            write!(f, "variant ({}):\n{}", v.why, v.plan)?;
        }
        Ok(())
    }
}

impl Plan {
    /// The index whose values the program can run in disjoint parallel
    /// ranges, if any: every top-level op is a loop over it, no reduction
    /// ranges over it, and every store inside writes an argument at that
    /// index or a temporary (temporaries are private to each range). Loads of
    /// temporaries through gathers would cross rows, so they rule it out.
    pub fn row_extent(&self) -> Option<ExtentId> {
        let k = &self.kernel;
        let first = match self.program.body.first()? {
            Op::Loop {
                index, range: None, ..
            } => *index,
            _ => return None,
        };
        if crate::rules::reduced_mask(k) & (1 << first.0) != 0 {
            return None;
        }
        let all_loops = self
            .program
            .body
            .iter()
            .all(|op| matches!(op, Op::Loop { index, range: None, .. } if *index == first));
        if !all_loops || !stores_ok(k, &self.program.body, first) {
            return None;
        }
        let gathers_temp = k.nodes.iter().any(|(_, n)| match n {
            Node::Load { tensor, index } => {
                k.tensor(*tensor).kind == TensorKind::Temp
                    && index.iter().any(|i| matches!(i, Index::Gather(_)))
            }
            _ => false,
        });
        (!gathers_temp).then_some(first)
    }
}

fn stores_ok(k: &Kernel, ops: &[Op], row: ExtentId) -> bool {
    ops.iter().all(|op| match op {
        Op::Loop { body, .. } => stores_ok(k, body, row),
        Op::If { then, .. } => stores_ok(k, then, row),
        Op::Set { .. } | Op::Barrier => true,
        // Computes every row at once: the plan does not split by rows.
        Op::Toeplitz { .. } => false,
        Op::Store { tensor, index, .. } => {
            k.tensor(*tensor).kind == TensorKind::Temp || index.contains(&row)
        }
    })
}
