"""The page itself and its configuration: methods, presets, samples and the server's defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from ...segment.methods import METHODS, model_options
from .common import config_of

STATIC = Path(__file__).resolve().parents[1] / "static"

router = APIRouter()


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


@router.get("/api/config")
def get_config(request: Request) -> dict[str, Any]:
    from ...models.attention import MODES
    from ...presets import list_presets, load_preset

    config = config_of(request)
    presets = []
    for name in list_presets():
        p = load_preset(name)
        entry = {"name": name, "title": p.get("title", name)}
        for method in METHODS.values():
            table = p.get(method.preset_table)
            if table:
                entry[method.name] = {"classes": ";".join(table["classes"]), "prob_thd": table.get("prob_thd")}
        presets.append(entry)
    return {
        "methods": {name: m.title for name, m in METHODS.items()},
        "presets": presets,
        "samples": sorted(request.app.state.samples),
        "attention_modes": list(MODES),
        "defaults": {**{name: config.model_spec(name) or "" for name in model_options()}, "device": config.device},
        "server_paths": bool(config.data_roots),
        "max_upload_mb": config.max_upload_mb,
        "basemap": config.basemap,
    }
