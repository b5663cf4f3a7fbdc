"""What a new user reads first: the missing-weights line gives the download addresses; the option help and
docs say which file --save-probs writes and where geopandas comes from."""

from __future__ import annotations

from pathlib import Path

from frugalvl.commands import demo_check
from frugalvl.models import weights
from frugalvl.models.upsampler import OFFICIAL_URL

REPO = Path(__file__).resolve().parents[2]


def test_missing_weights_line_gives_the_download_addresses(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FRUGALVL_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(weights, "host_reachable", lambda host: False)
    monkeypatch.setattr(weights, "_open_clip_cached", lambda cfg, cache_dir: False)
    assert demo_check.main(["--clip", "ViT-B-16", "--upsampler", "official"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert OFFICIAL_URL in err and "https://openaipublic.azureedge.net/clip/models/" in err and "ViT-B-16.pt" in err
    # a local file that is not there: no address to give, the line stays as it was
    assert demo_check.main(["--clip", str(tmp_path / "mine.pt"), "--upsampler", "none"]) == 2
    assert "https://" not in capsys.readouterr().err


def test_save_probs_help_says_which_file_when():
    import dataclasses

    from frugalvl.segment.scene_settings import SceneSettings

    text = next(f for f in dataclasses.fields(SceneSettings) if f.name == "save_probs").metadata["help"]
    assert "_probs.tif" in text and "_probs.npy" in text and "georeferenced" in text.lower()


def test_docs_place_geopandas_in_the_core_and_parquet_in_the_extra():
    app = (REPO / "docs" / "app.md").read_text()
    assert "geopandas, the `[vectors]` extra" not in app and "core dependenc" in app
    assert "served from this machine's disk" not in (REPO / "Makefile").read_text()


def test_every_option_of_every_command_has_help():
    import argparse

    from frugalvl.cli import build_parser

    missing = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
            elif action.option_strings and not action.help:
                missing.append(f"{' '.join(path)} {action.option_strings[-1]}")

    walk(build_parser(), ["frugalvl"])
    assert missing == []
