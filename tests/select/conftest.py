"""Fixtures for the select tests: a tiny CLIP at 32 px, easy-vqa as LLaVA data, ``frugalvl select`` as a
function, the messages the select modules log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from frugalvl import cli
from frugalvl.testing.clip import write_tiny_openai_clip
from frugalvl.testing.easyvqa import write_easyvqa_llava


@pytest.fixture(scope="session")
def select_clip_file(tmp_path_factory) -> Path:
    return write_tiny_openai_clip(
        tmp_path_factory.mktemp("select_clip") / "tiny-openai-clip.pt", image_size=32, patch_size=8, width=64
    )


@pytest.fixture(scope="session")
def select_clip(select_clip_file):
    from frugalvl.models.clip import load_clip

    return load_clip(str(select_clip_file))


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    @property
    def text(self) -> str:
        return "\n".join(self.messages)


@pytest.fixture()
def select_log():
    """What ``frugalvl.select`` logs during the test (INFO and up), however the CLI set up logging."""
    logger = logging.getLogger("frugalvl.select")
    handler, level = _Messages(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture()
def select_cli(monkeypatch):
    """``frugalvl select ARGS`` -> exit status, with only the select command registered; a parse error
    (argparse's exit 2) is returned as its status too."""
    monkeypatch.setattr(cli, "COMMANDS", {"select": cli.COMMANDS["select"]})

    def run(*argv) -> int:
        try:
            return cli.main(["select", *map(str, argv)])
        except SystemExit as exc:
            return int(exc.code or 0)

    return run


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """(easy-vqa as a LLaVA JSON, its image root)."""
    return write_easyvqa_llava(tmp_path_factory.mktemp("evqa"))
