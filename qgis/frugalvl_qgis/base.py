"""What the plugin's Processing algorithms share: the executable, GDAL layers, the work folder key, the
subprocess run (progress, Cancel, error lines), the styled outputs, and the input and output files."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException

from . import process, settings, styling


class FrugalvlAlgorithm(QgsProcessingAlgorithm):
    """A Processing algorithm that runs one ``frugalvl`` command with ``--progress json``."""

    @staticmethod
    def executable() -> str:
        exe = settings.executable()
        if not exe:
            raise QgsProcessingException(
                "no frugalvl executable: set it in Settings > Options > frugalvl (or put frugalvl on PATH)"
            )
        return exe

    def gdal_layer(self, parameters, name: str, context):
        """The raster layer of parameter ``name``; it must be a file GDAL reads."""
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            raise QgsProcessingException(f"the layer of {name} cannot be read as a raster")
        if layer.providerType() != "gdal":
            raise QgsProcessingException(
                f"layer {layer.name()} comes from the {layer.providerType()} provider, not a file GDAL reads: "
                "save it as a GeoTIFF first (Export > Save As)"
            )
        return layer

    @staticmethod
    def run_frugalvl(argv: list[str], feedback, work: Path) -> list[str]:
        """Run frugalvl, relaying its progress and lines; Cancel and errors become a failed algorithm."""
        feedback.pushInfo(f"work folder: {work}")
        try:
            return process.run(argv, feedback)
        except process.Cancelled as exc:
            raise QgsProcessingException(f"{exc} (work folder {work})") from None
        except process.Failed as exc:
            raise QgsProcessingException(str(exc)) from None

    @staticmethod
    def _given(parameters, name) -> bool:
        value = parameters.get(name)
        return value is not None and str(value) != ""

    @staticmethod
    def _style(context, dest: str, qml: Path | None, name: str) -> None:
        if context.willLoadLayerOnCompletion(dest):
            details = context.layerToLoadOnCompletionDetails(dest)
            details.name = name
            details.setPostProcessor(styling.ApplyStyle.create(qml, name))


def work_key(source: dict[str, Any]) -> str:
    """The work folder's key: a hash of everything that makes a run's outputs (a rerun resumes there)."""
    return hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:16]


def prepare_input(source: str, extent, mask: str | None, folder: Path, stem: str) -> str:
    """The raster frugalvl reads: the layer's own source, or a VRT cut to the extent and the mask polygons.

    The VRT is rewritten only when its content changes (frugalvl's records note the input's size and
    modification time: an unchanged VRT keeps a cancelled run resumable).
    """
    if extent is None and mask is None:
        return source
    from osgeo import gdal

    gdal.UseExceptions()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{stem}.vrt"
    tmp = folder / f".{stem}.tmp.vrt"
    src = source
    if extent is not None:
        cut = folder / f".{stem}.extent.vrt"
        gdal.Translate(str(cut), src, format="VRT",
                       projWin=[extent.xMinimum(), extent.yMaximum(), extent.xMaximum(), extent.yMinimum()])  # fmt: skip
        src = str(cut)
    if mask is not None:
        ds = gdal.Open(src)
        gt, w, h = ds.GetGeoTransform(), ds.RasterXSize, ds.RasterYSize
        bounds = (gt[0], gt[3] + h * gt[5], gt[0] + w * gt[1], gt[3])  # the same pixel grid
        gdal.Warp(str(tmp), src, format="VRT", cutlineDSName=mask, dstAlpha=True, outputBounds=bounds,
                  width=w, height=h)  # fmt: skip
        ds = None
    else:
        shutil.copyfile(src, tmp)
    if target.exists() and target.read_bytes() == tmp.read_bytes():
        tmp.unlink()
    else:
        tmp.replace(target)
    return str(target)


def output_stem(source: str) -> str:
    """The stem frugalvl gives an input's outputs (its file name without the extension)."""
    name = source.rstrip("/").split("/")[-1].split("?")[0]
    return Path(name).stem


def copy_raster(src: Path, dest: str) -> str:
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    if Path(dest).suffix.lower() in (".tif", ".tiff"):
        shutil.copyfile(src, dest)
    else:
        from osgeo import gdal

        gdal.UseExceptions()
        gdal.Translate(dest, str(src))
    return dest


def copy_vectors(src: Path, dest: str) -> str:
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    if Path(dest).suffix.lower() == ".gpkg":
        shutil.copyfile(src, dest)
    else:
        from osgeo import gdal

        gdal.UseExceptions()
        gdal.VectorTranslate(dest, str(src))
    return dest


def file_key(path: str) -> str:
    p = Path(path.split("|")[0])
    try:
        st = p.stat()
        return f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return path


def safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60] or "layer"
