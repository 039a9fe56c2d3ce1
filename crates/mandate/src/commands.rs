//! One module per subcommand.

pub mod approvals;
pub mod callers;
pub mod check;
pub mod health;
pub mod keys;
pub mod mcp;
pub mod policy;
pub mod receipts;
pub mod replay;
pub mod serve;
pub mod store;
pub mod task;
