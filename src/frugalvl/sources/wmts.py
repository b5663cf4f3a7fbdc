"""WMTS services (``wmts+https://host/WMTSCapabilities.xml?layer=L&tilematrixset=T``) as scenes.

The capabilities document (OGC WMTS 1.0, parsed with the standard library) gives the layer's tile
matrix set; one of its tile matrices is the scene, a :class:`~frugalvl.sources.tiles.TileDataset` in
the set's CRS (fetched ``max_requests`` at a time, cached under the run's work folder, refused tiles
nodata with one line). The capabilities are saved there with the first tile, so a resumed run asks
for nothing again.

* ``layer``, ``tilematrixset`` and ``style`` are query parameters of the source (removed from the
  capabilities URL); each may be left out when the document has one choice (a style: its default).
* ``zoom`` names a tile matrix: the one whose identifier is that number (``"16"``, ``"EPSG:3857:16"``),
  else the ``zoom``-th in the set (from 0); ``resolution`` (metres) the matrix whose pixel size is the
  nearest on a log scale (0.28 mm pixels, degrees at 111 319.49 m).
* Tiles come from the layer's ``ResourceURL`` template (RESTful) when it has one, else from KVP
  ``GetTile`` requests to the capabilities' ``GetTile`` address (or the capabilities URL's own).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from xml.etree import ElementTree

from ..errors import UserError
from ..urlfetch import urlopen
from .tiles import TileDataset
from .xyz import safe_stem

log = logging.getLogger(__name__)

PREFIX = "wmts+"
OPTIONS = ("layer", "tilematrixset", "style")
MAX_CAPABILITIES_BYTES = 16 << 20
PIXEL_M = 0.28e-3  # the standard rendering pixel size of WMTS scale denominators
DEGREE_M = 2 * math.pi * 6378137.0 / 360  # metres per degree for geographic tile matrix sets
CAPABILITIES = "capabilities.xml"


def is_wmts(name: str) -> bool:
    return str(name).startswith(PREFIX)


def split_source(name: str) -> tuple[str, dict[str, str]]:
    """The capabilities URL and the options (``layer``, ``tilematrixset``, ``style``) of a source."""
    parts = urlsplit(str(name)[len(PREFIX) :])
    if parts.scheme not in ("http", "https"):
        raise UserError(f"{name}: a WMTS source is wmts+https://host/WMTSCapabilities.xml?layer=NAME")
    options, kept = {}, []
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k.lower() in OPTIONS:
            options[k.lower()] = v
        else:
            kept.append((k, v))
    return urlunsplit(parts._replace(query=urlencode(kept))), options


def wmts_stem(name: str) -> str:
    """``wmts_<host and path>_<layer>``."""
    url, options = split_source(name)
    base = url.split("?", 1)[0]
    return safe_stem("wmts", base + ("_" + options["layer"] if options.get("layer") else ""))


# ----------------------------------------------------------------------------- the capabilities


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(node: Any, name: str) -> list[Any]:
    return [c for c in node if _local(c.tag) == name]


def _text(node: Any, name: str, default: str | None = None) -> str | None:
    found = _children(node, name)
    return (found[0].text or "").strip() if found else default


@dataclass(frozen=True)
class Matrix:
    ident: str
    scale: float  # scale denominator
    corner: tuple[float, float]  # top-left, as written (axis order of the CRS)
    tile: tuple[int, int]  # width, height
    size: tuple[int, int]  # matrix width, height (tiles)


_FETCHED: dict[tuple[str, str], bytes] = {}  # (cache folder, URL) -> capabilities fetched by this process


def fetch_capabilities(url: str, cache: Path, timeout: float = 30.0) -> bytes:
    """The capabilities document: from ``cache`` when a run saved it there (with its first tile), from
    this process's memory when it fetched it before, else from the server."""
    path = cache / CAPABILITIES
    if path.is_file():
        return path.read_bytes()
    key = (str(cache), url)
    if key in _FETCHED:
        return _FETCHED[key]
    try:
        with urlopen(url, timeout=timeout) as r:
            body = r.read(MAX_CAPABILITIES_BYTES + 1)
    except UserError:
        raise
    except Exception as exc:  # urllib's HTTPError/URLError, timeouts
        raise UserError(f"cannot fetch the WMTS capabilities {url}: {str(exc)[:100]} (check the URL)") from None
    if len(body) > MAX_CAPABILITIES_BYTES:
        raise UserError(f"the WMTS capabilities {url} are over {MAX_CAPABILITIES_BYTES >> 20} MB: check the URL")
    while len(_FETCHED) >= 16:
        _FETCHED.pop(next(iter(_FETCHED)))
    _FETCHED[key] = body
    return body


def parse_capabilities(body: bytes, name: str) -> Any:
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:  # no entity expansion from a remote document
        raise UserError(f"{name}: the WMTS capabilities declare a DOCTYPE, which is not read")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise UserError(f"{name}: the WMTS capabilities are not XML ({exc})") from None
    if _local(root.tag) != "Capabilities" or not _children(root, "Contents"):
        raise UserError(f"{name}: not a WMTS capabilities document (no Capabilities/Contents)")
    return root


def _choose(kind: str, found: dict[str, Any], wanted: str | None, name: str) -> Any:
    if wanted is not None:
        if wanted not in found:
            raise UserError(f"{name}: no {kind} {wanted!r} (choose one of {', '.join(found) or 'none'})")
        return found[wanted]
    if len(found) != 1:
        raise UserError(f"{name}: give ?{kind}=NAME, one of {', '.join(found) or 'none'}")
    return next(iter(found.values()))


def _crs(text: str, name: str) -> Any:
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    t = text.strip()
    if t.upper().endswith("CRS84"):
        t = "OGC:CRS84"
    elif t.lower().startswith("urn:ogc:def:crs:epsg:"):
        t = "EPSG:" + t.rsplit(":", 1)[-1]
    try:
        return CRS.from_user_input(t)
    except CRSError:
        raise UserError(f"{name}: unknown CRS {text!r} in the WMTS capabilities") from None


def metres_per_unit(crs: Any) -> float:
    if crs.is_geographic:
        return DEGREE_M
    try:
        return float(crs.linear_units_factor[1])
    except Exception:  # noqa: BLE001 - a CRS without linear units: take metres
        return 1.0


def _matrices(tms: Any) -> list[Matrix]:
    out = []
    for m in _children(tms, "TileMatrix"):
        corner = [float(v) for v in (_text(m, "TopLeftCorner") or "0 0").split()]
        out.append(
            Matrix(
                ident=_text(m, "Identifier") or "",
                scale=float(_text(m, "ScaleDenominator") or "nan"),
                corner=(corner[0], corner[1]),
                tile=(int(_text(m, "TileWidth") or 256), int(_text(m, "TileHeight") or 256)),
                size=(int(_text(m, "MatrixWidth") or 1), int(_text(m, "MatrixHeight") or 1)),
            )
        )
    return out


def pick_matrix(matrices: list[Matrix], zoom: int | None, resolution: float | None, mpu: float, name: str) -> Matrix:
    """The tile matrix named by ``zoom`` (identifier, else position) or nearest ``resolution`` metres."""
    if not matrices:
        raise UserError(f"{name}: its tile matrix set has no tile matrix")
    if zoom is not None:
        for m in matrices:
            if m.ident == str(zoom) or m.ident.endswith(f":{zoom}"):
                return m
        if 0 <= zoom < len(matrices):
            return matrices[zoom]
        raise UserError(f"{name}: zoom {zoom} is out of range: give a zoom between 0 and {len(matrices) - 1}")
    if resolution is None:
        raise UserError(f"{name}: a tile service needs a zoom or a resolution (metres)")
    return min(matrices, key=lambda m: abs(math.log(m.scale * PIXEL_M / resolution)))


def _limits(link: Any, ident: str) -> tuple[int, int, int, int] | None:
    for limits in _children(link, "TileMatrixSetLimits"):
        for lim in _children(limits, "TileMatrixLimits"):
            if _text(lim, "TileMatrix") == ident:
                vals = [int(_text(lim, k) or 0) for k in ("MinTileCol", "MaxTileCol", "MinTileRow", "MaxTileRow")]
                return vals[0], vals[1], vals[2], vals[3]
    return None


def _get_tile_url(root: Any, fallback: str) -> str:
    for op in root.iter():
        if _local(op.tag) == "Operation" and op.get("name") == "GetTile":
            for get in op.iter():
                if _local(get.tag) == "Get":
                    href = next((v for k, v in get.attrib.items() if _local(k) == "href"), None)
                    if href:
                        return href
    return fallback


def open_wmts(
    name: str, zoom: int | None, resolution: float | None, cache: Path, max_requests: int, timeout: float | None = None
) -> TileDataset:
    """The WMTS source ``name`` at a tile matrix as a dataset (see the module's docstring)."""
    from affine import Affine
    from rasterio.crs import epsg_treats_as_latlong, epsg_treats_as_northingeasting

    url, options = split_source(name)
    body = fetch_capabilities(url, Path(cache))
    root = parse_capabilities(body, name)
    contents = _children(root, "Contents")[0]
    layers = {_text(lay, "Identifier") or "": lay for lay in _children(contents, "Layer")}
    layer = _choose("layer", layers, options.get("layer"), name)
    layer_id = _text(layer, "Identifier") or ""
    links = {_text(k, "TileMatrixSet") or "": k for k in _children(layer, "TileMatrixSetLink")}
    link = _choose("tilematrixset", links, options.get("tilematrixset"), name)
    tms_id = _text(link, "TileMatrixSet") or ""
    sets = {_text(t, "Identifier") or "": t for t in _children(contents, "TileMatrixSet")}
    if tms_id not in sets:
        raise UserError(f"{name}: the tile matrix set {tms_id!r} is not described in the capabilities")
    tms = sets[tms_id]
    crs = _crs(_text(tms, "SupportedCRS") or "", name)
    mpu = metres_per_unit(crs)
    matrix = pick_matrix(_matrices(tms), zoom, resolution, mpu, name)
    styles = _children(layer, "Style")
    style = options.get("style") or next(
        (_text(s, "Identifier") for s in styles if s.get("isDefault") == "true"),
        _text(styles[0], "Identifier") if styles else "default",
    )
    formats = [f.text.strip() for f in _children(layer, "Format") if f.text]
    fmt = next((f for f in formats if f in ("image/png", "image/jpeg")), formats[0] if formats else "image/png")
    templates = [r for r in _children(layer, "ResourceURL") if r.get("resourceType", "tile") == "tile"]
    template = next((r.get("template") for r in templates if r.get("format") == fmt), None) or next(
        (r.get("template") for r in templates), None
    )
    values = {"TileMatrixSet": tms_id, "TileMatrix": matrix.ident, "Style": style or "default", "Layer": layer_id}
    if template:
        for k, v in values.items():
            template = template.replace("{" + k + "}", v).replace("{" + k.lower() + "}", v)

        def url_of(col: int, row: int) -> str:
            return template.replace("{TileCol}", str(col)).replace("{TileRow}", str(row))  # type: ignore[union-attr]
    else:
        base = _get_tile_url(root, url.split("?", 1)[0])
        fixed = {"SERVICE": "WMTS", "REQUEST": "GetTile", "VERSION": "1.0.0", "FORMAT": fmt}
        fixed.update({k.upper(): v for k, v in values.items()})

        def url_of(col: int, row: int) -> str:
            sep = "&" if "?" in base else "?"
            return base + sep + urlencode({**fixed, "TILEROW": row, "TILECOL": col})

    if not url_of(0, 0).lower().startswith(("http://", "https://")):
        raise UserError(f"{name}: its tile addresses are not http(s) URLs")
    a, b = matrix.corner
    if epsg_treats_as_latlong(crs) or epsg_treats_as_northingeasting(crs):
        a, b = b, a  # the corner is written in the CRS's axis order: northing first
    size = float(f"{matrix.scale * PIXEL_M / mpu:.12g}")  # 1785.714… × 0.28 mm is 0.5 m, not 0.49999…
    log.info("%s: tile matrix %s of %s (%g m pixels)", name, matrix.ident, tms_id, matrix.scale * PIXEL_M)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in matrix.ident) or "matrix"
    return TileDataset(
        name,
        url_of,
        crs,
        Affine(size, 0, a, 0, -size, b),
        (*matrix.tile, *matrix.size),
        Path(cache) / safe,
        max_requests,
        timeout,
        limits=_limits(link, matrix.ident),
        keep={Path(cache) / CAPABILITIES: body},
    )


__all__ = ["is_wmts", "open_wmts", "split_source", "wmts_stem"]
