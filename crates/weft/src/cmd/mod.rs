//! The subcommands of `weft`.

pub(crate) mod demo;
pub(crate) mod validate;
