"""A tiny random LLaVA saved as a model folder, built offline (docs/methods/coido.md#tiny-models-for-tests).

Vision: CLIP, 32 px, patch 8, hidden 32, 2 layers -> 16 image tokens ('default' drops CLS).
Text: LLaMA, hidden 48, 2 layers, with a WordLevel tokenizer trained here on the words the tests use.
The folder holds what :func:`frugalvl.models.llava.load_llava` reads: config + weights, the tokenizer
(with ``<image>``, ``<pad>``, ``<s>``, ``</s>``) and a CLIP image processor.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
)

from frugalvl.select.prompting import VICUNA_SYSTEM

SPECIALS = ["<unk>", "<pad>", "<s>", "</s>", "<image>"]
WORDS = (
    "what colour shape is the is it a in image picture yes no red green blue black white gray "
    "yellow teal brown circle rectangle triangle there how many tell me about story one two three "
    "USER ASSISTANT : ? . ,"
)
IMAGE_SIZE, PATCH = 32, 8


def build_tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=SPECIALS, min_frequency=1))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )


def build_tiny_llava(
    folder: Path,
    extra_text: Sequence[str] = (),
    seed: int = 0,
    text_hidden: int = 48,
    text_layers: int = 2,
    vision_hidden: int = 32,
    image_size: int = IMAGE_SIZE,
    patch: int = PATCH,
) -> Path:
    """Write a tiny random LLaVA folder and return it (larger sizes serve the benchmarks)."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer([VICUNA_SYSTEM, WORDS, *extra_text])
    vision = CLIPVisionConfig(
        image_size=image_size,
        patch_size=patch,
        hidden_size=vision_hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=vision_hidden * 3 // 2,
        projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=text_hidden,
        num_hidden_layers=text_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=text_hidden * 4 // 3,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(image_size // patch) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    model = LlavaForConditionalGeneration(config)
    processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
