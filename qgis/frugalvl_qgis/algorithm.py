"""Processing algorithm "Segment raster (open vocabulary)": ``frugalvl segment`` on a raster layer."""

from __future__ import annotations

import shlex
from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputFolder,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
)

from . import settings, styling
from .base import FrugalvlAlgorithm, copy_raster, copy_vectors, file_key, output_stem, prepare_input, safe, work_key

METHODS = ["segearth-ov", "segearth-ov3"]
METHOD_LABELS = ["SegEarth-OV (CLIP)", "SegEarth-OV3 (SAM 3)"]


class SegmentAlgorithm(FrugalvlAlgorithm):
    INPUT, EXTENT, MASK, CLASSES, PRESET, METHOD = "INPUT", "EXTENT", "MASK", "CLASSES", "PRESET", "METHOD"
    CLIP, UPSAMPLER, SAM3, DEVICE = "CLIP", "UPSAMPLER", "SAM3", "DEVICE"
    TILE, OVERLAP, SCALE, MIN_AREA, SIMPLIFY, EXTRA = "TILE", "OVERLAP", "SCALE", "MIN_AREA", "SIMPLIFY", "EXTRA"
    OUTPUT, SCORES, VECTORS, RECORD, WORK = "OUTPUT", "SCORES", "VECTORS", "RUN_RECORD", "WORK_FOLDER"

    def __init__(self, presets: list[str] | None = None) -> None:
        super().__init__()
        self.presets = list(presets or [])

    # --- identity -------------------------------------------------------------------------------
    def name(self):
        return "segment"

    def displayName(self):  # noqa: N802
        return "Segment raster (open vocabulary)"

    def group(self):
        return "Segmentation"

    def groupId(self):  # noqa: N802
        return "segmentation"

    def shortHelpString(self):  # noqa: N802
        return (
            "Segments a raster layer into the classes you type, with SegEarth-OV (CLIP) or SegEarth-OV3 "
            "(SAM 3), by running the frugalvl command line set in Settings > Options > frugalvl.\n\n"
            "Classes: separated by ';', synonyms by ',': 'background;water,river;forest;building,roof'. "
            "Or pick a dataset preset (its classes and thresholds); classes typed here replace the preset's.\n\n"
            "Outputs: the label raster (COG, styled with the class colours and names), optionally the "
            "class scores (COG, one band per class, 255 × score) and the class polygons (GeoPackage, with "
            "their areas). Cancel keeps the finished tiles: run again with the same settings to resume."
        )

    def createInstance(self):  # noqa: N802
        return SegmentAlgorithm(self.presets)

    # --- parameters -----------------------------------------------------------------------------
    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input raster layer"))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Extent (default: the whole layer)", optional=True))
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.MASK, "Mask: segment only inside these polygons", [QgsProcessing.TypeVectorPolygon], optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.CLASSES, "Classes ('background;water,river;forest')", optional=True, multiLine=False
            )
        )
        preset = QgsProcessingParameterEnum(self.PRESET, "Preset (a dataset's classes and thresholds)",
                                            options=self.presets, optional=True)  # fmt: skip
        preset.setUsesStaticStrings(True)
        self.addParameter(preset)
        method = QgsProcessingParameterEnum(self.METHOD, "Method", options=METHODS, defaultValue=METHODS[0])
        method.setUsesStaticStrings(True)
        self.addParameter(method)
        self.addParameter(
            QgsProcessingParameterString(
                self.CLIP, "SegEarth-OV: CLIP (name or .pt file)", defaultValue="ViT-B-16", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.UPSAMPLER, "SegEarth-OV: upsampler checkpoint ('official' or a file)", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterString(self.SAM3, "SegEarth-OV3: SAM 3 (hub id or folder)", optional=True)
        )
        self.addParameter(QgsProcessingParameterString(self.DEVICE, "Device (cpu, cuda, auto)", defaultValue="cpu"))
        self.addParameter(
            QgsProcessingParameterNumber(
                self.TILE, "Tile size (px)", QgsProcessingParameterNumber.Integer, defaultValue=512, minValue=32
            )  # fmt: skip
        )
        advanced = [
            QgsProcessingParameterNumber(self.OVERLAP, "Tile overlap (px; default tile/4)",
                                         QgsProcessingParameterNumber.Integer, optional=True, minValue=0),
            QgsProcessingParameterNumber(self.SCALE, "Scale (0.5 = twice the ground sampling distance)",
                                         QgsProcessingParameterNumber.Double, defaultValue=1.0, minValue=0.0001),
            QgsProcessingParameterNumber(self.MIN_AREA, "Minimum polygon area (map units²)",
                                         QgsProcessingParameterNumber.Double, defaultValue=0.0, minValue=0.0),
            QgsProcessingParameterNumber(self.SIMPLIFY, "Simplify polygons (tolerance, map units)",
                                         QgsProcessingParameterNumber.Double, defaultValue=0.0, minValue=0.0),
            QgsProcessingParameterString(self.EXTRA, "Other frugalvl segment options (e.g. --prob-thd 0.3)",
                                         optional=True),
        ]  # fmt: skip
        for p in advanced:
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Labels"))
        self.addParameter(
            QgsProcessingParameterRasterDestination(self.SCORES, "Class scores", optional=True, createByDefault=False)
        )
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.VECTORS, "Class polygons", QgsProcessing.TypeVectorPolygon, optional=True, createByDefault=True
            )
        )
        self.addOutput(QgsProcessingOutputFile(self.RECORD, "Run record (JSON)"))
        self.addOutput(QgsProcessingOutputFolder(self.WORK, "Work folder (resumable run)"))

    # --- running --------------------------------------------------------------------------------
    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        exe = self.executable()
        layer = self.gdal_layer(parameters, self.INPUT, context)
        label_dest = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        scores_dest = (
            self.parameterAsOutputLayer(parameters, self.SCORES, context)
            if self._given(parameters, self.SCORES)
            else ""
        )
        vectors_dest = (
            self.parameterAsOutputLayer(parameters, self.VECTORS, context)
            if self._given(parameters, self.VECTORS)
            else ""
        )
        options = self._options(parameters, context, bool(scores_dest), bool(vectors_dest))
        extent = (
            self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
            if self._given(parameters, self.EXTENT)
            else None
        )
        mask = None
        if self._given(parameters, self.MASK):
            mask = self.parameterAsCompatibleSourceLayerPath(
                parameters, self.MASK, context, ["gpkg", "shp"], "gpkg", feedback
            )
        key_source = {"input": layer.source(), "extent": None if extent is None else extent.toString(12),
                      "mask": mask and file_key(mask), "options": options}  # fmt: skip
        work = settings.work_folder() / f"{safe(layer.name())}-{work_key(key_source)}"
        out = work / "out"
        source = prepare_input(
            layer.source(), extent, mask, work / "input", safe(Path(layer.source()).stem or layer.name())
        )
        self.run_frugalvl([exe, "segment", source, "-o", str(out), "--progress", "json", *options], feedback, work)
        stem = output_stem(source)
        label = out / f"{stem}.tif"
        if not label.exists():
            raise QgsProcessingException(f"frugalvl finished without writing {label}")
        classes = styling.legend(label)
        results = {self.RECORD: str(out / f"{stem}_run.json"), self.WORK: str(work)}
        results[self.OUTPUT] = copy_raster(label, label_dest)
        self._style(context, label_dest, styling.style_labels(label_dest, classes), f"{layer.name()} classes")
        if scores_dest:
            results[self.SCORES] = copy_raster(out / f"{stem}_probs.tif", scores_dest)
            self._style(context, scores_dest, None, f"{layer.name()} scores")
        if vectors_dest:
            results[self.VECTORS] = copy_vectors(out / f"{stem}.gpkg", vectors_dest)
            self._style(context, vectors_dest, styling.style_vectors(vectors_dest, classes), f"{layer.name()} polygons")
        feedback.setProgress(100)
        return results

    def _options(self, parameters, context, scores: bool, vectors: bool) -> list[str]:
        """The frugalvl segment options for these parameters (all but the input and the output folder)."""
        method = self.parameterAsEnumString(parameters, self.METHOD, context) or METHODS[0]
        opts = ["--method", method, "--device", self.parameterAsString(parameters, self.DEVICE, context) or "cpu"]
        classes = self.parameterAsString(parameters, self.CLASSES, context).strip()
        preset = (
            self.parameterAsEnumString(parameters, self.PRESET, context) if self._given(parameters, self.PRESET) else ""
        )
        if classes:
            opts += ["--classes", classes]
        if preset:
            opts += ["--preset", preset]
        for name, flag in (
            ((self.CLIP, "--clip"), (self.UPSAMPLER, "--upsampler"))
            if method == "segearth-ov"
            else ((self.SAM3, "--sam3"),)
        ):
            value = self.parameterAsString(parameters, name, context).strip()
            if value:
                opts += [flag, value]
        opts += ["--tile", str(self.parameterAsInt(parameters, self.TILE, context))]
        if self._given(parameters, self.OVERLAP):
            opts += ["--tile-overlap", str(self.parameterAsInt(parameters, self.OVERLAP, context))]
        for name, flag in ((self.SCALE, "--scale"), (self.MIN_AREA, "--min-area"), (self.SIMPLIFY, "--simplify")):
            value = self.parameterAsDouble(parameters, name, context)
            if flag == "--scale" and value != 1.0 or flag != "--scale" and value:
                opts += [flag, repr(value)]
        if scores:
            opts.append("--save-probs")
        if vectors:
            opts += ["--vectors", "gpkg"]
        extra = self.parameterAsString(parameters, self.EXTRA, context).strip()
        if extra:
            opts += shlex.split(extra)
        return opts
