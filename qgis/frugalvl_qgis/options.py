"""Settings > Options > frugalvl: the frugalvl executable (with a Check button) and the work folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from qgis.gui import QgsFileWidget, QgsOptionsPageWidget, QgsOptionsWidgetFactory
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QFormLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout

from . import settings

ICON = Path(__file__).with_name("icon.svg")


class FrugalvlOptionsFactory(QgsOptionsWidgetFactory):
    def __init__(self, provider) -> None:
        super().__init__()
        self.provider = provider
        self.setTitle("frugalvl")

    def icon(self):
        return QIcon(str(ICON))

    def createWidget(self, parent):  # noqa: N802
        return FrugalvlOptionsPage(parent, self.provider)


class FrugalvlOptionsPage(QgsOptionsPageWidget):
    def __init__(self, parent, provider) -> None:
        super().__init__(parent)
        self.provider = provider
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.exe = QgsFileWidget()
        self.exe.setFilePath(settings._setting(settings.EXECUTABLE_KEY) or shutil.which("frugalvl") or "")
        self.exe.setDialogTitle("The frugalvl executable of your Python environment")
        form.addRow("frugalvl executable", self.exe)
        self.work = QgsFileWidget()
        self.work.setStorageMode(QgsFileWidget.GetDirectory)
        self.work.setFilePath(str(settings.work_folder()))
        form.addRow("Work folder (resumable runs)", self.work)
        layout.addLayout(form)
        hint = QLabel(
            "frugalvl runs in its own Python environment (pip install frugalvl); QGIS only starts its "
            "command line. Check shows its version, extras and compute devices."
        )
        hint.setWordWrap(True)
        layout.addWidget(hint)
        button = QPushButton("Check")
        button.clicked.connect(self.check)
        layout.addWidget(button)
        self.report = QPlainTextEdit()
        self.report.setReadOnly(True)
        layout.addWidget(self.report)

    def check(self) -> None:
        ok, text = settings.check(self.exe.filePath().strip() or None)
        self.report.setPlainText(("OK\n" if ok else "Not usable\n") + text)

    def apply(self) -> None:
        settings.set_setting(settings.EXECUTABLE_KEY, self.exe.filePath().strip())
        settings.set_setting(settings.WORK_FOLDER_KEY, self.work.filePath().strip())
        if self.provider is not None:
            self.provider.refreshAlgorithms()  # the preset list of the newly chosen frugalvl
