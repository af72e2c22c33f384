//! The agent's API request parser: never a panic on any line; a request it reads, written
//! back as the command line writes requests, reads as the same request with the same `id`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rdv::agent::api::{parse_line, request_line};

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    if let Ok((id, request)) = parse_line(line) {
        let again = request_line(&id, &request);
        let (id2, request2) = parse_line(&again).expect("written requests parse");
        assert_eq!(id, id2);
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            serde_json::to_value(&request2).unwrap()
        );
    }
});
