"""Process-wide numba settings, applied once on import.

Imported by the packages that hold numba kernels (kernels/, encoders/), so it runs before any
parallel region whatever the user imports first; `import vecstore` alone does not import numba.

Many Python threads may call our parallel kernels at once; numba's fallback "workqueue" threading
layer aborts the process when that happens. Ask for a thread-safe layer (TBB or OpenMP) unless the
user chose one with NUMBA_THREADING_LAYER: numba then raises a clear error instead of aborting.
"""

import os

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "threadsafe"
