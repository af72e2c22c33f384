//! `rdv keygen`: a client key for a server in restricted discovery mode.

use crate::cli::KeygenArgs;
use crate::out::{self, fields, note};
use anyhow::{Context, Result};
use rdv::tor::auth::ClientKey;
use std::io::Write;

/// Run `rdv keygen`: write the secret half to `--out` (new file, mode 0600), print the public
/// half for the operator.
pub(crate) fn run(a: &KeygenArgs) -> Result<()> {
    crate::term::refuse_output_to_nowhere("the public key", "redirect it to a file")?;
    let mut random = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
    let key = ClientKey::from_random(&a.server, random).context("--server")?;
    zeroize::Zeroize::zeroize(&mut random);
    let line = key.to_private_line();
    crate::term::write_private(&a.out, &a.out.display().to_string(), |f| {
        f.write_all(line.as_bytes())
            .and_then(|()| f.write_all(b"\n"))
    })?;
    let public = key.public_line();
    let shown = if out::json() {
        out::emit(
            "keygen",
            fields! {
                "service" => key.service(),
                "key_file" => a.out.display().to_string(),
                "public_key" => public,
            },
        )
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{public}")
            .and_then(|()| out.flush())
            .context("writing the public key to standard output")
    };
    if let Err(e) = shown {
        // A secret half whose public half nobody got is no use, and no command shows it again:
        // removed, so that keygen can be run again with the same --out.
        let _ = std::fs::remove_file(&a.out);
        return Err(e.context(format!("{} was removed again", a.out.display())));
    }
    if out::json() {
        return Ok(());
    }
    note!(
        "The secret key for {} is in {} (keep it private; use it with --client-key {}).",
        key.service(),
        a.out.display(),
        a.out.display()
    );
    note!("Give the line above to the server's operator, who saves it as NAME.auth in the --authorized-clients directory and restarts the server.");
    Ok(())
}
