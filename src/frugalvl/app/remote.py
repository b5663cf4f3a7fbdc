"""Remote sources in the app: a STAC item URL or a tile service, read over an area into the session
(docs/app.md, "Security"; docs/scenes.md, "Sources").

What a browser may name here, and what the server then reads:

* the source is an ``http(s)`` URL of a STAC item, ``xyz+http(s)://…/{z}/{x}/{y}.png`` or
  ``wmts+http(s)://…`` (capabilities); nothing else: no ``file://``, no local path, no ``/vsi…``;
* the item is fetched once by the server (at most :data:`MAX_ITEM_BYTES`), every asset link in it is
  resolved against the item's URL and must be an ``http(s)`` URL under the same rules (a link that is
  a file path, ``/…``, ``~…`` or ``C:…``, is refused; ``B04.tif`` and ``./B04.tif`` are the item's); the checked
  item is kept in the session's folder and read from there, so a server that answers differently the
  second time changes nothing;
* assets are opened by GDAL with only the drivers of :data:`REMOTE_DRIVERS` (GeoTIFF/COG, JPEG 2000,
  PNG, JPEG: never a VRT, which could name files of this server); tiles are fetched by urllib and
  decoded by OpenCV (PNG, JPEG, WebP) without GDAL;
* every address (the item, its assets, the tile service, each redirect urllib follows) is shown to the
  app's address policy (:meth:`frugalvl.app.config.AppConfig.address_policy`, through
  :mod:`frugalvl.urlfetch`): link-local and reserved addresses (a cloud's metadata service) are never
  read, loopback and private ones only when the app listens on this machine or ``private_sources`` is on;
* the area (the bbox at the chosen zoom or resolution, or the whole item) is at most the app's
  ``max_pixels``, checked before any pixel is read (413 otherwise).

The area is read through the scene path's readers (:func:`frugalvl.sources.open.apply_aoi`,
:class:`frugalvl.segment.scene_read.SceneReader`: the same bands, grid and stretch as ``frugalvl
segment``) and written as an 8-bit GeoTIFF with its nodata mask; the app then opens it like any image,
and a run segments it with :func:`frugalvl.segment.scene.segment_scene`.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import numpy as np

from ..errors import UserError
from ..raster import GDAL_DRIVERS
from ..urlfetch import check_address, urlopen
from .sessions import TooLarge

log = logging.getLogger(__name__)

MAX_URL_CHARS = 2048
MAX_ITEM_BYTES = 4 << 20
HTTP_TIMEOUT_S = 30
REMOTE_DRIVERS = tuple(GDAL_DRIVERS[s] for s in (".tif", ".jp2", ".png", ".jpg"))
ROWS_PER_READ = 512
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]|/vsi", re.IGNORECASE)

KINDS = "an image URL (https://…/scene.tif), a STAC item URL (https://…/item.json), xyz+https://…/{z}/{x}/{y}.png or wmts+https://… (capabilities)"


def check_url(url: str, what: str) -> str:
    """``url`` when it is a plain ``http(s)`` URL with a host; else one line naming ``what``."""
    shown = url if len(url) <= 120 else url[:117] + "..."
    if len(url) > MAX_URL_CHARS or _UNSAFE.search(url):
        raise UserError(f"{what} {shown!r} is not a plain http(s) URL: the app reads only http(s) addresses")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise UserError(f"{what} {shown!r} is not an http(s) URL: the app reads only http(s) addresses")
    check_address(url)  # the request's address policy (frugalvl.urlfetch): never link-local, …
    return url


IMAGE_SUFFIXES = (".tif", ".tiff", ".jp2", ".png", ".jpg", ".jpeg")


def source_kind(text: str) -> str:
    """``image`` (an http(s) URL of a GeoTIFF/COG, JPEG 2000, PNG or JPEG file), ``stac`` (any other
    http(s) URL), ``xyz`` or ``wmts`` for a source the app may read; else one line saying what it takes."""
    text = text.strip()
    for prefix in ("xyz+", "wmts+"):
        if text.lower().startswith(prefix):
            check_url(text[len(prefix) :], f"the {prefix[:-1].upper()} address")
            return prefix[:-1]
    if text.lower().startswith(("http://", "https://")):
        if urlsplit(text).path.lower().endswith(IMAGE_SUFFIXES):
            check_url(text, "the image")
            return "image"
        check_url(text, "the STAC item")
        return "stac"
    raise UserError(f"{text[:120]!r}: the app opens {KINDS}; open local files by path or upload")


def checked_item(url: str, folder: Path) -> Path:
    """The STAC item at ``url`` with every asset link checked and made absolute, saved under ``folder``."""
    try:
        with urlopen(url, timeout=HTTP_TIMEOUT_S) as answer:
            body = answer.read(MAX_ITEM_BYTES + 1)
    except UserError:
        raise
    except Exception as exc:  # urllib's HTTPError/URLError, timeouts
        raise UserError(f"cannot fetch the STAC item {url[:120]}: {str(exc)[:100]} (check the URL)") from None
    if len(body) > MAX_ITEM_BYTES:
        raise TooLarge(f"the STAC item {url[:120]} is over {MAX_ITEM_BYTES >> 20} MB: give one item")
    try:
        data = json.loads(body)
    except ValueError:
        raise UserError(f"{url[:120]} is not JSON: give a STAC item") from None
    kind = data.get("type") if isinstance(data, dict) else None
    features = data.get("features") if kind == "FeatureCollection" else [data]
    if kind not in ("Feature", "FeatureCollection") or not isinstance(features, list) or not features:
        raise UserError(f"{url[:120]} is not a STAC item (a 'Feature' with assets)")
    for feature in features:
        assets = feature.get("assets") if isinstance(feature, dict) else None
        if not isinstance(assets, dict) or not assets:
            raise UserError(f"{url[:120]} is not a STAC item (a 'Feature' with assets)")
        for key, asset in assets.items():
            href = asset.get("href") if isinstance(asset, dict) else None
            if not isinstance(href, str) or not href.strip():
                raise UserError(f"{url[:120]}: asset {str(key)[:40]!r} has no link")
            if href.startswith(("/", "~")) or (re.match(r"[A-Za-z]:", href) and "://" not in href):
                raise UserError(
                    f"asset {str(key)[:40]!r} of the item is a file path ({href[:80]!r}): the app reads only "
                    "http(s) addresses and links relative to the item"
                )
            asset["href"] = check_url(urljoin(url, href), f"asset {str(key)[:40]!r} of the item")
        feature["links"] = []  # not followed: nothing but the checked assets is read
    path = folder / "item.json"
    path.write_text(json.dumps(data))
    return path


def image_item(url: str, folder: Path) -> Path:
    """A STAC item whose one asset, ``visual``, is the remote image at ``url`` (checked), under ``folder``."""
    from ..sources.xyz import safe_stem

    name = urlsplit(url).path.rsplit("/", 1)[-1]
    stem = safe_stem("", name.rsplit(".", 1)[0]).strip("_") or "image"
    item: dict[str, Any] = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": stem,
        "geometry": None,
        "properties": {"datetime": "1970-01-01T00:00:00Z"},  # pystac needs one; nothing reads it
        "links": [],
        "assets": {"visual": {"href": check_url(url, "the image")}},
    }
    path = folder / "item.json"
    path.write_text(json.dumps(item))
    return path


def read_area(
    source: str,
    bbox: tuple[float, float, float, float] | None,
    zoom: int | None,
    resolution: float | None,
    max_pixels: int,
    folder: Path,
) -> tuple[Path, str]:
    """Read ``source`` over ``bbox`` (EPSG:4326) into an 8-bit GeoTIFF under ``folder``: its path and name."""
    from ..raster import input_stem, select_bands
    from ..segment.scene_read import gdal_env
    from ..sources.open import apply_aoi, open_service
    from ..sources.stac import open_item

    kind = source_kind(source)
    source = source.strip()
    if kind in ("xyz", "wmts") and bbox is None:
        raise UserError(f"{source[:120]} is a tile service: draw or type the area to read (W,S,E,N)")
    with gdal_env():
        if kind in ("stac", "image"):
            # a remote image is read as a one-asset item: the same checks, drivers, grid and window reads
            item = checked_item(source, folder) if kind == "stac" else image_item(source, folder)
            stem = input_stem(item)
            src: Any = open_item(str(item), None, None, resolution, drivers=REMOTE_DRIVERS)
        else:
            stem = input_stem(source)
            latitude = (bbox[1] + bbox[3]) / 2 if bbox else 0.0
            src = open_service(source, zoom, resolution, latitude, folder / "tiles", 8)
        try:
            if bbox is not None:
                src = apply_aoi(src, stem, bbox, "EPSG:4326", None)
            pixels = src.height * src.width
            if pixels > max_pixels:
                raise TooLarge(
                    f"the area is {pixels / 1e6:.1f} Mpx at this zoom/resolution, more than the app opens "
                    f"({max_pixels / 1e6:.0f} Mpx): draw a smaller area or choose a coarser zoom"
                )
            out = folder / f"{stem}.tif"
            _write_area(src, select_bands(src.count, None, Path(stem)), out)
        finally:
            src.close()
    return out, out.name


def _write_area(src: Any, bands: list[int], out: Path) -> None:
    """``src``'s ``bands`` as an 8-bit RGB GeoTIFF (scene-wide stretch, nodata as the GDAL mask)."""
    import rasterio

    from ..segment.scene_read import SceneReader, scene_limits
    from ..windows import Window

    reader = SceneReader(src, bands, 1.0, "percentile")
    reader.limits = scene_limits(reader)
    h, w = reader.shape
    profile = dict(
        driver="GTiff", height=h, width=w, count=3, dtype="uint8", crs=src.crs, transform=src.transform,
        tiled=True, blockxsize=256, blockysize=256, compress="deflate",
    )  # fmt: skip
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(out, "w", **profile) as dst:
        for y0 in range(0, h, ROWS_PER_READ):
            win = Window(y0, min(h, y0 + ROWS_PER_READ), 0, w)
            data, valid = reader.read(win)
            rgb = reader.rgb(data)
            rio_win = rasterio.windows.Window(0, y0, w, win.height)
            dst.write(np.ascontiguousarray(rgb.transpose(2, 0, 1)), window=rio_win)
            dst.write_mask(np.where(valid, 255, 0).astype(np.uint8), window=rio_win)


__all__ = ["REMOTE_DRIVERS", "check_url", "checked_item", "image_item", "read_area", "source_kind"]
