//! [`Errors`]: every compile error of one attribute, collected in source
//! order and reported at once. A leaf both the parser (`ast.rs`) and the
//! checks (`valid.rs`) use.

use syn::{Error, Result};

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
