//! Request frames as the server decodes them: never a panic; what decodes re-encodes identically.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rdv::proto::wire::{decode_frame, encode_frame, DEFAULT_MAX_FRAME};
use rdv::proto::Request;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = decode_frame::<Request>(data, DEFAULT_MAX_FRAME) {
        let again = encode_frame(&req, DEFAULT_MAX_FRAME).expect("a decoded request re-encodes");
        assert_eq!(decode_frame::<Request>(&again, DEFAULT_MAX_FRAME).expect("round trip"), req);
    }
});
