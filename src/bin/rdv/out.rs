//! What the commands say, and where: human lines (results on standard output, notes and progress
//! on standard error), or with `--json` one JSON object on standard output (docs/JSON.md).
//!
//! `--quiet` and `--json` silence notes and progress; warnings and errors always reach standard
//! error (and with `--json`, the error is also the JSON object).

use serde_json::{Map, Value};
use std::io::Write;
use std::sync::OnceLock;

/// How the process talks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mode {
    pub(crate) json: bool,
    pub(crate) quiet: bool,
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// Set the mode, once, at start.
pub(crate) fn init(mode: Mode) {
    let _ = MODE.set(mode);
}

fn mode() -> Mode {
    MODE.get().copied().unwrap_or_default()
}

/// Whether results are JSON.
pub(crate) fn json() -> bool {
    mode().json
}

/// Whether notes and progress are silenced.
pub(crate) fn quiet() -> bool {
    let m = mode();
    m.json || m.quiet
}

/// A note on standard error, unless `--quiet` or `--json`.
macro_rules! note {
    ($($arg:tt)*) => {
        if !$crate::out::quiet() {
            eprintln!($($arg)*);
        }
    };
}
pub(crate) use note;

/// A successful command's JSON result: `{"ok": true, "command": …, fields…}` on one line.
/// A result that cannot be written (standard output closed, a full disk under a redirect) is
/// the command's failure: whoever runs it did not get it.
pub(crate) fn emit(command: &str, fields: Map<String, Value>) -> anyhow::Result<()> {
    try_emit(command, fields)
        .map_err(|e| anyhow::Error::new(e).context("writing the result to standard output"))
}

/// [`emit`], its failure the write's own error.
pub(crate) fn try_emit(command: &str, fields: Map<String, Value>) -> std::io::Result<()> {
    let mut obj = Map::new();
    obj.insert("ok".into(), Value::Bool(true));
    obj.insert("command".into(), Value::String(command.into()));
    obj.extend(fields);
    let mut v = Value::Object(obj);
    let written = print_line(&v);
    // Results hold secrets (links, passphrases, tokens, payloads): wipe them once written.
    wipe(&mut v);
    written
}

/// Overwrite every string in `fields` (what a command got: links, payloads, keys).
pub(crate) fn wipe_fields(fields: &mut Map<String, Value>) {
    fields.values_mut().for_each(wipe);
}

/// Overwrite every string in `v`.
pub(crate) fn wipe(v: &mut Value) {
    use zeroize::Zeroize;
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe),
        Value::Object(o) => o.values_mut().for_each(wipe),
        _ => {}
    }
}

/// A failed command's JSON result, with `got`: what the command got before it failed.
pub(crate) fn emit_error(
    command: Option<&str>,
    code: &str,
    kind: &str,
    message: &str,
    got: Option<&Map<String, Value>>,
) {
    let mut obj = Map::new();
    obj.insert("ok".into(), Value::Bool(false));
    if let Some(c) = command {
        obj.insert("command".into(), Value::String(c.into()));
    }
    for (k, v) in got.into_iter().flatten() {
        obj.insert(k.clone(), v.clone());
    }
    let mut err = Map::new();
    err.insert("code".into(), Value::String(code.into()));
    err.insert("kind".into(), Value::String(kind.into()));
    err.insert("message".into(), Value::String(message.into()));
    obj.insert("error".into(), Value::Object(err));
    let mut v = Value::Object(obj);
    // Standard error has the error too: nothing more to do when this line cannot be written.
    let _ = print_line(&v);
    wipe(&mut v);
}

/// One JSON line on standard output, flushed.
fn print_line(v: &Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", terminal_safe(&v.to_string()))?;
    out.flush()
}

/// A JSON text that is safe on a terminal too: serde_json escapes the C0 controls, and here
/// DEL, the C1 controls (U+0080 to U+009F, an 8-bit CSI among them), the bidirectional
/// overrides, the line separators and the invisible characters are written as `\uXXXX` as well
/// (a character beyond U+FFFF as its UTF-16 pair). They can only be inside strings, so the text
/// stays valid JSON with the same value. Everything a peer sent (a payload, an answer, a
/// server's message) goes through here.
pub(crate) fn terminal_safe(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    terminal_safe_into(json, &mut out);
    out
}

/// How many bytes [`terminal_safe`] makes of `json`: a buffer of that capacity takes them
/// without growing (a buffer that grows leaves its old copy behind, unwiped).
pub(crate) fn terminal_safe_len(json: &str) -> usize {
    json.chars()
        .map(|c| match rdv::proto::wire::is_unsafe_to_show(c) {
            true => 6 * c.len_utf16(),
            false => c.len_utf8(),
        })
        .sum()
}

/// [`terminal_safe`], appended to `out`.
pub(crate) fn terminal_safe_into(json: &str, out: &mut String) {
    for c in json.chars() {
        // What `term::escape_for_terminal` escapes (serde_json already did C0).
        if rdv::proto::wire::is_unsafe_to_show(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
}

/// Bytes for JSON: `NAME` as text when they are UTF-8, and `NAME_base64` always (the exact
/// bytes).
pub(crate) fn bytes_fields(fields: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    use base64::Engine;
    if let Ok(s) = std::str::from_utf8(bytes) {
        fields.insert(name.into(), Value::String(s.into()));
    }
    fields.insert(
        format!("{name}_base64"),
        Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
    );
}

/// Build a JSON object from `key => value` pairs.
macro_rules! fields {
    ($($k:expr => $v:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut m = serde_json::Map::new();
        $( m.insert($k.to_string(), serde_json::json!($v)); )*
        m
    }};
}
pub(crate) use fields;

#[cfg(test)]
mod tests {
    use super::terminal_safe;
    use serde_json::{json, Value};

    /// A peer's text with DEL, an 8-bit CSI, a bidi override, a line separator, a soft hyphen
    /// and a tag character (beyond U+FFFF): escaped, and the line still reads back as the same
    /// value.
    #[test]
    fn json_lines_carry_no_terminal_controls_and_keep_their_value() {
        let payload = "smp://ok\u{202e}gnp.exe\u{9b}2J\u{7f}END\u{2028}x\u{1b}[31m\u{ad}\u{e0041}";
        let v = json!({ "payload": payload });
        let line = terminal_safe(&v.to_string());
        assert!(
            line.chars().all(|c| c.is_ascii() && !c.is_ascii_control()),
            "{line:?}"
        );
        assert_eq!(serde_json::from_str::<Value>(&line).unwrap(), v);
        // Other text is left alone.
        let plain = json!({ "payload": "smp://é/ü" }).to_string();
        assert_eq!(terminal_safe(&plain), plain);
    }
}
