//! `#[remote]` on an `impl` block: the type becomes an actor. `new` is the constructor; each
//! method taking `&self` or `&mut self` becomes a remote method on the generated methods type
//! that `ActorHandle<T>` dereferences to.

use crate::function::option_setters;
use crate::options::{Errors, MethodOptions, RemoteOptions};
use crate::signature::{
    check_plain, decode_args, params, returns, value_assertions, Param, Return,
};
use proc_macro2::TokenStream;
use quote::{format_ident, quote, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, ImplItemFn, ItemImpl, Type, Visibility};

struct Method {
    ident: syn::Ident,
    vis: Visibility,
    params: Vec<Param>,
    ret: Return,
    mutates: bool,
    is_async: bool,
    group: Option<String>,
    docs: Vec<syn::Attribute>,
}

/// Removes `#[lumen::method]` attributes from an impl's methods.
pub(crate) fn strip_method_attrs(imp: &mut ItemImpl) {
    for item in &mut imp.items {
        if let ImplItem::Fn(f) = item {
            f.attrs.retain(|a| !is_lumen_method_attr(a));
        }
    }
}

fn is_lumen_method_attr(a: &syn::Attribute) -> bool {
    let segs: Vec<String> = a
        .path()
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    matches!(segs.as_slice(), [m] if m == "method")
        || matches!(segs.as_slice(), [l, m] if l == "lumen" && m == "method")
}

pub(crate) fn expand(opts: RemoteOptions, mut imp: ItemImpl, errors: &mut Errors) -> TokenStream {
    if !imp.generics.params.is_empty() {
        errors.at(
            imp.generics.span(),
            "an actor type cannot be generic: `#[lumen::remote]` registers one concrete type",
        );
    }
    if let Some((_, path, _)) = &imp.trait_ {
        errors.at(
            path.span(),
            "#[lumen::remote] goes on the type's own `impl` block, not on a trait impl",
        );
    }
    let ty_ident = match &*imp.self_ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.clone()),
        _ => None,
    };
    let Some(ty_ident) = ty_ident else {
        errors.at(
            imp.self_ty.span(),
            "#[lumen::remote] needs an impl of a named struct or enum",
        );
        return imp.to_token_stream();
    };
    let self_ty = imp.self_ty.clone();
    let groups: Vec<String> = opts
        .concurrency_groups
        .iter()
        .map(|(n, _, _)| n.clone())
        .collect();

    let mut ctor: Option<(Visibility, Vec<Param>, Return, syn::Ident)> = None;
    let mut methods = Vec::new();
    for item in &mut imp.items {
        let ImplItem::Fn(f) = item else { continue };
        let mut mopts = MethodOptions::default();
        let mut keep = Vec::new();
        for a in f.attrs.drain(..) {
            if is_lumen_method_attr(&a) {
                mopts = MethodOptions::parse(&a, errors);
            } else {
                keep.push(a);
            }
        }
        f.attrs = keep;
        let receiver = match f.sig.inputs.first() {
            Some(FnArg::Receiver(r)) => Some(r.clone()),
            _ => None,
        };
        match receiver {
            None if f.sig.ident == "new" => {
                check_plain(&f.sig, errors);
                if f.sig.asyncness.is_some() {
                    errors.at(
                        f.sig.asyncness.span(),
                        "an actor's `new` must be a plain (not async) function",
                    );
                }
                let ret = returns(&f.sig);
                ctor = Some((
                    f.vis.clone(),
                    params(&f.sig, errors),
                    ret,
                    f.sig.ident.clone(),
                ));
            }
            None => {
                if mopts.concurrency_group.is_some() {
                    errors.at(
                        f.sig.span(),
                        "#[lumen::method] only applies to methods taking `&self` or `&mut self`",
                    );
                }
            }
            Some(r) => {
                if r.reference.is_none() {
                    errors.at(r.span(), "an actor method takes `&self` or `&mut self`; a method consuming `self` cannot be called remotely");
                    continue;
                }
                check_plain(&f.sig, errors);
                let group = mopts.concurrency_group.map(|g| {
                    let name = g.value();
                    if !groups.contains(&name) {
                        errors.at(
                            g.span(),
                            if groups.is_empty() {
                                format!("unknown concurrency group {name:?}: declare it on the impl with #[lumen::remote(concurrency_groups({name} = N))]")
                            } else {
                                format!("unknown concurrency group {name:?}; declared groups: {}", groups.join(", "))
                            },
                        );
                    }
                    name
                });
                methods.push(method_model(f, r.mutability.is_some(), group, errors));
            }
        }
    }
    let Some((ctor_vis, ctor_params, ctor_ret, ctor_ident)) = ctor else {
        errors.at(
            imp.self_ty.span(),
            format!(
                "#[lumen::remote] on `impl {ty_ident}` needs a constructor: add `pub fn new(..) -> Self` \
                 (its arguments are the actor's creation arguments)"
            ),
        );
        return imp.to_token_stream();
    };

    let methods_ty = format_ident!("{}Methods", ty_ident);
    let ctor_ty = format_ident!("{}Constructor", ty_ident);
    let ty_name = ty_ident.to_string();
    let is_async = methods.iter().any(|m| m.is_async);

    // Caller side: the methods type and the constructor type.
    let method_fns = methods.iter().enumerate().map(|(i, m)| {
        let (ident, vis, docs) = (&m.ident, &m.vis, &m.docs);
        let names: Vec<_> = m.params.iter().map(|p| &p.name).collect();
        let tys: Vec<_> = m.params.iter().map(|p| &p.ty).collect();
        let value = m.ret.value_type();
        let idx = i as u32;
        quote! {
            #(#docs)*
            #vis fn #ident(&self, #(#names: impl ::lumen::IntoArg<#tys>),*) -> ::lumen::ActorCall<#value> {
                ::lumen::ActorCall::__new(
                    &self.__raw,
                    #idx,
                    ::core::concat!(::core::module_path!(), "::", #ty_name, "::", ::core::stringify!(#ident)),
                    ::std::vec![#(::lumen::IntoArg::<#tys>::into_arg(#names)),*],
                )
            }
        }
    });
    let ctor_names: Vec<_> = ctor_params.iter().map(|p| &p.name).collect();
    let ctor_tys: Vec<_> = ctor_params.iter().map(|p| &p.ty).collect();
    let setters = option_setters(&opts);

    // Executor side: constructor and method trampolines, and the registration.
    let decode_ctor = decode_args(&ctor_params);
    let construct = if ctor_ret.is_result {
        quote!(::lumen::__private::new_state_result(<#self_ty>::#ctor_ident(#(#ctor_names),*)))
    } else {
        quote!(::core::result::Result::Ok(::lumen::__private::new_state(<#self_ty>::#ctor_ident(#(#ctor_names),*))))
    };
    let mut trampolines = TokenStream::new();
    let mut entries = Vec::new();
    for m in &methods {
        let fname = format_ident!("__lumen_m_{}", m.ident);
        let ident = &m.ident;
        let names: Vec<_> = m.params.iter().map(|p| &p.name).collect();
        let decode = decode_args(&m.params);
        let encode = m.ret.encode();
        let path = quote!(
            ::core::concat!(::core::module_path!(), "::", #ty_name, "::", ::core::stringify!(#ident))
        );
        let lock = if m.mutates {
            quote!(write)
        } else {
            quote!(read)
        };
        if m.is_async {
            trampolines.extend(quote! {
                fn #fname(__state: ::lumen::__private::ActorState, mut __args: ::lumen::__private::Args)
                    -> ::lumen::__private::BoxFuture<'static, ::lumen::__private::Outcome>
                {
                    let __decoded = (move || -> ::core::result::Result<_, ::lumen::Error> {
                        #decode
                        ::core::result::Result::Ok((#(#names,)*))
                    })();
                    ::std::boxed::Box::pin(async move {
                        let (#(#names,)*) = __decoded?;
                        let __cell = ::lumen::__private::cell::<#self_ty>(__state, #path)?;
                        #[allow(unused_mut)]
                        let mut __guard = __cell.#lock().await;
                        let __ret = __guard.#ident(#(#names),*).await;
                        ::core::mem::drop(__guard);
                        #encode
                    })
                }
            });
        } else {
            trampolines.extend(quote! {
                fn #fname(__state: &::lumen::__private::ActorState, mut __args: ::lumen::__private::Args)
                    -> ::lumen::__private::Outcome
                {
                    #decode
                    #[allow(unused_mut)]
                    let mut __guard = ::lumen::__private::#lock::<#self_ty>(__state, #path)?;
                    let __ret = __guard.#ident(#(#names),*);
                    ::core::mem::drop(__guard);
                    #encode
                }
            });
        }
        let name = m.ident.to_string();
        let mutates = m.mutates;
        let group = match &m.group {
            Some(g) => quote!(::core::option::Option::Some(#g)),
            None => quote!(::core::option::Option::None),
        };
        let invoke = if m.is_async {
            quote!(::lumen::__private::MethodInvoke::Async(#fname))
        } else {
            quote!(::lumen::__private::MethodInvoke::Sync(#fname))
        };
        entries.push(quote! {
            ::lumen::__private::ActorMethod { name: #name, path: #path, mutates: #mutates, group: #group, invoke: #invoke }
        });
    }
    let n_methods = entries.len();
    let group_entries = opts
        .concurrency_groups
        .iter()
        .map(|(n, size, _)| quote!((#n, (#size) as usize)));
    let mut asserts = value_assertions(
        &ctor_params,
        &Return {
            ty: syn::parse_quote!(()),
            is_result: false,
        },
    );
    for m in &methods {
        asserts.extend(value_assertions(&m.params, &m.ret));
    }
    let methods_doc =
        format!("The remote methods of [`{ty_name}`], reached through `ActorHandle<{ty_name}>`.");
    let ctor_doc = format!("Creates a `{ty_name}` actor with the chosen options.");

    let mut out = imp.to_token_stream();
    out.extend(quote! {
        #[doc = #methods_doc]
        #ctor_vis struct #methods_ty {
            __raw: ::lumen::__private::RawActorHandle,
        }

        impl ::lumen::__private::ActorMethods for #methods_ty {
            fn from_raw(raw: ::lumen::__private::RawActorHandle) -> Self {
                #methods_ty { __raw: raw }
            }
            fn raw(&self) -> &::lumen::__private::RawActorHandle {
                &self.__raw
            }
        }

        impl ::core::fmt::Debug for #methods_ty {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::fmt::Debug::fmt(&self.__raw, f)
            }
        }

        #[allow(clippy::all)]
        impl #methods_ty {
            #(#method_fns)*
        }

        #[doc = #ctor_doc]
        #[doc(hidden)]
        #ctor_vis struct #ctor_ty {
            __options: ::lumen::__private::ActorOptionsData,
        }

        impl ::lumen::__private::ActorConstructor for #ctor_ty {
            fn from_options(options: ::lumen::__private::ActorOptionsData) -> Self {
                #ctor_ty { __options: options }
            }
            fn options_mut(&mut self) -> &mut ::lumen::__private::ActorOptionsData {
                &mut self.__options
            }
        }

        impl #ctor_ty {
            /// Creates the actor; returns its handle at once (creation is asynchronous). A name
            /// is registered before it returns, which blocks: in async code, use `remote_async`.
            #ctor_vis fn remote(&self, #(#ctor_names: impl ::lumen::IntoArg<#ctor_tys>),*) -> ::lumen::ActorHandle<#self_ty> {
                ::lumen::__private::create_actor::<#self_ty>(
                    &self.__options,
                    ::std::vec![#(::lumen::IntoArg::<#ctor_tys>::into_arg(#ctor_names)),*],
                )
            }

            /// Creates the actor without blocking a thread: the arguments are taken and the
            /// creation sent before it returns; the future gives the handle once a name (if any)
            /// is registered. Works on any executor.
            #ctor_vis fn remote_async(&self, #(#ctor_names: impl ::lumen::IntoArg<#ctor_tys>),*)
                -> impl ::core::future::Future<Output = ::lumen::ActorHandle<#self_ty>> + ::core::marker::Send + 'static
            {
                ::lumen::__private::create_actor_async::<#self_ty>(
                    &self.__options,
                    ::std::vec![#(::lumen::IntoArg::<#ctor_tys>::into_arg(#ctor_names)),*],
                )
            }
        }

        impl ::lumen::RemoteActor for #self_ty {
            const PATH: &'static str = ::core::concat!(::core::module_path!(), "::", #ty_name);
            const ID: u64 = ::lumen::__private::stable_id(::core::concat!(
                ::core::module_path!(), "::", #ty_name, "@", ::core::line!(), ":", ::core::column!()
            ));
            type Methods = #methods_ty;
            type Constructor = #ctor_ty;
        }

        impl #self_ty {
            /// Creates this actor with its default options; returns its handle at once.
            #ctor_vis fn remote(#(#ctor_names: impl ::lumen::IntoArg<#ctor_tys>),*) -> ::lumen::ActorHandle<#self_ty> {
                Self::options().remote(#(#ctor_names),*)
            }

            /// Creates this actor with its default options, without blocking a thread.
            #ctor_vis fn remote_async(#(#ctor_names: impl ::lumen::IntoArg<#ctor_tys>),*)
                -> impl ::core::future::Future<Output = ::lumen::ActorHandle<#self_ty>> + ::core::marker::Send + 'static
            {
                Self::options().remote_async(#(#ctor_names),*)
            }

            /// Options for creating this actor: chain setters, then `.remote(..)`.
            #ctor_vis fn options() -> ::lumen::ActorOptions<#self_ty> {
                ::lumen::ActorOptions::<#self_ty>::__new() #setters
            }
        }

        #[allow(non_snake_case, clippy::all)]
        const _: () = {
            const _: () = ::lumen::__private::assert_actor_state::<#self_ty>();
            #asserts

            fn __lumen_new(mut __args: ::lumen::__private::Args)
                -> ::core::result::Result<::lumen::__private::ActorState, ::lumen::Error>
            {
                #decode_ctor
                #construct
            }

            #trampolines

            static __LUMEN_METHODS: [::lumen::__private::ActorMethod; #n_methods] = [#(#entries),*];

            #[::lumen::__private::linkme::distributed_slice(::lumen::__private::ACTOR_CLASSES)]
            #[linkme(crate = ::lumen::__private::linkme)]
            static __LUMEN_CLASS: ::lumen::__private::ActorClass = ::lumen::__private::ActorClass {
                path: <#self_ty as ::lumen::RemoteActor>::PATH,
                id: <#self_ty as ::lumen::RemoteActor>::ID,
                construct: __lumen_new,
                methods: &__LUMEN_METHODS,
                groups: &[#(#group_entries),*],
                is_async: #is_async,
            };
        };
    });
    out
}

fn method_model(
    f: &ImplItemFn,
    mutates: bool,
    group: Option<String>,
    errors: &mut Errors,
) -> Method {
    Method {
        ident: f.sig.ident.clone(),
        vis: f.vis.clone(),
        params: params(&f.sig, errors),
        ret: returns(&f.sig),
        mutates,
        is_async: f.sig.asyncness.is_some(),
        group,
        docs: f
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .cloned()
            .collect(),
    }
}
