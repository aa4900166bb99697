//! `kernel!`: passfold kernels checked when the crate compiles.
//!
//! ```ignore
//! passfold::kernel! {
//!     kernel softmax(x: f32[b, i]) -> (y: f32[b, i]) {
//!         m[b] = max[i](x[b, i]);
//!         s[b] = sum[i](exp(x[b, i] - m[b]));
//!         y[b, i] = exp(x[b, i] - m[b]) / s[b];
//!     }
//! }
//! // expands to a unit struct `softmax` with
//! // fn call(b: usize, i: usize, x: &[f32], y: &mut [f32]) -> Result<(), passfold::Error>
//! ```
//!
//! The macro runs the same front end as the run-time API (`passfold_dsl`:
//! parse, check, plan) on the kernel text, so a malformed kernel is a
//! compile error at the offending token with the run-time checker's
//! message. The tokens are turned back into text (token by token, keeping
//! joint punctuation joint) with a table from each token's byte range to
//! its span, through which diagnostics are mapped back to the source.
//!
//! The generated item has one `usize` argument per extent (in declaration
//! order), then one argument per tensor argument in the kernel's order
//! (`&[T]` for inputs, `&mut [T]` for in-place arguments and outputs), then
//! one per parameter (`f32`, `f64` or `i32`). The plan computed here is
//! embedded (`PLAN_DATA`, JSON); the first call reads it back and
//! JIT-compiles it through the process-wide cache, without parsing or
//! planning; every call validates lengths and runs machine code. A leading
//! `#[extents(d = 128, ...)]` bakes those extents into the code: the call
//! then takes only the others. `#[consts(k = 4, ...)]` gives the kernel's
//! `const` parameters their values, folded into the plan at compile time.
//! `#[aot]` selects the ahead-of-time back end instead (`expand_aot`): the
//! same struct and `call`, running the Rust `passfold_aot` generates from the
//! plan (single-threaded, dispatched by CPU level; `level()` names it).
//! Structure: parse → check → plan (here) → generate (`expand` or
//! `expand_aot`), so a second back end replaces only the generation.

use proc_macro::TokenStream;
use proc_macro2::{Delimiter, Span, TokenStream as Tokens, TokenTree};
use quote::{format_ident, quote};

/// See the crate docs.
#[proc_macro]
pub fn kernel(input: TokenStream) -> TokenStream {
    let input = Tokens::from(input);
    let (fixed, consts, aot, input) = match attributes(input) {
        Ok(x) => x,
        Err(e) => return e.to_compile_error().into(),
    };
    let (text, spans) = to_text(input);
    let opts = passfold_dsl::LowerOptions {
        consts: consts.iter().map(|(n, v, _)| (n.clone(), *v)).collect(),
        ..Default::default()
    };
    // The front end lexes text and reads byte offsets from spans, which
    // only proc-macro2's own implementation has: use it while checking, and
    // the compiler's again for the output.
    proc_macro2::fallback::force();
    let checked = passfold_dsl::check(&text, &opts);
    let checked = checked.map(|k| {
        let plan = passfold_dsl::plan(&k, Default::default());
        let json = serde_json::to_string(&plan).unwrap_or_default();
        (k, (plan.to_string(), json))
    });
    proc_macro2::fallback::unforce();
    match checked.map(|(k, plan)| (k, plan)) {
        Ok((kernel, plan)) => {
            for (name, _, span) in &fixed {
                if !kernel.extents.iter().any(|e| &e.name == name) {
                    let msg = format!("the kernel has no extent `{name}`");
                    return syn::Error::new(*span, msg).to_compile_error().into();
                }
            }
            for (name, _, span) in &consts {
                if !kernel.consts.iter().any(|c| &c.name == name) {
                    let msg = format!("the kernel has no `const` parameter `{name}`");
                    return syn::Error::new(*span, msg).to_compile_error().into();
                }
            }
            let fixed: Vec<(String, i64)> = fixed.into_iter().map(|(n, v, _)| (n, v)).collect();
            if aot {
                // The plan is planned again outside the forced fallback:
                // the AOT tokens must be the compiler's own. Its code has
                // full-width vectors, which the cost model weighs.
                let plan = passfold_dsl::plan(
                    &kernel,
                    passfold_dsl::PlanOptions {
                        wide: true,
                        ..Default::default()
                    },
                );
                return match expand_aot(&text, &kernel, &plan, &fixed) {
                    Ok(tokens) => tokens.into(),
                    Err(e) => syn::Error::new(Span::call_site(), e.to_string())
                        .to_compile_error()
                        .into(),
                };
            }
            expand(&text, &kernel, &plan.0, &plan.1, &fixed).into()
        }
        Err(diags) => {
            let mut errors = Tokens::new();
            for d in &diags.0 {
                let span = span_at(&spans, d.span().start as usize);
                errors.extend(syn::Error::new(span, &d.message).to_compile_error());
            }
            errors.into()
        }
    }
}

type Fixed = Vec<(String, i64, Span)>;

/// Leading `#[extents(d = 128, ...)]` (extents baked into the code),
/// `#[consts(k = 4, ...)]` (values of the kernel's `const` parameters,
/// folded into the plan) and `#[aot]` (the ahead-of-time back end)
/// attributes; the rest of the tokens is the kernel.
fn attributes(input: Tokens) -> syn::Result<(Fixed, Fixed, bool, Tokens)> {
    let mut extents = Vec::new();
    let mut consts = Vec::new();
    let mut aot = false;
    let mut rest = input;
    loop {
        let mut iter = rest.clone().into_iter().peekable();
        let Some(TokenTree::Punct(p)) = iter.peek() else {
            break;
        };
        if p.as_char() != '#' {
            break;
        }
        iter.next();
        let Some(TokenTree::Group(g)) = iter.next() else {
            return Err(syn::Error::new(
                Span::call_site(),
                "expected `#[extents(name = length, ...)]` or `#[consts(name = value, ...)]`",
            ));
        };
        let meta: syn::Meta = syn::parse2(g.stream())?;
        match meta {
            syn::Meta::List(list) if list.path.is_ident("extents") => {
                extents.extend(pairs(&list)?);
            }
            syn::Meta::List(list) if list.path.is_ident("consts") => {
                consts.extend(pairs(&list)?);
            }
            syn::Meta::Path(path) if path.is_ident("aot") => aot = true,
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "expected `#[extents(name = length, ...)]`, `#[consts(name = value, ...)]` or `#[aot]`",
                ));
            }
        }
        rest = iter.collect();
    }
    Ok((extents, consts, aot, rest))
}

/// `name = integer, ...` of an attribute.
fn pairs(list: &syn::MetaList) -> syn::Result<Fixed> {
    let pairs = list.parse_args_with(
        syn::punctuated::Punctuated::<syn::MetaNameValue, syn::Token![,]>::parse_terminated,
    )?;
    let mut fixed = Vec::new();
    for pair in pairs {
        let name = pair
            .path
            .get_ident()
            .ok_or_else(|| syn::Error::new_spanned(&pair.path, "expected a name"))?
            .to_string();
        let syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(len),
            ..
        }) = &pair.value
        else {
            return Err(syn::Error::new_spanned(&pair.value, "expected an integer"));
        };
        let span = len.span();
        fixed.push((name, len.base10_parse::<i64>()?, span));
    }
    Ok(fixed)
}

/// The tokens as DSL text, and `(start, end, span)` of every token in it.
fn to_text(tokens: Tokens) -> (String, Vec<(usize, usize, Span)>) {
    let mut text = String::new();
    let mut spans = Vec::new();
    write_tokens(tokens, &mut text, &mut spans);
    (text, spans)
}

fn push(text: &mut String, spans: &mut Vec<(usize, usize, Span)>, s: &str, span: Span) {
    let start = text.len();
    text.push_str(s);
    spans.push((start, text.len(), span));
}

fn write_tokens(tokens: Tokens, text: &mut String, spans: &mut Vec<(usize, usize, Span)>) {
    for tt in tokens {
        match tt {
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::None => ("", ""),
                };
                push(text, spans, open, g.span_open());
                text.push(' ');
                write_tokens(g.stream(), text, spans);
                push(text, spans, close, g.span_close());
                text.push(' ');
            }
            TokenTree::Ident(i) => {
                push(text, spans, &i.to_string(), i.span());
                text.push(' ');
            }
            TokenTree::Punct(p) => {
                push(text, spans, &p.as_char().to_string(), p.span());
                if p.spacing() == proc_macro2::Spacing::Alone {
                    text.push(' ');
                }
            }
            TokenTree::Literal(l) => {
                push(text, spans, &l.to_string(), l.span());
                text.push(' ');
            }
        }
    }
}

/// The span of the token at byte `at` of the text (the nearest one before
/// it, e.g. for a missing token at the end).
fn span_at(spans: &[(usize, usize, Span)], at: usize) -> Span {
    spans
        .iter()
        .rev()
        .find(|(start, _, _)| *start <= at)
        .map(|s| s.2)
        .unwrap_or_else(Span::call_site)
}

fn rust_type(ty: passfold_dsl::ScalarType) -> Tokens {
    match ty {
        passfold_dsl::ScalarType::F64 => quote!(f64),
        passfold_dsl::ScalarType::I32 | passfold_dsl::ScalarType::Bool => quote!(i32),
        passfold_dsl::ScalarType::F32 => quote!(f32),
    }
}

/// The typed item for a checked kernel.
fn expand(
    text: &str,
    kernel: &passfold_dsl::Kernel,
    plan_text: &str,
    plan_json: &str,
    fixed: &[(String, i64)],
) -> Tokens {
    use passfold_dsl::TensorKind;
    let name = format_ident!("{}", kernel.name);
    let fixed_len = |name: &str| fixed.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    // Dynamic extents are arguments; fixed ones are constants.
    let extents = extent_args(kernel, fixed);
    let extent_values: Vec<Tokens> = kernel
        .extents
        .iter()
        .map(|e| match fixed_len(&e.name) {
            Some(v) => {
                let v = v as usize;
                quote!(#v)
            }
            None => {
                let id = format_ident!("{}", e.name);
                quote!(#id)
            }
        })
        .collect();
    let fixed_names: Vec<&str> = fixed.iter().map(|(n, _)| n.as_str()).collect();
    let fixed_values: Vec<i64> = fixed.iter().map(|(_, v)| *v).collect();
    let mut arg_decls = Vec::new();
    let mut arg_values = Vec::new();
    let mut arg_names = Vec::new();
    for id in kernel.arguments() {
        let t = kernel.tensor(id);
        let ident = format_ident!("{}", t.name);
        arg_names.push(ident.clone());
        let ty = rust_type(t.ty);
        if t.kind == TensorKind::Input {
            arg_decls.push(quote!(#ident: &[#ty]));
        } else {
            arg_decls.push(quote!(#ident: &mut [#ty]));
        }
        arg_values.push(quote!(::passfold::Data::from(#ident)));
    }
    let mut param_decls = Vec::new();
    let mut param_values = Vec::new();
    let mut param_names = Vec::new();
    for p in &kernel.params {
        let ident = format_ident!("{}", p.name);
        let ty = rust_type(p.ty);
        param_decls.push(quote!(#ident: #ty));
        param_values.push(quote!(#ident as f64));
        param_names.push(ident);
    }
    let parts: Vec<String> = kernel
        .extents
        .iter()
        .filter(|e| fixed_len(&e.name).is_none())
        .map(|e| format!("{}: usize", e.name))
        .chain(kernel.arguments().map(|id| {
            let t = kernel.tensor(id);
            let ty = t.ty.to_string();
            if t.kind == TensorKind::Input {
                format!("{}: &[{ty}]", t.name)
            } else {
                format!("{}: &mut [{ty}]", t.name)
            }
        }))
        .chain(
            kernel
                .params
                .iter()
                .map(|p| format!("{}: {}", p.name, p.ty)),
        )
        .collect();
    let signature = format!("`{}({})`", kernel.name, parts.join(", "));
    let fixed_doc = if fixed.is_empty() {
        String::new()
    } else {
        format!(
            " Compiled for {} (baked into the code; other lengths are refused).",
            fixed
                .iter()
                .map(|(n, v)| format!("`{n}` = {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let consts_doc = if kernel.consts.is_empty() {
        String::new()
    } else {
        format!(
            " Constants folded into the plan at compile time: {}.",
            kernel
                .consts
                .iter()
                .map(|c| format!("`{}` = {}", c.name, c.value))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let doc_call = format!(
        "Runs the kernel: {signature}. Extents first, then tensors (row-major), then parameters.{fixed_doc}{consts_doc}"
    );
    let doc_plan = format!("The plan computed when the crate compiled:\n\n```text\n{plan_text}```");
    let call_fn = call_fn(
        &doc_call,
        &extents,
        &arg_decls,
        &param_decls,
        &arg_names,
        &param_names,
    );
    quote! {
        #[doc = "A passfold kernel checked and planned at compile time (`kernel!`)."]
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, Default)]
        pub struct #name;

        impl #name {
            /// The kernel's text.
            pub const SOURCE: &'static str = #text;
            #[doc = #doc_plan]
            pub const PLAN: &'static str = #plan_text;
            /// The plan itself (JSON), compiled by the first call without
            /// parsing or planning again.
            #[doc(hidden)]
            pub const PLAN_DATA: &'static str = #plan_json;

            /// The compiled kernel (compiled on first use, then cached).
            pub fn compiled() -> ::std::result::Result<::std::sync::Arc<::passfold::CompiledKernel>, ::passfold::Error> {
                Self::compiled_ref().cloned()
            }

            /// The compiled kernel, borrowed from the item's cache.
            fn compiled_ref() -> ::std::result::Result<&'static ::std::sync::Arc<::passfold::CompiledKernel>, ::passfold::Error> {
                static KERNEL: ::std::sync::OnceLock<::std::sync::Arc<::passfold::CompiledKernel>> =
                    ::std::sync::OnceLock::new();
                if let Some(k) = KERNEL.get() {
                    return Ok(k);
                }
                let k = ::passfold::compile_planned(Self::PLAN_DATA, &[#((#fixed_names, #fixed_values)),*])?;
                Ok(KERNEL.get_or_init(|| k))
            }

            #call_fn

            /// [`call`](Self::call) on up to `threads` threads
            /// ([`passfold::CompiledKernel::call_threads`]: rows over threads,
            /// or one long row split by the plan's combine laws).
            #[allow(clippy::too_many_arguments)]
            pub fn call_threads(
                threads: usize,
                #(#extents: usize,)*
                #(#arg_decls,)*
                #(#param_decls,)*
            ) -> ::std::result::Result<(), ::passfold::Error> {
                Self::compiled_ref()?
                    .call_extents(
                        &[#(#extent_values),*],
                        &mut [#(#arg_values),*],
                        &[#(#param_values),*],
                        threads,
                    )
                    .map_err(::passfold::Error::Call)
            }
        }
    }
}

/// The typed item for a checked kernel, compiled ahead of time: the same
/// unit struct and `call` as [`expand`], running the Rust that
/// `passfold_aot` generates from the plan (a private module next to the
/// struct) instead of JIT code; `level()` reports the instruction level
/// the dispatch chose.
fn expand_aot(
    text: &str,
    kernel: &passfold_dsl::Kernel,
    plan: &passfold_dsl::Plan,
    fixed: &[(String, i64)],
) -> Result<Tokens, passfold_aot::AotError> {
    use passfold_dsl::TensorKind;
    let opts = passfold_aot::Options {
        source: Some(text.to_string()),
        test_entry: false,
    };
    let items = passfold_aot::emit_items(plan, &opts)?;
    let name = format_ident!("{}", kernel.name);
    let module = format_ident!("__passfold_aot_{}", kernel.name);
    let fixed_len = |name: &str| fixed.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    let extents = extent_args(kernel, fixed);
    let extent_values: Vec<Tokens> = kernel
        .extents
        .iter()
        .map(|e| match fixed_len(&e.name) {
            Some(v) => {
                let v = v.max(0) as usize;
                quote!(#v)
            }
            None => {
                let id = format_ident!("{}", e.name);
                quote!(#id)
            }
        })
        .collect();
    let mut arg_decls = Vec::new();
    let mut arg_names = Vec::new();
    for id in kernel.arguments() {
        let t = kernel.tensor(id);
        let ident = format_ident!("{}", t.name);
        let ty = rust_type(t.ty);
        arg_decls.push(if t.kind == TensorKind::Input {
            quote!(#ident: &[#ty])
        } else {
            quote!(#ident: &mut [#ty])
        });
        arg_names.push(ident);
    }
    let mut param_decls = Vec::new();
    let mut param_names = Vec::new();
    for p in &kernel.params {
        let ident = format_ident!("{}", p.name);
        let ty = rust_type(p.ty);
        param_decls.push(quote!(#ident: #ty));
        param_names.push(ident);
    }
    let plan_text = plan.to_string();
    let doc_plan = format!("The plan computed when the crate compiled:\n\n```text\n{plan_text}```");
    let doc_call = format!(
        "Runs the kernel compiled ahead of time (on the calling thread, at the best instruction level of the CPU): extents first{}, then tensors (row-major), then parameters. Every length is checked before any code runs.",
        if fixed.is_empty() {
            ""
        } else {
            " (except those fixed by `#[extents]`)"
        }
    );
    let call_fn = call_fn(
        &doc_call,
        &extents,
        &arg_decls,
        &param_decls,
        &arg_names,
        &param_names,
    );
    Ok(quote! {
        #[doc = "A passfold kernel checked, planned and compiled ahead of time (`kernel!` with `#[aot]`)."]
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, Default)]
        pub struct #name;

        #[doc(hidden)]
        #[allow(non_snake_case, non_upper_case_globals, unused, unused_mut, unused_assignments, unused_parens, unused_braces, clippy::all)]
        mod #module {
            #items
        }

        impl #name {
            /// The kernel's text.
            pub const SOURCE: &'static str = #text;
            #[doc = #doc_plan]
            pub const PLAN: &'static str = #plan_text;

            /// The instruction level the calls run at on this CPU:
            /// `"avx512"`, `"avx2+fma"`, `"neon"` or `"baseline"`.
            pub fn level() -> &'static str {
                #module::level()
            }

            #call_fn

            /// [`call`](Self::call) with the rows split over up to `threads`
            /// scoped threads (each row computed as on one thread, so
            /// results are identical for every thread count); kernels whose
            /// rows are not contiguous chunks of every tensor run on one.
            #[allow(clippy::too_many_arguments)]
            pub fn call_threads(
                threads: usize,
                #(#extents: usize,)*
                #(#arg_decls,)*
                #(#param_decls,)*
            ) -> ::std::result::Result<(), ::passfold::Error> {
                #module::call_threads(threads, #(#extent_values,)* #(#arg_names,)* #(#param_names,)*).map_err(|e| {
                    use #module::Error as E;
                    ::passfold::Error::Call(match e {
                        E::TooLarge { name } => ::passfold::CallError::TooLarge { name: name.to_string() },
                        E::Length { tensor, shape, expected, found } => ::passfold::CallError::Length {
                            arg: tensor.to_string(),
                            shape,
                            expected,
                            found,
                        },
                        E::GatherOutOfRange { tensor, line, col } => ::passfold::CallError::GatherOutOfRange {
                            tensor: tensor.to_string(),
                            span: ::std::default::Default::default(),
                            line_col: if line > 0 { Some((line, col)) } else { None },
                        },
                        E::Alloc { tensor, bytes } => ::passfold::CallError::Alloc {
                            tensor: tensor.to_string(),
                            bytes,
                        },
                        E::Arity => ::passfold::CallError::Internal { status: -1 },
                    })
                })
            }
        }
    })
}

/// The typed item's `call`: `call_threads` on one thread, the same in the
/// JIT and the AOT item.
fn call_fn(
    doc: &str,
    extents: &[proc_macro2::Ident],
    arg_decls: &[Tokens],
    param_decls: &[Tokens],
    arg_names: &[proc_macro2::Ident],
    param_names: &[proc_macro2::Ident],
) -> Tokens {
    quote! {
        #[doc = #doc]
        #[allow(clippy::too_many_arguments)]
        pub fn call(
            #(#extents: usize,)*
            #(#arg_decls,)*
            #(#param_decls,)*
        ) -> ::std::result::Result<(), ::passfold::Error> {
            Self::call_threads(1, #(#extents,)* #(#arg_names,)* #(#param_names,)*)
        }
    }
}

/// The extents a generated `call` takes as arguments: those not fixed by
/// `#[extents(..)]`, in declaration order.
fn extent_args(kernel: &passfold_dsl::Kernel, fixed: &[(String, i64)]) -> Vec<proc_macro2::Ident> {
    kernel
        .extents
        .iter()
        .filter(|e| !fixed.iter().any(|(n, _)| n == &e.name))
        .map(|e| format_ident!("{}", e.name))
        .collect()
}

#[cfg(test)]
mod tests {
    //! Snapshots of the expansion, formatted with prettyplease.

    fn expansion(src: &str) -> String {
        let kernel = passfold_dsl::check(src, &Default::default()).expect("checks");
        let plan = passfold_dsl::plan(&kernel, Default::default()).to_string();
        // The embedded JSON is pinned by the round-trip test, not here.
        let file: syn::File =
            syn::parse2(super::expand(src, &kernel, &plan, "{..}", &[])).expect("parses");
        prettyplease::unparse(&file)
    }

    #[test]
    fn expansions() {
        insta::assert_snapshot!(
            "softmax",
            expansion(
                "kernel softmax(x: f32[b, i]) -> (y: f32[b, i]) {
                    m[b] = max[i](x[b, i]);
                    s[b] = sum[i](exp(x[b, i] - m[b]));
                    y[b, i] = exp(x[b, i] - m[b]) / s[b];
                }"
            )
        );
        insta::assert_snapshot!(
            "cross_entropy",
            expansion(
                "kernel cross_entropy(logits: f32[b, i], label: i32[b]) -> (loss: f32[b]) {
                    m[b] = max[i](logits[b, i]);
                    lse[b] = m[b] + log(sum[i](exp(logits[b, i] - m[b])));
                    loss[b] = lse[b] - logits[b, label[b]];
                }"
            )
        );
        insta::assert_snapshot!(
            "rms_norm_in_place_param",
            expansion(
                "kernel rms_norm(x: f32[b, i], g: f32[i], eps: f32) -> (y: f32[b, i]) {
                    r[b] = rsqrt(mean[i](x[b, i] * x[b, i]) + eps);
                    y[b, i] = x[b, i] * r[b] * g[i];
                }"
            )
        );
    }
}
