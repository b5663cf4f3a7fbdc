"""The plugin object QGIS creates: registers the Processing provider and the settings page."""

from __future__ import annotations

from qgis.core import QgsApplication


class FrugalvlPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider = None
        self.options_factory = None

    def initProcessing(self):  # noqa: N802 (called by QGIS, also by qgis_process)
        from .provider import FrugalvlProvider

        if self.provider is None:
            self.provider = FrugalvlProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()
        if self.iface is not None:
            from .options import FrugalvlOptionsFactory

            self.options_factory = FrugalvlOptionsFactory(self.provider)
            self.iface.registerOptionsWidgetFactory(self.options_factory)

    def unload(self):
        if self.options_factory is not None and self.iface is not None:
            self.iface.unregisterOptionsWidgetFactory(self.options_factory)
            self.options_factory = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
