//! Parsing and validating the options of `#[remote(..)]` and `#[method(..)]`.
//!
//! Every problem is collected with its span (not just the first), and literal resource amounts
//! are checked here with the same rules the runtime applies, so a bad literal is a compile error.

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::{Expr, ExprLit, ExprUnary, Lit, LitStr, UnOp};

/// Collects errors.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub(crate) fn at(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.push(syn::Error::new(span, msg));
    }

    pub(crate) fn finish(self) -> Result<(), syn::Error> {
        match self.0 {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A numeric option: its expression, and its value when it is a literal.
#[derive(Clone)]
pub(crate) struct Num {
    pub(crate) expr: Expr,
    pub(crate) value: Option<f64>,
}

fn literal_value(e: &Expr) -> Option<f64> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => i.base10_parse::<f64>().ok(),
        Expr::Lit(ExprLit {
            lit: Lit::Float(f), ..
        }) => f.base10_parse::<f64>().ok(),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) => literal_value(expr).map(|v| -v),
        Expr::Group(g) => literal_value(&g.expr),
        Expr::Paren(p) => literal_value(&p.expr),
        _ => None,
    }
}

fn num(meta: &ParseNestedMeta<'_>) -> syn::Result<Num> {
    let expr: Expr = meta.value()?.parse()?;
    Ok(Num {
        value: literal_value(&expr),
        expr,
    })
}

/// Checks a literal resource amount as the runtime would.
fn check_amount(errors: &mut Errors, what: &str, n: &Num, gpu: bool) {
    let Some(v) = n.value else { return };
    let span = syn::spanned::Spanned::span(&n.expr);
    if !v.is_finite() || v < 0.0 {
        errors.at(
            span,
            format!("{what} = {v}: resource amounts must be non-negative"),
        );
        return;
    }
    let scaled = v * 10_000.0;
    if (scaled - scaled.round()).abs() > 1e-6 * scaled.abs().max(1.0) {
        errors.at(
            span,
            format!("{what} = {v}: resource amounts have a precision of 0.0001; use a multiple of 0.0001"),
        );
    }
    if gpu && v > 1.0 && v.fract() != 0.0 {
        errors.at(
            span,
            format!("{what} = {v}: GPU amounts above 1 must be whole numbers (e.g. 0.5, 1, 2)"),
        );
    }
}

/// Options of `#[remote]` on a function or an impl.
#[derive(Default)]
pub(crate) struct RemoteOptions {
    pub(crate) num_cpus: Option<Num>,
    pub(crate) num_gpus: Option<Num>,
    pub(crate) memory: Option<Num>,
    pub(crate) resources: Vec<(String, Num)>,
    pub(crate) max_retries: Option<Expr>,
    pub(crate) retry_exceptions: Option<Expr>,
    pub(crate) max_restarts: Option<Expr>,
    pub(crate) max_task_retries: Option<Expr>,
    pub(crate) max_concurrency: Option<Expr>,
    pub(crate) concurrency_groups: Vec<(String, Expr, Span)>,
    /// Environment variables: `env(NAME = "value", ..)`.
    pub(crate) env: Vec<(String, Span, LitStr)>,
}

const FN_OPTIONS: &str = "num_cpus, num_gpus, memory, resources(name = amount, ..), max_retries, retry_exceptions, env(NAME = \"value\", ..)";
const IMPL_OPTIONS: &str = "num_cpus, num_gpus, memory, resources(name = amount, ..), max_restarts, max_task_retries, max_concurrency, concurrency_groups(name = size, ..), env(NAME = \"value\", ..)";

/// Checks an environment variable given as a literal with the rules the runtime applies (an
/// identifier cannot be empty or hold `=` or NUL): lumen's own names and NUL in values are
/// refused.
fn check_env(errors: &mut Errors, name: &str, span: Span, value: &LitStr) {
    if name.starts_with("LUMEN_") {
        errors.at(
            span,
            format!("env({name} = ..): names starting with LUMEN_ are lumen's own (they put a process in worker mode)"),
        );
    }
    if value.value().contains('\0') {
        errors.at(
            value.span(),
            format!("env({name} = ..): its value contains a NUL byte, which no process can hold"),
        );
    }
}

/// Which item the options are on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Function,
    Impl,
}

impl RemoteOptions {
    pub(crate) fn parse(
        attr: proc_macro2::TokenStream,
        target: Target,
        errors: &mut Errors,
    ) -> Self {
        let mut o = RemoteOptions::default();
        if attr.is_empty() {
            return o;
        }
        let valid = match target {
            Target::Function => FN_OPTIONS,
            Target::Impl => IMPL_OPTIONS,
        };
        let parser = syn::meta::parser(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(|i| i.to_string())
                .unwrap_or_default();
            match (key.as_str(), target) {
                ("num_cpus", _) => o.num_cpus = Some(num(&meta)?),
                ("num_gpus", _) => o.num_gpus = Some(num(&meta)?),
                ("memory", _) => o.memory = Some(num(&meta)?),
                ("resources", _) => meta.parse_nested_meta(|inner| {
                    let name = if let Some(id) = inner.path.get_ident() {
                        id.to_string()
                    } else {
                        return Err(inner.error(
                            "a resource name is an identifier: resources(my_resource = 1)",
                        ));
                    };
                    o.resources.push((name, num(&inner)?));
                    Ok(())
                })?,
                ("max_retries", Target::Function) => o.max_retries = Some(meta.value()?.parse()?),
                ("retry_exceptions", Target::Function) => {
                    o.retry_exceptions = Some(meta.value()?.parse()?)
                }
                ("max_restarts", Target::Impl) => o.max_restarts = Some(meta.value()?.parse()?),
                ("max_task_retries", Target::Impl) => {
                    o.max_task_retries = Some(meta.value()?.parse()?)
                }
                ("max_concurrency", Target::Impl) => {
                    o.max_concurrency = Some(meta.value()?.parse()?)
                }
                ("env", _) => meta.parse_nested_meta(|inner| {
                    let Some(id) = inner.path.get_ident() else {
                        return Err(inner
                            .error("a variable's name is an identifier: env(MY_SETTING = \"1\")"));
                    };
                    let value: Expr = inner.value()?.parse()?;
                    let Expr::Lit(ExprLit {
                        lit: Lit::Str(value),
                        ..
                    }) = value
                    else {
                        return Err(syn::Error::new_spanned(
                            &value,
                            "a variable's value is a string literal: env(MY_SETTING = \"1\") \
                             (for a computed one, use .env(name, value) on the options)",
                        ));
                    };
                    o.env.push((id.to_string(), id.span(), value));
                    Ok(())
                })?,
                ("concurrency_groups", Target::Impl) => meta.parse_nested_meta(|inner| {
                    let Some(id) = inner.path.get_ident() else {
                        return Err(inner
                            .error("a group name is an identifier: concurrency_groups(io = 2)"));
                    };
                    let size: Expr = inner.value()?.parse()?;
                    if let Some(v) = literal_value(&size) {
                        if v < 1.0 || v.fract() != 0.0 {
                            return Err(syn::Error::new_spanned(
                                &size,
                                "a concurrency group's size is a whole number of at least 1",
                            ));
                        }
                    }
                    o.concurrency_groups.push((id.to_string(), size, id.span()));
                    Ok(())
                })?,
                _ => {
                    return Err(meta.error(format!(
                        "unknown option `{}` for #[lumen::remote] on {}; valid options: {valid}",
                        key,
                        match target {
                            Target::Function => "a function",
                            Target::Impl => "an impl block",
                        }
                    )))
                }
            }
            Ok(())
        });
        if let Err(e) = syn::parse::Parser::parse2(parser, attr) {
            errors.push(e);
        }
        if let Some(n) = &o.num_cpus {
            check_amount(errors, "num_cpus", n, false);
        }
        if let Some(n) = &o.num_gpus {
            check_amount(errors, "num_gpus", n, true);
        }
        if let Some(n) = &o.memory {
            check_amount(errors, "memory", n, false);
        }
        for (name, span, value) in &o.env {
            check_env(errors, name, *span, value);
        }
        for (name, n) in &o.resources {
            if matches!(
                name.as_str(),
                "CPU" | "GPU" | "memory" | "object_store_memory"
            ) {
                errors.at(
                    syn::spanned::Spanned::span(&n.expr),
                    format!("`{name}` is a predefined resource: use num_cpus / num_gpus / memory instead of resources({name} = ..)"),
                );
            }
            check_amount(errors, &format!("resource `{name}`"), n, false);
        }
        o
    }
}

/// Options of `#[lumen::method(..)]`.
#[derive(Default)]
pub(crate) struct MethodOptions {
    pub(crate) concurrency_group: Option<LitStr>,
}

impl MethodOptions {
    pub(crate) fn parse(attr: &syn::Attribute, errors: &mut Errors) -> Self {
        let mut o = MethodOptions::default();
        if matches!(attr.meta, syn::Meta::Path(_)) {
            return o;
        }
        let res = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("concurrency_group") {
                o.concurrency_group = Some(meta.value()?.parse()?);
                Ok(())
            } else {
                Err(meta.error("unknown option for #[lumen::method]; valid options: concurrency_group = \"name\""))
            }
        });
        if let Err(e) = res {
            errors.push(e);
        }
        o
    }
}
