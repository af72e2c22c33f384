#!/usr/bin/env python3
# A second implementation of PROTOCOL.md section 15 (sealed answers), in Python and from the
# formulas there: it prints the answer.* lines of tests/vectors/answer.txt (the sealed answers and
# the failure vectors), which must all be in that file. Check with:
#   python3 scripts/answer-reference.py --check tests/vectors/answer.txt tests/vectors/stamp.txt
# (scripts/test does). It also derives the answer stamps' epoch, seed and challenge (section 17)
# and checks the committed answer stamp's effort condition (not its Equi-X solution).
# Needs the `cryptography` package (X25519, ChaCha20, ChaCha20-Poly1305); HChaCha20 is written out.
import hashlib, struct, sys
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives import serialization

def sha3(*parts):
    h = hashlib.sha3_256()
    for p in parts: h.update(p)
    return h.digest()

def rotl(v, c): return ((v << c) & 0xffffffff) | (v >> (32 - c))
def qr(s, a, b, c, d):
    s[a] = (s[a] + s[b]) & 0xffffffff; s[d] = rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & 0xffffffff; s[b] = rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & 0xffffffff; s[d] = rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & 0xffffffff; s[b] = rotl(s[b] ^ s[c], 7)
def hchacha(key, n16):
    s = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574] + list(struct.unpack('<8I', key)) + list(struct.unpack('<4I', n16))
    for _ in range(10):
        qr(s,0,4,8,12); qr(s,1,5,9,13); qr(s,2,6,10,14); qr(s,3,7,11,15)
        qr(s,0,5,10,15); qr(s,1,6,11,12); qr(s,2,7,8,13); qr(s,3,4,9,14)
    return struct.pack('<8I', *(s[0:4] + s[12:16]))
def xchacha_seal(key, nonce24, pt, ad):
    sub = hchacha(key, nonce24[:16])
    return ChaCha20Poly1305(sub).encrypt(b'\0'*4 + nonce24[16:], pt, ad)
def chacha_stream(key, nonce12, n):
    c = Cipher(algorithms.ChaCha20(key, b'\0'*4 + nonce12), mode=None).encryptor()
    return c.update(b'\0'*n)
def pub(sk):
    return X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
def dh(sk, pk):
    return X25519PrivateKey.from_private_bytes(sk).exchange(X25519PublicKey.from_public_bytes(pk))

def seal_answer(K, I, b, nonce, payload, mailbox=None):
    B = pub(b)
    if mailbox is None:
        mailbox = sha3(b"rdv mailbox v1", K, I)
    hk = sha3(b"rdv answer header v1", K, I)
    hidden = bytes(x ^ y for x, y in zip(B, chacha_stream(hk, nonce[:12], 32)))
    ak = sha3(b"rdv answer key v1", K, dh(b, I), I, B)
    pt = bytes([1]) + struct.pack('>H', len(payload)) + payload
    pt += b'\0' * (184 - len(pt))
    ct = xchacha_seal(ak, nonce, pt, b"rdv sealed answer v1" + mailbox + hidden)
    return mailbox, nonce + hidden + ct

out = []
K = bytes([0x42])*32; i = bytes([0x77])*32; b = bytes([0x88])*32; nonce = bytes([0x99])*24
I = pub(i)
B = pub(b)
out.append("answer.keys ok " + " ".join([
    "i=" + i.hex(), "b=" + b.hex(), "I=" + I.hex(), "B=" + B.hex(),
    "x25519=" + dh(b, I).hex(),
    "mailbox=" + sha3(b"rdv mailbox v1", K, I).hex(),
    "header_key=" + sha3(b"rdv answer header v1", K, I).hex(),
    "answer_key=" + sha3(b"rdv answer key v1", K, dh(b, I), I, B).hex(),
]))
for name, p in [("answer.empty", b""), ("answer.short", b"simplex://reply-queue"), ("answer.max", bytes([0xa5])*181)]:
    mb, s = seal_answer(K, I, b, nonce, p)
    out.append(f"{name} ok {s.hex()}")
mb, short = seal_answer(K, I, b, nonce, b"simplex://reply-queue")
def flip(s, byte, bit=0):
    s = bytearray(s); s[byte] ^= 1 << bit; return bytes(s)
out.append("answer.flip-nonce fails " + flip(short, 3).hex())
out.append("answer.flip-hidden-key fails " + flip(short, 40).hex())
out.append("answer.flip-ciphertext fails " + flip(short, 100, 7).hex())
out.append("answer.flip-tag fails " + flip(short, 255).hex())
_, other = seal_answer(K, pub(bytes([0x76])*32), b, nonce, b"simplex://reply-queue")
out.append("answer.other-initiator fails " + other.hex())
hk = sha3(b"rdv answer header v1", K, I)
lowo = nonce + chacha_stream(hk, nonce[:12], 32) + short[56:]
out.append("answer.low-order-key fails " + lowo.hex())
out.append("answer.random fails " + bytes(range(256)).hex())
# A multi-server link in format 3 (section 15.7): a mailbox per copy, named by its place j.
copy = [sha3(b"rdv mailbox per copy v1", K, I, bytes([j])) for j in range(2)]
out.append(f"answer.copy-mailboxes ok copy0={copy[0].hex()} copy1={copy[1].hex()}")
_, copy1 = seal_answer(K, I, b, nonce, b"simplex://reply-queue", copy[1])
out.append("answer.copy1-short ok " + copy1.hex())
# The copy every accepter of a multi-server link fetches and answers first (section 11.6).
for name, key in (("answer.first-copy", K), ("answer.first-copy-0f", bytes([0x0f])*32)):
    first = int.from_bytes(sha3(b"rdv first copy v1", key)[:8], 'big')
    out.append(f"{name} ok " + " ".join(f"n{n}={first % n}" for n in range(2, 6)))

# Stamped answers (section 17): the epoch, its seed and the challenge bytes for the inputs
# tests/vectors/stamp.txt describes (the Equi-X solution itself is not recomputed here; its
# effort condition is, in --check).
secret, mailbox, sealed = bytes([0x11])*32, bytes([0x44])*32, bytes([0x55])*256
epoch = 1800000000 // 600
aseed = sha3(b"rdv answer seed v1", secret, struct.pack('>Q', epoch))
def answer_challenge(nonce16, effort):
    return b"rdv answer stamp v1" + aseed + mailbox + sha3(sealed) + nonce16 + struct.pack('>I', effort)
out.append(f"answer-stamp.epoch ok {epoch}")
out.append(f"answer-stamp.seed ok {aseed.hex()}")
out.append(f"answer-stamp.challenge ok {answer_challenge(bytes(16), 8).hex()}")

def meets(challenge, solution, effort):
    r = struct.unpack('>I', sha3(challenge, solution)[:4])[0]
    return r * max(effort, 1) <= 0xffffffff

if len(sys.argv) >= 3 and sys.argv[1] == "--check":
    lines = [l for f in sys.argv[2:] for l in open(f).read().splitlines()]
    have = set(lines)
    missing = [l for l in out if l not in have]
    for l in missing:
        print("not in", " ".join(sys.argv[2:]) + ":", l[:60] + "...", file=sys.stderr)
    # The committed answer stamp: nonce || solution || effort, its solution meeting its effort.
    solved = [l.split()[2] for l in lines if l.startswith("answer-stamp.solved ok ")]
    bad = 0
    for h in solved:
        st = bytes.fromhex(h)
        eff = struct.unpack('>I', st[32:])[0]
        if not meets(answer_challenge(st[:16], eff), st[16:32], eff):
            print("answer-stamp.solved does not meet its effort", file=sys.stderr); bad += 1
    print(f"answer reference: {len(out) - len(missing)} of {len(out)} lines match; "
          f"{len(solved) - bad} of {len(solved)} answer stamps meet their effort")
    sys.exit(1 if missing or bad or not solved else 0)
print("\n".join(out))
