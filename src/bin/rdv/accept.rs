//! `rdv accept`, `rdv delete` and `rdv info`.

use crate::answer::read_answer_arg;
use crate::cli::{AcceptArgs, DeleteArgs, InfoArgs};
use crate::error::CliError;
use crate::out::{fields, note};
use crate::term::{
    arg_or_stdin, escape_for_terminal, read_passphrase_interactive, stdout_is_terminal,
};
use crate::transport::make_client;
use anyhow::{anyhow, Context, Result};
use rdv::proto::{kdf, ClientPolicy, DeleteToken, KdfLimits, Passphrase, RdvLink, ServerAddr};
use std::io::Write;
use std::time::Duration;

/// The link from the argument, `RDV_LINK` or standard input, checked before anything else runs
/// (its KDF parameters included: no Tor bootstrap for a link that asks too much).
pub(crate) fn read_link(arg: Option<String>) -> Result<RdvLink> {
    let given = arg.clone().map(zeroize::Zeroizing::new);
    let text = arg_or_stdin(arg, "rdv1: link")?;
    let link = RdvLink::parse(text.trim()).context("invalid link")?;
    if let Some(given) = given.filter(|g| g.as_str() != "-") {
        if link.passphrase.is_some() {
            crate::term::warn_if_on_command_line(
                &given,
                "a link with its passphrase",
                Some("RDV_LINK"),
                "give it in RDV_LINK or on standard input (- in place of the link)",
            );
        }
    }
    kdf::check_profile(link.kdf, &KdfLimits::default()).context("the link's KDF profile")?;
    Ok(link)
}

/// Run `rdv accept`.
pub(crate) async fn run(mut a: AcceptArgs) -> Result<()> {
    if let Some(path) = crate::via_agent::socket(&a.agent)? {
        return crate::via_agent::accept(a, path).await;
    }
    a.transport.take_link_from_direct(&mut a.link)?;
    let link = read_link(a.link.take())?;
    let answer = read_answer_arg(a.answer.take(), a.answer_file.as_deref())?;
    let passphrase = match (&link.passphrase, a.passphrase.take()) {
        (_, Some(p)) => {
            let p = zeroize::Zeroizing::new(p);
            crate::term::warn_if_on_command_line(
                &p,
                "--passphrase",
                Some("RDV_PASSPHRASE"),
                "give it in RDV_PASSPHRASE, or leave it out to be asked for it",
            );
            Some(Passphrase::new(p.as_str()))
        }
        (Some(_), None) => None,
        (None, None) => read_passphrase_interactive()?,
    };
    if link.passphrase.is_some() && passphrase.is_some() {
        // Refused by the library too; said here before any Tor bootstrap.
        return Err(rdv::client::AcceptError::PassphraseConflict.into());
    }
    if link.passphrase.is_none() && passphrase.is_none() {
        return Err(rdv::client::AcceptError::PassphraseRequired.into());
    }
    let policy = ClientPolicy {
        min_effort: a.min_effort,
        max_effort: a.max_effort,
        ..ClientPolicy::default()
    };
    let client = make_client(&a.transport, &link_servers(&link), policy)
        .await?
        .with_copy_spread(a.spread)
        .with_answer_every_copy(a.answer_every_copy);
    let found = client.accept(&link, passphrase).await?;
    note!(
        "opened link {} of {} in the bucket",
        found.index + 1,
        found.tried
    );
    say_verified(found.links_verified);
    if let Some(min) = a.min_k {
        if let Some(why) = crate::offer::short_of_min_k(found.links_verified, min) {
            return Err(too_few_links(why));
        }
    }
    let json = crate::out::json();
    if !json {
        show_payload(&found.payload)?;
    }
    let result = |answered: bool| {
        let mut f = fields! {
            "index" => found.index,
            "tried" => found.tried,
            "links_verified" => found.links_verified,
            "answer_expected" => found.reply.is_some(),
            "answered" => answered,
        };
        crate::out::bytes_fields(&mut f, "payload", &found.payload);
        f
    };
    // The answer not sent: the payload goes into the JSON result all the same (shown above
    // without --json), so that a script need not fetch the bucket a second time.
    let opened = |e: anyhow::Error| not_answered(e, result);
    let answered = match (&found.reply, answer) {
        (Some(reply), Some(answer)) => {
            // Interrupted during the pauses between a multi-server link's answers (every copy
            // answered, or the next copy after a server that did not take it), the rest go at
            // once (before, Ctrl-C left the answer on some copies only, and a second accept
            // then said it had not been sent); a second signal ends it at once.
            if a.answer_every_copy && reply.copies_answered_apart() {
                note!("note: --answer-every-copy: the answer goes to every server of the link, a --spread pause apart; servers comparing notes pair the copies by those times far above chance (docs/ANONYMITY.md)");
            }
            let mut stop = crate::interrupt::scope();
            let sent = stop.finish(&client, client.answer(reply, &answer)).await;
            drop(stop);
            if let Err(e) = sent {
                return Err(opened(e.into()));
            }
            note!("answered: the initiator can now collect the answer");
            true
        }
        (None, Some(_)) => {
            return Err(opened(
                CliError::new(
                    "no_answer_expected",
                    rdv::client::ErrorKind::BadInput,
                    "this link does not expect an answer (its initiator did not ask for one)",
                )
                .into(),
            ))
        }
        (Some(_), None) => {
            note!("note: the initiator asks for an answer; to give one, run rdv accept again with --answer TEXT (or RDV_ANSWER, or --answer-file)");
            false
        }
        (None, None) => false,
    };
    if json {
        crate::out::emit("accept", result(answered))?;
    }
    Ok(())
}

/// An accept whose answer failed (`e`), carrying the accept's result (`result(answered)`: the
/// payload, so that it need not be fetched again). `answered` is true, and the message says so,
/// when some of a multi-server link's servers took this answer while another said the link was
/// answered before: the answer is out, and the initiator may collect it. Before, that was
/// reported as an answer not sent.
pub(crate) fn not_answered(
    e: anyhow::Error,
    result: impl Fn(bool) -> serde_json::Map<String, serde_json::Value>,
) -> anyhow::Error {
    let took = match e.downcast_ref::<rdv::client::AnswerError>() {
        Some(rdv::client::AnswerError::AlreadyAnswered { took, .. }) => *took,
        _ => 0,
    };
    e.context(crate::error::Partial {
        message: if took > 0 {
            "the link opened and this answer was left on some of its servers, but another says it was answered before"
        } else {
            "the link opened, but the answer was not sent"
        },
        fields: result(took > 0),
    })
}

/// Write the payload and a newline to standard output: exactly, or escaped on a terminal.
pub(crate) fn show_payload(payload: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if stdout_is_terminal() {
        let (shown, escaped) = escape_for_terminal(payload);
        if escaped {
            note!("note: the payload holds control characters or invalid UTF-8; they are shown escaped (redirect standard output for the exact bytes)");
        }
        writeln!(out, "{shown}")?;
    } else {
        out.write_all(payload)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// The error of an accept that `--min-k` stopped, `why` saying what the bucket proves.
pub(crate) fn too_few_links(why: String) -> anyhow::Error {
    CliError::new(
        "too_few_links",
        rdv::client::ErrorKind::ServerMisbehaved,
        format!("{why}: the link opened, but its payload is not shown and no answer was sent (without --min-k they would be)"),
    )
    .into()
}

/// Say how many real links the bucket proves: the set a link hides among (PROTOCOL.md §16).
pub(crate) fn say_verified(k: Option<usize>) {
    match k {
        Some(0) => eprintln!("WARNING: no entry of this bucket carries a stamp this client counts, not even this link's own: the server asks for less work per link than this client requires (--min-effort) and the link's initiator stamped at that (its own floor was lower), or the server altered the stamps, so none proves a real client; how many real links this one hides among is unknown (docs/ANONYMITY.md)"),
        Some(k) if k <= 1 => eprintln!("WARNING: this link hides among {k} verified link(s): no other entry of its bucket carries a valid stamp, so whoever runs the server can tell whose link a fetch of this bucket is for (a quiet server, or one that isolates you; docs/ANONYMITY.md)"),
        Some(k) => note!("this link hides among {k} verified links (entries whose stamps prove the work of a real client)"),
        None => eprintln!("WARNING: the server proves none of its links (no stamps, protocol version below 3): how many real links this one hides among is unknown, and a server that isolates you cannot be told from an honest one"),
    }
}

/// Run `rdv delete`.
pub(crate) async fn delete(mut a: DeleteArgs) -> Result<()> {
    if let Some(path) = crate::via_agent::socket(&a.agent)? {
        return crate::via_agent::delete(a, path).await;
    }
    a.transport.take_link_from_direct(&mut a.link)?;
    let link = read_link(a.link.take())?;
    let token = read_token(&mut a)?;
    let client = make_client(&a.transport, &link_servers(&link), ClientPolicy::default())
        .await?
        .with_copy_spread(a.spread);
    if link.mirrors.is_empty() {
        client.delete(&link, &token).await?;
    } else {
        // Every copy: one left on a server that was down is still there to be fetched, and the
        // user must hear so (and get that copy's own link and token). Ctrl-C during the pauses
        // between copies deletes the rest at once (before, it ended the command with copies
        // left and said nothing); a second one ends it at once.
        let mut stop = crate::interrupt::scope();
        let outcomes = stop
            .finish(&client, client.delete_each(&link, &token))
            .await;
        drop(stop);
        // A copy that is not there any more (deleted before, expired) is not left over.
        let gone = |r: &Result<(), rdv::client::DeleteError>| {
            matches!(r, Ok(()) | Err(rdv::client::DeleteError::NothingToDelete))
        };
        let deleted_now = outcomes.iter().any(|(_, r)| r.is_ok());
        let (done, left): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(|(_, r)| gone(r));
        if !deleted_now && (left.is_empty() || done.is_empty()) {
            let left = done.into_iter().chain(left);
            let failures = left
                .filter_map(|(s, r)| Some((s.to_string(), r.err()?)))
                .collect();
            return Err(rdv::client::DeleteError::AllServers(failures).into());
        }
        if !left.is_empty() {
            let list = |v: &[(ServerAddr, Result<(), rdv::client::DeleteError>)]| {
                v.iter()
                    .map(|(s, r)| match r {
                        Ok(()) | Err(rdv::client::DeleteError::NothingToDelete) => s.to_string(),
                        Err(e) => format!("{s} ({})", rdv::config::report(e)),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            // Each copy left, on its own link with its own token: the same delete run again
            // deleted the copies already gone a second time, which no other client does, and
            // the servers that got it paired the copies for servers comparing notes (a
            // helper's review, 2026-12-07).
            let servers: Vec<ServerAddr> = left.iter().map(|(s, _)| s.clone()).collect();
            let copies = copies_left(&link, &token, &servers);
            if !crate::out::json() {
                show_copies_left(&copies);
            }
            let mut e = CliError::new(
                "partly_deleted",
                rdv::client::ErrorKind::Transient,
                format!(
                    "deleted on {}, but NOT on {}: delete each copy left later with its own link and token ({}), not with this link again, which would delete the other copies a second time and so pair them for servers comparing notes (a copy expires by itself otherwise)",
                    list(&done),
                    list(&left),
                    if crate::out::json() { "`left`" } else { "above" }
                ),
            );
            e.got = Some(copies_left_fields(copies));
            return Err(e.into());
        }
    }
    // Done whether or not it can be said: a retry would find nothing to delete.
    let said = if crate::out::json() {
        crate::out::emit("delete", fields! { "deleted" => true })
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(out, "deleted")
            .and_then(|()| out.flush())
            .map_err(anyhow::Error::new)
    };
    said.context("the link WAS deleted, but saying so failed")
}

/// A copy of `link` left on a server: the server, that copy's own one-server link (without
/// the passphrase: a delete needs none) and its own token.
pub(crate) type CopyLeft = (
    String,
    zeroize::Zeroizing<String>,
    zeroize::Zeroizing<String>,
);

/// The copies of `link` on `servers`, each with its own link and token (deleted with those, a
/// copy left is deleted alone: the whole link again would delete the others a second time).
pub(crate) fn copies_left(
    link: &RdvLink,
    token: &DeleteToken,
    servers: &[ServerAddr],
) -> Vec<CopyLeft> {
    let all = link.servers();
    servers
        .iter()
        .filter_map(|s| {
            let i = all.iter().position(|(x, _)| x == s)?;
            let (copy, token) = rdv::client::copy_of(link, token, i)?;
            let (link, token) = crate::agent::kept_text(&copy, &token);
            Some((s.to_string(), link, token))
        })
        .collect()
}

/// [`copies_left`] on standard error, for the user to delete each later.
pub(crate) fn show_copies_left(copies: &[CopyLeft]) {
    eprintln!("the copies left, each to delete later on its own: save its token to a file and run `rdv delete LINK --token-file FILE` (or put the token in RDV_DELETE_TOKEN):");
    for (server, link, token) in copies {
        eprintln!(
            "  on {server}:\n    link:  {}\n    token: {}",
            link.as_str(),
            token.as_str()
        );
    }
}

/// [`copies_left`] as a JSON result's `left` (moved in, not copied: the error wipes what it
/// holds when dropped).
pub(crate) fn copies_left_fields(
    copies: Vec<CopyLeft>,
) -> serde_json::Map<String, serde_json::Value> {
    let left = copies
        .iter()
        .map(|(server, link, token)| {
            serde_json::json!({
                "server": server,
                "link": link.as_str(),
                "delete_token": token.as_str(),
            })
        })
        .collect();
    let mut got = serde_json::Map::new();
    got.insert("left".into(), serde_json::Value::Array(left));
    got
}

/// The deletion token from `--token`, `RDV_DELETE_TOKEN` or `--token-file`.
pub(crate) fn read_token(a: &mut DeleteArgs) -> Result<DeleteToken> {
    let text = match (a.token.take(), &a.token_file) {
        (Some(t), _) => {
            let t = zeroize::Zeroizing::new(t);
            crate::term::warn_if_on_command_line(
                &t,
                "--token",
                Some("RDV_DELETE_TOKEN"),
                "give it in RDV_DELETE_TOKEN or with --token-file",
            );
            t
        }
        (None, Some(f)) => {
            let bytes = crate::term::read_file_limited(f, 4096, "a deletion token")?;
            zeroize::Zeroizing::new(
                std::str::from_utf8(&bytes)
                    .map_err(|_| anyhow!("{} is not text", f.display()))?
                    .to_owned(),
            )
        }
        (None, None) => {
            anyhow::bail!("give the delete token with --token, --token-file or RDV_DELETE_TOKEN")
        }
    };
    DeleteToken::parse(text.trim())
        .ok_or_else(|| anyhow!("the delete token must be the 43 characters printed by rdv offer"))
}

/// Run `rdv info`.
pub(crate) async fn info(a: InfoArgs) -> Result<()> {
    // `rdv info --direct HOST:PORT`: clap takes the address as --direct's value.
    let direct_to = a.transport.direct.clone().filter(|d| !d.is_empty());
    let Some(text) = a.server.clone().or(direct_to) else {
        anyhow::bail!("give the server: rdv info HOST:PORT (or set RDV_SERVER, or `server` in the client configuration)");
    };
    let server = ServerAddr::parse(&text).with_context(|| format!("server {text:?}"))?;
    let client = make_client(
        &a.transport,
        std::slice::from_ref(&server),
        ClientPolicy::default(),
    )
    .await?;
    let i = client.info(&server).await?;
    if crate::out::json() {
        crate::out::emit(
            "info",
            fields! {
                "server" => server.to_string(),
                "protocol_version" => i.version,
                "links_per_bucket" => i.max_links_per_bucket,
                "open_window_secs" => i.open_window_secs,
                "ttl_secs" => i.ttl_secs,
                "server_time" => i.server_time,
            },
        )?;
        return Ok(());
    }
    println!("protocol version: {}", i.version);
    println!("links per bucket: {}", i.max_links_per_bucket);
    println!(
        "open window: {}",
        humantime::format_duration(Duration::from_secs(i.open_window_secs))
    );
    println!(
        "ttl: {}",
        humantime::format_duration(Duration::from_secs(i.ttl_secs))
    );
    println!("server time: {}", i.server_time);
    Ok(())
}

/// Every server a link names, the main one first.
fn link_servers(link: &RdvLink) -> Vec<ServerAddr> {
    link.servers().into_iter().map(|(s, _)| s).collect()
}
