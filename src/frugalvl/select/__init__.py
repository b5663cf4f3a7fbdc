"""CoIDO data selection for visual instruction tuning (docs/methods/coido.md).

Python API, one function per stage over a work folder (see the README, "Data selection for visual instruction tuning")::

    from frugalvl.select import pipeline
    pipeline.prepare("llava_v1_5_mix665k.json", "work", PrepareSettings(image_root="data"))
    pipeline.features("work", FeatureSettings(clip="ViT-L-14", device="cuda"))
    pipeline.cluster("work")                  # random 20% subset S + spectral clusters
    pipeline.train("work", TrainSettings(mllm="llava-hf/llava-1.5-7b-hf"))   # frugalvl.select.trainer
    pipeline.score("work")
    pipeline.pick("work", "coido_20.json", PickSettings(ratio=0.2))

Module map: data (LLaVA JSON, sample and image checks), workdir (reading the work folder, stage
bookkeeping), features, clustering, prompting / batching / mllm / checkpoints / trainer (stage 4),
scorer, ranking, pipeline (the stages). The settings are imported lazily, so that naming one does
not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClusterSettings": "clustering",
    "PrepareSettings": "data",
    "EndpointSettings": "features",
    "FeatureSettings": "features",
    "PickSettings": "ranking",
    "TrainSettings": "train_settings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
