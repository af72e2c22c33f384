//! External known answers: the primitives rdv's specification names, checked against the
//! published test vectors of their standards (not vectors rdv generated itself). A second
//! implementation that passes these and `tests/vectors/` agrees with rdv on every byte.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha3::{Digest, Sha3_256};

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// draft-irtf-cfrg-xchacha-03, appendix A.3.1: AEAD_XChaCha20_Poly1305.
#[test]
fn xchacha20_poly1305_draft_irtf_cfrg_xchacha_a_3_1() {
    let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    let aad = unhex("50515253c0c1c2c3c4c5c6c7");
    let key = unhex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    let nonce = unhex("404142434445464748494a4b4c4d4e4f5051525354555657");
    let ciphertext = unhex(
        "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb
         731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452
         2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9
         21f9664c97637da9768812f615c68b13b52e",
    );
    let tag = unhex("c0875924c1c7987947deafd8780acf49");
    let cipher = XChaCha20Poly1305::new_from_slice(&key).unwrap();
    let out = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(&out[..out.len() - 16], &ciphertext[..]);
    assert_eq!(&out[out.len() - 16..], &tag[..]);
}

/// RFC 9106, section 5.3: Argon2id with a secret and associated data (rdv uses neither; the
/// vector checks the implementation rdv calls).
#[test]
fn argon2id_rfc_9106_5_3() {
    use argon2::{Algorithm, Argon2, Params, Version};
    let secret = [0x03u8; 8];
    let ad = [0x04u8; 12];
    let params = argon2::ParamsBuilder::new()
        .m_cost(32)
        .t_cost(3)
        .p_cost(4)
        .output_len(32)
        .data(argon2::AssociatedData::new(&ad).unwrap())
        .build()
        .unwrap();
    let _: &Params = &params;
    let a = Argon2::new_with_secret(&secret, Algorithm::Argon2id, Version::V0x13, params).unwrap();
    let mut tag = [0u8; 32];
    a.hash_password_into(&[0x01; 32], &[0x02; 16], &mut tag)
        .unwrap();
    assert_eq!(
        tag.to_vec(),
        unhex("0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659")
    );
}

/// FIPS 202 / NIST example values: SHA3-256 of "abc" and of the empty string.
#[test]
fn sha3_256_fips_202() {
    assert_eq!(
        Sha3_256::digest(b"abc").to_vec(),
        unhex("3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532")
    );
    assert_eq!(
        Sha3_256::digest(b"").to_vec(),
        unhex("a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a")
    );
}

/// RFC 8439, section 2.4.2: the ChaCha20 keystream the fetch filler uses.
#[test]
fn chacha20_rfc_8439_2_4_2() {
    use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
    let key = unhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
    let nonce = unhex("000000000000004a00000000");
    let mut c = chacha20::ChaCha20::new(key.as_slice().into(), nonce.as_slice().into());
    // The vector starts at block counter 1.
    c.seek(64u64);
    let mut buf = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".to_vec();
    c.apply_keystream(&mut buf);
    assert_eq!(
        buf,
        unhex(
            "6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b
             f91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d8
             07ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab7793736
             5af90bbf74a35be6b40b8eedf2785e42874d"
        )
    );
}

/// RFC 7748, section 5.2 (the two single-iteration vectors) and section 6.1 (Diffie-Hellman):
/// X25519, with which the answer channel agrees its secret.
#[test]
fn x25519_rfc_7748() {
    use x25519_dalek::{PublicKey, StaticSecret};
    let b32 = |s: &str| -> [u8; 32] { unhex(s).try_into().unwrap() };
    for (scalar, u, out) in [
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ] {
        let k = StaticSecret::from(b32(scalar));
        let shared = k.diffie_hellman(&PublicKey::from(b32(u)));
        assert_eq!(shared.as_bytes(), &b32(out));
    }
    let alice = StaticSecret::from(b32(
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
    ));
    let bob = StaticSecret::from(b32(
        "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
    ));
    assert_eq!(
        PublicKey::from(&alice).as_bytes(),
        &b32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    );
    assert_eq!(
        PublicKey::from(&bob).as_bytes(),
        &b32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    );
    let shared = b32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert_eq!(
        alice.diffie_hellman(&PublicKey::from(&bob)).as_bytes(),
        &shared
    );
    assert_eq!(
        bob.diffie_hellman(&PublicKey::from(&alice)).as_bytes(),
        &shared
    );
}

/// Equi-X, the puzzle under rdv's stamps: the solutions C tor's test suite publishes for its
/// challenges (tor's test_crypto_equix), each solution's sixteen bytes as eight little-endian
/// 16-bit items, and its verification through the interpreter (how rdv verifies).
#[test]
fn equix_matches_c_tor() {
    let items = |s: &equix::Solution| -> Vec<u16> {
        s.to_bytes()
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    };
    for (challenge, want) in [
        (
            &b"zzz"[..],
            vec![vec![
                0xae21, 0xd392, 0x3215, 0xdd9c, 0x2f08, 0x93df, 0x232c, 0xe5dc,
            ]],
        ),
        (
            &b"rrr"[..],
            vec![vec![
                0x0873, 0x57a8, 0x73e0, 0x912e, 0x1ca8, 0xad96, 0x9abd, 0xd7de,
            ]],
        ),
        (&b"qqq"[..], vec![]),
        (&b"0123456789"[..], vec![]),
        (
            &b""[..],
            vec![
                vec![
                    0x0098, 0x3a4d, 0xc489, 0xcfba, 0x7ef3, 0xa498, 0xa00f, 0xec20,
                ],
                vec![
                    0x78d8, 0x8611, 0xa4df, 0xec19, 0x0927, 0xa729, 0x842f, 0xf771,
                ],
                vec![
                    0x54b5, 0xcc11, 0x1593, 0xe624, 0x9357, 0xb339, 0xb138, 0xed99,
                ],
            ],
        ),
    ] {
        let found = equix::solve(challenge).expect("a usable challenge");
        let got: Vec<Vec<u16>> = found.iter().map(items).collect();
        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(challenge));
        let mut verifier = equix::EquiXBuilder::new();
        verifier.runtime(equix::RuntimeOption::InterpretOnly);
        for s in &found {
            assert!(verifier.verify(challenge, s).is_ok());
        }
    }
    // C tor's verify-only vector, and the same items out of order or changed.
    let a = [
        0x2227, 0xa173, 0x365a, 0xb47d, 0x1bb2, 0xa077, 0x0d5e, 0xf25f,
    ];
    assert!(equix::verify_array(b"a", &a).is_ok());
    let mut swapped = a;
    swapped.rotate_left(4);
    assert!(equix::verify_array(b"a", &swapped).is_err());
    let mut changed = a;
    changed[0] = 0x2220;
    assert!(equix::verify_array(b"a", &changed).is_err());
}
