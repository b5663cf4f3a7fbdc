"""Exemplar boxes as SAM 3 geometry prompts for SegEarth-OV3 (docs/methods/exemplars.md#segearth-ov3).

SAM 3's own behaviour: a prompt is text, boxes (each labelled positive or negative), or both; the box
tokens come from its geometry encoder (box coordinates, features pooled inside the box, cross-attention to
the image) and are appended to the text tokens before the fusion encoder. With boxes and no text, its
processor uses the word "visual" as the text.

What frugalvl does with it: in a view (the image, or one sliding-window crop) that holds exemplars of a
class, every prompt of that class is its text followed by the tokens of those boxes, labelled 1 (positive)
or 0 (negative, "not this"); a class named only by exemplars uses "visual" as its text. Views without
exemplars of a class keep its text-only prompt, and an example-only class scores 0 there. The
extension, off by default (``reuse_tokens``): the box tokens encoded on the exemplars' own view are
appended to the class's prompts in every other view too. SAM 3 was not trained for tokens pooled on
another image, so this is a heuristic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ..models.sam3 import VisionFeatures, box_prompt, encode_boxes, encode_image, pixel_values
from ..vocab import Vocabulary
from ..windows import Window
from .exemplars import Exemplars

VISUAL_TEXT = "visual"  # the text Sam3Processor uses for a box-only prompt


@dataclass
class ExemplarPrompts:
    """The exemplars of one image (its pixel frame) as geometry prompts per view."""

    exemplars: Exemplars
    classes: dict[str, int]  # exemplar class name -> class index in the extended vocabulary
    example_only: tuple[int, ...]
    reuse_tokens: bool = False
    reused: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @classmethod
    def build(
        cls, exemplars: Exemplars, vocabulary: Vocabulary, reuse_tokens: bool, run: Exemplars | None = None
    ) -> tuple[ExemplarPrompts, Vocabulary]:
        """The prompts of ``exemplars`` and the extended vocabulary; ``run``: every exemplar of the run
        (several inputs), whose classes extend the vocabulary, so every input has the same classes."""
        run = exemplars if run is None else run
        extended, example_only = run.extend(vocabulary)
        classes = {n: run.class_index(extended, n) for n in run.names}
        return cls(exemplars, classes, example_only, reuse_tokens), extended

    def view_boxes(self, view: Window) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Per class with exemplars in ``view``: boxes ``[n, 4]`` (normalised cx, cy, w, h) and labels ``[n]``."""
        inside = self.exemplars.inside(view.y0, view.y1, view.x0, view.x1)
        out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for name in inside.names:
            items = [e for e in inside.items if e.name == name]
            boxes = [_clip(e.box, view.height, view.width) for e in items]
            labels = torch.tensor([1 if e.positive else 0 for e in items], dtype=torch.long)
            out[self.classes[name]] = (box_prompt(boxes, view.height, view.width), labels)
        return out

    def class_tokens(
        self, model: torch.nn.Module, vision: VisionFeatures, v: int, view: Window
    ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Geometry tokens ``[n + 1, D]`` and mask per class for view ``v`` of ``vision``: its own
        exemplars' boxes, else (``reuse_tokens``) those encoded on the exemplars' view."""
        device = vision.maps[0].device
        out = {}
        one = vision.take(torch.tensor([v], device=device))
        for c, (boxes, labels) in self.view_boxes(view).items():
            feats, mask = encode_boxes(model, one, boxes[None].to(device), labels[None].to(device))
            out[c] = (feats[0], mask[0])
        if self.reuse_tokens:
            for c, tokens in self.reused.items():
                out.setdefault(c, tokens)
        return out

    def prepare_reuse(self, sam3: Any, rgb: np.ndarray, views: Sequence[Window]) -> None:
        """Encode each class's box tokens once, on the first view holding a positive exemplar of it."""
        for c in set(self.classes.values()):
            for view in views:
                boxes = self.view_boxes(view)
                if c in boxes and bool(boxes[c][1].any()):
                    vision = encode_image(sam3.model, pixel_values(sam3, rgb[view.y0 : view.y1, view.x0 : view.x1]))
                    self.reused[c] = self.class_tokens(sam3.model, vision, 0, view)[c]
                    break

    def inside(self, window: Window) -> ExemplarPrompts:
        """The same prompts for a part of the image (a scene tile): the exemplars in its frame."""
        return replace(self, exemplars=self.exemplars.inside(window.y0, window.y1, window.x0, window.x1))

    def identity(self) -> dict:
        return {"exemplars": self.exemplars.identity(), "reuse_tokens": self.reuse_tokens}


def _clip(box: tuple[float, float, float, float], height: int, width: int) -> tuple[float, ...]:
    x0, y0, x1, y1 = box
    return (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))


def prompt_table(
    prompts: ExemplarPrompts,
    model: torch.nn.Module,
    vision: VisionFeatures,
    group: Sequence[Window],
    text: torch.Tensor,
    text_mask: torch.Tensor,
    query_to_class: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per (view, prompt) pair of ``group``, row ``v * Q + q``: the prompt's tokens (text, then its class's
    box tokens in that view), padded at the end with masked zeros; and which pairs to run (an
    example-only class only where it has box tokens)."""
    n_queries = len(query_to_class)
    rows: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    run: list[bool] = []
    for v, view in enumerate(group):
        tokens = prompts.class_tokens(model, vision, v, view)
        for q, c in enumerate(query_to_class):
            if c in tokens:
                feats, mask = tokens[c]
                rows.append(torch.cat([text[q], feats.to(text.dtype)]))
                masks.append(torch.cat([text_mask[q], mask.bool()]))
            else:
                rows.append(text[q])
                masks.append(text_mask[q])
            run.append(c not in prompts.example_only or c in tokens)
    length = max(len(r) for r in rows)
    table = text.new_zeros(len(rows), length, text.shape[-1])
    table_mask = torch.zeros(len(rows), length, dtype=torch.bool, device=text.device)
    for i, (r, m) in enumerate(zip(rows, masks)):
        table[i, : len(r)] = r
        table_mask[i, : len(m)] = m
    assert len(rows) == len(group) * n_queries
    return table, table_mask, torch.tensor(run, device=text.device)
