"""Encoders, projector, L2-BatchNorm and the assembled model."""

from eigenmap.models.backbone import ARCHS, build_backbone
from eigenmap.models.eigenmap_model import EigenmapModel, build_model
from eigenmap.models.l2bn import L2BatchNorm, batch_statistics, l2_batchnorm
from eigenmap.models.projector import build_projector

__all__ = ["ARCHS", "build_backbone", "build_projector", "L2BatchNorm", "l2_batchnorm",
           "batch_statistics", "EigenmapModel", "build_model"]
