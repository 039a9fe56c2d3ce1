//! The `mandate` command: parses arguments and dispatches to a subcommand.

mod cli;
mod client;
mod commands;
mod config;
mod data_lock;
mod exit;
mod journal_source;
mod ledger_files;
mod listen;
mod output;
mod pack;
mod task_files;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

// Cedar evaluation allocates many small values; mimalloc serves them faster
// than the system allocator (see docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    keep_memory_in_small_pages();
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Serve(args) => commands::serve::run(args),
        cli::Command::Health(args) => commands::health::run(args),
        cli::Command::Check(args) => commands::check::run(args),
        cli::Command::Policy(cli::PolicyCommand::Validate(args)) => {
            commands::policy::validate(args)
        }
        cli::Command::Policy(cli::PolicyCommand::Test(args)) => commands::policy::test(args),
        cli::Command::Policy(cli::PolicyCommand::Schema) => commands::policy::schema(),
        cli::Command::Policy(cli::PolicyCommand::Replay(args)) => commands::replay::run(args),
        cli::Command::Receipts(cli::ReceiptsCommand::Export(args)) => {
            commands::receipts::export(args)
        }
        cli::Command::Receipts(cli::ReceiptsCommand::Verify(args)) => {
            commands::receipts::verify(args)
        }
        cli::Command::Receipts(cli::ReceiptsCommand::Prove(args)) => {
            commands::receipts::prove(args)
        }
        cli::Command::Store(cli::StoreCommand::Migrate(args)) => commands::store::migrate(args),
        cli::Command::Keys(cli::KeysCommand::Show(args)) => commands::keys::show(args),
        cli::Command::Keys(cli::KeysCommand::Generate(args)) => commands::keys::generate(args),
        cli::Command::Task(cli::TaskCommand::Start(args)) => commands::task::start(args),
        cli::Command::Task(cli::TaskCommand::Delegate(args)) => commands::task::delegate(args),
        cli::Command::Task(cli::TaskCommand::End(args)) => commands::task::end(args),
        cli::Command::Task(cli::TaskCommand::Show(args)) => commands::task::show(args),
        cli::Command::Approvals(cli::ApprovalsCommand::List(args)) => {
            commands::approvals::list(args)
        }
        cli::Command::Approvals(cli::ApprovalsCommand::Show(args)) => {
            commands::approvals::show(args)
        }
        cli::Command::Approvals(cli::ApprovalsCommand::Approve(args)) => {
            commands::approvals::resolve(args, commands::approvals::Verdict::Approve)
        }
        cli::Command::Approvals(cli::ApprovalsCommand::Deny(args)) => {
            commands::approvals::resolve(args, commands::approvals::Verdict::Deny)
        }
        cli::Command::Approvals(cli::ApprovalsCommand::Token(args)) => {
            commands::approvals::token(args)
        }
        cli::Command::Mcp(cli::McpCommand::Wrap(args)) => commands::mcp::wrap(args),
        cli::Command::Mcp(cli::McpCommand::Proxy(args)) => commands::mcp::proxy(args),
        cli::Command::Mcp(cli::McpCommand::ClientToken(args)) => commands::mcp::client_token(args),
        cli::Command::Callers(cli::CallersCommand::Token(args)) => commands::callers::token(args),
    };
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::Code::Failure.into()
        }
    }
}

/// Asks Linux not to back this process with transparent huge pages.
/// mimalloc marks its arena for them, and the kernel's background collapse
/// (khugepaged, which may fill a 2 MiB page from a single touched 4 KiB one)
/// reaches the arena minutes after start: in every 30-minute soak the
/// server's RSS stepped up by 10 to 17 MiB around minute 22 without a single
/// allocation behind it (docs/PERFORMANCE.md). Memory should follow the
/// work. Best effort: a kernel without the switch changes nothing.
fn keep_memory_in_small_pages() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}
