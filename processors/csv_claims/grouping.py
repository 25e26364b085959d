"""Finding the claim ids that occur on more than one row, in bounded memory.

A claim split into SEGMENT rows must become one EOB, and a repeated carrier or PDE id is a
data error; both need every row of that id before anything is built. Files are usually sorted
by beneficiary, but nothing guarantees it, so a first pass over the file feeds every claim id
into a Bloom filter (a fixed 16 MiB bit array): an id whose bits were all set already *may*
be a repeat and goes into a small exact set of candidates. The second pass holds back only
the candidates' rows until the end of the file; everything else streams straight through.
False positives (about 1 in 2,500 ids at five million claims) are merely held and then
emitted as single-row claims.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

_BITS_LOG2 = 27  # 2**27 bits = 16 MiB
_MASK = (1 << _BITS_LOG2) - 1
_HASHES = 3


class BloomFilter:
    def __init__(self) -> None:
        self._bits = bytearray(1 << (_BITS_LOG2 - 3))

    def add(self, key: str) -> bool:
        """Add ``key``; True if it may have been added before."""
        digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=16).digest()
        h1 = int.from_bytes(digest[:8], "little")
        h2 = int.from_bytes(digest[8:], "little") | 1
        seen = True
        bits = self._bits
        for i in range(_HASHES):
            position = (h1 + i * h2) & _MASK
            byte, bit = position >> 3, 1 << (position & 7)
            if not bits[byte] & bit:
                seen = False
                bits[byte] |= bit
        return seen


def repeated_candidates(claim_ids: Iterable[str]) -> set[str]:
    """Every id that occurs more than once, plus a few that do not (Bloom false positives)."""
    bloom = BloomFilter()
    candidates: set[str] = set()
    for claim_id in claim_ids:
        if bloom.add(claim_id):
            candidates.add(claim_id)
    return candidates
