//! The ahead-of-time back end: a plan's loop program as safe Rust source.
//!
//! [`emit`] turns a [`Plan`] into a self-contained Rust module (it uses
//! only `core` and `std`) that LLVM compiles with the rest of the crate:
//!
//! - `call(extents.., tensors.., params..)` validates every extent and
//!   buffer length (no arithmetic on unchecked sizes, no panics on bad
//!   input), allocates the plan's scratch tensors, and runs the body at the
//!   best instruction level of the CPU: AVX-512, AVX2+FMA or the x86-64
//!   baseline (chosen once, `is_x86_feature_detected!`), NEON on aarch64.
//!   `level()` reports the choice.
//! - The body is one `#[inline(always)]` function generic over `FMA`,
//!   instantiated inside a `#[target_feature]` wrapper per level, so one
//!   binary built for generic x86-64 runs full-width code where the CPU
//!   has it. Calling a wrapper is the only `unsafe` in the module; its
//!   `SAFETY` comment names the feature check that makes it sound.
//! - Loops follow `passfold_dsl::interp::interpret_program` (`body.rs`);
//!   sweeps the planner vectorized are chunked lane loops with arrays of
//!   accumulators merged by the plan's combine laws (`lanes.rs`); the math
//!   is the branch-free polynomial code of `rt.rs`, emitted into the module.
//!
//! The AOT module runs the plan single-threaded over all rows; split-row
//! plans (`Op::Barrier`) are refused. Values agree with the interpreter
//! within the tolerances the JIT's vector code meets (sums are
//! reassociated across lanes, `exp`/`log` are polynomials), not bit for bit.
//!
//! Dependencies point one way: `passfold-dsl` ← `passfold-aot` ←
//! `passfold-macros` and the `passfold` tool.

mod body;
mod lanes;
pub mod rt;

use body::{Body, layout_idents, rust_type, tensor_ident};
use passfold_dsl::{Kernel, Plan, ScalarType, Span, TensorKind};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// The source of [`rt`], emitted into every generated module.
pub const RT_SOURCE: &str = include_str!("rt.rs");

/// Lanes per vector-loop step for `f32` (one 512-bit register).
pub const LANES_F32: usize = 16;
/// Lanes per vector-loop step for `f64`.
pub const LANES_F64: usize = 8;

/// Why a plan cannot be emitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AotError {
    /// The plan splits rows across threads (barriers): the AOT module runs
    /// the single-threaded plan only.
    #[error("split-row plans (barriers) are not supported by the AOT back end")]
    SplitRow,
    /// An operation the back end does not lower (the JIT refuses it too).
    #[error("the AOT back end does not support {what}")]
    Unsupported {
        /// What.
        what: String,
        /// Where in the kernel's source.
        span: Span,
    },
    /// The generated tokens do not parse as Rust (a bug).
    #[error("the generated Rust does not parse: {0}")]
    Syntax(String),
}

/// Emission choices.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The kernel's source text: gather errors then carry line and column.
    pub source: Option<String>,
    /// Also emit `call_f64` (every buffer as `Vec<f64>`), for tests.
    pub test_entry: bool,
}

/// The module `pub mod <kernel name> { .. }` for `plan`.
pub fn emit(plan: &Plan, opts: &Options) -> Result<TokenStream, AotError> {
    let items = emit_items(plan, opts)?;
    let name = format_ident!("{}", plan.kernel.name);
    let doc = format!(
        "The kernel `{}`, compiled ahead of time by passfold (single-threaded plan).",
        plan.kernel.name
    );
    Ok(quote! {
        #[doc = #doc]
        #[allow(non_snake_case, non_upper_case_globals, unused, unused_mut, unused_assignments, unused_parens, unused_braces, clippy::all)]
        pub mod #name {
            #items
        }
    })
}

/// [`emit`], formatted by prettyplease.
pub fn emit_pretty(plan: &Plan, opts: &Options) -> Result<String, AotError> {
    let tokens = emit(plan, opts)?;
    let file: syn::File = syn::parse2(tokens).map_err(|e| AotError::Syntax(e.to_string()))?;
    Ok(prettyplease::unparse(&file))
}

/// The items of the module [`emit`] wraps: `call`, `call_at`, `level`,
/// `Error`, `PLAN`, the body and its wrappers, and `rt`.
pub fn emit_items(plan: &Plan, opts: &Options) -> Result<TokenStream, AotError> {
    let k = &plan.kernel;
    let site_list = sites(k);
    let mut site_of = vec![None; k.nodes.len()];
    for (i, h) in site_list.iter().enumerate() {
        site_of[h.index()] = Some(i);
    }
    let b = Body {
        k,
        program: &plan.program,
        site_of,
        prechecked: Default::default(),
        sliced: Default::default(),
        lanes_f32: LANES_F32,
        lanes_f64: LANES_F64,
        scalar: plan.scalar,
    };
    let ops = b.ops(&plan.program.body)?;
    let n_ext = k.extents.len();
    let ext_idents: Vec<_> = (0..n_ext).map(|e| format_ident!("e{}", e)).collect();

    // The body's parameters: every tensor (temporaries too), then params.
    let mut body_params = Vec::new();
    let mut body_args = Vec::new();
    for (t, tensor) in k.tensors.iter().enumerate() {
        let name = tensor_ident(t);
        let ty = rust_type(tensor.ty);
        body_params.push(if tensor.kind == TensorKind::Input {
            quote!(#name: &[#ty])
        } else {
            quote!(#name: &mut [#ty])
        });
        body_args.push(quote!(#name));
    }
    for (p, param) in k.params.iter().enumerate() {
        let name = format_ident!("p{}", p);
        let ty = rust_type(param.ty);
        body_params.push(quote!(#name: #ty));
        body_args.push(quote!(#name));
    }
    let layouts = layout_lets(k);
    let vars = plan.program.vars.iter().enumerate().map(|(v, var)| {
        let name = format_ident!("v{}", v);
        let ty = rust_type(var.ty);
        let zero = match var.ty {
            ScalarType::F32 => quote!(0.0f32),
            ScalarType::F64 => quote!(0.0f64),
            ScalarType::I32 => quote!(0i32),
            ScalarType::Bool => quote!(false),
        };
        quote!(let mut #name: #ty = #zero;)
    });
    let rt: TokenStream = RT_SOURCE
        .parse()
        .map_err(|e: proc_macro2::LexError| AotError::Syntax(e.to_string()))?;
    let api = api(plan, opts, &site_list)?;
    Ok(quote! {
        #api

        /// The plan's loop program; returns 0, or `1 + site` when the gather
        /// at site `site` reads outside its tensor.
        #[inline(always)]
        fn body<const FMA: bool>(ext: [i64; #n_ext], #(#body_params),*) -> i32 {
            let [#(#ext_idents),*] = ext;
            #layouts
            #(#vars)*
            #ops
            0
        }

        /// The body compiled for AVX-512 (with FMA).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
        fn body_avx512(ext: [i64; #n_ext], #(#body_params),*) -> i32 {
            body::<true>(ext, #(#body_args),*)
        }

        /// The body compiled for AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn body_avx2(ext: [i64; #n_ext], #(#body_params),*) -> i32 {
            body::<true>(ext, #(#body_args),*)
        }

        /// Runs the body at `level` (at most the detected level).
        fn run(level: u8, ext: [i64; #n_ext], #(#body_params),*) -> i32 {
            #[cfg(target_arch = "x86_64")]
            {
                if level >= 3 {
                    // SAFETY: `level` is at most `level_id()`, which is 3 only
                    // when the CPU reports avx512f, avx512vl, avx512bw,
                    // avx512dq, avx2 and fma: every feature `body_avx512` is
                    // compiled for. The body itself is safe code.
                    return unsafe { body_avx512(ext, #(#body_args),*) };
                }
                if level >= 2 {
                    // SAFETY: level 2 or more is detected only with avx2 and
                    // fma, the features `body_avx2` is compiled for.
                    return unsafe { body_avx2(ext, #(#body_args),*) };
                }
            }
            // aarch64 always has NEON and fused multiply-add.
            #[cfg(target_arch = "aarch64")]
            {
                return body::<true>(ext, #(#body_args),*);
            }
            #[allow(unreachable_code)]
            body::<false>(ext, #(#body_args),*)
        }

        /// The detected level: 3 AVX-512, 2 AVX2+FMA, 1 NEON, 0 baseline.
        fn level_id() -> u8 {
            static LEVEL: ::std::sync::OnceLock<u8> = ::std::sync::OnceLock::new();
            *LEVEL.get_or_init(|| {
                #[cfg(target_arch = "x86_64")]
                {
                    let avx2 = ::std::is_x86_feature_detected!("avx2")
                        && ::std::is_x86_feature_detected!("fma");
                    let avx512 = ::std::is_x86_feature_detected!("avx512f")
                        && ::std::is_x86_feature_detected!("avx512vl")
                        && ::std::is_x86_feature_detected!("avx512bw")
                        && ::std::is_x86_feature_detected!("avx512dq");
                    return if avx2 && avx512 { 3 } else if avx2 { 2 } else { 0 };
                }
                #[cfg(target_arch = "aarch64")]
                {
                    return 1;
                }
                #[allow(unreachable_code)]
                0
            })
        }

        /// The instruction level `call` runs at on this CPU: `"avx512"`,
        /// `"avx2+fma"`, `"neon"` or `"baseline"`.
        pub fn level() -> &'static str {
            level_name(level_id())
        }

        /// The name of a level number (see [`call_at`]).
        pub fn level_name(level: u8) -> &'static str {
            match level {
                3 => "avx512",
                2 => "avx2+fma",
                1 => "neon",
                _ => "baseline",
            }
        }

        mod rt {
            #rt
        }
    })
}

/// The gather sites of `kernel` (loads of a tensor without `pad` with a
/// gathered subscript, or a shifted one a plan reads ahead with), in status
/// order: the same numbering as the JIT.
fn sites(k: &Kernel) -> Vec<passfold_dsl::Handle<passfold_dsl::Node>> {
    use passfold_dsl::{Index, Node};
    k.nodes
        .iter()
        .filter_map(|(h, node)| match node {
            Node::Load { tensor, index }
                if k.tensor(*tensor).pad.is_none()
                    && index.iter().enumerate().any(|(d, i)| match i {
                        Index::Gather(_) => true,
                        Index::Affine(a) => *a != k.tensor(*tensor).dims[d].0,
                    }) =>
            {
                Some(h)
            }
            _ => None,
        })
        .collect()
}

/// `(origin, length, stride)` of every dimension of every tensor, computed
/// from the validated extents at the start of the body.
fn layout_lets(k: &Kernel) -> TokenStream {
    let mut out = TokenStream::new();
    for (t, tensor) in k.tensors.iter().enumerate() {
        for (d, dim) in tensor.dims.iter().enumerate() {
            let (o, l, _) = layout_idents(t, d);
            let value = dim_expr(dim, quote!(ext));
            out.extend(
                quote!(let (#o, #l): (i64, i64) = match #value { Some(x) => x, None => (0, 0) };),
            );
        }
        for d in (0..tensor.dims.len()).rev() {
            let (_, _, s) = layout_idents(t, d);
            if d + 1 == tensor.dims.len() {
                out.extend(quote!(let #s: i64 = 1;));
            } else {
                let (_, l_next, s_next) = layout_idents(t, d + 1);
                out.extend(quote!(let #s: i64 = #s_next.wrapping_mul(#l_next);));
            }
        }
    }
    out
}

/// `Option<(origin, length)>` of a dimension at extents `ext`.
fn dim_expr(dim: &passfold_dsl::Dim, ext: TokenStream) -> TokenStream {
    if let Some(e) = dim.0.as_var() {
        let e = e.0 as usize;
        return quote!(Some((0i64, #ext[#e])));
    }
    let terms = dim.0.terms.iter().map(|&(e, c)| {
        let e = e.0 as usize;
        quote!((#e, #c))
    });
    let constant = dim.0.constant;
    quote!(rt::dim_layout(&[#(#terms),*], #constant, &#ext[..]))
}

/// Line and column (1-based) of byte `at` of `src`.
fn line_col(src: &str, at: usize) -> (usize, usize) {
    let before = &src[..at.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |p| before.len() - p - 1)
        + 1;
    (line, col)
}

/// `Error`, `PLAN`, `call`, `call_at` and (optionally) `call_f64`.
fn api(
    plan: &Plan,
    opts: &Options,
    site_list: &[passfold_dsl::Handle<passfold_dsl::Node>],
) -> Result<TokenStream, AotError> {
    let k = &plan.kernel;
    let n_ext = k.extents.len();
    let n_tensors = k.tensors.len();
    let plan_text = plan.to_string();
    let ext_names: Vec<&str> = k.extents.iter().map(|e| e.name.as_str()).collect();
    let ext_params: Vec<_> = k
        .extents
        .iter()
        .map(|e| format_ident!("{}", e.name))
        .collect();

    // Lengths of every tensor.
    let mut len_checks = TokenStream::new();
    let mut len_idents = Vec::new();
    for (t, tensor) in k.tensors.iter().enumerate() {
        let len = format_ident!("__len{}", t);
        let name = &tensor.name;
        let dims = tensor.dims.iter().map(|d| {
            let value = dim_expr(d, quote!(__ext));
            quote!(match #value { Some(d) => d.1, None => return Err(Error::TooLarge { name: #name }) })
        });
        let bytes = tensor.ty.size_bytes() as i64;
        len_checks.extend(quote! {
            let #len: usize = match rt::tensor_len(&[#(#dims),*], #bytes) {
                Some(n) => n,
                None => return Err(Error::TooLarge { name: #name }),
            };
        });
        len_idents.push(len);
    }

    // The typed call's parameters and the body's arguments.
    let mut call_params = Vec::new();
    let mut call_names = Vec::new();
    let mut arg_checks = TokenStream::new();
    let mut temps = TokenStream::new();
    let mut run_args = Vec::new();
    for (t, tensor) in k.tensors.iter().enumerate() {
        let ty = rust_type(tensor.ty);
        let len = &len_idents[t];
        let tname = &tensor.name;
        if tensor.kind == TensorKind::Temp {
            let tmp = format_ident!("__tmp{}", t);
            let zero = match tensor.ty {
                ScalarType::I32 => quote!(0i32),
                ScalarType::Bool => quote!(false),
                _ => quote!(0.0 as #ty),
            };
            // A failed allocation is an error, not an abort.
            temps.extend(quote! {
                let mut #tmp: ::std::vec::Vec<#ty> = ::std::vec::Vec::new();
                if #tmp.try_reserve_exact(#len).is_err() {
                    return Err(Error::Alloc { tensor: #tname, bytes: #len.saturating_mul(::core::mem::size_of::<#ty>()) });
                }
                #tmp.resize(#len, #zero);
            });
            run_args.push(quote!(&mut #tmp));
            continue;
        }
        let ident = format_ident!("{}", tensor.name);
        call_params.push(if tensor.kind == TensorKind::Input {
            quote!(#ident: &[#ty])
        } else {
            quote!(#ident: &mut [#ty])
        });
        call_names.push(quote!(#ident));
        let shape = tensor.dims.iter().map(|d| {
            let value = dim_expr(d, quote!(__ext));
            quote!(match #value { Some(d) => d.1 as usize, None => 0 })
        });
        arg_checks.extend(quote! {
            if #ident.len() != #len {
                return Err(Error::Length {
                    tensor: #tname,
                    shape: ::std::vec![#(#shape),*],
                    expected: #len,
                    found: #ident.len(),
                });
            }
        });
        run_args.push(quote!(#ident));
    }
    let mut param_names = Vec::new();
    for p in &k.params {
        let ident = format_ident!("{}", p.name);
        let ty = rust_type(p.ty);
        call_params.push(quote!(#ident: #ty));
        call_names.push(quote!(#ident));
        param_names.push(ident.clone());
        run_args.push(quote!(#ident));
    }
    let site_tensors: Vec<&str> = site_list
        .iter()
        .map(|h| match &k.nodes[*h] {
            passfold_dsl::Node::Load { tensor, .. } => k.tensor(*tensor).name.as_str(),
            _ => "",
        })
        .collect();
    let site_lines: Vec<usize> = site_list
        .iter()
        .map(|h| {
            opts.source
                .as_deref()
                .map_or(0, |s| line_col(s, k.span(*h).start as usize).0)
        })
        .collect();
    let site_cols: Vec<usize> = site_list
        .iter()
        .map(|h| {
            opts.source
                .as_deref()
                .map_or(0, |s| line_col(s, k.span(*h).start as usize).1)
        })
        .collect();
    let n_sites = site_list.len();

    let signature: Vec<String> = k
        .extents
        .iter()
        .map(|e| format!("{}: usize", e.name))
        .chain(k.arguments().map(|id| {
            let t = k.tensor(id);
            if t.kind == TensorKind::Input {
                format!("{}: &[{}]", t.name, t.ty)
            } else {
                format!("{}: &mut [{}]", t.name, t.ty)
            }
        }))
        .chain(k.params.iter().map(|p| format!("{}: {}", p.name, p.ty)))
        .collect();
    let doc_call = format!(
        "Runs the kernel: `{}({})`. Extents first, then tensors (row-major), then parameters; every length is checked before any code runs.",
        k.name,
        signature.join(", ")
    );
    let doc_plan = format!("The plan this module was generated from:\n\n```text\n{plan_text}```");
    let call_threads = call_threads(
        plan,
        &ext_params,
        &call_params,
        &call_names,
        &len_idents,
        &arg_checks,
    );
    let test_entry = if opts.test_entry {
        test_entry(k, &ext_params, &call_names, &param_names, &len_idents)
    } else {
        TokenStream::new()
    };

    Ok(quote! {
        #[doc = #doc_plan]
        pub const PLAN: &str = #plan_text;

        /// The extents, in the order `call` takes them.
        pub const EXTENTS: [&str; #n_ext] = [#(#ext_names),*];

        /// Why a call was refused or failed.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Error {
            /// An extent or a tensor is too large to address.
            TooLarge {
                /// The extent or tensor.
                name: &'static str,
            },
            /// A buffer's length disagrees with the extents.
            Length {
                /// The tensor.
                tensor: &'static str,
                /// Its shape at these extents.
                shape: ::std::vec::Vec<usize>,
                /// The elements the shape needs.
                expected: usize,
                /// The buffer's length.
                found: usize,
            },
            /// A gathered index fell outside `tensor` (which has no `pad`);
            /// outputs may be partly written.
            GatherOutOfRange {
                /// The tensor read.
                tensor: &'static str,
                /// 1-based line and column of the read in the kernel's source (0 if unknown).
                line: usize,
                /// See `line`.
                col: usize,
            },
            /// Scratch memory for a temporary could not be allocated.
            Alloc {
                /// The temporary.
                tensor: &'static str,
                /// Bytes requested.
                bytes: usize,
            },
            /// `call_f64` got the wrong number of extents, buffers or parameters.
            Arity,
        }

        impl ::core::fmt::Display for Error {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                match self {
                    Error::TooLarge { name } => write!(f, "`{}` is too large: its size overflows", name),
                    Error::Length { tensor, shape, expected, found } => write!(
                        f,
                        "argument `{}` has {} element(s), its shape {:?} needs {}",
                        tensor, found, shape, expected
                    ),
                    Error::GatherOutOfRange { tensor, line, col } => write!(
                        f,
                        "a gathered index is out of range in the read of `{}` at {}:{}",
                        tensor, line, col
                    ),
                    Error::Alloc { tensor, bytes } => write!(f, "cannot allocate {} bytes for temporary `{}`", bytes, tensor),
                    Error::Arity => write!(f, "wrong number of extents, buffers or parameters"),
                }
            }
        }

        impl ::std::error::Error for Error {}

        const SITE_TENSORS: [&str; #n_sites] = [#(#site_tensors),*];
        const SITE_LINES: [usize; #n_sites] = [#(#site_lines),*];
        const SITE_COLS: [usize; #n_sites] = [#(#site_cols),*];

        fn extent(value: usize, name: &'static str) -> Result<i64, Error> {
            match i64::try_from(value) {
                Ok(v) => Ok(v),
                Err(_) => Err(Error::TooLarge { name }),
            }
        }

        /// The element count of every tensor (arguments and scratch) at `__ext`.
        fn lengths(__ext: &[i64; #n_ext]) -> Result<[usize; #n_tensors], Error> {
            #len_checks
            Ok([#(#len_idents),*])
        }

        #[doc = #doc_call]
        #[allow(clippy::too_many_arguments)]
        pub fn call(#(#ext_params: usize,)* #(#call_params),*) -> Result<(), Error> {
            call_at(level_id(), #(#ext_params,)* #(#call_names),*)
        }

        /// [`call`] at instruction level `level` (3 AVX-512, 2 AVX2+FMA,
        /// 1 NEON, 0 baseline), lowered to what the CPU has: for tests and
        /// benchmarks of each level.
        #[allow(clippy::too_many_arguments)]
        pub fn call_at(level: u8, #(#ext_params: usize,)* #(#call_params),*) -> Result<(), Error> {
            let __level = ::core::cmp::min(level, level_id());
            let __ext: [i64; #n_ext] = [#(extent(#ext_params, #ext_names)?),*];
            let [#(#len_idents),*] = lengths(&__ext)?;
            #arg_checks
            #temps
            let __status = run(__level, __ext, #(#run_args),*);
            if __status == 0 {
                return Ok(());
            }
            let __site = (__status - 1) as usize;
            Err(Error::GatherOutOfRange {
                tensor: SITE_TENSORS.get(__site).copied().unwrap_or(""),
                line: SITE_LINES.get(__site).copied().unwrap_or(0),
                col: SITE_COLS.get(__site).copied().unwrap_or(0),
            })
        }

        #call_threads

        #test_entry
    })
}

/// `call_threads(threads, ...)`: [`call`]'s arguments after a thread count;
/// rows split over scoped threads when the plan's rows are independent and
/// every tensor that has them has them as its outer dimension, so that a
/// range of rows is a contiguous chunk of each such tensor and a smaller
/// call of the same kernel: each thread validates and runs its chunk (with
/// its own temporaries). Tensors without the row index are shared whole
/// (inputs only: every store is at its row). Otherwise (or with one thread,
/// or one row) it is `call`.
fn call_threads(
    plan: &Plan,
    ext_params: &[proc_macro2::Ident],
    call_params: &[TokenStream],
    call_names: &[TokenStream],
    len_idents: &[proc_macro2::Ident],
    arg_checks: &TokenStream,
) -> TokenStream {
    let k = &plan.kernel;
    let doc = "[`call`] with the rows split over up to `threads` threads \
        (scoped threads started per call, the calling thread runs one part): \
        each row is computed as on one thread, so results are identical for \
        every thread count. A kernel whose rows cannot be split into \
        contiguous chunks (`ROWS_SPLIT` is false), or a call with fewer than \
        `SPLIT_MIN_ELEMENTS` elements of those chunks per thread, runs as [`call`].";
    let split_doc = "[`call_threads`] with the least number of elements per thread \
        given instead of `SPLIT_MIN_ELEMENTS` (0: split whenever there are rows to \
        split; for tests and measurements of the split).";
    let split = row_chunks(plan);
    let Some((row, chunked)) = split else {
        return quote! {
            /// Whether [`call_threads`] splits rows over threads.
            pub const ROWS_SPLIT: bool = false;

            #[doc = #doc]
            #[allow(clippy::too_many_arguments)]
            pub fn call_threads(threads: usize, #(#ext_params: usize,)* #(#call_params),*) -> Result<(), Error> {
                let _ = threads;
                call(#(#ext_params,)* #(#call_names),*)
            }

            #[doc = #split_doc]
            #[allow(clippy::too_many_arguments)]
            pub fn call_split(threads: usize, min_elements: usize, #(#ext_params: usize,)* #(#call_params),*) -> Result<(), Error> {
                let _ = (threads, min_elements);
                call(#(#ext_params,)* #(#call_names),*)
            }
        };
    };
    let rows = &ext_params[row.0 as usize];
    let ext_names: Vec<&str> = k.extents.iter().map(|e| e.name.as_str()).collect();
    let n_ext = k.extents.len();
    // Per-row element counts of the chunked tensors, and their splits.
    let mut per_row = TokenStream::new();
    let mut split_off = TokenStream::new();
    let mut part_names = Vec::new();
    let mut rests = TokenStream::new();
    for id in k.arguments() {
        let t = k.tensor(id);
        let ident = format_ident!("{}", t.name);
        if !chunked.contains(&id) {
            part_names.push(quote!(#ident));
            continue;
        }
        let len = &len_idents[id.0 as usize];
        let row_len = format_ident!("__row_{}", t.name);
        let rest = format_ident!("__rest_{}", t.name);
        let part = format_ident!("__part_{}", t.name);
        per_row.extend(quote!(let #row_len: usize = #len / __rows;));
        if t.kind == TensorKind::Input {
            rests.extend(quote!(let mut #rest: &[_] = #ident;));
            split_off.extend(quote! {
                let (#part, __r) = #rest.split_at(__n * #row_len);
                #rest = __r;
            });
        } else {
            rests.extend(quote!(let mut #rest: &mut [_] = #ident;));
            split_off.extend(quote! {
                let (#part, __r) = ::core::mem::take(&mut #rest).split_at_mut(__n * #row_len);
                #rest = __r;
            });
        }
        part_names.push(quote!(#part));
    }
    for p in &k.params {
        let ident = format_ident!("{}", p.name);
        part_names.push(quote!(#ident));
    }
    let part_exts: Vec<TokenStream> = ext_params
        .iter()
        .enumerate()
        .map(|(e, p)| {
            if e == row.0 as usize {
                quote!(__n)
            } else {
                quote!(#p)
            }
        })
        .collect();
    let work: Vec<&proc_macro2::Ident> = chunked
        .iter()
        .map(|id| &len_idents[id.0 as usize])
        .collect();
    quote! {
        /// Whether [`call_threads`] splits rows over threads.
        pub const ROWS_SPLIT: bool = true;

        /// The least number of elements of the row-split tensors per thread
        /// of [`call_threads`] (measured here: 64 rows of 4,096 `f32`, about
        /// 0.1 ms of softmax, ran 1.5× slower on two threads started per
        /// call than on one; 256 rows of 32,000 ran 2.2× faster).
        pub const SPLIT_MIN_ELEMENTS: usize = 1 << 20;

        #[doc = #doc]
        #[allow(clippy::too_many_arguments)]
        pub fn call_threads(threads: usize, #(#ext_params: usize,)* #(#call_params),*) -> Result<(), Error> {
            call_split(threads, SPLIT_MIN_ELEMENTS, #(#ext_params,)* #(#call_names),*)
        }

        #[doc = #split_doc]
        #[allow(clippy::too_many_arguments)]
        pub fn call_split(threads: usize, min_elements: usize, #(#ext_params: usize,)* #(#call_params),*) -> Result<(), Error> {
            if ::core::cmp::min(threads, #rows) <= 1 {
                return call(#(#ext_params,)* #(#call_names),*);
            }
            // Every length checked on the whole call first.
            let __ext: [i64; #n_ext] = [#(extent(#ext_params, #ext_names)?),*];
            let [#(#len_idents),*] = lengths(&__ext)?;
            #arg_checks
            // At least `min_elements` elements of the split tensors per
            // thread: a thread started per call costs tens of microseconds,
            // more than a smaller part saves.
            let __work: usize = 0usize #(.saturating_add(#work))*;
            let __parts = threads
                .min(#rows)
                .min(__work.checked_div(min_elements).unwrap_or(usize::MAX));
            if __parts <= 1 {
                return call(#(#ext_params,)* #(#call_names),*);
            }
            let __rows: usize = #rows;
            #per_row
            #rests
            ::std::thread::scope(|__scope| {
                let mut __handles = ::std::vec::Vec::new();
                let mut __mine = None;
                for __p in 0..__parts {
                    let __n = __rows * (__p + 1) / __parts - __rows * __p / __parts;
                    #split_off
                    if __p + 1 == __parts {
                        __mine = Some(call(#(#part_exts,)* #(#part_names),*));
                    } else {
                        __handles.push(__scope.spawn(move || call(#(#part_exts,)* #(#part_names),*)));
                    }
                }
                let mut __result = __mine.unwrap_or(Ok(()));
                for __h in __handles {
                    let __r = match __h.join() {
                        Ok(r) => r,
                        Err(panic) => ::std::panic::resume_unwind(panic),
                    };
                    if __result.is_ok() {
                        __result = __r;
                    }
                }
                __result
            })
        }
    }
}

/// The row extent of `plan` and the argument tensors split by it, when
/// every range of rows is a smaller call: [`Plan::row_extent`] exists, every
/// argument that mentions it has it as its plain outer dimension (and
/// nowhere else), every load of such a tensor reads it at the row itself,
/// and no argument without rows is written.
fn row_chunks(plan: &Plan) -> Option<(passfold_dsl::ExtentId, Vec<passfold_dsl::TensorId>)> {
    use passfold_dsl::{Index, Node};
    let k = &plan.kernel;
    let row = plan.row_extent()?;
    let mentions = |a: &passfold_dsl::Affine| a.terms.iter().any(|&(e, _)| e == row);
    let mut chunked = Vec::new();
    for id in k.arguments() {
        let t = k.tensor(id);
        let uses = t.dims.iter().any(|d| mentions(&d.0));
        if !uses {
            if t.kind != TensorKind::Input {
                return None;
            }
            continue;
        }
        let outer_is_row = t.dims.first().is_some_and(|d| d.0.as_var() == Some(row));
        if !outer_is_row || t.dims[1..].iter().any(|d| mentions(&d.0)) {
            return None;
        }
        chunked.push(id);
    }
    for (_, node) in k.nodes.iter() {
        if let Node::Load { tensor, index } = node
            && chunked.contains(tensor)
        {
            match index.first() {
                Some(Index::Affine(a)) if a.as_var() == Some(row) => {}
                _ => return None,
            }
            if index[1..]
                .iter()
                .any(|i| matches!(i, Index::Affine(a) if mentions(a)))
            {
                return None;
            }
        }
    }
    Some((row, chunked))
}

/// `call_f64(level, extents, args, params)`: the test harness's entry,
/// every buffer as `f64` (the interpreter's convention; outputs may be empty).
fn test_entry(
    k: &Kernel,
    ext_params: &[proc_macro2::Ident],
    _call_names: &[TokenStream],
    param_names: &[proc_macro2::Ident],
    len_idents: &[proc_macro2::Ident],
) -> TokenStream {
    let n_ext = k.extents.len();
    let args: Vec<_> = k.arguments().collect();
    let n_args = args.len();
    let n_params = k.params.len();
    let ext_names: Vec<&str> = k.extents.iter().map(|e| e.name.as_str()).collect();
    let ext_indices = 0..n_ext;
    let mut converts = TokenStream::new();
    let mut passes = Vec::new();
    let mut backs = TokenStream::new();
    for (a, id) in args.iter().enumerate() {
        let t = k.tensor(*id);
        let buf = format_ident!("__buf{}", a);
        let ty = rust_type(t.ty);
        let len = &len_idents[id.0 as usize];
        converts.extend(quote! {
            let mut #buf: ::std::vec::Vec<#ty> = if args[#a].is_empty() {
                ::std::vec![Default::default(); #len]
            } else {
                args[#a].iter().map(|v| *v as #ty).collect()
            };
        });
        if t.kind == TensorKind::Input {
            passes.push(quote!(&#buf));
        } else {
            passes.push(quote!(&mut #buf));
            backs.extend(quote!(args[#a] = #buf.iter().map(|v| *v as f64).collect();));
        }
    }
    let params = k.params.iter().enumerate().map(|(p, param)| {
        let name = &param_names[p];
        let ty = rust_type(param.ty);
        quote!(let #name: #ty = params[#p] as #ty;)
    });
    quote! {
        /// [`call_at`] on `f64` buffers in `Kernel::arguments` order
        /// (outputs may be empty), for differential tests; with `threads`
        /// above 1, [`call_split`] at any size (at the detected level).
        #[doc(hidden)]
        pub fn call_f64(
            level: u8,
            threads: usize,
            extents: &[i64],
            args: &mut [::std::vec::Vec<f64>],
            params: &[f64],
        ) -> Result<(), Error> {
            if extents.len() != #n_ext || args.len() != #n_args || params.len() != #n_params {
                return Err(Error::Arity);
            }
            #(
                let #ext_params: usize = match usize::try_from(extents[#ext_indices]) {
                    Ok(v) => v,
                    Err(_) => return Err(Error::TooLarge { name: #ext_names }),
                };
            )*
            let __ext: [i64; #n_ext] = [#(#ext_params as i64),*];
            let [#(#len_idents),*] = lengths(&__ext)?;
            #converts
            #(#params)*
            let __result = if threads > 1 {
                call_split(threads, 0, #(#ext_params,)* #(#passes,)* #(#param_names),*)
            } else {
                call_at(level, #(#ext_params,)* #(#passes,)* #(#param_names),*)
            };
            #backs
            __result
        }
    }
}
