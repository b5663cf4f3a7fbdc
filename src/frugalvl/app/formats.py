"""What a file the app opens really is: its content decides, not its name (docs/app.md, "Security").

GDAL picks a reader by probing a file's content, and some formats (VRT above all) name other files,
``/vsi…`` paths or URLs that GDAL then reads. So every image the app opens (an upload, a file under
a data-root folder) is checked here first:

* its first bytes must be one of the allowed formats (TIFF, PNG, JPEG, JPEG 2000, BMP), and the
  format its name declares (``.tif`` -> TIFF, ...);
* a VRT is accepted only from a data-root folder, and only when every file it names (followed
  through nested VRTs) lies inside the data-root folders and is itself an allowed format; no
  ``/vsi…`` path, URL, inline dataset or pixel-function code anywhere in it;
* GDAL then opens it with only the driver of that format (:data:`frugalvl.raster.GDAL_DRIVERS`),
  inside :func:`gdal_env`: no sidecar files looked up, no network, no Python in VRTs.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from xml.etree import ElementTree

from ..errors import UserError

# format -> the file-name suffixes that declare it
SUFFIXES = {
    "tiff": (".tif", ".tiff"),
    "png": (".png",),
    "jpeg": (".jpg", ".jpeg"),
    "jp2": (".jp2",),
    "bmp": (".bmp",),
    "vrt": (".vrt",),
}
MAX_VRT_BYTES = 1 << 20  # a VRT is a short XML file
MAX_VRT_DEPTH = 4  # VRTs naming VRTs


def sniff(head: bytes) -> str | None:
    """The format the first bytes of a file show (a key of :data:`SUFFIXES`), or None.

    An image whose first bytes also hold an XML dataset's tag (a JPEG comment saying ``<VRTDataset``,
    which GDAL's own probing could take for a VRT) is none of them."""
    if b"VRTDataset" in head and not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        return None
    if b"TileIndexDataset" in head:
        return None
    if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return "tiff"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"\0\0\0\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return "jp2"
    if head.startswith(b"BM") and len(head) >= 26:
        return "bmp"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<?xml"):
        text = text[text.find(b"?>") + 2 :].lstrip() if b"?>" in text else b""
    if text.startswith(b"<VRTDataset") or (text.startswith(b"<") and b"<VRTDataset" in text):
        return "vrt"
    return None


def declared(name: str) -> str | None:
    """The format a file name declares by its suffix."""
    suffix = Path(name).suffix.lower()
    return next((kind for kind, suffixes in SUFFIXES.items() if suffix in suffixes), None)


def content_kind(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return sniff(f.read(4096))
    except OSError:
        return None


@contextmanager
def gdal_env() -> Iterator[None]:
    """GDAL settings for reading what a browser chose: no directory listing (so no sidecar files), no
    network (``/vsicurl/`` refused, HTTP fails fast), no Python pixel functions in VRTs."""
    import rasterio

    with rasterio.Env(
        GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",
        GDAL_VRT_ENABLE_PYTHON="NO",
        CPL_VSIL_CURL_ALLOWED_EXTENSIONS=".frugalvl-no-network",
        GDAL_HTTP_TIMEOUT="1",
        GDAL_HTTP_MAX_RETRY="0",
        GDAL_HTTP_PROXY="127.0.0.1:9",
        GDAL_PAM_ENABLED="NO",
    ):
        yield


def check_image_file(path: Path, name: str, vrt_roots: Sequence[Path] = ()) -> str:
    """The format of ``path`` (shown to the user as ``name``) when the app may open it; else a UserError.

    ``vrt_roots``: the data-root folders, when ``path`` is a server file (a VRT is accepted only then,
    naming files inside these folders only). Uploads pass none.
    """
    want = declared(name)
    if want is None:
        raise UserError(f"{name}: unsupported file type; open a {', '.join(sum(SUFFIXES.values(), ()))} file")
    kind = content_kind(path)
    if kind is None:
        raise UserError(f"cannot read {name}: not a valid image file (corrupt, empty or an unsupported format)")
    if kind != want:
        raise UserError(
            f"{name}: its content is a {kind.upper()} file, not the {want.upper()} its name says: "
            "open the file under its own format's name"
        )
    if kind == "vrt":
        if not vrt_roots:
            raise UserError(f"{name}: a VRT names other files: the app opens VRTs only from its data-root folders")
        check_vrt(path, name, vrt_roots, depth=0, seen=set())
    probe(path, name, kind)
    return kind


def probe(path: Path, name: str, kind: str) -> None:
    """Open ``path`` with only its format's GDAL driver (PNG, JPEG and BMP are decoded without GDAL)."""
    if kind not in ("tiff", "jp2", "vrt"):
        return
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    from ..raster import GDAL_DRIVERS

    try:
        with gdal_env(), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            driver = GDAL_DRIVERS[SUFFIXES[kind][0]]
            with rasterio.open(path, driver=driver) as src:
                if src.driver != driver:
                    raise UserError(f"cannot read {name}: GDAL reads it as {src.driver}, not {kind.upper()}")
    except RasterioIOError:
        raise UserError(f"cannot read {name}: not a readable {kind.upper()} file (corrupt or truncated?)") from None


_FORBIDDEN = re.compile(r"/vsi|\w+://|^\s*<", re.IGNORECASE)
_SOURCE_TAGS = ("sourcefilename", "sourcedataset")


def _name(tag: str) -> str:
    """A tag or attribute name as GDAL compares it: without namespace, lower case."""
    return tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1].lower()


def check_vrt(path: Path, name: str, roots: Sequence[Path], depth: int, seen: set[Path]) -> None:
    """Every file a VRT names lies under ``roots`` and is an allowed format (nested VRTs followed)."""

    def refuse(why: str) -> UserError:
        return UserError(f"{name}: the app does not open this VRT ({why})")

    if depth > MAX_VRT_DEPTH:
        raise refuse(f"VRTs nested more than {MAX_VRT_DEPTH} deep")
    real = path.resolve()
    if real in seen:
        raise refuse("it names itself")
    seen = seen | {real}
    if path.stat().st_size > MAX_VRT_BYTES:
        raise refuse(f"larger than {MAX_VRT_BYTES >> 10} kB")
    data = path.read_bytes()
    if any(mark in data.upper() for mark in (b"<!DOCTYPE", b"<!ENTITY", b"<!--", b"<![CDATA[")):
        raise refuse("XML comments, CDATA, or declarations of entities or document types")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError:
        raise refuse("not well-formed XML") from None
    # GDAL matches tag and attribute names without regard to case or namespace: so does this check
    if _name(root.tag) != "vrtdataset" or any(_name(k) == "subclass" for k in root.attrib):
        raise refuse("only plain VRTDataset files")
    for element in root.iter():
        tag, attrib = _name(element.tag), {_name(k): v for k, v in element.attrib.items()}
        if tag.startswith("pixelfunction") or "pixelfunctionlanguage" in attrib:
            raise refuse("pixel-function code")
        values = [element.text or "", *attrib.values()]
        if tag not in _SOURCE_TAGS and any("/vsi" in v.lower() or "://" in v for v in values):
            raise refuse("a /vsi path or a URL")
        if tag in _SOURCE_TAGS:
            source = element.text or ""
            if not source or source != source.strip() or "\0" in source or _FORBIDDEN.search(source):
                raise refuse("a source that is not a plain file: a /vsi path, a URL or an inline dataset")
            relative = attrib.get("relativetovrt", "0").strip() == "1"
            target = (path.parent / source) if relative else Path(source)
            if not target.is_absolute():
                raise refuse("a source relative to the server's working folder")
            resolved = Path(os.path.abspath(target)).resolve()
            if not any(resolved.is_relative_to(r.resolve()) for r in roots):
                raise refuse("a source outside the data-root folders")
            if not resolved.is_file():
                raise refuse(f"its source {source} is not a file")
            kind = content_kind(resolved)
            if kind == "vrt":
                check_vrt(resolved, name, roots, depth + 1, seen)
            elif kind is None or kind == "bmp":
                raise refuse(f"its source {source} is not a TIFF, PNG, JPEG or JPEG 2000 file")
