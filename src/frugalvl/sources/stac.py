"""STAC items as scenes: chosen assets (or bands by common name) on one grid, read by range requests.

* The item is read with ``pystac`` from a local ``.json`` or an ``http(s)`` URL (one request). Several
  items are one mosaic, the first one on top: an item collection (a ``FeatureCollection``), a list
  file (a ``.json`` array of item paths, relative to it, or URLs), or ``stac-items:["a.json", "b.json"]``
  (:func:`items_source`: what ``--stac-items`` and a Python list of items become).
* Bands: ``assets`` (every band of each), else ``bands`` names matched against the assets'
  ``eo:bands``/``raster:bands``/``bands`` common names and names (or asset keys), else the ``visual``
  asset, else red, green, blue.
* Grid: the CRS and pixel size of the finest chosen band (or ``resolution``) over the union of the
  assets' bounds. An asset already on that grid is read as is; any other (coarser, or in another CRS)
  through a GDAL warped VRT, bilinear. Assets are COGs read window by window (``/vsicurl/`` range
  requests for URLs), never downloaded whole.
* ``raster:bands`` scale/offset are applied (the data become float32) and its nodata is honoured.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from .bands import canonical
from .grid import GridSource, Layer

HTTP_TIMEOUT_S = 30
RGB = ("red", "green", "blue")
ALL = 0  # the band of a Pick that stands for every band of an asset without band metadata


@dataclass(frozen=True)
class Pick:
    """One chosen band: an asset key, a 1-based band of that asset, its name, scale/offset/nodata."""

    asset: str
    band: int
    name: str
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None


MOSAIC = "stac-items:"
MAX_ITEM_BYTES = 32 << 20


def is_remote(name: str) -> bool:
    return name.startswith(("http://", "https://"))


def items_source(names: Sequence[Any]) -> str:
    """Several STAC items (paths or URLs) as one source string, mosaicked in this order."""
    names = [str(n) for n in names]
    if not names:
        raise UserError("no STAC items given: give one or more item files or URLs")
    return MOSAIC + json.dumps(names)


def mosaic_members(name: str) -> list[str] | None:
    """The items of a ``stac-items:[…]`` source, None for any other input."""
    if not str(name).startswith(MOSAIC):
        return None
    try:
        members = json.loads(str(name)[len(MOSAIC) :])
    except ValueError:
        members = None
    if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
        raise UserError(f'{str(name)[:120]} is not a list of STAC items: write stac-items:["a.json", "b.json"]')
    return members


def read_items(name: str) -> list[Any]:
    """The pystac Items of a local file or URL: one item, the features of an item collection or the
    items of a list file (in their order); one line when it is unreachable or holds no item."""
    import pystac

    members = mosaic_members(name)
    if members is not None:
        return [item for m in members for item in read_items(m)]
    try:
        if is_remote(name):
            from ..urlfetch import urlopen

            with urlopen(name, timeout=HTTP_TIMEOUT_S) as r:
                text = r.read(MAX_ITEM_BYTES + 1)
            if len(text) > MAX_ITEM_BYTES:
                raise UserError(f"STAC item {name} is over {MAX_ITEM_BYTES >> 20} MB: give an item, not a catalogue")
        else:
            if not Path(name).is_file():
                raise UserError(f"STAC item {name} does not exist: check the path")
            text = Path(name).read_bytes()
    except UserError:
        raise
    except Exception as exc:  # urllib's HTTPError/URLError, timeouts
        raise UserError(f"cannot fetch STAC item {name}: {str(exc)[:100]} (check the URL)") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise UserError(f"{name} is not JSON: give a STAC item (.json)") from None
    if isinstance(data, list) and data and all(isinstance(m, str) for m in data):  # a list file
        return [item for m in data for item in read_items(_relative(m, name))]
    kind = data.get("type") if isinstance(data, dict) else type(data).__name__
    features = data.get("features") if kind == "FeatureCollection" else [data]
    if not isinstance(features, list) or not features:
        raise UserError(f"{name} is a STAC item collection without items: give items that cover the area")
    items = []
    for feature in features:
        if (
            not isinstance(feature, dict)
            or feature.get("type") != "Feature"
            or not isinstance(feature.get("assets"), dict)
        ):
            raise UserError(f"{name} is not a STAC item (its type is {kind!r}, an item is a 'Feature' with assets)")
        try:
            item = pystac.Item.from_dict(feature, preserve_dict=False)
        except Exception as exc:  # pystac's validation errors
            raise UserError(f"{name} is not a valid STAC item ({str(exc)[:100]})") from None
        item.set_self_href(name if is_remote(name) else str(Path(name).resolve()))
        items.append(item)
    return items


def _relative(member: str, name: str) -> str:
    """An item named in a list file: a URL, an absolute path, or a path relative to the list."""
    if "://" in member or Path(member).is_absolute():
        return member
    if is_remote(name):
        from urllib.parse import urljoin

        return urljoin(name, member)
    return str(Path(name).parent / member)


def local_item_id(path: Path) -> str | None:
    """The id of a local STAC item file as a safe file stem (None when it is not one)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return item_stem(data)


@functools.lru_cache(maxsize=64)
def remote_item_id(url: str) -> str | None:
    """The id of a STAC item at ``url`` as a safe file stem (one request, remembered); None when it is
    not an item or does not answer (its reader then says why)."""
    from ..urlfetch import urlopen

    try:
        with urlopen(url, timeout=HTTP_TIMEOUT_S) as r:
            data = json.loads(r.read(MAX_ITEM_BYTES))
    except Exception:  # noqa: BLE001 - unreachable or not JSON: the file name stays the stem
        return None
    return item_stem(data)


def item_stem(data: Any) -> str | None:
    """A STAC item's id (a dict read from JSON) as a safe file stem; None when it is not an item."""
    ident = data.get("id") if isinstance(data, dict) and data.get("type") == "Feature" else None
    if not isinstance(ident, str) or not ident.strip():
        return None
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in ident.strip())
    return safe.lstrip(".") or None


def _band_info(asset: Any) -> list[dict[str, Any]]:
    """Per band of an asset: ``names`` (common name, name), ``scale``, ``offset``, ``nodata``."""
    fields = asset.extra_fields
    eo = fields.get("eo:bands") or []
    raster = fields.get("raster:bands") or []
    bands11 = fields.get("bands") or []
    n = max(len(eo), len(raster), len(bands11))
    out = []
    for i in range(n):
        e = eo[i] if i < len(eo) else {}
        r = raster[i] if i < len(raster) else {}
        b = bands11[i] if i < len(bands11) else {}
        names = [e.get("common_name"), e.get("name"), b.get("eo:common_name"), b.get("name")]
        out.append(
            {
                "names": [canonical(x) for x in names if x],
                "scale": float(r.get("scale", b.get("scale", 1.0))),
                "offset": float(r.get("offset", b.get("offset", 0.0))),
                "nodata": r.get("nodata", b.get("nodata", fields.get("nodata"))),
            }
        )
    return out


def _pick(key: str, info: list[dict[str, Any]], band: int, name: str) -> Pick:
    i = info[band - 1] if band <= len(info) else {}
    nodata = i.get("nodata")
    nodata = float(nodata) if isinstance(nodata, int | float) else None  # "nan"/"inf" strings: the file's mask
    return Pick(key, band, name, i.get("scale", 1.0), i.get("offset", 0.0), nodata)


def choose_bands(item: Any, name: str, assets: Sequence[str] | None, bands: Sequence[int | str] | None) -> list[Pick]:
    """The bands to read, in order (see the module's docstring)."""
    info = {k: _band_info(a) for k, a in item.assets.items()}
    if assets:
        missing = [a for a in assets if a not in item.assets]
        if missing:
            raise UserError(f"{name} has no asset {missing[0]!r} (its assets: {', '.join(item.assets)})")
        return [
            _pick(k, info[k], b, (info[k][b - 1]["names"] or [k])[0]) if info[k] else Pick(k, ALL, k)
            for k in assets
            for b in range(1, max(1, len(info[k])) + 1)
        ]
    names = [b for b in bands or () if isinstance(b, str)]
    if not names:
        if "visual" in item.assets:
            n = len(info["visual"])
            if not n:
                return [Pick("visual", ALL, "visual")]
            return [_pick("visual", info["visual"], b, (RGB + ("alpha",))[min(b - 1, 3)]) for b in range(1, n + 1)]
        names = list(RGB)
    picks = []
    for want in names:
        want = canonical(want)
        hit = next(
            (
                _pick(k, inf, i + 1, want)
                for k, inf in info.items()
                for i, band in enumerate(inf)
                if want in band["names"]
            ),
            None,
        )
        if hit is None:
            hit = next((_pick(k, info[k], 1, want) for k in item.assets if k.lower() == want), None)
        if hit is None:
            known = sorted({n for inf in info.values() for band in inf for n in band["names"]})
            raise UserError(
                f"{name} has no band named {want!r} (its bands: {', '.join(known) or 'none named'}; "
                f"assets: {', '.join(item.assets)}): choose assets by name or other bands"
            )
        picks.append(hit)
    return picks


def _expand(pick: Pick, count: int) -> list[Pick]:
    """A pick of every band of an asset (:data:`ALL`) as one pick per band, named red, green, blue for
    the first three of a ``visual`` asset."""
    if pick.band != ALL:
        return [pick]
    names = list(RGB) + ["alpha"] if pick.asset == "visual" and count in (3, 4) else []
    return [Pick(pick.asset, b, names[b - 1] if names else f"{pick.asset}_{b}") for b in range(1, count + 1)]


def _open(href: str, name: str, drivers: Sequence[str] | None = None) -> Any:
    """An asset opened by GDAL (with one of ``drivers`` only, when given)."""
    import rasterio
    from rasterio.errors import RasterioIOError

    why = "no allowed driver reads it"
    tries: list[str | None] = list(drivers) if drivers else [None]
    for driver in tries:
        try:
            src = rasterio.open(href, driver=driver)
        except RasterioIOError as exc:
            why = str(exc).splitlines()[0][:100]
            continue
        if driver is None or src.driver == driver:
            return src
        src.close()
    allowed = f" as {', '.join(drivers)}" if drivers else ""
    raise UserError(f"cannot open an asset of {name}{allowed} ({href}): {why}") from None


def _grid(datasets: list[Any], resolution: float | None) -> tuple[Any, Any, int, int]:
    """CRS, transform, height, width of the finest dataset's CRS and pixel size over all their bounds."""
    from rasterio.transform import from_origin
    from rasterio.warp import transform_bounds

    finest = min(datasets, key=lambda d: abs(d.transform.a))
    crs = finest.crs
    res = resolution or abs(finest.transform.a)
    boxes = [transform_bounds(d.crs, crs, *d.bounds) if d.crs != crs else tuple(d.bounds) for d in datasets]
    left, bottom = min(b[0] for b in boxes), min(b[1] for b in boxes)
    right, top = max(b[2] for b in boxes), max(b[3] for b in boxes)

    def cells(span: float) -> int:
        n = span / res
        return max(1, round(n) if abs(n - round(n)) < 1e-6 else math.ceil(n))

    return crs, from_origin(left, top, res, res), cells(top - bottom), cells(right - left)


def build(
    items: list[Any],
    name: str,
    picks: list[list[Pick]],
    resolution: float | None,
    drivers: Sequence[str] | None = None,
) -> GridSource:
    """The picked bands of ``items`` on one grid, mosaicked in order (closing the source closes the assets);
    ``drivers``: the GDAL drivers the assets may be opened with (any, when None)."""
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    opened: dict[tuple[int, str], Any] = {}
    owned: list[Any] = []
    try:
        for i, (item, item_picks) in enumerate(zip(items, picks, strict=True)):
            for p in item_picks:
                if (i, p.asset) not in opened:
                    opened[i, p.asset] = _open(item.assets[p.asset].get_absolute_href(), name, drivers)
                    owned.append(opened[i, p.asset])
            item_picks[:] = [q for p in item_picks for q in _expand(p, opened[i, p.asset].count)]
            for p in item_picks:
                if p.band > opened[i, p.asset].count:
                    raise UserError(f"{name}: asset {p.asset!r} has {opened[i, p.asset].count} band(s), not {p.band}")
        if len({len(p) for p in picks}) != 1:
            raise UserError(f"{name}: its items do not have the same number of chosen bands: choose assets by name")
        crs, transform, h, w = _grid(list(opened.values()), resolution)
        on_grid: dict[tuple[int, str], Any] = {}
        for key, ds in opened.items():
            if ds.crs == crs and ds.transform.almost_equals(transform) and (ds.height, ds.width) == (h, w):
                on_grid[key] = ds
            else:
                # without a nodata value, an alpha band marks the pixels outside the asset as invalid
                alpha = ds.nodata is None
                vrt = WarpedVRT(
                    ds, crs=crs, transform=transform, height=h, width=w, resampling=Resampling.bilinear, add_alpha=alpha
                )
                owned.append(vrt)
                on_grid[key] = vrt
    except BaseException:
        for ds in reversed(owned):
            ds.close()
        raise
    layers = [
        [
            Layer(on_grid[i, ps[b].asset], ps[b].band, ps[b].scale, ps[b].offset, ps[b].nodata)
            for i, ps in enumerate(picks)
        ]
        for b in range(len(picks[0]))
    ]
    return GridSource(
        name=name,
        bands=layers,
        crs=crs,
        full_transform=transform,
        crop=(0, 0, h, w),
        band_names=[p.name for p in picks[0]],
        reopen_with=lambda: build(items, name, picks, resolution, drivers),
        owned=owned,
    )


def open_item(
    name: str,
    assets: Sequence[str] | None,
    bands: Sequence[int | str] | None,
    resolution: float | None,
    drivers: Sequence[str] | None = None,
) -> GridSource:
    """A STAC item or item collection (local ``.json`` or URL) as a :class:`GridSource` of its chosen
    bands (the items mosaicked in their order: a pixel comes from the first item that has data there);
    ``drivers``: the only GDAL drivers its assets may be opened with."""
    items = read_items(name)
    picks = [choose_bands(item, name, assets, bands) for item in items]
    return build(items, name, picks, resolution, drivers)
