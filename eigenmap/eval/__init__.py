"""Evaluation of a trained encoder: features and codes on disk, linear probe, weighted kNN.

- :mod:`eigenmap.eval.features`: extract [N, F] encoder features and [N, k] eigenfunction
  codes of a ``.beton`` into a feature folder (memory-mapped ``.npy`` + a JSON sidecar);
- :mod:`eigenmap.eval.linear_probe`: a linear classifier on frozen (cached or augmented) features;
- :mod:`eigenmap.eval.knn`: weighted kNN classification (cosine, exp(sim / T) votes);
- :mod:`eigenmap.eval.spectrum`: how well the outputs are ordered by eigenvalue.
"""

# No re-exports: importing one module of the package (the training worker's spectrum plot) must not
# import the others (FAISS, the extraction machinery).
