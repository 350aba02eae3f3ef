//! Procedural macros of lumen: `#[remote]` on functions and impl blocks, `#[method]` on actor
//! methods, `#[main]`.
//!
//! Each expansion goes parse → validated model → tokens. Every error found is reported with its
//! span, and on error the original item is still emitted (so IDEs keep working) next to the
//! `compile_error!`s. Generated code names lumen only through `::lumen::__private`.

mod actor;
mod function;
mod options;
mod signature;

use options::{Errors, RemoteOptions, Target};
use proc_macro::TokenStream;
use quote::{quote, ToTokens};
use syn::Item;

/// See `lumen::remote`.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item2: proc_macro2::TokenStream = item.clone().into();
    let parsed: Item = match syn::parse(item) {
        Ok(i) => i,
        Err(e) => {
            let err = e.to_compile_error();
            return quote!(#item2 #err).into();
        }
    };
    let mut errors = Errors::default();
    let out = match parsed {
        Item::Fn(f) => {
            let opts = RemoteOptions::parse(attr.into(), Target::Function, &mut errors);
            function::expand(opts, f, &mut errors)
        }
        Item::Impl(i) => {
            let opts = RemoteOptions::parse(attr.into(), Target::Impl, &mut errors);
            actor::expand(opts, i, &mut errors)
        }
        other => {
            errors.at(
                syn::spanned::Spanned::span(&other),
                "#[lumen::remote] goes on a function (a task) or an `impl` block (an actor)",
            );
            other.to_token_stream()
        }
    };
    match errors.finish() {
        Ok(()) => out.into(),
        Err(e) => {
            // Keep the user's item so the rest of the crate still type-checks, minus the
            // `#[lumen::method]` attributes (alone, each would report a misleading error).
            let err = e.to_compile_error();
            let item = match syn::parse2::<Item>(item2.clone()) {
                Ok(Item::Impl(mut imp)) => {
                    actor::strip_method_attrs(&mut imp);
                    imp.to_token_stream()
                }
                _ => item2,
            };
            quote!(#item #err).into()
        }
    }
}

/// See `lumen::method`.
#[proc_macro_attribute]
pub fn method(_attr: TokenStream, item: TokenStream) -> TokenStream {
    let item2: proc_macro2::TokenStream = item.into();
    let err = syn::Error::new(
        proc_macro2::Span::call_site(),
        "#[lumen::method] only has meaning on a method inside a `#[lumen::remote] impl` block",
    )
    .to_compile_error();
    quote!(#item2 #err).into()
}

/// See `lumen::main`.
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item2: proc_macro2::TokenStream = item.clone().into();
    if !attr.is_empty() {
        let err = syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[lumen::main] takes no options",
        )
        .to_compile_error();
        return quote!(#item2 #err).into();
    }
    let f: syn::ItemFn = match syn::parse(item) {
        Ok(f) => f,
        Err(e) => {
            let err = e.to_compile_error();
            return quote!(#item2 #err).into();
        }
    };
    if f.sig.asyncness.is_some() || !f.sig.inputs.is_empty() {
        let err = syn::Error::new_spanned(&f.sig, "#[lumen::main] goes on a plain `fn main()`")
            .to_compile_error();
        return quote!(#item2 #err).into();
    }
    let (attrs, vis, sig, body) = (&f.attrs, &f.vis, &f.sig, &f.block);
    let ret = match &sig.output {
        syn::ReturnType::Default => quote!(()),
        syn::ReturnType::Type(_, t) => quote!(#t),
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            // A worker process serves here and never returns (normally it already did, before
            // main).
            ::lumen::__private::enter_worker_mode_if_asked();
            let __lumen_result = (move || -> #ret #body)();
            ::lumen::shutdown();
            __lumen_result
        }
    }
    .into()
}
