"""The training subset as micro-batches for the coupled model (docs/methods/coido.md#training-settings, LLaVA's data
pipeline).

:func:`plan_batches` fixes which samples share a micro-batch (the softmax of the scorer runs over
one), as a function of the seed and the epoch only, so a resumed run sees the same batches;
:class:`MicroBatches` turns one planned micro-batch into tensors (images, prompts, labels, scorer inputs).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from ..settings import FieldError
from .formats.images import open_image
from .losses import IGNORE_INDEX
from .prompting import IMAGE_TAG, has_image, tokenize_sample
from .workdir import Subset

log = logging.getLogger(__name__)


def load_pixels(path: str, image_processor, aspect: str) -> torch.Tensor:
    """One image as the processor's pixel tensor; 'pad' squares it with the mean colour first."""
    from PIL import Image

    with open_image(path) as im:  # a file, or bytes inside the input
        image = im.convert("RGB")
    if aspect == "pad" and image.width != image.height:
        mean = getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
        side = max(image.size)
        canvas = Image.new("RGB", (side, side), tuple(int(255 * m) for m in mean))
        canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        image = canvas
    return image_processor(images=image, return_tensors="pt")["pixel_values"][0]


@dataclass
class Batch:
    """One micro-batch, ready for the coupled model."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    labels: torch.Tensor  # [B, T]
    pixel_values: torch.Tensor | None  # [n_images, 3, H, W], image samples only, in order
    features: torch.Tensor  # [B, D + n_scores]
    clusters: torch.Tensor  # [B]
    unique_idx: torch.Tensor  # [B]

    def to(self, device) -> Batch:
        return Batch(**{f.name: _to(getattr(self, f.name), device) for f in fields(self)})


def _to(tensor: Any, device: Any) -> Any:
    return None if tensor is None else tensor.to(device)


class MicroBatches(torch.utils.data.Dataset):
    """Item j = this process's micro-batch in global batch j of a plan (see :func:`plan_batches`)."""

    def __init__(
        self,
        subset: Subset,
        plan: list[list[int]],
        tokenizer,
        image_processor,
        image_seq_length: int,
        image_token: str,
        pad_id: int,
        max_length: int,
        image_aspect_ratio: str,
    ):
        self.subset, self.plan, self.tokenizer, self.image_processor = subset, plan, tokenizer, image_processor
        self.image_tokens = image_token * image_seq_length
        self.image_seq_length, self.pad_id = image_seq_length, pad_id
        self.max_length, self.aspect = max_length, image_aspect_ratio

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, j: int) -> Batch:
        rows, pixels = [], []
        for k in self.plan[j]:
            sample = self.subset.samples[k]
            image = has_image(sample)
            n_images = len(sample.get("image_paths") or [1]) if image else 0  # every image of a sample is fed
            if image:
                try:
                    sources = sample.get("image_paths") or [sample["image_path"]]
                    loaded = [load_pixels(p, self.image_processor, self.aspect) for p in sources]
                    pixels.extend(loaded)  # all or none of a sample's images
                except (OSError, ValueError):
                    # The official reader skips an unreadable image; prepare should have caught it.
                    log.warning("skipping sample %s: cannot read %s", sample.get("unique_idx"), sample["image_path"])
                    continue
            image_tokens = "\n".join([self.image_tokens] * n_images) if image else None
            ids, labels = tokenize_sample(self.tokenizer, sample["conversations"], image_tokens, self.max_length)
            if image and ids.count(self.tokenizer.convert_tokens_to_ids(IMAGE_TAG)) != self.image_seq_length * n_images:
                raise FieldError(
                    "max_length",
                    f"{self.max_length} cuts into the image tokens of sample "
                    f"{sample.get('unique_idx')}: raise it above {self.image_seq_length}",
                )
            rows.append((k, ids, labels))
        return self._collate(rows, pixels)

    def _collate(self, rows, pixels) -> Batch:
        width = max(len(ids) for _, ids, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, (_, ids, lab) in enumerate(rows):  # right padding, as LLaVA's collator
            input_ids[b, : len(ids)], labels[b, : len(lab)], mask[b, : len(ids)] = (
                torch.tensor(ids),
                torch.tensor(lab),
                1,
            )
        ks = [k for k, _, _ in rows]
        return Batch(
            input_ids,
            mask,
            labels,
            torch.stack(pixels) if pixels else None,
            torch.from_numpy(self.subset.features[ks]),
            torch.from_numpy(self.subset.clusters[ks]),
            torch.tensor([int(self.subset.samples[k]["unique_idx"]) for k in ks]),
        )


def plan_batches(
    lengths: Sequence[int], batch_size: int, world: int, seed: int, epoch: int, group_by_modality: bool
) -> list[list[list[int]]]:
    """Global batches for one epoch: each a list of ``world`` micro-batches of subset positions.

    As LLaVA's modality-length grouping: samples are shuffled within each modality, cut into
    megabatches of ``world × batch_size``, sorted by length inside a megabatch and dealt to the
    devices; megabatches are then shuffled. Unlike LLaVA, the two modalities' remainders are not
    merged into one mixed batch, so every softmax and L_D compares same-modality samples. A remainder
    smaller than ``world`` cannot give every device a sample and is dropped.
    """
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    lengths = list(lengths)
    everything = list(range(len(lengths)))
    groups = (
        [[i for i in everything if lengths[i] > 0], [i for i in everything if lengths[i] < 0]]
        if group_by_modality
        else [everything]
    )
    megabatches = []
    size = batch_size * world
    for group in groups:
        order = [group[i] for i in torch.randperm(len(group), generator=g).tolist()]
        for start in range(0, len(order), size):
            mega = sorted(order[start : start + size], key=lambda i: abs(lengths[i]), reverse=True)
            if len(mega) >= world:
                megabatches.append([mega[d::world] for d in range(world)])
    return [megabatches[i] for i in torch.randperm(len(megabatches), generator=g).tolist()]


def micro_batches(
    subset: Subset, plan: list[list[int]], llava: Any, max_length: int, image_aspect_ratio: str
) -> MicroBatches:
    """:class:`MicroBatches` for a loaded LLaVA bundle (models/llava.py)."""
    return MicroBatches(
        subset,
        plan,
        llava.tokenizer,
        llava.image_processor,
        llava.image_seq_length,
        IMAGE_TAG,
        llava.pad_token_id,
        max_length,
        image_aspect_ratio,
    )


def iterate_batches(
    subset: Subset,
    plans: list[list[list[list[int]]]],
    llava: Any,
    max_length: int,
    image_aspect_ratio: str,
    rank: int,
    num_workers: int,
    done: int,
) -> Iterator[tuple[int, Batch]]:
    """(global batch number, process ``rank``'s micro-batch), from ``done`` on, over all epochs' plans."""
    first = 0
    for plan in plans:
        if done < first + len(plan):
            mine = [mega[rank] for mega in plan[max(0, done - first) :]]
            data = micro_batches(subset, mine, llava, max_length, image_aspect_ratio)
            # own generator: a loader draws a seed when iterated, which must not move the global
            # RNG (dropout), or a resumed run would diverge from the uninterrupted one
            loader = torch.utils.data.DataLoader(
                data,
                batch_size=None,
                shuffle=False,
                collate_fn=_identity,
                num_workers=num_workers,
                worker_init_fn=_ignore_sigint if num_workers else None,
                generator=torch.Generator(),
            )
            yield from enumerate(loader, start=max(first, done))
        first += len(plan)


def _ignore_sigint(_worker: int) -> None:
    """Loader workers leave Ctrl-C to the training loop, which finishes its step and saves it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _identity(batch: Any) -> Any:
    return batch
