//! Checks: what a function must look like to become a task, and what an
//! actor type and its `impl` block must look like.
//!
//! Each rule gives a `syn::Error` spanned on the offending token, and all of
//! them are reported at once. The serde bounds are not checked here but by
//! the compiler, on code that `expand.rs` and `actor.rs` span at each
//! argument type.
//!
//! The rules on a signature (qualifiers, generics, borrowed and `impl Trait`
//! types) are shared by tasks, actor methods and actor constructors; only
//! the wording of their errors differs, see [`Subject`].

use quote::{quote, ToTokens};
use syn::ext::IdentExt;
use syn::visit::Visit;
use syn::{
    Error, Generics, Item, Lifetime, Receiver, Result, Signature, Type, TypeImplTrait,
    TypeReference,
};

use crate::ast::{ActorFn, ActorImpl, Role, Task};

pub(crate) use crate::errors::Errors;

/// What a signature rule is about, for the wording of its errors.
pub(crate) struct Subject {
    /// The plural that starts most messages: "mproc tasks".
    what: &'static str,
    /// The same, for the arguments: "mproc task arguments".
    args: &'static str,
    /// One of them, indefinite: "a task".
    one: &'static str,
    /// One of them, definite: "the task".
    the: &'static str,
    /// How the other process finds it: "the task by name".
    found: &'static str,
    /// The process that calls it: "a worker process".
    caller: &'static str,
    /// The process that decodes its arguments: "the worker process".
    decoder: &'static str,
    /// Whether `const fn` is accepted (it is harmless on a constructor,
    /// which is where clippy suggests it).
    const_ok: bool,
}

/// A `#[task]` function.
const TASK: Subject = Subject {
    what: "mproc tasks",
    args: "mproc task arguments",
    one: "a task",
    the: "the task",
    found: "the task by name",
    caller: "a worker process",
    decoder: "the worker process",
    const_ok: false,
};

/// A method of an `#[actor]` impl block: a function with a receiver.
const METHOD: Subject = Subject {
    what: "mproc actor methods",
    args: "mproc actor method arguments",
    one: "an actor method",
    the: "the method",
    found: "the method by name",
    caller: "the actor's process",
    decoder: "the actor's process",
    const_ok: false,
};

/// The constructor of an `#[actor]`, `new`.
const CONSTRUCTOR: Subject = Subject {
    what: "mproc actor constructors",
    args: "mproc actor constructor arguments",
    one: "an actor constructor",
    the: "the constructor",
    found: "the constructor by its type's name",
    caller: "the actor's process",
    decoder: "the actor's process",
    const_ok: true,
};

/// Checks every rule on `task`; all violations are reported together.
pub(crate) fn validate(task: &Task) -> Result<()> {
    let mut errors = Errors::default();
    let sig = &task.item.sig;
    check_header(sig, &TASK, &mut errors);
    for receiver in &task.parts.receivers {
        errors.push(Error::new_spanned(
            receiver,
            "mproc tasks cannot take `self`: a task is a free function that a worker process \
             calls by name; move it out of the `impl` block and pass the value as an argument",
        ));
    }
    check_types(
        sig,
        &task.parts.inputs,
        task.parts.output.as_ref(),
        &TASK,
        &mut errors,
    );
    errors.finish()
}

/// Checks the qualifiers (`const`, `unsafe`, `extern`), the generic
/// parameters and the `where` clause of `sig`.
fn check_header(sig: &Signature, subject: &Subject, errors: &mut Errors) {
    let Subject {
        what,
        one,
        the,
        found,
        caller,
        ..
    } = subject;
    if let Some(constness) = sig.constness.as_ref().filter(|_| !subject.const_ok) {
        errors.push(Error::new_spanned(
            constness,
            format!(
                "{what} cannot be `const fn`: {one} is called at run time, in {caller}; \
                 remove `const`"
            ),
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.push(Error::new_spanned(
            unsafety,
            format!(
                "{what} cannot be `unsafe fn`: {caller} calls {the} and cannot uphold its \
                 safety contract; make the function safe and use `unsafe` blocks inside"
            ),
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(Error::new_spanned(
            abi,
            format!(
                "{what} cannot have an `extern` ABI: {caller} calls them as Rust functions; \
                 remove the ABI"
            ),
        ));
    }
    if !sig.generics.params.is_empty() {
        errors.push(Error::new_spanned(
            &sig.generics,
            format!(
                "{what} cannot be generic: their arguments are sent to another process, which \
                 finds {found} alone and must know the concrete types"
            ),
        ));
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        errors.push(Error::new_spanned(
            where_clause,
            format!(
                "{what} cannot have a `where` clause: their arguments are sent to another \
                 process, which finds {found} alone and must know the concrete types"
            ),
        ));
    }
}

/// Checks that `sig` is not variadic and that `inputs` and `output` (its
/// types, when they are to be checked) are neither borrowed nor
/// `impl Trait`.
fn check_types(
    sig: &Signature,
    inputs: &[Type],
    output: Option<&Type>,
    subject: &Subject,
    errors: &mut Errors,
) {
    if let Some(variadic) = &sig.variadic {
        errors.push(Error::new_spanned(
            variadic,
            format!(
                "{} cannot be variadic: their arguments are a fixed list of types",
                subject.what
            ),
        ));
    }
    for ty in inputs {
        check_type(ty, Position::Argument, subject, errors);
    }
    if let Some(ty) = output {
        check_type(ty, Position::Return, subject, errors);
    }
}

/// Where a type appears in the signature, for the wording of errors.
#[derive(Clone, Copy)]
enum Position {
    Argument,
    Return,
}

/// Rejects references, lifetimes other than `'static` and `impl Trait`
/// anywhere inside `ty`.
fn check_type(ty: &Type, position: Position, subject: &Subject, errors: &mut Errors) {
    struct Checker<'e> {
        position: Position,
        subject: &'e Subject,
        errors: &'e mut Errors,
    }

    impl<'ast> Visit<'ast> for Checker<'_> {
        fn visit_type_reference(&mut self, r: &'ast TypeReference) {
            let Subject { what, args, .. } = self.subject;
            let msg = match self.position {
                Position::Argument => format!(
                    "{args} cannot be borrowed: they are serialized and sent to another \
                     process; take an owned type instead (`String` for `&str`, `Vec<T>` for \
                     `&[T]`, `T` for `&T`)"
                ),
                Position::Return => format!(
                    "{what} cannot return borrowed data: the result is serialized and sent \
                     back from another process; return an owned type instead"
                ),
            };
            self.errors.push(Error::new_spanned(r, msg));
            // Not descending: one error per reference is enough.
        }

        fn visit_type_impl_trait(&mut self, i: &'ast TypeImplTrait) {
            let Subject {
                what,
                args,
                decoder,
                ..
            } = self.subject;
            let msg = match self.position {
                Position::Argument => format!(
                    "{args} cannot be `impl Trait`: {decoder} deserializes them and must know \
                     their concrete type"
                ),
                Position::Return => format!(
                    "{what} cannot return `impl Trait`: the caller deserializes the result and \
                     must know its concrete type (for a future, write an `async fn`)"
                ),
            };
            self.errors.push(Error::new_spanned(i, msg));
        }

        fn visit_lifetime(&mut self, l: &'ast Lifetime) {
            if l.ident != "static" {
                let Subject { what, args, .. } = self.subject;
                let msg = match self.position {
                    Position::Argument => format!(
                        "{args} cannot hold borrowed data: they are deserialized in another \
                         process and must own their data (`'static` is the only lifetime \
                         allowed)"
                    ),
                    Position::Return => format!(
                        "{what} cannot return borrowed data: the result is deserialized in \
                         another process and must own its data (`'static` is the only \
                         lifetime allowed)"
                    ),
                };
                self.errors.push(Error::new_spanned(l, msg));
            }
        }
    }

    Checker {
        position,
        subject,
        errors,
    }
    .visit_type(ty);
}

/// Why an actor type cannot be generic.
const GENERIC_ACTOR: &str = "mproc actors cannot be generic: an actor's process builds it from \
                             its type's name alone and must know the concrete type";

/// Why an actor type cannot have a `where` clause.
const WHERE_ACTOR: &str = "mproc actors cannot have a `where` clause: an actor's process builds \
                           it from its type's name alone and must know the concrete type";

/// Checks the generics of an actor type, or of an actor's `impl` block.
fn check_actor_generics(generics: &Generics, errors: &mut Errors) {
    if !generics.params.is_empty() {
        errors.push(Error::new_spanned(generics, GENERIC_ACTOR));
    }
    if let Some(where_clause) = &generics.where_clause {
        errors.push(Error::new_spanned(where_clause, WHERE_ACTOR));
    }
}

/// Checks the `struct` or `enum` that `#[actor]` is put on.
pub(crate) fn validate_actor_type(item: &Item) -> Result<()> {
    let mut errors = Errors::default();
    match item {
        Item::Struct(s) => check_actor_generics(&s.generics, &mut errors),
        Item::Enum(e) => check_actor_generics(&e.generics, &mut errors),
        _ => unreachable!("ActorItem::parse keeps only structs and enums"),
    }
    errors.finish()
}

/// Checks every rule on an actor's `impl` block; all violations are
/// reported together, except on a trait impl, which is reported alone.
pub(crate) fn validate_actor_impl(imp: &ActorImpl) -> Result<()> {
    let mut errors = Errors::default();
    let item = &imp.item;
    let self_ty = &item.self_ty;
    let type_name = match imp.type_name() {
        Some(name) => name.unraw().to_string(),
        None => "Type".to_string(),
    };
    if let Some((bang, path, for_token)) = &item.trait_ {
        return Err(Error::new_spanned(
            quote!(#bang #path #for_token),
            format!(
                "`#[actor]` goes on the actor type's own `impl` block (`impl {type_name} {{ .. }}`), \
                 not on an implementation of a trait: the actor's methods are those of that block"
            ),
        ));
    }
    check_actor_generics(&item.generics, &mut errors);
    if item.generics.params.is_empty() {
        // Else `impl<T> Holder<T>` is one mistake, already reported.
        check_self_type(self_ty, &mut errors);
    }

    match imp.constructor() {
        Some(ctor) => check_constructor(ctor, &type_name, &mut errors),
        None => errors.push(Error::new_spanned(
            self_ty,
            format!(
                "an mproc actor needs a constructor in this `impl` block: an associated \
                 function `new` that returns `Self`, e.g. `fn new(start: u64) -> Self`; its \
                 arguments are what `{type_name}::spawn` takes"
            ),
        )),
    }
    for f in &imp.fns {
        let name = f.name().unraw();
        if name == "spawn" || name == "spawn_with" {
            let call = if name == "spawn" {
                "spawn(&executor, args)"
            } else {
                "spawn_with(&executor, args, options)"
            };
            errors.push(Error::new_spanned(
                f.name(),
                format!(
                    "`{name}` is taken by `#[actor]`, which generates `{type_name}::{call}` to \
                     start an actor; rename this function"
                ),
            ));
        }
        if f.role == Role::Method {
            check_method(f, &mut errors);
        }
    }
    errors.finish()
}

/// Checks that the self type is a path without generic arguments.
fn check_self_type(self_ty: &Type, errors: &mut Errors) {
    let path = match self_ty {
        Type::Path(p) if p.qself.is_none() => &p.path,
        _ => {
            errors.push(Error::new_spanned(
                self_ty,
                "`#[actor]` goes on the `impl` block of a type named by its path \
                 (`impl Counter { .. }`)",
            ));
            return;
        }
    };
    for segment in &path.segments {
        if !segment.arguments.is_none() {
            errors.push(Error::new_spanned(&segment.arguments, GENERIC_ACTOR));
        }
    }
}

/// Checks the constructor: no receiver, not `async`, returns `Self`, and
/// the rules on any signature.
fn check_constructor(ctor: &ActorFn, type_name: &str, errors: &mut Errors) {
    let sig = &ctor.item.sig;
    if let Some(asyncness) = &sig.asyncness {
        errors.push(Error::new_spanned(
            asyncness,
            "the constructor `new` of an mproc actor cannot be `async`: the actor's process \
             builds the actor before it runs anything else; do asynchronous set-up in an \
             `async` method",
        ));
    }
    check_header(sig, &CONSTRUCTOR, errors);
    for receiver in &ctor.parts.receivers {
        errors.push(Error::new_spanned(
            receiver,
            "the constructor `new` of an mproc actor cannot take `self`: it builds the actor, \
             in the actor's process, from its arguments alone",
        ));
    }
    check_types(sig, &ctor.parts.inputs, None, &CONSTRUCTOR, errors);
    let returns_self =
        match &ctor.parts.output {
            Some(Type::Path(p)) if p.qself.is_none() => p.path.segments.last().is_some_and(|s| {
                s.arguments.is_none() && (s.ident == "Self" || s.ident == type_name)
            }),
            _ => false,
        };
    if !returns_self {
        let msg = format!(
            "the constructor `new` of an mproc actor must return `Self` (or `{type_name}`): \
             the actor's process keeps the value it returns and runs the methods on it"
        );
        errors.push(match &ctor.parts.output {
            Some(ty) => Error::new_spanned(ty, msg),
            None => Error::new_spanned(&sig.ident, msg),
        });
    }
}

/// Checks an actor method: its receiver, and the rules on any signature.
fn check_method(method: &ActorFn, errors: &mut Errors) {
    let sig = &method.item.sig;
    check_header(sig, &METHOD, errors);
    for receiver in method.parts.receivers.iter().filter(|r| !by_reference(r)) {
        errors.push(Error::new_spanned(
            receiver,
            "mproc actor methods take `&self` or `&mut self`: the actor stays in its process \
             between calls, so a method cannot take it by value or behind another pointer",
        ));
    }
    check_types(
        sig,
        &method.parts.inputs,
        method.parts.output.as_ref(),
        &METHOD,
        errors,
    );
}

/// Whether `receiver` is `&self` or `&mut self` (or `self: &Self`,
/// `self: &mut Self`).
fn by_reference(receiver: &Receiver) -> bool {
    match &*receiver.ty {
        Type::Reference(r) => r.elem.to_token_stream().to_string() == "Self",
        _ => false,
    }
}
