//! Vector loops: the sweeps the planner marked `LoopCode::Vector`, as
//! loops over chunks of `W·U` elements that LLVM vectorizes at full width.
//!
//! The planner decided which loops may run lane by lane and gave their
//! lane variables, state identities and merge ops (`passfold_dsl::vector`);
//! this lowering follows `passfold-codegen`'s vector loops with `W` lanes
//! (16 for `f32`, 8 for `f64`: one AVX-512 register) and `U` unrolled
//! copies (4 where the plan unrolls 4, 2 where it unrolls 2 or 3: a power
//! of two, so the lanes merge pairwise), that is `W·U`-lane arrays:
//!
//! - Every lane variable is an array `lv{var}: [T; W·U]`. A state's lanes
//!   start at its identity, except lane 0, which starts at the state's
//!   value before the loop; temporaries start at 0.
//! - Each step takes a slice `c{k}` of `W·U` elements of every tensor the
//!   body reads or writes along the index (one bounds check per step), and
//!   runs the body once per lane `l` in a `for l in 0..W·U` loop: varying
//!   values are computed per lane, values that do not vary are computed
//!   once before the loop (`u{node}`). An `if` becomes a mask: every
//!   assignment under it keeps the old value in lanes whose condition
//!   fails (a select), so the lane loop has no branches.
//! - After the steps the lanes merge pairwise (lane `l` with `l + W·U/2`,
//!   then `l + W·U/4`, …: one loop per level) by the plan's merge ops
//!   evaluated as scalar code, lane 0 becomes the scalar state, and a
//!   scalar tail runs the body on the last `len mod W·U` elements.
//! - A loop the plan runs backward (`VectorLoop::backward`) runs its tail
//!   first, then its steps from the end of the range down.
//! - A loop without states (a map, such as softmax's division) needs no
//!   lanes: it runs element by element over whole-range slices of its
//!   tensors, which LLVM vectorizes itself. (As a chunk loop, its small lane
//!   loop would be unrolled and the chunk loop vectorized with gathers.)
//!
//! Loops the JIT would vectorize but this lowering cannot prove safe as
//! chunks (a shifted outer subscript, a gather or reduction among the
//! values computed before the loop, a stored tensor read at another
//! element) run as scalar code instead; the result is the same up to the
//! order of the sums.

use crate::AotError;
use crate::body::{
    Body, LaneCx, affine_expr, float_lit, lane_var_ident, layout_idents, rust_type, tensor_ident,
    uniform_ident, var_ident,
};
use passfold_dsl::lir::{Op, value_roots};
use passfold_dsl::vector::{VectorLoop, varying};
use passfold_dsl::{Affine, ExtentId, Handle, Index, Node, ScalarType, TensorId};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// A slice of `W·U` consecutive elements of a tensor, read (and maybe
/// written) by a vector loop.
#[derive(Clone, PartialEq)]
struct Chunk {
    tensor: TensorId,
    /// The subscripts of the dimensions before the last.
    outer: Vec<Affine>,
    mutable: bool,
}

impl Body<'_> {
    /// Lowers a vector loop, or returns `None` when it must run as scalar code.
    pub(crate) fn vector_loop(
        &self,
        index: ExtentId,
        start: &TokenStream,
        end: &TokenStream,
        v: &VectorLoop,
        body: &[Op],
    ) -> Result<Option<TokenStream>, AotError> {
        if !v.elem.is_float() || !ops_ok(body, false) {
            return Ok(None);
        }
        let mut lane_mask = vec![false; self.program.vars.len()];
        for var in &v.lane_vars {
            if let Some(m) = lane_mask.get_mut(var.0 as usize) {
                *m = true;
            }
        }
        let vary = varying(self.k, index, &lane_mask);
        let mut roots = Vec::new();
        value_roots(body, &mut roots);
        let Some((uniform, mut chunks, chunk_of)) = self.classify(index, &vary, &roots) else {
            return Ok(None);
        };
        // Stores: each stored tensor is one mutable chunk, read at the
        // same element.
        let mut stores = Vec::new();
        collect_stores(body, &mut stores);
        for (t, idx, value) in &stores {
            self.check_store(*t, idx, *value)?;
            if idx.last() != Some(&index) || idx[..idx.len() - 1].contains(&index) {
                return Ok(None);
            }
            let outer: Vec<Affine> = idx[..idx.len() - 1]
                .iter()
                .map(|e| Affine::var(*e))
                .collect();
            let same_tensor: Vec<usize> = (0..chunks.len())
                .filter(|&c| chunks[c].tensor == *t)
                .collect();
            match same_tensor.as_slice() {
                [] => chunks.push(Chunk {
                    tensor: *t,
                    outer,
                    mutable: true,
                }),
                [c] if chunks[*c].outer == outer => chunks[*c].mutable = true,
                _ => return Ok(None),
            }
        }
        let w = self.lanes(v.elem);
        let store_chunk = chunks
            .iter()
            .enumerate()
            .filter(|(_, c)| c.mutable)
            .map(|(i, c)| (c.tensor, i))
            .collect();
        // Without states every element is independent: one loop over
        // whole-range slices, which LLVM vectorizes itself. (Chunk loops
        // with a small body get their lane loop unrolled and the chunk
        // loop vectorized with gathers and scatters.)
        let flat = v.states.is_empty();
        let cx = LaneCx {
            vary,
            chunk_of,
            store_chunk,
            flat,
        };

        let mut hoisted = TokenStream::new();
        for h in &uniform {
            let x = self.value(*h, None)?;
            let u = uniform_ident(*h);
            let ty = rust_type(self.k.ty(*h));
            hoisted.extend(quote!(let #u: #ty = #x;));
        }
        if flat {
            return self
                .flat_loop(start, end, &hoisted, &chunks, body, &cx, v)
                .map(Some);
        }
        // `copies` vectors per step, each lane array `copies·W` lanes long:
        // independent accumulators hide the latency of a state's update (a
        // NaN-correct max is a compare and a blend per step).
        let copies = if v.unroll >= 4 { 4 } else { 1 };
        let w = w * copies;
        // Lane arrays.
        let mut arrays = TokenStream::new();
        for var in &v.lane_vars {
            let decl = &self.program.vars[var.0 as usize];
            let ty = rust_type(decl.ty);
            let lv = lane_var_ident(var.0);
            let state = v.states.iter().find(|s| s.0 == *var);
            let identity = match decl.ty {
                ScalarType::F32 | ScalarType::F64 => float_lit(decl.ty, state.map_or(0.0, |s| s.2)),
                _ => return Ok(None),
            };
            arrays.extend(quote!(let mut #lv: [#ty; #w] = [#identity; #w];));
            if state.is_some() {
                let s = var_ident(var.0);
                arrays.extend(quote!(#lv[0] = #s;));
            }
        }
        // Chunk slices at `pos`.
        let mut slices = TokenStream::new();
        for (c, chunk) in chunks.iter().enumerate() {
            let t = chunk.tensor.0 as usize;
            let name = tensor_ident(t);
            let mut terms = Vec::new();
            for (d, a) in chunk.outer.iter().enumerate() {
                let (o, _, s) = layout_idents(t, d);
                let a = affine_expr(a);
                terms.push(quote!((#a + #o) * #s));
            }
            terms.push(quote!(pos));
            let ident = format_ident!("c{}", c);
            let base = format_ident!("base{}", c);
            slices.extend(quote!(let #base = (#(#terms)+*) as usize;));
            if chunk.mutable {
                slices.extend(quote!(let #ident = &mut #name[#base..#base + #w];));
            } else {
                slices.extend(quote!(let #ident = &#name[#base..#base + #w];));
            }
        }
        let lane_body = self.lane_ops(body, &cx, None, &mut 0)?;
        let merge = self.merge(v, w)?;
        let tail = self.ops(body)?;
        let i = crate::body::index_ident(index);
        let w64 = w as i64;
        if v.backward {
            // The tail first, then whole steps from the end down.
            return Ok(Some(quote! {
                {
                    let start: i64 = #start;
                    let end: i64 = #end;
                    let count = if end > start { end - start } else { 0 };
                    let main_end = start + (count - count % #w64);
                    for #i in main_end..end {
                        #tail
                    }
                    #hoisted
                    #arrays
                    let mut pos: i64 = main_end;
                    while pos > start {
                        pos -= #w64;
                        #slices
                        for l in 0..#w {
                            #lane_body
                        }
                    }
                    #merge
                }
            }));
        }
        Ok(Some(quote! {
            {
                let start: i64 = #start;
                let end: i64 = #end;
                let count = if end > start { end - start } else { 0 };
                let main_end = start + (count - count % #w64);
                #hoisted
                #arrays
                let mut pos: i64 = start;
                while pos < main_end {
                    #slices
                    for l in 0..#w {
                        #lane_body
                    }
                    pos += #w64;
                }
                #merge
                for #i in main_end..end {
                    #tail
                }
            }
        }))
    }

    /// The uniform nodes the varying values need (hoisted before the loop),
    /// and the chunk of every varying load; `None` when a value cannot run
    /// lane by lane here.
    #[allow(clippy::type_complexity)]
    fn classify(
        &self,
        index: ExtentId,
        vary: &[bool],
        roots: &[Handle<Node>],
    ) -> Option<(Vec<Handle<Node>>, Vec<Chunk>, Vec<Option<usize>>)> {
        let mut uniform = Vec::new();
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut chunk_of = vec![None; self.k.nodes.len()];
        let mut seen = vec![false; self.k.nodes.len()];
        let mut stack = roots.to_vec();
        while let Some(h) = stack.pop() {
            if std::mem::replace(&mut seen[h.index()], true) {
                continue;
            }
            if !vary[h.index()] {
                if !self.safe_to_hoist(h) {
                    return None;
                }
                uniform.push(h);
                continue;
            }
            match &self.k.nodes[h] {
                Node::Load {
                    tensor,
                    index: subs,
                } => {
                    let t = self.k.tensor(*tensor);
                    let (last, outer) = subs.split_last()?;
                    let Index::Affine(last) = last else {
                        return None;
                    };
                    if last.as_var() != Some(index) || t.dims.last()?.0 != *last {
                        return None;
                    }
                    let mut affines = Vec::new();
                    for (d, s) in outer.iter().enumerate() {
                        let Index::Affine(a) = s else { return None };
                        if *a != t.dims[d].0 || a.terms.iter().any(|&(e, _)| e == index) {
                            return None;
                        }
                        affines.push(a.clone());
                    }
                    let chunk = Chunk {
                        tensor: *tensor,
                        outer: affines,
                        mutable: false,
                    };
                    let c = match chunks.iter().position(|c| *c == chunk) {
                        Some(c) => c,
                        None => {
                            chunks.push(chunk);
                            chunks.len() - 1
                        }
                    };
                    chunk_of[h.index()] = Some(c);
                }
                Node::IndexValue(_) | Node::Reduce { .. } => return None,
                Node::Cast(to, a) if *to != self.k.ty(*a) => return None,
                Node::Var(_) => {}
                n => stack.extend(n.operands()),
            }
        }
        uniform.sort_by_key(|h| h.index());
        Some((uniform, chunks, chunk_of))
    }

    /// Whether a value can be computed before a loop that may run zero
    /// times: it cannot fail (no gathers) and is cheap (no reductions).
    fn safe_to_hoist(&self, root: Handle<Node>) -> bool {
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            match &self.k.nodes[h] {
                Node::Reduce { .. } => return false,
                Node::Load { index, .. } if index.iter().any(|i| matches!(i, Index::Gather(_))) => {
                    return false;
                }
                n => stack.extend(n.operands()),
            }
        }
        true
    }

    /// The body for lane `l`; `mask` is the condition of the enclosing `if`s.
    fn lane_ops(
        &self,
        ops: &[Op],
        cx: &LaneCx,
        mask: Option<&proc_macro2::Ident>,
        masks: &mut usize,
    ) -> Result<TokenStream, AotError> {
        let mut out = TokenStream::new();
        for op in ops {
            match op {
                Op::Set { var, value } => {
                    let x = self.value(*value, Some(cx))?;
                    let lv = lane_var_ident(var.0);
                    let lane = if cx.flat { quote!(#lv) } else { quote!(#lv[l]) };
                    out.extend(match mask {
                        Some(m) => quote!(#lane = rt::sel(#m, #x, #lane);),
                        None => quote!(#lane = #x;),
                    });
                }
                Op::Store { tensor, value, .. } => {
                    let x = self.value(*value, Some(cx))?;
                    // The store's chunk is the mutable chunk of its tensor.
                    let Some(&(_, c)) = cx.store_chunk.iter().find(|(t, _)| t == tensor) else {
                        return Err(self.unsupported(*value, "a store without a chunk"));
                    };
                    let c = format_ident!("c{}", c);
                    out.extend(quote!(#c[l] = #x;));
                }
                Op::If { cond, then } => {
                    let c = self.value(*cond, Some(cx))?;
                    let m = format_ident!("m{}", *masks);
                    *masks += 1;
                    out.extend(match mask {
                        Some(outer) => quote!(let #m: bool = #outer & #c;),
                        None => quote!(let #m: bool = #c;),
                    });
                    out.extend(self.lane_ops(then, cx, Some(&m), masks)?);
                }
                Op::Loop { .. } | Op::Barrier | Op::Toeplitz { .. } => {
                    return Err(AotError::Unsupported {
                        what: "an inner loop, a barrier or a Toeplitz product in vector code"
                            .into(),
                        span: Default::default(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// A loop without states: whole-range slices of every chunk's tensor,
    /// lane variables as scalar temporaries, and one element per iteration.
    #[allow(clippy::too_many_arguments)]
    fn flat_loop(
        &self,
        start: &TokenStream,
        end: &TokenStream,
        hoisted: &TokenStream,
        chunks: &[Chunk],
        body: &[Op],
        cx: &LaneCx,
        v: &VectorLoop,
    ) -> Result<TokenStream, AotError> {
        let mut temps = TokenStream::new();
        for var in &v.lane_vars {
            let decl = &self.program.vars[var.0 as usize];
            let ty = rust_type(decl.ty);
            let lv = lane_var_ident(var.0);
            let zero = float_lit(decl.ty, 0.0);
            temps.extend(quote!(let mut #lv: #ty = #zero;));
        }
        let mut slices = TokenStream::new();
        for (c, chunk) in chunks.iter().enumerate() {
            let t = chunk.tensor.0 as usize;
            let name = tensor_ident(t);
            let mut terms = Vec::new();
            for (d, a) in chunk.outer.iter().enumerate() {
                let (o, _, s) = layout_idents(t, d);
                let a = affine_expr(a);
                terms.push(quote!((#a + #o) * #s));
            }
            terms.push(quote!(start));
            let ident = format_ident!("c{}", c);
            let base = format_ident!("base{}", c);
            slices.extend(quote!(let #base = (#(#terms)+*) as usize;));
            if chunk.mutable {
                slices.extend(quote!(let #ident = &mut #name[#base..#base + count];));
            } else {
                slices.extend(quote!(let #ident = &#name[#base..#base + count];));
            }
        }
        let lane_body = self.lane_ops(body, cx, None, &mut 0)?;
        let range = if v.backward {
            quote!((0..count).rev())
        } else {
            quote!(0..count)
        };
        Ok(quote! {
            {
                let start: i64 = #start;
                let end: i64 = #end;
                let count = if end > start { (end - start) as usize } else { 0 };
                #hoisted
                #temps
                #slices
                for l in #range {
                    #lane_body
                }
            }
        })
    }

    /// Merges the lanes of every state into lane 0, then into the scalar state.
    fn merge(&self, v: &VectorLoop, w: usize) -> Result<TokenStream, AotError> {
        if v.states.is_empty() {
            return Ok(TokenStream::new());
        }
        let merge_ops = self.ops(&v.merge)?;
        let mut load = TokenStream::new();
        let mut write = TokenStream::new();
        let mut finish = TokenStream::new();
        for (state, twin, _) in &v.states {
            let (s, t, lv) = (
                var_ident(state.0),
                var_ident(twin.0),
                lane_var_ident(state.0),
            );
            load.extend(quote!(#s = #lv[l]; #t = #lv[l + shift];));
            write.extend(quote!(#lv[l] = #s;));
            finish.extend(quote!(#s = #lv[0];));
        }
        // One loop per level with a constant trip count, so LLVM can
        // vectorize the merges of each level.
        let mut levels = TokenStream::new();
        let mut shift = w / 2;
        while shift > 0 {
            levels.extend(quote! {
                {
                    let shift: usize = #shift;
                    for l in 0..#shift {
                        #load
                        #merge_ops
                        #write
                    }
                }
            });
            shift /= 2;
        }
        Ok(quote! {
            #levels
            #finish
        })
    }
}

/// Whether a vector loop's body has no inner loops, barriers or stores
/// under a condition.
fn ops_ok(ops: &[Op], in_if: bool) -> bool {
    ops.iter().all(|op| match op {
        Op::Loop { .. } | Op::Barrier | Op::Toeplitz { .. } => false,
        Op::If { then, .. } => ops_ok(then, true),
        Op::Store { .. } => !in_if,
        Op::Set { .. } => true,
    })
}

fn collect_stores(ops: &[Op], out: &mut Vec<(TensorId, Vec<ExtentId>, Handle<Node>)>) {
    for op in ops {
        match op {
            Op::Store {
                tensor,
                index,
                value,
            } => out.push((*tensor, index.clone(), *value)),
            Op::If { then, .. } => collect_stores(then, out),
            _ => {}
        }
    }
}
