"""SimFeatUp training: learn a JBU upsampler for any ViT CLIP from unlabeled images.

Read next to docs/methods/simfeatup.md#training (the official recipe, likyoo/SimFeatUp) and
docs/methods/simfeatup.md#checkpoint-layouts. One module per part of the recipe:

========================  ===========================================================================
module                    part of the recipe
========================  ===========================================================================
:mod:`.settings`          the recipe's numbers (batch 4, 224 crops, 5 jitters, NAdam 1e-3, γ = 0.1,
                          grad-norm clip 1e-4 for 10 steps, checkpoint every 100 steps) and their checks
:mod:`.images`            the data: image lists and an endless, resumable stream of random 224 crops
:mod:`.featurizer`        the frozen CLIP ``xclip`` (last ViT block skipped), ImageNet normalisation
:mod:`.jitter`            the 5 random views: reflect-pad 20, zoom in [1, 2] (p 0.5), crop, h-flip (p 0.5)
:mod:`.downsampler`       the learned attention downsampler of the low-resolution path
:mod:`.losses`            ``L_rec`` (predicted-scale Gaussian likelihood after a random D→30
                          projection) and ``L_img`` (the "CRN" image decoder)
:mod:`.trainer`           one optimisation step over upsampler, downsampler, scale net and decoder
:mod:`.checkpoints`       resumable checkpoints (Lightning-like layout) and Ctrl-C handling
:mod:`.loop`              :func:`train_upsampler`: the run, from images to the final upsampler file
:mod:`.distributed`       data parallel over processes/GPUs/nodes (``accelerate launch``, ``torchrun``)
========================  ===========================================================================

The upsampler modules themselves are :mod:`frugalvl.models.jbu`; checkpoints are read and written
with :mod:`frugalvl.models.upsampler`. :mod:`.settings` imports no torch.
"""

from __future__ import annotations

from ..lazy import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "UpsamplerTrainSettings": "settings",
        "train_upsampler": "loop",
        "TrainSummary": "loop",
        "UpsamplerTrainer": "trainer",
        "list_training_images": "images",
    },
)
