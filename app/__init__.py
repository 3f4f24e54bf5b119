"""AION Explorer's Panel app: `panel serve app` serves app/main.py.

Datashader's parallel numba kernels run from Panel's worker threads (``--num-threads``); numba's
default ``workqueue`` layer aborts the process when two threads launch kernels at once, so the app
asks for the thread-safe OpenMP layer before numba is imported (an explicit setting wins).
"""

import os

os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")
