//! Micro-benchmarks of the protocol core, with a small self-contained timing harness.
//!
//! Run with `cargo bench --bench micro`. Every row is timed in batches: a warm-up, then batches of
//! many iterations each, reported as the median and the minimum nanoseconds per operation over
//! the batches. Rows that are compared with each other (a candidate and its baseline) run in the
//! same group, and the batches of a group are interleaved round-robin, so that noise from other
//! processes on a shared machine hits baseline and candidate alike.
//!
//! The physical floor for opening a bucket is decrypting its 64 × 256 bytes with
//! XChaCha20-Poly1305 and the right key, done here with `chacha20poly1305` directly. The ratios at
//! the end compare `rdv::proto::seal::trial_open` against it.
//!
//! Options (after `--`): a substring filters rows; `--quick` shortens every group (the default
//! when run without cargo bench's `--bench` flag, e.g. by `cargo test --all-targets`);
//! `--only NAME --iters N` runs one row exactly N times without timing, for instruction counts
//! under `valgrind --tool=callgrind` (see BENCHMARKS.md).

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use rdv::proto::bucket::BucketId;
use rdv::proto::kdf::{self, KdfLimits, KdfProfile, LinkKey, Passphrase, Salt};
use rdv::proto::seal::{self, SealedLink, AD, NONCE_LEN, PLAINTEXT_LEN};
use rdv::proto::wire::{self, Request, Response, DEFAULT_MAX_FRAME};
use rdv::proto::{DeleteCheck, MAX_LINKS_PER_BUCKET};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The key that opens "our" link.
const RIGHT_KEY: [u8; 32] = [0x42; 32];

/// A benchmark body: runs the operation `iters` times.
type Body = Box<dyn FnMut(u64)>;

/// How long a group is measured.
#[derive(Clone, Copy)]
struct Budget {
    warmup: Duration,
    batch: Duration,
    batches: usize,
}

impl Budget {
    const FAST: Budget = Budget {
        warmup: Duration::from_millis(300),
        batch: Duration::from_millis(20),
        batches: 60,
    };
    /// For operations that take tens or hundreds of milliseconds (the slow KDF profiles): one
    /// operation per batch.
    const SLOW: Budget = Budget {
        warmup: Duration::from_millis(1),
        batch: Duration::from_millis(1),
        batches: 9,
    };

    fn quick(self) -> Budget {
        Budget {
            warmup: self.warmup / 4,
            batch: self.batch / 2,
            batches: (self.batches / 4).max(3),
        }
    }
}

/// The result of one row.
struct Row {
    name: &'static str,
    iters: u64,
    batches: usize,
    median_ns: f64,
    min_ns: f64,
}

struct Harness {
    filter: Option<String>,
    quick: bool,
    rows: Vec<Row>,
}

impl Harness {
    fn wants(&self, name: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| name.contains(f))
    }

    /// Measure a group of rows with interleaved batches.
    fn group(&mut self, budget: Budget, rows: Vec<(&'static str, Body)>) {
        let budget = if self.quick { budget.quick() } else { budget };
        let mut rows: Vec<_> = rows.into_iter().filter(|(n, _)| self.wants(n)).collect();
        if rows.is_empty() {
            return;
        }
        // Warm up each row and size its batches so that one batch takes about `budget.batch`.
        let mut iters = Vec::with_capacity(rows.len());
        for (_, body) in rows.iter_mut() {
            let start = Instant::now();
            let mut n = 0u64;
            let mut step = 1u64;
            while n == 0 || start.elapsed() < budget.warmup {
                body(step);
                n += step;
                step = (step * 2).min(1 << 16);
            }
            let per_op = start.elapsed().as_secs_f64() / n as f64;
            let per_batch = (budget.batch.as_secs_f64() / per_op).ceil() as u64;
            iters.push(per_batch.clamp(1, 1 << 24));
        }
        let mut samples = vec![Vec::with_capacity(budget.batches); rows.len()];
        for _ in 0..budget.batches {
            for (i, (_, body)) in rows.iter_mut().enumerate() {
                let start = Instant::now();
                body(iters[i]);
                let ns = start.elapsed().as_nanos() as f64;
                samples[i].push(ns / iters[i] as f64);
            }
        }
        for (i, (name, _)) in rows.iter().enumerate() {
            let s = &mut samples[i];
            s.sort_by(f64::total_cmp);
            let row = Row {
                name,
                iters: iters[i],
                batches: s.len(),
                median_ns: s[s.len() / 2],
                min_ns: s[0],
            };
            eprintln!("  measured {:<44} {:>14}", name, fmt_ns(row.median_ns));
            self.rows.push(row);
        }
    }

    fn get(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.3} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// A link sealed under `key` with a nonce derived from `i`.
fn sealed(key: &LinkKey, i: u8, payload: &[u8]) -> SealedLink {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[0] = i;
    nonce[1] = 0xA7;
    nonce[NONCE_LEN - 1] = i.wrapping_mul(31);
    seal::seal(key, payload, nonce).expect("payload fits")
}

fn payload(i: u8) -> Vec<u8> {
    format!("smp://relay{i}.example/queue#/?v=1-3&dh=MCowBQYDK2VuAyEA{i:03}").into_bytes()
}

/// A bucket of 64 links sealed under the right key (the raw baseline's input).
fn bucket_right() -> Vec<SealedLink> {
    let k = LinkKey::from_bytes(RIGHT_KEY);
    (0..MAX_LINKS_PER_BUCKET as u8)
        .map(|i| sealed(&k, i, &payload(i)))
        .collect()
}

/// A bucket of 63 links under other keys; with `ours`, the right key's link goes last.
fn bucket_others(ours: bool) -> Vec<SealedLink> {
    let mut links: Vec<SealedLink> = (0..MAX_LINKS_PER_BUCKET as u8)
        .map(|i| {
            sealed(
                &LinkKey::from_bytes([i.wrapping_add(100); 32]),
                i,
                &payload(i),
            )
        })
        .collect();
    if ours {
        let last = MAX_LINKS_PER_BUCKET - 1;
        links[last] = sealed(&LinkKey::from_bytes(RIGHT_KEY), 200, b"mine");
    }
    links
}

/// The physical floor: XChaCha20-Poly1305 over every blob, cipher keyed once per bucket. Returns
/// how many blobs authenticated.
fn raw_decrypt_all(key: &[u8; 32], links: &[SealedLink]) -> usize {
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key));
    let mut ok = 0;
    let mut buf = [0u8; PLAINTEXT_LEN];
    for l in links {
        let b = &l.0;
        buf.copy_from_slice(&b[NONCE_LEN..NONCE_LEN + PLAINTEXT_LEN]);
        let tag = Tag::from_slice(&b[NONCE_LEN + PLAINTEXT_LEN..]);
        if cipher
            .decrypt_in_place_detached(XNonce::from_slice(&b[..NONCE_LEN]), AD, &mut buf, tag)
            .is_ok()
        {
            ok += 1;
        }
        black_box(&buf);
    }
    ok
}

fn bucket_rows() -> Vec<(&'static str, Body)> {
    let right = bucket_right();
    let last_is_ours = bucket_others(true);
    let none_ours = bucket_others(false);
    assert_eq!(raw_decrypt_all(&RIGHT_KEY, &right), 64, "baseline input");
    assert_eq!(
        raw_decrypt_all(&RIGHT_KEY, &none_ours),
        0,
        "wrong-key input"
    );
    let key = LinkKey::from_bytes(RIGHT_KEY);
    assert_eq!(
        seal::trial_open(&key, &last_is_ours).map(|(i, _)| i),
        Some(63)
    );
    assert!(seal::trial_open(&key, &none_ours).is_none());

    let (r1, r2) = (right.clone(), none_ours.clone());
    let (k1, k2) = (key.clone(), key);
    vec![
        (
            "raw xchacha20poly1305 decrypt 64 (right key)",
            Box::new(move |n| {
                for _ in 0..n {
                    black_box(raw_decrypt_all(black_box(&RIGHT_KEY), black_box(&r1)));
                }
            }),
        ),
        (
            "raw xchacha20poly1305 decrypt 64 (wrong key)",
            Box::new(move |n| {
                for _ in 0..n {
                    black_box(raw_decrypt_all(black_box(&RIGHT_KEY), black_box(&r2)));
                }
            }),
        ),
        (
            "trial_open 64 (right one last)",
            Box::new(move |n| {
                for _ in 0..n {
                    black_box(seal::trial_open(black_box(&k1), black_box(&last_is_ours)));
                }
            }),
        ),
        (
            "trial_open 64 (none right)",
            Box::new(move |n| {
                for _ in 0..n {
                    black_box(seal::trial_open(black_box(&k2), black_box(&none_ours)));
                }
            }),
        ),
    ]
}

fn single_rows() -> Vec<(&'static str, Body)> {
    let key = LinkKey::from_bytes(RIGHT_KEY);
    let one = sealed(&key, 1, &payload(1));
    let one2 = one.clone();
    let (k1, k2) = (key.clone(), key);
    let p = payload(9);
    vec![
        (
            "raw xchacha20poly1305 decrypt 1 (right key)",
            Box::new(move |n| {
                let one = std::slice::from_ref(&one);
                for _ in 0..n {
                    black_box(raw_decrypt_all(black_box(&RIGHT_KEY), black_box(one)));
                }
            }),
        ),
        (
            "seal one link",
            Box::new(move |n| {
                for i in 0..n {
                    let mut nonce = [7u8; NONCE_LEN];
                    nonce[..8].copy_from_slice(&i.to_le_bytes());
                    black_box(seal::seal(black_box(&k1), black_box(&p), nonce).ok());
                }
            }),
        ),
        (
            "open one link",
            Box::new(move |n| {
                for _ in 0..n {
                    black_box(seal::open(black_box(&k2), black_box(&one2)).ok());
                }
            }),
        ),
    ]
}

fn wire_rows() -> Vec<(&'static str, Body)> {
    let store = Request::Store {
        link: bucket_right()[0].clone(),
        delete_check: DeleteCheck([5; 32]),
    };
    let bucket = Response::Bucket {
        links: bucket_right(),
    };
    let store_frame = wire::encode_frame(&store, DEFAULT_MAX_FRAME).expect("encodes");
    let bucket_frame = wire::encode_frame(&bucket, DEFAULT_MAX_FRAME).expect("encodes");
    assert_eq!(
        wire::decode_frame::<Request>(&store_frame, DEFAULT_MAX_FRAME).as_ref(),
        Ok(&store)
    );
    assert_eq!(
        wire::decode_frame::<Response>(&bucket_frame, DEFAULT_MAX_FRAME).as_ref(),
        Ok(&bucket)
    );
    eprintln!(
        "  frame sizes: Store request {} bytes, 64-link Bucket response {} bytes",
        store_frame.len(),
        bucket_frame.len()
    );
    // The server's metrics on every store and fetch, with the tracker as full as it gets.
    let metrics = std::rc::Rc::new(rdv::server::metrics::Metrics::new(600, 7 * 86400));
    let base = 1_700_000_000u64;
    for i in 0..rdv::server::metrics::MAX_TRACKED as u64 {
        let id = BucketId {
            created: base + i / 33,
            seq: (i % 33) as u16,
        };
        metrics.opened(id);
        metrics.fetched(id, id.locator(), 1, base + i / 33);
    }
    let now = base + rdv::server::metrics::MAX_TRACKED as u64 / 33;
    let known = BucketId {
        created: now - 1,
        seq: 0,
    };
    // The server has the locator of a fetch already (it is the request).
    let known_loc = known.locator();
    let (m1, m2) = (metrics.clone(), metrics.clone());
    vec![
        (
            "metrics: record a fetch (200 000 buckets tracked)",
            Box::new(move |n| {
                for _ in 0..n {
                    m1.fetched(black_box(known), black_box(known_loc), 17, now);
                }
            }),
        ),
        (
            "metrics: record a bucket opened (200 000 buckets tracked)",
            Box::new(move |n| {
                for i in 0..n {
                    let id = BucketId {
                        created: now,
                        seq: (i % 33) as u16,
                    };
                    m2.opened(black_box(id));
                }
            }),
        ),
        (
            "BucketId::locator",
            Box::new(|n| {
                for i in 0..n {
                    let id = BucketId {
                        created: 1_700_000_000 + (i >> 16),
                        seq: i as u16,
                    };
                    black_box(black_box(id).locator());
                }
            }),
        ),
        (
            "encode_frame Store request",
            Box::new(move |n| {
                for _ in 0..n {
                    black_box(wire::encode_frame(black_box(&store), DEFAULT_MAX_FRAME).ok());
                }
            }),
        ),
        (
            "decode_frame Store request",
            Box::new(move |n| {
                for _ in 0..n {
                    black_box(
                        wire::decode_frame::<Request>(black_box(&store_frame), DEFAULT_MAX_FRAME)
                            .ok(),
                    );
                }
            }),
        ),
        (
            "encode_frame Bucket response (64 links)",
            Box::new(move |n| {
                for _ in 0..n {
                    black_box(wire::encode_frame(black_box(&bucket), DEFAULT_MAX_FRAME).ok());
                }
            }),
        ),
        (
            "decode_frame Bucket response (64 links)",
            Box::new(move |n| {
                for _ in 0..n {
                    black_box(
                        wire::decode_frame::<Response>(black_box(&bucket_frame), DEFAULT_MAX_FRAME)
                            .ok(),
                    );
                }
            }),
        ),
    ]
}

fn filler_rows() -> Vec<(&'static str, Body)> {
    let secret = || rdv::proto::padding::FillerSecret::from_bytes([3u8; 32]);
    let (s1, s2) = (secret(), secret());
    vec![
        (
            "fetch filler (ChaCha20), full bucket: none needed",
            Box::new(move |n| {
                for i in 0..n {
                    let loc = BucketId {
                        created: 1_700_000_000,
                        seq: i as u16,
                    }
                    .locator();
                    black_box(rdv::proto::padding::filler(&s1, &loc, MAX_LINKS_PER_BUCKET));
                }
            }),
        ),
        (
            "fetch filler (ChaCha20), 1 real link: 63 × 256 B",
            Box::new(move |n| {
                for i in 0..n {
                    let loc = BucketId {
                        created: 1_700_000_000,
                        seq: i as u16,
                    }
                    .locator();
                    black_box(rdv::proto::padding::filler(&s2, &loc, 1));
                }
            }),
        ),
    ]
}

/// Stamps: solving one (the initiator's work per offer), verifying one (the server's per
/// stamped store), counting a bucket's (the accepter's per accept).
fn stamp_rows(effort: u32) -> Vec<(&'static str, Body)> {
    use rdv::proto::stamp::{self, Challenge};
    let id = BucketId {
        created: 1_700_000_000,
        seq: 1,
    };
    let ch = Challenge {
        id,
        seed: rdv::proto::StampSeed([5; 32]),
        effort,
    };
    let links: Vec<SealedLink> = (0..MAX_LINKS_PER_BUCKET)
        .map(|i| SealedLink([i as u8; 256]))
        .collect();
    let name =
        stamp::ServerName::of(&rdv::proto::ServerAddr::parse("127.0.0.1:7625").expect("addr"));
    let stamps: Vec<rdv::proto::Stamp> = links
        .iter()
        .map(|l| stamp::solve(&name, &ch, l, [0; 16], u64::MAX).expect("a stamp"))
        .collect();
    let filler: Vec<rdv::proto::Stamp> = (0..MAX_LINKS_PER_BUCKET)
        .map(|i| rdv::proto::Stamp([i as u8 ^ 0x5a; stamp::STAMP_LEN]))
        .collect();
    let (l1, s1) = (links[0].clone(), stamps[0]);
    let (l2, s2) = (links.clone(), stamps.clone());
    let (l3, s3) = (links.clone(), filler);
    let loc = id.locator();
    let mut i = 0u8;
    vec![
        (
            "stamp solve (effort 64)",
            Box::new(move |n| {
                for _ in 0..n {
                    i = i.wrapping_add(1);
                    let l = SealedLink([i; 256]);
                    black_box(stamp::solve(&name, &ch, &l, [i; 16], u64::MAX).ok());
                }
            }),
        ),
        (
            "stamp verify 1 (valid)",
            Box::new(move |n| {
                for _ in 0..n {
                    black_box(
                        stamp::verify(&name, &loc, &ch.seed, &l1, black_box(&s1), effort).ok(),
                    );
                }
            }),
        ),
        (
            "stamp count 64 (all valid)",
            Box::new(move |n| {
                for _ in 0..n {
                    black_box(stamp::count_verified(
                        &name,
                        &loc,
                        &ch.seed,
                        l2.iter().zip(s2.iter()),
                        effort,
                    ));
                }
            }),
        ),
        (
            "stamp count 64 (filler only)",
            Box::new(move |n| {
                for _ in 0..n {
                    black_box(stamp::count_verified(
                        &name,
                        &loc,
                        &ch.seed,
                        l3.iter().zip(s3.iter()),
                        effort,
                    ));
                }
            }),
        ),
    ]
}

/// A whole offer in process (the default KDF, requests to a server through memory pipes), as a
/// client of protocol `version`: 2 stores without a stamp, 3 solves one of the server's effort.
fn offer_row(name: &'static str, version: u16) -> (&'static str, Body) {
    use rdv::client::pipe::PipeConnector;
    use rdv::client::{Client, ClientConfig};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = rdv::server::Server::new(
        rdv::store::MemoryStore::new(rdv::store::StoreParams::default()),
        rdv::server::ServerConfig::default(),
        std::sync::Arc::new(rdv::clock::SystemClock),
    )
    .expect("server");
    let client = Client::new(
        std::sync::Arc::new(PipeConnector::to_server(server)),
        ClientConfig {
            max_version: version,
            ..Default::default()
        },
        std::sync::Arc::new(rdv::clock::SystemClock),
    );
    let addr = rdv::proto::ServerAddr::parse("bench.invalid:7625").expect("addr");
    (
        name,
        Box::new(move |n| {
            for _ in 0..n {
                let pass = Passphrase::new("kobad-lisuf-mutag-ronif-zapol");
                black_box(
                    rt.block_on(client.offer(&addr, b"smp://bench", pass, KdfProfile::Default))
                        .ok(),
                );
            }
        }),
    )
}

fn kdf_row(name: &'static str, profile: KdfProfile) -> (&'static str, Body) {
    let pass = Passphrase::new("kobad-lisuf-mutag-ronif-zapol");
    let salt = Salt::from_bytes([7; 16]);
    let limits = KdfLimits::default();
    (
        name,
        Box::new(move |n| {
            for _ in 0..n {
                black_box(kdf::derive_key(black_box(&pass), &salt, profile, &limits).ok());
            }
        }),
    )
}

/// Every row by name, for `--only`.
fn all_rows() -> Vec<(&'static str, Body)> {
    let mut rows = bucket_rows();
    rows.extend(single_rows());
    rows.extend(wire_rows());
    rows.extend(filler_rows());
    rows.extend(stamp_rows(rdv::proto::stamp::DEFAULT_EFFORT));
    rows.push(kdf_row(
        "derive_key test (64 KiB, t=1, p=1)",
        KdfProfile::Test,
    ));
    rows.push(kdf_row(
        "derive_key moderate (19 MiB, t=2, p=1)",
        KdfProfile::Moderate,
    ));
    rows.push(kdf_row(
        "derive_key default (64 MiB, t=3, p=4)",
        KdfProfile::Default,
    ));
    rows
}

fn ratio_line(h: &Harness, what: &str, num: &str, den: &str, target: Option<f64>) {
    let (Some(n), Some(d)) = (h.get(num), h.get(den)) else {
        return;
    };
    let med = n.median_ns / d.median_ns;
    let min = n.min_ns / d.min_ns;
    let verdict = match target {
        Some(t) if med <= t => format!("  target ≤ {t}×: met"),
        Some(t) => format!("  target ≤ {t}×: MISSED"),
        None => String::new(),
    };
    println!("{what:<58} {med:>6.2}× (median)  {min:>6.2}× (min){verdict}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `--only NAME --iters N`: run one row exactly N times, untimed (for callgrind).
    if let Some(i) = args.iter().position(|a| a == "--only") {
        let name = args.get(i + 1).expect("--only NAME");
        let iters: u64 = args
            .iter()
            .position(|a| a == "--iters")
            .and_then(|j| args.get(j + 1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let (_, mut body) = all_rows()
            .into_iter()
            .find(|(n, _)| n.contains(name.as_str()))
            .expect("no such row");
        body(iters);
        return;
    }
    let filter = args.iter().find(|a| !a.starts_with("--")).cloned();
    let mut h = Harness {
        filter,
        // `cargo bench` passes `--bench`; without it (`cargo test --all-targets`) a short smoke run.
        quick: args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench"),
        rows: Vec::new(),
    };
    let start = Instant::now();
    eprintln!("rdv micro-benchmarks (warm-up, then interleaved batches; median and min per op)");
    h.group(Budget::FAST, bucket_rows());
    h.group(Budget::FAST, single_rows());
    h.group(Budget::FAST, wire_rows());
    h.group(Budget::FAST, filler_rows());
    let mut stamps = stamp_rows(rdv::proto::stamp::DEFAULT_EFFORT);
    let solve = stamps.remove(0);
    h.group(Budget::FAST, stamps);
    h.group(
        Budget::FAST,
        vec![kdf_row(
            "derive_key test (64 KiB, t=1, p=1)",
            KdfProfile::Test,
        )],
    );
    h.group(
        Budget::SLOW,
        vec![
            kdf_row(
                "derive_key moderate (19 MiB, t=2, p=1)",
                KdfProfile::Moderate,
            ),
            kdf_row("derive_key default (64 MiB, t=3, p=4)", KdfProfile::Default),
            solve,
            offer_row("offer, protocol 2 (no stamp)", 2),
            offer_row("offer, protocol 3 (stamp of effort 64)", 3),
        ],
    );

    println!();
    println!(
        "{:<46} {:>10} {:>8} {:>14} {:>14}",
        "benchmark", "iters/batch", "batches", "median/op", "min/op"
    );
    println!("{}", "-".repeat(96));
    for r in &h.rows {
        println!(
            "{:<46} {:>10} {:>8} {:>14} {:>14}",
            r.name,
            r.iters,
            r.batches,
            fmt_ns(r.median_ns),
            fmt_ns(r.min_ns)
        );
    }
    println!();
    println!("ratios (same run, interleaved batches):");
    let raw64 = "raw xchacha20poly1305 decrypt 64 (right key)";
    ratio_line(
        &h,
        "metrics on a fetch / encoding its Bucket answer",
        "metrics: record a fetch (200 000 buckets tracked)",
        "encode_frame Bucket response (64 links)",
        Some(0.5),
    );
    ratio_line(
        &h,
        "metrics on a store / encoding a Store request",
        "metrics: record a store (200 000 buckets tracked)",
        "encode_frame Store request",
        None,
    );
    ratio_line(
        &h,
        "trial_open 64 (right one last) / raw decrypt 64",
        "trial_open 64 (right one last)",
        raw64,
        Some(2.5),
    );
    ratio_line(
        &h,
        "trial_open 64 (none right) / raw decrypt 64",
        "trial_open 64 (none right)",
        raw64,
        Some(2.5),
    );
    ratio_line(
        &h,
        "trial_open 64 (none right) / raw wrong-key 64",
        "trial_open 64 (none right)",
        "raw xchacha20poly1305 decrypt 64 (wrong key)",
        None,
    );
    ratio_line(
        &h,
        "open one link / raw decrypt 1",
        "open one link",
        "raw xchacha20poly1305 decrypt 1 (right key)",
        None,
    );
    ratio_line(
        &h,
        "raw decrypt 64 / raw decrypt 1 (expect ≈ 64)",
        raw64,
        "raw xchacha20poly1305 decrypt 1 (right key)",
        None,
    );
    if let (Some(kdf), Some(trial)) = (
        h.get("derive_key default (64 MiB, t=3, p=4)"),
        h.get("trial_open 64 (none right)"),
    ) {
        println!(
            "{:<58} {:>6.0}× (median): the KDF dominates an accept",
            "derive_key default / trial_open 64",
            kdf.median_ns / trial.median_ns
        );
    }
    if let (Some(solve), Some(kdf)) = (
        h.get("stamp solve (effort 64)"),
        h.get("derive_key default (64 MiB, t=3, p=4)"),
    ) {
        println!(
            "{:<58} {:>6.2}× (median): an offer's stamp against its key derivation",
            "stamp solve (effort 64) / derive_key default",
            solve.median_ns / kdf.median_ns
        );
    }
    ratio_line(
        &h,
        "offer with a stamp / offer without (default KDF both)",
        "offer, protocol 3 (stamp of effort 64)",
        "offer, protocol 2 (no stamp)",
        None,
    );
    if let Some(v) = h.get("stamp verify 1 (valid)") {
        println!(
            "{:<58} {:>6.1} % of one core at 2112 stamped stores/s (the policy cap)",
            "server: stamp verification per store",
            100.0 * v.median_ns * 2112.0 / 1e9
        );
    }
    if let Some(c) = h.get("stamp count 64 (all valid)") {
        println!(
            "{:<58} {:>6.2} ms (median; target ≤ 5 ms)",
            "accepter: counting a full bucket of valid stamps",
            c.median_ns / 1e6
        );
    }
    eprintln!("\ntotal bench time {:.1} s", start.elapsed().as_secs_f64());
}
