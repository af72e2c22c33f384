//! Generated passphrases: pronounceable five-letter words, 16 bits each.
//!
//! A word is consonant-vowel-consonant-vowel-consonant, from 16 consonants and 4 vowels
//! (4 + 2 + 4 + 2 + 4 = 16 bits), so 16 random bits map to exactly one word and back. Five words
//! carry 80 bits, far beyond offline guessing at one Argon2id run per guess.

use super::kdf::Passphrase;

const CONSONANTS: &[u8; 16] = b"bdfghjklmnprstvz";
const VOWELS: &[u8; 4] = b"aiou";

/// Words in a generated passphrase.
pub const WORDS: usize = 5;
/// Random bytes needed for one passphrase.
pub const RANDOM_BYTES: usize = WORDS * 2;

/// One word for 16 bits.
pub fn word(bits: u16) -> String {
    let c = |shift: u16| CONSONANTS[usize::from((bits >> shift) & 0xf)] as char;
    let v = |shift: u16| VOWELS[usize::from((bits >> shift) & 0x3)] as char;
    [c(12), v(10), c(6), v(4), c(0)].iter().collect()
}

/// A passphrase of [`WORDS`] words joined by `-`, from caller-supplied random bytes.
pub fn passphrase(random: [u8; RANDOM_BYTES]) -> Passphrase {
    let mut words: Vec<String> = random
        .chunks_exact(2)
        .map(|c| word(u16::from_be_bytes([c[0], c[1]])))
        .collect();
    let p = Passphrase::new(words.join("-"));
    words.iter_mut().for_each(zeroize::Zeroize::zeroize);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn words_are_a_bijection() {
        let all: HashSet<String> = (0..=u16::MAX).map(word).collect();
        assert_eq!(all.len(), 65536);
        assert!(all.iter().all(|w| w.len() == 5));
    }

    #[test]
    fn passphrase_shape() {
        let p = passphrase([0; RANDOM_BYTES]);
        assert_eq!(p.expose(), "babab-babab-babab-babab-babab");
    }
}
