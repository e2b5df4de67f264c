"""Neural Eigenmaps: self-supervised eigenfunction encoders at scale (the library layer).

Sub-packages: ``config`` (one typed schema), ``models``, ``losses``, ``dist`` (every
collective), ``data``, ``train``, ``eval``. Nothing here imports ``launch``.
"""

from eigenmap.threads import passive_waits

__version__ = "0.1.0"

# before any module here imports torch: OpenMP reads its wait policy once, when it loads
# (eigenmap/threads.py says why: spinning threads made the probe 16-37x slower on a busy machine)
passive_waits()
