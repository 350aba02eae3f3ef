//! `#[remote]` on a function: keep it, add a module of the same name with `remote(..)`,
//! `options()`, the caller type, and the registration.

use crate::options::{Errors, RemoteOptions};
use crate::signature::{check_plain, decode_args, params, returns, value_assertions};
use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn};

/// Builds the option setters chained onto a fresh options builder.
pub(crate) fn option_setters(o: &RemoteOptions) -> TokenStream {
    let mut calls = TokenStream::new();
    let f64_of = |e: &syn::Expr| quote!((#e) as f64);
    if let Some(n) = &o.num_cpus {
        let v = f64_of(&n.expr);
        calls.extend(quote!(.num_cpus(#v)));
    }
    if let Some(n) = &o.num_gpus {
        let v = f64_of(&n.expr);
        calls.extend(quote!(.num_gpus(#v)));
    }
    if let Some(n) = &o.memory {
        let v = f64_of(&n.expr);
        calls.extend(quote!(.memory(#v)));
    }
    for (name, n) in &o.resources {
        let v = f64_of(&n.expr);
        calls.extend(quote!(.resource(#name, #v)));
    }
    if let Some(e) = &o.max_retries {
        calls.extend(quote!(.max_retries(#e)));
    }
    if let Some(e) = &o.retry_exceptions {
        calls.extend(quote!(.retry_exceptions(#e)));
    }
    if let Some(e) = &o.max_restarts {
        calls.extend(quote!(.max_restarts(#e)));
    }
    if let Some(e) = &o.max_task_retries {
        calls.extend(quote!(.max_task_retries(#e)));
    }
    if let Some(e) = &o.max_concurrency {
        calls.extend(quote!(.max_concurrency(#e)));
    }
    for (name, _, value) in &o.env {
        calls.extend(quote!(.env(#name, #value)));
    }
    calls
}

pub(crate) fn expand(opts: RemoteOptions, f: ItemFn, errors: &mut Errors) -> TokenStream {
    let sig = &f.sig;
    check_plain(sig, errors);
    if let Some(FnArg::Receiver(r)) = sig.inputs.first() {
        errors.at(
            r.span(),
            "#[lumen::remote] on a method: put it on the whole `impl` block to make an actor",
        );
    }
    let params = params(sig, errors);
    let ret = returns(sig);
    let name = &sig.ident;
    let vis = &f.vis;
    let is_async = sig.asyncness.is_some();
    let value_ty = ret.value_type();
    let encode = ret.encode();
    let names: Vec<_> = params.iter().map(|p| &p.name).collect();
    let tys: Vec<_> = params.iter().map(|p| &p.ty).collect();
    let decode = decode_args(&params);
    let asserts = value_assertions(&params, &ret);
    let setters = option_setters(&opts);
    let doc = format!(
        "Remote version of [`{name}`](fn@{name}): `{name}::remote(..)` submits it as a task, \
         `{name}::options()` sets per-call options."
    );

    // The trampoline and the registration sit next to the function, not inside the module, so
    // that they see it even when it is declared inside a function body.
    let invoke = if is_async {
        quote! {
            fn __lumen_invoke(mut __args: ::lumen::__private::Args)
                -> ::lumen::__private::BoxFuture<'static, ::lumen::__private::Outcome>
            {
                let __decoded = (move || -> ::core::result::Result<_, ::lumen::Error> {
                    #decode
                    ::core::result::Result::Ok((#(#names,)*))
                })();
                ::std::boxed::Box::pin(async move {
                    let (#(#names,)*) = __decoded?;
                    let __ret = #name(#(#names),*).await;
                    #encode
                })
            }
            #[::lumen::__private::linkme::distributed_slice(::lumen::__private::REMOTE_FUNCTIONS)]
            #[linkme(crate = ::lumen::__private::linkme)]
            static __LUMEN_REGISTRATION: ::lumen::__private::RemoteFunction =
                ::lumen::__private::RemoteFunction {
                    path: #name::__LUMEN_PATH,
                    id: #name::__LUMEN_ID,
                    invoke: ::lumen::__private::Invoke::Async(__lumen_invoke),
                };
        }
    } else {
        quote! {
            fn __lumen_invoke(mut __args: ::lumen::__private::Args) -> ::lumen::__private::Outcome {
                #decode
                let __ret = #name(#(#names),*);
                #encode
            }
            #[::lumen::__private::linkme::distributed_slice(::lumen::__private::REMOTE_FUNCTIONS)]
            #[linkme(crate = ::lumen::__private::linkme)]
            static __LUMEN_REGISTRATION: ::lumen::__private::RemoteFunction =
                ::lumen::__private::RemoteFunction {
                    path: #name::__LUMEN_PATH,
                    id: #name::__LUMEN_ID,
                    invoke: ::lumen::__private::Invoke::Sync(__lumen_invoke),
                };
        }
    };

    let mut out = f.to_token_stream();
    out.extend(quote! {
        #[doc = #doc]
        #[allow(unused_imports, clippy::all)]
        #vis mod #name {
            use super::*;

            // Inside this module, `module_path!()` is the function's own path.
            #[doc(hidden)]
            pub const __LUMEN_PATH: &str = ::core::module_path!();
            // The id also names the definition site: two functions of the same name declared in
            // different function bodies of one module stay distinct.
            #[doc(hidden)]
            pub const __LUMEN_ID: u64 = ::lumen::__private::stable_id(::core::concat!(
                ::core::module_path!(), "@", ::core::line!(), ":", ::core::column!()
            ));

            #[doc(hidden)]
            pub static __LUMEN_META: ::lumen::__private::FunctionMeta = ::lumen::__private::FunctionMeta {
                path: __LUMEN_PATH,
                id: __LUMEN_ID,
                is_async: #is_async,
            };

            /// Submits this function as a task with the chosen options.
            #[derive(Debug)]
            pub struct Caller {
                __options: ::lumen::__private::TaskOptionsData,
            }

            impl ::lumen::__private::TaskCaller for Caller {
                fn from_options(options: ::lumen::__private::TaskOptionsData) -> Self {
                    Caller { __options: options }
                }
                fn options_mut(&mut self) -> &mut ::lumen::__private::TaskOptionsData {
                    &mut self.__options
                }
            }

            impl Caller {
                /// Submits the task; returns at once with a ref to its result.
                pub fn remote(&self, #(#names: impl ::lumen::IntoArg<#tys>),*) -> ::lumen::ObjectRef<#value_ty> {
                    ::lumen::__private::submit_task(
                        &self.__options,
                        &__LUMEN_META,
                        ::std::vec![#(::lumen::IntoArg::<#tys>::into_arg(#names)),*],
                    )
                }
            }

            /// Options for one submission: chain setters, then `.remote(..)`.
            pub fn options() -> ::lumen::TaskOptions<Caller> {
                ::lumen::TaskOptions::<Caller>::__new() #setters
            }

            /// Submits the task with its default options; returns at once with a ref to its result.
            pub fn remote(#(#names: impl ::lumen::IntoArg<#tys>),*) -> ::lumen::ObjectRef<#value_ty> {
                options().remote(#(#names),*)
            }

            #asserts
        }

        #[allow(non_snake_case, clippy::all)]
        const _: () = {
            #invoke
        };
    });
    out
}
