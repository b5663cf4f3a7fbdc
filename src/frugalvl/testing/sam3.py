"""Random-weight SAM 3 models for tests and timings: no download possible or needed.

Built with transformers' ``Sam3Model`` from a small config (or the real one for GPU timings) and a
letter tokenizer, wrapped in the same :class:`~frugalvl.models.sam3.Sam3Bundle` the loader returns.
"""

from __future__ import annotations

import torch

from ..models.sam3 import Sam3Bundle


def _tiny_config_kwargs(hidden: int, image_size: int, vit_layers: int, queries: int) -> dict:
    """Sub-configs in the spirit of transformers' own SAM 3 tests
    (docs/methods/segearth_ov3.md#tiny-models-for-tests): every width ``hidden``, 2-head attention, 1-layer DETR
    encoder/decoder, the full 4-scale neck and 3-stage pixel decoder."""
    grid = image_size // 14
    return dict(
        vision_config=dict(
            backbone_config=dict(
                model_type="sam3_vit_model",
                hidden_size=hidden,
                intermediate_size=2 * hidden,
                num_hidden_layers=vit_layers,
                num_attention_heads=2,
                image_size=image_size,
                patch_size=14,
                window_size=8,
                global_attn_indexes=[vit_layers - 1],
                pretrain_image_size=image_size,
            ),
            fpn_hidden_size=hidden,
            backbone_feature_sizes=[[4 * grid] * 2, [2 * grid] * 2, [grid] * 2],
            scale_factors=[4.0, 2.0, 1.0, 0.5],
        ),
        text_config=dict(
            vocab_size=1000,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            projection_dim=hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=32,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),  # the letter tokenizer's ids
        geometry_encoder_config=dict(
            hidden_size=hidden, num_layers=1, num_attention_heads=2, intermediate_size=2 * hidden
        ),
        detr_encoder_config=dict(hidden_size=hidden, num_layers=1, num_attention_heads=2, intermediate_size=2 * hidden),
        detr_decoder_config=dict(
            hidden_size=hidden, num_layers=1, num_queries=queries, num_attention_heads=2, intermediate_size=2 * hidden
        ),
        mask_decoder_config=dict(hidden_size=hidden, num_upsampling_stages=3, num_attention_heads=2),
    )


def _letter_tokenizer():
    """A CLIP tokenizer over single letters (ids < 60): enough to tell prompts apart in tests. Prompts
    are padded to 32 tokens like the real one, so timings do not depend on it."""
    from transformers import CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    vocab.update({c: len(vocab) for c in letters})
    vocab.update({c + "</w>": len(vocab) for c in letters})
    return CLIPTokenizer(vocab=vocab, merges=[])


def random_sam3(
    size: str = "tiny", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> Sam3Bundle:
    """A SAM 3 with seeded random weights: ``tiny`` (112 px input, width 32, 5 queries; tests),
    ``small`` (448 px, width 64, 50 queries; CPU timings) or ``full`` (the real dimensions, ``Sam3Config()``:
    1008 px, 840M parameters, 200 queries; GPU timings). Outputs are meaningless; shapes and costs are real."""
    from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

    if size == "full":
        config, image_size = Sam3Config(), 1008
    elif size in ("tiny", "small"):
        image_size = 112 if size == "tiny" else 448
        config = Sam3Config(
            **_tiny_config_kwargs(
                hidden=32 if size == "tiny" else 64,
                image_size=image_size,
                vit_layers=2,
                queries=5 if size == "tiny" else 50,
            )
        )
    else:
        raise ValueError(f"unknown random SAM 3 size {size!r}: tiny, small or full")
    torch.manual_seed(seed)
    with torch.device(device):  # initialise in place: a full model on the GPU takes seconds, not a minute
        model = Sam3Model(config)
    model = model.to(dtype).eval()
    processor = Sam3Processor(
        image_processor=Sam3ImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=_letter_tokenizer(),
    )
    return Sam3Bundle(model=model, processor=processor, source=f"random-{size}")
