"""``frugalvl info``: what this installation offers (version, methods, presets, extras, devices).

Programs that drive the CLI (the QGIS plugin) read ``frugalvl info --json``: it imports no torch unless
``--devices`` asks for the compute devices. The JSON keys are listed in docs/qgis.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
from typing import Any


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="version, methods, presets, installed extras and (with --devices) compute devices",
        description="What this frugalvl installation offers, for people and for programs (--json).",
    )
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--devices", action="store_true", help="also list the compute devices (imports torch: slower)")
    p.set_defaults(func=run)


def installed_extras() -> dict[str, bool]:
    """For each optional extra of the package (but ``all`` and ``test``): are all its packages installed?"""
    from importlib import metadata

    try:
        requires = metadata.requires("frugalvl") or []
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return {}
    extras: dict[str, bool] = {}
    for req in requires:
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)
        if extra is None or name is None or extra.group(1) in ("all", "test"):
            continue
        try:
            metadata.version(name.group(0))
            present = True
        except metadata.PackageNotFoundError:
            present = False
        extras[extra.group(1)] = extras.get(extra.group(1), True) and present
    return extras


def presets() -> dict[str, dict[str, list[str]]]:
    """Each preset's class names per method table it has (``segearth_ov``, ``segearth_ov3``)."""
    from ..presets import list_presets, load_preset, preset_vocabulary
    from ..segment.methods import METHODS

    method_tables = [m.preset_table for m in METHODS.values()]
    out: dict[str, dict[str, list[str]]] = {}
    for name in list_presets():
        tables = load_preset(name)
        out[name] = {table: preset_vocabulary(name, table).names for table in method_tables if table in tables}
    return out


def devices() -> list[dict[str, Any]]:
    """``cpu`` and every CUDA (or Apple MPS) device torch sees, with names and memory."""
    import torch

    found: list[dict[str, Any]] = [{"device": "cpu", "name": platform.processor() or platform.machine()}]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            found.append(
                {"device": f"cuda:{i}", "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)}
            )
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append({"device": "mps", "name": "Apple Metal"})
    return found


def report(with_devices: bool) -> dict[str, Any]:
    from .. import __version__
    from .methods import METHODS

    info: dict[str, Any] = {
        "version": __version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        "methods": list(METHODS),
        "extras": installed_extras(),
        "presets": presets(),
    }
    if with_devices:
        import torch

        info["torch"] = torch.__version__
        info["devices"] = devices()
    return info


def run(args: argparse.Namespace) -> int:
    info = report(args.devices)
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
        return 0
    print(f"frugalvl {info['version']} (Python {info['python']}, {info['executable']})")
    print(f"methods: {', '.join(info['methods'])}")
    extras = info["extras"]
    print("extras: " + (", ".join(f"{k} {'yes' if v else 'no'}" for k, v in extras.items()) or "(not installed)"))
    print(f"presets: {', '.join(info['presets'])}")
    if args.devices:
        names = [
            f"{d['device']} ({d['name']}" + (f", {d['memory_gib']} GiB)" if "memory_gib" in d else ")")
            for d in info["devices"]
        ]
        print(f"devices (torch {info['torch']}): {'; '.join(names)}")
    return 0
