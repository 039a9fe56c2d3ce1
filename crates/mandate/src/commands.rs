//! One module per subcommand.

pub mod check;
pub mod policy;
pub mod serve;
