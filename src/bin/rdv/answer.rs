//! The answer channel on the command line: `rdv collect`, the state file, and waiting for an
//! answer (shared with `rdv offer --expect-answer --wait`).

use crate::cli::CollectArgs;
use crate::error::CliError;
use crate::out::{fields, note};
use crate::term::{escape_for_terminal, stdout_is_terminal};
use crate::transport::make_client;
use anyhow::{bail, Context, Result};
use rdv::client::{Client, CollectError, PendingAnswer};
use rdv::proto::ClientPolicy;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use zeroize::Zeroizing;

/// Most bytes read from a state file (a real one is under 400).
const STATE_LIMIT: u64 = 4096;

/// Write the state file: created new (an existing file is never overwritten) with mode 0600.
pub(crate) fn write_state(path: &Path, pending: &PendingAnswer) -> Result<()> {
    let mut f = crate::term::create_private(path).with_context(|| {
        format!(
            "creating the state file {} (it must not exist yet)",
            path.display()
        )
    })?;
    f.write_all(pending.to_text().as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing the state file {}", path.display()))?;
    Ok(())
}

/// Read a state file.
fn read_state(path: &Path) -> Result<PendingAnswer> {
    use std::io::Read;
    let mut text = Zeroizing::new(String::new());
    std::fs::File::open(path)
        .and_then(|f| f.take(STATE_LIMIT).read_to_string(&mut text))
        .with_context(|| format!("reading the state file {}", path.display()))?;
    PendingAnswer::from_text(&text).with_context(|| format!("{}", path.display()))
}

/// Look for the answer (once, or until `wait` has passed); `None` if none came. Once it is in,
/// delete the link unless `keep_link`. Progress goes to standard error.
pub(crate) async fn wait_for_answer(
    client: &Client,
    pending: &PendingAnswer,
    wait: Option<Duration>,
    every: Duration,
    keep_link: bool,
) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let answer = match wait {
        None => client.collect(pending).await?,
        Some(w) => {
            note!(
                "waiting up to {} for the answer (looking every {})",
                humantime::format_duration(w),
                humantime::format_duration(every)
            );
            match client.collect_within(pending, w, every).await {
                Ok(a) => Some(a),
                Err(CollectError::NoAnswerYet) => None,
                Err(e) => return Err(e.into()),
            }
        }
    };
    if answer.is_some() && !keep_link {
        // The link has done its job. Failing to delete it is not worth losing the answer over.
        match client.retire(pending).await {
            Ok(()) => note!("the link was deleted from the server"),
            Err(e) => eprintln!(
                "warning: the link could not be deleted ({}); it expires by itself",
                rdv::config::report(&e)
            ),
        }
    }
    Ok(answer)
}

/// Why there is no answer yet, and whether one can still come.
pub(crate) fn no_answer(pending: &PendingAnswer) -> String {
    let now = rdv::clock::Clock::now(&rdv::clock::SystemClock);
    if now >= pending.link_expires() {
        "no answer, and the link has expired: no accepter can fetch it any more, so no answer is coming".into()
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
    if stdout_is_terminal() {
        let (shown, escaped) = escape_for_terminal(answer);
        if escaped {
            note!("note: the answer holds control characters or invalid UTF-8; they are shown escaped (redirect standard output for the exact bytes)");
        }
        writeln!(out, "{shown}")?;
    } else {
        out.write_all(answer)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Run `rdv collect`.
pub(crate) async fn collect(a: CollectArgs) -> Result<()> {
    let pending = read_state(&a.state)?;
    let client = make_client(&a.transport, pending.server(), ClientPolicy::default()).await?;
    let Some(answer) =
        wait_for_answer(&client, &pending, a.wait, a.poll_every, a.keep_link).await?
    else {
        return Err(CliError::new(
            "no_answer_yet",
            rdv::client::ErrorKind::Transient,
            format!("{}; look again later", no_answer(&pending)),
        )
        .into());
    };
    std::fs::remove_file(&a.state)
        .with_context(|| format!("removing the state file {}", a.state.display()))?;
    drop(pending);
    if crate::out::json() {
        let mut f = fields! { "link_kept" => a.keep_link };
        crate::out::bytes_fields(&mut f, "answer", &answer);
        crate::out::emit("collect", f);
        return Ok(());
    }
    print_answer(&answer)
}

/// The answer text of `rdv accept --answer/--answer-file`, if one was given.
pub(crate) fn read_answer_arg(
    answer: Option<String>,
    file: Option<&Path>,
) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let mut a = match (answer, file) {
        (Some(a), _) => Zeroizing::new(Zeroizing::new(a).as_bytes().to_vec()),
        (None, Some(f)) => {
            Zeroizing::new(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?)
        }
        (None, None) => return Ok(None),
    };
    while a.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        a.pop();
    }
    if a.is_empty() {
        bail!("the answer is empty");
    }
    if a.len() > rdv::proto::answer::MAX_ANSWER {
        bail!(
            "the answer is {} bytes, an answer holds at most {}",
            a.len(),
            rdv::proto::answer::MAX_ANSWER
        );
    }
    Ok(Some(a))
}
