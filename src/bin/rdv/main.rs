//! The `rdv` command line: a thin layer over the library.
//!
//! - `cli`: the argument schema;
//! - `config`: `serve --config FILE`, the TOML file under the flags;
//! - `serve`, `offer`, `accept` (with `delete` and `info`), `answer` (`collect`, and the
//!   answer's side of `offer` and `accept`), `keygen`, `demo`: one subcommand each;
//! - `transport`: which connector the transport flags select;
//! - `out`: human or JSON results, notes; `term`: logging, progress, prompts, escaping; `qr`:
//!   QR codes;
//! - `error`: hints that name command-line flags and stable codes, around the library's errors.

#![forbid(unsafe_code)]

/// `eprintln!` that never panics, for the whole binary (it shadows the standard one): a
/// standard error that cannot be written (a closed terminal, a full disk, a reader gone) must
/// not cut a command off halfway, leaving a stored link that is not taken back (an attack,
/// 2026-12-06: `rdv offer 2>/dev/full` panicked after its store). What cannot be written is
/// dropped; the command goes on.
macro_rules! eprintln {
    () => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr());
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod accept;
mod agent;
mod answer;
mod cli;
mod client_config;
mod config;
mod demo;
mod error;
mod interrupt;
mod keygen;
mod offer;
mod out;
mod qr;
mod serve;
mod store;
mod term;
mod transport;
mod via_agent;

use clap::{CommandFactory, FromArgMatches};
use cli::{Cli, Cmd};
use std::process::ExitCode;
use std::time::Duration;

/// Exit status of a usage error (as clap's own).
const USAGE_EXIT: u8 = 2;

fn main() -> ExitCode {
    quiet_broken_pipe();
    rdv::tor::install_crypto_provider();
    // Known before parsing, so that even a usage error comes as JSON.
    let json = std::env::args_os().skip(1).any(|a| a == "--json");
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return usage_error(e, json),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return usage_error(e, json),
    };
    out::init(out::Mode {
        json: cli.json,
        quiet: cli.quiet,
    });
    let command = matches.subcommand_name().map(str::to_owned);
    match run(cli, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error::print(&e, command.as_deref());
            ExitCode::FAILURE
        }
    }
}

/// A reader that went away (`rdv config | head -c1`) makes `println!` panic (Rust ignores
/// SIGPIPE): end quietly instead, with the status a SIGPIPE would have given (128 + 13). Any
/// other failed write to standard output by the command itself (on the main thread: a full
/// disk under a redirect) ends it with that error and status 1, not a panic's report; one in a
/// task of a long-running process (a server's "reachable" line) panics that task alone, as
/// before. Every other panic goes to the default hook.
fn quiet_broken_pipe() {
    use std::io::Write as _;
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if let Some(why) = message.strip_prefix("failed printing to stdout: ") {
            if why.contains("Broken pipe") {
                std::process::exit(141);
            }
            if std::thread::current().name() != Some("main") {
                return default(info);
            }
            // Not eprintln!: a failure to write this must not panic inside the panic hook.
            let _ = writeln!(
                std::io::stderr(),
                "error: writing to standard output: {why}"
            );
            std::process::exit(1);
        }
        default(info);
    }));
}

/// Print a usage error (and with `--json`, its JSON result); help and version go out as usual.
fn usage_error(e: clap::Error, json: bool) -> ExitCode {
    use clap::error::ErrorKind;
    let informational = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    // A stray word (`rdv delete LINK TOKEN`, `rdv accept LINK -- -my-passphrase`) may be a
    // secret given in the wrong place: the error names it only when it looks like a flag's
    // name (`--bogus-flag`, `-x`), so that a secret reaches neither the terminal nor a log.
    let flag_like = |a: &str| {
        let long = a.strip_prefix("--").is_some_and(|name| {
            !name.is_empty()
                && name.len() <= 40
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
        let short = a.len() == 2 && a.starts_with('-') && a != "--";
        long || short
    };
    let invalid = match e.get(clap::error::ContextKind::InvalidArg) {
        Some(clap::error::ContextValue::String(a)) if e.kind() == ErrorKind::UnknownArgument => {
            Some(a.clone())
        }
        _ => None,
    };
    // A word that looks like a flag may still be a value: one right after a flag that takes
    // it (`--passphrase --my-words`: clap takes it for a flag of its own), or the rest of a
    // word clap read as short flags (`-zebra-words` is reported as `-z`). Not quoted either.
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let source = invalid.as_deref().and_then(|inv| {
        (1..args.len()).find(|&i| {
            let w = &args[i];
            w == inv
                || (!inv.starts_with("--")
                    && w.len() > 2
                    && w.starts_with('-')
                    && !w.starts_with("--")
                    && inv.get(1..).is_some_and(|c| w[1..].contains(c)))
        })
    });
    // Whether `--flag` takes a value, in the subcommand named on the command line (or at the
    // top): after a flag that takes none, `--bogus` is a typo to be shown, not a value.
    let takes_value = |flag: &str| {
        let top = Cli::command();
        let name = flag.trim_start_matches('-');
        let find = |c: &clap::Command| {
            c.get_arguments()
                .find(|a| a.get_long() == Some(name))
                .map(|a| a.get_action().takes_values())
        };
        let sub = args.iter().skip(1).find_map(|w| top.find_subcommand(w));
        sub.and_then(find).or_else(|| find(&top)).unwrap_or(false)
    };
    let after_flag = source
        .map(|i| &args[i - 1])
        .filter(|prev| prev.starts_with("--") && flag_like(prev) && takes_value(prev));
    // After a literal `--` every word is a value.
    let after_dashes = source.is_some_and(|i| args[1..i].iter().any(|w| w == "--"));
    let stray = invalid.as_deref().is_some_and(|inv| {
        !flag_like(inv)
            || after_flag.is_some()
            || after_dashes
            || source.is_some_and(|i| args[i] != inv)
    });
    if stray {
        let message = match after_flag {
            Some(prev) => format!("unexpected argument after {prev} (not shown: it may be a secret, such as a passphrase, given in the wrong place); a value that begins with '-' goes as {prev}=VALUE; see --help"),
            None => "unexpected argument (not shown: it may be a secret, such as a deletion token or a passphrase, given in the wrong place); see --help".to_owned(),
        };
        if json {
            out::emit_error(None, "usage", "bad-input", &message, None);
        }
        eprintln!("error: {message}");
        return ExitCode::from(USAGE_EXIT);
    }
    if informational || !json {
        e.exit();
    }
    let _ = e.print();
    // The error's first paragraph, on one line: clap names what is missing or in conflict on
    // the lines after the first (before, "the following required arguments were not
    // provided:" came without them).
    let text = e.render().to_string();
    let message = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let message = message.trim_start_matches("error: ");
    out::emit_error(None, "usage", "bad-input", message, None);
    ExitCode::from(USAGE_EXIT)
}

/// Run the command.
fn run(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let unsupported = |what: &str| {
        anyhow::Error::new(error::CliError::new(
            "json_unsupported",
            rdv::client::ErrorKind::BadInput,
            format!("{what} has no JSON output; run it without --json"),
        ))
    };
    // The commands that need neither the network nor a runtime.
    match &cli.cmd {
        Cmd::Completions(a) => {
            if cli.json {
                return Err(unsupported("rdv completions"));
            }
            let mut text = Vec::new();
            clap_complete::generate(a.shell, &mut Cli::command(), "rdv", &mut text);
            return write_stdout(&text);
        }
        Cmd::Man(a) => {
            if cli.json {
                return Err(unsupported("rdv man"));
            }
            return man(a);
        }
        Cmd::Config => return client_config::print(),
        Cmd::Keygen(a) => return keygen::run(a),
        Cmd::Demo if cli.json => return Err(unsupported("rdv demo")),
        Cmd::Serve(_) if cli.json => return Err(unsupported("rdv serve")),
        Cmd::Agent(a) if cli.json && !a.status && a.forget_warning.is_none() => {
            return Err(unsupported(
                "rdv agent (but for --status and --forget-warning)",
            ))
        }
        _ => {}
    }
    term::init_logging(out::quiet());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    let result = rt.block_on(async move {
        // The client commands take the client configuration under their flags.
        let sub = matches.subcommand().map(|(_, m)| m);
        via_agent::note_given(sub);
        let configured = |t: &mut cli::TransportArgs| -> anyhow::Result<()> {
            client_config::load()?.apply_transport(t, sub);
            Ok(())
        };
        match cli.cmd {
            Cmd::Serve(mut a) => {
                let origins = config::load(&mut a, sub)?;
                serve::run(a, origins).await
            }
            Cmd::Offer(mut a) => {
                client_config::load()?.apply_offer(&mut a, sub)?;
                offer::run(a).await
            }
            Cmd::Accept(mut a) => {
                configured(&mut a.transport)?;
                accept::run(a).await
            }
            Cmd::Collect(mut a) => {
                configured(&mut a.transport)?;
                answer::collect(a).await
            }
            Cmd::Delete(mut a) => {
                configured(&mut a.transport)?;
                accept::delete(a).await
            }
            Cmd::Info(mut a) => {
                client_config::load()?.apply_info(&mut a, sub);
                accept::info(a).await
            }
            Cmd::Agent(mut a) => {
                configured(&mut a.transport)?;
                agent::run(a).await
            }
            Cmd::Demo => demo::run().await,
            Cmd::Keygen(_) | Cmd::Completions(_) | Cmd::Man(_) | Cmd::Config => Ok(()),
        }
    });
    // arti keeps background tasks; do not wait for them.
    rt.shutdown_timeout(Duration::from_millis(500));
    result
}

/// Write generated text to standard output; a reader that stops early (`| head`) is not an error.
fn write_stdout(text: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `rdv man`: rdv(1), one command's page, or every page into a directory.
fn man(a: &cli::ManArgs) -> anyhow::Result<()> {
    // Built, so that clap's own `help` command (which rdv(1) names too) is among them.
    let mut top = Cli::command();
    top.build();
    let version = top.get_version().unwrap_or_default().to_string();
    // A command's page is titled rdv-COMMAND, as rdv(1)'s SEE ALSO names it.
    let page = |name: &str| -> Option<clap::Command> {
        top.find_subcommand(name).map(|c| {
            c.clone()
                .name(format!("rdv-{name}"))
                .version(version.clone())
        })
    };
    let render = |cmd: clap::Command| -> anyhow::Result<Vec<u8>> {
        let mut text = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut text)?;
        Ok(text)
    };
    if let Some(dir) = &a.dir {
        if !dir.exists() {
            anyhow::bail!("--dir {}: does not exist (create it first)", dir.display());
        }
        if !dir.is_dir() {
            anyhow::bail!("--dir {}: not a directory", dir.display());
        }
        let mut pages = vec![("rdv.1".to_string(), render(top.clone())?)];
        for sub in top.get_subcommands() {
            let name = sub.get_name();
            if let Some(cmd) = page(name) {
                pages.push((format!("rdv-{name}.1"), render(cmd)?));
            }
        }
        // Every page is written before any is listed: a listing nobody reads stops nothing.
        let mut written = String::new();
        for (file, text) in pages {
            let path = dir.join(&file);
            anyhow::Context::with_context(std::fs::write(&path, text), || {
                format!("writing {}", path.display())
            })?;
            written.push_str(&format!("{}\n", path.display()));
        }
        return write_stdout(written.as_bytes());
    }
    let text = match &a.command {
        None => render(top.clone())?,
        Some(name) => match page(name) {
            Some(cmd) => render(cmd)?,
            None => anyhow::bail!(
                "no command {name:?}; the commands are: {}",
                top.get_subcommands()
                    .map(|c| c.get_name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    write_stdout(&text)
}
