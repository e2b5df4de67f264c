"""Near-duplicate images across two evaluation sets: a validation set leaked into training,
caught by content where the byte-identity check (:func:`eigenmap.eval.inputs.check_pair`)
cannot see it (the same images prepared again, at another JPEG quality or size).

Each image of the second set is matched to its nearest image of the first
(:func:`eigenmap.eval.knn.near_duplicates`), by the pixel signatures extracted with the arrays
(:func:`eigenmap.eval.features.thumbnails`) when both sets have them, else by the arrays
themselves (folders of anyone's arrays have no images). Measured on Imagenette at 64 px: copies
re-encoded at JPEG quality 80 matched at cosine >= 0.994 (99% above 0.9967), other images of the
dataset at <= 0.93. Real datasets hold some near-identical images of their own (2.2% of
Fashion-MNIST's test images match a training image at >= 0.995: plain garments alike in every
pixel), so a leak is a SHARE of the set: at least :data:`LEAK_SHARE` of it duplicated. Below
that the count is reported, not refused.
"""

from __future__ import annotations

from eigenmap.eval.features import FeatureSet
from eigenmap.eval.knn import near_duplicates

__all__ = ["set_overlap", "overlap_sentence", "THUMBNAIL_MIN_COSINE", "ARRAY_MIN_COSINE", "LEAK_SHARE"]

THUMBNAIL_MIN_COSINE = 0.995  # pixel signatures: a re-encoded copy of an image
ARRAY_MIN_COSINE = 0.999  # model arrays (no images at hand): a trained encoder's copy of an image
LEAK_SHARE = 0.10  # the share of a set duplicated in the other from which it is taken for a leak


def set_overlap(first: FeatureSet, second: FeatureSet) -> dict:
    """The images of ``second`` that are near-duplicates of images of ``first``.

    Returns:
        :func:`~eigenmap.eval.knn.near_duplicates`' figures (``count``, ``queries``, ``share``,
        ``examples`` with row indices in dataset order: ``query`` of ``second``, ``database``
        of ``first``), plus ``by`` (what was compared) and ``leak`` (``share >= LEAK_SHARE``).
    """
    if first.thumbnails is not None and second.thumbnails is not None:
        found = near_duplicates(first.thumbnails, second.thumbnails, min_cosine=THUMBNAIL_MIN_COSINE)
        found["by"] = "thumbnails: 16 x 16 grey pixel signatures"
    else:
        name = "features" if first.features is not None and second.features is not None else "codes"
        found = near_duplicates(getattr(first, name), getattr(second, name), min_cosine=ARRAY_MIN_COSINE)
        found["by"] = f"{name}: the arrays (these sets have no pixel signatures)"
    found["leak"] = found["share"] >= LEAK_SHARE
    return found


def overlap_sentence(found: dict, first: str, second: str) -> str:
    """E.g. "3,929 of 3,929 --val images (100.0%) are near-duplicates of --train images (cosine >=
    0.995 by thumbnails...); closest: --val row 12 ~ --train row 40 (0.99991), ..."."""
    pairs = ", ".join(f"{second} row {e['query']} ~ {first} row {e['database']} ({e['cosine']:.5f})"
                      for e in found["examples"])
    return (f"{found['count']:,} of {found['queries']:,} {second} images ({100 * found['share']:.1f}%) are "
            f"near-duplicates of {first} images (cosine >= {found['min_cosine']} by {found['by']})"
            + (f"; closest: {pairs}" if pairs else ""))
