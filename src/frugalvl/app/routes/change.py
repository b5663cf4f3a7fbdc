"""Change runs: two opened images (any way the page opens one) compared with SegEarth-OV3 change detection;
their status, cancel, the change and from→to map layers and the downloads (docs/app.md#change-between-two-dates)."""

from __future__ import annotations

import dataclasses
import shutil
import typing
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from pydantic import Field, create_model

from ...errors import UserError
from ..change_runs import DEFAULT_PRESET, METHOD, ChangeRun, whole
from ..engine import MAX_TEXT, MAX_VOCABULARY, RunOptions, finite
from ..sessions import new_id
from ..tiles import empty_tile, intersects, png_bytes, tile_bounds, warp_tile
from .common import (
    NotFound,
    TileXY,
    TileZ,
    config_of,
    hub_of,
    image_of,
    map_bounds,
    png,
    preview_level,
    run_status,
    session_of,
    worker_of,
)

router = APIRouter(prefix="/api/change")

Layer = Annotated[str, Field(max_length=20)]


def change_fields() -> dict[str, tuple[Any, Any]]:
    """The change step's settings (:class:`frugalvl.change.settings.ChangeSettings`), typed as there."""
    from ...change.settings import ChangeSettings

    hints = typing.get_type_hints(ChangeSettings)
    return {f.name: (finite(hints[f.name]) | None, None) for f in dataclasses.fields(ChangeSettings)}


def model_fields() -> dict[str, tuple[Any, Any]]:
    from ...segment.methods import method

    return {m.name: (Annotated[str, Field(max_length=MAX_TEXT)] | None, None) for m in method(METHOD).models}


# The request body: the two dates (ids of opened images), the classes as for a segmentation run, the SAM 3
# model, prob_thd, the change step's settings (generated from ChangeSettings) and the semantic extras.
ChangeRequest = create_model(
    "ChangeRequest",
    before=(Annotated[str, Field(max_length=100)], ...),
    after=(Annotated[str, Field(max_length=100)], ...),
    vocabulary=(Annotated[str, Field(max_length=MAX_VOCABULARY)], ""),
    preset=(Annotated[str, Field(max_length=100)] | None, None),
    prob_thd=(finite(float) | None, None),
    semantic=(bool, False),
    **model_fields(),  # type: ignore[call-overload]
    **change_fields(),
)


def change_settings(options: RunOptions, given: dict[str, Any]) -> Any:
    """The change step's settings: dataclass defaults < the preset's table < the page's values."""
    from ...change.settings import ChangeSettings
    from ...presets import method_settings
    from ...segment.methods import method

    names = {f.name for f in dataclasses.fields(ChangeSettings)}
    table = method_settings(options.preset or DEFAULT_PRESET, method(METHOD).preset_table)
    values = {k: v for k, v in table.items() if k in names}
    values.update({k: v for k, v in given.items() if k in names and v is not None})
    try:
        return ChangeSettings(**values)
    except (ValueError, TypeError) as exc:
        raise UserError(str(exc)) from None


@router.post("")
def start_change(body: ChangeRequest, request: Request) -> dict:  # type: ignore[valid-type]
    from ...change.pairs import Pair
    from ...change.run import check_pairs
    from ...change.semantic import check_classes
    from ..outputs import write_area

    session, config, hub = session_of(request), config_of(request), hub_of(request)
    fields = body.model_dump()  # type: ignore[attr-defined]
    before, after = image_of(request, fields["before"]), image_of(request, fields["after"])
    fields.update(method=METHOD, preset=fields.get("preset") or DEFAULT_PRESET)
    options = RunOptions.from_fields(fields)
    vocabulary, _ = hub.settings(options)  # a bad vocabulary or setting fails now, in the page
    if len(vocabulary) < 2:
        raise UserError("change detection needs a background class and at least one other: 'background;building'")
    if fields["semantic"]:
        check_classes(len(vocabulary))
    change = change_settings(options, fields)
    hub.model_specs(options)  # a refused or missing model file: the run in progress stays
    for image in (before, after):
        if image.height * image.width > config.max_run_pixels:
            raise UserError(
                f"{image.name} has {image.height * image.width / 1e6:.1f} Mpx, more than one run compares here "
                f"({config.max_run_pixels / 1e6:.0f} Mpx): compare it with `frugalvl change`"
            )
    folder = session.subfolder("runs")
    try:  # both dates as the library reads them, checked to line up before anything runs
        inputs = (
            write_area(folder / "before", before, whole(before)),
            write_area(folder / "after", after, whole(after)),
        )
        try:
            check_pairs([Pair(*inputs)])
        except UserError as exc:
            text = str(exc)
            for path, image in zip(inputs, (before, after), strict=True):
                text = text.replace(path.name, image.name)
            raise UserError(text) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # a refused pair leaves nothing behind
        raise
    for old in list(session.runs.values()):
        old.cancel()  # one run per session at a time: a new run replaces the old
    run = ChangeRun(
        new_id(), before, options, whole(before), folder, tile=config.tile, total=2,
        after=after, change=change, semantic=bool(fields["semantic"]), inputs=inputs,
    )  # fmt: skip
    session.add_run(run)
    worker_of(request).submit(run)
    return run_status(request, run)


def change_of(request: Request, run_id: str) -> ChangeRun:
    run = session_of(request).runs.get(run_id)
    if not isinstance(run, ChangeRun):
        raise NotFound(f"no change run {run_id!r} in this session (it may have expired): run it again")
    return run


def done(run: ChangeRun) -> ChangeRun:
    if run.state != "done":
        raise NotFound(f"change run {run.id} is {run.state}, not done")
    return run


@router.get("/{run_id}")
def get_change(run_id: str, request: Request) -> dict:
    return run_status(request, change_of(request, run_id))


@router.post("/{run_id}/cancel")
def cancel_change(run_id: str, request: Request) -> dict:
    run = change_of(request, run_id)
    run.cancel()
    return run_status(request, run)


@router.get("/{run_id}/tiles/{z}/{x}/{y}.png")
def change_tile(run_id: str, z: TileZ, x: TileXY, y: TileXY, request: Request, layer: Layer = "change") -> Response:
    run = done(change_of(request, run_id))
    levels, lut = run.layer(layer)
    bounds = map_bounds(run.image)
    if not intersects(tile_bounds(z, x, y), bounds):
        return png(empty_tile())
    codes = warp_tile(levels, run.image.image.crs, bounds, z, x, y, nearest=True, fill=0)[0]
    return png(png_bytes(lut[codes]))


@router.get("/{run_id}/image.png")
def change_preview(run_id: str, request: Request, layer: Layer = "change") -> Response:
    run = done(change_of(request, run_id))
    levels, lut = run.layer(layer)
    return png(png_bytes(lut[preview_level(levels).data[0]]))


@router.get("/{run_id}/download/{kind}")
def download_change(run_id: str, kind: str, request: Request) -> FileResponse:
    run = done(change_of(request, run_id))
    if kind not in run.files:
        raise NotFound(f"this change run has no {kind[:40]!r} file: choose one of {', '.join(sorted(run.files))}")
    path = run.files[kind]
    return FileResponse(path, filename=path.name)
