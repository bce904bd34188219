//! Code generation: from a checked [`Task`] to the items `#[task]` emits.
//!
//! For `fn square(x: u64) -> u64` the output is, in order (`::mproc` stands
//! for the facade path, see `crate = ...`):
//!
//! 1. the function itself, renamed `__mproc_task_square`, hidden;
//! 2. `struct square;`, a unit struct with the function's docs and
//!    visibility;
//! 3. `impl Deref for square { type Target = fn(u64) -> u64; .. }`;
//! 4. `impl ::mproc::Task for square { .. }`;
//! 5. a `const _` block holding the registry entry (a `linkme` element of
//!    `TASKS`) and, for several arguments, one `assert_wire::<T>()` call per
//!    argument, spanned at its type so an unsatisfied serde bound points at
//!    that argument rather than at the `Args` tuple.
//!
//! An `async fn` adds a hidden wrapper, `__mproc_task_NAME_boxed`, that boxes
//! its future as `Pin<Box<dyn Future + Send>>`: the coercion to `dyn Send` is
//! where a future that is not `Send` is rejected.

use proc_macro2::{Delimiter, Group, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Ident, LitStr, Signature, Type, Visibility};

use crate::ast::{Args, Attrs, Task};
use crate::valid::{self, Errors};

/// The whole attribute: parse, check, generate.
///
/// On an error the compile errors come first, then:
/// - for a free function that parsed (whatever rule it broke), a stand-in
///   for the task ([`stand_in`]): the same names, with types that are the
///   compiler's "error" type, so a call site (`submit(count_chars, "x")`,
///   `count_chars("x")`) reports nothing more;
/// - otherwise (not a function, a `self` receiver inside an `impl`), the item
///   exactly as it was written;
/// - for a valid function with bad attribute arguments, the task itself,
///   expanded against `::mproc`.
pub(crate) fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let (args, args_error) = parse_args(attr, "task");
    let (task, task_error) = match Task::parse(item.clone()) {
        Ok(task) => {
            let error = valid::validate(&task).err();
            (Some(task), error)
        }
        Err(error) => (None, Some(error)),
    };
    let task_is_valid = task.is_some() && task_error.is_none();
    let Err(error) = Errors::of([args_error, task_error]) else {
        // No error only when the task parsed and passed every rule.
        return task.map_or(item, |task| expand(&task, &args));
    };
    match task {
        Some(task) if task_is_valid => {
            let mut tokens = error.into_compile_error();
            tokens.extend(expand(&task, &args));
            tokens
        }
        Some(task) if task.parts.receivers.is_empty() => stand_in(&task, &args, error),
        _ => {
            let mut tokens = error.into_compile_error();
            tokens.extend(item);
            tokens
        }
    }
}

/// What a rejected free function becomes: the function, hidden, and a unit
/// struct of its name implementing `Task` and `Deref` with a type that holds
/// the first error (`[(); { compile_error!(..) }]`: an array whose length is
/// an error). The compiler reports no mismatch involving such a type, so
/// code using the task is not reported a second time. (`compile_error!` in
/// type position would not do: it stands for `()`.)
fn stand_in(task: &Task, args: &Args, error: syn::Error) -> TokenStream {
    let krate = args.krate();
    let private = quote!(#krate::__private);
    let item = &task.item;
    let name = task.name();
    let hidden = format_ident!("__mproc_task_{}", name.unraw(), span = name.span());
    let Attrs { docs, cfgs, rest } = Attrs::sort(&item.attrs);
    let vis = &item.vis;

    let mut renamed = item.clone();
    renamed.attrs = rest.into_iter().cloned().collect();
    renamed.vis = Visibility::Inherited;
    renamed.sig.ident = hidden;

    let (first, rest_errors) = split_first(error);

    quote! {
        #rest_errors

        #[doc(hidden)]
        #[allow(non_snake_case, dead_code)]
        #renamed

        #(#docs)*
        #(#cfgs)*
        #[allow(non_camel_case_types)]
        #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug)]
        #vis struct #name;

        #(#cfgs)*
        impl ::core::ops::Deref for #name {
            type Target = <#name as #krate::Task>::Args;
            fn deref(&self) -> &Self::Target {
                ::core::unreachable!()
            }
        }

        #(#cfgs)*
        impl #krate::Task for #name {
            type Args = [(); { #first }];
            type Output = Self::Args;
            const NAME: &'static str = "";
            fn __call(_: Self::Args) -> #private::TaskCall<Self::Output> {
                ::core::unreachable!()
            }
        }
    }
}

/// The items generated for a valid task.
fn expand(task: &Task, args: &Args) -> TokenStream {
    let krate = args.krate();
    let private = quote!(#krate::__private);

    let item = &task.item;
    let name = task.name();
    let bare = name.unraw();
    let name_str = LitStr::new(&bare.to_string(), name.span());
    let hidden = format_ident!("__mproc_task_{}", bare, span = name.span());
    let boxed = format_ident!("__mproc_task_{}_boxed", bare, span = name.span());

    let Attrs { docs, cfgs, rest } = Attrs::sort(&item.attrs);
    let vis = &item.vis;
    let byte_notes = vec_u8_notes(task, &rest, &cfgs);

    // 1. The function, renamed and hidden; its patterns and body untouched.
    let mut renamed = item.clone();
    renamed.attrs = rest.into_iter().cloned().collect();
    renamed.vis = Visibility::Inherited;
    renamed.sig.ident = hidden.clone();

    // Positional names for the arguments, used by the generated callers.
    let inputs = &task.parts.inputs;
    let arg_names = positional_names(inputs.len());

    let output = output_type(task.parts.output.as_ref());
    let ret_arrow = task.parts.output.as_ref().map(|ty| quote!(-> #ty));

    // What the struct derefs to, and the function that value points at.
    let (fn_ptr, target_fn, wrapper) = if task.is_async() {
        let future = quote! {
            ::core::pin::Pin<::std::boxed::Box<
                dyn ::core::future::Future<Output = #output> + ::core::marker::Send
            >>
        };
        // Spanned at `async`: a future that is not `Send` is reported here,
        // with notes pointing into the body at what makes it so.
        let asyncness = &item.sig.asyncness;
        let pin = quote_spanned!(asyncness.span()=>
            ::std::boxed::Box::pin(#hidden(#(#arg_names),*))
        );
        let wrapper = quote! {
            #(#cfgs)*
            #[doc(hidden)]
            #[allow(non_snake_case)]
            fn #boxed(#(#arg_names: #inputs),*) -> #future {
                #pin
            }
        };
        (quote!(fn(#(#inputs),*) -> #future), &boxed, wrapper)
    } else {
        (
            quote!(fn(#(#inputs),*) #ret_arrow),
            &hidden,
            TokenStream::new(),
        )
    };

    let args_ty = args_type(inputs, &item.sig);
    let args_pat = args_pattern(&arg_names);
    let call = if task.is_async() {
        quote!(#private::TaskCall::Pending(#boxed(#(#arg_names),*)))
    } else {
        quote!(#private::TaskCall::Ready(#hidden(#(#arg_names),*)))
    };
    let is_async = task.is_async();

    // The serde bounds. A type that is `Args` or `Output` itself is checked
    // by the compiler on the `Task` impl, at that type's own span; the
    // arguments of a tuple are checked one by one here, each call spanned at
    // its type, so the error names the argument rather than the tuple.
    // (Checking them all here too would only repeat each error.)
    let wire_checks = inputs
        .iter()
        .filter(|_| inputs.len() > 1)
        .map(|ty| assert_on(ty, &quote!(#private::assert_wire)));

    // Spanned at the function's name, so "defined here" notes (e.g. for a
    // `let` that tries to shadow it) point at the name, not at `#[task]`.
    let unit_struct = quote_spanned! {name.span()=>
        #[allow(non_camel_case_types)]
        #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug)]
        #vis struct #name;
    };

    // A `#[deprecated]` task puts the attribute on the struct (see
    // `ast::Attrs`); the generated code that names it must not warn.
    let allow_deprecated = quote!(#[allow(deprecated)]);

    quote! {
        // The lints allowed here would suggest what a task cannot be: a
        // borrowed argument or a `const fn`.
        #[doc(hidden)]
        #[allow(
            non_snake_case,
            clippy::needless_pass_by_value,
            clippy::missing_const_for_fn
        )]
        #renamed

        #wrapper

        #(#docs)*
        #(#cfgs)*
        #unit_struct

        #(#cfgs)*
        #allow_deprecated
        impl ::core::ops::Deref for #name {
            type Target = #fn_ptr;
            fn deref(&self) -> &Self::Target {
                const F: #fn_ptr = #target_fn;
                &F
            }
        }

        #(#cfgs)*
        #allow_deprecated
        impl #krate::Task for #name {
            type Args = #args_ty;
            type Output = #output;
            const NAME: &'static str =
                ::core::concat!(::core::module_path!(), "::", #name_str);
            const IS_ASYNC: bool = #is_async;
            fn __call(#args_pat: Self::Args) -> #private::TaskCall<Self::Output> {
                #call
            }
        }

        #(#cfgs)*
        #allow_deprecated
        const _: () = {
            #[#private::linkme::distributed_slice(#private::TASKS)]
            #[linkme(crate = #private::linkme)]
            static __MPROC_TASK_ENTRY: #private::TaskEntry =
                #private::TaskEntry::of::<#name>();

            #(#wire_checks)*
        };

        #byte_notes
    }
}

/// True for the type `Vec<u8>` as written (`Vec<u8>`, `std::vec::Vec<u8>`,
/// `alloc::vec::Vec<u8>`).
fn is_vec_u8(ty: &Type) -> bool {
    let Type::Path(p) = ty else { return false };
    if p.qself.is_some() {
        return false;
    }
    let Some(last) = p.path.segments.last() else {
        return false;
    };
    if last.ident != "Vec" {
        return false;
    }
    let syn::PathArguments::AngleBracketed(a) = &last.arguments else {
        return false;
    };
    matches!(
        a.args.iter().collect::<Vec<_>>()[..],
        [syn::GenericArgument::Type(Type::Path(inner))]
            if inner.qself.is_none() && inner.path.is_ident("u8")
    )
}

/// A compile-time note (a deprecation warning, the one lint a macro can
/// raise) at every `Vec<u8>` argument or return type of a task: serde
/// encodes a `Vec<u8>` one element at a time, where `mproc::Bytes` is one
/// byte string (and goes out of band when large). `#[allow(deprecated)]`
/// on the function keeps `Vec<u8>` without the note.
fn vec_u8_notes(task: &Task, rest: &[&syn::Attribute], cfgs: &[&syn::Attribute]) -> TokenStream {
    let allowed = rest.iter().any(|a| {
        a.path().is_ident("allow")
            && a.parse_args_with(
                syn::punctuated::Punctuated::<syn::Path, syn::Token![,]>::parse_terminated,
            )
            .is_ok_and(|lints| lints.iter().any(|l| l.is_ident("deprecated")))
    });
    if allowed {
        return TokenStream::new();
    }
    let notes = task
        .parts
        .inputs
        .iter()
        .chain(task.parts.output.iter())
        .filter(|ty| is_vec_u8(ty))
        .map(|ty| {
            quote_spanned! {ty.span()=>
                #(#cfgs)*
                const _: () = {
                    #[deprecated(
                        note = "a task's `Vec<u8>` is encoded byte by byte (about 1.5 ns per \
                                byte); use `mproc::Bytes`, one byte string (out of band when \
                                large), or put `#[allow(deprecated)]` on the task to keep it"
                    )]
                    #[allow(non_camel_case_types)]
                    struct Vec_u8_in_a_task;
                    let _ = Vec_u8_in_a_task;
                };
            }
        });
    quote!(#(#notes)*)
}

/// Parses the attribute's arguments; on an error, the defaults and the
/// error, so the item can still be expanded.
pub(crate) fn parse_args(attr: TokenStream, attribute: &str) -> (Args, Option<syn::Error>) {
    match Args::parse(attr, attribute) {
        Ok(args) => (args, None),
        Err(error) => (Args::default(), Some(error)),
    }
}

/// The first message of `error` as a `compile_error!` to put in a stand-in
/// type, and the others as items.
pub(crate) fn split_first(error: syn::Error) -> (TokenStream, TokenStream) {
    split_at(error, 0)
}

/// The last message of `error` as a `compile_error!` to put in a stand-in
/// type emitted after the items, and the others as those items: the
/// compiler then reports them in their order.
pub(crate) fn split_last(error: syn::Error) -> (TokenStream, TokenStream) {
    let last = error.clone().into_iter().count() - 1;
    split_at(error, last)
}

/// Message `index` of `error` as a `compile_error!`, and the others.
fn split_at(error: syn::Error, index: usize) -> (TokenStream, TokenStream) {
    let (mut one, mut others) = (TokenStream::new(), TokenStream::new());
    for (i, e) in error.into_iter().enumerate() {
        let target = if i == index { &mut one } else { &mut others };
        target.extend(e.into_compile_error());
    }
    (one, others)
}

/// `n` names for arguments passed by position: `__mproc_arg0`, ... They
/// are hygienic, so they clash with no name of the user's.
pub(crate) fn positional_names(n: usize) -> Vec<Ident> {
    (0..n)
        .map(|i| format_ident!("__mproc_arg{}", i, span = Span::mixed_site()))
        .collect()
}

/// The declared return type, `()` when there is none.
pub(crate) fn output_type(output: Option<&Type>) -> TokenStream {
    match output {
        Some(ty) => ty.to_token_stream(),
        None => quote!(()),
    }
}

/// The type that carries the arguments `inputs` of `sig` as one value: the
/// type itself for one argument, else a tuple. The tuple is spanned at the
/// argument list, so an unsatisfied bound on it (reported by the compiler
/// on the trait impl that names it) points there, not at the attribute.
pub(crate) fn args_type(inputs: &[Type], sig: &Signature) -> TokenStream {
    match inputs.len() {
        1 => inputs[0].to_token_stream(),
        _ => {
            let mut tuple = Group::new(Delimiter::Parenthesis, quote!(#(#inputs),*));
            tuple.set_span(sig.paren_token.span.join());
            tuple.to_token_stream()
        }
    }
}

/// The pattern that takes a value of [`args_type`] apart into `names`.
pub(crate) fn args_pattern(names: &[Ident]) -> TokenStream {
    match names.len() {
        0 => quote!(_),
        1 => names[0].to_token_stream(),
        _ => quote!((#(#names),*)),
    }
}

/// A call of the compile-time check `assert::<ty>()`, spanned at `ty` so
/// that an unsatisfied bound is reported at that type.
pub(crate) fn assert_on(ty: &Type, assert: &TokenStream) -> TokenStream {
    quote_spanned!(ty.span()=> #assert::<#ty>();)
}
