"""Seed derivation for the shard loader: one independent stream per (seed, epoch, rank, worker, purpose).

Seeds are derived with `numpy.random.SeedSequence` from integer tuples, never with Python's `hash()`
(salted per process, so it differs between DDP ranks and restarts). String parts such as the purpose
tag are turned into integers with SHA-256, which is stable across machines and Python versions.
"""

from __future__ import annotations

import hashlib

import numpy as np

# Purpose tags keep the streams of one (seed, epoch, rank, worker) independent of each other.
SHARD_ORDER = "shard-order"
SHUFFLE = "shuffle"
AUGMENT = "augment"


def _as_int(part: int | str) -> int:
    """Map one seed part to a non-negative integer; strings go through SHA-256 (stable, unlike hash())."""
    if isinstance(part, bool) or not isinstance(part, int | str):
        raise TypeError(f"seed parts must be int or str, got {type(part).__name__}: {part!r}")
    if isinstance(part, str):
        return int.from_bytes(hashlib.sha256(part.encode("utf-8")).digest()[:8], "little")
    if part < 0:
        raise ValueError(f"seed parts must be non-negative, got {part}")
    return part


def seed_sequence(*parts: int | str) -> np.random.SeedSequence:
    """A SeedSequence whose entropy is the tuple of parts (order matters).

    Example:
        >>> seed_sequence(0, 1, "shuffle").generate_state(1).dtype
        dtype('uint32')
    """
    return np.random.SeedSequence([_as_int(p) for p in parts])


def rng(*parts: int | str) -> np.random.Generator:
    """A numpy PCG64 generator seeded from the parts; independent for different part tuples.

    Example:
        >>> int(rng(0, 0, "x").integers(10)) == int(rng(0, 0, "x").integers(10))
        True
    """
    return np.random.default_rng(seed_sequence(*parts))


def derive_seed(*parts: int | str) -> int:
    """A 63-bit integer seed (e.g. for a torch.Generator) derived from the parts."""
    state = seed_sequence(*parts).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 32 | int(state[1])) & ((1 << 63) - 1))


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shard order of one epoch: a permutation of range(n) that depends only on (seed, epoch).

    Every rank computes the same permutation without communicating, so the rank/worker split of
    the permuted list is a partition of the shards.
    """
    return rng(seed, epoch, SHARD_ORDER).permutation(n)
