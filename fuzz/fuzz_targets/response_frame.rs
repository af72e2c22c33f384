//! Response frames as the client decodes them: never a panic; what decodes re-encodes identically.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rdv::proto::wire::{decode_frame, encode_frame, DEFAULT_MAX_FRAME};
use rdv::proto::Response;

fuzz_target!(|data: &[u8]| {
    if let Ok(resp) = decode_frame::<Response>(data, DEFAULT_MAX_FRAME) {
        let again = encode_frame(&resp, u32::MAX).expect("a decoded response re-encodes");
        assert_eq!(decode_frame::<Response>(&again, u32::MAX).expect("round trip"), resp);
    }
});
