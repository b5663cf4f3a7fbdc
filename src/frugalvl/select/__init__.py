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

from ..lazy import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "ClusterSettings": "clustering",
        "PrepareSettings": "data",
        "EndpointSettings": "features",
        "FeatureSettings": "features",
        "PickSettings": "ranking",
        "TrainSettings": "train_settings",
    },
)
