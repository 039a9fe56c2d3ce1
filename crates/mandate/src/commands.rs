//! One module per subcommand.

pub mod check;
pub mod keys;
pub mod policy;
pub mod receipts;
pub mod serve;
pub mod task;
