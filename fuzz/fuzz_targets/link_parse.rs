//! The rdv1: link parser: never a panic; a parsed link writes back to text that parses to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rdv::proto::RdvLink;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(link) = RdvLink::parse(s) {
        let text = link.to_uri();
        assert_eq!(RdvLink::parse(&text).expect("written links parse"), link);
    }
});
