//! The terminal: logging, bootstrap progress, prompts.

use anyhow::Result;
use rdv::proto::Passphrase;
use std::io::IsTerminal;

/// How often one arti warning (one place in arti's code) is shown in the default log; the
/// repeats in between are counted and the count is shown with the next one.
const ARTI_WARNING_EVERY: std::time::Duration = std::time::Duration::from_secs(600);
/// The longest arti warning line shown (arti's reports can run to 18 lines of weights).
const ARTI_LINE_MAX: usize = 240;

/// The progress bar on screen, if any: log lines are printed around it, not into it.
static ACTIVE_BAR: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// Print a line on standard error without tearing a progress bar.
fn print_line(line: &str) {
    let bar = ACTIVE_BAR.lock().ok().and_then(|b| b.clone());
    match bar {
        Some(bar) if !bar.is_finished() => bar.suspend(|| eprintln!("{line}")),
        _ => eprintln!("{line}"),
    }
}

/// Whether colour may be used on standard error: a terminal, and no `NO_COLOR` (no-color.org).
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn arti_warning(m: &tracing::Metadata<'_>) -> bool {
    (m.target().starts_with("tor_") || m.target().starts_with("arti_"))
        && *m.level() == tracing::Level::WARN
}

/// Log to standard error. `RUST_LOG` overrides the default filter and shows everything it asks
/// for, as it comes. Without it, each of arti's warnings (on a small or unreachable network arti
/// repeats multi-line reports every few seconds) is one plain line, shown at most once per
/// 10 minutes per place in arti's code, with the number of repeats left out in between; with
/// `--quiet`, arti's warnings are not shown at all (rdv's own final error says what failed).
/// `NO_COLOR` turns colour off.
pub(crate) fn init_logging(quiet: bool) {
    use tracing_subscriber::filter::{filter_fn, EnvFilter};
    use tracing_subscriber::prelude::*;
    let given = std::env::var("RUST_LOG")
        .ok()
        .filter(|d| EnvFilter::try_new(d).is_ok());
    let explicit = given.is_some();
    let directives = given.unwrap_or_else(|| {
        if quiet {
            "warn,arti_client=error,tor_=error".into()
        } else {
            "info,arti_client=warn,tor_=warn,tor_guardmgr=error,tor_relay_selection=error,tor_circmgr=error".into()
        }
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour())
        .with_target(false)
        .with_filter(EnvFilter::new(&directives))
        .with_filter(filter_fn(move |m| explicit || !arti_warning(m)));
    let folded = ArtiFold::default()
        .with_filter(EnvFilter::new(&directives))
        .with_filter(filter_fn(move |m| !explicit && arti_warning(m)));
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(folded)
        .try_init();
}

/// arti's warnings, one line each, repeats counted (see [`init_logging`]). The decision is made
/// for every event, not once per place in the code (a filter's answer would be cached).
#[derive(Default)]
struct ArtiFold {
    seen: std::sync::Mutex<
        std::collections::HashMap<tracing::callsite::Identifier, (std::time::Instant, u64)>,
    >,
}

impl ArtiFold {
    /// The line to show for a warning from `place` at `now`, if one is due: shown when that
    /// place was last shown [`ARTI_WARNING_EVERY`] ago or never, counted otherwise.
    fn fold<K: std::hash::Hash + Eq>(
        seen: &mut std::collections::HashMap<K, (std::time::Instant, u64)>,
        place: K,
        now: std::time::Instant,
        message: &str,
    ) -> Option<String> {
        let entry = seen.entry(place).or_insert((now, u64::MAX));
        let repeats = match entry.1 {
            u64::MAX => 0,
            _ if now.duration_since(entry.0) < ARTI_WARNING_EVERY => {
                entry.1 += 1;
                return None;
            }
            n => n,
        };
        *entry = (now, 0);
        let mut line = one_line(message, ARTI_LINE_MAX);
        if repeats > 0 {
            line.push_str(&format!(
                " (and {repeats} more like it since it was last shown)"
            ));
        }
        Some(format!("warning (Tor): {line}"))
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ArtiFold {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        let line = {
            let Ok(mut seen) = self.seen.lock() else {
                return;
            };
            Self::fold(
                &mut seen,
                event.metadata().callsite(),
                std::time::Instant::now(),
                &message.0,
            )
        };
        if let Some(line) = line {
            print_line(&line);
        }
    }
}

/// The `message` of an event.
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }
}

/// `text` on one line: whitespace runs (newlines included) as one space, control characters
/// dropped, at most `max` characters (cut with an ellipsis).
fn one_line(text: &str, max: usize) -> String {
    let mut out = String::new();
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().filter(|c| !c.is_control()));
    }
    if out.chars().count() > max {
        out = out.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
    }
    out
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
        if let Ok(mut active) = ACTIVE_BAR.lock() {
            *active = Some(bar.clone());
        }
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

/// Most bytes of one line read from standard input (a link, a token, a passphrase: a link of
/// six servers is under 2 KiB).
const LINE_LIMIT: u64 = 16 * 1024;

/// The bytes of file `path`, refused when it holds more than `limit` (a symlink to an endless
/// device, a wrong file given by mistake): read up to `limit + 1`, never the whole of it.
pub(crate) fn read_file_limited(
    path: &std::path::Path,
    limit: u64,
    what: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    use anyhow::Context;
    use std::io::Read;
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > limit {
        anyhow::bail!(
            "{} is larger than {limit} bytes, far more than {what} holds",
            path.display()
        );
    }
    Ok(bytes)
}

/// A secret given as `value` for `flag`: when it came from the command line (not from the
/// environment variable `env` clap also reads it from), say that other users of the machine
/// see it in the process list while rdv runs, and how to give it instead. A warning, not a
/// note: `--json` and `-q` keep it (scripts are the likeliest to put secrets there).
pub(crate) fn warn_if_on_command_line(value: &str, flag: &str, env: Option<&str>, instead: &str) {
    let from_env = env.is_some_and(|v| std::env::var(v).is_ok_and(|e| e == value));
    if !from_env {
        eprintln!(
            "WARNING: {flag} on the command line is visible to other users of this machine (the process list) while rdv runs; {instead}"
        );
    }
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
            // One line, bounded: `rdv accept < /dev/zero` must not read without end.
            let n =
                std::io::Read::take(std::io::stdin().lock(), LINE_LIMIT).read_line(&mut line)?;
            if n as u64 >= LINE_LIMIT && !line.ends_with('\n') {
                anyhow::bail!("the {what} on standard input is longer than {LINE_LIMIT} bytes");
            }
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
/// or worse), bidirectional controls (which make text read in another order than it is),
/// invisible characters (which make it read as other text) and invalid UTF-8 are shown escaped;
/// everything else as it is.
pub(crate) fn escape_for_terminal(bytes: &[u8]) -> (String, bool) {
    let mut out = String::new();
    let mut escaped = false;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if rdv::proto::wire::is_unsafe_to_show(c) {
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

/// `w` as one shell word for a command shown to the user: as it is when it holds only
/// characters no shell treats specially, else in single quotes; escaped for the terminal
/// either way.
pub(crate) fn shell_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:@,+=".contains(&b));
    let shown = escape_for_terminal(w.as_bytes()).0;
    if plain {
        shown
    } else {
        format!("'{}'", shown.replace('\'', "'\\''"))
    }
}

/// Whether standard output is a terminal.
pub(crate) fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Refuse, before anything is done, a command whose result would be lost: `what` cannot go
/// anywhere when standard output is `/dev/null`, which is also what a closed standard output
/// becomes (Rust's runtime opens `/dev/null` in its place, where every write succeeds, so the
/// loss could not be noticed later: an attack, 2026-12-06, lost an answer with `rdv collect
/// >&-` and left links with `rdv offer >&-`). `instead`: what to do about it. Where this
/// cannot be told (no `/proc`), nothing is refused.
pub(crate) fn refuse_output_to_nowhere(what: &str, instead: &str) -> anyhow::Result<()> {
    if output_goes_nowhere() {
        return Err(crate::error::CliError::new(
            "invalid_input",
            rdv::client::ErrorKind::BadInput,
            format!(
                "standard output is closed or /dev/null, so {what} would reach nobody; {instead}"
            ),
        )
        .into());
    }
    Ok(())
}

/// Whether standard output is `/dev/null` (or closed, which becomes that): what is written
/// there is lost ([`refuse_output_to_nowhere`]). `false` where this cannot be told.
pub(crate) fn output_goes_nowhere() -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let (Ok(out), Ok(null)) = (
        std::fs::metadata("/proc/self/fd/1"),
        std::fs::metadata("/dev/null"),
    ) else {
        return false;
    };
    // The same character device (a container's own /dev/null node included).
    let char_device = |m: &std::fs::Metadata| m.file_type().is_char_device();
    char_device(&out) && char_device(&null) && out.rdev() == null.rdev()
}

/// Create a new file only its owner can read (mode 0600 on Unix); an existing file is never
/// overwritten. For files that hold secrets: state files, client keys. The error says which of
/// the two usual causes it is (a file that exists, a directory that does not), not only the
/// system's words for it.
pub(crate) fn create_private(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path).map_err(|e| {
        use std::io::{Error, ErrorKind};
        match e.kind() {
            ErrorKind::AlreadyExists => Error::new(
                e.kind(),
                "it exists already, and rdv never overwrites it: remove it or choose another name",
            ),
            ErrorKind::NotFound => Error::new(
                e.kind(),
                match path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    Some(d) => format!("the directory {} does not exist", d.display()),
                    None => "the directory it goes in does not exist".to_owned(),
                },
            ),
            _ => e,
        }
    })
}

/// Write a new private file ([`create_private`]: mode 0600, never overwriting) at `path` with
/// `write`, then make it durable: the file synced, and its directory, so that a power cut does
/// not take back a file said to be written. A write that fails removes the file: half a file
/// is no use, and a retry would find it in its way. `name` names it in errors ("the state file
/// F", or the path).
pub(crate) fn write_private(
    path: &std::path::Path,
    name: &str,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    use anyhow::Context;
    let mut f = create_private(path).with_context(|| format!("creating {name}"))?;
    if let Err(e) = write(&mut f)
        .and_then(|()| f.sync_all())
        .and_then(|()| sync_parent(path))
    {
        drop(f);
        let _ = std::fs::remove_file(path);
        return Err(anyhow::Error::new(e).context(format!("writing {name}")));
    }
    Ok(())
}

/// Sync the directory that holds `path`, so that its entry (a new file, a rename) is durable.
/// A file system that cannot sync a directory (some network and FUSE ones say so) is taken at
/// its word: nothing more can be done there.
pub(crate) fn sync_parent(path: &std::path::Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    match std::fs::File::open(dir)?.sync_all() {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported
            ) =>
        {
            Ok(())
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::{escape_for_terminal, one_line, ArtiFold, ARTI_WARNING_EVERY};

    #[test]
    fn a_shown_command_word_is_one_shell_word() {
        use super::shell_word;
        assert_eq!(shell_word("127.0.0.1:7625"), "127.0.0.1:7625");
        assert_eq!(shell_word("[::1]:9050"), "'[::1]:9050'");
        assert_eq!(shell_word("my state"), "'my state'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("a\u{1b}[2J"), "'a\\u{1b}[2J'");
    }

    #[test]
    fn a_payload_cannot_reorder_or_drive_the_terminal() {
        let (shown, escaped) =
            escape_for_terminal("smp://a\u{202e}txt.exe\u{1b}]0;x\u{7}👍\u{200d}".as_bytes());
        assert!(escaped);
        assert_eq!(shown, "smp://a\\u{202e}txt.exe\\u{1b}]0;x\\u{7}👍\u{200d}");
        assert_eq!(
            escape_for_terminal("plain 👍".as_bytes()),
            ("plain 👍".into(), false)
        );
        // A link with invisible characters in it is not shown as the link it looks like.
        let (shown, escaped) = escape_for_terminal("smp://ex\u{ad}ample\u{feff}.org".as_bytes());
        assert!(escaped);
        assert_eq!(shown, "smp://ex\\u{ad}ample\\u{feff}.org");
    }

    #[test]
    fn repeated_arti_warnings_are_counted_and_shown_once_per_period() {
        let mut seen = std::collections::HashMap::new();
        let t = std::time::Instant::now();
        let report = "Requested 3 relays, but only 1 were usable\nweights: {\n  x\n}";
        let first = ArtiFold::fold(&mut seen, "netdir", t, report).unwrap();
        assert_eq!(
            first,
            "warning (Tor): Requested 3 relays, but only 1 were usable weights: { x }"
        );
        // 664 more within the period (what 10 minutes of a serving server gave): none shown.
        for k in 1..=664u64 {
            let at = t + ARTI_WARNING_EVERY * u32::try_from(k).unwrap() / 665;
            assert_eq!(ArtiFold::fold(&mut seen, "netdir", at, report), None);
        }
        // Another place in arti's code is its own.
        assert!(ArtiFold::fold(&mut seen, "guardmgr", t, "other").is_some());
        let next = ArtiFold::fold(&mut seen, "netdir", t + ARTI_WARNING_EVERY, report).unwrap();
        assert!(
            next.ends_with("(and 664 more like it since it was last shown)"),
            "{next}"
        );
        assert_eq!(
            ArtiFold::fold(&mut seen, "netdir", t + ARTI_WARNING_EVERY * 2, report).unwrap(),
            first,
            "no repeats in between, no count"
        );
    }

    #[test]
    fn an_arti_report_becomes_one_short_line() {
        let report = "Requested 3 relays, but only 1 were usable\n  weights: {\n\tbw: 1\x1b[31m\n}";
        let l = one_line(report, 100);
        assert_eq!(
            l,
            "Requested 3 relays, but only 1 were usable weights: { bw: 1[31m }"
        );
        assert!(!l.contains('\n') && !l.contains('\x1b'));
        let long = one_line(&"x ".repeat(500), 20);
        assert_eq!(long.chars().count(), 20);
        assert!(long.ends_with('…'));
    }
}
