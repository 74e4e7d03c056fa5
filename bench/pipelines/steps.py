"""The benchmark's 10 trivial steps, plain functions shared by every system (stdlib only).

DAG: ``s0 -> s1 .. s8`` (each depends on s0 only) ``-> s9`` (depends on all eight).
Module-level functions, so an executor that runs each step in its own process can import them.
"""

from __future__ import annotations

SEED = 1


def s0(seed: int) -> dict:
    return {"x": seed * 2 + 1, "seed": seed}


def s1(a: dict) -> int:
    return a["x"] * 1 + 1


def s2(a: dict) -> int:
    return a["x"] * 2 + 2


def s3(a: dict) -> int:
    return a["x"] * 3 + 3


def s4(a: dict) -> int:
    return a["x"] * 4 + 4


def s5(a: dict) -> int:
    return a["x"] * 5 + 5


def s6(a: dict) -> int:
    return a["x"] * 6 + 6


def s7(a: dict) -> int:
    return a["x"] * 7 + 7


def s8(a: dict) -> int:
    return a["x"] * 8 + 8


def s9(b1: int, b2: int, b3: int, b4: int, b5: int, b6: int, b7: int, b8: int) -> dict:
    values = [b1, b2, b3, b4, b5, b6, b7, b8]
    return {"sum": sum(values), "n": len(values)}


MIDDLE = (s1, s2, s3, s4, s5, s6, s7, s8)
N_STEPS = 1 + len(MIDDLE) + 1


def run_direct(seed: int = SEED) -> dict:
    """The same functions called directly, in topological order."""
    a = s0(seed)
    return s9(*(f(a) for f in MIDDLE))


EXPECTED = run_direct()
