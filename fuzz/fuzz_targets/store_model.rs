//! The store against a BTreeMap model: operations decoded from the input run on the in-memory
//! store (which shares the allocator with the disk store); the model checks bucket rules, fetch
//! contents, deletes, counts and garbage collection, and answer mailboxes (write-once, expiry,
//! the shared quota), and the marks deleted links leave (counted in the quota until their
//! bucket is collected).
#![no_main]
use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;
use rdv::proto::{BucketId, DeleteToken, MailboxAddr, SealedAnswer, SealedLink, MAX_LINKS_PER_BUCKET};
use rdv::store::{BucketStore, MemoryStore, PutAnswer, StoreParams};
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let params = StoreParams { open_window_secs: 4, ttl_secs: 30, max_links: Some(300), unstamped_share: 100, answer_share: 100, ..Default::default() };
    let store = MemoryStore::new(params);
    let mut model: BTreeMap<BucketId, Vec<(SealedLink, [u8; 32])>> = BTreeMap::new();
    // mailbox byte → (created, answer byte)
    let mut answers: BTreeMap<u8, (u64, u8)> = BTreeMap::new();
    // Marks of links deleted while their bucket could take stores, by bucket.
    let mut marks: BTreeMap<BucketId, usize> = BTreeMap::new();
    let mut now = 1_000u64;
    let mut last: Option<BucketId> = None;
    let mut n = 0u32;
    for chunk in data.chunks(2) {
        let (op, arg) = (chunk[0], *chunk.get(1).unwrap_or(&0));
        let stored = |m: &BTreeMap<BucketId, Vec<(SealedLink, [u8; 32])>>, a: &BTreeMap<u8, (u64, u8)>, k: &BTreeMap<BucketId, usize>| {
            m.values().map(Vec::len).sum::<usize>() + a.len() + k.values().sum::<usize>()
        };
        match op % 7 {
            0 | 1 => {
                n += 1;
                let mut blob = [0u8; 256];
                blob[..4].copy_from_slice(&n.to_be_bytes());
                let mut token = [0u8; 32];
                token[..4].copy_from_slice(&n.to_be_bytes());
                let total = stored(&model, &answers, &marks);
                match block_on(store.store(SealedLink(blob), DeleteToken::from_bytes(token).check(), now)) {
                    Ok(id) => {
                        assert!(total < 300, "stored beyond the quota");
                        if let Some(l) = last {
                            assert!(id >= l, "bucket IDs never go back");
                        }
                        assert!(id.created <= now.max(last.map_or(0, |l| l.created)) + 1);
                        last = Some(id);
                        let b = model.entry(id).or_default();
                        b.push((SealedLink(blob), token));
                        assert!(b.len() <= MAX_LINKS_PER_BUCKET);
                    }
                    Err(_) => assert!(total >= 300, "refused below the quota"),
                }
            }
            2 => {
                // Fetch one known bucket (or a never-used ID).
                let ids: Vec<BucketId> = model.keys().copied().collect();
                let id = ids.get(usize::from(arg) % (ids.len() + 1)).copied().unwrap_or(BucketId { created: 7, seq: 7 });
                let got = block_on(store.fetch(id.locator(), now)).unwrap();
                let expired = now >= id.created + params.ttl_secs;
                match model.get(&id) {
                    Some(links) if !expired => {
                        let want: Vec<SealedLink> = links.iter().map(|(l, _)| l.clone()).collect();
                        assert_eq!(got, Some(want));
                    }
                    _ => assert_eq!(got, None),
                }
            }
            3 => {
                // Delete a known link by its token.
                let all: Vec<(BucketId, [u8; 32])> = model.iter().flat_map(|(id, v)| v.iter().map(move |(_, t)| (*id, *t))).collect();
                if let Some((id, token)) = all.get(usize::from(arg) % (all.len() + 1)).copied() {
                    let expired = now >= id.created + params.ttl_secs;
                    let deleted = block_on(store.delete(id.locator(), DeleteToken::from_bytes(token).check(), now)).unwrap();
                    assert_eq!(deleted, !expired);
                    if deleted {
                        let v = model.get_mut(&id).unwrap();
                        v.retain(|(_, t)| *t != token);
                        if now < id.created + params.open_window_secs + rdv::proto::stamp::LATE_STORE_SECS {
                            *marks.entry(id).or_default() += 1;
                        }
                    }
                }
            }
            5 => {
                // Put an answer into one of 8 mailboxes.
                let mb = arg % 8;
                let live = answers.get(&mb).is_some_and(|(c, _)| now < c + params.ttl_secs);
                let total = stored(&model, &answers, &marks) - usize::from(answers.contains_key(&mb) && !live);
                let r = block_on(store.put_answer(MailboxAddr([mb; 32]), SealedAnswer([arg; 256]), now));
                match r {
                    Ok(PutAnswer::AlreadyAnswered) => assert!(live, "refused a free mailbox"),
                    Ok(PutAnswer::Stored) => {
                        assert!(!live, "overwrote an answer");
                        assert!(total < 300, "stored beyond the quota");
                        answers.insert(mb, (now, arg));
                    }
                    Err(_) => {
                        assert!(!live && total >= 300, "refused below the quota");
                        // An expired answer in the way is gone either way.
                        answers.remove(&mb);
                    }
                }
            }
            6 => {
                let mb = arg % 8;
                let got = block_on(store.fetch_answer(MailboxAddr([mb; 32]), now)).unwrap();
                let want = answers
                    .get(&mb)
                    .filter(|(c, _)| now < c + params.ttl_secs)
                    .map(|(_, a)| SealedAnswer([*a; 256]));
                assert_eq!(got, want);
            }
            _ => {
                now += u64::from(arg % 8);
                let limit = usize::from(arg % 4) + 1;
                let removed = block_on(store.collect_garbage(now, limit)).unwrap();
                let doomed: Vec<BucketId> = model.keys().copied().filter(|id| now >= id.created + params.ttl_secs).take(limit).collect();
                let mut old: Vec<(u64, u8)> = answers
                    .iter()
                    .filter(|(_, (c, _))| now >= c + params.ttl_secs)
                    .map(|(m, (c, _))| (*c, *m))
                    .collect();
                old.sort();
                old.truncate(limit);
                assert_eq!(removed, doomed.len() + old.len());
                for id in doomed {
                    model.remove(&id);
                    marks.remove(&id);
                }
                for (_, m) in old {
                    answers.remove(&m);
                }
            }
        }
        let total: usize = model.values().map(Vec::len).sum();
        assert_eq!(store.link_count(), total as u64);
        assert_eq!(store.answer_count(), answers.len() as u64);
        assert_eq!(store.mark_count(), marks.values().sum::<usize>() as u64);
    }
});
