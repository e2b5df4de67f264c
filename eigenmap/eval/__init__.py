"""Evaluation of a trained encoder: features and codes on disk, linear probe, weighted kNN.

- :mod:`eigenmap.eval.features`: extract [N, F] encoder features and [N, k] eigenfunction
  codes of a ``.beton`` into a feature folder (memory-mapped ``.npy`` + a JSON sidecar);
- :mod:`eigenmap.eval.linear_probe`: a linear classifier on frozen (cached or augmented) features;
- :mod:`eigenmap.eval.knn`: weighted kNN classification (cosine, exp(sim / T) votes);
- :mod:`eigenmap.eval.spectrum`: how well the outputs are ordered by eigenvalue.
"""

from eigenmap.eval.features import FeatureError, FeatureSet, extract_features, feature_folder, load_features
from eigenmap.eval.knn import knn_predict, knn_top1
from eigenmap.eval.linear_probe import ProbeResult, Standardiser, topk_accuracy, train_probe
from eigenmap.eval.spectrum import eigenvalue_order, spearman

__all__ = ["FeatureError", "FeatureSet", "extract_features", "feature_folder", "load_features", "knn_predict",
           "knn_top1", "ProbeResult", "Standardiser", "topk_accuracy", "train_probe", "eigenvalue_order", "spearman"]
