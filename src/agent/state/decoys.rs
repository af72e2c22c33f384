//! Decoy mailboxes kept in the state directory (`decoys/ID`), so that a restart of the agent
//! resumes their looks. Kept in memory only, every decoy's looks ended at a restart while the
//! real offers' went on: the mailboxes whose looks all stopped in one moment, well before a
//! waiting initiator's end, were the decoys, and cover bought nothing across a restart.
//!
//! A decoy holds no secret (a mailbox address nobody uses), but its file is private as every
//! other: it says which mailboxes are decoys.

use super::{remove_if_present, server_text, valid_id, Scan, StateDir, StateError};
use std::path::PathBuf;

/// A decoy mailbox: where it is looked into, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecoyKept {
    /// The server, as text.
    pub server: String,
    /// The mailbox address nobody uses.
    pub mailbox: [u8; 32],
    /// When its looks end (unix seconds; the first look at or past it is the last).
    pub until: u64,
}

/// The first line of a decoy file.
const DECOY_MAGIC: &str = "rdv-decoy-1";

impl DecoyKept {
    /// The file's text: the magic line, `server S`, `mailbox HEX`, `until UNIX-SECONDS`.
    fn text(&self) -> String {
        let mut hex = String::with_capacity(64);
        for b in self.mailbox {
            hex.push_str(&format!("{b:02x}"));
        }
        format!(
            "{DECOY_MAGIC}\nserver {}\nmailbox {hex}\nuntil {}\n",
            self.server, self.until
        )
    }

    fn from_text(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != DECOY_MAGIC {
            return None;
        }
        let server = server_text(lines.next()?.strip_prefix("server ")?)?;
        let hex = lines.next()?.strip_prefix("mailbox ")?;
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut mailbox = [0u8; 32];
        for (i, b) in mailbox.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        let until = lines.next()?.strip_prefix("until ")?.parse().ok()?;
        if lines.next().is_some() {
            return None;
        }
        Some(DecoyKept {
            server,
            mailbox,
            until,
        })
    }
}

impl StateDir {
    pub(super) fn decoys(&self) -> PathBuf {
        self.root.join("decoys")
    }

    /// Keep decoy mailbox `id` ([`DecoyKept`]).
    pub fn save_decoy(&self, id: &str, decoy: &DecoyKept) -> Result<(), StateError> {
        if !valid_id(id) {
            return Err(StateError::BadId(id.to_owned()));
        }
        Self::write(&self.decoys().join(id), decoy.text().as_bytes())
    }

    /// Every decoy kept, by ID, and the decoy files that cannot be read.
    pub fn decoys_kept(&self) -> Result<Scan<DecoyKept>, StateError> {
        Self::scan(
            &self.decoys(),
            |name| Some(name),
            |path, text| {
                DecoyKept::from_text(text).ok_or_else(|| StateError::BadDecoy {
                    path: path.to_path_buf(),
                })
            },
        )
    }

    /// Forget decoy `id` (its looks ended).
    pub fn forget_decoy(&self, id: &str) -> Result<(), StateError> {
        if !valid_id(id) {
            return Err(StateError::BadId(id.to_owned()));
        }
        if remove_if_present(&self.decoys().join(id))? {
            // The file is gone; a removal lost to a crash only brings one more look.
            let _ = std::fs::File::open(self.decoys()).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoys_are_kept_read_back_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("s")).unwrap();
        let d = DecoyKept {
            server: "127.0.0.1:4000".into(),
            mailbox: [0xab; 32],
            until: 1_800_000_123,
        };
        state.save_decoy("o0123456789abcdef", &d).unwrap();
        let scan = state.decoys_kept().unwrap();
        assert_eq!(scan.kept, vec![("o0123456789abcdef".to_string(), d)]);
        assert!(scan.unreadable.is_empty());
        state.forget_decoy("o0123456789abcdef").unwrap();
        assert!(state.decoys_kept().unwrap().kept.is_empty());
        let d = DecoyKept {
            server: "127.0.0.1:1".into(),
            mailbox: [0; 32],
            until: 0,
        };
        assert!(matches!(
            state.save_decoy("../x", &d),
            Err(StateError::BadId(_))
        ));
    }

    #[test]
    fn a_decoy_file_that_does_not_parse_is_named_and_left() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("s")).unwrap();
        let good = DecoyKept {
            server: "127.0.0.1:4000".into(),
            mailbox: [1; 32],
            until: 5,
        }
        .text();
        for (i, bad) in [
            String::new(),
            good.replace("rdv-decoy-1", "rdv-decoy-2"),
            good.replace("127.0.0.1:4000", "not a server"),
            good.replace("0101", "01zz"),
            good.replace("until 5", "until -5"),
            format!("{good}extra\n"),
        ]
        .iter()
        .enumerate()
        {
            std::fs::write(state.decoys().join(format!("o000000000000000{i}")), bad).unwrap();
        }
        let scan = state.decoys_kept().unwrap();
        assert!(scan.kept.is_empty(), "{:?}", scan.kept);
        assert_eq!(scan.unreadable.len(), 6);
        assert!(matches!(scan.unreadable[0], StateError::BadDecoy { .. }));
        assert_eq!(std::fs::read_dir(state.decoys()).unwrap().count(), 6);
    }
}
