"""A five-minute first try of CoIDO: a small real data set and tiny random models, all written here.

``frugalvl select demo FOLDER`` (:func:`run_tour`) writes

* ``data/easyvqa_llava.json``: the easy-VQA shapes (MIT, the ``easy-vqa`` package: 64×64 images of
  coloured shapes with questions) as LLaVA-format samples, ``dataset`` set from the question type
  (color / shape / yesno) so that the per-source quotas have something to do, two samples per image
  (one single-turn, one two-turn) and a few text-only samples (:func:`write_easyvqa_llava`);
* ``models/tiny-clip.pt``: a tiny random CLIP in OpenAI's checkpoint layout
  (:func:`frugalvl.models.tiny.write_tiny_openai_clip`);
* ``models/tiny-llava/``: a tiny random LLaVA folder with an offline word-level tokenizer
  (:func:`build_tiny_llava`; vision: CLIP, 32 px, patch 8, 16 image tokens; text: LLaMA, hidden 48, 2 layers);

then runs every stage (prepare, features, cluster, train, score, pick) and writes the report. The
models are random, so the picks mean nothing; what the tour shows is the stages, their files and
their report, on a laptop CPU, before the real run (LLaVA-665K with a 7B model) on a GPU machine.
The same builders serve the tests (:mod:`frugalvl.testing` re-exports them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from .prompting import VICUNA_SYSTEM

log = logging.getLogger(__name__)


# -- the data: easy-VQA as LLaVA samples ----------------------------------------------------------

COLORS = {"red", "green", "blue", "black", "gray", "teal", "brown", "yellow"}


def question_type(answer: str) -> str:
    return "yesno" if answer in ("yes", "no") else "color" if answer in COLORS else "shape"


TEXT_ONLY = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Write a haiku about rain.", "Soft rain on the roof / the garden drinks in silence / clouds drift to the east"),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("Translate 'good morning' into Spanish.", "Buenos días."),
    ("What is 12 times 7?", "12 times 7 is 84."),
    ("Name three primary colours.", "Red, yellow and blue."),
    ("Explain what a triangle is.", "A triangle is a polygon with three sides and three angles."),
    ("Give a synonym of 'quick'.", "Fast."),
    ("Which planet is known as the red planet?", "Mars."),
    ("What does a thermometer measure?", "Temperature."),
]


def easyvqa_records(n_images: int = 70, n_text: int = 10) -> tuple[list[dict], Path]:
    """LLaVA records (two samples per image: one single-turn, one two-turn) and the image root."""
    try:
        import easy_vqa
    except ImportError:
        raise UserError(
            "the tour's data comes from the easy-vqa package: install it with pip install easy-vqa==1.0"
        ) from None

    questions, answers, image_ids = easy_vqa.get_train_questions()
    paths = easy_vqa.get_train_image_paths()
    root = Path(paths[0]).parents[2]  # .../easy_vqa/data; images under train/images/
    by_image: dict[int, list[tuple[str, str]]] = {}
    for q, a, i in zip(questions, answers, image_ids):
        by_image.setdefault(int(i), []).append((q, a))
    records: list[dict] = []
    for image_id in sorted(by_image)[:n_images]:
        qa = by_image[image_id]
        image = str(Path(paths[image_id]).relative_to(root))
        for turns in (qa[:1], qa[1:3]):
            if not turns:
                continue
            conv = []
            for j, (q, a) in enumerate(turns):
                conv += [{"from": "human", "value": ("<image>\n" if j == 0 else "") + q}, {"from": "gpt", "value": a}]
            records.append(
                {
                    "id": f"evqa-{image_id}-{len(records)}",
                    "image": image,
                    "conversations": conv,
                    "dataset": question_type(turns[0][1]),
                }
            )
    for j, (q, a) in enumerate(TEXT_ONLY[:n_text]):
        records.insert(
            7 * j + 3,
            {"id": f"text-{j}", "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]},
        )
    return records, root


def write_easyvqa_llava(folder: str | Path, n_images: int = 70, n_text: int = 10) -> tuple[Path, Path]:
    """Write the records as ``folder/easyvqa_llava.json``; return (json path, image root)."""
    records, root = easyvqa_records(n_images, n_text)
    path = Path(folder) / "easyvqa_llava.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=1))
    return path, root


# -- a tiny random LLaVA ---------------------------------------------------------------------------

SPECIALS = ["<unk>", "<pad>", "<s>", "</s>", "<image>"]
WORDS = (
    "what colour shape is the is it a in image picture yes no red green blue black white gray "
    "yellow teal brown circle rectangle triangle there how many tell me about story one two three "
    "USER ASSISTANT : ? . ,"
)
IMAGE_SIZE, PATCH = 32, 8


def build_tokenizer(corpus: list[str]) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` trained on ``corpus`` (offline), with LLaVA's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

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
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

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


# -- the tour --------------------------------------------------------------------------------------

N_IMAGES = 70  # 140 image samples + 10 text-only: 150 samples, a 30-sample subset
TOUR_CLUSTERS = 4  # K for the tour's 30-sample subset (the default 20 wants |S| >= 40)


@dataclass(frozen=True)
class TourFiles:
    """What the tour wrote: the data, its image root, the two tiny models, the work folder and outputs."""

    data: Path
    image_root: Path
    clip: Path
    mllm: Path
    work: Path
    selection: Path
    report: Path


def write_tour_inputs(folder: str | Path, n_images: int | None = None) -> tuple[Path, Path, Path, Path]:
    """The data and the two tiny models under ``folder``: (data JSON, image root, CLIP file, LLaVA folder);
    each kept when already there."""
    from ..models.tiny import write_tiny_openai_clip

    folder = Path(folder)
    data = folder / "data" / "easyvqa_llava.json"
    if data.is_file():
        root = easyvqa_records(0, 0)[1]
    else:
        log.info("writing the easy-VQA sample as LLaVA data: %s", data)
        data, root = write_easyvqa_llava(folder / "data", n_images or N_IMAGES)
    clip = folder / "models" / "tiny-clip.pt"
    if not clip.is_file():
        log.info("writing a tiny random CLIP: %s", clip)
        write_tiny_openai_clip(clip, image_size=32, patch_size=8, width=64)
    mllm = folder / "models" / "tiny-llava"
    if not (mllm / "config.json").is_file():
        log.info("writing a tiny random LLaVA: %s", mllm)
        texts = [t["value"] for r in json.loads(data.read_text()) for t in r["conversations"]]
        build_tiny_llava(mllm, extra_text=texts)
    return data, root, clip, mllm


def tour_settings(clip: Path, mllm: Path) -> dict[str, Any]:
    """The stages' settings for the tour: the defaults, but the tiny models, K = 4 clusters, 8 samples per
    training batch and no loader processes (what the printed ``frugalvl select run`` line gives)."""
    from .settings import ClusterSettings, FeatureSettings, PickSettings, PrepareSettings
    from .train_settings import TrainSettings

    return {
        "prepare_settings": PrepareSettings(),
        "feature_settings": FeatureSettings(clip=str(clip)),
        "cluster_settings": ClusterSettings(n_clusters=TOUR_CLUSTERS),
        "train_settings": TrainSettings(mllm=str(mllm), batch_size=8, num_workers=0),
        "pick_settings": PickSettings(),
    }


def run_tour(folder: str | Path, n_images: int | None = None) -> TourFiles:
    """Write the inputs, run every stage into ``folder/work``, pick into ``folder/selected.json`` and
    write ``folder/work/report.html``; a second call reuses what is done."""
    from ..fileio import check_folder_output, output_lock, remove_stale_temporaries
    from .pipeline import run
    from .report import write_report

    folder = Path(folder)
    own = [folder / "data" / "easyvqa_llava.json", folder / "models" / "tiny-clip.pt", folder / "work"]
    try:
        check_folder_output(folder, (), own, field="folder", can_overwrite=False)  # never someone else's folder
    except UserError as exc:
        raise UserError(str(exc)) from None  # "folder ...": the argument's name, in Python and on the command line
    with output_lock(folder):
        remove_stale_temporaries(folder, recursive=True)  # a killed tour's
        data, root, clip, mllm = write_tour_inputs(folder, n_images)
        settings = tour_settings(clip, mllm)
        prepare = settings["prepare_settings"]
        settings["prepare_settings"] = type(prepare)(image_root=str(root))
        work, selection = folder / "work", folder / "selected.json"
        run(data, work, selection, **settings)
        report = write_report(work)
    return TourFiles(data, root, clip, mllm, work, selection, report)
