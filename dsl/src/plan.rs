//! Plans: how a kernel's statements become loop nests over memory.
//!
//! This is the unfused plan of the foundation: one loop nest per statement,
//! each reduction evaluated by an inner loop of its own. It assumes a
//! verified [`Kernel`] and guarantees that executing the nests in order
//! computes exactly what [`crate::interp`] computes (same order of
//! operations). The algebraic planner that fuses dependent reductions into
//! fewer sweeps is a later pass and will produce the same [`Plan`] type.

use crate::ir::*;
use crate::text::reduce_name;
use std::fmt;

/// Planner choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlanOptions {
    /// Ask for the unfused plan (today every plan is unfused).
    pub unfused: bool,
}

/// One loop nest: the loops of a statement around its value.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopNest {
    /// The statement it executes (index into [`Kernel::stmts`]).
    pub stmt: usize,
    /// The loops, outermost first: the statement's indices.
    pub loops: Vec<ExtentId>,
    /// The reductions evaluated inside, as `(op, axes)`, outermost first.
    pub reductions: Vec<(ReduceOp, Vec<ExtentId>)>,
    /// Inputs read with a subscript over a reduced index: what makes this
    /// nest a sweep over the large data.
    pub sweeps: Vec<TensorId>,
}

/// An executable schedule of a kernel.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The kernel planned.
    pub kernel: Kernel,
    /// The loop nests, in execution order.
    pub nests: Vec<LoopNest>,
    /// Whether dependent reductions were fused (false for now).
    pub fused: bool,
    /// The indices that some reduction ranges over.
    pub reduced: Vec<ExtentId>,
}

impl Plan {
    /// Sweeps per row over the reduced indices of the inputs, as KERNELS.md
    /// counts passes: nests that read an input along a reduced index.
    pub fn passes(&self) -> usize {
        self.nests.iter().filter(|n| !n.sweeps.is_empty()).count()
    }

    /// The plan as one JSON object (`passfold plan --json`).
    pub fn to_json(&self) -> serde_json::Value {
        let k = &self.kernel;
        let name = |e: &ExtentId| k.extent(*e).name.clone();
        let nests: Vec<serde_json::Value> = self
            .nests
            .iter()
            .map(|n| {
                let stmt = &k.stmts[n.stmt];
                serde_json::json!({
                    "writes": k.tensor(stmt.tensor).name,
                    "loops": n.loops.iter().map(name).collect::<Vec<_>>(),
                    "reductions": n.reductions.iter().map(|(op, axes)| serde_json::json!({
                        "op": reduce_name(*op),
                        "over": axes.iter().map(name).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "sweeps": n.sweeps.iter().map(|t| k.tensor(*t).name.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::json!({
            "kernel": k.name,
            "passes": self.passes(),
            "fused": self.fused,
            "reduced": self.reduced.iter().map(name).collect::<Vec<_>>(),
            "nests": nests,
        })
    }
}

/// Plans `kernel` as one loop nest per statement.
pub fn plan_unfused(kernel: &Kernel) -> Plan {
    let mut reduced = 0u64;
    for (_, node) in kernel.nodes.iter() {
        if let Node::Reduce { axes, .. } = node {
            for a in axes {
                reduced |= 1 << a.0;
            }
        }
    }
    let nests = kernel
        .stmts
        .iter()
        .enumerate()
        .map(|(s, stmt)| {
            let mut reductions = Vec::new();
            let mut sweeps = Vec::new();
            for h in reachable(kernel, stmt.value) {
                match &kernel.nodes[h] {
                    Node::Reduce { op, axes, .. } => reductions.push((*op, axes.clone())),
                    Node::Load { tensor, index } => {
                        let t = kernel.tensor(*tensor);
                        let along_reduced = index.iter().any(|i| match i {
                            Index::Affine(a) => a.terms.iter().any(|(v, _)| reduced & (1 << v.0) != 0),
                            Index::Gather(_) => false,
                        });
                        if t.kind != TensorKind::Temp && along_reduced && !sweeps.contains(tensor) {
                            sweeps.push(*tensor);
                        }
                    }
                    _ => {}
                }
            }
            LoopNest {
                stmt: s,
                loops: stmt.indices.clone(),
                reductions,
                sweeps,
            }
        })
        .collect();
    Plan {
        kernel: kernel.clone(),
        nests,
        fused: false,
        reduced: (0..kernel.extents.len() as u32)
            .filter(|e| reduced & (1 << e) != 0)
            .map(ExtentId)
            .collect(),
    }
}

/// Plans `kernel`. Fusion is not implemented yet, so both choices give the
/// unfused plan.
pub fn plan(kernel: &Kernel, opts: PlanOptions) -> Plan {
    let _ = opts.unfused;
    plan_unfused(kernel)
}

/// Nodes reachable from `root`, in decreasing handle order (roots first).
fn reachable(kernel: &Kernel, root: crate::arena::Handle<Node>) -> Vec<crate::arena::Handle<Node>> {
    let mut seen = vec![false; root.index() + 1];
    seen[root.index()] = true;
    let mut out = Vec::new();
    for i in (0..=root.index()).rev() {
        if !seen[i] {
            continue;
        }
        let h = crate::arena::Handle::from_index(i);
        out.push(h);
        for op in kernel.nodes[h].operands() {
            seen[op.index()] = true;
        }
    }
    out
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.kernel;
        let names = |v: &[ExtentId]| v.iter().map(|e| k.extent(*e).name.as_str()).collect::<Vec<_>>().join(", ");
        writeln!(
            f,
            "plan {}: {}, {} pass(es) over reduced indices [{}]",
            k.name,
            if self.fused { "fused" } else { "unfused" },
            self.passes(),
            names(&self.reduced)
        )?;
        for (i, n) in self.nests.iter().enumerate() {
            let stmt = &k.stmts[n.stmt];
            write!(f, "  nest {i}: {}[{}]", k.tensor(stmt.tensor).name, names(&stmt.indices))?;
            write!(f, " loops [{}]", names(&n.loops))?;
            for (op, axes) in &n.reductions {
                write!(f, "; {}[{}]", reduce_name(*op), names(axes))?;
            }
            if !n.sweeps.is_empty() {
                let s: Vec<&str> = n.sweeps.iter().map(|t| k.tensor(*t).name.as_str()).collect();
                write!(f, "; sweeps {}", s.join(", "))?;
            }
            writeln!(f, "; scalar")?;
        }
        Ok(())
    }
}
