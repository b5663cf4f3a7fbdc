"""CoIDO data selection for visual instruction tuning (spec/coido.md).

Python API, one function per stage over a work folder (see the README, "Data selection for visual instruction tuning")::

    from frugalvl.select import pipeline
    pipeline.prepare("llava_v1_5_mix665k.json", "work", PrepareSettings(image_root="data"))
    pipeline.features("work", FeatureSettings(clip="ViT-L-14", device="cuda"))
    pipeline.cluster("work")                  # random 20% subset S + spectral clusters
    pipeline.train("work", train_settings)   # frugalvl.select.trainer
    pipeline.score("work")
    pipeline.pick("work", "coido_20.json", PickSettings(ratio=0.2))
"""

from .clustering import ClusterSettings
from .data import PrepareSettings
from .features import EndpointSettings, FeatureSettings
from .ranking import PickSettings

__all__ = ["ClusterSettings", "EndpointSettings", "FeatureSettings", "PickSettings", "PrepareSettings"]
