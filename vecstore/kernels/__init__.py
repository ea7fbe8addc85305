"""Numba kernels: pure functions on arrays, no I/O, no h5py/faiss/click imports."""

from .. import _runtime  # noqa: F401  (numba's threading layer: set before the first parallel region)
