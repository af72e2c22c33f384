//! The answer channel on the command line: `rdv collect`, the state file, and waiting for an
//! answer (shared with `rdv offer --expect-answer --wait`) on the look schedule of PROTOCOL.md
//! §15.4: no look before the bucket closes, random pauses, the link left to expire.

use crate::cli::{CollectArgs, LookArgs};
use crate::error::CliError;
use crate::out::{fields, note};
use crate::term::{escape_for_terminal, stdout_is_terminal};
use crate::transport::make_client;
use anyhow::{bail, Context, Result};
use rdv::client::{Client, CollectError, Collected, PendingAnswer};
use rdv::proto::schedule::{LookSchedule, SHORT_MEAN_LOOK};
use rdv::proto::ClientPolicy;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use zeroize::Zeroizing;

/// Most bytes read from a state file (a real one is under 400).
const STATE_LIMIT: u64 = 4096;

/// Write the state file: created new (an existing file is never overwritten) with mode 0600,
/// durably; half a state file is taken away again.
pub(crate) fn write_state(path: &Path, pending: &PendingAnswer) -> Result<()> {
    let name = format!("the state file {}", path.display());
    crate::term::write_private(path, &name, |f| f.write_all(pending.to_text().as_bytes()))
}

/// What a state file holds once its answer is in: no keys, only the time of the collect.
const COLLECTED: &str = "rdv-answer-collected";

/// Replace the state file's keys, once the answer is in, with a note saying so (atomically: a
/// crash leaves either the state or the note), so that a second collect says what happened.
pub(crate) fn mark_collected(path: &Path) -> Result<()> {
    // Through a symbolic link, the file it names: replacing the link would leave the keys.
    let resolved = std::fs::canonicalize(path);
    let path = resolved.as_deref().unwrap_or(path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let now = rdv::clock::Clock::now(&rdv::clock::SystemClock);
    let when = rdv::clock::rfc3339(now);
    let mut tmp = tempfile::Builder::new()
        .prefix(".rdv-state-")
        .tempfile_in(dir)
        .and_then(|mut t| {
            writeln!(t, "{COLLECTED} {when}")?;
            t.as_file().sync_all()?;
            Ok(t)
        })
        .with_context(|| format!("clearing the state file {}", path.display()))?;
    tmp.flush()?;
    tmp.persist(path)
        .map_err(anyhow::Error::new)
        .and_then(|_| Ok(crate::term::sync_parent(path)?))
        .with_context(|| format!("clearing the state file {}", path.display()))?;
    Ok(())
}

/// Read a state file.
fn read_state(path: &Path) -> Result<PendingAnswer> {
    let bytes = crate::term::read_file_limited(path, STATE_LIMIT, "a state file")
        .with_context(|| format!("reading the state file {}", path.display()))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| anyhow::anyhow!("the state file {} is not UTF-8 text", path.display()))?;
    if let Some(when) = text.strip_prefix(COLLECTED) {
        return Err(CliError::new(
            "already_collected",
            rdv::client::ErrorKind::BadInput,
            format!(
                "{}: the answer was already collected (at {}); the file holds no keys any more and can be removed",
                path.display(),
                escape_for_terminal(when.trim().as_bytes()).0
            ),
        )
        .into());
    }
    PendingAnswer::from_text(text).with_context(|| format!("{}", path.display()))
}

/// The look schedule the flags ask for.
pub(crate) fn schedule(look: &LookArgs) -> LookSchedule {
    LookSchedule {
        mean: look.poll_every,
        early: look.early,
    }
}

/// Tell the user what overriding the answer flow's defaults costs (on standard error, also with
/// `--quiet` and `--json`).
pub(crate) fn warn_costs(look: &LookArgs) {
    if look.early {
        eprintln!("warning: --early looks into the mailbox before the bucket closes: the first look, seconds after your store, tells the server which link the mailbox belongs to, and the accepter's answer then which fetch accepted your link; in the lab an answered link's effective anonymity set fell from 51 to 11 (docs/ANONYMITY.md, \"The answer flow\")");
    }
    if look.delete_now {
        eprintln!("warning: --delete-now deletes the link right after the answer is in: the delete names your link and ties it to the accepter's answer, hence to the fetch that accepted it; in the lab an answered link's effective anonymity set fell from 51 to 2, the server's first guess right 95 % of the time (docs/ANONYMITY.md, \"The answer flow\"). Without it the link expires by itself.");
    }
    if look.poll_every < SHORT_MEAN_LOOK {
        eprintln!("warning: --poll-every {}: every look is a Tor circuit and a request the server sees; looks this frequent make the moment you collect follow the accepter's answer within seconds (it costs no anonymity while the link is left to expire, and more with --delete-now)", humantime::format_duration(look.poll_every));
    }
}

/// A unix time on this machine's clock, as RFC 3339.
fn local_time(t: u64) -> String {
    rdv::clock::rfc3339(t)
}

/// With `--json`, the `waiting` line of `command`'s wait: looking from `from` until `until`
/// (unix seconds, this machine's clock); nothing without `--json`.
pub(crate) fn emit_waiting(command: &str, from: u64, until: u64) -> Result<()> {
    if !crate::out::json() {
        return Ok(());
    }
    crate::out::emit(
        command,
        fields! {
            "event" => "waiting",
            "looks_from" => from,
            "looks_until" => until,
        },
    )
}

/// Looks already going on ([`Client::collect_scheduled`] begun earlier), for
/// [`wait_for_answer`] to go on with.
pub(crate) type Looks<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Collected, CollectError>> + Send + 'a>,
>;

/// Look for the answer (once now, or on the look schedule for up to `wait` once looking may
/// start); `None` if none came. Once it is in, delete the link with `--delete-now`. Progress goes
/// to standard error; with `--json` and a wait, a `waiting` event goes out first. `started`:
/// the looks of that wait, begun before (a held offer's, from its buckets' closes, while it
/// counted them), to go on with rather than begin.
pub(crate) async fn wait_for_answer(
    command: &str,
    client: &Client,
    pending: &PendingAnswer,
    look: &LookArgs,
    wait: Option<Duration>,
    started: Option<Looks<'_>>,
) -> Result<Option<Collected>> {
    let schedule = schedule(look);
    let now_precise = rdv::clock::Clock::now_precise(&rdv::clock::SystemClock);
    let now = now_precise.as_secs();
    let closed = pending
        .copies()
        .iter()
        .filter(|c| schedule.start(now, c.polls_from) <= now)
        .count();
    if wait.is_none() && closed > 1 {
        note!("looking at the link's copies one after another, a random pause apart (--spread): looks at every copy in one moment would pair them for servers comparing notes");
    }
    let answer = match wait {
        None => match client.look(pending, schedule).await {
            Err(CollectError::TooEarly { polls_from }) => {
                return Err(CliError::new(
                    "too_early",
                    rdv::client::ErrorKind::Transient,
                    format!(
                        "the link's bucket closes at {}: a look before then would tell the server which link the mailbox belongs to; run rdv collect again after that (or --wait to wait here; --early looks anyway, at that cost)",
                        local_time(polls_from)
                    ),
                )
                .into());
            }
            r => r?,
        },
        Some(w) => {
            let resumed = started.is_some();
            let from = if resumed {
                pending.polls_from()
            } else {
                schedule.start(now, pending.polls_from())
            };
            // Where the looks end: the wait after the start, or from this moment (with its
            // fraction of a second) when looking starts at once; begun at the closes, the wait
            // after the latest.
            let until = if resumed {
                let latest = pending.copies().iter().map(|c| c.polls_from).max();
                latest.unwrap_or(from).saturating_add(w.as_secs())
            } else if from > now {
                from.saturating_add(w.as_secs())
            } else {
                now_precise.saturating_add(w).as_secs()
            };
            emit_waiting(command, from, until)?;
            note!(
                "looking for the answer from {}{} until {}{}, at random moments ({} apart on average; the last one the first past the end)",
                local_time(from),
                if from > now { " (when the bucket closes)" } else { "" },
                local_time(until),
                if from <= now && !resumed && pending.copies().len() > 1 {
                    " (each copy a random pause later)"
                } else {
                    ""
                },
                humantime::format_duration(look.poll_every)
            );
            let looked = match started {
                Some(looks) => looks.await,
                None => client.collect_scheduled(pending, schedule, w).await,
            };
            match looked {
                Ok(a) => Some(a),
                Err(CollectError::NoAnswerYet) => None,
                Err(e) => return Err(e.into()),
            }
        }
    };
    if answer.is_some() && look.delete_now {
        // Ctrl-C during the pauses between a multi-server link's copies deletes the rest at
        // once and goes on to the answer (before, it ended the command with copies left and
        // the answer unshown); a second one ends it at once.
        let mut stop = crate::interrupt::scope();
        let retired = stop.finish(client, client.retire(pending)).await;
        drop(stop);
        // Failing to delete it is not worth losing the answer over.
        match retired {
            Ok(()) => note!("the link was deleted from the server (--delete-now)"),
            Err(e) => eprintln!(
                "warning: the link could not be deleted ({}); it expires by itself",
                rdv::config::report(&e)
            ),
        }
    }
    Ok(answer)
}

/// Once the answer from one copy of a multi-server link is out: look at the other copies until
/// each finds its own answer or its looks end at a random moment (`rdv::client::Client::trail`),
/// so that no server sees its copy's looks end when another server's answer came. Ctrl-C ends
/// this at once (the answer is out already). Nothing to do after `--delete-now` (the deletes
/// tie the copies together anyway) or for a link on one server. `events`: the command prints
/// JSON events (a wait), and a `trailing` one goes out first; a one-time collect's single JSON
/// object stays single.
pub(crate) async fn finish_copies(
    command: &str,
    events: bool,
    client: &Client,
    pending: &PendingAnswer,
    look: &LookArgs,
    found: &Collected,
) -> Result<()> {
    let others = pending.copies().len().saturating_sub(1);
    if others == 0 || look.delete_now {
        return Ok(());
    }
    if events && crate::out::json() {
        crate::out::emit(
            command,
            fields! { "event" => "trailing", "copies" => others },
        )?;
    }
    note!(
        "looking at the link's {} other cop{} until each finds an answer of its own or a random while ends (a server must not see its copy's looks end when another's answer came); standard output is closed now, so a program reading it to its end goes on; Ctrl-C ends this now, at that cost",
        others,
        if others == 1 { "y" } else { "ies" }
    );
    // Listening before standard output closes: a reader that sees its end may signal at once,
    // and a signal with no scope open ends the process by it (status 143 for SIGTERM, where
    // the trail promises 0; six parallel runs of its test saw it once).
    let mut stop = crate::interrupt::scope();
    release_stdout();
    tokio::select! {
        // A copy holding another answer is told in the moment it is found: the trail may go
        // on for an hour, and a command interrupted before its end told nothing.
        trailed = client.trail_telling(pending, schedule(look), found.copy, &found.answer, |server| {
            warn_different_answer(&server.to_string());
        }) => {
            note!("the other copies' looks ended; {} of {others} held an answer too (an accepter answers one copy unless it answers every one)", trailed.opened);
        }
        () = stop.signalled() => note!("interrupted: the other copies' looks end now"),
    }
    Ok(())
}

/// Warn that the link's copy on `server` held another answer than the one collected: someone
/// else holds the link (with or without an agent).
pub(crate) fn warn_different_answer(server: &str) {
    eprintln!("warning: the link's copy on {} held a different answer: someone else answered it first, so someone else holds the link and its passphrase", escape_for_terminal(server.as_bytes()).0);
}

/// Point standard output at /dev/null: a caller reading it (`answer=$(rdv collect …)`, a
/// pipe) sees its end and goes on while the command trails. Nothing is lost if this fails:
/// the caller then waits for the command's end.
pub(crate) fn release_stdout() {
    let _ = std::io::stdout().flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
    }
}

/// Why there is no answer yet, and whether one can still come.
pub(crate) fn no_answer(pending: &PendingAnswer) -> String {
    let now = rdv::clock::Clock::now(&rdv::clock::SystemClock);
    if now >= pending.link_expires() {
        "no answer, and by this machine's clock the link has expired: no accepter can fetch it any more, so no answer is coming (unless this clock is wrong)".into()
    } else {
        format!(
            "no answer yet (the link expires in {})",
            humantime::format_duration(Duration::from_secs(pending.link_expires() - now))
        )
    }
}

/// Print an answer on its own: the exact bytes into a pipe, escaped on a terminal (as `rdv
/// accept` prints a payload).
pub(crate) fn print_answer(answer: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let written = if stdout_is_terminal() {
        let (shown, escaped) = escape_for_terminal(answer);
        if escaped {
            note!("note: the answer holds control characters or invalid UTF-8; they are shown escaped (redirect standard output for the exact bytes)");
        }
        writeln!(out, "{shown}")
    } else {
        out.write_all(answer).and_then(|()| out.write_all(b"\n"))
    };
    written
        .and_then(|()| out.flush())
        .context("writing the answer to standard output")
}

/// Run `rdv collect`.
pub(crate) async fn collect(a: CollectArgs) -> Result<()> {
    crate::term::refuse_output_to_nowhere("the answer", "redirect it to a file")?;
    if let Some(path) = crate::via_agent::socket(&a.agent)? {
        return crate::via_agent::collect(a, path).await;
    }
    let Some(state) = &a.state else {
        anyhow::bail!("give the state file with --state FILE (or use --agent with --offer ID)");
    };
    let pending = read_state(state)?;
    warn_costs(&a.look);
    let client = make_client(
        &a.transport,
        &pending.servers().cloned().collect::<Vec<_>>(),
        ClientPolicy::default(),
    )
    .await?
    .with_copy_spread(a.spread);
    let Some(found) = wait_for_answer("collect", &client, &pending, &a.look, a.wait, None).await?
    else {
        return Err(CliError::new(
            "no_answer_yet",
            rdv::client::ErrorKind::Transient,
            format!(
                "{}; {}",
                no_answer(&pending),
                if rdv::clock::Clock::now(&rdv::clock::SystemClock) >= pending.link_expires() {
                    "the state file is kept (collect again once the clock is right, or remove it)"
                } else {
                    "look again later"
                }
            ),
        )
        .into());
    };
    // Written first, the state's keys cleared after: an answer that cannot be written (standard
    // output closed, a full disk under a redirect) is still in its mailbox, and the state file
    // collects it again. The other order lost it (the keys were gone before the write failed).
    if crate::out::json() {
        let mut f = fields! { "event" => "answer", "link_kept" => !a.look.delete_now };
        crate::out::bytes_fields(&mut f, "answer", &found.answer);
        crate::out::emit("collect", f)?;
    } else {
        print_answer(&found.answer)?;
    }
    mark_collected(state)?;
    let events = a.wait.is_some();
    finish_copies("collect", events, &client, &pending, &a.look, &found).await
}

/// The answer text of `rdv accept --answer/--answer-file`, if one was given.
pub(crate) fn read_answer_arg(
    answer: Option<String>,
    file: Option<&Path>,
) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let mut a = match (answer, file) {
        (Some(a), _) => {
            let a = Zeroizing::new(a);
            crate::term::warn_if_on_command_line(
                &a,
                "--answer",
                Some("RDV_ANSWER"),
                "give it in RDV_ANSWER or with --answer-file",
            );
            Zeroizing::new(a.as_bytes().to_vec())
        }
        (None, Some(f)) => crate::term::read_file_limited(f, 64 * 1024, "an answer")?,
        (None, None) => return Ok(None),
    };
    while a.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        a.pop();
    }
    if a.is_empty() {
        bail!("the answer is empty");
    }
    if a.len() > rdv::proto::answer::MAX_ANSWER {
        return Err(CliError::new(
            "answer_invalid",
            rdv::client::ErrorKind::BadInput,
            format!(
                "the answer is {} bytes, an answer holds at most {}",
                a.len(),
                rdv::proto::answer::MAX_ANSWER
            ),
        )
        .into());
    }
    Ok(Some(a))
}

#[cfg(test)]
mod tests {
    /// A state file reached through a symbolic link has its keys cleared where they are: in
    /// the file the link names (before, the link was replaced and the keys stayed).
    #[test]
    fn a_collected_state_file_behind_a_link_loses_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.state");
        std::fs::write(&real, "rdv-pending-answer 2\nkeys\n").unwrap();
        let link = dir.path().join("link.state");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        super::mark_collected(&link).unwrap();
        let text = std::fs::read_to_string(&real).unwrap();
        assert!(text.starts_with(super::COLLECTED), "{text}");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
