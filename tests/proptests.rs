//! Property tests: every encode/decode and seal/open round-trips; arbitrary bytes never panic and
//! always give a typed error.

use proptest::prelude::*;
use rdv::proto::seal::{open, seal, MAX_PAYLOAD};
use rdv::proto::wire::{decode_frame, encode_frame, DEFAULT_MAX_FRAME};
use rdv::proto::{
    BucketId, DeleteCheck, DeleteToken, ErrorCode, KdfParams, KdfProfile, LinkKey, Locator,
    Passphrase, RdvLink, Request, Response, Salt, SealedLink, ServerAddr, ServerInfo,
};

fn sealed() -> impl Strategy<Value = SealedLink> {
    proptest::collection::vec(any::<u8>(), 256).prop_map(|v| SealedLink(v.try_into().unwrap()))
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Request::Hello {
            min_version: a,
            max_version: b
        }),
        Just(Request::Info),
        (sealed(), any::<[u8; 32]>()).prop_map(|(link, c)| Request::Store {
            link,
            delete_check: DeleteCheck(c)
        }),
        any::<[u8; 32]>().prop_map(|l| Request::Fetch {
            locator: Locator(l)
        }),
        (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(l, t)| Request::Delete {
            locator: Locator(l),
            token: DeleteToken::from_bytes(t)
        }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        any::<u16>().prop_map(|version| Response::Hello { version }),
        (
            any::<u16>(),
            any::<u16>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>()
        )
            .prop_map(|(v, m, w, t, s, f)| {
                Response::Info(ServerInfo {
                    version: v,
                    max_links_per_bucket: m,
                    open_window_secs: w,
                    ttl_secs: t,
                    server_time: s,
                    max_frame: f,
                })
            }),
        (any::<u64>(), any::<u16>()).prop_map(|(created, seq)| Response::Stored {
            id: BucketId { created, seq }
        }),
        proptest::collection::vec(sealed(), 0..=64).prop_map(|links| Response::Bucket { links }),
        Just(Response::Deleted),
        (any::<u16>(), "[ -~]{0,100}").prop_map(|(c, message)| Response::Error {
            code: ErrorCode::from_u16(c),
            message
        }),
    ]
}

fn kdf() -> impl Strategy<Value = KdfProfile> {
    prop_oneof![
        Just(KdfProfile::Default),
        Just(KdfProfile::Moderate),
        Just(KdfProfile::Test),
        (any::<u32>(), any::<u32>(), any::<u32>())
            .prop_map(|(m_kib, t, p)| KdfProfile::Custom(KdfParams { m_kib, t, p })),
    ]
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 32]>().prop_map(|k| rdv::proto::link::onion_host(&k)),
        "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-z0-9]{1,8}){0,3}",
        any::<[u8; 4]>().prop_map(|b| std::net::Ipv4Addr::from(b).to_string()),
        any::<[u16; 8]>().prop_map(|b| std::net::Ipv6Addr::from(b).to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn requests_round_trip(r in request()) {
        let f = encode_frame(&r, DEFAULT_MAX_FRAME).unwrap();
        prop_assert_eq!(decode_frame::<Request>(&f, DEFAULT_MAX_FRAME).unwrap(), r);
    }

    #[test]
    fn responses_round_trip(r in response()) {
        let f = encode_frame(&r, DEFAULT_MAX_FRAME).unwrap();
        prop_assert_eq!(decode_frame::<Response>(&f, DEFAULT_MAX_FRAME).unwrap(), r);
    }

    #[test]
    fn seal_open_round_trip(key in any::<[u8; 32]>(), nonce in any::<[u8; 24]>(), payload in proptest::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD)) {
        let k = LinkKey::from_bytes(key);
        let s = seal(&k, &payload, nonce).unwrap();
        prop_assert_eq!(&open(&k, &s).unwrap()[..], &payload[..]);
    }

    #[test]
    fn links_round_trip(h in host(), port in 1u16.., loc in any::<[u8; 32]>(), salt in any::<[u8; 16]>(), k in kdf(), pass in proptest::option::of(".{1,40}")) {
        let link = RdvLink { server: ServerAddr { host: h, port }, locator: Locator(loc), mirrors: Vec::new(), salt: Salt::from_bytes(salt), kdf: k, passphrase: pass.map(Passphrase::new) };
        let uri = link.to_uri();
        prop_assert_eq!(RdvLink::parse(&uri).unwrap(), link);
    }

    #[test]
    fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_frame::<Request>(&bytes, DEFAULT_MAX_FRAME);
        let _ = decode_frame::<Response>(&bytes, DEFAULT_MAX_FRAME);
        let _ = rdv::proto::wire::decode_body::<Request>(&bytes);
        let _ = rdv::proto::wire::decode_body::<Response>(&bytes);
    }

    #[test]
    fn arbitrary_sealed_links_fail_opaquely(bytes in any::<[u8; 32]>(), blob in sealed()) {
        prop_assert!(open(&LinkKey::from_bytes(bytes), &blob).is_err());
    }

    #[test]
    fn arbitrary_link_text_never_panics(s in ".{0,300}", tail in "[a-zA-Z0-9?&=:%._~-]{0,120}") {
        let _ = RdvLink::parse(&s);
        let _ = RdvLink::parse(&format!("rdv1:{tail}"));
        let _ = KdfProfile::parse(&s);
        let _ = ServerAddr::parse(&s);
    }

    #[test]
    fn every_mutation_of_a_valid_frame_is_handled(r in request(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut f = encode_frame(&r, DEFAULT_MAX_FRAME).unwrap();
        let i = pos.index(f.len());
        f[i] = byte;
        let _ = decode_frame::<Request>(&f, DEFAULT_MAX_FRAME);
        f.truncate(i);
        prop_assert!(decode_frame::<Request>(&f, DEFAULT_MAX_FRAME).is_err());
    }
}
