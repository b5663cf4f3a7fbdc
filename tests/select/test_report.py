"""`frugalvl select report WORK`: one self-contained HTML page
(docs/methods/coido_finetune.md#frugalvl-select-report-work), checked in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from frugalvl.errors import UserError
from frugalvl.select import report as R
from frugalvl.select.data import PrepareSettings
from frugalvl.select.pipeline import prepare
from frugalvl.select.ranking import select
from frugalvl.testing.easyvqa import write_easyvqa_llava

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A work folder with real easy-vqa samples (prepare), a random r, clusters of a 30% subset and a
    20% per-source selection of the lowest r (what score / cluster / pick leave)."""
    root = tmp_path_factory.mktemp("report")
    data, images = write_easyvqa_llava(root, n_images=40, n_text=6)
    work = root / "work"
    prepare(data, work, PrepareSettings(image_root=str(images)))
    samples = json.loads((work / "prepare/samples.json").read_text())
    n = len(samples)
    rng = np.random.default_rng(3)
    r = rng.normal(size=n).astype(np.float32)
    (work / "score").mkdir()
    np.save(work / "score/r.npy", r)
    (work / "subset").mkdir()
    subset = np.sort(rng.choice(n, size=int(0.3 * n), replace=False)).astype(np.int64)
    np.save(work / "subset/indices.npy", subset)
    np.save(work / "subset/clusters.npy", rng.integers(-1, 4, len(subset)).astype(np.int64))
    chosen, _ = select(r, [s["dataset"] for s in samples], np.ones(n, bool), int(0.2 * n), "quota")
    (work / "pick").mkdir()
    np.save(work / "pick/selected_ids.npy", chosen.astype(np.int64))
    (work / "pick/selected_ids.txt").write_text("".join(samples[i]["id"] + "\n" for i in chosen))
    return work


def _cards(page: str, gallery: str) -> list[int]:
    block = re.split(r"<h2>|</body>", page.split(f'id="{gallery}"', 1)[1], maxsplit=1)[0]
    return [int(k) for k in re.findall(r'class="card" data-idx="(\d+)"', block)]


def test_page_is_self_contained_and_shows_the_right_samples(work):
    out = R.write_report(work)
    assert out == work / "report.html"
    page = out.read_text(encoding="utf-8")
    samples = json.loads((work / "prepare/samples.json").read_text())
    r = np.load(work / "score/r.npy")
    chosen = np.load(work / "pick/selected_ids.npy")
    # nothing is fetched: every src / href is a data: URI, no script, no external stylesheet
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(ref.startswith("data:") for ref in refs)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    # gallery: the 24 lowest and the 24 highest r, in order (independent: a plain argsort)
    assert _cards(page, "lowest") == np.argsort(r, kind="stable")[:24].tolist()
    assert _cards(page, "highest") == np.argsort(-r, kind="stable")[:24].tolist()
    # thumbnails are real JPEGs of the images; text-only samples get a placeholder
    thumbs = re.findall(r'<img src="data:image/jpeg;base64,([^"]+)"', page)
    n_text = sum(samples[k]["status"] == "text" for k in _cards(page, "lowest") + _cards(page, "highest"))
    assert len(thumbs) == 48 - n_text and page.count("text only") == n_text
    assert base64.b64decode(thumbs[0])[:3] == b"\xff\xd8\xff"
    # first question (no <image> tag) and answer of the lowest sample
    low = samples[int(np.argmin(r))]
    q, a = low["conversations"][0]["value"].replace("<image>", "").strip(), low["conversations"][1]["value"]
    assert f"<b>Q:</b> {q}" in page and f"<b>A:</b> {a}" in page
    # per-source table: counts by hand
    for source in sorted({s["dataset"] for s in samples}):
        n = sum(s["dataset"] == source for s in samples)
        k = sum(samples[i]["dataset"] == source for i in chosen)
        assert f"<tr><td>{source}</td><td>{n}</td><td>{k}</td><td>{n - k}</td>" in page
    assert page.count('class="chart"') == 3  # histogram + two share charts


def test_share_table_and_extremes_by_hand():
    rows = R.share_table(["b", "a", "b", "b", "a"], np.array([1, 0, 0, 1, 0], bool))
    assert rows == [
        {"group": "a", "n": 2, "selected": 0, "rejected": 2, "share": 0.0},
        {"group": "b", "n": 3, "selected": 2, "rejected": 1, "share": pytest.approx(2 / 3)},
    ]
    r = np.array([0.5, -1.0, 2.0, -1.0, 9.0])
    low, high = R.extremes(r, np.array([1, 1, 1, 1, 0], bool), 2)
    assert low.tolist() == [1, 3] and high.tolist() == [2, 0]  # the ineligible 9.0 is never shown
    assert R.first_exchange(
        [
            {"from": "gpt", "value": "x"},
            {"from": "human", "value": "<image>\nwhy?"},
            {"from": "gpt", "value": "because"},
        ]
    ) == ("why?", "because")


def test_selection_from_txt_equals_npy_and_errors(work, tmp_path):
    samples = json.loads((work / "prepare/samples.json").read_text())
    npy = R.read_selection(work / "pick/selected_ids.npy", samples)
    assert R.read_selection(work / "pick/selected_ids.txt", samples).tolist() == npy.tolist()
    (tmp_path / "bad.txt").write_text("nobody\n")
    with pytest.raises(UserError, match="not in this work folder"):
        R.read_selection(tmp_path / "bad.txt", samples)
    with pytest.raises(UserError, match="select prepare"):
        R.write_report(tmp_path)


def test_matplotlib_backend_is_left_alone(work, tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    R.write_report(work, tmp_path / "r.html")
    assert matplotlib.get_backend() == before


@pytest.mark.skipif(
    not CHROMIUM.is_file(), reason="Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)"
)
def test_page_opens_in_headless_chromium_without_console_errors(work, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    out = R.write_report(work, tmp_path / "report.html")
    errors, failed = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda req: failed.append(req.url))
            page.goto(out.as_uri(), wait_until="load")
            sizes = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
            n_cards = page.eval_on_selector_all(".card", "els => els.length")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == [] and failed == []
    assert sizes and all(done and width > 0 for done, width in sizes)  # every chart and thumbnail decoded
    assert n_cards == 48
    shot = (tmp_path / "report.png").read_bytes()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000


def test_cli_writes_the_page(work, tmp_path, capsys):
    import logging

    from frugalvl.cli import main

    logger = logging.getLogger("frugalvl")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        assert main(["select", "report", str(work), "-o", str(tmp_path / "p.html"), "--gallery", "5"]) == 0
        assert main(["select", "report", str(tmp_path / "nowhere")]) == 2
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    page = (tmp_path / "p.html").read_text(encoding="utf-8")
    assert page.count('class="card"') == 10 and capsys.readouterr().out.strip().endswith("p.html")
