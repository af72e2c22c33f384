//! The text form of an offer waiting for its answer (a `--state` file, an agent's offer file):
//! never a panic on any text; one that reads writes back to text that reads as the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rdv::client::PendingAnswer;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(pending) = PendingAnswer::from_text(text) {
        let written = pending.to_text();
        let again = PendingAnswer::from_text(&written).expect("written state parses");
        assert_eq!(*again.to_text(), *written);
    }
});
