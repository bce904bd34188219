//! Checks: what a function must look like to become a task.
//!
//! Each rule gives a `syn::Error` spanned on the offending token, and all of
//! them are reported at once. The serde bounds are not checked here but by
//! the compiler, on code that `expand.rs` spans at each argument type.

use syn::visit::Visit;
use syn::{Error, Lifetime, Result, Type, TypeImplTrait, TypeReference};

use crate::ast::Task;

/// Collects every error, in source order.
#[derive(Default)]
struct Errors(Option<Error>);

impl Errors {
    fn push(&mut self, e: Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    fn finish(self) -> Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Checks every rule on `task`; all violations are reported together.
pub(crate) fn validate(task: &Task) -> Result<()> {
    let mut errors = Errors::default();
    let sig = &task.item.sig;

    if let Some(constness) = &sig.constness {
        errors.push(Error::new_spanned(
            constness,
            "mproc tasks cannot be `const fn`: a task is called at run time, in a worker \
             process; remove `const`",
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.push(Error::new_spanned(
            unsafety,
            "mproc tasks cannot be `unsafe fn`: a worker process calls the task and cannot \
             uphold its safety contract; make the function safe and use `unsafe` blocks inside",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(Error::new_spanned(
            abi,
            "mproc tasks cannot have an `extern` ABI: a worker process calls them as Rust \
             functions; remove the ABI",
        ));
    }
    if !sig.generics.params.is_empty() {
        errors.push(Error::new_spanned(
            &sig.generics,
            "mproc tasks cannot be generic: their arguments are sent to another process, which \
             finds the task by name alone and must know the concrete types",
        ));
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        errors.push(Error::new_spanned(
            where_clause,
            "mproc tasks cannot have a `where` clause: their arguments are sent to another \
             process, which finds the task by name alone and must know the concrete types",
        ));
    }
    for receiver in &task.receivers {
        errors.push(Error::new_spanned(
            receiver,
            "mproc tasks cannot take `self`: a task is a free function that a worker process \
             calls by name; move it out of the `impl` block and pass the value as an argument",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(Error::new_spanned(
            variadic,
            "mproc tasks cannot be variadic: their arguments are a fixed list of types",
        ));
    }
    for ty in &task.inputs {
        check_type(ty, Position::Argument, &mut errors);
    }
    if let Some(ty) = &task.output {
        check_type(ty, Position::Return, &mut errors);
    }
    errors.finish()
}

/// Where a type appears in the signature, for the wording of errors.
#[derive(Clone, Copy)]
enum Position {
    Argument,
    Return,
}

/// Rejects references, lifetimes other than `'static` and `impl Trait`
/// anywhere inside `ty`.
fn check_type(ty: &Type, position: Position, errors: &mut Errors) {
    struct Checker<'e> {
        position: Position,
        errors: &'e mut Errors,
    }

    impl<'ast> Visit<'ast> for Checker<'_> {
        fn visit_type_reference(&mut self, r: &'ast TypeReference) {
            let msg = match self.position {
                Position::Argument => {
                    "mproc task arguments cannot be borrowed: they are serialized and sent to \
                     another process; take an owned type instead (`String` for `&str`, \
                     `Vec<T>` for `&[T]`, `T` for `&T`)"
                }
                Position::Return => {
                    "mproc tasks cannot return borrowed data: the result is serialized and sent \
                     back from another process; return an owned type instead"
                }
            };
            self.errors.push(Error::new_spanned(r, msg));
            // Not descending: one error per reference is enough.
        }

        fn visit_type_impl_trait(&mut self, i: &'ast TypeImplTrait) {
            let msg = match self.position {
                Position::Argument => {
                    "mproc task arguments cannot be `impl Trait`: the worker process \
                     deserializes them and must know their concrete type"
                }
                Position::Return => {
                    "mproc tasks cannot return `impl Trait`: the caller deserializes the result \
                     and must know its concrete type (for a future, write an `async fn`)"
                }
            };
            self.errors.push(Error::new_spanned(i, msg));
        }

        fn visit_lifetime(&mut self, l: &'ast Lifetime) {
            if l.ident != "static" {
                let msg = match self.position {
                    Position::Argument => {
                        "mproc task arguments cannot hold borrowed data: they are deserialized \
                         in another process and must own their data (`'static` is the only \
                         lifetime allowed)"
                    }
                    Position::Return => {
                        "mproc tasks cannot return borrowed data: the result is deserialized in \
                         another process and must own its data (`'static` is the only \
                         lifetime allowed)"
                    }
                };
                self.errors.push(Error::new_spanned(l, msg));
            }
        }
    }

    Checker { position, errors }.visit_type(ty);
}
