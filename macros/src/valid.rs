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

use syn::visit::Visit;
use syn::{Error, Lifetime, Result, Signature, Type, TypeImplTrait, TypeReference};

use crate::ast::Task;

/// Collects every error, in source order.
#[derive(Default)]
pub(crate) struct Errors(Option<Error>);

impl Errors {
    pub(crate) fn push(&mut self, e: Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub(crate) fn finish(self) -> Result<()> {
        self.0.map_or(Ok(()), Err)
    }

    /// The errors among `errors`, combined in order.
    pub(crate) fn of(errors: impl IntoIterator<Item = Option<Error>>) -> Result<()> {
        let mut all = Errors::default();
        errors.into_iter().flatten().for_each(|e| all.push(e));
        all.finish()
    }
}

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
