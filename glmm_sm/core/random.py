"""The one entry point for randomness: ``random_state`` to ``SeedSequence`` and child streams."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["as_seed_sequence", "child_seed", "generator"]


def as_seed_sequence(random_state):
    """Turn a user's ``random_state`` into a ``numpy.random.SeedSequence``.

    Parameters
    ----------
    random_state : None, int, SeedSequence, Generator or RandomState
        ``None`` draws fresh entropy from the operating system (recorded in the returned
        sequence's ``entropy``, so the run can be repeated).  A ``Generator`` or
        ``RandomState`` is asked for one 63-bit integer, which seeds the sequence.

    Returns
    -------
    numpy.random.SeedSequence
    """
    if random_state is None:
        return np.random.SeedSequence()
    if isinstance(random_state, np.random.SeedSequence):
        return random_state
    if isinstance(random_state, (bool, np.bool_)):
        raise TypeError("random_state must be None, an int, a SeedSequence or a Generator; "
                        "got a bool")
    if isinstance(random_state, numbers.Integral):
        if random_state < 0:
            raise ValueError(f"random_state must be non-negative; got {random_state}")
        return np.random.SeedSequence(int(random_state))
    if isinstance(random_state, np.random.Generator):
        return np.random.SeedSequence(int(random_state.integers(2**63)))
    if isinstance(random_state, np.random.RandomState):
        return np.random.SeedSequence(int(random_state.randint(2**31)))
    raise TypeError("random_state must be None, an int, a SeedSequence or a Generator; got "
                    f"{type(random_state).__name__}")


def child_seed(seq, *keys):
    """The child of ``seq`` at spawn key ``keys``, without mutating ``seq``."""
    return np.random.SeedSequence(entropy=seq.entropy, spawn_key=tuple(seq.spawn_key) + keys,
                                  pool_size=seq.pool_size)


def generator(seq):
    """A PCG64 ``Generator`` seeded from ``seq``."""
    return np.random.Generator(np.random.PCG64(seq))
