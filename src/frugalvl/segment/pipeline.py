"""The path from files to results, the same for every segmenter.

``file --read--> RasterImage --segmenter.class_scores--> [C,H,W] --labels_from_scores--> labels
--write--> <stem>.tif|.png, <stem>_overlay.png, <stem>_probs.npy, <stem>_run.json``

Inputs that are large (above :data:`frugalvl.raster.AUTO_SCENE_PIXELS`), remote, VRT/JPEG2000, or all
inputs when a tile size is given, go through the tiled scene path (:mod:`.scene`) instead.

Finished inputs (whose outputs and matching ``<stem>_run.json`` record exist) are skipped, so an
interrupted run resumes where it stopped; outputs made with other settings stop the run with one line
(:mod:`.records`) unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..areas import class_areas, row_areas
from ..errors import UserError
from ..fileio import check_output, output_lock, remove_stale_temporaries
from ..progress import Bar, NullReporter, Reporter, as_reporter
from ..raster import (
    RasterImage,
    check_size,
    input_name,
    input_stem,
    is_url,
    raster_shape,
    read_image,
    write_labels,
    write_overlay,
    write_probs,
    write_probs_cog,
)
from ..settings import FieldError
from .base import Progress, Segmenter, labels_from_scores, scores_of
from .exemplars import ExemplarSettings
from .records import (
    RESULT_KEY,
    SegmenterRecord,
    check_record,
    class_names,
    make_record,
    output_names,
    record_path,
    recorded_outputs,
    recorded_result,
    result_of,
    write_claim,
    write_record,
)
from .routing import route_inputs, uses_scene_path  # noqa: F401 - also the pipeline's public names
from .scene import input_identity, scene_finished, scene_record, segment_scene
from .scene_settings import VECTOR_FORMATS, SceneSettings, SegmentRunSettings

log = logging.getLogger(__name__)

FailureHook = Callable[[str, str], None]  # (input, one-line reason) of an input skipped for a UserError


@dataclass
class SegmentResult:
    """What one image produced."""

    image: RasterImage
    scores: np.ndarray  # C×H×W float32
    labels: np.ndarray  # H×W int64


@dataclass
class RunSummary:
    class_names: list[str]
    pixels: Counter = field(default_factory=Counter)
    area: Counter = field(default_factory=Counter)  # class -> area in ``area_units``
    area_units: set = field(default_factory=set)
    done: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    failed: list = field(default_factory=list)

    def add(self, pixels: Counter, pixel_area: float, unit: str, areas: dict[int, float] | None = None) -> None:
        """Count an input's class pixels and areas (``areas`` per class, else pixels × ``pixel_area``)."""
        self.pixels.update(pixels)
        self.area.update(areas if areas is not None else {c: n * pixel_area for c, n in pixels.items()})
        self.area_units.add(unit)

    def table(self) -> str:
        total = sum(self.pixels.values()) or 1
        width = max(len(n) for n in self.class_names)
        unit = next(iter(self.area_units)) if len(self.area_units) == 1 else ""
        show_area = unit in ("m²", "units²")
        head = f"{'class':<{width}}  {'pixels':>12}  {'share':>7}"
        if show_area:
            head += f"  {'area ' + unit:>14}" + ("  {:>10}".format("ha") if unit == "m²" else "")
        lines = [head]
        for i, name in enumerate(self.class_names):
            line = f"{name:<{width}}  {self.pixels[i]:>12d}  {100 * self.pixels[i] / total:>6.2f}%"
            if show_area:
                line += f"  {self.area[i]:>14.1f}" + (f"  {self.area[i] / 1e4:>10.2f}" if unit == "m²" else "")
            lines.append(line)
        lines.append(f"{len(self.done)} segmented, {len(self.skipped)} already done, {len(self.failed)} failed")
        return "\n".join(lines)


def segment_image(segmenter: Segmenter, image: RasterImage, progress: Progress | None = None) -> SegmentResult:
    """Run a segmenter on one image already in memory (``progress(done, total)`` over its windows).
    Where the image has no data its labels are written as nodata, so no window is run for them alone."""
    valid = None if image.nodata_mask is None else ~image.nodata_mask
    scores = scores_of(segmenter, image.rgb, progress, valid=valid)
    labels = labels_from_scores(scores, segmenter.prob_thd, segmenter.bg_idx)
    return SegmentResult(image, scores.float().numpy(), labels.numpy())


# ---------------------------------------------------------------------------------------------
# Checks made before any model loads (docs/reliability.md#checks-before-any-model-loads)
# ---------------------------------------------------------------------------------------------


def check_outdir(outdir: str | os.PathLike) -> Path:
    """Create ``outdir`` if needed and prove it writable; one line when it is a file or read-only."""
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise UserError(f"outdir {outdir} is a file, not a folder: give a folder for the outputs")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=outdir, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(
            f"outdir {outdir} is not writable ({exc.strerror or exc}): give a folder you can write to"
        ) from None
    return outdir


def check_inputs_and_outputs(paths: Sequence, outdir: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse a run whose outputs would overwrite an input, or whose inputs share an output name, or
    whose outputs would replace files no frugalvl run recorded (unless ``overwrite``).

    Outputs are never renamed to dodge an input: the run stops before anything is read or written.
    """
    stems = Counter(input_stem(p) for p in paths)
    clashes = [s for s, n in stems.items() if n > 1]
    if clashes:
        raise UserError(
            f"inputs share the output name(s) {', '.join(clashes)}: segment them into different outdir folders"
        )
    outdir = Path(outdir).resolve()
    local = {Path(p).resolve(): p for p in paths if not is_url(p)}
    for p in paths:
        for name in output_names(input_stem(p)):
            hit = local.get(outdir / name)
            if hit is not None:
                raise UserError(
                    f"input {hit} would be overwritten by the output {name} of {input_name(p)}: "
                    "write the outputs to another folder (outdir)"
                )
    for p in paths:
        stem = input_stem(p)
        recorded = recorded_outputs(outdir, stem)
        for name in output_names(stem):
            check_output(outdir / name, (), recorded, overwrite, "outdir", SegmentRunSettings)


def check_bands(path: str | os.PathLike, bands: Sequence[int | str] | None, whole_image: bool) -> None:
    """Refuse ``bands`` an input cannot give (from its header; no pixels read): a band number it does not
    have, or any band choice for a non-TIFF read whole (``whole_image``). URLs, other sources, band names
    and unreadable files pass (their reader reports them)."""
    if not bands or is_url(path) or not Path(path).is_file():
        return
    path = Path(path)
    if whole_image and path.suffix.lower() not in (".tif", ".tiff"):
        raise FieldError("bands", f"{{bands}} applies to TIFF/GeoTIFF inputs only, not {path.name}")
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                count = src.count
    except (RasterioIOError, OSError):
        return
    bad = [b for b in bands if isinstance(b, int) and not 1 <= b <= count]
    if bad:
        raise FieldError(
            "bands", f"{path.name} has {count} band(s); {{bands}} {bad} do not exist: pick bands between 1 and {count}"
        )


def check_inputs(paths: Sequence, settings: SegmentRunSettings) -> None:
    """What the inputs' headers can tell before any model loads: ``bands`` each input can give."""
    routes = route_inputs(paths, settings)
    for i, path in enumerate(paths):
        check_bands(path, settings.scene.bands, whole_image=not routes[i])


@contextlib.contextmanager
def writing_outputs(
    paths: Sequence, outdir: str | os.PathLike, overwrite: bool = False, lock: bool = True
) -> Iterator[Path]:
    """Every check on ``outdir`` made before any model loads, and its writer lock for the ``with`` block.

    The folder is created and proven writable, locked against a second run writing into it, checked
    against the inputs and against files no frugalvl run recorded, and cleared of the temporaries a killed
    run left (docs/reliability.md).
    """
    outdir = check_outdir(outdir)
    with output_lock(outdir) if lock else contextlib.nullcontext(outdir):  # Ray workers: the driver holds it
        check_inputs_and_outputs(paths, outdir, overwrite)
        remove_stale_temporaries(outdir, recursive=True)
        yield outdir


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def _image_record(segmenter, path, settings: SceneSettings) -> dict:
    extra = {} if settings.vectors is None else {"min_area": settings.min_area, "simplify": settings.simplify}
    read = {"bands": None if settings.bands is None else list(settings.bands), "stretch": settings.stretch}
    return make_record(segmenter, input=input_identity(path), read=read, **extra)


def _image_finished(outdir: Path, stem: str, save_probs: bool, vectors: str | None) -> bool:
    """Whether an input's outputs are all there."""
    has_labels = (outdir / f"{stem}.tif").exists() or (outdir / f"{stem}.png").exists()
    has_probs = (outdir / f"{stem}_probs.npy").exists() or (outdir / f"{stem}_probs.tif").exists() or not save_probs
    has_vectors = vectors is None or (outdir / f"{stem}{VECTOR_FORMATS[vectors]}").exists()
    return has_labels and has_probs and has_vectors and (outdir / f"{stem}_overlay.png").exists()


def _files_bar(total: int, progress: Reporter) -> Bar:
    """The progress bar over a run's inputs (the outer bar; scenes and images add an inner one)."""
    return progress.start("img", total, "segment")


def _log_failure(path: str, why: str) -> None:
    log.warning("skipped: %s", why)


def segment_files(
    segmenter: Segmenter,
    paths: Sequence,
    outdir: str | Path,
    settings: SegmentRunSettings = SegmentRunSettings(),
    progress: bool | Reporter = True,
    on_failure: FailureHook | None = None,
    lock: bool = True,
    exemplars: str | os.PathLike | ExemplarSettings | None = None,
) -> RunSummary:
    """Segment image files (or scenes) and write their outputs under ``outdir``.

    ``settings.scene`` reads and writes every input (and tiles the scenes); ``settings.tile_all`` sends
    every input through the tiled scene path, else only large, remote and VRT/JPEG2000 inputs go there.
    An input that fails with a :class:`UserError` is reported to ``on_failure(input, reason)`` (default:
    a logged warning), listed in the summary, and the run goes on. ``lock``: hold the folder's writer lock (a Ray
    worker does not: its driver holds it). ``progress``: terminal bars (True),
    none (False) or a :class:`~frugalvl.progress.Reporter` (e.g. JSON lines, docs/progress.md).
    ``exemplars``: an exemplar file (or SegEarth-OV prototype ``.npz``), or :class:`ExemplarSettings` with
    it, read once for the run (docs/methods/exemplars.md): SegEarth-OV's prototypes are computed once and
    apply to every input; SegEarth-OV3 prompts each input with its own boxes.
    """
    with writing_outputs(paths, outdir, settings.overwrite, lock) as checked:
        segmenters = None
        if exemplars is not None:
            segmenters = _with_exemplars(segmenter, paths, settings, exemplars)
            segmenter = segmenters[0]
        return _segment_files(segmenter, paths, checked, settings, as_reporter(progress), on_failure, segmenters)


def _with_exemplars(segmenter: Segmenter, paths: Sequence, settings: SegmentRunSettings, exemplars) -> list:
    """One segmenter per input, using the run's exemplars (:mod:`.exemplars_run`)."""
    from .exemplars import check_exemplar_run
    from .exemplars_run import plan_exemplars

    given = exemplars if isinstance(exemplars, ExemplarSettings) else ExemplarSettings(exemplars=str(exemplars))
    kind = (
        "prototypes"
        if hasattr(segmenter, "with_prototypes")
        else "boxes"
        if hasattr(segmenter, "with_exemplars")
        else ""
    )
    check_exemplar_run(kind, given, len(paths))
    assert given.exemplars is not None
    plan = plan_exemplars(segmenter, given.exemplars, paths, settings, given.reuse_tokens, given.save_prototypes)
    if plan.prototypes is not None:  # the same queries everywhere: one segmenter
        return [plan.apply(segmenter)] * len(paths)
    return [plan.apply(segmenter, i) for i in range(len(paths))]


def _segment_files(
    segmenter: Segmenter,
    paths: Sequence,
    outdir: Path,
    settings: SegmentRunSettings,
    reporter: Reporter,
    on_failure: FailureHook | None,
    segmenters: Sequence[Segmenter] | None = None,
) -> RunSummary:
    scene = settings.scene
    routes = route_inputs(paths, settings)
    todo = inputs_to_run(segmenters or segmenter, paths, routes, outdir, settings)
    summary = RunSummary(class_names(segmenter))
    report = on_failure or _log_failure
    bar = _files_bar(len(paths), reporter)
    for i, path in enumerate(paths):
        bar.current(input_name(path))
        if i not in todo:
            summary.skipped.append(path)
            bar.advance()
            continue
        one = segmenter if segmenters is None else segmenters[i]
        try:
            if routes[i]:
                _run_scene(one, path, outdir, scene, reporter, summary, settings.overwrite)
            else:
                _run_image(one, path, outdir, scene, summary, reporter)
        except UserError as exc:
            summary.failed.append((path, str(exc)))
            report(str(path), str(exc))
        bar.advance()
    bar.close()
    if not todo:  # all done: the table of the finished run, read from its records (not zeros)
        return finished_summary(SegmenterRecord.of(segmenter), paths, outdir, settings) or summary
    return summary


def inputs_to_run(
    segmenter: Segmenter | SegmenterRecord | Sequence[Segmenter | SegmenterRecord],
    paths: Sequence,
    routes: dict[int, bool],
    outdir: Path,
    settings: SegmentRunSettings,
) -> set[int]:
    """Indices of inputs to run; a :class:`UserError` before any work when old outputs differ in settings.
    ``segmenter``: one for every input, or one per input (exemplars prompt each input its own way)."""
    todo = set()
    scene = settings.scene
    per_input = isinstance(segmenter, list | tuple)
    for i, path in enumerate(paths):
        one: Segmenter | SegmenterRecord = segmenter[i] if per_input else segmenter  # type: ignore[index,assignment]
        stem = input_stem(path)
        if settings.overwrite:
            todo.add(i)
            continue
        try:
            if routes[i]:
                record = scene_record(one, path, scene)
                done = scene_finished(outdir, stem, scene)
            else:
                record = _image_record(one, path, scene)
                done = _image_finished(outdir, stem, scene.save_probs, scene.vectors)
        except OSError:
            todo.add(i)  # missing input: reported when it is read
            continue
        if not (check_record(record_path(outdir, stem), record, f"the output of {input_name(path)}") and done):
            todo.add(i)
    return todo


def finished_summary(
    record: SegmenterRecord, paths: Sequence, outdir: str | Path, settings: SegmentRunSettings
) -> RunSummary | None:
    """The summary of a run that is already done, or None when any input has work left.

    Called before any model loads, with the record the segmenter would write (its identity without its
    models): when every input's outputs and matching record are there, nothing needs the model, and the
    table is read from the records (the pixels each finished input kept). None as well when a record
    predates the kept pixels. Outputs made with other settings: a :class:`UserError` naming them.
    """
    outdir = Path(outdir)
    if settings.overwrite or not outdir.is_dir():
        return None
    todo = inputs_to_run(record, paths, route_inputs(paths, settings), outdir, settings)
    if todo:
        return None
    summary = RunSummary(list(record.names))
    for path in paths:
        found = recorded_result(record_path(outdir, input_stem(path)))
        if found is None:
            return None
        summary.add(Counter(found[0]), found[1], found[2])
        summary.skipped.append(path)
    log.debug("every input is done already in %s", outdir)
    return summary


def _run_scene(
    segmenter, path, outdir: Path, settings: SceneSettings, progress: Reporter, summary: RunSummary, overwrite: bool
) -> None:
    result = segment_scene(segmenter, path, outdir, settings, overwrite=overwrite, progress=progress)
    if result is None:  # finished meanwhile (another process)
        summary.skipped.append(path)
        return
    summary.add(result.pixels, result.pixel_area, result.area_unit, result.areas)
    summary.done.append(path)


@contextlib.contextmanager
def _window_bar(progress: Reporter, name: str) -> Iterator[Progress | None]:
    """A second progress bar, over the windows of one image (the first one counts images)."""
    if isinstance(progress, NullReporter):
        yield None  # the segmenter is not asked to report
        return
    bar = progress.start("win", None, name, level=1)
    seen = 0

    def update(done: int, total: int) -> None:
        nonlocal seen
        bar.advance(done - seen, total=total)
        seen = done

    try:
        yield update
    finally:
        bar.close()


def _run_image(
    segmenter, path, outdir: Path, settings: SceneSettings, summary: RunSummary, progress: bool | Reporter = False
) -> None:
    names = segmenter.vocabulary.names
    reporter = as_reporter(progress)
    check_size(path, raster_shape(path))
    image = read_image(path, bands=settings.band_numbers, stretch=settings.stretch)
    with _window_bar(reporter, input_name(path)) as on_window:
        result = segment_image(segmenter, image, on_window)
    reporter.phase("write", image.stem)
    write_claim(outdir, image.stem)  # the outputs being replaced are frugalvl's, and unfinished
    if settings.save_probs and image.georeferenced:
        write_probs_cog(outdir, image, result.scores, names)
    elif settings.save_probs:
        write_probs(outdir, image.stem, result.scores)
    write_overlay(outdir, image, result.labels, names)
    label_path = write_labels(outdir, image, result.labels, names)
    if settings.vectors:
        from ..vectors import write_vectors

        reporter.phase("vectors", image.stem)
        write_vectors(
            label_path,
            outdir / f"{image.stem}{VECTOR_FORMATS[settings.vectors]}",
            names,
            min_area=settings.min_area,
            simplify=settings.simplify,
        )
    valid = result.labels if image.nodata_mask is None else result.labels[~image.nodata_mask]
    counts = np.bincount(valid.ravel(), minlength=len(names))
    pixels = Counter({i: int(c) for i, c in enumerate(counts) if c})
    valid_mask = None if image.nodata_mask is None else ~image.nodata_mask
    per_row, unit = row_areas(image.transform, image.crs, 0, result.labels.shape[0])
    areas = class_areas(result.labels, valid_mask, len(names), per_row)
    area = sum(areas.values()) / sum(pixels.values()) if pixels else float(per_row.mean())  # mean, for the record
    record = {**_image_record(segmenter, path, settings), RESULT_KEY: result_of(pixels, area, unit)}
    write_record(record_path(outdir, image.stem), record)  # last: marks it done
    summary.add(pixels, area, unit, areas)
    summary.done.append(path)
