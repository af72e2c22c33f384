//! `rdv offer`: read the payload, choose the passphrase, store, print the link (and, with
//! `--expect-answer`, keep the state for the answer or wait for it).

use crate::answer::{finish_copies, no_answer, wait_for_answer, write_state};
use crate::cli::OfferArgs;
use crate::error::CliError;
use crate::out::{fields, note};
use crate::term::escape_for_terminal;
use crate::transport::make_client;
use anyhow::{bail, Context, Result};
use rdv::client::{generate_passphrase, Client, PendingAnswer};
use rdv::proto::{ClientPolicy, KdfProfile, Passphrase, ServerAddr};
use std::io::{IsTerminal, Read, Write};
use std::path::Path;

/// Most bytes read from standard input for a payload (far above what a link holds, so that an
/// oversize payload gets its clear error instead of being cut).
const STDIN_LIMIT: u64 = 64 * 1024;

/// The payload from `--payload`, `--payload-file` or standard input, trailing newlines removed.
pub(crate) fn read_payload(a: &OfferArgs) -> Result<Vec<u8>> {
    let mut p = if let Some(p) = &a.payload {
        if !p.is_empty() {
            crate::term::warn_if_on_command_line(
                p,
                "--payload",
                None,
                "give it with --payload-file or on standard input",
            );
        }
        p.as_bytes().to_vec()
    } else if let Some(f) = a.payload_file.as_ref().filter(|f| f.as_os_str() != "-") {
        crate::term::read_file_limited(f, STDIN_LIMIT, "a payload")?.to_vec()
    } else {
        if std::io::stdin().is_terminal() {
            note!("Type or paste the payload (your connection link), then press Ctrl-D:");
        }
        let mut v = Vec::new();
        std::io::stdin()
            .take(STDIN_LIMIT + 1)
            .read_to_end(&mut v)
            .context("reading the payload from standard input")?;
        if v.len() as u64 > STDIN_LIMIT {
            bail!(
                "the payload on standard input is longer than {STDIN_LIMIT} bytes (a sealed link holds at most {})",
                rdv::proto::seal::MAX_PAYLOAD
            );
        }
        v
    };
    while p.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        p.pop();
    }
    if p.is_empty() {
        bail!("the payload is empty: give it with --payload, --payload-file or on standard input");
    }
    Ok(p)
}

/// Refuse an output file that exists, whose directory is missing, or where nothing can be
/// created, before anything is stored.
pub(crate) fn check_output(flag: &str, path: &std::path::Path) -> Result<()> {
    // Not `exists()`, which follows a symbolic link: one to nowhere passed, and the file's
    // creation, which never follows one, failed after the store.
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => bail!(
            "{flag} {}: a symbolic link is there (rdv writes a new file, never through a link): remove it or choose another name",
            path.display()
        ),
        Ok(_) => bail!(
            "{flag} {}: the file exists already (it is never overwritten)",
            path.display()
        ),
        Err(_) => {}
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "{flag} {}: the directory {} does not exist",
            path.display(),
            dir.display()
        );
    }
    tempfile::Builder::new()
        .prefix(".rdv-check-")
        .tempfile_in(dir)
        .map(drop)
        .with_context(|| {
            format!(
                "{flag} {}: cannot create a file in {}",
                path.display(),
                dir.display()
            )
        })
}

/// An output failed after the link was stored: delete the link (nobody has it), or, when that
/// fails too, say how to delete it later.
/// Why `k` verified links (`None`: the server proves none) fall short of `--min-k min`, if they do.
pub(crate) fn short_of_min_k(k: Option<usize>, min: usize) -> Option<String> {
    match k {
        Some(k) if k >= min => None,
        Some(k) => Some(format!(
            "only {k} verified link(s) in the bucket, fewer than --min-k {min}"
        )),
        None => Some(format!(
            "the server proves none of its links (no stamps), and --min-k {min} asks for proof"
        )),
    }
}

async fn take_back(
    client: &Client,
    offer: &rdv::client::Offer,
    why: anyhow::Error,
    state: Option<&Path>,
) -> anyhow::Error {
    take_back_as(
        client,
        offer,
        why,
        "io",
        rdv::client::ErrorKind::Local,
        state,
    )
    .await
}

/// Ctrl-C or SIGTERM came before the link was handed over: take it back at once (without the
/// pauses between copies), as the error `cancelled`.
async fn cancelled(
    client: &Client,
    offer: &rdv::client::Offer,
    state: Option<&Path>,
) -> anyhow::Error {
    let why = anyhow::anyhow!("cancelled before the link was handed over");
    take_back_as(
        client,
        offer,
        why,
        "cancelled",
        rdv::client::ErrorKind::Local,
        state,
    )
    .await
}

/// [`take_back`], the failure reported with `code` and `kind`. `state`: a state file this
/// offer wrote, removed too (its keys are for an answer to a link nobody was given).
async fn take_back_as(
    client: &Client,
    offer: &rdv::client::Offer,
    why: anyhow::Error,
    code: &'static str,
    kind: rdv::client::ErrorKind,
    state: Option<&Path>,
) -> anyhow::Error {
    drop_state(state);
    let why = rdv::config::report(&*why).to_string();
    // At once, without pauses between copies (as the agent's take-backs): nobody has the
    // link, and the command is to end soon, Ctrl-C or not.
    client.interrupt();
    let msg = match client.delete(&offer.link, &offer.delete_token).await {
        Ok(()) => {
            format!("{why}: nothing was handed over, and the link was deleted from the server")
        }
        Err(e) => {
            // The user needs the link and its token to delete it (not its passphrase: a
            // delete needs none); on standard error only. A multi-server link's copies each
            // with their own link and token, as `rdv delete` shows those it could not delete:
            // the whole link again would send a second delete to a server whose copy is gone.
            if offer.link.mirrors.is_empty() {
                eprintln!(
                    "the stored link, to delete later: save its token to a file and run `rdv delete LINK --token-file FILE`:\n  link:  {}\n  token: {}",
                    offer.link.without_passphrase().to_uri().as_str(),
                    offer.delete_token.to_text().as_str()
                );
            } else {
                let servers: Vec<_> = offer.link.servers().into_iter().map(|(s, _)| s).collect();
                crate::accept::show_copies_left(&crate::accept::copies_left(
                    &offer.link,
                    &offer.delete_token,
                    &servers,
                ));
            }
            format!(
                "{why}; the link could NOT be deleted ({}): delete it with the link and token above, or it expires by itself",
                rdv::config::report(&e)
            )
        }
    };
    CliError::new(code, kind, msg).into()
}

/// Writing the rest of the output failed (`e`) after the link's line went out: the link is not
/// taken back (whoever read that line holds it), and the error says so.
pub(crate) fn shown_then_failed(e: anyhow::Error) -> anyhow::Error {
    let why = rdv::config::report(&*e).to_string();
    CliError::new(
        "io",
        rdv::client::ErrorKind::Local,
        format!("writing to standard output: {why}; the link's line was written before this, so the link stays on the server until it expires"),
    )
    .into()
}

/// The mean pause between the stores of the copies of an offer on `servers` servers, when it
/// is to differ from the copy spread: held (`hold`), the link waits for the buckets' closes
/// anyway, so its copies' stores go [`rdv::client::HOLD_STORE_SPREAD`] apart unless this
/// process's command line gave `--spread` (the lab: stores paired 23-27 % at 30 s, 7-10 % at
/// 2 min). For `rdv offer` and the agent's held offers alike.
pub(crate) fn held_store_spread(hold: bool, servers: usize) -> Option<std::time::Duration> {
    (hold && servers > 1 && !crate::via_agent::given_on_command_line("--spread"))
        .then_some(rdv::client::HOLD_STORE_SPREAD)
}

/// How long until a close, `secs` away, in words: seconds while they matter ("in 1 min" for a
/// close 4 s away misleads), minutes after.
pub(crate) fn in_words(secs: u64) -> String {
    if secs < 120 {
        format!("{secs} s")
    } else {
        format!("{} min", secs.div_ceil(60))
    }
}

/// Remove the state file `state` an offer wrote, if any, when its link is not handed over.
fn drop_state(state: Option<&Path>) {
    if let Some(p) = state {
        let _ = std::fs::remove_file(p);
    }
}

/// Say on stderr what a KDF profile below `moderate` costs: whoever sees the link guesses its
/// passphrase cheaply offline.
pub(crate) fn warn_if_weak(kdf: KdfProfile) {
    if kdf == KdfProfile::Test {
        eprintln!("WARNING: the 'test' KDF profile makes passphrase guessing cheap; use it for tests only.");
    } else if kdf.params().is_weak() {
        eprintln!("WARNING: the KDF profile {kdf} asks less work than 'moderate' (19 MiB, 2 passes); whoever sees the link can guess its passphrase cheaply offline.");
    }
}

/// The given passphrase (warned about when weak) or a generated one.
pub(crate) fn choose_passphrase(given: Option<&str>) -> Result<Passphrase> {
    match given {
        Some("") => bail!("the passphrase is empty"),
        Some(given) => {
            crate::term::warn_if_on_command_line(
                given,
                "--passphrase",
                Some("RDV_PASSPHRASE"),
                "give it in RDV_PASSPHRASE, or leave it out to get a generated one",
            );
            let p = Passphrase::new(given);
            if p.estimated_bits() < 50.0 {
                eprintln!("WARNING: this passphrase looks weak (about {:.0} bits); whoever sees the link can guess it offline. Omit --passphrase to get a generated one.", p.estimated_bits());
            }
            Ok(p)
        }
        None => Ok(generate_passphrase()),
    }
}

/// Refuse the answer flags that would do nothing: `--early` and `--delete-now` apply to a
/// wait here (without one they were silently ignored: the user who asked for an early look or a
/// delete got neither, and no word), and `--early` has nothing to look early for while
/// `--hold` keeps the link back until the close (with it, the looks began before anyone could
/// have the link).
fn refuse_idle_look_flags(a: &OfferArgs) -> Result<()> {
    let refuse = |why: String| -> Result<()> {
        Err(CliError::new("invalid_input", rdv::client::ErrorKind::BadInput, why).into())
    };
    if a.wait.is_none() {
        if let Some(flag) = [
            (a.look.early, "--early"),
            (a.look.delete_now, "--delete-now"),
        ]
        .into_iter()
        .find_map(|(set, flag)| set.then_some(flag))
        {
            return refuse(format!("{flag} applies only while rdv offer waits for the answer (--expect-answer --wait); with --state, give it to rdv collect"));
        }
    }
    if a.hold && a.look.early {
        return refuse("--early has nothing to look early for with --hold, which hands the link over only after the bucket closes".into());
    }
    Ok(())
}

/// Run `rdv offer`.
pub(crate) async fn run(mut a: OfferArgs) -> Result<()> {
    // Nothing is stored for a link that would be written nowhere (a QR image holds it too,
    // but not an answer waited for).
    if a.qr_png.is_none() || a.wait.is_some() {
        crate::term::refuse_output_to_nowhere(
            "the link",
            "redirect it to a file, or give --qr-png FILE",
        )?;
    } else if a.two_channel && a.passphrase.is_none() {
        // The image holds the link without its passphrase, which only standard output gets.
        crate::term::refuse_output_to_nowhere(
            "the generated passphrase",
            "redirect it to a file, or choose one with --passphrase",
        )?;
    } else if crate::term::output_goes_nowhere() {
        // The link reaches the image; the delete token only standard output: said, not
        // silently lost (a helper's review).
        eprintln!("warning: standard output is closed or /dev/null: the delete token printed there is lost, so the link cannot be taken down before it expires");
    }
    if let Some(path) = crate::via_agent::socket(&a.agent)? {
        return crate::via_agent::offer(a, path).await;
    }
    refuse_idle_look_flags(&a)?;
    let direct_to = a.transport.direct.clone().filter(|d| !d.is_empty());
    let texts: Vec<String> = if a.server.is_empty() {
        direct_to.clone().into_iter().collect()
    } else {
        a.server.clone()
    };
    if texts.is_empty() {
        bail!("give the server with --server HOST:PORT (or --direct HOST:PORT for local tests)");
    }
    if texts.len() > 1 && direct_to.is_some() && !a.server.is_empty() {
        bail!("with several --server, use --direct without a value (each server is reached at its own address)");
    }
    let servers = texts
        .iter()
        .map(|t| ServerAddr::parse(t).with_context(|| format!("--server {t:?}")))
        .collect::<Result<Vec<_>>>()?;
    let kdf = crate::client_config::check_kdf(&a.kdf).context("--kdf")?;
    warn_if_weak(kdf);
    if a.expect_answer && a.state.is_none() && a.wait.is_none() {
        bail!("--expect-answer needs --wait DURATION (wait for the answer here) or --state FILE (collect it later with rdv collect), or both");
    }
    if a.expect_answer {
        crate::answer::warn_costs(&a.look);
    }
    // Every output path is checked before anything is stored: a link on the server that the
    // user never got (or cannot collect the answer for) is worse than no offer.
    if let Some(state) = &a.state {
        check_output("--state", state)?;
    }
    if let Some(png) = &a.qr_png {
        check_output("--qr-png", png)?;
    }
    let payload = read_payload(&a)?;
    let given = a.passphrase.take().map(zeroize::Zeroizing::new);
    let passphrase = choose_passphrase(given.as_deref().map(|s| s.as_str()))?;
    let policy = ClientPolicy {
        max_skew_secs: a.max_skew.as_secs(),
        max_open_window_secs: a.max_window.as_secs(),
        max_seq: a.max_seq,
        min_effort: a.stamps.min_effort,
        max_effort: a.stamps.max_effort,
    };
    let policy_window = policy.max_open_window_secs;
    let store_spread = held_store_spread(a.hold, servers.len());
    let client = make_client(&a.transport, &servers, policy)
        .await?
        .with_copy_spread(a.spread)
        .with_store_spread(store_spread);
    // Until the link is handed over, Ctrl-C and SIGTERM take back what was stored: nobody has
    // the link yet. Before, a multi-server offer interrupted while it waited to store a
    // further copy left the copies stored so far on their servers until they expired.
    let mut stop = crate::interrupt::scope();
    let stored = async {
        if a.expect_answer {
            client
                .offer_to_all_expecting_answer(&servers, &payload, passphrase, kdf)
                .await
                .map(|(o, p)| (o, Some(p)))
        } else {
            client
                .offer_to_all(&servers, &payload, passphrase, kdf)
                .await
                .map(|o| (o, None))
        }
    };
    // Interrupted, the pauses end, a copy on its way finishes, and what was stored is deleted.
    let (offer, pending) = stop.finish(&client, stored).await?;
    if stop.was_signalled() {
        return Err(cancelled(&client, &offer, None).await);
    }
    if let (Some(p), Some(state)) = (&pending, &a.state) {
        if let Err(e) = write_state(state, p) {
            // Not removed: the file that failed may be another one that was there.
            return Err(take_back(&client, &offer, e.context("--state"), None).await);
        }
    }
    // The bucket ID is not printed: its hash is the locator.
    note!(
        "stored; the bucket passed the anti-fingerprinting check (fresh, sequence number {} <= {})",
        offer.bucket.seq,
        a.max_seq
    );
    if !offer.link.mirrors.is_empty() {
        note!(
            "a copy is on each of the {} servers; the accepter needs only one of them to answer",
            offer.link.mirrors.len() + 1
        );
    }
    // When every copy's bucket is closed to every client, on this machine's clock (from the
    // buckets' IDs and the policy, never from the server's word on its time).
    let closes_at = offer.closes_at;
    let closes_in = closes_at.saturating_sub(rdv::clock::Clock::now(&rdv::clock::SystemClock));
    let when = rdv::clock::rfc3339(closes_at);
    let in_words = in_words(closes_in);
    if let Some((copy, ahead)) = offer.clock_off() {
        eprintln!("{}", clock_warning(&offer.link.servers()[copy].0, ahead));
    }
    // Against a server whose window is shorter than ours, say why the close comes later.
    if offer.server_info.open_window_secs < policy_window {
        note!(
            "note: the bucket counts as closed to every client --max-window ({}) after its creation, not after the server's shorter window ({}): the server could tell each client another window",
            humantime::format_duration(std::time::Duration::from_secs(policy_window)),
            humantime::format_duration(std::time::Duration::from_secs(
                offer.server_info.open_window_secs
            )),
        );
    }
    // A held offer's looks for the answer, begun with the hold (below).
    let mut looks: Option<crate::answer::Looks<'_>> = None;
    let counted = if a.hold {
        note!("holding the link until the bucket closes at {when} (in {in_words}): handed over after that, the accepter's fetch hides among all the bucket's links");
        if crate::out::json() {
            let event = fields! { "event" => "holding", "bucket_closes_at" => closes_at };
            if let Err(e) = crate::out::emit("offer", event) {
                // Nobody could be told the link after the hold either.
                return Err(take_back(&client, &offer, e, a.state.as_deref()).await);
            }
        }
        // With --wait, the looks for the answer begin now, each copy's from its own close, as
        // for an offer that is not held (and as the agent's held offers do), while the counts
        // go on: begun after the count, a mailbox's first look followed the count fetch by one
        // look pause and tied the two together, and every copy's looks ended the wait after
        // the earliest close, pointing to another server's close (a helper's review,
        // 2026-12-07). Nobody has the link before the count, so nothing is found before it.
        if let (Some(p), Some(wait)) = (&pending, a.wait) {
            looks = Some(Box::pin(client.collect_scheduled(
                p,
                crate::answer::schedule(&a.look),
                wait,
            )));
        }
        // Each copy's bucket counted past its own close by a random pause: a fetch of every
        // held bucket right at its close would tell the server which buckets hold a waiting
        // initiator's link, and one after the latest close would tell a server whose bucket
        // closed earlier when another server's did. The close on the wall clock with its
        // fraction of a second (not in whole seconds from now, which would carry the store's
        // fraction into the count fetch's moment), read again while waiting; the pause drawn
        // afresh if a stop passes it. A count that cannot be had leaves a link nobody was
        // given: taken back.
        let mut count = std::pin::pin!(client.verified_after_closes(&offer, a.look.poll_every));
        let mut ended = None;
        let counted = loop {
            let going_on = async {
                match looks.as_mut() {
                    Some(l) => l.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                k = &mut count => break k,
                // Over before the count (no wait left, say): kept for after the hand-over.
                r = going_on, if ended.is_none() => ended = Some(r),
                _ = stop.signalled() => {
                    // Nobody has the link yet: take it down rather than leave it behind (at
                    // once, without pauses between the copies).
                    client.interrupt();
                    drop_state(a.state.as_deref());
                    return match client.delete(&offer.link, &offer.delete_token).await {
                        Ok(()) => Err(CliError::new("cancelled", rdv::client::ErrorKind::Local, "cancelled while holding; the link was deleted from the server").into()),
                        Err(e) => Err(CliError::new("cancelled", rdv::client::ErrorKind::Local, format!("cancelled while holding; the link could NOT be deleted ({}); it expires by itself", rdv::config::report(&e))).into()),
                    };
                }
            }
        };
        // Over with no answer before the link was handed over (a wait shorter than the hold;
        // its last look failed, too: the looks go on through failures until the end): none is
        // begun here, and the wait gets a last round after the hand-over (below), so that the
        // link is never handed over with nobody looking for its answer.
        looks = match ended {
            Some(Ok(found)) => Some(Box::pin(std::future::ready(Ok(found)))),
            Some(Err(rdv::client::CollectError::NoAnswerYet)) => None,
            Some(Err(e)) => {
                tracing::info!(error = %rdv::config::report(&e), "the last look before the hand-over failed; the looks get a last round after it");
                None
            }
            None => looks,
        };
        Some(counted)
    } else {
        note!("the bucket closes at {when} (in {in_words}); handed over after that, the accepter's fetch hides among all the bucket's links (--hold waits for it)");
        None
    };
    // With --hold: what an accepter will be told, from one fetch of each closed bucket.
    let verified = if let Some(counted) = counted {
        let k = match counted {
            Ok(k) => k,
            Err(e) => {
                let e = anyhow::Error::new(e);
                let (code, kind) = crate::error::code(&e);
                let why = e.context("counting the closed bucket's verified links");
                return Err(
                    take_back_as(&client, &offer, why, code, kind, a.state.as_deref()).await,
                );
            }
        };
        crate::accept::say_verified(k);
        if let Some(min) = a.min_k {
            if let Some(why) = short_of_min_k(k, min) {
                drop_state(a.state.as_deref());
                client.interrupt();
                return Err(match client.delete(&offer.link, &offer.delete_token).await {
                    Ok(()) => CliError::new("too_few_links", rdv::client::ErrorKind::ServerMisbehaved, format!("{why}: the link was not handed over and was deleted from the server")),
                    Err(e) => CliError::new("too_few_links", rdv::client::ErrorKind::ServerMisbehaved, format!("{why}: the link was not handed over, and could NOT be deleted ({}); it expires by itself", rdv::config::report(&e))),
                }
                .into());
            }
        }
        Some(k)
    } else {
        None
    };
    let token = offer.delete_token.to_text();
    let link_text = if a.two_channel {
        offer.link.without_passphrase().to_uri()
    } else {
        offer.link.to_uri()
    };
    let pass = zeroize::Zeroizing::new(
        offer
            .link
            .passphrase
            .as_ref()
            .map(|p| p.expose().to_string())
            .unwrap_or_default(),
    );
    if let Some(png) = &a.qr_png {
        if let Err(e) = crate::qr::write_png(&link_text, png) {
            return Err(
                take_back(&client, &offer, e.context("--qr-png"), a.state.as_deref()).await,
            );
        }
        note!("wrote the link's QR code to {}", png.display());
    }
    // Interrupted on the way here (the count, the QR code): nobody has the link yet.
    if stop.was_signalled() {
        return Err(cancelled(&client, &offer, a.state.as_deref()).await);
    }
    // Handing the link over: a write that fails before the link is out (a reader gone, a full
    // disk under a redirect, a QR code that cannot be drawn) leaves a stored link that nobody
    // has, so it is taken back as a failed --qr-png is. One that fails after the link's line
    // went out leaves it: whoever read that line holds a link that must keep working.
    let shown = std::cell::Cell::new(false);
    let hand_over = || -> Result<()> {
        if crate::out::json() {
            let mut f = fields! {
                "event" => "stored",
                "link" => &*link_text,
                "delete_token" => &*token,
                "two_channel" => a.two_channel,
                "bucket_seq" => offer.bucket.seq,
                "bucket_closes_at" => closes_at,
                "bucket_closes_in_secs" => if a.hold { 0 } else { closes_in },
                "held" => a.hold,
                "answer_expected" => a.expect_answer,
                "servers" => offer.link.servers().iter().map(|(s, _)| s.to_string()).collect::<Vec<_>>(),
            };
            if let Some(k) = verified {
                f.insert("links_verified".into(), serde_json::json!(k));
            }
            if a.two_channel {
                f.insert("passphrase".into(), pass.as_str().into());
            }
            if let Some(state) = &a.state {
                f.insert("state_file".into(), state.display().to_string().into());
            }
            if let Some(png) = &a.qr_png {
                f.insert("qr_png".into(), png.display().to_string().into());
            }
            if a.qr {
                // Standard output holds the one JSON object: the codes go to standard error
                // (which, when it cannot be written, is ignored like every other line there:
                // the link goes out on standard output all the same).
                let codes = [
                    Some(crate::qr::terminal(&link_text, a.qr_invert)?),
                    a.two_channel
                        .then(|| crate::qr::terminal(&pass, a.qr_invert))
                        .transpose()?,
                ];
                for code in codes.into_iter().flatten() {
                    eprintln!("{code}");
                }
            }
            return Ok(crate::out::try_emit("offer", f)?);
        }
        let mut out = std::io::stdout().lock();
        // QR codes go with the result on standard output.
        let qr = |text: &str, out: &mut dyn Write| -> Result<()> {
            if a.qr {
                writeln!(out, "{}", crate::qr::terminal(text, a.qr_invert)?)?;
            }
            Ok(())
        };
        writeln!(out, "link: {}", &*link_text)?;
        out.flush()?;
        // Out once it can be opened: in two-channel mode, with its passphrase.
        shown.set(!a.two_channel);
        qr(&link_text, &mut out)?;
        if a.two_channel {
            writeln!(out, "passphrase: {}", pass.as_str())?;
            out.flush()?;
            shown.set(true);
            qr(&pass, &mut out)?;
            note!("Send the other person the link through one channel and the passphrase through another (never both in one message). They run `rdv accept`, paste the link, then type the passphrase.");
        } else {
            note!("Send the other person the link; it contains the passphrase, so whoever sees it can open it (--two-channel splits them). They run `rdv accept` and paste the link.");
        }
        if a.expect_answer {
            note!("To answer, they add --answer-file FILE (or --answer TEXT) to rdv accept.");
        }
        writeln!(out, "delete-token: {}", &*token)?;
        out.flush()?;
        Ok(())
    };
    if let Err(e) = hand_over() {
        if shown.get() {
            return Err(shown_then_failed(e));
        }
        let why = e.context("writing the link to standard output");
        return Err(take_back(&client, &offer, why, a.state.as_deref()).await);
    }
    // The link is out: from here Ctrl-C and SIGTERM end the command (during --wait too;
    // before, the hold's handlers swallowed them for the rest of the process).
    stop.end();
    if crate::out::json() {
        // The link went out at once, so that a program can hand it over; the answer follows
        // on a line of its own.
        if let (Some(pending), Some(wait)) = (&pending, a.wait) {
            let found = wait_and_finish(&a, &client, pending, wait, looks).await?;
            let mut f = fields! { "event" => "answer", "link_kept" => !a.look.delete_now };
            crate::out::bytes_fields(&mut f, "answer", &found.answer);
            crate::out::emit("offer", f)?;
            collected(&a)?;
            finish_copies("offer", true, &client, pending, &a.look, &found).await?;
        }
        return Ok(());
    }
    if a.expect_answer {
        note!("Keep the delete token private. Let the link expire rather than delete it: a delete names your link, and after the answer it tells the server which fetch accepted it.");
    } else {
        note!("Keep the delete token private: with it, rdv delete LINK --token-file FILE (or RDV_DELETE_TOKEN) takes the link down, for example when it was not used. A delete soon after the accept tells the server which fetch took your link.");
    }
    let Some(pending) = &pending else {
        return Ok(());
    };
    if let Some(state) = &a.state {
        note!(
            "The accepter can answer; collect the answer with: rdv collect{} --state {}",
            a.transport.repeated(),
            crate::term::shell_word(&state.to_string_lossy())
        );
    }
    let Some(wait) = a.wait else {
        return Ok(());
    };
    let found = wait_and_finish(&a, &client, pending, wait, looks).await?;
    // On a line of its own like the others, so always escaped (a newline would end it).
    let (shown, _) = escape_for_terminal(&found.answer);
    let mut out = std::io::stdout().lock();
    writeln!(out, "answer: {shown}")
        .and_then(|()| out.flush())
        .context("writing the answer to standard output")?;
    drop(out);
    collected(&a)?;
    finish_copies("offer", true, &client, pending, &a.look, &found).await
}

/// The answer was written: the state file's keys go (a collect from it says so). Not before:
/// an answer that could not be written is still in its mailbox, for `rdv collect`.
fn collected(a: &OfferArgs) -> Result<()> {
    match &a.state {
        Some(state) => crate::answer::mark_collected(state),
        None => Ok(()),
    }
}

/// `--wait`: wait for the answer (going on with `looks`, a held offer's, begun at the hold);
/// without one, say why (the link stays: it expires by itself).
async fn wait_and_finish(
    a: &OfferArgs,
    client: &Client,
    pending: &PendingAnswer,
    wait: std::time::Duration,
    looks: Option<crate::answer::Looks<'_>>,
) -> Result<rdv::client::Collected> {
    // Held, and its looks over before the hand-over (the hold took longer than the wait): a
    // last round now, a look pause long (a wait whose end has passed still makes its first
    // look, a pause after it begins, and that look is its last), rather than none (the link
    // would have been handed over with nobody left to look for its answer). Counted from the
    // close, as --wait is.
    let wait = if a.hold && looks.is_none() {
        let now = rdv::clock::Clock::now_precise(&rdv::clock::SystemClock);
        std::time::Duration::from_secs(pending.polls_from())
            .saturating_add(wait)
            .saturating_sub(now)
    } else {
        wait
    };
    let Some(answer) =
        wait_for_answer("offer", client, pending, &a.look, Some(wait), looks).await?
    else {
        // The link is not taken down: a delete when the wait ends, right after its last look,
        // would tie the link to its mailbox, and a server that withholds the answer could then
        // tie it to the accepter's fetch. It expires by itself.
        let why = no_answer(pending);
        let later = match &a.state {
            Some(state) => format!(
                "collect it later with: rdv collect{} --state {}",
                a.transport.repeated(),
                crate::term::shell_word(&state.to_string_lossy())
            ),
            None => "without --state a later answer cannot be read; the link stays on the server until it expires (deleting it now would tell the server which mailbox is yours)".into(),
        };
        return Err(anyhow::Error::new(CliError::new(
            "no_answer_yet",
            rdv::client::ErrorKind::Transient,
            format!("{why}; {later}"),
        )));
    };
    Ok(answer)
}

/// The warning for a clock `ahead` seconds ahead of `server`'s (negative: behind),
/// [`rdv::client::Offer::clock_off`].
pub(crate) fn clock_warning(server: &rdv::proto::ServerAddr, ahead: i64) -> String {
    let way = if ahead > 0 { "ahead of" } else { "behind" };
    format!(
        "warning: this machine's clock is {} s {way} the server's ({server}): the moments of the looks and deletes timed on it show a server its error, and an error that large can tell your offers apart from others' (docs/ANONYMITY.md, \"Clock errors\"); set the clock (NTP), or, if it is set, the server's is wrong",
        ahead.unsigned_abs()
    )
}
