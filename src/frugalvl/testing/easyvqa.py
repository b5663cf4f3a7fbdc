"""A small real LLaVA-format dataset from the ``easy-vqa`` package (MIT): 64×64 shape images with
questions, ``dataset`` set from the question type (color / shape / yesno) so that per-source quotas
have something to do, some multi-turn samples, and a few synthetic text-only samples."""

from __future__ import annotations

import json
from pathlib import Path

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
    import easy_vqa

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
