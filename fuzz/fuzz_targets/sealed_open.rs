//! Opening sealed links and sealed answers: arbitrary blobs never panic and (with overwhelming
//! probability) never open; sealing any payload that fits (in either link format, or as an
//! answer) opens back to it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rdv::proto::answer::{open_answer, seal_answer, AnswerSecret, MAX_ANSWER};
use rdv::proto::seal::{open, open_link, seal, seal_expecting_answer, MAX_PAYLOAD, MAX_PAYLOAD_WITH_ANSWER};
use rdv::proto::SealedAnswer;
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
    // The answer channel: the first 32 bytes are also the initiator's secret, the nonce's
    // bytes (twice) the accepter's.
    let secret = AnswerSecret::from_bytes(data[..32].try_into().unwrap());
    let to = secret.public();
    match seal_expecting_answer(&key, rest, &to, nonce) {
        Ok(s) => {
            let o = open_link(&key, &s).expect("own seal opens");
            assert_eq!((&o.payload[..], o.answer_to), (rest, Some(to)));
        }
        Err(_) => assert!(rest.len() > MAX_PAYLOAD_WITH_ANSWER),
    }
    if rest.len() >= 256 {
        let _ = open_answer(&key, &secret, &SealedAnswer(rest[..256].try_into().unwrap()));
    }
    let mut eph = [0u8; 32];
    eph[..24].copy_from_slice(&nonce);
    match seal_answer(&key, &to, rest, eph, nonce) {
        Ok((_, s)) => assert_eq!(&open_answer(&key, &secret, &s).expect("own answer opens")[..], rest),
        Err(_) => assert!(rest.len() > MAX_ANSWER || to.as_bytes() == &[0; 32]),
    }
});
