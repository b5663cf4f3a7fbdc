"""Where the ``frugalvl`` executable is, where runs keep their work, and the "Check" of the settings page."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

EXECUTABLE_KEY = "frugalvl/executable"
WORK_FOLDER_KEY = "frugalvl/work_folder"
EXECUTABLE_ENV = "FRUGALVL_EXECUTABLE"  # used when the setting is empty (tests, batch jobs)
WORK_FOLDER_ENV = "FRUGALVL_QGIS_WORK"


def _setting(key: str) -> str:
    from qgis.core import QgsSettings

    value = QgsSettings().value(key, "")
    return str(value or "").strip()


def set_setting(key: str, value: str) -> None:
    from qgis.core import QgsSettings

    QgsSettings().setValue(key, value)


def executable() -> str | None:
    """The configured ``frugalvl`` executable: the setting, else $FRUGALVL_EXECUTABLE, else the one on PATH."""
    return _setting(EXECUTABLE_KEY) or os.environ.get(EXECUTABLE_ENV) or shutil.which("frugalvl")


def work_folder() -> Path:
    """Where runs keep their outputs and unfinished tiles (one folder per set of settings: a rerun resumes)."""
    from qgis.core import QgsApplication

    given = _setting(WORK_FOLDER_KEY) or os.environ.get(WORK_FOLDER_ENV)
    return Path(given) if given else Path(QgsApplication.qgisSettingsDirPath()) / "frugalvl" / "runs"


def child_environment() -> dict[str, str]:
    """QGIS's environment without the variables that point Python at QGIS's own interpreter."""
    env = dict(os.environ)
    for name in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP"):
        env.pop(name, None)
    if os.environ.get("FRUGALVL_PYTHONPATH"):  # a source checkout to run instead of the installed package
        env["PYTHONPATH"] = os.environ["FRUGALVL_PYTHONPATH"]
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_quick(exe: str, *args: str, timeout: float = 120) -> tuple[int, str, str]:
    """Run ``exe args`` to the end; (status, stdout, stderr). Status 127: it could not be started."""
    try:
        done = subprocess.run(
            [exe, *args], capture_output=True, text=True, encoding="utf-8", errors="replace",
            env=child_environment(), timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, "", f"{exe} could not be run: {exc}"
    return done.returncode, done.stdout, done.stderr


def info(exe: str | None = None, devices: bool = False) -> dict:
    """``frugalvl info --json`` (methods, presets, extras; devices on request); {} when it fails."""
    exe = exe or executable()
    if not exe:
        return {}
    code, out, _ = run_quick(exe, "info", "--json", *(["--devices"] if devices else []))
    if code != 0:
        return {}
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}


def check(exe: str | None) -> tuple[bool, str]:
    """What the settings page's Check button shows: the version, the extras and the devices, or why not."""
    if not exe:
        return False, (
            "No frugalvl executable found: install frugalvl in a Python environment (pip install frugalvl) and "
            "give the path of its frugalvl executable (e.g. ~/venvs/frugalvl/bin/frugalvl)."
        )
    code, out, err = run_quick(exe, "--version")
    if code != 0 or not out.startswith("frugalvl"):
        why = (err or out).strip().splitlines()[-1:] or [f"exit status {code}"]
        return False, f"{exe} is not a working frugalvl executable: {why[0]}"
    lines = [out.strip()]
    details = info(exe, devices=True)
    if not details:
        lines.append("(frugalvl info failed: this version is older than the plugin; update frugalvl)")
        return False, "\n".join(lines)
    extras = details.get("extras", {})
    lines.append(f"Python {details.get('python')} at {details.get('executable')}, torch {details.get('torch')}")
    lines.append("methods: " + ", ".join(details.get("methods", [])))
    lines.append("extras: " + (", ".join(f"{k} {'yes' if v else 'no'}" for k, v in extras.items()) or "none"))
    devs = [
        f"{d['device']} ({d.get('name', '')}" + (f", {d['memory_gib']} GiB)" if "memory_gib" in d else ")")
        for d in details.get("devices", [])
    ]
    lines.append("devices: " + "; ".join(devs))
    lines.append(f"{len(details.get('presets', {}))} presets")
    return True, "\n".join(lines)
