"""Styles for a run's outputs, from what the run wrote: the label COG's colour table and class names.

Nothing is recomputed here: the palette is the label raster's colour table and the names its
``CLASS_NAMES`` tag (a JSON list), exactly as frugalvl wrote them. Each output gets a ``.qml`` file
beside it (QGIS loads it as the layer's default style wherever the file is opened later), and a
post-processor applies it when Processing adds the layer to the project.
"""

from __future__ import annotations

import json
from pathlib import Path

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsFillSymbol,
    QgsPalettedRasterRenderer,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRendererCategory,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

# post-processors must outlive processAlgorithm (Processing holds no Python reference to them)
_KEEP: list = []


def legend(label_path: str | Path) -> list[tuple[int, str, QColor]]:
    """(value, class name, colour) of each class, from the label raster's colour table and tag."""
    from osgeo import gdal

    ds = gdal.Open(str(label_path))
    if ds is None:
        raise OSError(f"{label_path} cannot be opened")
    names = json.loads(ds.GetMetadataItem("CLASS_NAMES") or "[]")
    table = ds.GetRasterBand(1).GetColorTable()
    out = []
    for value, name in enumerate(names):
        r, g, b, a = (
            table.GetColorEntry(value) if table is not None and value < table.GetCount() else (128, 128, 128, 255)
        )
        out.append((value, str(name), QColor(r, g, b, a)))
    return out


def style_labels(label_path: str | Path, classes: list[tuple[int, str, QColor]]) -> Path:
    """Write ``<label>.qml``: a paletted renderer with the class names; returns its path."""
    layer = QgsRasterLayer(str(label_path), "labels", "gdal")
    renderer = QgsPalettedRasterRenderer(
        layer.dataProvider(), 1, [QgsPalettedRasterRenderer.Class(v, c, n) for v, n, c in classes]
    )
    layer.setRenderer(renderer)
    qml = Path(label_path).with_suffix(".qml")
    _save(layer, qml)
    return qml


def style_vectors(vector_path: str | Path, classes: list[tuple[int, str, QColor]]) -> Path:
    """Write ``<vectors>.qml``: polygons categorised by the ``class`` field in the class colours."""
    layer = QgsVectorLayer(str(vector_path), "vectors", "ogr")
    categories = []
    for _value, name, colour in classes:
        symbol = QgsFillSymbol.createSimple(
            {"color": colour.name(), "outline_color": colour.darker(150).name(), "outline_width": "0.2"}
        )
        categories.append(QgsRendererCategory(name, symbol, name))
    layer.setRenderer(QgsCategorizedSymbolRenderer("class", categories))
    qml = Path(vector_path).with_suffix(".qml")
    _save(layer, qml)
    return qml


CHANGE_STYLE = [(0, "no change", QColor(0, 0, 0, 0)), (1, "change", QColor(255, 40, 40))]  # no colour table


def change_legend(change_path: str | Path) -> list[tuple[int, str, QColor]]:
    """The change map's two classes: 0 transparent (no change), 1 in the colour of the map's own colour table
    (names from its ``CLASS_NAMES`` tag); a fixed red where it has no colour table."""
    from osgeo import gdal

    ds = gdal.Open(str(change_path))
    if ds is None:
        raise OSError(f"{change_path} cannot be opened")
    table = ds.GetRasterBand(1).GetColorTable()
    if table is None or table.GetCount() < 2:
        return list(CHANGE_STYLE)
    names = json.loads(ds.GetMetadataItem("CLASS_NAMES") or "[]") or [n for _, n, _ in CHANGE_STYLE]
    r, g, b, a = table.GetColorEntry(1)
    return [(0, str(names[0]), QColor(0, 0, 0, 0)), (1, str(names[1]), QColor(r, g, b, a))]


def style_transitions(vector_path: str | Path, classes: list[tuple[int, str, QColor]]) -> Path:
    """Write ``<vectors>.qml``: change polygons categorised by their from→to transition (the expression
    ``"from_class" || ' → ' || "to_class"``), each in the colour of its *to* class."""
    layer = QgsVectorLayer(str(vector_path), "transitions", "ogr")
    colours = {name: colour for _value, name, colour in classes}
    pairs = sorted({(f["from_index"], f["from_class"], f["to_index"], f["to_class"]) for f in layer.getFeatures()})
    categories = []
    for _a, source, _b, target in pairs:
        colour = colours.get(target, QColor(128, 128, 128))
        symbol = QgsFillSymbol.createSimple(
            {"color": colour.name(), "outline_color": colour.darker(150).name(), "outline_width": "0.2"}
        )
        label = f"{source} → {target}"
        categories.append(QgsRendererCategory(label, symbol, label))
    layer.setRenderer(QgsCategorizedSymbolRenderer(TRANSITION_EXPRESSION, categories))
    qml = Path(vector_path).with_suffix(".qml")
    _save(layer, qml)
    return qml


TRANSITION_EXPRESSION = '"from_class" || \' → \' || "to_class"'


def _save(layer, qml: Path) -> None:
    message, ok = layer.saveNamedStyle(str(qml))
    if not ok:
        raise OSError(f"the style {qml} could not be written: {message}")


class ApplyStyle(QgsProcessingLayerPostProcessorInterface):
    """Applies a saved ``.qml`` (if any) and a name to the layer Processing adds to the project."""

    def __init__(self, qml: Path | None, name: str) -> None:
        super().__init__()
        self.qml, self.name = (None if qml is None else str(qml)), name

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS's name)
        if self.qml is not None:
            message, ok = layer.loadNamedStyle(self.qml)
            if not ok:
                feedback.reportError(f"style {self.qml} not applied: {message}", False)
        layer.setName(self.name)
        layer.triggerRepaint()

    @staticmethod
    def create(qml: Path | None, name: str) -> ApplyStyle:
        styler = ApplyStyle(qml, name)
        _KEEP.append(styler)
        return styler
