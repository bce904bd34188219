//! Parsing: the attribute's arguments and the item it is put on.
//!
//! Nothing here judges the input; it only takes it apart and keeps the
//! original tokens, so `valid.rs` can point its errors at them and
//! `expand.rs` / `actor.rs` can reuse them with their spans.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{
    parse_quote, Attribute, Error, FnArg, Ident, ImplItem, ImplItemFn, Item, ItemFn, ItemImpl, Pat,
    Path, Receiver, Result, ReturnType, Signature, Token, Type, Visibility,
};

use crate::errors::Errors;

/// The arguments of `#[task(...)]` and `#[actor(...)]`.
#[derive(Default)]
pub(crate) struct Args {
    /// `crate = path`: where the `mproc` facade is, `::mproc` by default.
    pub(crate) krate: Option<Path>,
}

impl Args {
    /// Parses the arguments of `#[<attribute>(...)]`; an empty list is the
    /// usual case.
    ///
    /// Every argument is parsed before an error is returned, so that all
    /// unknown ones are reported at once.
    pub(crate) fn parse(attr: TokenStream, attribute: &str) -> Result<Self> {
        let mut args = Args::default();
        if attr.is_empty() {
            return Ok(args);
        }
        let list = Punctuated::<Arg, Token![,]>::parse_terminated.parse2(attr)?;
        let mut errors = Errors::default();
        for arg in list {
            match arg {
                Arg::Crate(kw, path) => {
                    if args.krate.is_some() {
                        errors.push(Error::new_spanned(kw, "duplicate `crate` argument"));
                    } else {
                        args.krate = Some(path);
                    }
                }
                Arg::Unknown(tokens) => errors.push(Error::new_spanned(
                    tokens,
                    format!(
                        "unknown argument to `#[{attribute}]`: the only one accepted is \
                         `crate = path::to::mproc`"
                    ),
                )),
            }
        }
        errors.finish().map(|()| args)
    }

    /// The path of the facade: the `crate = ...` argument, else `::mproc`.
    pub(crate) fn krate(&self) -> Path {
        self.krate.clone().unwrap_or_else(|| parse_quote!(::mproc))
    }
}

/// One comma-separated argument of `#[task(...)]` or `#[actor(...)]`.
enum Arg {
    /// `crate = path`.
    Crate(Token![crate], Path),
    /// Anything else, kept whole for the error message.
    Unknown(TokenStream),
}

impl Parse for Arg {
    fn parse(input: ParseStream<'_>) -> Result<Self> {
        if input.peek(Token![crate]) && input.peek2(Token![=]) {
            let kw: Token![crate] = input.parse()?;
            input.parse::<Token![=]>()?;
            let path = input.call(Path::parse_mod_style)?;
            return Ok(Arg::Crate(kw, path));
        }
        // Take everything up to the next top-level comma.
        let mut tokens = TokenStream::new();
        while !input.is_empty() && !input.peek(Token![,]) {
            tokens.extend(std::iter::once(input.parse::<TokenTree>()?));
        }
        Ok(Arg::Unknown(tokens))
    }
}

/// The parts of a function's signature that the checks and the expansions
/// look at, taken apart once.
pub(crate) struct FnParts {
    /// The types of its typed arguments, in order (receivers are in
    /// `receivers`).
    pub(crate) inputs: Vec<Type>,
    /// Their patterns, in the same order. A task does not need them: any
    /// irrefutable pattern (`x`, `mut x`, `(a, b)`, `_`) stays on the
    /// original function, and the generated code passes the arguments by
    /// position. An actor's client reuses the plain names.
    pub(crate) patterns: Vec<Pat>,
    /// `self` receivers, kept to judge them and to point at them.
    pub(crate) receivers: Vec<Receiver>,
    /// The declared return type, `None` when omitted.
    pub(crate) output: Option<Type>,
}

impl FnParts {
    /// Takes `sig` apart.
    pub(crate) fn of(sig: &Signature) -> Self {
        let mut parts = FnParts {
            inputs: Vec::new(),
            patterns: Vec::new(),
            receivers: Vec::new(),
            output: None,
        };
        for arg in &sig.inputs {
            match arg {
                FnArg::Receiver(r) => parts.receivers.push(r.clone()),
                FnArg::Typed(t) => {
                    parts.inputs.push((*t.ty).clone());
                    parts.patterns.push((*t.pat).clone());
                }
            }
        }
        if let ReturnType::Type(_, ty) = &sig.output {
            parts.output = Some((**ty).clone());
        }
        parts
    }
}

/// The function `#[task]` is put on.
pub(crate) struct Task {
    /// The function as written, untouched.
    pub(crate) item: ItemFn,
    /// Its signature taken apart.
    pub(crate) parts: FnParts,
}

impl Task {
    /// Parses the item; anything other than a function is an error.
    pub(crate) fn parse(item: TokenStream) -> Result<Self> {
        let item: ItemFn = syn::parse2(item).map_err(|e| {
            Error::new(
                e.span(),
                format!("`#[task]` can only be put on a function ({e})"),
            )
        })?;
        let parts = FnParts::of(&item.sig);
        Ok(Task { item, parts })
    }

    /// The function's name as written (possibly a raw identifier).
    pub(crate) fn name(&self) -> &Ident {
        &self.item.sig.ident
    }

    /// Whether the function is an `async fn`.
    pub(crate) fn is_async(&self) -> bool {
        self.item.sig.asyncness.is_some()
    }
}

/// Sorts the function's attributes by where the expansion puts them.
pub(crate) struct Attrs<'a> {
    /// `///` comments, `#[doc]` and `#[deprecated]`: moved to the unit
    /// struct, which is what users name. (On the hidden function,
    /// `#[deprecated]` would only warn about the generated code.)
    pub(crate) docs: Vec<&'a Attribute>,
    /// `#[cfg(...)]`: copied onto every generated item so they come and go
    /// together.
    pub(crate) cfgs: Vec<&'a Attribute>,
    /// Everything else (`#[inline]`, `#[allow]`, ...): kept on the function.
    pub(crate) rest: Vec<&'a Attribute>,
}

impl<'a> Attrs<'a> {
    /// Sorts `attrs`.
    pub(crate) fn sort(attrs: &'a [Attribute]) -> Self {
        let mut sorted = Attrs {
            docs: Vec::new(),
            cfgs: Vec::new(),
            rest: Vec::new(),
        };
        for attr in attrs {
            if attr.path().is_ident("doc") || attr.path().is_ident("deprecated") {
                sorted.docs.push(attr);
            } else if attr.path().is_ident("cfg") {
                sorted.cfgs.push(attr);
                sorted.rest.push(attr);
            } else {
                sorted.rest.push(attr);
            }
        }
        sorted
    }
}

/// The error for an item `#[actor]` cannot be put on.
const NOT_AN_ACTOR: &str = "`#[actor]` can only be put on an actor type (a `struct` or an `enum`) \
                            and on its `impl` block";

/// What `#[actor]` is put on.
pub(crate) enum ActorItem {
    /// The actor type, an `Item::Struct` or an `Item::Enum`: checked, then
    /// emitted unchanged.
    Type(Item),
    /// The type's `impl` block, which the expansion works from.
    Impl(ActorImpl),
}

impl ActorItem {
    /// Parses the item; anything but a struct, an enum or an `impl` block is
    /// an error, pointed at its keyword.
    pub(crate) fn parse(tokens: TokenStream) -> Result<Self> {
        let item: Item = syn::parse2(tokens.clone())
            .map_err(|e| Error::new(e.span(), format!("{NOT_AN_ACTOR} ({e})")))?;
        match item {
            Item::Struct(_) | Item::Enum(_) => Ok(ActorItem::Type(item)),
            Item::Impl(item) => Ok(ActorItem::Impl(ActorImpl::new(item))),
            _ => Err(Error::new(keyword_span(tokens), NOT_AN_ACTOR)),
        }
    }
}

/// The span of an item's first token after its attributes and visibility:
/// `fn`, `trait`, `mod`, `async`, ...
fn keyword_span(tokens: TokenStream) -> Span {
    let first = |input: ParseStream<'_>| -> Result<Span> {
        input.call(Attribute::parse_outer)?;
        input.parse::<Visibility>()?;
        let span = input.parse::<TokenTree>()?.span();
        input.parse::<TokenStream>()?;
        Ok(span)
    };
    first.parse2(tokens).unwrap_or_else(|_| Span::call_site())
}

/// The `impl` block `#[actor]` is put on.
pub(crate) struct ActorImpl {
    /// The block as written, untouched.
    pub(crate) item: ItemImpl,
    /// Its functions, in order, each with its role.
    pub(crate) fns: Vec<ActorFn>,
}

/// A function of an actor's `impl` block.
pub(crate) struct ActorFn {
    /// The function as written.
    pub(crate) item: ImplItemFn,
    /// Its signature taken apart.
    pub(crate) parts: FnParts,
    /// What the expansion makes of it.
    pub(crate) role: Role,
}

/// What a function of the `impl` block is to the actor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Role {
    /// Named `new`: builds the actor in its process (whether or not it has
    /// the right shape, which `valid.rs` judges).
    Constructor,
    /// Takes a `self` receiver, of whatever kind: callable through the
    /// client.
    Method,
    /// Neither: an associated function, kept as it is.
    Other,
}

impl ActorImpl {
    fn new(item: ItemImpl) -> Self {
        let fns = item
            .items
            .iter()
            .filter_map(|item| match item {
                ImplItem::Fn(f) => Some(f),
                _ => None,
            })
            .map(|f| {
                let parts = FnParts::of(&f.sig);
                let role = if f.sig.ident.unraw() == "new" {
                    Role::Constructor
                } else if parts.receivers.is_empty() {
                    Role::Other
                } else {
                    Role::Method
                };
                ActorFn {
                    item: f.clone(),
                    parts,
                    role,
                }
            })
            .collect();
        ActorImpl { item, fns }
    }

    /// The name of the actor type: the last segment of the `impl`'s self
    /// type, when that is a path (`Counter`, `super::Counter`).
    pub(crate) fn type_name(&self) -> Option<&Ident> {
        match &*self.item.self_ty {
            Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| &s.ident),
            _ => None,
        }
    }

    /// The constructor, `new`: the first function of that name.
    pub(crate) fn constructor(&self) -> Option<&ActorFn> {
        self.fns.iter().find(|f| f.role == Role::Constructor)
    }

    /// The actor methods, in the order of the block: method `i` of the
    /// wire protocol is the `i`-th.
    pub(crate) fn methods(&self) -> impl Iterator<Item = &ActorFn> {
        self.fns.iter().filter(|f| f.role == Role::Method)
    }
}

impl ActorFn {
    /// The function's name as written (possibly a raw identifier).
    pub(crate) fn name(&self) -> &Ident {
        &self.item.sig.ident
    }

    /// Whether the function is an `async fn`.
    pub(crate) fn is_async(&self) -> bool {
        self.item.sig.asyncness.is_some()
    }
}
