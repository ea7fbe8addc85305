"""Numba kernels: pure functions on arrays, no I/O, no h5py/faiss/click imports."""
