"""Exact matrix arithmetic over the rationals (Python ints / Fractions), for exact oracles.

Matrices are tuples of tuples (or lists of lists) of ``int`` / ``Fraction``. Everything
here is slow and exact: it is meant for the small matrices of counterexample searches
and for tests, never for real data.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import numpy as np

Matrix = list  # list[list[int | Fraction]]


def to_exact(x) -> Matrix:
    """A numpy/nested-list matrix as lists of exact numbers (floats convert exactly)."""
    arr = np.asarray(x)
    out = []
    for row in arr.tolist():
        out.append([v if isinstance(v, int) else Fraction(v) for v in row])
    return out


def shape(a: Matrix) -> tuple[int, int]:
    return len(a), len(a[0]) if a else 0


def transpose(a: Matrix) -> Matrix:
    return [list(col) for col in zip(*a)]


def matmul(a: Matrix, b: Matrix) -> Matrix:
    bt = transpose(b)
    return [[sum(x * y for x, y in zip(row, col)) for col in bt] for row in a]


def matpow(a: Matrix, p: int) -> Matrix:
    n = len(a)
    result = identity(n)
    base = a
    while p:
        if p & 1:
            result = matmul(result, base)
        p >>= 1
        if p:
            base = matmul(base, base)
    return result


def identity(n: int) -> Matrix:
    return [[1 if i == j else 0 for j in range(n)] for i in range(n)]


def add(a: Matrix, b: Matrix) -> Matrix:
    return [[x + y for x, y in zip(ra, rb)] for ra, rb in zip(a, b)]


def gram(x: Matrix) -> Matrix:
    """G = X Xᵀ."""
    return matmul(x, transpose(x))


def inverse(a: Matrix) -> Matrix | None:
    """Exact inverse by Gauss-Jordan over the rationals; None when singular."""
    n = len(a)
    m = [[Fraction(v) for v in row] + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(a)]
    for col in range(n):
        pivot = next((r for r in range(col, n) if m[r][col] != 0), None)
        if pivot is None:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        inv_p = 1 / m[col][col]
        m[col] = [v * inv_p for v in m[col]]
        for r in range(n):
            if r != col and m[r][col] != 0:
                f = m[r][col]
                m[r] = [vr - f * vc for vr, vc in zip(m[r], m[col])]
    return [row[n:] for row in m]


def norm1(a: Matrix) -> Fraction:
    """Induced 1-norm: the largest absolute column sum (exact)."""
    return max(sum(abs(row[j]) for row in a) for j in range(len(a[0])))


def norm_inf(a: Matrix) -> Fraction:
    """Induced ∞-norm: the largest absolute row sum (exact)."""
    return max(sum(abs(v) for v in row) for row in a)


def fro_sq(a: Matrix) -> Fraction:
    """Squared Frobenius norm (exact; the norm itself is its square root)."""
    return sum(v * v for row in a for v in row)


def equal(a: Matrix, b: Matrix) -> bool:
    return all(x == y for ra, rb in zip(a, b) for x, y in zip(ra, rb)) and shape(a) == shape(b)


def as_json_exact(a: Sequence[Sequence]):
    """Integers stay JSON integers; any non-integer rational becomes a string 'p/q'."""
    out = []
    for row in a:
        r = []
        for v in row:
            f = Fraction(v)
            r.append(int(f) if f.denominator == 1 else str(f))
        out.append(r)
    return out
