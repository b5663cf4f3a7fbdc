"""The models the methods use unless told otherwise, named once (no heavy import: the command line and
the method registry read these names without loading a loader)."""

from __future__ import annotations

DEFAULT_CLIP = "ViT-B-16"  # the CLIP of the papers (open_clip name; OpenAI weights)
DEFAULT_SAM3 = "facebook/sam3"  # the SAM 3 hub id (gated)
