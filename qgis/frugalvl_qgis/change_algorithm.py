"""Processing algorithm "Detect change (SegEarth-OV3)": ``frugalvl change`` on two raster layers."""

from __future__ import annotations

import shlex
from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputFolder,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
)

from . import settings, styling
from .base import FrugalvlAlgorithm, copy_raster, copy_vectors, output_stem, prepare_input, safe, work_key

# (parameter, flag, label, default): the change settings of `frugalvl change --help` worth a field; an empty
# field leaves frugalvl's default (the preset's, else LEVIR-CD's official value)
THRESHOLDS = (
    ("PROB_THD", "--prob-thd", "Class score threshold (prob-thd; empty: the preset's)"),
    ("CONFIDENCE", "--confidence-threshold", "SAM 3 instance confidence threshold (empty: the preset's)"),
    ("INSTANCE_IOU", "--instance-iou-threshold", "Instance coverage threshold (empty: 0.3)"),
    ("MIN_INSTANCE_AREA", "--min-instance-area", "Minimum instance area (px; empty: 0)"),
)


class ChangeAlgorithm(FrugalvlAlgorithm):
    BEFORE, AFTER, EXTENT, CLASSES, PRESET, SAM3, DEVICE = (
        "BEFORE",
        "AFTER",
        "EXTENT",
        "CLASSES",
        "PRESET",
        "SAM3",
        "DEVICE",
    )
    TILE, SEMANTIC, EXTRA = "TILE", "SEMANTIC", "EXTRA"
    OUTPUT, VECTORS, RECORD, WORK = "OUTPUT", "VECTORS", "RUN_RECORD", "WORK_FOLDER"

    def __init__(self, presets: list[str] | None = None) -> None:
        super().__init__()
        self.presets = list(presets or [])

    # --- identity -------------------------------------------------------------------------------
    def name(self):
        return "change"

    def displayName(self):  # noqa: N802
        return "Detect change (SegEarth-OV3)"

    def group(self):
        return "Change detection"

    def groupId(self):  # noqa: N802
        return "change"

    def shortHelpString(self):  # noqa: N802
        return (
            "Maps what changed between two dates of the same place with SegEarth-OV3 (SAM 3, no training), by "
            "running 'frugalvl change' of the executable set in Settings > Options > frugalvl. The second "
            "layer is read on the first one's grid.\n\n"
            "Classes: separated by ';', synonyms by ',' ('background;building,house'), or a preset; "
            "default: the official LEVIR-CD configuration.\n\n"
            "Outputs: the change raster (1 change, 0 no change: transparent), and with 'From-to outputs' "
            "the change polygons (GeoPackage) categorised by their from → to classes. Cancel keeps the "
            "finished tiles: run again with the same settings to resume."
        )

    def createInstance(self):  # noqa: N802
        return ChangeAlgorithm(self.presets)

    # --- parameters -----------------------------------------------------------------------------
    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.BEFORE, "Before (first date)"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.AFTER, "After (second date)"))
        self.addParameter(
            QgsProcessingParameterExtent(self.EXTENT, "Extent (default: the whole layers)", optional=True)
        )
        self.addParameter(
            QgsProcessingParameterString(self.CLASSES, "Classes ('background;building,house')", optional=True)
        )
        preset = QgsProcessingParameterEnum(self.PRESET, "Preset (default levir_cd)", options=self.presets,
                                            optional=True)  # fmt: skip
        preset.setUsesStaticStrings(True)
        self.addParameter(preset)
        self.addParameter(QgsProcessingParameterString(self.SAM3, "SAM 3 (hub id or folder)", optional=True))
        self.addParameter(QgsProcessingParameterString(self.DEVICE, "Device (cpu, cuda, auto)", defaultValue="cpu"))
        self.addParameter(
            QgsProcessingParameterNumber(
                self.TILE, "Tile size (px)", QgsProcessingParameterNumber.Integer, defaultValue=512, minValue=16
            )  # fmt: skip
        )
        self.addParameter(
            QgsProcessingParameterBoolean(self.SEMANTIC, "From-to outputs (change polygons)", defaultValue=False)
        )
        advanced = [
            QgsProcessingParameterNumber(name, label, QgsProcessingParameterNumber.Double, optional=True, minValue=0.0)
            for name, _flag, label in THRESHOLDS
        ]
        advanced.append(
            QgsProcessingParameterString(
                self.EXTRA, "Other frugalvl change options (e.g. --bands 4,3,2)", optional=True
            )
        )
        for p in advanced:
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Change"))
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.VECTORS,
                "Change polygons (with from-to outputs)",
                QgsProcessing.TypeVectorPolygon,
                optional=True,
                createByDefault=True,
            )  # fmt: skip
        )
        self.addOutput(QgsProcessingOutputFile(self.RECORD, "Run record (JSON)"))
        self.addOutput(QgsProcessingOutputFolder(self.WORK, "Work folder (resumable run)"))

    # --- running --------------------------------------------------------------------------------
    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        exe = self.executable()
        before = self.gdal_layer(parameters, self.BEFORE, context)
        after = self.gdal_layer(parameters, self.AFTER, context)
        change_dest = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        semantic = self.parameterAsBoolean(parameters, self.SEMANTIC, context)
        vectors_dest = (
            self.parameterAsOutputLayer(parameters, self.VECTORS, context)
            if semantic and self._given(parameters, self.VECTORS)
            else ""
        )
        options = self._options(parameters, context, semantic)
        given_extent = self._given(parameters, self.EXTENT)
        extents = [self.parameterAsExtent(parameters, self.EXTENT, context, lay.crs()) if given_extent else None
                   for lay in (before, after)]  # fmt: skip
        key_source = {"before": before.source(), "after": after.source(),
                      "extent": None if extents[0] is None else extents[0].toString(12), "options": options}  # fmt: skip
        work = settings.work_folder() / f"{safe(before.name())}-change-{work_key(key_source)}"
        out = work / "out"
        sources = [
            prepare_input(lay.source(), extent, None, work / folder, safe(Path(lay.source()).stem or lay.name()))
            for lay, extent, folder in zip((before, after), extents, ("before", "after"), strict=True)
        ]
        self.run_frugalvl([exe, "change", *sources, "-o", str(out), "--progress", "json", *options], feedback, work)
        stem = output_stem(sources[0])
        change = out / f"{stem}_change.tif"
        if not change.exists():
            raise QgsProcessingException(f"frugalvl finished without writing {change}")
        results = {self.RECORD: str(out / f"{stem}_run.json"), self.WORK: str(work)}
        results[self.OUTPUT] = copy_raster(change, change_dest)
        qml = styling.style_labels(change_dest, styling.change_legend(change))
        self._style(context, change_dest, qml, f"{before.name()} → {after.name()} change")
        if vectors_dest:
            results[self.VECTORS] = copy_vectors(out / f"{stem}_change.gpkg", vectors_dest)
            classes = styling.legend(out / f"{stem}_after_labels.tif")
            qml = styling.style_transitions(vectors_dest, classes)
            self._style(context, vectors_dest, qml, f"{before.name()} → {after.name()} transitions")
        feedback.setProgress(100)
        return results

    def _options(self, parameters, context, semantic: bool) -> list[str]:
        """The frugalvl change options for these parameters (all but the inputs and the output folder)."""
        opts = ["--device", self.parameterAsString(parameters, self.DEVICE, context) or "cpu"]
        classes = self.parameterAsString(parameters, self.CLASSES, context).strip()
        if classes:
            opts += ["--classes", classes]
        if self._given(parameters, self.PRESET):
            preset = self.parameterAsEnumString(parameters, self.PRESET, context)
            if preset:
                opts += ["--preset", preset]
        sam3 = self.parameterAsString(parameters, self.SAM3, context).strip()
        if sam3:
            opts += ["--sam3", sam3]
        opts += ["--tile", str(self.parameterAsInt(parameters, self.TILE, context))]
        for name, flag, _label in THRESHOLDS:
            if self._given(parameters, name):
                value = self.parameterAsDouble(parameters, name, context)
                opts += [flag, str(int(value)) if flag == "--min-instance-area" else repr(value)]
        if semantic:
            opts.append("--semantic")
        extra = self.parameterAsString(parameters, self.EXTRA, context).strip()
        if extra:
            opts += shlex.split(extra)
        return opts
