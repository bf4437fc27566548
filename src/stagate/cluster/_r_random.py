"""R's default random number stream (Mersenne-Twister, ``set.seed``, ``sample``), in numpy.

Why by hand: R's ``mclust`` draws its initialisation subset with ``sample()`` after the
original STAGATE's ``set.seed(2020)``. Reproducing R's partition on data above mclust's
subset size therefore needs the very same draw. The generator itself is numpy's MT19937;
only R's seeding (an LCG scramble of the seed), its uniform fix-up and its rejection
sampling of indices (R >= 3.6, ``sample.kind = "Rejection"``) are written here.
"""

from __future__ import annotations

import numpy as np

_TWO_POW_M32 = 2.3283064365386963e-10  # 1 / 2^32: MT output -> [0, 1)
_I2_32M1 = 2.328306437080797e-10  # 1 / (2^32 - 1): R's fix-up keeps values in (0, 1)


class RStream:
    """Uniforms as R produces them after ``set.seed(seed)`` (default RNG kinds)."""

    def __init__(self, seed: int) -> None:
        s = np.uint32(seed % 2**32)
        with np.errstate(over="ignore"):
            for _ in range(50):  # R's initial scrambling
                s = np.uint32(69069) * s + np.uint32(1)
            key = np.empty(625, dtype=np.uint32)
            for j in range(625):  # mti slot + 624 words of state
                s = np.uint32(69069) * s + np.uint32(1)
                key[j] = s
        self._bits = np.random.MT19937()
        self._bits.state = {"bit_generator": "MT19937",
                            "state": {"key": key[1:], "pos": 624}}

    def unif(self) -> float:
        u = float(self._bits.random_raw()) * _TWO_POW_M32
        if u <= 0.0:
            return 0.5 * _I2_32M1
        if 1.0 - u <= 0.0:
            return 1.0 - 0.5 * _I2_32M1
        return u

    def _rbits(self, bits: int) -> int:
        v = 0
        for _ in range(0, bits + 1, 16):
            v = 65536 * v + int(self.unif() * 65536)
        return v & ((1 << bits) - 1)

    def unif_index(self, n: int) -> int:
        """A uniform integer in [0, n), by rejection (R's ``R_unif_index``)."""
        if n <= 0:
            return 0
        bits = int(np.ceil(np.log2(n)))
        while True:
            v = self._rbits(bits)
            if v < n:
                return v

    def sample(self, n: int, size: int) -> np.ndarray:
        """``sample(seq.int(n), size)`` without replacement, as 0-based indices."""
        pool = list(range(n))
        out = np.empty(size, dtype=np.int64)
        for i in range(size):
            j = self.unif_index(n)
            out[i] = pool[j]
            n -= 1
            pool[j] = pool[n]
        return out
