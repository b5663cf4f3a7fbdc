"""Build the installable plugin zip: ``python3 qgis/build_plugin.py [DIST]`` -> DIST/frugalvl_qgis-<version>.zip.

The zip holds one folder, ``frugalvl_qgis/``, as QGIS's "Install from ZIP" expects; caches are left out.
Standard library only (runs with any Python 3).
"""

from __future__ import annotations

import configparser
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLUGIN = HERE / "frugalvl_qgis"


def version() -> str:
    meta = configparser.ConfigParser()
    meta.read(PLUGIN / "metadata.txt", encoding="utf-8")
    return meta["general"]["version"]


def build(dist: Path) -> Path:
    dist.mkdir(parents=True, exist_ok=True)
    target = dist / f"frugalvl_qgis-{version()}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(PLUGIN.rglob("*")):
            if path.is_dir() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
                continue
            z.write(path, path.relative_to(HERE).as_posix())
    tmp.replace(target)
    return target


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent / "dist"))
