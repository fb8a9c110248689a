"""Fixed-capacity ring buffer over a numpy array: the bounded memory every detector keeps."""

from __future__ import annotations

import numpy as np


class Ring:
    """Last ``capacity`` values (or rows of ``width``), oldest overwritten first.

    >>> r = Ring(3)
    >>> for v in (1.0, 2.0, 3.0, 4.0):
    ...     r.push(v)
    >>> r.values().tolist(), r.ago(1), r.ago(3), r.full
    ([2.0, 3.0, 4.0], 4.0, 2.0, True)
    """

    def __init__(self, capacity: int, width: int | None = None, dtype: type = np.float64) -> None:
        if capacity < 1:
            raise ValueError(f"ring capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        shape: tuple[int, ...] = (capacity,) if width is None else (capacity, width)
        self.buf: np.ndarray = np.full(shape, np.nan, dtype=dtype)
        self.pos = 0  # next slot to write
        self.size = 0

    @property
    def full(self) -> bool:
        return self.size == self.capacity

    def push(self, value: float | np.ndarray) -> None:
        self.buf[self.pos] = value
        self.pos = (self.pos + 1) % self.capacity
        if self.size < self.capacity:
            self.size += 1

    def extend(self, values: np.ndarray) -> None:
        """Push many values at once (same result as pushing them one by one)."""
        n = len(values)
        if n == 0:
            return
        if n >= self.capacity:
            self.buf[:] = values[n - self.capacity:]
            self.pos, self.size = 0, self.capacity
            return
        end = self.pos + n
        if end <= self.capacity:
            self.buf[self.pos:end] = values
        else:
            k = self.capacity - self.pos
            self.buf[self.pos:] = values[:k]
            self.buf[: n - k] = values[k:]
        self.pos = end % self.capacity
        self.size = min(self.size + n, self.capacity)

    def values(self) -> np.ndarray:
        """Contents oldest first (a copy)."""
        if self.size < self.capacity:
            return self.buf[: self.size].copy()
        return np.concatenate((self.buf[self.pos:], self.buf[: self.pos]))

    def filled(self) -> np.ndarray:
        """The filled slots in storage order (a view; order-free statistics only)."""
        return self.buf if self.size == self.capacity else self.buf[: self.size]

    def ago(self, k: int) -> float:
        """The value pushed k steps ago (k=1 is the latest); NaN when not held."""
        if k < 1 or k > self.size:
            return float("nan")
        return float(self.buf[(self.pos - k) % self.capacity])
