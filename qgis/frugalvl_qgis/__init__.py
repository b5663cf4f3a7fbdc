"""frugalvl for QGIS: a Processing provider that runs the ``frugalvl`` command line as a subprocess.

The plugin never imports frugalvl or torch: it runs the ``frugalvl`` executable of the environment the
user chose (Settings > Options > frugalvl) and reads its JSON progress events (docs/progress.md).
"""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    from .plugin import FrugalvlPlugin

    return FrugalvlPlugin(iface)
