"""Open-vocabulary labels for point clouds from photos: segment each photo, project the points, vote.

``label_cloud`` runs it all (docs/methods/segearth_ov3_3d.md); ``read_block`` reads a ContextCapture /
iTwin camera block, ``project`` is the official projection, ``Votes`` and ``DepthBuffer`` the voting.
"""

from __future__ import annotations

from .cameras import Camera, Photogroup, read_block, select_cameras
from .pipeline import Label3DResult, label_cloud
from .projection import Projection, project
from .settings import Label3DSettings
from .votes import DepthBuffer, Votes

__all__ = [
    "Camera",
    "DepthBuffer",
    "Label3DResult",
    "Label3DSettings",
    "Photogroup",
    "Projection",
    "Votes",
    "label_cloud",
    "project",
    "read_block",
    "select_cameras",
]
