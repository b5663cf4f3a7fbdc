"""What identifies a remote input's content, not only its address
(docs/reliability.md#resume-never-reuse-stale-results).

A record keeps an input's identity so a changed input is never resumed with stale tiles nor reported done:

* ``http(s)://``: the server's ``ETag``, ``Last-Modified``, the size and a SHA-256 of the first
  :data:`HEAD_BYTES` bytes (one range request);
* ``s3://``, ``gs://`` and GDAL ``/vsi…`` paths: the same, through GDAL's own virtual file layer (so its
  credentials and options apply): the object's size, the ``ETag`` and ``Last-Modified`` its server sent
  (GDAL's ``HEADERS`` metadata) and a SHA-256 of its first bytes;
* a tile service (``xyz+…``): its template, the zoom and the probe tile under the centre of the area read
  (``z/x/y``), with that tile's ``ETag``, ``Last-Modified`` and size (a ``HEAD`` request: no tile is
  downloaded twice). A run keeps its tiles in its scene's part folder, which is emptied when the record
  changes, so a changed probe tile means no cached tile is reused. A change confined to other tiles, on a
  server that sends none of these headers, is not seen;
* a WMTS source (``wmts+…``): its address and its capabilities document's ``ETag``, ``Last-Modified`` and
  size (a ``HEAD`` request): a service that replaces imagery without touching its capabilities is not
  seen.

A source that does not answer gives its address only (its reader reports the failure).
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import logging
import math
import os
import threading
import urllib.error
import urllib.request
from typing import Any

from ..urlfetch import urlopen

log = logging.getLogger(__name__)

HEAD_BYTES = 65536  # the first bytes of a remote input, hashed: its header (and more) identifies its content
TIMEOUT_S = 30.0
_VSI_SCHEMES = {"s3://": "/vsis3/", "gs://": "/vsigs/"}


def remote_identity(url: str) -> dict[str, Any]:
    """The identity of a remote input (module docstring); local-looking names give the address only."""
    if url.lower().startswith(("http://", "https://")):
        return http_identity(url)
    for scheme, prefix in _VSI_SCHEMES.items():
        if url.startswith(scheme):
            return vsi_identity(prefix + url[len(scheme) :], url)
    if url.startswith("/vsi"):
        return vsi_identity(url, url)
    return {"url": url}


def http_identity(url: str) -> dict[str, Any]:
    """An http(s) input: address, ``ETag``, ``Last-Modified``, size and the hash of its first bytes."""
    ident: dict[str, Any] = {"url": url}
    request = urllib.request.Request(url, headers={"Range": f"bytes=0-{HEAD_BYTES - 1}"})
    try:
        with urlopen(request, timeout=TIMEOUT_S) as answer:
            head = answer.read(HEAD_BYTES)
            headers = answer.headers
    except (OSError, ValueError):
        return ident
    total = (headers.get("Content-Range") or "").rpartition("/")[2]
    size = total if total.isdigit() else headers.get("Content-Length")
    ident.update(
        etag=headers.get("ETag"),
        last_modified=headers.get("Last-Modified"),
        size=int(size) if size and str(size).isdigit() else None,
        head_sha256=hashlib.sha256(head).hexdigest(),
    )
    return ident


# ---------------------------------------------------------------- GDAL's virtual file layer


def vsi_stat(path: str) -> dict[str, Any] | None:
    """``{"size", "headers", "head"}`` of a GDAL virtual file (its first :data:`HEAD_BYTES` bytes), or None
    when GDAL cannot open it or its library is not at hand. Tests replace this function."""
    gdal = _gdal()
    if gdal is None:
        return None
    raw = path.encode()
    if path.startswith(("/vsicurl/", "/vsis3/", "/vsigs/", "/vsiaz/", "/vsiadls/", "/vsioss/", "/vsiswift/")):
        gdal.VSICurlPartialClearCache(raw)  # a file changed since this process last asked: ask again
    handle = gdal.VSIFOpenL(raw, b"rb")
    if not handle:
        return None
    try:
        buffer = ctypes.create_string_buffer(HEAD_BYTES)
        got = gdal.VSIFReadL(buffer, 1, HEAD_BYTES, handle)
        gdal.VSIFSeekL(handle, 0, 2)  # SEEK_END: the size, from what the server said (no download)
        size = int(gdal.VSIFTellL(handle))
    finally:
        gdal.VSIFCloseL(handle)
    headers: dict[str, str] = {}
    listing = gdal.VSIGetFileMetadata(raw, b"HEADERS", None)
    if listing:
        i = 0
        while listing[i]:
            key, _, value = listing[i].decode(errors="replace").partition("=")
            headers[key.lower()] = value
            i += 1
        gdal.CSLDestroy(listing)
    return {"size": size, "headers": headers, "head": buffer.raw[:got]}


def vsi_identity(path: str, name: str) -> dict[str, Any]:
    """An input read through GDAL (``s3://`` as ``/vsis3/``, ...): address, size, ``ETag``, ``Last-Modified``
    and the hash of its first bytes."""
    ident: dict[str, Any] = {"url": name}
    try:
        found = vsi_stat(path)
    except (OSError, ValueError, AttributeError) as exc:
        log.debug("could not ask GDAL about %s: %s", name, exc)
        found = None
    if found is None:
        return ident
    headers = found["headers"]
    ident.update(
        etag=headers.get("etag"),
        last_modified=headers.get("last-modified"),
        size=found["size"],
        head_sha256=hashlib.sha256(found["head"]).hexdigest(),
    )
    return ident


_GDAL: list[Any] = []
_GDAL_LOCK = threading.Lock()


def _gdal() -> Any:
    """The GDAL library rasterio loaded (so its configuration and credentials apply), typed for ctypes."""
    with _GDAL_LOCK:
        if not _GDAL:
            _GDAL.append(_load_gdal())
        return _GDAL[0]


def _load_gdal() -> Any:
    import rasterio  # loads its GDAL

    names = []
    try:
        with open("/proc/self/maps") as maps:
            names = sorted({line.split()[-1] for line in maps if "libgdal" in line.rsplit("/", 1)[-1]})
    except OSError:
        pass
    base = os.path.dirname(os.path.dirname(rasterio.__file__))
    names += glob.glob(os.path.join(base, "rasterio*libs", "libgdal*")) + glob.glob(
        os.path.join(os.path.dirname(rasterio.__file__), ".dylibs", "libgdal*")
    )
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.VSIFOpenL.restype, lib.VSIFOpenL.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
        lib.VSIFReadL.restype = ctypes.c_size_t
        lib.VSIFReadL.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
        lib.VSIFSeekL.restype, lib.VSIFSeekL.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int]
        lib.VSIFTellL.restype, lib.VSIFTellL.argtypes = ctypes.c_uint64, [ctypes.c_void_p]
        lib.VSIFCloseL.restype, lib.VSIFCloseL.argtypes = ctypes.c_int, [ctypes.c_void_p]
        lib.VSIGetFileMetadata.restype = ctypes.POINTER(ctypes.c_char_p)
        lib.VSIGetFileMetadata.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
        lib.CSLDestroy.restype, lib.CSLDestroy.argtypes = None, [ctypes.POINTER(ctypes.c_char_p)]
        lib.VSICurlPartialClearCache.restype, lib.VSICurlPartialClearCache.argtypes = None, [ctypes.c_char_p]
        return lib
    log.debug("GDAL's library was not found: remote inputs read by GDAL are identified by their address")
    return None


# ---------------------------------------------------------------- tile services


def xyz_identity(name: str, zoom: int, lon: float, lat: float) -> dict[str, Any]:
    """A tile service (``xyz+URL``) read at ``zoom`` around ``lon``/``lat``: its template, the zoom, and the
    tile under that point (``probe``) with what its server says of it on a ``HEAD`` request (``ETag``,
    ``Last-Modified``, size): no tile body is fetched twice for it (the run caches every tile it reads)."""
    template = name[len("xyz+") :] if name.startswith("xyz+") else name
    n = 1 << zoom
    x = min(n - 1, max(0, int((lon + 180.0) / 360.0 * n)))
    lat = max(-85.0511, min(85.0511, lat))
    y = min(n - 1, max(0, int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)))
    url = template.replace("{z}", str(zoom)).replace("{x}", str(x)).replace("{y}", str(y))
    return {"url": name, "zoom": zoom, "probe": f"{zoom}/{x}/{y}", **head_identity(url)}


def wmts_identity(name: str) -> dict[str, Any]:
    """A WMTS source (``wmts+URL?layer=...``): its address and what a ``HEAD`` request on its capabilities
    document says of it (``ETag``, ``Last-Modified``, size)."""
    from .wmts import split_source

    url, _ = split_source(name)
    return {"url": name, "capabilities": head_identity(url)}


def head_identity(url: str) -> dict[str, Any]:
    """``ETag``, ``Last-Modified`` and size of an http(s) resource from a ``HEAD`` request (nothing fetched);
    the status of a refusal; ``{}`` for other schemes and a server that does not answer."""
    if not url.lower().startswith(("http://", "https://")):
        return {}
    try:
        request = urllib.request.Request(url, method="HEAD")
        with urlopen(request, timeout=TIMEOUT_S) as answer:
            headers = answer.headers
    except urllib.error.HTTPError as exc:
        return {"status": exc.code}
    except (OSError, ValueError):
        return {}
    size = headers.get("Content-Length")
    return {
        "etag": headers.get("ETag"),
        "last_modified": headers.get("Last-Modified"),
        "size": int(size) if size and size.isdigit() else None,
    }
