"""Resumable training checkpoints and the Ctrl-C handling that keeps them consistent.

A checkpoint (``step_NNNNNNN.ckpt``, every ``checkpoint_every`` steps and at the end) holds everything a run needs
to continue bit for bit: the four trained modules, the optimiser, the step, every random state and the position in
the image stream, plus a ``frugalvl`` record of the settings it was trained with. In a data-parallel run the main
process writes them, with the stream position of every process (``positions``), and every process reads them back to
resume. Its ``state_dict`` is laid out as the official Lightning files (``upsampler.*`` etc.,
docs/methods/simfeatup.md#checkpoint-layouts), so ``frugalvl segment --upsampler`` reads any of them. They hold
plain data only and are read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from ..errors import UserError
from ..fileio import atomic_path
from ..settings import FieldError
from .distributed import Ranks
from .images import ImageStream, StreamPosition
from .settings import RESUMABLE_CHANGES, UpsamplerTrainSettings
from .trainer import UpsamplerTrainer

KIND = "simfeatup-train"
_CKPT = re.compile(r"^step_(\d+)\.ckpt$")


def default_checkpoint_dir(output: Path) -> Path:
    """``OUTPUT_train`` beside the output file."""
    return output.parent / f"{output.stem}_train"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Resumable checkpoints in a folder, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT.match(p.name))]
    return sorted(found)


def images_digest(paths: Sequence[Path]) -> str:
    """A digest of the image list (names and order), to notice a changed list on resumption."""
    h = hashlib.sha1()
    for p in paths:
        h.update(str(p).encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()


def read_train_checkpoint(path: Path) -> dict[str, Any]:
    """A resumable checkpoint, read with weights only; one :class:`UserError` line if unreadable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise UserError(
            f"cannot read the training checkpoint {path} ({type(exc).__name__}): "
            "delete it to resume from an earlier one"
        ) from None


def check_resumable(saved: dict[str, Any], settings: UpsamplerTrainSettings, dim: int, path: Path) -> None:
    """Refuse to resume a run whose learning settings or feature width differ from this one's."""
    mine = asdict(settings)
    for name, value in saved["settings"].items():
        if name in mine and name not in RESUMABLE_CHANGES and mine[name] != value:
            raise FieldError(
                "checkpoint_dir",
                f"{path} was trained with {name}={value!r}, this run asks {mine[name]!r}: "
                "resume with the same options, or start over in another {checkpoint_dir}",
            )
    if saved["feat_dim"] != dim:
        raise FieldError(
            "clip",
            f"{path} was trained for {saved['feat_dim']}-d CLIP features but this CLIP gives {dim}-d ones: "
            "resume with the same {clip}",
        )


class RunCheckpoints:
    """Bookkeeping of one invocation: checkpoint folder, stream position, skipped images, log."""

    def __init__(
        self,
        trainer: UpsamplerTrainer,
        stream: ImageStream,
        folder: Path,
        clip_identity: str,
        ranks: Ranks | None = None,
    ) -> None:
        self.trainer, self.stream, self.folder = trainer, stream, folder
        self.clip_identity = clip_identity
        self.ranks = ranks or Ranks()
        self.position = StreamPosition()
        self.positions = [self.position]  # every process's, as of the last save or restore
        self.crops_seen = 0

    def meta(self) -> dict[str, Any]:
        """The ``frugalvl`` record saved with each checkpoint and with the final upsampler."""
        t = self.trainer
        return {
            "kind": KIND,
            "settings": asdict(t.settings),
            "clip": self.clip_identity,
            "feat_dim": t.dim,
            "patch_size": t.clip.patch_size,
            "images": {"count": len(self.stream.paths), "digest": images_digest(self.stream.paths)},
            "position": {"epoch": self.position.epoch, "cursor": self.position.cursor},
            **self._positions_record(),
            "skipped": dict(self.stream.skipped),
            "crops_seen": self.crops_seen,
        }

    def _positions_record(self) -> dict[str, Any]:
        if self.ranks.world == 1:
            return {}
        return {"positions": [{"epoch": p.epoch, "cursor": p.cursor} for p in self.positions]}

    def share(self) -> None:
        """Collect every process's stream position and skipped images (all processes must call this)."""
        if self.ranks.world == 1:
            self.positions = [self.position]
            return
        shared = self.ranks.gather(((self.position.epoch, self.position.cursor), dict(self.stream.skipped)))
        self.positions = [StreamPosition(*pos) for pos, _ in shared]
        for _, skipped in shared:
            self.stream.skipped.update(skipped)

    def save(self) -> Path | None:
        """Write ``step_N.ckpt`` atomically and drop the oldest beyond ``keep_checkpoints``; every
        process must call this, the main one writes (the others return None)."""
        self.share()
        if not self.ranks.is_main:
            return None
        t = self.trainer
        path = self.folder / f"step_{t.step:07d}.ckpt"
        with atomic_path(path) as tmp:
            torch.save({**t.state(), "frugalvl": self.meta()}, tmp)
        keep = t.settings.keep_checkpoints
        if keep > 0:
            for _, old in list_checkpoints(self.folder)[:-keep]:
                old.unlink(missing_ok=True)
        return path

    def restore(self, path: Path, note: Callable[[str], None]) -> None:
        """Continue from ``path``: modules, optimiser, random states, stream position, counters."""
        ckpt = read_train_checkpoint(path)
        meta = ckpt.get("frugalvl") or {}
        if meta.get("kind") != KIND:
            raise FieldError(
                "checkpoint_dir",
                f"{path} is not a frugalvl train-upsampler checkpoint: remove it or choose another {{checkpoint_dir}}",
            )
        check_resumable(meta, self.trainer.settings, self.trainer.dim, path)
        if meta["clip"] != self.clip_identity:
            note(f"note: {path} was trained with CLIP {meta['clip']}, this run loads {self.clip_identity}")
        self.trainer.load_state(ckpt)
        self.position = self._my_position(meta, path, note)
        self.stream.skipped.update(meta["skipped"])
        self.crops_seen = int(meta["crops_seen"])
        saved = meta["images"]
        if saved["digest"] != images_digest(self.stream.paths):
            note(
                f"note: the image list changed since {path} ({saved['count']} → {len(self.stream.paths)} images): "
                "training continues, but the crops differ from an uninterrupted run"
            )

    def _my_position(self, meta: dict[str, Any], path: Path, note: Callable[[str], None]) -> StreamPosition:
        """This process's position; a run resumed with another number of processes continues from
        the earliest saved position (a few crops may be seen twice)."""
        saved = [StreamPosition(**p) for p in meta.get("positions", [meta["position"]])]
        self.positions = saved
        if len(saved) == self.ranks.world:
            return saved[self.ranks.index]
        if len(saved) > 1 or self.ranks.world > 1:
            note(
                f"note: {path} was saved by {len(saved)} process(es), this run has {self.ranks.world}: "
                "the image stream continues from the earliest saved position"
            )
        return min(saved, key=lambda p: (p.epoch, p.cursor))

    def log(self, losses: dict[str, float], seconds: float) -> None:
        """Append one line to ``log.jsonl`` in the checkpoint folder."""
        line = {"step": self.trainer.step, **{k: round(v, 6) for k, v in losses.items()}, "seconds": round(seconds, 3)}
        with open(self.folder / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


class StopOnInterrupt:
    """Turn the first Ctrl-C into a request honoured between steps (so the checkpoint written then
    is consistent); a second Ctrl-C interrupts at once. Only the main thread can install it."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def is_trained_upsampler(path: str | Path) -> bool:
    """Whether ``path`` is an upsampler this trainer wrote (its ``frugalvl`` record says so): an output
    that a new training may replace (docs/reliability.md#no-command-overwrites-a-file-it-did-not-make)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False
    record = ckpt.get("frugalvl") if isinstance(ckpt, dict) else None
    return isinstance(record, dict) and record.get("kind") == KIND
