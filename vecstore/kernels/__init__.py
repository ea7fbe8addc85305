"""Numba kernels: pure functions on arrays, no I/O, no h5py/faiss/click imports.

Importing this package imports no numba: dispatch.py imports the kernel modules on first use, and
topk.py (which every kernel module imports) sets numba's threading layer (vecstore._runtime).
"""
