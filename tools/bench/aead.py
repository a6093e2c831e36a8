"""AEAD and KDF candidates for encrypted repositories (issue 11), measured against the per-byte
work a backup already does (BLAKE3 and zstd level 3 on the same data), in one process.

Candidates (each through a vetted library, none hand-written):
  pyca-chacha   cryptography's ChaCha20Poly1305 (96-bit nonce)
  pyca-aesgcm   cryptography's AESGCM, 256-bit key (96-bit nonce)
  nacl-xchacha  PyNaCl's crypto_aead_xchacha20poly1305_ietf (192-bit nonce: random nonces safe
                without coordination between writers)
and Argon2id from both libraries at the parameters given.

Usage: python tools/bench/aead.py [--sizes 4K,64K,512K,2M] [--seconds 0.5] [--argon MEM_KIB,T,P] [--json]
PyNaCl is optional (pip install pynacl); its rows are skipped without it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable

import blake3
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

try:
    import nacl.bindings as sodium
    import nacl.pwhash
except ImportError:  # optional: the PyNaCl rows are skipped
    sodium = None  # type: ignore[assignment]


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def sample(size: int) -> bytes:
    """Half compressible text, half random: the mixed set's shape (tools/bench/backup.py)."""
    words = b"the quick brown fox 12345 jumps over 678 lazy dogs "
    text = (words * (size // len(words) + 1))[: size // 2]
    return text + os.urandom(size - len(text))


def rate(fn: Callable[[], object], nbytes: int, seconds: float) -> float:
    """MB/s of fn over at least `seconds` (best of three such stretches)."""
    best = 0.0
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            fn()
            n += 1
        best = max(best, n * nbytes / elapsed / 1e6)
    return best


def ciphers() -> dict[str, tuple[Callable[[bytes, bytes, bytes], bytes], Callable[[bytes, bytes, bytes], bytes], int]]:
    """name -> (encrypt(nonce, data, ad), decrypt(nonce, ct, ad), nonce bytes)."""
    key = os.urandom(32)
    chacha, aes = ChaCha20Poly1305(key), AESGCM(key)
    out = {"pyca-chacha": (chacha.encrypt, chacha.decrypt, 12), "pyca-aesgcm": (aes.encrypt, aes.decrypt, 12)}
    if sodium is not None:
        out["nacl-xchacha"] = (
            lambda n, d, a: sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(d, a, n, key),
            lambda n, c, a: sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(c, a, n, key), 24)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="4K,64K,512K,2M")
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--argon", default="65536,3,4", help="memory in KiB, iterations, lanes")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    ad = b"casbackup-bench/CHUNK/" + os.urandom(32)
    rows: list[dict[str, object]] = []
    for size in map(parse_size, args.sizes.split(",")):
        data = sample(size)
        row: dict[str, object] = {"size": size,
                                  "blake3": rate(lambda: blake3.blake3(data).digest(), size, args.seconds),
                                  "zstd3": rate(lambda: zstandard.ZstdCompressor(level=3).compress(data), size,
                                                args.seconds)}
        for name, (enc, dec, nonce_len) in ciphers().items():
            nonce = os.urandom(nonce_len)
            ct = enc(nonce, data, ad)
            assert dec(nonce, ct, ad) == data
            row[f"{name}-enc"] = rate(lambda: enc(os.urandom(nonce_len), data, ad), size, args.seconds)
            row[f"{name}-dec"] = rate(lambda: dec(nonce, ct, ad), size, args.seconds)
        rows.append(row)
    mem, iters, lanes = map(int, args.argon.split(","))
    salt, password = os.urandom(16), b"correct horse battery staple"
    kdf: dict[str, float] = {}
    start = time.perf_counter()
    Argon2id(salt=salt, length=32, iterations=iters, lanes=lanes, memory_cost=mem).derive(password)
    kdf["pyca-argon2id"] = time.perf_counter() - start
    if sodium is not None:
        start = time.perf_counter()
        nacl.pwhash.argon2id.kdf(32, password, salt, opslimit=iters, memlimit=mem * 1024)  # lanes: libsodium's 1
        kdf["nacl-argon2id (1 lane)"] = time.perf_counter() - start
    if args.json:
        print(json.dumps({"rows": rows, "kdf_s": kdf, "argon": args.argon, "load": os.getloadavg()}, indent=2))
        return
    names = [k for k in rows[0] if k != "size"]
    print("| size | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for row in rows:
        print(f"| {row['size'] // 1024} KiB | " + " | ".join(f"{row[k]:.0f}" for k in names) + " |")
    print("# MB/s, best of 3 stretches of", args.seconds, "s; one thread", file=sys.stderr)
    for name, secs in kdf.items():
        print(f"# {name} at {mem} KiB, t={iters}, p={lanes}: {secs * 1000:.0f} ms", file=sys.stderr)
    print(f"# load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", file=sys.stderr)


if __name__ == "__main__":
    main()
