//! What the expansions need from a signature: owned parameter types and the return type.

use crate::options::Errors;
use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ReturnType, Signature, Type};

/// One parameter: a generated name and its type.
pub(crate) struct Param {
    pub(crate) name: syn::Ident,
    pub(crate) ty: Type,
}

/// The return type: what the `ObjectRef` holds, and whether it is a `Result`.
pub(crate) struct Return {
    /// The declared type (`()` when none).
    pub(crate) ty: Type,
    pub(crate) is_result: bool,
}

impl Return {
    /// The type of the value stored for the caller.
    pub(crate) fn value_type(&self) -> TokenStream {
        let ty = &self.ty;
        if self.is_result {
            quote!(<#ty as ::lumen::__private::ResultLike>::Ok)
        } else {
            quote!(#ty)
        }
    }

    /// Encodes `__ret` into an `Outcome` (spanned at the return type, for errors).
    pub(crate) fn encode(&self) -> TokenStream {
        let span = self.ty.span();
        if self.is_result {
            quote_spanned!(span=> ::lumen::__private::encode_result(__ret))
        } else {
            quote_spanned!(span=> ::lumen::__private::encode_return(__ret))
        }
    }
}

fn is_result_type(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
        _ => false,
    }
}

/// Parameters after the receiver, checked to be owned types.
pub(crate) fn params(sig: &Signature, errors: &mut Errors) -> Vec<Param> {
    let mut out = Vec::new();
    for (i, arg) in sig.inputs.iter().enumerate() {
        let FnArg::Typed(pt) = arg else { continue };
        let ty = (*pt.ty).clone();
        match &ty {
            Type::Reference(r) => errors.at(
                r.span(),
                "remote parameters must be owned values (they are serialized and may run on another \
                 machine): take `String` instead of `&str`, `Vec<T>` instead of `&[T]`, `T` instead of `&T`",
            ),
            Type::ImplTrait(t) => errors.at(
                t.span(),
                "remote parameters need a concrete type (`impl Trait` cannot be deserialized)",
            ),
            _ => {}
        }
        out.push(Param {
            name: format_ident!("__lumen_a{}", i),
            ty,
        });
    }
    out
}

/// The return type.
pub(crate) fn returns(sig: &Signature) -> Return {
    match &sig.output {
        ReturnType::Default => Return {
            ty: syn::parse_quote!(()),
            is_result: false,
        },
        ReturnType::Type(_, ty) => Return {
            is_result: is_result_type(ty),
            ty: (**ty).clone(),
        },
    }
}

/// Checks generics and other shapes remote items cannot have.
pub(crate) fn check_plain(sig: &Signature, errors: &mut Errors) {
    if !sig.generics.params.is_empty() {
        errors.at(
            sig.generics.span(),
            "remote functions and methods cannot be generic: each is registered once, by name, \
             and must have concrete parameter types",
        );
    }
    if let Some(v) = &sig.variadic {
        errors.at(v.span(), "remote functions cannot be variadic");
    }
    if sig.constness.is_some() {
        errors.at(
            sig.constness.span(),
            "remote functions cannot be `const fn`",
        );
    }
    if sig.unsafety.is_some() {
        errors.at(
            sig.unsafety.span(),
            "remote functions cannot be `unsafe fn`",
        );
    }
}

/// Compile-time checks that every parameter and the return value can cross a task boundary,
/// with errors pointing at the offending type.
pub(crate) fn value_assertions(params: &[Param], ret: &Return) -> TokenStream {
    let mut out = TokenStream::new();
    for p in params {
        let ty = &p.ty;
        out.extend(quote_spanned! {ty.span()=>
            const _: () = ::lumen::__private::assert_remote_value::<#ty>();
        });
    }
    let value = ret.value_type();
    let span = ret.ty.span();
    out.extend(quote_spanned! {span=>
        const _: () = ::lumen::__private::assert_remote_value::<#value>();
    });
    out
}

/// `let a: T = __args.next()?; ...; __args.finish()?;`
pub(crate) fn decode_args(params: &[Param]) -> TokenStream {
    // Spanned at the type: a bound the type does not meet is reported there.
    let lets = params.iter().map(|p| {
        let (n, t) = (&p.name, &p.ty);
        quote_spanned!(t.span()=> let #n: #t = __args.take()?;)
    });
    quote!(#(#lets)* __args.finish()?;)
}
