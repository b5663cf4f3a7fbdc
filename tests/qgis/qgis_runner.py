"""Drives QGIS for the plugin tests: run with QGIS's Python (``/usr/bin/python3 qgis_runner.py JOB.json``).

Starts a headless ``QgsApplication`` (``QT_QPA_PLATFORM=offscreen``) with the profile folder of the
job file, loads the plugin from a plugins folder the way QGIS does (``qgis.utils``), runs the job's
algorithm calls like the Processing dialog (layers added to the project, post-processors applied),
optionally renders the map to a PNG, and prints one JSON object with what it saw. It never imports
frugalvl: the plugin must not need it.
"""

from __future__ import annotations

import json
import os
import re
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize  # noqa: E402
from qgis.PyQt.QtGui import QColor  # noqa: E402


class RecordingFeedback(QgsProcessingFeedback):
    """Keeps every log line and progress value; cancels itself after ``cancel_after`` tile events."""

    def __init__(self, cancel_after: int | None = None) -> None:
        super().__init__()
        self.lines: list[list[str]] = []
        self.progress: list[float] = []
        self.texts: list[str] = []
        self.cancel_after = cancel_after

    def _log(self, kind: str, text: str) -> None:
        self.lines.append([kind, text])

    def pushInfo(self, info):  # noqa: N802
        self._log("info", info)

    def pushConsoleInfo(self, info):  # noqa: N802
        self._log("console", info)

    def pushCommandInfo(self, info):  # noqa: N802
        self._log("command", info)

    def pushWarning(self, warning):  # noqa: N802
        self._log("warning", warning)

    def reportError(self, error, fatalError=False):  # noqa: N802, N803
        self._log("error", error)

    def setProgressText(self, text):  # noqa: N802
        self.texts.append(text)

    def setProgress(self, progress):  # noqa: N802
        self.progress.append(progress)
        super().setProgress(progress)
        tiles = [t for t in self.texts if re.search(r": [1-9][0-9]*/[0-9]+ tiles$", t)]
        if self.cancel_after is not None and len(tiles) >= self.cancel_after and not self.isCanceled():
            self._log("test", f"cancelling after {len(tiles)} tile events")
            self.cancel()


def start_plugin(plugins_dir: str) -> dict:
    import qgis.utils

    sys.path.append(os.path.join(QgsApplication.pkgDataPath(), "python", "plugins"))  # Processing itself
    from processing.core.Processing import Processing

    Processing.initialize()
    sys.path.insert(0, plugins_dir)
    qgis.utils.plugin_paths.insert(0, plugins_dir)
    qgis.utils.updateAvailablePlugins()
    meta = qgis.utils.plugins_metadata_parser.get("frugalvl_qgis")
    ok = qgis.utils.loadPlugin("frugalvl_qgis") and qgis.utils.startProcessingPlugin("frugalvl_qgis")
    provider = QgsApplication.processingRegistry().providerById("frugalvl")
    return {
        "started": bool(ok),
        "provider": provider is not None,
        "algorithms": [a.id() for a in provider.algorithms()] if provider else [],
        "metadata": dict(meta.items("general")) if meta is not None else {},
    }


def run_algorithm(call: dict, project: QgsProject) -> dict:
    """Run like the Processing dialog: outputs added to the project, then the plugin's post-processors."""
    import processing

    feedback = RecordingFeedback(call.get("cancel_after"))
    context = QgsProcessingContext()
    context.setProject(project)
    before = set(project.mapLayers())
    result: dict = {"ok": False}
    try:
        outputs = processing.runAndLoadResults(
            call.get("algorithm", "frugalvl:segment"), dict(call["params"]), feedback=feedback, context=context
        )
        result["ok"] = outputs is not None
        result["outputs"] = {k: v for k, v in (outputs or {}).items() if isinstance(v, str | int | float) or v is None}
    except Exception as exc:  # QgsProcessingException: the message Processing shows
        result["exception"] = type(exc).__name__
        result["message"] = str(exc)
    result["log"] = feedback.lines
    result["progress"] = feedback.progress
    result["progress_texts"] = feedback.texts[-20:]
    result["layers"] = [describe(layer) for i, layer in project.mapLayers().items() if i not in before]
    return result


def describe(layer) -> dict:
    out: dict = {"name": layer.name(), "source": layer.source(), "valid": layer.isValid()}
    if isinstance(layer, QgsRasterLayer):
        renderer = layer.renderer()
        out["renderer"] = renderer.type()
        if renderer.type() == "paletted":
            out["classes"] = [[c.value, c.color.name(), c.label] for c in renderer.classes()]
        out["legend"] = [[label, color.name()] for label, color in renderer.legendSymbologyItems()]
    elif isinstance(layer, QgsVectorLayer):
        renderer = layer.renderer()
        out["renderer"] = renderer.type()
        if renderer.type() == "categorizedSymbol":
            out["field"] = renderer.classAttribute()
            out["classes"] = [[c.value(), c.symbol().color().name(), c.label()] for c in renderer.categories()]
        out["fields"] = [f.name() for f in layer.fields()]
        out["features"] = layer.featureCount()
        out["areas"] = {}
        for f in layer.getFeatures() if "class" in out["fields"] else []:
            out["areas"][f["class"]] = out["areas"].get(f["class"], 0.0) + float(f["area"])
    return out


def render(project: QgsProject, sources: list[str], png: str, size: list[int]) -> dict:
    """Draw the project's layers with these sources (top first) over the last one's extent into ``png``."""
    layers = [lay for lay in project.mapLayers().values() if lay.source().split("|")[0] in sources]
    layers.sort(key=lambda lay: sources.index(lay.source().split("|")[0]))
    assert len(layers) == len(sources), [lay.source() for lay in project.mapLayers().values()]
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(layers[-1].crs())
    extent = layers[-1].extent()
    settings.setExtent(extent)
    settings.setOutputSize(QSize(*size))
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    image.save(png, "PNG")
    return {"png": png, "errors": [e.message for e in job.errors()], "width": image.width(), "height": image.height()}


def options_page(exe: str) -> dict:
    """Settings > Options > frugalvl: type the executable, press Check, apply."""
    from frugalvl_qgis.options import FrugalvlOptionsFactory
    from qgis.core import QgsSettings
    from qgis.PyQt.QtWidgets import QPushButton

    provider = QgsApplication.processingRegistry().providerById("frugalvl")
    factory = FrugalvlOptionsFactory(provider)
    page = factory.createWidget(None)
    page.exe.setFilePath(exe)
    page.findChild(QPushButton).click()
    text = page.report.toPlainText()
    page.apply()
    return {"title": factory.title(), "report": text, "stored": QgsSettings().value("frugalvl/executable")}


def main(spec_path: str) -> int:
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    app = QgsApplication([], True)  # with widgets (offscreen): the settings page is built too
    app.initQgis()
    report: dict = {"qgis": __import__("qgis.core").core.Qgis.QGIS_VERSION}
    try:
        report["plugin"] = start_plugin(spec["plugins_dir"])
        if spec.get("check"):
            from frugalvl_qgis import settings

            report["check"] = [list(settings.check(exe)) for exe in spec["check"]]
        if spec.get("options_page"):
            report["options_page"] = options_page(spec["options_page"])
        if spec.get("change_legend"):
            from frugalvl_qgis import styling

            report["change_legend"] = [
                [[v, name, c.name(), c.alpha()] for v, name, c in styling.change_legend(path)]
                for path in spec["change_legend"]
            ]
        project = QgsProject.instance()
        report["runs"] = [run_algorithm(call, project) for call in spec.get("runs", [])]
        for r in spec.get("renders", []):
            report.setdefault("renders", []).append(render(project, r["layers"], r["png"], r["size"]))
    finally:
        report["frugalvl_imported"] = any(m == "frugalvl" or m.startswith("frugalvl.") for m in sys.modules)
        report["torch_imported"] = "torch" in sys.modules
        print("QGIS-RUNNER-REPORT " + json.dumps(report), flush=True)
        app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
