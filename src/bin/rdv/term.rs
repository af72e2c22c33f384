//! The terminal: logging, bootstrap progress, prompts.

use anyhow::Result;
use rdv::proto::Passphrase;
use std::io::IsTerminal;

/// How often one arti warning (one place in arti's code) may be repeated in the default log.
const ARTI_WARNING_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Log to standard error. `RUST_LOG` overrides the default filter and shows everything it asks
/// for; without it, warnings from arti's crates pass at most once per 10 minutes per place in
/// arti's code (on small networks arti repeats guard warnings with long weight dumps about once a
/// second).
pub(crate) fn init_logging(quiet: bool) {
    use tracing_subscriber::filter::{filter_fn, EnvFilter};
    use tracing_subscriber::prelude::*;
    let explicit = std::env::var_os("RUST_LOG").is_some();
    let env = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        EnvFilter::new(if quiet {
            "warn,tor_guardmgr=error,tor_relay_selection=error,tor_circmgr=error"
        } else {
            "info,arti_client=warn,tor_=warn,tor_guardmgr=error,tor_relay_selection=error,tor_circmgr=error"
        })
    });
    let seen = std::sync::Mutex::new(std::collections::HashMap::new());
    let repeat_limit = filter_fn(move |m| {
        let from_arti = m.target().starts_with("tor_") || m.target().starts_with("arti_");
        if explicit || !m.is_event() || !from_arti || *m.level() != tracing::Level::WARN {
            return true;
        }
        let Ok(mut seen) = seen.lock() else {
            return true;
        };
        let now = std::time::Instant::now();
        match seen.get(&m.callsite()) {
            Some(last) if now.duration_since(*last) < ARTI_WARNING_EVERY => false,
            _ => {
                seen.insert(m.callsite(), now);
                true
            }
        }
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(env)
        .with_filter(repeat_limit);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// A progress callback for arti's bootstrap: a progress bar on a terminal, one plain line per
/// change otherwise, nothing with `--quiet` or `--json`.
pub(crate) fn progress_printer(what: &'static str) -> impl Fn(f32, &str) + Send + 'static {
    enum Shown {
        Nothing,
        Bar(indicatif::ProgressBar),
        Lines(std::sync::Mutex<String>),
    }
    let shown = if crate::out::quiet() {
        Shown::Nothing
    } else if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(100),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{prefix}: [{bar:30}] {pos:>3}% {wide_msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(what);
        Shown::Bar(bar)
    } else {
        Shown::Lines(std::sync::Mutex::new(String::new()))
    };
    move |frac, desc| match &shown {
        Shown::Nothing => {}
        Shown::Bar(bar) => {
            // arti's description starts with the percentage, which the bar shows already.
            let msg = desc.split_once(": ").map_or(desc, |(_, m)| m).to_string();
            bar.set_position((frac.clamp(0.0, 1.0) * 100.0) as u64);
            bar.set_message(msg);
            if frac >= 1.0 {
                bar.finish();
            }
        }
        Shown::Lines(last) => {
            let line = format!("{what}: {desc}");
            let Ok(mut last) = last.lock() else { return };
            if *last != line {
                eprintln!("{line}");
                *last = line;
            }
        }
    }
}

/// Ask for a passphrase on the terminal, without echo; `None` when there is no terminal or the
/// answer is empty.
pub(crate) fn read_passphrase_interactive() -> Result<Option<Passphrase>> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let p = zeroize::Zeroizing::new(rpassword::prompt_password("Passphrase: ")?);
    Ok((!p.is_empty()).then(|| Passphrase::new(p.as_str())))
}

/// A secret argument that may come from standard input: `None` or `-` reads one line.
pub(crate) fn arg_or_stdin(
    value: Option<String>,
    what: &str,
) -> Result<zeroize::Zeroizing<String>> {
    match value {
        Some(v) if v != "-" => Ok(zeroize::Zeroizing::new(v)),
        _ => {
            use std::io::BufRead;
            if std::io::stdin().is_terminal() {
                eprintln!("Paste the {what}, then press Enter:");
            }
            let mut line = zeroize::Zeroizing::new(String::new());
            std::io::stdin().lock().read_line(&mut line)?;
            let t = zeroize::Zeroizing::new(line.trim().to_string());
            if t.is_empty() {
                anyhow::bail!(
                    "no {what} given (as an argument, in the environment, or on standard input)"
                );
            }
            Ok(t)
        }
    }
}

/// Bytes for a terminal: control characters (which could move the cursor, retitle the window,
/// or worse) and invalid UTF-8 are shown escaped; everything else as it is.
pub(crate) fn escape_for_terminal(bytes: &[u8]) -> (String, bool) {
    let mut out = String::new();
    let mut escaped = false;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                escaped = true;
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            escaped = true;
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    (out, escaped)
}

/// Whether standard output is a terminal.
pub(crate) fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Create a new file only its owner can read (mode 0600 on Unix); an existing file is never
/// overwritten. For files that hold secrets: state files, client keys.
pub(crate) fn create_private(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}
