//! The parser: tokens → [`Ast`].
//!
//! One grammar, read by syn from a `proc_macro2::TokenStream`, serves both
//! run-time text ([`parse`]) and the `kernel!` proc-macro ([`parse_tokens`]).
//!
//! ```text
//! kernel  := "kernel" NAME "(" args ")" ("->" "(" args ")")? "{" stmt* "}"
//! arg     := NAME ":" "mut"? TYPE ("[" expr,* "]")? ("pad" expr)?
//!          | "const" NAME ":" TYPE ("=" expr)?
//! stmt    := NAME ("[" NAME,* "]")? "=" expr ";"
//! expr    := or;  or := and ("||" and)*;  and := cmp ("&&" cmp)*
//! cmp     := add (("<" | "<=" | ">" | ">=" | "==" | "!=") add)?
//! add     := mul (("+" | "-") mul)*;  mul := unary (("*" | "/") unary)*
//! unary   := ("-" | "!") unary | primary
//! primary := INT | FLOAT | "(" expr ")" | NAME | NAME "[" expr,* "]"
//!          | NAME "(" expr,* ")" | REDUCE "[" NAME,* "]" "(" expr,* ")"
//! ```
//! Guarantees: never panics; every error carries a span inside the input;
//! nesting deeper than [`MAX_DEPTH`] is an error, not a stack overflow.

use crate::ast::*;
use crate::diag::{Diagnostic, Diagnostics, Span};
use proc_macro2::TokenStream;
use std::str::FromStr;
use syn::parse::{ParseStream, Parser};
use syn::{Ident, LitFloat, LitInt, Token};

/// The deepest expression nesting the parser accepts.
pub const MAX_DEPTH: usize = 256;

/// The names that start a reduction when followed by `[axes](...)`.
pub const REDUCTIONS: &[&str] = &["sum", "max", "min", "mean", "topk"];

/// Parses kernel source text.
///
/// Spans in the result are byte offsets into `src`.
pub fn parse(src: &str) -> Result<Ast, Diagnostics> {
    let res = match TokenStream::from_str(src) {
        Ok(tokens) => parse_tokens(tokens).map_err(|d| fix_eof(d, src)),
        Err(e) => Err(delimiter_error(src)
            .unwrap_or_else(|| {
                let span = to_span(e.span());
                Diagnostic::new("cannot read the kernel text: invalid token", span, "here")
            })
            .into()),
    };
    // Each string parsed by proc-macro2 outside a proc-macro is kept in a
    // thread-local source map; we copied every span into byte offsets above,
    // so drop it to keep long-running processes flat.
    proc_macro2::extra::invalidate_current_thread_spans();
    res
}

/// Parses a token stream (the proc-macro's input, or lexed text).
pub fn parse_tokens(tokens: TokenStream) -> Result<Ast, Diagnostics> {
    let parser = |input: ParseStream| parse_kernel(input);
    parser.parse2(tokens).map_err(|e| {
        Diagnostics(
            e.into_iter()
                .map(|e| Diagnostic::new(e.to_string(), to_span(e.span()), "here"))
                .collect(),
        )
    })
}

/// syn reports a missing token at the very end as a call-site span (0..0);
/// point it at the end of the text instead.
fn fix_eof(mut diags: Diagnostics, src: &str) -> Diagnostics {
    for d in &mut diags.0 {
        if d.message.contains("end of input") && d.span() == Span::default() {
            let end = src.trim_end().len();
            d.labels[0].0 = Span::new(end, end);
        }
    }
    diags
}

fn to_span(span: proc_macro2::Span) -> Span {
    let r = span.byte_range();
    Span::new(r.start, r.end)
}

fn name(ident: &Ident) -> Name {
    Name {
        text: ident.to_string(),
        span: to_span(ident.span()),
    }
}

fn parse_kernel(input: ParseStream) -> syn::Result<Ast> {
    if input.is_empty() {
        return Err(input.error("expected `kernel NAME(...) -> (...) { ... }`, found nothing"));
    }
    let kw: Ident = syn::ext::IdentExt::parse_any(input)?;
    if kw != "kernel" {
        return Err(syn::Error::new(kw.span(), "expected `kernel`"));
    }
    let kernel_name = name(&input.parse::<Ident>()?);
    let content;
    syn::parenthesized!(content in input);
    let args = comma_list(&content, parse_arg)?;
    let mut outputs = Vec::new();
    if input.peek(Token![->]) {
        input.parse::<Token![->]>()?;
        let content;
        syn::parenthesized!(content in input);
        outputs = comma_list(&content, parse_arg)?;
    }
    let body;
    syn::braced!(body in input);
    let mut stmts = Vec::new();
    while !body.is_empty() {
        stmts.push(parse_stmt(&body)?);
    }
    if !input.is_empty() {
        return Err(input.error("expected the end of the kernel text after `}`"));
    }
    Ok(Ast {
        name: kernel_name,
        args,
        outputs,
        body: stmts,
    })
}

/// Parses `item, item, ...` (a trailing comma allowed) until the stream ends.
fn comma_list<T>(
    input: ParseStream,
    item: fn(ParseStream) -> syn::Result<T>,
) -> syn::Result<Vec<T>> {
    let mut items = Vec::new();
    while !input.is_empty() {
        items.push(item(input)?);
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(items)
}

fn parse_arg(input: ParseStream) -> syn::Result<ArgDecl> {
    let start = input.span();
    if input.peek(Token![const]) {
        input.parse::<Token![const]>()?;
        let arg_name = name(&input.parse::<Ident>()?);
        input.parse::<Token![:]>()?;
        let ty = name(&input.parse::<Ident>()?);
        let default = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(parse_expr(input, 0)?)
        } else {
            None
        };
        return Ok(ArgDecl::Const {
            name: arg_name,
            ty,
            default,
        });
    }
    let arg_name = name(&input.parse::<Ident>()?);
    input.parse::<Token![:]>()?;
    let mutable = input.peek(Token![mut]);
    if mutable {
        input.parse::<Token![mut]>()?;
    }
    let ty = name(&input.parse::<Ident>()?);
    if !input.peek(syn::token::Bracket) && !mutable {
        if input.peek(Ident) && input.fork().parse::<Ident>().is_ok_and(|i| i == "pad") {
            return Err(input.error("`pad` applies to tensors; a scalar has no out-of-range reads"));
        }
        return Ok(ArgDecl::Scalar { name: arg_name, ty });
    }
    let mut dims = Vec::new();
    if input.peek(syn::token::Bracket) {
        let content;
        syn::bracketed!(content in input);
        dims = comma_list(&content, |s| parse_expr(s, 0))?;
    }
    let mut pad = None;
    if input.peek(Ident) && input.fork().parse::<Ident>().is_ok_and(|i| i == "pad") {
        input.parse::<Ident>()?;
        pad = Some(parse_expr(input, 0)?);
    }
    let end = to_span(input.span());
    let start = to_span(start);
    let span = Span::new(
        start.start as usize,
        (end.start as usize).max(start.end as usize),
    );
    Ok(ArgDecl::Tensor {
        name: arg_name,
        mutable,
        ty,
        dims,
        pad,
        span: span.join(start),
    })
}

fn parse_stmt(input: ParseStream) -> syn::Result<AstStmt> {
    let target = name(&input.parse::<Ident>()?);
    let mut indices = Vec::new();
    if input.peek(syn::token::Bracket) {
        let content;
        syn::bracketed!(content in input);
        indices = comma_list(&content, |s| Ok(name(&s.parse::<Ident>()?)))?;
    }
    input.parse::<Token![=]>()?;
    let value = parse_expr(input, 0)?;
    let semi = input.parse::<Token![;]>()?;
    let span = target.span.join(to_span(semi.span));
    Ok(AstStmt {
        target,
        indices,
        value,
        span,
    })
}

fn parse_expr(input: ParseStream, depth: usize) -> syn::Result<Expr> {
    if depth > MAX_DEPTH {
        return Err(input.error(format!("expression nested deeper than {MAX_DEPTH} levels")));
    }
    parse_or(input, depth + 1)
}

fn binary(op: AstBinOp, lhs: Expr, rhs: Expr) -> Expr {
    let span = lhs.span.join(rhs.span);
    Expr {
        kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
        span,
    }
}

/// Counts one more operator of a left-associative chain: each one nests the
/// tree one level deeper, so chains share the depth limit.
fn chain(input: ParseStream, depth: usize, terms: &mut usize) -> syn::Result<()> {
    *terms += 1;
    if depth + *terms > MAX_DEPTH {
        return Err(input.error(format!(
            "expression nested deeper than {MAX_DEPTH} levels (a chain of operators counts one level each); split it with temporaries"
        )));
    }
    Ok(())
}

fn parse_or(input: ParseStream, depth: usize) -> syn::Result<Expr> {
    let mut lhs = parse_and(input, depth)?;
    let mut terms = 0;
    while input.peek(Token![||]) {
        chain(input, depth, &mut terms)?;
        input.parse::<Token![||]>()?;
        let rhs = parse_and(input, depth)?;
        lhs = binary(AstBinOp::Or, lhs, rhs);
    }
    Ok(lhs)
}

fn parse_and(input: ParseStream, depth: usize) -> syn::Result<Expr> {
    let mut lhs = parse_cmp(input, depth)?;
    let mut terms = 0;
    while input.peek(Token![&&]) {
        chain(input, depth, &mut terms)?;
        input.parse::<Token![&&]>()?;
        let rhs = parse_cmp(input, depth)?;
        lhs = binary(AstBinOp::And, lhs, rhs);
    }
    Ok(lhs)
}

fn peek_cmp(input: ParseStream) -> Option<AstBinOp> {
    // Two-character operators first: `<` also peeks at the start of `<=`.
    if input.peek(Token![<=]) {
        Some(AstBinOp::Le)
    } else if input.peek(Token![>=]) {
        Some(AstBinOp::Ge)
    } else if input.peek(Token![==]) {
        Some(AstBinOp::Eq)
    } else if input.peek(Token![!=]) {
        Some(AstBinOp::Ne)
    } else if input.peek(Token![<]) {
        Some(AstBinOp::Lt)
    } else if input.peek(Token![>]) {
        Some(AstBinOp::Gt)
    } else {
        None
    }
}

fn eat_cmp(input: ParseStream, op: AstBinOp) -> syn::Result<()> {
    match op {
        AstBinOp::Le => input.parse::<Token![<=]>().map(drop),
        AstBinOp::Ge => input.parse::<Token![>=]>().map(drop),
        AstBinOp::Eq => input.parse::<Token![==]>().map(drop),
        AstBinOp::Ne => input.parse::<Token![!=]>().map(drop),
        AstBinOp::Lt => input.parse::<Token![<]>().map(drop),
        _ => input.parse::<Token![>]>().map(drop),
    }
}

fn parse_cmp(input: ParseStream, depth: usize) -> syn::Result<Expr> {
    let lhs = parse_add(input, depth)?;
    let Some(op) = peek_cmp(input) else {
        return Ok(lhs);
    };
    eat_cmp(input, op)?;
    let rhs = parse_add(input, depth)?;
    if peek_cmp(input).is_some() {
        return Err(input.error("comparisons cannot be chained; use `&&`"));
    }
    Ok(binary(op, lhs, rhs))
}

fn parse_add(input: ParseStream, depth: usize) -> syn::Result<Expr> {
    let mut lhs = parse_mul(input, depth)?;
    let mut terms = 0;
    loop {
        chain(input, depth, &mut terms)?;
        let op = if input.peek(Token![+]) && !input.peek(Token![+=]) {
            input.parse::<Token![+]>()?;
            AstBinOp::Add
        } else if input.peek(Token![-]) && !input.peek(Token![->]) && !input.peek(Token![-=]) {
            input.parse::<Token![-]>()?;
            AstBinOp::Sub
        } else {
            return Ok(lhs);
        };
        let rhs = parse_mul(input, depth)?;
        lhs = binary(op, lhs, rhs);
    }
}

fn parse_mul(input: ParseStream, depth: usize) -> syn::Result<Expr> {
    let mut lhs = parse_unary(input, depth)?;
    let mut terms = 0;
    loop {
        chain(input, depth, &mut terms)?;
        let op = if input.peek(Token![*]) && !input.peek(Token![*=]) {
            input.parse::<Token![*]>()?;
            AstBinOp::Mul
        } else if input.peek(Token![/]) && !input.peek(Token![/=]) {
            input.parse::<Token![/]>()?;
            AstBinOp::Div
        } else {
            return Ok(lhs);
        };
        let rhs = parse_unary(input, depth)?;
        lhs = binary(op, lhs, rhs);
    }
}

fn parse_unary(input: ParseStream, depth: usize) -> syn::Result<Expr> {
    if depth > MAX_DEPTH {
        return Err(input.error(format!("expression nested deeper than {MAX_DEPTH} levels")));
    }
    if input.peek(Token![-]) {
        let minus = input.parse::<Token![-]>()?;
        let arg = parse_unary(input, depth + 1)?;
        let span = to_span(minus.span).join(arg.span);
        return Ok(Expr {
            kind: ExprKind::Neg(Box::new(arg)),
            span,
        });
    }
    if input.peek(Token![!]) && !input.peek(Token![!=]) {
        let bang = input.parse::<Token![!]>()?;
        let arg = parse_unary(input, depth + 1)?;
        let span = to_span(bang.span).join(arg.span);
        return Ok(Expr {
            kind: ExprKind::Not(Box::new(arg)),
            span,
        });
    }
    parse_primary(input, depth)
}

fn parse_primary(input: ParseStream, depth: usize) -> syn::Result<Expr> {
    if input.peek(LitInt) {
        let lit: LitInt = input.parse()?;
        if !lit.suffix().is_empty() {
            return Err(syn::Error::new(
                lit.span(),
                "literals take no type suffix; the context gives the type",
            ));
        }
        let value = lit
            .base10_parse::<i64>()
            .map_err(|_| syn::Error::new(lit.span(), "integer literal out of range"))?;
        return Ok(Expr {
            kind: ExprKind::Int(value),
            span: to_span(lit.span()),
        });
    }
    if input.peek(LitFloat) {
        let lit: LitFloat = input.parse()?;
        if !lit.suffix().is_empty() {
            return Err(syn::Error::new(
                lit.span(),
                "literals take no type suffix; the context gives the type",
            ));
        }
        let value = lit
            .base10_parse::<f64>()
            .map_err(|_| syn::Error::new(lit.span(), "invalid float literal"))?;
        return Ok(Expr {
            kind: ExprKind::Float(value),
            span: to_span(lit.span()),
        });
    }
    if input.peek(syn::token::Paren) {
        let content;
        let paren = syn::parenthesized!(content in input);
        let inner = parse_expr(&content, depth + 1)?;
        if !content.is_empty() {
            return Err(content.error("expected `)`"));
        }
        let mut inner = inner;
        inner.span = to_span(paren.span.join());
        return Ok(inner);
    }
    if !input.peek(Ident) {
        return Err(input.error("expected an expression"));
    }
    let ident: Ident = input.parse()?;
    let head = name(&ident);
    if input.peek(syn::token::Bracket) {
        let content;
        let bracket = syn::bracketed!(content in input);
        let close = to_span(bracket.span.close());
        if REDUCTIONS.contains(&head.text.as_str()) && input.peek(syn::token::Paren) {
            let axes = comma_list(&content, |s| Ok(name(&s.parse::<Ident>()?)))?;
            let args_content;
            let paren = syn::parenthesized!(args_content in input);
            let args = comma_list_expr(&args_content, depth)?;
            let span = head.span.join(to_span(paren.span.close()));
            return Ok(Expr {
                kind: ExprKind::Reduce(head, axes, args),
                span,
            });
        }
        let subs = comma_list_expr(&content, depth)?;
        let span = head.span.join(close);
        return Ok(Expr {
            kind: ExprKind::Index(head, subs),
            span,
        });
    }
    if input.peek(syn::token::Paren) {
        let content;
        let paren = syn::parenthesized!(content in input);
        let args = comma_list_expr(&content, depth)?;
        let span = head.span.join(to_span(paren.span.close()));
        return Ok(Expr {
            kind: ExprKind::Call(head, args),
            span,
        });
    }
    let span = head.span;
    Ok(Expr {
        kind: ExprKind::Name(head),
        span,
    })
}

fn comma_list_expr(input: ParseStream, depth: usize) -> syn::Result<Vec<Expr>> {
    let mut items = Vec::new();
    while !input.is_empty() {
        items.push(parse_expr(input, depth + 1)?);
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(items)
}

/// Finds the first unbalanced delimiter in text the lexer rejected, so the
/// error names it instead of proc-macro2's "cannot parse string".
fn delimiter_error(src: &str) -> Option<Diagnostic> {
    let mut stack: Vec<(char, usize)> = Vec::new();
    let mut chars = src.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '/' if chars.peek().is_some_and(|(_, n)| *n == '/') => {
                for (_, n) in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for (_, n) in chars.by_ref() {
                    if n == '"' && !escaped {
                        break;
                    }
                    escaped = n == '\\' && !escaped;
                }
            }
            '(' | '[' | '{' => stack.push((c, at)),
            ')' | ']' | '}' => {
                let want = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                match stack.pop() {
                    Some((open, _)) if open == want => {}
                    Some((open, open_at)) => {
                        return Some(
                            Diagnostic::new(
                                format!("unclosed `{open}`"),
                                Span::new(open_at, open_at + 1),
                                "opened here",
                            )
                            .with_label(Span::new(at, at + 1), format!("`{c}` does not close it")),
                        );
                    }
                    None => {
                        return Some(Diagnostic::new(
                            format!("unexpected closing `{c}`"),
                            Span::new(at, at + 1),
                            "nothing to close",
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    stack.pop().map(|(open, at)| {
        Diagnostic::new(
            format!("unclosed `{open}`"),
            Span::new(at, at + 1),
            "never closed",
        )
    })
}
