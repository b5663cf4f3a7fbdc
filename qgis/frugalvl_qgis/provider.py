"""The Processing provider "frugalvl"."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from . import settings
from .algorithm import SegmentAlgorithm
from .change_algorithm import ChangeAlgorithm

ICON = Path(__file__).with_name("icon.svg")


class FrugalvlProvider(QgsProcessingProvider):
    def id(self):
        return "frugalvl"

    def name(self):
        return "frugalvl"

    def longName(self):  # noqa: N802
        return "frugalvl: open-vocabulary segmentation and change detection"

    def icon(self):
        return QIcon(str(ICON))

    def svgIconPath(self):  # noqa: N802
        return str(ICON)

    def loadAlgorithms(self):  # noqa: N802
        # the preset list comes from the configured frugalvl (no torch import: a fraction of a second)
        presets = sorted(settings.info().get("presets", {}))
        self.addAlgorithm(SegmentAlgorithm(presets))
        self.addAlgorithm(ChangeAlgorithm(presets))
