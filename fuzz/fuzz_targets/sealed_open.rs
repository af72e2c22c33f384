//! Opening sealed links: arbitrary blobs never panic and (with overwhelming probability) never
//! open; sealing any payload that fits opens back to it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rdv::proto::seal::{open, seal, MAX_PAYLOAD};
use rdv::proto::{LinkKey, SealedLink};

fuzz_target!(|data: &[u8]| {
    if data.len() < 32 + 24 {
        return;
    }
    let key = LinkKey::from_bytes(data[..32].try_into().unwrap());
    let nonce: [u8; 24] = data[32..56].try_into().unwrap();
    let rest = &data[56..];
    if rest.len() >= 256 {
        let blob = SealedLink(rest[..256].try_into().unwrap());
        let _ = open(&key, &blob);
    }
    match seal(&key, rest, nonce) {
        Ok(s) => assert_eq!(&open(&key, &s).expect("own seal opens")[..], rest),
        Err(_) => assert!(rest.len() > MAX_PAYLOAD),
    }
});
