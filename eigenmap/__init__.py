"""Neural Eigenmaps: self-supervised eigenfunction encoders at scale (the library layer).

Sub-packages: ``config`` (one typed schema), ``models``, ``losses``, ``dist`` (every
collective), ``data``, ``train``, ``eval``. Nothing here imports ``launch``.
"""

__version__ = "0.1.0"
