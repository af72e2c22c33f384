//! Golden vectors: files under tests/vectors/ pin the exact bytes of frames, sealed links, derived
//! keys and link URIs, and list malformed inputs with the error each must give.
//!
//! Each file line is `NAME EXPECTATION DATA...`. For `ok` lines the test rebuilds the named value
//! in code and checks it encodes to exactly the stored bytes and decodes back. After a deliberate
//! format change, `RDV_BLESS_VECTORS=1` rewrites the `ok` lines and then FAILS the run on purpose:
//! review the diff, then run again without it. (`tests/known_answers.rs` checks the primitives
//! against their standards' published vectors, which no blessing can change.)

use rdv::proto::answer::{self, AnswerSecret};
use rdv::proto::seal::{open, seal};
use rdv::proto::stamp::{Challenge, ServerName, STAMP_LEN};
use rdv::proto::wire::{decode_frame, encode_frame, StampedEntry, DEFAULT_MAX_FRAME};
use rdv::proto::{
    kdf, BucketId, DeleteCheck, DeleteToken, ErrorCode, KdfLimits, KdfProfile, LinkKey, Locator,
    MailboxAddr, Passphrase, RdvLink, Request, Response, Salt, SealedAnswer, SealedLink,
    ServerInfo, Stamp, StampSeed,
};
use std::path::PathBuf;

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn lines(name: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(path(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// Check `ok` lines against `computed` (name → hex) or rewrite them when blessing.
fn check_ok_lines(file: &str, computed: &[(String, String)]) {
    let bless = std::env::var_os("RDV_BLESS_VECTORS").is_some();
    if bless {
        let old = std::fs::read_to_string(path(file)).unwrap_or_default();
        let mut out: Vec<String> = old
            .lines()
            .filter(|l| {
                l.starts_with('#') || l.split_whitespace().nth(1).is_some_and(|e| e != "ok")
            })
            .map(str::to_string)
            .collect();
        for (n, h) in computed {
            out.push(format!("{n} ok {h}"));
        }
        std::fs::write(path(file), out.join("\n") + "\n").unwrap();
        panic!("{file}: vectors rewritten (RDV_BLESS_VECTORS is set); review the diff and run again without it");
    }
    let stored: Vec<(String, String)> = lines(file)
        .into_iter()
        .filter(|l| l[1] == "ok")
        .map(|l| (l[0].clone(), l[2..].join(" ")))
        .collect();
    assert_eq!(stored.len(), computed.len(), "{file}: number of ok vectors");
    for ((sn, sh), (cn, ch)) in stored.iter().zip(computed) {
        assert_eq!(sn, cn, "{file}: vector order");
        assert_eq!(sh, ch, "{file}: vector {sn} changed");
    }
}

fn requests() -> Vec<(&'static str, Request)> {
    vec![
        (
            "request.hello",
            Request::Hello {
                min_version: 1,
                max_version: 1,
            },
        ),
        ("request.info", Request::Info),
        (
            "request.store",
            Request::Store {
                link: SealedLink([0xab; 256]),
                delete_check: DeleteCheck([0x11; 32]),
            },
        ),
        (
            "request.fetch",
            Request::Fetch {
                locator: BucketId {
                    created: 1_800_000_000,
                    seq: 3,
                }
                .locator(),
            },
        ),
        (
            "request.delete",
            Request::Delete {
                locator: Locator([0x22; 32]),
                token: DeleteToken::from_bytes([0x33; 32]),
            },
        ),
        (
            "request.hello-v2",
            Request::Hello {
                min_version: 1,
                max_version: 2,
            },
        ),
        (
            "request.put-answer",
            Request::PutAnswer {
                mailbox: MailboxAddr([0x44; 32]),
                answer: SealedAnswer([0x55; 256]),
            },
        ),
        (
            "request.fetch-answer",
            Request::FetchAnswer {
                mailbox: MailboxAddr([0x44; 32]),
            },
        ),
        (
            "request.hello-v3",
            Request::Hello {
                min_version: 1,
                max_version: 3,
            },
        ),
        ("request.challenge", Request::Challenge),
        (
            "request.stamped-store",
            Request::StampedStore {
                link: SealedLink([0xab; 256]),
                delete_check: DeleteCheck([0x11; 32]),
                id: BucketId {
                    created: 1_800_000_000,
                    seq: 3,
                },
                name: ServerName([0x55; 32]),
                stamp: Stamp([0x77; STAMP_LEN]),
            },
        ),
        (
            "request.hello-v4",
            Request::Hello {
                min_version: 1,
                max_version: 4,
            },
        ),
        ("request.answer-challenge", Request::AnswerChallenge),
        (
            "request.stamped-put-answer",
            Request::StampedPutAnswer {
                mailbox: MailboxAddr([0x44; 32]),
                answer: SealedAnswer([0x55; 256]),
                epoch: 3_000_000,
                stamp: Stamp([0x77; STAMP_LEN]),
            },
        ),
    ]
}

fn responses() -> Vec<(&'static str, Response)> {
    vec![
        ("response.hello", Response::Hello { version: 1 }),
        (
            "response.info",
            Response::Info(ServerInfo {
                version: 1,
                max_links_per_bucket: 64,
                open_window_secs: 600,
                ttl_secs: 604_800,
                server_time: 1_800_000_000,
                max_frame: 20_480,
            }),
        ),
        (
            "response.stored",
            Response::Stored {
                id: BucketId {
                    created: 1_800_000_000,
                    seq: 3,
                },
            },
        ),
        (
            "response.bucket",
            Response::Bucket {
                links: vec![SealedLink([1; 256]), SealedLink([2; 256])],
            },
        ),
        ("response.deleted", Response::Deleted),
        (
            "response.error",
            Response::Error {
                code: ErrorCode::NotFound,
                message: "no such bucket".into(),
            },
        ),
        ("response.hello-v2", Response::Hello { version: 2 }),
        ("response.answer-stored", Response::AnswerStored),
        (
            "response.answer",
            Response::Answer {
                answer: SealedAnswer([0x66; 256]),
            },
        ),
        (
            "response.error-already-answered",
            Response::Error {
                code: ErrorCode::AlreadyAnswered,
                message: String::new(),
            },
        ),
        ("response.hello-v3", Response::Hello { version: 3 }),
        (
            "response.challenge",
            Response::Challenge(Challenge {
                id: BucketId {
                    created: 1_800_000_000,
                    seq: 3,
                },
                seed: StampSeed([0x88; 32]),
                effort: 64,
            }),
        ),
        (
            "response.stamped-bucket",
            Response::StampedBucket {
                seed: StampSeed([0x88; 32]),
                entries: vec![
                    StampedEntry {
                        link: SealedLink([1; 256]),
                        stamp: Stamp([0x77; STAMP_LEN]),
                    },
                    StampedEntry {
                        link: SealedLink([2; 256]),
                        stamp: Stamp([0x99; STAMP_LEN]),
                    },
                ],
            },
        ),
        (
            "response.error-bucket-closed",
            Response::Error {
                code: ErrorCode::BucketClosed,
                message: String::new(),
            },
        ),
        (
            "response.error-bad-stamp",
            Response::Error {
                code: ErrorCode::BadStamp,
                message: String::new(),
            },
        ),
        (
            "response.answer-challenge",
            Response::AnswerChallenge(rdv::proto::answer_stamp::AnswerChallenge {
                epoch: 3_000_000,
                seed: rdv::proto::StampSeed([0x66; 32]),
                effort: 64,
            }),
        ),
    ]
}

#[test]
fn frame_vectors() {
    let mut computed = Vec::new();
    for (n, r) in requests() {
        let f = encode_frame(&r, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(decode_frame::<Request>(&f, DEFAULT_MAX_FRAME).unwrap(), r);
        computed.push((n.to_string(), hex(&f)));
    }
    for (n, r) in responses() {
        let f = encode_frame(&r, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(decode_frame::<Response>(&f, DEFAULT_MAX_FRAME).unwrap(), r);
        computed.push((n.to_string(), hex(&f)));
    }
    check_ok_lines("frames.txt", &computed);
    let mut failures = 0;
    for l in lines("frames.txt").into_iter().filter(|l| l[1] != "ok") {
        let bytes = if l[2] == "-" {
            Vec::new()
        } else {
            unhex(&l[2])
        };
        let err = if l[0].starts_with("request") {
            decode_frame::<Request>(&bytes, DEFAULT_MAX_FRAME)
                .map(|_| ())
                .unwrap_err()
        } else {
            decode_frame::<Response>(&bytes, DEFAULT_MAX_FRAME)
                .map(|_| ())
                .unwrap_err()
        };
        let kind = match err {
            rdv::proto::wire::FrameError::TooLarge { .. } => "too-large",
            rdv::proto::wire::FrameError::Malformed(_) => "malformed",
            rdv::proto::wire::FrameError::Truncated { .. } => "truncated",
            _ => "other",
        };
        assert_eq!(kind, l[1], "{}: {err}", l[0]);
        failures += 1;
    }
    assert!(failures >= 6, "failure vectors present");
}

#[test]
fn seal_and_kdf_vectors() {
    let key = LinkKey::from_bytes([0x42; 32]);
    let payloads: [(&str, &[u8]); 3] = [
        ("seal.empty", b""),
        ("seal.short", b"smp://example/q"),
        ("seal.max", &[0x5a; 213]),
    ];
    let mut computed = Vec::new();
    for (n, p) in payloads {
        let s = seal(&key, p, [0x24; 24]).unwrap();
        assert_eq!(&open(&key, &s).unwrap()[..], p);
        computed.push((n.to_string(), hex(&s.0)));
    }
    // Format 2: the same short payload with the answer key of secret 77..77 inside.
    let to = AnswerSecret::from_bytes([0x77; 32]).public();
    let s =
        rdv::proto::seal::seal_expecting_answer(&key, b"smp://example/q", &to, [0x24; 24]).unwrap();
    let o = rdv::proto::seal::open_link(&key, &s).unwrap();
    assert_eq!(
        (&o.payload[..], o.answer_to),
        (&b"smp://example/q"[..], Some(to))
    );
    computed.push(("seal.short-expects-answer".to_string(), hex(&s.0)));
    // Format 3: the same, for a multi-server link with a mailbox per copy.
    let s = rdv::proto::seal::seal_expecting_answer_in(
        &key,
        b"smp://example/q",
        &to,
        answer::MailboxNames::PerCopy,
        [0x24; 24],
    )
    .unwrap();
    let o = rdv::proto::seal::open_link(&key, &s).unwrap();
    assert_eq!(o.mailboxes, answer::MailboxNames::PerCopy);
    assert_eq!(o.answer_to, Some(to));
    computed.push(("seal.short-mailbox-per-copy".to_string(), hex(&s.0)));
    let limits = KdfLimits::default();
    for (n, pass, profile) in [
        ("kdf.test", "correct horse battery staple", KdfProfile::Test),
        (
            "kdf.custom",
            "kobad-lisuf-mutag-ronif-zapol",
            KdfProfile::Custom(rdv::proto::KdfParams {
                m_kib: 256,
                t: 2,
                p: 2,
            }),
        ),
    ] {
        let k = kdf::derive_key(
            &Passphrase::new(pass),
            &Salt::from_bytes([0x07; 16]),
            profile,
            &limits,
        )
        .unwrap();
        // The derived key, and an empty payload sealed under it with nonce 00..00.
        let s = seal(&k, b"", [0; 24]).unwrap();
        let p = profile.params();
        computed.push((
            n.to_string(),
            format!(
                "pass={} salt={} m={} t={} p={} key={} sealed={}",
                pass.replace(' ', "%20"),
                hex(&[0x07; 16]),
                p.m_kib,
                p.t,
                p.p,
                hex(k.expose()),
                hex(&s.0)
            ),
        ));
    }
    // Per-server deletion tokens of a multi-server link (PROTOCOL.md section 5), with the check
    // value each server stores.
    let token = rdv::proto::DeleteToken::from_bytes([0x33; 32]);
    for i in 0..=4u8 {
        let t = token.for_server(i);
        computed.push((
            format!("token.server.{i}"),
            format!("token={} check={}", hex(t.expose()), hex(&t.check().0)),
        ));
    }
    check_ok_lines("seal.txt", &computed);
    // Failure vectors: the stored blob must not open with the vector key.
    let mut failures = 0;
    for l in lines("seal.txt").into_iter().filter(|l| l[1] == "fails") {
        let b: [u8; 256] = unhex(&l[2]).try_into().expect("256 bytes");
        assert!(open(&key, &SealedLink(b)).is_err(), "{}", l[0]);
        failures += 1;
    }
    assert!(failures >= 3);
}

/// SHA3-256 of the concatenation, written out from PROTOCOL.md §15 independently of the code.
fn sha3(parts: &[&[u8]]) -> [u8; 32] {
    use sha3::Digest;
    let mut h = sha3::Sha3_256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

#[test]
fn answer_vectors() {
    use x25519_dalek::{PublicKey, StaticSecret};
    let key = LinkKey::from_bytes([0x42; 32]);
    let (i, b) = ([0x77u8; 32], [0x88u8; 32]);
    let nonce = [0x99u8; 24];
    let secret = AnswerSecret::from_bytes(i);
    let to = secret.public();
    // The intermediate values, computed from the specification's formulas.
    let i_pub = PublicKey::from(&StaticSecret::from(i));
    let b_pub = PublicKey::from(&StaticSecret::from(b));
    assert_eq!(to.as_bytes(), i_pub.as_bytes());
    let dh = StaticSecret::from(b).diffie_hellman(&i_pub);
    let mailbox = sha3(&[b"rdv mailbox v1", key.expose(), i_pub.as_bytes()]);
    let header_key = sha3(&[b"rdv answer header v1", key.expose(), i_pub.as_bytes()]);
    let answer_key = sha3(&[
        b"rdv answer key v1",
        key.expose(),
        dh.as_bytes(),
        i_pub.as_bytes(),
        b_pub.as_bytes(),
    ]);
    assert_eq!(answer::mailbox(&key, &to), MailboxAddr(mailbox));
    let mut computed = vec![(
        "answer.keys".to_string(),
        format!(
            "i={} b={} I={} B={} x25519={} mailbox={} header_key={} answer_key={}",
            hex(&i),
            hex(&b),
            hex(i_pub.as_bytes()),
            hex(b_pub.as_bytes()),
            hex(dh.as_bytes()),
            hex(&mailbox),
            hex(&header_key),
            hex(&answer_key)
        ),
    )];
    for (n, payload) in [
        ("answer.empty", &b""[..]),
        ("answer.short", &b"simplex://reply-queue"[..]),
        ("answer.max", &[0xa5; answer::MAX_ANSWER][..]),
    ] {
        let (mb, sealed) = answer::seal_answer(&key, &to, payload, b, nonce).unwrap();
        assert_eq!(mb.0, mailbox);
        // The hidden key: B XOR ChaCha20(header key, nonce[0..12]), from the formulas.
        {
            use chacha20::cipher::{KeyIvInit, StreamCipher};
            let mut hidden = *b_pub.as_bytes();
            chacha20::ChaCha20::new(&header_key.into(), nonce[..12].into())
                .apply_keystream(&mut hidden);
            assert_eq!(&sealed.0[24..56], &hidden[..], "{n}: hidden key");
        }
        assert_eq!(
            &answer::open_answer(&key, &secret, &sealed).unwrap()[..],
            payload
        );
        computed.push((n.to_string(), hex(&sealed.0)));
    }
    // A multi-server link in format 3: the mailboxes of copies 0 and 1, from the formula, and
    // the short answer sealed for copy 1's (it opens from there only).
    let copies: Vec<[u8; 32]> = (0u8..2)
        .map(|j| {
            sha3(&[
                b"rdv mailbox per copy v1",
                key.expose(),
                i_pub.as_bytes(),
                &[j],
            ])
        })
        .collect();
    for (j, m) in copies.iter().enumerate() {
        assert_eq!(answer::copy_mailbox(&key, &to, j as u8), MailboxAddr(*m));
    }
    computed.push((
        "answer.copy-mailboxes".to_string(),
        format!("copy0={} copy1={}", hex(&copies[0]), hex(&copies[1])),
    ));
    let copy1 = MailboxAddr(copies[1]);
    let sealed =
        answer::seal_answer_for(&key, &to, copy1, b"simplex://reply-queue", b, nonce).unwrap();
    assert_eq!(
        &answer::open_answer_from(&key, &secret, copy1, &sealed).unwrap()[..],
        b"simplex://reply-queue"
    );
    assert!(answer::open_answer(&key, &secret, &sealed).is_err());
    computed.push(("answer.copy1-short".to_string(), hex(&sealed.0)));
    // The copy every accepter of a multi-server link with this key fetches and answers first.
    let first = |key: &LinkKey| {
        (2..=5)
            .map(|n| format!("n{n}={}", rdv::proto::link::first_copy(key, n)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    computed.push(("answer.first-copy".to_string(), first(&key)));
    computed.push((
        "answer.first-copy-0f".to_string(),
        first(&LinkKey::from_bytes([0x0f; 32])),
    ));
    check_ok_lines("answer.txt", &computed);
    let mut failures = 0;
    for l in lines("answer.txt").into_iter().filter(|l| l[1] == "fails") {
        let b: [u8; 256] = unhex(&l[2]).try_into().expect("256 bytes");
        assert!(
            answer::open_answer(&key, &secret, &SealedAnswer(b)).is_err(),
            "{}",
            l[0]
        );
        failures += 1;
    }
    assert!(failures >= 4);
}

#[test]
fn link_vectors() {
    let mut ok = 0;
    let mut bad = 0;
    for l in lines("links.txt") {
        match l[1].as_str() {
            "ok" => {
                let link = RdvLink::parse(&l[2]).unwrap_or_else(|e| panic!("{}: {e}", l[0]));
                assert_eq!(*link.to_uri(), l[2], "{}: re-encodes identically", l[0]);
                ok += 1;
            }
            "err" => {
                let input = if l[3] == "-" {
                    String::new()
                } else {
                    l[3].replace("\\s", " ")
                };
                let e = RdvLink::parse(&input).expect_err(&l[0]);
                assert_eq!(e.kind(), l[2], "{}: {e}", l[0]);
                bad += 1;
            }
            other => panic!("{}: unknown expectation {other}", l[0]),
        }
    }
    assert!(ok >= 4 && bad >= 10, "{ok} ok, {bad} failing vectors");
}

/// Stamps (PROTOCOL.md §16): a bucket's seed, one challenge's bytes, and the stamp found by
/// trying nonces from zero, for fixed inputs; and what must not verify.
#[test]
fn stamp_vectors() {
    use rdv::proto::padding::FillerSecret;
    use rdv::proto::stamp::{self, StampError};
    let secret = FillerSecret::from_bytes([0x11; 32]);
    let id = BucketId {
        created: 1_800_000_000,
        seq: 3,
    };
    let seed = stamp::bucket_seed(&secret, id);
    let link = SealedLink([0xab; 256]);
    let name = stamp::ServerName::of(&rdv::proto::ServerAddr::parse("127.0.0.1:7625").unwrap());
    let challenge = stamp::challenge_bytes(
        &name,
        &id.locator(),
        &seed,
        &stamp::link_hash(&link),
        &[0; 16],
        8,
    );
    let ch = Challenge {
        id,
        seed,
        effort: 8,
    };
    let solved = stamp::solve(&name, &ch, &link, [0; 16], 100_000).expect("a stamp");
    // An answer's stamp (protocol version 4): the epoch's seed, a challenge, a solution.
    use rdv::proto::answer_stamp::{self, AnswerChallenge};
    let epoch = answer_stamp::epoch_of(1_800_000_000);
    let answer_seed = answer_stamp::answer_seed(&secret, epoch);
    let (mailbox, answer) = (MailboxAddr([0x44; 32]), SealedAnswer([0x55; 256]));
    let answer_challenge = answer_stamp::answer_challenge_bytes(
        &answer_seed,
        &mailbox,
        &answer_stamp::answer_hash(&answer),
        &[0; 16],
        8,
    );
    let ach = AnswerChallenge {
        epoch,
        seed: answer_seed,
        effort: 8,
    };
    let answer_solved =
        answer_stamp::solve_answer(&ach, &mailbox, &answer, [0; 16], 100_000).expect("a stamp");
    check_ok_lines(
        "stamp.txt",
        &[
            ("stamp.seed".into(), hex(&seed.0)),
            ("stamp.name".into(), hex(&name.0)),
            ("stamp.challenge".into(), hex(&challenge)),
            ("stamp.solved".into(), hex(&solved.0)),
            ("answer-stamp.epoch".into(), format!("{epoch}")),
            ("answer-stamp.seed".into(), hex(&answer_seed.0)),
            ("answer-stamp.challenge".into(), hex(&answer_challenge)),
            ("answer-stamp.solved".into(), hex(&answer_solved.0)),
        ],
    );
    assert_eq!(
        answer_stamp::verify_answer(&answer_seed, &mailbox, &answer, &answer_solved, 8),
        Ok(())
    );
    // Another epoch's seed, another mailbox, another answer, a link stamp: none verifies.
    let next = answer_stamp::answer_seed(&secret, epoch + 1);
    assert!(answer_stamp::verify_answer(&next, &mailbox, &answer, &answer_solved, 8).is_err());
    assert!(answer_stamp::verify_answer(
        &answer_seed,
        &MailboxAddr([0x45; 32]),
        &answer,
        &answer_solved,
        8
    )
    .is_err());
    assert!(answer_stamp::verify_answer(
        &answer_seed,
        &mailbox,
        &SealedAnswer([0x56; 256]),
        &answer_solved,
        8
    )
    .is_err());
    assert!(answer_stamp::verify_answer(&seed, &mailbox, &answer, &solved, 8).is_err());
    let loc = id.locator();
    assert_eq!(stamp::verify(&name, &loc, &seed, &link, &solved, 8), Ok(()));
    // Another bucket of the same second, another link, a claim of more effort, a floor above
    // the stamp's effort, a truncated or zeroed stamp: none verifies.
    let other = BucketId { seq: 4, ..id };
    assert!(stamp::verify(&name, &other.locator(), &seed, &link, &solved, 8).is_err());
    assert!(stamp::verify(&name, &loc, &seed, &SealedLink([0xac; 256]), &solved, 8).is_err());
    let elsewhere =
        stamp::ServerName::of(&rdv::proto::ServerAddr::parse("127.0.0.2:7625").unwrap());
    assert!(stamp::verify(&elsewhere, &loc, &seed, &link, &solved, 8).is_err());
    let mut dear = solved;
    dear.0[32..].copy_from_slice(&9u32.to_be_bytes());
    assert!(stamp::verify(&name, &loc, &seed, &link, &dear, 8).is_err());
    assert_eq!(
        stamp::verify(&name, &loc, &seed, &link, &solved, 9),
        Err(StampError::TooCheap {
            claimed: 8,
            required: 9
        })
    );
    let mut zero = solved;
    zero.0[16..32].fill(0);
    assert!(stamp::verify(&name, &loc, &seed, &link, &zero, 8).is_err());
    // A stamp is 36 bytes on the wire; 35 do not decode.
    let mut frame = encode_frame(
        &Request::StampedStore {
            link: link.clone(),
            delete_check: DeleteCheck([0x11; 32]),
            id,
            name,
            stamp: solved,
        },
        DEFAULT_MAX_FRAME,
    )
    .unwrap();
    let n = frame.len();
    frame.truncate(n - 1);
    frame[..4].copy_from_slice(&((n - 5) as u32).to_be_bytes());
    let pos = frame.len() - 36;
    assert_eq!(frame[pos], 36, "the stamp's length byte");
    frame[pos] = 35;
    assert!(decode_frame::<Request>(&frame, DEFAULT_MAX_FRAME).is_err());
}
