//! The agent's local API: JSON lines over a Unix socket (docs/AGENT.md describes every message).
//!
//! A client sends one request per line, each with an `id` of its choice and an `op`; the agent
//! answers each with one line carrying the same `id`, `ok`, and a `result` or an `error`
//! (`code`, `kind` and `message`, as the command line's `--json`, docs/JSON.md). After a
//! `subscribe`, the agent also pushes event lines (no `id`, an `event` key) as things happen.
//! Lines are at most [`MAX_LINE`] bytes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest request line the agent reads (a payload of 213 bytes in base64 with everything else
/// fits many times over).
pub const MAX_LINE: usize = 64 * 1024;

/// Read one request line: the caller's `id` (echoed in the reply; `null` when absent) and the
/// request, or the `id` and why the line is no request.
pub fn parse_line(line: &str) -> Result<(Value, Request), (Value, String)> {
    // A key given twice would be read as its last value here and perhaps as its first by
    // whatever checked the line before: refused, not guessed.
    serde_json::from_str::<NoDuplicateKeys>(line).map_err(|e| {
        (
            id_of_refused(line),
            format!("not JSON, or a key given twice: {e}"),
        )
    })?;
    let mut v: Value =
        serde_json::from_str(line).map_err(|e| (id_of_refused(line), format!("not JSON: {e}")))?;
    let Some(object) = v.as_object_mut() else {
        return Err((Value::Null, "a request is one JSON object".into()));
    };
    let id = object.remove("id").unwrap_or(Value::Null);
    if !id_fits(&id) {
        return Err((
            Value::Null,
            format!("an id is null, an integer, or a string of at most {MAX_ID} bytes"),
        ));
    }
    let request = serde_json::from_value(v).map_err(|e| (id.clone(), e.to_string()))?;
    Ok((id, request))
}

/// The `id` of a line refused as a whole, when it can be read without doubt: the top-level
/// `id` of the JSON object the line begins with (text after it, a key given twice elsewhere,
/// bytes replaced because they were not UTF-8 do not hide it), if it is one the agent echoes
/// and that object has `id` once only; `null` otherwise. Before, every such line was answered
/// with `null`, and a client with several requests in flight could not tell which one failed
/// (a helper's attack, 2026-12-07).
pub fn id_of_refused(line: &str) -> Value {
    let ids = serde_json::Deserializer::from_str(line)
        .into_iter::<TopLevelIds>()
        .next();
    if !matches!(ids, Some(Ok(TopLevelIds(1)))) {
        return Value::Null;
    }
    let first = serde_json::Deserializer::from_str(line)
        .into_iter::<Value>()
        .next();
    match first {
        Some(Ok(Value::Object(o))) => o
            .get("id")
            .filter(|id| id_fits(id))
            .cloned()
            .unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// How many times a JSON object has the key `id` (0 for anything but an object); its values
/// are not kept.
struct TopLevelIds(usize);

impl<'de> Deserialize<'de> for TopLevelIds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TopLevelIds(0))
    }
}

impl<'de> serde::de::Visitor<'de> for TopLevelIds {
    type Value = TopLevelIds;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut n = 0;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            map.next_value::<serde::de::IgnoredAny>()?;
            n += usize::from(key == "id");
        }
        Ok(TopLevelIds(n))
    }
}

/// Longest string `id`, in bytes.
pub const MAX_ID: usize = 128;

/// Whether `id` is one the agent echoes: null, an integer (that comes back as sent), or a short
/// string. Anything else (an array, an object, a float) could be large, or come back changed.
fn id_fits(id: &Value) -> bool {
    match id {
        Value::Null => true,
        Value::Number(n) => n.is_i64() || n.is_u64(),
        Value::String(s) => s.len() <= MAX_ID,
        _ => false,
    }
}

/// Any JSON value in which no object has a key twice (at any depth); the value itself is not
/// kept.
struct NoDuplicateKeys;

impl<'de> Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeys {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(self)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            map.next_value::<NoDuplicateKeys>()?;
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "the key {key:?} is given twice"
                )));
            }
        }
        Ok(self)
    }
}

/// A request line (what the command line sends the agent).
pub fn request_line(id: &Value, request: &Request) -> String {
    let mut v = serde_json::to_value(request).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("id".into(), id.clone());
    }
    v.to_string()
}

/// Bytes given either as text (`NAME`) or exactly (`NAME_base64`), as in the command line's JSON.
pub fn bytes_of(
    text: &Option<String>,
    base64: &Option<String>,
) -> Result<Option<Vec<u8>>, &'static str> {
    use base64::Engine;
    match (text, base64) {
        (Some(_), Some(_)) => Err("give the text or the base64 form, not both"),
        (Some(t), None) => Ok(Some(t.as_bytes().to_vec())),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(Some)
            .map_err(|_| "not valid base64 (standard alphabet, padded)"),
        (None, None) => Ok(None),
    }
}

/// Put `bytes` into a result as `NAME` (when UTF-8) and `NAME_base64`.
pub fn put_bytes(o: &mut serde_json::Map<String, Value>, name: &str, bytes: &[u8]) {
    use base64::Engine;
    if let Ok(t) = std::str::from_utf8(bytes) {
        o.insert(name.into(), Value::String(t.into()));
    }
    o.insert(
        format!("{name}_base64"),
        Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
    );
}

/// A request. Its `Debug` names the operation only: payloads, passphrases, answers and tokens
/// never reach a log.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The agent's state: its transport, the offers it looks after. (Variants without fields
    /// are written `{}` so that unknown fields are refused for them too.)
    Status {},
    /// Offer a payload (as `rdv offer`).
    Offer {
        /// The servers (one, or up to five for a multi-server link).
        servers: Vec<String>,
        /// The payload as text, or:
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<String>,
        /// the payload's exact bytes in base64.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload_base64: Option<String>,
        /// The passphrase; default: a generated one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase: Option<String>,
        /// The KDF profile; default `default`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kdf: Option<String>,
        /// Return the link without its passphrase, and the passphrase apart.
        #[serde(default)]
        two_channel: bool,
        /// Ask for an answer: the agent keeps the offer's secrets and looks for the answer on
        /// the answer flow's schedule until it comes or the link expires.
        #[serde(default)]
        expect_answer: bool,
        /// Reply only once the bucket has closed, with the count of verified links.
        #[serde(default)]
        hold: bool,
        /// Delete the link this many seconds after its bucket closes, whatever happens to it
        /// (decided now, so the delete's time says nothing about any fetch or answer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delete_after_close_secs: Option<u64>,
    },
    /// Accept a link (as `rdv accept`), and answer it when an answer is given.
    Accept {
        /// The `rdv1:` link.
        link: String,
        /// The passphrase of a two-channel link.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase: Option<String>,
        /// The answer as text, or:
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answer: Option<String>,
        /// the answer's exact bytes in base64.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answer_base64: Option<String>,
        /// Fewer verified links than this in the bucket (or none proved): the payload is not
        /// handed over and no answer is sent (`too_few_links`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_k: Option<usize>,
    },
    /// Take the answer to an offer, if it has come (the offer is then forgotten, unless `keep`).
    Collect {
        /// The offer's ID, from the offer's result.
        offer: String,
        /// Keep the offer and its answer after the reply: the caller sends `forget` once it has
        /// put the answer where it goes (a caller that cannot write it loses nothing).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        keep: bool,
    },
    /// Stop looking for an offer's answer and forget its secrets; with `warning`, forget
    /// instead the warning kept for it (a copy of its link found holding another answer), and
    /// nothing else.
    Forget {
        /// The offer's ID.
        offer: String,
        /// Forget the offer's warning, not the offer.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        warning: bool,
    },
    /// Delete a link (as `rdv delete`): now, or with `later` at a random moment within
    /// `within_secs` (default an hour, never past the link's expiry), a moment that has nothing
    /// to do with any fetch; a later delete is kept across restarts of the agent.
    Delete {
        /// The `rdv1:` link.
        link: String,
        /// Its deletion token.
        token: String,
        /// Delete at a random moment later instead of now.
        #[serde(default)]
        later: bool,
        /// With `later`: the moment is drawn uniformly from the next this many seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        within_secs: Option<u64>,
    },
    /// Receive events on this connection from now on.
    Subscribe {
        /// Only the events about this offer (and `lagged`): a command that waits for one
        /// offer's answer need not receive every other offer's answer. Asked again on a
        /// connection that subscribed, it changes (or with none, lifts) the filter.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offer: Option<String>,
    },
}

impl Request {
    /// The operation's name.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Status {} => "status",
            Request::Offer { .. } => "offer",
            Request::Accept { .. } => "accept",
            Request::Collect { .. } => "collect",
            Request::Forget { .. } => "forget",
            Request::Delete { .. } => "delete",
            Request::Subscribe { .. } => "subscribe",
        }
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Request({})", self.op())
    }
}

/// The error of a failed request, as the command line's `--json` gives it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    /// Stable code (docs/JSON.md, docs/AGENT.md).
    pub code: String,
    /// What to do: `transient`, `bad-input`, `server` or `local`.
    pub kind: String,
    /// For people.
    pub message: String,
}

/// A reply line.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    /// The request's `id`.
    pub id: Value,
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl Reply {
    /// A request's result.
    pub fn success(id: Value, result: Value) -> Self {
        Reply {
            id,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A request's error (`id` null for a line that is no request, or a connection turned
    /// away).
    pub fn failure(id: Value, error: ApiError) -> Self {
        Reply {
            id,
            ok: false,
            result: None,
            error: Some(error),
        }
    }

    /// The reply as its line, without the newline.
    pub fn line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The event names the agent pushes.
pub mod event {
    /// An answer to an offer came (`offer`, `answer`, `answer_base64`); it stays with the agent
    /// until collected.
    pub const ANSWERED: &str = "answered";
    /// An offer's link expired without an answer (`offer`); the agent forgot it.
    pub const EXPIRED: &str = "expired";
    /// A stored offer whose reply reached nobody (its client went, a stop, a `--min-k` not
    /// met) was taken back (`offer` if it expected an answer, `servers`, `deleted`: whether
    /// its link is off the servers already; if not, the agent tries again and it expires by
    /// itself otherwise); what was kept for it is forgotten.
    pub const TAKEN_BACK: &str = "taken_back";
    /// Another copy of an answered multi-server offer's link held a different answer (`offer`,
    /// `server`: that copy's server): someone else answered it first, so someone else holds the
    /// link and its passphrase.
    pub const DIFFERENT_ANSWER: &str = "different_answer";
    /// The looks at an answered multi-server offer's other copies ended (`offer`, `opened`: how
    /// many of them held an answer too, `different_answers`: the servers of those that held
    /// another answer, each told before in a `different_answer` event). `status` lists the
    /// offers whose looks go on (`trailing`).
    pub const TRAIL_ENDED: &str = "trail_ended";
    /// An offer was stored (`offer` when it expects an answer, `servers`, `bucket_closes_at`).
    pub const STORED: &str = "stored";
    /// A later delete was carried out (`delete`, `deleted`: false when the server had nothing to
    /// delete any more).
    pub const DELETED: &str = "deleted";
    /// The subscriber fell behind (it read too slowly) and missed `missed` events, the oldest:
    /// whatever it waits for may have happened, so it asks again (`collect`, `status`).
    pub const LAGGED: &str = "lagged";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line refused as a whole still gets its id back when the id can be read without doubt.
    #[test]
    fn a_refused_line_keeps_its_readable_id() {
        let id = |line: &str| parse_line(line).err().map(|(id, _)| id);
        assert_eq!(
            id(r#"{"id":43,"op":"status","op":"offer"}"#),
            Some(43.into())
        );
        assert_eq!(id(r#"{"id":24,"op":"status"} trailing"#), Some(24.into()));
        assert_eq!(
            id(r#"{"id":"a","op":"status","x":{"k":1,"k":2}}"#),
            Some("a".into())
        );
        // The id itself twice: which one is meant is not known (another key twice before it
        // too).
        assert_eq!(id(r#"{"id":1,"op":"status","id":2}"#), Some(Value::Null));
        assert_eq!(
            id(r#"{"id":1,"op":"status","op":"x","id":2}"#),
            Some(Value::Null)
        );
        // Nothing readable, or an id the agent does not echo.
        assert_eq!(id(r#"{"id":7,"op":"#), Some(Value::Null));
        assert_eq!(
            id(r#"{"id":[1],"op":"status","op":"x"}"#),
            Some(Value::Null)
        );
        let deep = format!(
            r#"{{"id":41,"op":"status","a":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(id(&deep), Some(Value::Null));
        // A line whose bytes were not UTF-8, read with them replaced.
        let lossy = String::from_utf8_lossy(b"{\"id\":5,\"op\":\"offer\",\"payload\":\"\xff\"}");
        assert_eq!(id_of_refused(&lossy), Value::from(5));
    }

    #[test]
    fn requests_read_as_documented_and_round_trip() {
        let (id, r) = parse_line(
            r#"{"id":7,"op":"offer","servers":["a.onion:7625"],"payload":"smp://x","expect_answer":true}"#,
        )
        .unwrap();
        assert_eq!(id, serde_json::json!(7));
        match &r {
            Request::Offer {
                servers,
                payload,
                payload_base64,
                expect_answer,
                two_channel,
                ..
            } => {
                assert_eq!(servers, &["a.onion:7625"]);
                assert_eq!(
                    bytes_of(payload, payload_base64).unwrap().unwrap(),
                    b"smp://x"
                );
                assert!(*expect_answer && !*two_channel);
            }
            other => panic!("{other:?}"),
        }
        let line = request_line(&id, &r);
        let (id2, r2) = parse_line(&line).unwrap();
        assert_eq!((id2, r2.op()), (id, "offer"));
        let (_, r) =
            parse_line(r#"{"id":"a","op":"accept","link":"rdv1:x","answer_base64":"AAE="}"#)
                .unwrap();
        match r {
            Request::Accept {
                answer,
                answer_base64,
                ..
            } => assert_eq!(bytes_of(&answer, &answer_base64).unwrap().unwrap(), [0, 1]),
            other => panic!("{other:?}"),
        }
        for bad in [
            r#"{"id":1,"op":"launch"}"#,
            r#"{"id":1,"op":"status","extra":1}"#,
            r#"{"id":1,"op":"collect"}"#,
            r#"[1,2]"#,
            "not json",
        ] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_line(r#"{"id":9,"op":"nope"}"#).unwrap_err().0,
            serde_json::json!(9),
            "the id comes back with the error"
        );
        assert!(bytes_of(&Some("a".into()), &Some("YQ==".into())).is_err());
        let r = Request::Delete {
            link: "rdv1:secret".into(),
            token: "secret-token".into(),
            later: false,
            within_secs: None,
        };
        assert_eq!(format!("{r:?}"), "Request(delete)");
    }

    #[test]
    fn a_key_given_twice_is_refused_at_any_depth() {
        assert!(parse_line(r#"{"op":"status"}"#).is_ok());
        for line in [
            r#"{"op":"status","op":"status"}"#,
            r#"{"id":1,"id":2,"op":"status"}"#,
            r#"{"op":"offer","servers":["a:1"],"payload":"x","payload":"y"}"#,
            r#"{"op":"status","id":{"a":1,"a":2}}"#,
        ] {
            let Err((_, why)) = parse_line(line) else {
                panic!("{line} was read as a request");
            };
            assert!(why.contains("twice"), "{line}: {why}");
        }
    }

    /// An id comes back as sent, and cannot be large: a client that sends 64 KiB ids and reads
    /// no replies made the agent keep some 16 times that per request.
    #[test]
    fn ids_are_small_values_that_come_back_as_sent_and_requests_are_objects() {
        for (line, id) in [
            (r#"{"op":"status"}"#, Value::Null),
            (r#"{"id":7,"op":"status"}"#, Value::from(7)),
            (r#"{"id":-7,"op":"status"}"#, Value::from(-7)),
            (
                r#"{"id":18446744073709551615,"op":"status"}"#,
                Value::from(u64::MAX),
            ),
            (r#"{"id":"req-1","op":"status"}"#, Value::from("req-1")),
        ] {
            assert_eq!(parse_line(line).unwrap().0, id, "{line}");
        }
        let long = format!(r#"{{"id":"{}","op":"status"}}"#, "x".repeat(MAX_ID + 1));
        let array = format!(r#"{{"id":[{}0],"op":"status"}}"#, "0,".repeat(1000));
        for line in [
            long.as_str(),
            array.as_str(),
            r#"{"id":{"a":1},"op":"status"}"#,
            r#"{"id":1.5,"op":"status"}"#,
            r#"{"id":123456789012345678901234567890,"op":"status"}"#,
            r#"["status"]"#,
            r#""status""#,
        ] {
            let Err((id, _)) = parse_line(line) else {
                panic!("{line} was read as a request");
            };
            assert_eq!(id, Value::Null, "{line}");
        }
    }
}
