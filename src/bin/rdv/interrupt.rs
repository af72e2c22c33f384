//! Ctrl-C (SIGINT), SIGTERM and SIGHUP (the terminal closed, an ssh session dropped) in a
//! command that has something to take back when it is stopped before it hands a link over.
//! SIGHUP is left alone when the process started with it ignored (`nohup`): it then goes on.
//!
//! The first [`scope`] of a process starts listening for both signals, for good: the handlers
//! stay installed once made. So a signal that comes while no scope is open is given its
//! default action here: the process ends by that signal, as it would have without the handlers
//! (a shell or a script sees a process Ctrl-C ended, systemd a clean stop). Before, `rdv offer
//! --hold --wait` ignored Ctrl-C and SIGTERM for the whole wait after its hold, since the
//! hold's handlers swallowed them. Inside a scope the first signal goes to the scope (which
//! takes back what was stored), a second ends the process at once.

use std::sync::{Mutex, OnceLock};
use tokio::sync::watch;

/// The process's signal listener.
struct Listener {
    /// How many signals went to a scope.
    caught: watch::Sender<u64>,
    /// The scopes, under one lock with the listener's decision, so that no signal is handed
    /// to a scope that closes meanwhile.
    scopes: Mutex<Scopes>,
}

#[derive(Default)]
struct Scopes {
    /// How many are open.
    open: usize,
    /// An open scope has had its signal: the next one ends the process.
    handed: bool,
    /// The last signal handed to a scope.
    last: i32,
}

static LISTENER: OnceLock<Option<Listener>> = OnceLock::new();

/// End the process by `signal`'s default action (with the status of a process `signal`
/// ended, 128 + its number, should that fail).
fn die_by(signal: i32) -> ! {
    let _ = signal_hook::low_level::emulate_default_handler(signal);
    std::process::exit(128 + signal)
}

/// The listener, started on first use (from within the runtime). `None` where the signals
/// cannot be listened for: they then keep their default action.
fn listener() -> Option<&'static Listener> {
    LISTENER
        .get_or_init(|| {
            use tokio::signal::unix::{signal, SignalKind};
            let (mut int, mut term) = (
                signal(SignalKind::interrupt()).ok()?,
                signal(SignalKind::terminate()).ok()?,
            );
            // Before, a hang-up during --hold or a spread pause ended the process with its
            // link stored and nobody holding it (an attack, 2026-12-06).
            let mut hup = match hangup_ignored() {
                true => None,
                false => signal(SignalKind::hangup()).ok(),
            };
            tokio::spawn(async move {
                use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
                loop {
                    let hangup = async {
                        match &mut hup {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    };
                    let got = tokio::select! {
                        Some(()) = int.recv() => SIGINT,
                        Some(()) = term.recv() => SIGTERM,
                        Some(()) = hangup => SIGHUP,
                        else => return,
                    };
                    let Some(l) = LISTENER.get().and_then(Option::as_ref) else {
                        die_by(got);
                    };
                    let Ok(mut s) = l.scopes.lock() else {
                        die_by(got);
                    };
                    if s.open == 0 {
                        die_by(got);
                    }
                    if s.handed {
                        eprintln!("interrupted again: stopping now; what was stored stays on the server until it expires");
                        die_by(got);
                    }
                    s.handed = true;
                    s.last = got;
                    l.caught.send_modify(|n| *n += 1);
                }
            });
            Some(Listener {
                caught: watch::Sender::new(0),
                scopes: Mutex::new(Scopes::default()),
            })
        })
        .as_ref()
}

/// Whether SIGHUP was ignored when the process started (`nohup`, or a parent that ignores it),
/// as Linux reports it (`SigIgn` in `/proc/self/status`, signal 1 its lowest bit). Where that
/// cannot be read it counts as ignored: SIGHUP is then left as it was, rather than a `nohup`
/// overridden.
fn hangup_ignored() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_none_or(|mask| mask & 1 == 1)
}

/// A span of a command in which Ctrl-C or SIGTERM is handed to it rather than ending the
/// process (see the module's documentation). Listening from the moment it is made.
pub(crate) struct Scope {
    seen: Option<(watch::Receiver<u64>, u64)>,
}

/// Open a [`Scope`]. Must be called from within the runtime.
pub(crate) fn scope() -> Scope {
    let seen = listener().and_then(|l| {
        let mut s = l.scopes.lock().ok()?;
        let rx = l.caught.subscribe();
        let start = *rx.borrow();
        s.open += 1;
        Some((rx, start))
    });
    Scope { seen }
}

impl Scope {
    /// Resolves once a signal has come in this scope (never where signals cannot be listened
    /// for).
    pub(crate) async fn signalled(&mut self) {
        match &mut self.seen {
            Some((rx, start)) => {
                let start = *start;
                if rx.wait_for(|n| *n > start).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }

    /// Carry `work` out to its end; a signal in the scope meanwhile interrupts `client` (its
    /// pauses between copies end, so what is left goes at once) without cutting the work off
    /// (a copy on its way is stored or deleted, and known to be).
    pub(crate) async fn finish<T>(
        &mut self,
        client: &rdv::client::Client,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        tokio::pin!(work);
        tokio::select! {
            done = &mut work => done,
            _ = self.signalled() => {
                client.interrupt();
                work.await
            }
        }
    }

    /// Whether a signal has come in this scope.
    pub(crate) fn was_signalled(&self) -> bool {
        self.seen
            .as_ref()
            .is_some_and(|(rx, start)| *rx.borrow() > *start)
    }

    /// Close the scope: whether a signal came in it, and which.
    fn close(&mut self) -> Option<i32> {
        let (rx, start) = self.seen.take()?;
        let l = listener()?;
        let mut s = l.scopes.lock().ok()?;
        s.open = s.open.saturating_sub(1);
        let signalled = *rx.borrow() > start;
        if s.open == 0 {
            s.handed = false;
        }
        signalled.then_some(s.last)
    }

    /// The command is past what the scope guarded (its link is out): close the scope, and
    /// should a signal have come in it meanwhile, end the process by it now.
    pub(crate) fn end(mut self) {
        if let Some(signal) = self.close() {
            die_by(signal);
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        self.close();
    }
}
