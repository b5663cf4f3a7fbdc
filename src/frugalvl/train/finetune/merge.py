"""Merging: the LoRA adapter and the trained projector folded into the base weights, written as a
plain ``LlavaForConditionalGeneration`` folder with a processor and a chat template, which
transformers and lmms-eval load as they load any llava-hf model (docs/methods/coido_finetune.md#merge).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from ...errors import UserError

log = logging.getLogger(__name__)

MERGE_DTYPES = ("auto", "fp32", "bf16", "fp16")

# Vicuna v1 (LLaVA-1.5's conversation format) for processors that ship without a template
VICUNA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first %}"
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions. {% endif %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}"
    "{% elif item['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% if message['role'] == 'user' %} {% else %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def base_dtype(mllm: str) -> str:
    """The weight type a base model is stored in (fp32, bf16, fp16)."""
    config = Path(os.path.expanduser(mllm)) / "config.json"
    if config.is_file():
        meta = json.loads(config.read_text())
        name = str(meta.get("dtype") or meta.get("torch_dtype") or "float32")
        return {"float16": "fp16", "bfloat16": "bf16"}.get(name, "fp32")
    return "fp16"  # llava-hf checkpoints on the hub are float16


def merge_adapter(mllm: str, adapter: str | Path, folder: str | Path, dtype: str = "auto") -> Path:
    """Fold the LoRA adapter and the trained projector into the base weights and write a plain
    ``LlavaForConditionalGeneration`` folder (+ processor) that transformers and lmms-eval load.

    The merge runs in fp32 on the CPU; the weights are saved in ``dtype`` (auto = the base's).
    """
    import torch
    from peft import PeftModel

    from ...models.llava import load_llava

    adapter, folder = Path(adapter), Path(folder)
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"{adapter} holds no adapter: run `frugalvl select finetune` first")
    if dtype not in MERGE_DTYPES:
        raise UserError(f"merge dtype {dtype!r}: choose one of {', '.join(MERGE_DTYPES)}")
    dtype = base_dtype(mllm) if dtype == "auto" else dtype
    llava = load_llava(mllm)
    merged = PeftModel.from_pretrained(llava.model, str(adapter)).merge_and_unload()
    merged = merged.to({"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype])
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    save_processor(llava, mllm, tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    log.info("merged model: %s (%s)", folder, dtype)
    return folder


def save_processor(llava: Any, mllm: str, folder: Path) -> None:
    """The base's own LlavaProcessor when it ships one (``processor_config.json``, as llava-hf
    models do); else one built from its tokenizer and image processor. Either way with a chat
    template (Vicuna v1 when the base has none), which lmms-eval's ``llava_hf`` model applies."""
    from transformers import AutoProcessor, LlavaProcessor

    base = Path(os.path.expanduser(mllm))
    processor = None
    if "=" not in mllm and (not base.exists() or (base / "processor_config.json").is_file()):
        try:
            candidate = AutoProcessor.from_pretrained(str(base) if base.exists() else mllm)
            processor = candidate if isinstance(candidate, LlavaProcessor) else None
        except (OSError, ValueError, TypeError):
            processor = None
    if processor is None:
        vision = llava.model.config.vision_config
        strategy = getattr(llava.model.config, "vision_feature_select_strategy", "default")
        processor = LlavaProcessor(
            image_processor=llava.image_processor,
            tokenizer=llava.tokenizer,
            patch_size=vision.patch_size,
            vision_feature_select_strategy=strategy,
            num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the 'default' strategy
        )
    if not getattr(processor, "chat_template", None):
        processor.chat_template = VICUNA_CHAT_TEMPLATE
    processor.save_pretrained(folder)
