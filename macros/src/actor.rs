//! Code generation for `#[actor]`: from a checked [`ActorImpl`] to the
//! items it emits.
//!
//! For `impl Counter { fn new(start: u64) -> Self; fn incr(&mut self, by:
//! u64) -> u64; .. }` the output is, in order (`::mproc` stands for the
//! facade path, see `crate = ...`):
//!
//! 1. the `impl` block itself, unchanged;
//! 2. `impl ::mproc::__private::ActorType for Counter`: the constructor's
//!    arguments as one type, the stable name, the method names, and
//!    `construct`, which calls `new`;
//! 3. `impl ::mproc::__private::ActorObject for Counter`: method number →
//!    decode the argument tuple, call the method (`.await` it if `async`),
//!    encode the result;
//! 4. the client, `pub struct CounterClient`, its `ActorClient` impl and
//!    one method per actor method, which sends the call;
//! 5. `impl ::mproc::Actor for Counter { type Client = CounterClient; }`;
//! 6. `Counter::spawn` and `Counter::spawn_with`;
//! 7. a `const _` block holding the registry entry (a `linkme` element of
//!    `ACTORS`) and the compile-time checks of argument types that the
//!    generated calls do not make themselves (see [`Method`]), each spanned
//!    at its type.
//!
//! On the `struct` or `enum`, `#[actor]` only checks that it is not
//! generic; all the code comes from the `impl` block.

use proc_macro2::{Delimiter, Group, Literal, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{Attribute, ExprPath, Ident, LitStr, Pat, Path, QSelf, Type, TypePath, Visibility};

use crate::ast::{ActorFn, ActorImpl, ActorItem, Args, Attrs};
use crate::expand::{
    args_pattern, args_type, assert_on, output_type, parse_args, positional_names, split_last,
};
use crate::valid::{self, Errors};

/// The whole attribute: parse, check, generate.
///
/// On an error the compile errors come first, then:
/// - for an actor type (struct or enum), the item as written;
/// - for an `impl` block that broke a rule, the block as written and, when
///   its self type is a plain type name, stand-ins for the generated items
///   ([`stand_in`]), so that code using the actor reports nothing more;
/// - for anything else, the item as written;
/// - for a valid `impl` block with bad attribute arguments, the full
///   expansion against `::mproc`.
pub(crate) fn actor(attr: TokenStream, item: TokenStream) -> TokenStream {
    let (args, args_error) = parse_args(attr, "actor");
    let imp = match ActorItem::parse(item.clone()) {
        Ok(ActorItem::Impl(imp)) => imp,
        Ok(ActorItem::Type(ty)) => {
            let type_error = valid::validate_actor_type(&ty).err();
            return with_errors(Errors::of([args_error, type_error]), item);
        }
        Err(error) => return with_errors(Errors::of([args_error, Some(error)]), item),
    };
    let impl_error = valid::validate_actor_impl(&imp).err();
    let impl_is_valid = impl_error.is_none();
    match Errors::of([args_error, impl_error]) {
        Ok(()) => expand(&imp, &args),
        Err(error) if impl_is_valid => with_errors(Err(error), expand(&imp, &args)),
        Err(error) if can_stand_in(&imp) => stand_in(&imp, &args, error),
        Err(error) => with_errors(Err(error), item),
    }
}

/// `tokens`, after the compile errors of `result` if any.
fn with_errors(result: syn::Result<()>, tokens: TokenStream) -> TokenStream {
    match result {
        Ok(()) => tokens,
        Err(error) => {
            let mut all = error.into_compile_error();
            all.extend(tokens);
            all
        }
    }
}

/// Whether the stand-ins of a rejected block would compile: the block is
/// not a trait impl and has no generics, and its self type is a type name.
/// (Otherwise they would add errors, or clash with the real actor's.)
fn can_stand_in(imp: &ActorImpl) -> bool {
    let item = &imp.item;
    let plain_path = match &*item.self_ty {
        Type::Path(p) => p.qself.is_none() && p.path.segments.iter().all(|s| s.arguments.is_none()),
        _ => false,
    };
    item.trait_.is_none()
        && item.generics.params.is_empty()
        && item.generics.where_clause.is_none()
        && plain_path
}

/// What a rejected `impl` block becomes: the block unchanged, and impls of
/// `ActorType`, `ActorObject` and `Actor`, plus `spawn` and `spawn_with`.
/// `Args` is a type that holds the last error (`[(); { compile_error!(..)
/// }]`, as for a rejected task), about which the compiler reports no
/// mismatch, so `Counter::spawn(&executor, 5)` is not reported a second
/// time. `Client` is a projection on that type, which the compiler
/// normalizes to its "error" type, on which it reports no missing method,
/// so neither is `counter.incr(2)`. (Method calls on the array itself would
/// be reported.)
fn stand_in(imp: &ActorImpl, args: &Args, error: syn::Error) -> TokenStream {
    let krate = args.krate();
    let private = quote!(#krate::__private);
    let item = &imp.item;
    let self_ty = &item.self_ty;
    let cfgs = Attrs::sort(&item.attrs).cfgs;
    let (last, other_errors) = split_last(error);
    let args_ty = quote!(<Self as #private::ActorType>::Args);
    let taken = |name: &str| imp.fns.iter().any(|f| f.name().unraw() == name);
    let spawn = (!taken("spawn") && !taken("spawn_with")).then(|| {
        let vis = imp
            .constructor()
            .map_or(quote!(pub), |c| c.item.vis.to_token_stream());
        spawn_fns(self_ty, &vis, &args_ty, &krate, &cfgs)
    });

    quote! {
        #other_errors

        #item

        #(#cfgs)*
        impl #private::ActorType for #self_ty {
            type Args = [(); { #last }];
            const NAME: &'static str = "";
            const METHODS: &'static [&'static str] = &[];
            fn construct(_: Self::Args) -> Self {
                ::core::unreachable!()
            }
        }

        #(#cfgs)*
        impl #private::ActorObject for #self_ty {
            fn call<'a>(&'a mut self, _: u32, _: &'a [u8]) -> #private::MethodFuture<'a> {
                ::core::unreachable!()
            }
        }

        #(#cfgs)*
        impl #krate::Actor for #self_ty {
            type Client = <#args_ty as ::core::iter::IntoIterator>::Item;
        }

        #spawn
    }
}

/// The items generated for a valid `impl` block.
fn expand(imp: &ActorImpl, args: &Args) -> TokenStream {
    let krate = args.krate();
    let private = quote!(#krate::__private);
    let item = &imp.item;
    let self_ty = &*item.self_ty;
    let type_name = imp.type_name().expect("checked by validate_actor_impl");
    let bare = type_name.unraw();
    let type_str = LitStr::new(&bare.to_string(), type_name.span());
    let type_path = compact(self_ty);
    let client = format_ident!("{}Client", bare, span = type_name.span());
    let cfgs = Attrs::sort(&item.attrs).cfgs;

    // The constructor: `ActorType::Args` and `construct`.
    let ctor = imp.constructor().expect("checked by validate_actor_impl");
    let ctor_inputs = without_self(&ctor.parts.inputs, self_ty);
    let ctor_names = positional_names(ctor_inputs.len());
    let args_ty = args_type(&ctor_inputs, &ctor.item.sig);
    let args_pat = args_pattern(&ctor_names);
    // A single argument is `Args` itself, whose bounds the compiler reports
    // at its type; the arguments of a tuple are checked one by one, so the
    // error names the argument rather than the tuple.
    let ctor_checks = ctor_inputs
        .iter()
        .filter(|_| ctor_inputs.len() > 1)
        .map(|ty| assert_on(ty, &quote!(#private::assert_constructor_arg)));

    let methods: Vec<Method<'_>> = imp
        .methods()
        .enumerate()
        .map(|(index, f)| Method::new(f, index, self_ty))
        .collect();
    let method_names = methods.iter().map(|m| &m.name_str);
    let arms = methods.iter().map(|m| m.arm(&private));
    let client_methods = methods.iter().map(|m| m.client_method(&type_path, &krate));
    let method_checks = methods.iter().map(|m| m.checks(&private));

    let spawn = spawn_fns(self_ty, &ctor.item.vis, &args_ty, &krate, &cfgs);
    let client_doc = format!(
        " The client of `{type_path}` actors: what `ActorRef<{type_path}>` derefs to, \
         generated by `#[actor]`."
    );

    // A `#[deprecated]` type or method must not make the generated code
    // that names it warn.
    let allow = quote!(#[allow(deprecated)]);

    quote! {
        #item

        #(#cfgs)*
        #allow
        impl #private::ActorType for #self_ty {
            type Args = #args_ty;
            const NAME: &'static str =
                ::core::concat!(::core::module_path!(), "::", #type_str);
            const METHODS: &'static [&'static str] = &[#(#method_names),*];
            fn construct(#args_pat: Self::Args) -> Self {
                Self::new(#(#ctor_names),*)
            }
        }

        #(#cfgs)*
        #allow
        impl #private::ActorObject for #self_ty {
            fn call<'a>(&'a mut self, method: u32, args: &'a [u8]) -> #private::MethodFuture<'a> {
                match method {
                    #(#arms)*
                    _ => ::std::boxed::Box::pin(async move {
                        let _ = args;
                        ::core::result::Result::Err(#private::unknown_method(
                            <Self as #private::ActorType>::NAME,
                            method
                        ))
                    }),
                }
            }
        }

        #[doc = #client_doc]
        #[doc = ""]
        #[doc = " It has one method per actor method, of the same name and arguments: \
                  each sends the call to the actor's process, to be run there after the \
                  calls made before it, and returns an `ActorCall` that resolves to the \
                  method's result, or to the `TaskError` of a call that failed."]
        #(#cfgs)*
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #[allow(unreachable_pub)]
        pub struct #client {
            raw: #private::RawActorRef,
        }

        #(#cfgs)*
        impl #private::ActorClient for #client {
            fn from_raw(raw: #private::RawActorRef) -> Self {
                Self { raw }
            }
            fn raw(&self) -> &#private::RawActorRef {
                &self.raw
            }
        }

        #(#cfgs)*
        #allow
        impl #client {
            #(#client_methods)*
        }

        #(#cfgs)*
        #allow
        impl #krate::Actor for #self_ty {
            type Client = #client;
        }

        #spawn

        #(#cfgs)*
        #allow
        const _: () = {
            #[#private::linkme::distributed_slice(#private::ACTORS)]
            #[linkme(crate = #private::linkme)]
            static __MPROC_ACTOR_ENTRY: #private::ActorEntry =
                #private::ActorEntry::of::<#self_ty>();

            // Local: the single argument of a method is checked for serde by
            // the generic calls, and only needs this.
            #[allow(dead_code)]
            const fn assert_send<T: ::core::marker::Send + 'static>() {}

            #(#ctor_checks)*
            #(#method_checks)*
        };
    }
}

/// `impl Type { fn spawn(..); fn spawn_with(..) }`, with the visibility
/// `vis` (the constructor's), `args_ty` the constructor's arguments and
/// `cfgs` the `impl` block's `#[cfg]` attributes.
fn spawn_fns(
    self_ty: &Type,
    vis: &impl ToTokens,
    args_ty: &TokenStream,
    krate: &Path,
    cfgs: &[&Attribute],
) -> TokenStream {
    let private = quote!(#krate::__private);
    let started = quote! {
        impl ::core::future::Future<
            Output = ::core::result::Result<#krate::ActorRef<Self>, #krate::Error>
        > + ::core::marker::Send + 'static
    };
    quote! {
        #(#cfgs)*
        #[allow(deprecated)]
        impl #self_ty {
            /// Starts an actor of this type in a process of its own, which
            /// builds it with `new` from `args` (the arguments of `new`: one
            /// as itself, several as a tuple, none as `()`), and resolves to
            /// the handle its methods are called through.
            ///
            /// Generated by `#[actor]`; the same as [`spawn_with`](Self::spawn_with)
            /// with `ActorOptions::default()`.
            #vis fn spawn(executor: &#krate::Executor, args: #args_ty) -> #started {
                #private::spawn_actor::<Self>(
                    executor,
                    args,
                    <#krate::ActorOptions as ::core::default::Default>::default(),
                )
            }

            /// Like [`spawn`](Self::spawn), with options: how many times to
            /// start the actor again if its process dies, the node to start
            /// it on.
            ///
            /// Generated by `#[actor]`.
            #vis fn spawn_with(
                executor: &#krate::Executor,
                args: #args_ty,
                options: #krate::ActorOptions
            ) -> #started {
                #private::spawn_actor::<Self>(executor, args, options)
            }
        }
    }
}

/// One actor method and what the expansion needs of it.
///
/// Its arguments travel as one tuple, `(A,)`, `(A, B)` or `()`, and each of
/// the three generic calls that handle a method's types names them in a
/// turbofish: the client's `RawActorRef::call::<(A, ..), R>`, the actor's
/// `decode_args::<(A, ..)>` and `encode_reply::<R>`. A type that cannot
/// cross a process boundary is reported at that turbofish argument, which
/// is spanned at the type as written: at `R` for the return type, at `A`
/// for a single argument, at the argument list for several (whose types are
/// then also checked one by one, see [`Method::checks`]).
struct Method<'a> {
    f: &'a ActorFn,
    /// Its number on the wire: its rank among the actor methods.
    index: Literal,
    /// Its name without `r#`, for `METHODS` and the calls.
    name_str: LitStr,
    /// Its argument types, `Self` replaced by the actor type.
    inputs: Vec<Type>,
    /// The tuple of the argument types, spanned as said above.
    tuple: TokenStream,
    /// Where the code that handles the arguments is spanned: the single
    /// argument's type, else the argument list.
    args_span: Span,
    /// Its declared return type, `Self` replaced by the actor type; `()`
    /// when there is none.
    output: TokenStream,
}

impl<'a> Method<'a> {
    fn new(f: &'a ActorFn, index: usize, self_ty: &Type) -> Self {
        let index = u32::try_from(index).expect("fewer than 2^32 methods");
        let inputs = without_self(&f.parts.inputs, self_ty);
        let args_span = match &inputs[..] {
            [ty] => ty.span(),
            _ => f.item.sig.paren_token.span.join(),
        };
        let mut tuple = Group::new(Delimiter::Parenthesis, quote!(#(#inputs,)*));
        tuple.set_span(args_span);
        let output = f.parts.output.as_ref().map(|ty| replace_self(ty, self_ty));
        Method {
            f,
            index: Literal::u32_unsuffixed(index),
            name_str: LitStr::new(&f.name().unraw().to_string(), f.name().span()),
            inputs,
            tuple: respan(tuple.to_token_stream(), args_span),
            args_span,
            output: output_type(output.as_ref()),
        }
    }

    /// The match arm of `ActorObject::call` that runs the method: decode
    /// the argument tuple, call, `.await` if `async`, encode the result.
    fn arm(&self, private: &TokenStream) -> TokenStream {
        let Method {
            f,
            index,
            tuple,
            output,
            ..
        } = self;
        let name = f.name();
        let names = positional_names(self.inputs.len());
        let cfgs = Attrs::sort(&f.item.attrs).cfgs;
        let call = quote!(Self::#name(self, #(#names),*));
        let call = match f.is_async() {
            true => quote!(#call.await),
            false => call,
        };
        let decode = respan(quote!(#private::decode_args::<), self.args_span);
        let encode = respan(quote!(#private::encode_reply::<), output.span());
        quote! {
            #(#cfgs)*
            #index => ::std::boxed::Box::pin(async move {
                let (#(#names,)*) = #decode #tuple>(args)?;
                #encode #output>(&#call)
            }),
        }
    }

    /// The client method: same name, docs and arguments, returns an
    /// `ActorCall` of the method's result.
    fn client_method(&self, type_path: &str, krate: &Path) -> TokenStream {
        let Method {
            f,
            index,
            name_str,
            inputs,
            tuple,
            output,
            ..
        } = self;
        let name = f.name();
        let vis: &Visibility = &f.item.vis;
        let Attrs { docs, cfgs, .. } = Attrs::sort(&f.item.attrs);
        let names = client_arg_names(&f.parts.patterns);
        let call = respan(quote!(self.raw.call::<), self.args_span);
        let has_docs = docs.iter().any(|attr| attr.path().is_ident("doc"));
        let separator = has_docs.then(|| quote!(#[doc = ""]));
        let note = format!(
            " Runs `{type_path}::{}` in the actor's process; the call resolves to its \
             result, or to the `TaskError` of a call that failed.",
            name
        );
        quote! {
            #(#docs)*
            #separator
            #[doc = #note]
            #(#cfgs)*
            #vis fn #name(&self, #(#names: #inputs),*) -> #krate::ActorCall<#output> {
                #call #tuple, #output>(#index, #name_str, &(#(#names,)*))
            }
        }
    }

    /// The checks, each spanned at its type, that are not already made by
    /// the generic calls at that type: for several arguments, that each
    /// can cross a process boundary (`assert_wire`); for one, that it is
    /// `Send + 'static` (the calls need only serde).
    fn checks(&self, private: &TokenStream) -> TokenStream {
        let assert = match self.inputs.len() {
            1 => quote!(assert_send),
            _ => quote!(#private::assert_wire),
        };
        let checks = self.inputs.iter().map(|ty| assert_on(ty, &assert));
        let cfgs = Attrs::sort(&self.f.item.attrs).cfgs;
        quote! {
            #(#cfgs)*
            const _: () = { #(#checks)* };
        }
    }
}

/// The client's names for the arguments of patterns `patterns`: the name
/// of a plain binding (`x`, `mut x`), else `arg<i>`, made unique.
fn client_arg_names(patterns: &[Pat]) -> Vec<Ident> {
    let plain: Vec<Option<&Ident>> = patterns
        .iter()
        .map(|pat| match pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => Some(&p.ident),
            _ => None,
        })
        .collect();
    let taken = |name: &str| plain.iter().flatten().any(|ident| *ident == name);
    plain
        .iter()
        .enumerate()
        .map(|(i, ident)| match ident {
            Some(ident) => (*ident).clone(),
            None => {
                let mut name = format!("arg{i}");
                while taken(&name) {
                    name.insert(0, '_');
                }
                Ident::new(&name, Span::call_site())
            }
        })
        .collect()
}

/// `types` with `Self` replaced, see [`replace_self`].
fn without_self(types: &[Type], self_ty: &Type) -> Vec<Type> {
    types.iter().map(|ty| replace_self(ty, self_ty)).collect()
}

/// `ty` with every `Self` replaced by `self_ty`, spanned where `Self` was:
/// the client and the `const _` checks are outside the actor's `impl`, where
/// `Self` means another type or nothing.
fn replace_self(ty: &Type, self_ty: &Type) -> Type {
    struct Replace<'t>(&'t Type);

    impl Replace<'_> {
        /// `self_ty`, every token spanned at `span`.
        fn at(&self, span: Span) -> Type {
            let tokens = respan(self.0.to_token_stream(), span);
            syn::parse2(tokens).expect("a type respanned is a type")
        }

        /// `Self::X` → `<Type>::X`.
        fn qualify(&self, qself: &mut Option<QSelf>, path: &mut Path) {
            let starts_with_self = qself.is_none()
                && path.leading_colon.is_none()
                && path.segments.len() > 1
                && path.segments[0].ident == "Self";
            if starts_with_self {
                let first = path.segments[0].ident.span();
                *qself = Some(QSelf {
                    lt_token: syn::Token![<](first),
                    ty: Box::new(self.at(first)),
                    position: 0,
                    as_token: None,
                    gt_token: syn::Token![>](first),
                });
                path.leading_colon = Some(syn::Token![::](first));
                path.segments = path.segments.iter().skip(1).cloned().collect();
            }
        }
    }

    impl VisitMut for Replace<'_> {
        fn visit_type_mut(&mut self, ty: &mut Type) {
            if let Type::Path(TypePath { qself: None, path }) = ty {
                if let Some(ident) = path.get_ident().filter(|i| *i == "Self") {
                    *ty = self.at(ident.span());
                    return;
                }
            }
            visit_mut::visit_type_mut(self, ty);
        }

        fn visit_type_path_mut(&mut self, p: &mut TypePath) {
            self.qualify(&mut p.qself, &mut p.path);
            visit_mut::visit_type_path_mut(self, p);
        }

        fn visit_expr_path_mut(&mut self, p: &mut ExprPath) {
            self.qualify(&mut p.qself, &mut p.path);
            visit_mut::visit_expr_path_mut(self, p);
        }
    }

    let mut ty = ty.clone();
    Replace(self_ty).visit_type_mut(&mut ty);
    ty
}

/// `tokens` with every span, inside groups too, set to `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tt| {
            if let TokenTree::Group(g) = &tt {
                let mut group = Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                tt = TokenTree::Group(group);
            } else {
                tt.set_span(span);
            }
            tt
        })
        .collect()
}

/// A type as written, without spaces: `Counter`, `super::Counter`.
fn compact(ty: &Type) -> String {
    ty.to_token_stream().to_string().replace(' ', "")
}
