"""Seeds of per-sample randomness: a function of (seed, sample id, draw), never of call order.

A resumed run, a shorter ``--limit`` or another sample order must give each sample the same
random map and the same perturbation tie-break; a counter of calls does not (it hands a resumed
run's samples the maps of the first ones). Python's `hash` is salted per process, so SHA-256.
"""

from __future__ import annotations

import hashlib


def sample_seed(seed: int, sample_id: str, draw: int = 0) -> int:
    """A 63-bit seed for draw ``draw`` of sample ``sample_id`` under the run seed ``seed``."""
    digest = hashlib.sha256(f"{seed}\x00{sample_id}\x00{draw}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
