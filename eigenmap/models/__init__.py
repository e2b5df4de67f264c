"""Encoders, projector and the assembled model (backbone -> projector -> objective).

Models import ``eigenmap.losses`` (the model holds its objective); losses never import models.
"""

from eigenmap.models.backbone import ARCHS, build_backbone
from eigenmap.models.eigenmap_model import EigenmapModel, build_model
from eigenmap.models.online_head import OnlineHead
from eigenmap.models.projector import build_projector

__all__ = ["ARCHS", "build_backbone", "build_projector", "EigenmapModel", "build_model", "OnlineHead"]
