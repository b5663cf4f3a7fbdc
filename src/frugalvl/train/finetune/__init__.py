"""LoRA instruction tuning of LLaVA-1.5 on a selected subset (docs/methods/coido_finetune.md).

The recipe of LLaVA-1.5's ``finetune_lora.sh`` as the peers use it (COINCIDE: 4/device × 8
accumulation; ICONS: 16/device × 1 on several GPUs): LoRA r = 128, α = 256 (dropout 0.05, every linear
map of the LM's blocks) with lr 2e-4, the ``mlp2x_gelu`` projector trained in full with lr 2e-5, the
CLIP ViT-L/14-336 vision tower frozen, AdamW without weight decay, cosine schedule with 3 % warm-up,
one epoch, an effective batch of 128 (per-device batch × accumulation × processes), Vicuna v1
prompts of at most 2048 tokens, images padded to a square with the mean colour, micro-batches of one
modality (``group_by_modality_length``). Runs on one device, or on several with ``accelerate
launch`` (DDP), optionally under DeepSpeed ZeRO-2/3 with the configs shipped in ``configs/``.

==================  ====================================================================================
module              part
==================  ====================================================================================
:mod:`.settings`    :class:`FinetuneSettings` (the recipe's numbers, their ranges), the result key,
                    accumulation steps; no torch
:mod:`.deepspeed`   DeepSpeed configs with their ``auto`` values filled; the launcher line
:mod:`.data`        the subset (any format) as samples, global batches per epoch, where the optimiser steps
:mod:`.model`       frozen base + LoRA + projector, optimiser groups, schedule
:mod:`.loop`        :func:`finetune`: the run, its checkpoints (:mod:`frugalvl.select.accelerate_state`)
:mod:`.merge`       adapter folded into the base: a plain llava-hf folder with a chat template
==================  ====================================================================================

Output folder::

    OUT/checkpoints/step-N/   trainable weights only (adapter + projector), optimiser, scheduler,
                              each process's RNG state, finetune_state.json (step, batches done, losses)
    OUT/adapter/              PEFT adapter (LoRA + projector) + tokenizer + image processor
    OUT/history.json          loss and learning rates per optimiser step
    OUT/finetune.json         settings, base model, data, steps
    OUT/merged/               with merge: a plain LlavaForConditionalGeneration folder (+ processor)
"""

from __future__ import annotations

from ...lazy import lazy_exports

# ``from frugalvl.train.finetune import FinetuneSettings`` imports no torch.
__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "FinetuneSettings": "settings",
        "finetune": "loop",
        "merge_adapter": "merge",
    },
)
