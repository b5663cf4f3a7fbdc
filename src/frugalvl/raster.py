"""Reading images and GeoTIFFs, writing label rasters, probabilities and colour overlays.

Nothing here imports a model. Reading follows the official SegEarth-OV loader where it matters for
parity: 8-bit PNG/JPEG files are decoded by OpenCV as mmcv does (``IMREAD_COLOR``: EXIF rotation
applied, grey replicated to three channels). TIFF and GeoTIFF files go through rasterio, which
keeps the CRS, the affine transform and the nodata mask.

Band and scale policy for inputs that are not 8-bit RGB (the official codes have none):

* bands: the first three bands by default, a single band is replicated to grey RGB; ``bands``
  picks others (1-based, as GDAL counts them);
* values: 8-bit data are used as they are; other data types are stretched per band between their
  2nd and 98th percentiles over valid pixels (``stretch="percentile"``), or between min and max
  (``"minmax"``), to 0..255.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .fileio import atomic_path
from .settings import FieldError
from .sources.stems import source_stem
from .stretch import apply_stretch, stretch_limits, valid_pixels

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".jp2", ".vrt")
_TIFF = (".tif", ".tiff")
# Formats only GDAL (rasterio) reads here: always taken through the scene path.
SCENE_ONLY_SUFFIXES = (".jp2", ".vrt")
# GDAL opens a file with the driver its name declares, never by probing its content: a ".tif" that is
# really a VRT (which names other files or URLs) is refused instead of followed.
GDAL_DRIVERS = {
    ".tif": "GTiff",
    ".tiff": "GTiff",
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".jp2": "JP2OpenJPEG",
    ".vrt": "VRT",
}
_SOURCE_PREFIXES = ("xyz+", "wmts+", "stac-items:")  # tile services, several STAC items (frugalvl.sources)
_URL_PREFIXES = ("http://", "https://", "s3://", "gs://", "/vsi", *_SOURCE_PREFIXES)

# Whole-image reads (the paper's protocol) above this many pixels go to the tiled scene path instead
# (docs/scenes.md): 4096² px keeps the C×H×W float32 scores of a whole image under ~0.5 GB for 8 classes.
AUTO_SCENE_PIXELS = 4096 * 4096
# Larger rasters are refused (reported and skipped): 2^32 px is a 65536² scene, a 4 GiB label raster.
MAX_SCENE_PIXELS = 1 << 32


@dataclass
class RasterImage:
    """An image ready for a segmenter, with what is needed to write results back in place."""

    rgb: np.ndarray  # H×W×3 uint8, RGB
    path: Path
    crs: Any = None  # rasterio CRS, or None
    transform: Any = None  # affine.Affine, or None
    nodata_mask: np.ndarray | None = None  # H×W bool, True where the input has no data
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None

    @property
    def stem(self) -> str:
        return self.path.stem


def is_url(item: str | os.PathLike) -> bool:
    """Whether an input names a remote raster (``https://``, ``s3://``, a GDAL ``/vsi…`` path)."""
    return isinstance(item, str) and item.startswith(_URL_PREFIXES)


def input_name(item: str | os.PathLike) -> str:
    """The file name of a local path or of a URL (query string dropped)."""
    if str(item).startswith(_SOURCE_PREFIXES):  # a tile service, several items: the source as given
        return str(item)
    return str(item).split("?")[0].rstrip("/").rsplit("/", 1)[-1] if is_url(item) else Path(item).name


def input_stem(item: str | os.PathLike) -> str:
    """The output stem of an input: its file name without the last suffix (a local STAC item: its id)."""
    name = input_name(item)
    if stem := source_stem(item):
        return stem
    return name.rsplit(".", 1)[0] if "." in name[1:] else name


def find_images(inputs: Sequence[str | os.PathLike]) -> list:
    """Expand files and folders (not recursive) into a sorted list of image files; URLs are kept as strings."""
    found: list = []
    for item in inputs:
        if is_url(item):
            found.append(str(item))
            continue
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not files:
                raise UserError(
                    f"folder {p} holds no images ({', '.join(IMAGE_SUFFIXES)}): point to a folder of images or to files"
                )
            found.extend(files)
        elif p.is_file():
            found.append(p)
        else:
            raise UserError(f"input {p} does not exist: give image files or folders of them")
    return found


def _to_uint8(bands: np.ndarray, valid: np.ndarray, stretch: str) -> np.ndarray:
    """Scale a ``[B, H, W]`` array of any dtype to uint8, band by band."""
    return apply_stretch(bands, stretch_limits(bands, valid, stretch))


def select_bands(count: int, bands: Sequence[int] | None, path: Path) -> list[int]:
    if bands:
        bad = [b for b in bands if not 1 <= b <= count]
        if bad:
            raise UserError(f"{path} has {count} band(s); band(s) {bad} do not exist: pick bands between 1 and {count}")
        if len(bands) not in (1, 3):
            raise UserError(f"give one band or three bands for {path}, not {len(bands)}")
        return list(bands)
    return [1, 2, 3] if count >= 3 else [1]


def _read_tiff(path: Path, bands: Sequence[int] | None, stretch: str) -> RasterImage:
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        src = rasterio.open(path, driver=GDAL_DRIVERS.get(path.suffix.lower(), "GTiff"))
    except RasterioIOError:
        raise UserError(f"cannot read {path}: not a readable TIFF/GeoTIFF (corrupt or truncated?)") from None
    with src:
        idx = select_bands(src.count, bands, path)
        try:
            data = src.read(idx)
            masks = src.read_masks(idx)
        except RasterioIOError:
            raise UserError(f"cannot read the pixels of {path}: the file is corrupt or truncated") from None
        valid = valid_pixels(data, masks)
        crs = src.crs
        transform = src.transform if crs is not None else None
        tags = dict(src.tags())
    nodata = None if valid.all() else ~valid
    data = _to_uint8(data, valid, stretch)
    if data.shape[0] == 1:
        data = np.repeat(data, 3, axis=0)
    rgb = np.ascontiguousarray(data.transpose(1, 2, 0))
    return RasterImage(rgb=rgb, path=path, crs=crs, transform=transform, nodata_mask=nodata, tags=tags)


def _read_other(path: Path, stretch: str) -> RasterImage:
    """A photo as OpenCV's ``IMREAD_COLOR`` shows it (EXIF orientation applied: :mod:`.orientation`, the same
    rule as the tiled path), alpha 0 as nodata."""
    import cv2

    from .orientation import PHOTO_SUFFIXES, alpha_nodata, exif_orientation, orient

    buf = np.fromfile(path, dtype=np.uint8)
    ours = path.suffix.lower() in PHOTO_SUFFIXES  # orientation applied here, by the tiled path's rule
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH | (cv2.IMREAD_IGNORE_ORIENTATION if ours else 0)
    try:
        img = cv2.imdecode(buf, flags) if buf.size else None
    except cv2.error:  # e.g. a header above OpenCV's own pixel limit
        img = None
    if img is None:
        raise UserError(f"cannot read {path}: not a valid image file (corrupt, empty or an unsupported format)")
    orientation = exif_orientation(path) if ours else 1
    img = orient(img, orientation)
    nodata = alpha_nodata(path, orientation) if ours else None
    if nodata is not None and nodata.shape != img.shape[:2]:
        nodata = None
    bands = img[..., ::-1].transpose(2, 0, 1)  # BGR -> RGB
    valid = np.ones(img.shape[:2], dtype=bool) if nodata is None else ~nodata
    rgb = np.ascontiguousarray(_to_uint8(np.ascontiguousarray(bands), valid, stretch).transpose(1, 2, 0))
    return RasterImage(rgb=rgb, path=path, nodata_mask=nodata)


def raster_shape(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(height, width)`` from the file's header only (no pixels decoded), or None when GDAL cannot open it."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path, driver=GDAL_DRIVERS.get(Path(path).suffix.lower())) as src:
                return int(src.height), int(src.width)
    except (RasterioIOError, OSError):
        pass
    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # header only: no decompression bomb here
    try:
        with Image.open(path) as img:
            return int(img.height), int(img.width)
    except Exception:  # noqa: BLE001 - any unreadable file: the reader reports it
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def check_size(path: str | os.PathLike, shape: tuple[int, int] | None) -> None:
    """Refuse rasters above :data:`MAX_SCENE_PIXELS` (a bogus header or an unworkable scene) with one line."""
    if shape is not None and shape[0] * shape[1] > MAX_SCENE_PIXELS:
        raise UserError(
            f"cannot read {input_name(path)}: its header claims {shape[1]}×{shape[0]} px, more than the "
            f"{MAX_SCENE_PIXELS:,} px frugalvl handles (corrupt header, or split the scene)"
        )


def read_image(path: str | os.PathLike, bands: Sequence[int] | None = None, stretch: str = "percentile") -> RasterImage:
    """Read an image file as 8-bit RGB plus its georeference and nodata mask (if any).

    Images above :data:`AUTO_SCENE_PIXELS` are refused with one line (their header is read first, so a
    file claiming 100000² px never allocates): the scene path (:mod:`.segment.scene`) reads them in tiles.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image {path} does not exist: check the path")
    shape = raster_shape(path)
    check_size(path, shape)
    if shape is not None and shape[0] * shape[1] > AUTO_SCENE_PIXELS:
        raise FieldError(
            "tile",
            f"{path.name} has {shape[1]}×{shape[0]} px, too many for a whole-image read: segment it "
            "in tiles ({tile} 512)",
        )
    if path.suffix.lower() in _TIFF + SCENE_ONLY_SUFFIXES:  # what only GDAL reads
        return _read_tiff(path, bands, stretch)
    if bands:
        raise FieldError("bands", f"{{bands}} applies to TIFF/GeoTIFF inputs only, not {path.name}")
    return _read_other(path, stretch)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

NODATA_LABEL = 255  # the nodata value of uint8 label maps (up to 255 classes: 0..254)
NODATA_LABEL_16 = 65535  # ... and of uint16 ones (256 classes and more), always outside the vocabulary


def palette(names: Sequence[str]) -> np.ndarray:
    """RGB colours (uint8 ``[C, 3]``) of class names, by what they name (:func:`frugalvl.palette.class_colours`:
    water blue, vegetation green, ...): the one palette of every output."""
    if isinstance(names, (int, np.integer)):
        raise TypeError("palette() takes the class names, not their number: the colours follow the names")
    from .palette import class_colours

    return np.array(class_colours(list(names)), dtype=np.uint8).reshape(-1, 3)


def label_dtype(n_classes: int) -> np.dtype:
    return np.dtype(np.uint8) if n_classes < NODATA_LABEL else np.dtype(np.uint16)


def nodata_label(n_classes: int) -> int:
    """The label of pixels without data: 255 for uint8 maps, 65535 for uint16 maps (never a class index)."""
    return NODATA_LABEL if label_dtype(n_classes) == np.uint8 else NODATA_LABEL_16


def write_labels(outdir: str | os.PathLike, image: RasterImage, labels: np.ndarray, class_names: Sequence[str]) -> Path:
    """Write the label map: ``<stem>.tif`` (GeoTIFF, input CRS/transform) or ``<stem>.png``.

    Class names travel with the file (GeoTIFF tag ``CLASS_NAMES`` / PNG text chunk
    ``class_names``, both JSON lists); pixels where the input had no data get :func:`nodata_label`
    (255, or 65535 for 256 classes and more), which a GeoTIFF declares as its nodata value (a uint16
    one always, a PNG in its text chunk ``nodata``).
    """
    outdir = Path(outdir)
    nodata = nodata_label(len(class_names))
    labels = labels.astype(label_dtype(len(class_names)))
    if image.nodata_mask is not None:
        labels = labels.copy()
        labels[image.nodata_mask] = nodata
    names = json.dumps(list(class_names))
    if image.georeferenced:
        import rasterio

        path = outdir / f"{image.stem}.tif"
        profile = dict(
            driver="GTiff",
            height=labels.shape[0],
            width=labels.shape[1],
            count=1,
            dtype=labels.dtype.name,
            crs=image.crs,
            transform=image.transform,
            compress="deflate",
            tiled=labels.shape[0] >= 256 and labels.shape[1] >= 256,
        )
        if image.nodata_mask is not None or nodata != NODATA_LABEL:
            profile["nodata"] = nodata
        with atomic_path(path) as tmp:
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(labels, 1)
                dst.update_tags(CLASS_NAMES=names)
                if labels.dtype == np.uint8:
                    from .palette import colour_table

                    dst.write_colormap(1, colour_table(class_names))
        return path
    from PIL import Image, PngImagePlugin

    path = outdir / f"{image.stem}.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("class_names", names)
    if nodata != NODATA_LABEL:
        info.add_text("nodata", str(nodata))
    if labels.dtype == np.uint8:
        from .palette import colour_table

        img = Image.fromarray(labels, mode="P")
        table = colour_table(class_names)
        pal = np.zeros((256, 3), dtype=np.uint8)
        for i, (r, g, b, _) in table.items():
            pal[i] = (r, g, b)
        img.putpalette(pal.ravel().tolist())
        extra = {"transparency": NODATA_LABEL} if NODATA_LABEL in table else {}
    else:
        img = Image.fromarray(labels.astype(np.uint16))
        extra = {}
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", pnginfo=info, **extra)
    return path


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names stored with a label file written by :func:`write_labels`."""
    path = Path(path)
    if path.suffix.lower() in _TIFF:
        import rasterio

        with rasterio.open(path) as src:
            return json.loads(src.tags()["CLASS_NAMES"])
    from PIL import Image

    with Image.open(path) as img:
        return json.loads(img.text["class_names"])


def write_probs(outdir: str | os.PathLike, stem: str, scores: np.ndarray) -> Path:
    """Save ``C×H×W`` float32 class scores as ``<stem>_probs.npy``."""
    path = Path(outdir) / f"{stem}_probs.npy"
    with atomic_path(path) as tmp:
        np.save(tmp, scores.astype(np.float32, copy=False))
    return path


COG_BLOCK = 512


def to_cog(tmp_tif: str | os.PathLike, out: str | os.PathLike, resampling: str) -> Path:
    """Copy a GeoTIFF to a Cloud-Optimized GeoTIFF (512² blocks, DEFLATE, internal overviews) atomically."""
    from rasterio.shutil import copy as rio_copy

    with atomic_path(out) as tmp:
        rio_copy(
            str(tmp_tif),
            str(tmp),
            driver="COG",
            COMPRESS="DEFLATE",
            BLOCKSIZE=str(COG_BLOCK),
            OVERVIEW_RESAMPLING=resampling,
            BIGTIFF="IF_SAFER",
            NUM_THREADS="1",
        )
    return Path(out)


def write_probs_cog(
    outdir: str | os.PathLike, image: RasterImage, scores: np.ndarray, class_names: Sequence[str]
) -> Path:
    """Save ``C×H×W`` scores of a georeferenced image as ``<stem>_probs.tif``: a uint8 COG, ``round(255 × score)``."""
    import rasterio

    path = Path(outdir) / f"{image.stem}_probs.tif"
    probs = np.rint(np.clip(scores, 0, 1) * 255).astype(np.uint8)
    profile = dict(
        driver="GTiff",
        height=probs.shape[1],
        width=probs.shape[2],
        count=probs.shape[0],
        dtype="uint8",
        crs=image.crs,
        transform=image.transform,
    )
    import tempfile

    fd, src_tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".src.tif")
    os.close(fd)
    try:
        with rasterio.open(src_tmp, "w", **profile) as dst:
            dst.write(probs)
            dst.update_tags(CLASS_NAMES=json.dumps(list(class_names)), SCALE="uint8 score = round(255 × probability)")
            for i, name in enumerate(class_names, start=1):
                dst.set_band_description(i, name)
        to_cog(src_tmp, path, "AVERAGE")
    finally:
        Path(src_tmp).unlink(missing_ok=True)
    return path


def overlay_image(
    rgb: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    alpha: float = 0.5,
    nodata_mask: np.ndarray | None = None,
):
    """A PIL RGBA image: the labels blended over the image, with a legend of the classes on the right.

    Pixels without data are transparent (their colour :data:`frugalvl.palette.NODATA_COLOUR`, a neutral
    gray, under alpha 0), listed as ``nodata`` in the legend.
    """
    from PIL import Image, ImageDraw, ImageFont

    from .palette import NODATA_COLOUR, legend

    has_nodata = nodata_mask is not None and bool(nodata_mask.any())
    rows = legend(class_names, nodata=has_nodata)
    colours = palette(class_names)
    blended = (
        rgb.astype(np.float32) * (1 - alpha)
        + colours[np.clip(labels, 0, len(class_names) - 1)].astype(np.float32) * alpha
    )
    alpha_band = np.full(labels.shape, 255, np.uint8)
    if has_nodata:
        blended[nodata_mask] = NODATA_COLOUR
        alpha_band[nodata_mask] = 0
    rgba = np.dstack([np.clip(blended + 0.5, 0, 255).astype(np.uint8), alpha_band])
    base = Image.fromarray(rgba, mode="RGBA")
    font = ImageFont.load_default()
    row = 18
    legend_w = 16 + 10 + max(int(ImageDraw.Draw(base).textlength(n, font=font)) for n, _ in rows) + 12
    canvas = Image.new("RGBA", (base.width + legend_w, max(base.height, row * len(rows) + 12)), (255, 255, 255, 255))
    canvas.paste(base, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (name, colour) in enumerate(rows):
        y = 6 + i * row
        x = base.width + 8
        draw.rectangle([x, y, x + 14, y + 14], fill=colour, outline=(0, 0, 0))
        draw.text((x + 20, y + 1), name, fill=(0, 0, 0), font=font)
    return canvas


def write_overlay(
    outdir: str | os.PathLike, image: RasterImage, labels: np.ndarray, class_names: Sequence[str]
) -> Path:
    """Save ``<stem>_overlay.png``: a colour overlay with a legend."""
    path = Path(outdir) / f"{image.stem}_overlay.png"
    img = overlay_image(image.rgb, labels, class_names, nodata_mask=image.nodata_mask)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
