"""The QGIS plugin end to end, in QGIS's own Python (``qgis_runner.py``) and through ``qgis_process``.

QGIS (Debian's ``qgis`` + ``python3-qgis``, 3.22 LTR) runs with its own interpreter, ``/usr/bin/python3``;
these tests start it in a subprocess with ``QT_QPA_PLATFORM=offscreen``. The plugin runs the frugalvl
of this checkout (a small wrapper script) with the tiny random CLIP the suite builds. Skipped where QGIS
is not installed and ``CI`` is unset; under CI a missing QGIS is a failure (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EXAMPLES, REPO

QGIS_PYTHON = os.environ.get("FRUGALVL_QGIS_PYTHON", "/usr/bin/python3")
RUNNER = Path(__file__).with_name("qgis_runner.py")
CLASSES = "water;land;cloud"
CHANGE_CLASSES = "background;building;road"


def _qgis_missing() -> str | None:
    if not Path(QGIS_PYTHON).exists():
        return f"{QGIS_PYTHON} does not exist"
    probe = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"QGIS's Python cannot import qgis.core ({probe.stderr.strip()[-200:]})"


@pytest.fixture(scope="module")
def qgis_ready() -> None:
    why = _qgis_missing()
    if why is None:
        return
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"QGIS is needed under CI (.ci/run installs qgis python3-qgis as root): {why}")
    pytest.skip(f"QGIS is not installed: {why} (apt-get install qgis python3-qgis)")


@pytest.fixture(scope="module")
def work(tmp_path_factory, qgis_ready, tiny_clip_file) -> dict:
    """A 300² georeferenced crop of the bundled CC0 Landsat scene, the frugalvl wrapper, the plugin folder."""
    import rasterio
    from rasterio.windows import Window

    root = tmp_path_factory.mktemp("qgis")
    scene = root / "scene.tif"
    with rasterio.open(EXAMPLES / "landsat_rgb_byte.tif") as src:
        window = Window(100, 100, 300, 300)
        profile = src.profile
        profile.update(width=300, height=300, transform=src.window_transform(window))
        with rasterio.open(scene, "w", **profile) as dst:
            dst.write(src.read(window=window))
    # the extent case: columns 50..250, rows 0..150 of the scene; the mask: its left half (columns 50..150)
    a, _, x0, _, e, y0 = list(profile["transform"])[:6]
    extent = (x0 + 50 * a, x0 + 250 * a, y0 + 150 * e, y0)
    import geopandas
    from shapely.geometry import box

    mask = root / "mask.gpkg"
    geopandas.GeoDataFrame(
        {"name": ["left"]}, geometry=[box(x0 + 50 * a, y0 + 150 * e, x0 + 150 * a, y0)], crs=profile["crs"]
    ).to_file(mask)
    exe = root / "bin" / "frugalvl"
    exe.parent.mkdir()
    exe.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO / "src"}" exec "{sys.executable}" -m frugalvl "$@"\n')
    exe.chmod(0o755)
    pair = _change_pair(root, scene)
    zip_path = subprocess.run(
        [sys.executable, str(REPO / "qgis" / "build_plugin.py"), str(root / "dist")],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return {
        "root": root, "scene": scene, "exe": exe, "clip": tiny_clip_file, "zip": Path(zip_path),
        "extent": "{},{},{},{} [{}]".format(*extent, profile["crs"].to_string()), "mask": mask, **pair,
    }  # fmt: skip


def _change_pair(root: Path, scene: Path) -> dict:
    """Two 64×48 crops of the scene, the second with a block painted over (inverted), and the tiny SAM 3."""
    import rasterio
    from rasterio.windows import Window

    from tests.segment.test_segearth_ov3 import informative_sam3

    paths = {"before": root / "before.tif", "after": root / "after.tif"}
    with rasterio.open(scene) as src:
        window = Window(0, 0, 64, 48)
        rgb = src.read(window=window)
        profile = src.profile
        profile.update(width=64, height=48, transform=src.window_transform(window))
    changed = rgb.copy()
    changed[:, 10:40, 20:60] = 255 - changed[:, 10:40, 20:60]
    for name, data in (("before", rgb), ("after", changed)):
        with rasterio.open(paths[name], "w", **profile) as dst:
            dst.write(data)
    bundle = informative_sam3()
    sam3 = root / "sam3-tiny"
    bundle.model.save_pretrained(sam3)
    bundle.processor.save_pretrained(sam3)
    return {**paths, "sam3": sam3}


def _change_params(work: dict, out: Path, **extra) -> dict:
    return {
        "BEFORE": str(work["before"]),
        "AFTER": str(work["after"]),
        "CLASSES": CHANGE_CLASSES,
        "SAM3": str(work["sam3"]),
        "TILE": 32,
        "SEMANTIC": True,
        "INSTANCE_IOU": 0.5,
        "OUTPUT": str(out / "change.tif"),
        "VECTORS": str(out / "transitions.gpkg"),
        **extra,
    }


def _environment(work: dict, profile: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(
        QT_QPA_PLATFORM="offscreen",
        QGIS_CUSTOM_CONFIG_PATH=str(profile),
        FRUGALVL_EXECUTABLE=str(work["exe"]),
        PYTHONPATH=str(REPO / "src"),  # frugalvl importable in QGIS's Python: the plugin must still not import it
        XDG_RUNTIME_DIR=str(profile),
    )
    return env


def _install(work: dict, profile: Path) -> Path:
    """Install the built zip into a clean profile, as Plugins > Install from ZIP does (unpack, enable)."""
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(work["zip"]) as z:
        z.extractall(plugins)
    return plugins


def run_qgis(work: dict, spec: dict, name: str) -> dict:
    profile = work["root"] / f"profile-{name}"
    spec = {"plugins_dir": str(_install(work, profile)), **spec}
    spec_path = work["root"] / f"{name}.json"
    spec_path.write_text(json.dumps(spec))
    done = subprocess.run(
        [QGIS_PYTHON, str(RUNNER), str(spec_path)], capture_output=True, text=True,
        env=_environment(work, profile), timeout=1200,
    )  # fmt: skip
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("QGIS-RUNNER-REPORT ")]
    assert lines, f"the QGIS runner printed no report (status {done.returncode}):\n{done.stderr[-3000:]}"
    return json.loads(lines[-1].split(" ", 1)[1])


def _params(work: dict, out: Path, **extra) -> dict:
    return {
        "INPUT": str(work["scene"]),
        "CLASSES": CLASSES,
        "CLIP": str(work["clip"]),
        "TILE": 224,
        "OUTPUT": str(out / "labels.tif"),
        "SCORES": str(out / "scores.tif"),
        "VECTORS": str(out / "polygons.gpkg"),
        **extra,
    }


@pytest.fixture(scope="module")
def session(work) -> dict:
    """One QGIS session: Check, a run cancelled after its first tile, the rerun (resumes), two bad runs,
    the rendered map. Then the same segmentation with ``frugalvl segment`` directly."""
    out = work["root"] / "out"
    bad = work["root"] / "bad"
    spec = {
        "check": [str(work["exe"]), str(work["root"] / "missing" / "frugalvl")],
        "options_page": str(work["exe"]),
        "change_legend": [str(work["before"])],  # a raster without a colour table: the fixed style
        "runs": [
            {"params": _params(work, out), "cancel_after": 1},
            {"params": _params(work, out)},
            {"params": _params(work, bad, CLASSES="water;land;Water")},
            {"params": _params(work, bad, CLIP=str(work["root"] / "missing.pt"))},
            {"params": _params(work, work["root"] / "cut", EXTENT=work["extent"], MASK=str(work["mask"]), SCORES="")},
            {"algorithm": "frugalvl:change", "params": _change_params(work, work["root"] / "change")},
            {"algorithm": "frugalvl:change", "params": _change_params(work, bad, SAM3=str(work["root"] / "nope"))},
        ],
        "renders": [
            {"layers": [str(out / "labels.tif")], "png": str(work["root"] / "labels.png"), "size": [300, 300]},
            {
                "layers": [str(out / "polygons.gpkg"), str(out / "labels.tif")],
                "png": str(work["root"] / "map.png"),
                "size": [600, 600],
            },
        ],
    }
    report = run_qgis(work, spec, "session")
    direct = work["root"] / "direct"
    from frugalvl.cli import main

    code = main(
        ["segment", str(work["scene"]), "-o", str(direct), "--classes", CLASSES, "--clip", str(work["clip"]),
         "--tile", "224", "--save-probs", "--vectors", "gpkg", "--progress", "none"]
    )  # fmt: skip
    assert code == 0
    code = main(
        ["change", str(work["before"]), str(work["after"]), "-o", str(work["root"] / "change-direct"), "--classes",
         CHANGE_CLASSES, "--sam3", str(work["sam3"]), "--tile", "32", "--semantic", "--instance-iou-threshold",
         "0.5", "--progress", "none"]
    )  # fmt: skip
    assert code == 0
    return {"report": report, "out": out, "direct": direct, "change_direct": work["root"] / "change-direct"}


def _lines(run: dict, kind: str | None = None) -> list[str]:
    return [text for k, text in run["log"] if kind is None or k == kind]


def test_the_plugin_loads_from_the_zip_without_importing_frugalvl(session, work):
    report = session["report"]
    plugin = report["plugin"]
    assert (
        plugin["started"]
        and plugin["provider"]
        and sorted(plugin["algorithms"]) == ["frugalvl:change", "frugalvl:segment"]
    )
    from frugalvl import __version__

    assert plugin["metadata"]["version"] == __version__ and plugin["metadata"]["hasprocessingprovider"] == "yes"
    assert work["zip"].name == f"frugalvl_qgis-{__version__}.zip"
    names = zipfile.ZipFile(work["zip"]).namelist()
    assert {"frugalvl_qgis/metadata.txt", "frugalvl_qgis/icon.svg", "frugalvl_qgis/LICENSE"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert report["frugalvl_imported"] is False and report["torch_imported"] is False


def test_check_shows_version_extras_devices_or_why_not(session, work):
    (ok, text), (bad_ok, bad_text) = session["report"]["check"]
    from frugalvl import __version__

    assert ok and text.splitlines()[0] == f"frugalvl {__version__}"
    assert "devices: cpu" in text and "extras: " in text and "segearth-ov3" in text
    assert not bad_ok and "missing/frugalvl" in bad_text and "not a working frugalvl executable" in bad_text
    page = session["report"]["options_page"]  # the same through the settings page's Check button
    assert page["title"] == "frugalvl" and page["report"] == "OK\n" + text
    assert page["stored"] == str(work["exe"])  # Apply keeps the path in the QGIS settings


def test_cancel_stops_the_run_and_the_rerun_resumes(session):
    cancelled, rerun = session["report"]["runs"][:2]
    assert (
        not cancelled["ok"] and "cancelled" in cancelled["message"] and "run it again to resume" in cancelled["message"]
    )
    assert "Traceback" not in "\n".join(_lines(cancelled))
    resumed = [t for t in _lines(rerun) if "resuming," in t]
    assert rerun["ok"] and len(resumed) == 1, _lines(rerun)
    done_before = int(resumed[0].split("resuming, ")[1].split(" ")[0])
    assert 1 <= done_before < 4  # 4 tiles of 224 px with 56 px overlap on 300²
    ours = rerun["progress"][: rerun["progress"].index(100) + 1]  # then Processing counts the layers it loads
    assert ours == sorted(ours) and ours[-1] == 100  # the bar never moves back
    assert 20 <= [p for p in ours if p > 1][0] < 90  # it starts where the finished tiles left it


def test_outputs_are_added_styled_and_equal_a_direct_run(session):
    import rasterio

    run = session["report"]["runs"][1]
    out, direct = session["out"], session["direct"]
    layers = {layer["name"]: layer for layer in run["layers"]}
    assert set(layers) == {"scene classes", "scene scores", "scene polygons"}
    with rasterio.open(direct / "scene.tif") as src:
        names = json.loads(src.tags()["CLASS_NAMES"])
        colours = {i: "#{:02x}{:02x}{:02x}".format(*src.colormap(1)[i][:3]) for i in range(len(names))}
        expected_labels = src.read(1)
    assert names == CLASSES.split(";")
    labels = layers["scene classes"]
    assert labels["renderer"] == "paletted"
    assert labels["classes"] == [[i, colours[i], n] for i, n in enumerate(names)]
    assert labels["legend"] == [[n, colours[i]] for i, n in enumerate(names)]
    polygons = layers["scene polygons"]
    assert polygons["renderer"] == "categorizedSymbol" and polygons["field"] == "class"
    assert polygons["classes"] == [[n, colours[i], n] for i, n in enumerate(names)]
    assert {"class", "class_index", "area"} <= set(polygons["fields"])
    # equal to frugalvl segment run directly
    with rasterio.open(out / "labels.tif") as got:
        np.testing.assert_array_equal(got.read(1), expected_labels)
        assert got.crs is not None and json.loads(got.tags()["CLASS_NAMES"]) == names
    with rasterio.open(out / "scores.tif") as got, rasterio.open(direct / "scene_probs.tif") as want:
        np.testing.assert_array_equal(got.read(), want.read())
    import pyogrio

    ours, theirs = pyogrio.read_dataframe(out / "polygons.gpkg"), pyogrio.read_dataframe(direct / "scene.gpkg")
    assert len(ours) == len(theirs) == polygons["features"]
    assert sorted(zip(ours["class"], ours["area"].round(3))) == sorted(zip(theirs["class"], theirs["area"].round(3)))
    # areas in the attribute table: per class, the labelled pixels times the pixel area
    with rasterio.open(direct / "scene.tif") as src:
        pixel_area = abs(src.transform.a * src.transform.e)
    for i, name in enumerate(names):
        assert polygons["areas"].get(name, 0.0) == pytest.approx((expected_labels == i).sum() * pixel_area, rel=1e-9)
    # styles beside the outputs, for whoever opens the files later
    assert (out / "labels.qml").exists() and (out / "polygons.qml").exists()


@pytest.mark.parametrize("index, fragment", [(2, "in the vocabulary twice"), (3, "does not exist")])
def test_bad_input_is_frugalvls_error_line_and_a_failed_algorithm(session, index, fragment):
    run = session["report"]["runs"][index]
    errors = [t for t in _lines(run, "error") if t.startswith("frugalvl: error:")]
    assert not run["ok"] and len(errors) == 1 and fragment in errors[0]
    assert run["message"] == errors[0] and run["exception"] == "QgsProcessingException"
    assert "Traceback" not in "\n".join(_lines(run)) and not run["layers"]


def test_rendered_map_shows_the_class_colours(session, work):
    from PIL import Image

    renders = session["report"]["renders"]
    assert [r["errors"] for r in renders] == [[], []]
    import rasterio

    with rasterio.open(session["direct"] / "scene.tif") as src:
        labels = src.read(1)
        cmap = src.colormap(1)
    png = np.asarray(Image.open(work["root"] / "labels.png").convert("RGB"))
    assert png.shape == (300, 300, 3)  # one screen pixel per raster pixel
    seen = {tuple(int(v) for v in c) for c in png.reshape(-1, 3)}
    present = {tuple(cmap[int(v)][:3]) for v in np.unique(labels) if v != 255}
    assert seen - {(255, 255, 255)} == present  # the palette of the classes present, nodata left white
    # pixel by pixel: each labelled pixel shows its class colour
    lut = np.array([cmap.get(i, (255, 255, 255, 255))[:3] for i in range(256)], dtype=np.uint8)
    expected = np.where((labels == 255)[..., None], 255, lut[labels])
    assert (png == expected).all(axis=2).mean() > 0.99  # the edge may be resampled by a pixel


def test_extent_and_mask_cut_the_input_on_its_own_grid(session, work):
    import rasterio

    run = session["report"]["runs"][4]
    assert run["ok"], run.get("message")
    with rasterio.open(work["root"] / "cut" / "labels.tif") as cut, rasterio.open(work["scene"]) as scene:
        labels = cut.read(1)
        assert labels.shape == (150, 200)
        assert cut.transform.c == pytest.approx(scene.transform.c + 50 * scene.transform.a)  # same grid
        assert cut.transform.f == pytest.approx(scene.transform.f) and cut.transform.a == scene.transform.a
        valid = scene.read_masks(1)[:150, 50:250] > 0
    assert (labels[:, 100:] == 255).all()  # outside the mask polygon: nodata
    inside = labels[:, :100][valid[:, :100]]
    assert inside.size > 0.5 * 150 * 100 and (inside != 255).all()


def test_change_outputs_are_styled_and_equal_a_direct_run(session, work):
    import pyogrio
    import rasterio

    run = session["report"]["runs"][5]
    assert run["ok"], run.get("message")
    command = [t for t in _lines(run, "command")]
    assert len(command) == 1 and " change " in command[0] and "--progress json" in command[0]
    assert any(": 4/4 tiles" in t for t in run["progress_texts"])  # 64×48 in 32² tiles: 2×2
    ours = run["progress"][: run["progress"].index(100) + 1]
    assert ours == sorted(ours)
    out, direct = work["root"] / "change", session["change_direct"]
    with rasterio.open(out / "change.tif") as got, rasterio.open(direct / "before_change.tif") as want:
        change = want.read(1)
        np.testing.assert_array_equal(got.read(1), change)
        white = "#{:02x}{:02x}{:02x}".format(*want.colormap(1)[1][:3])  # the map's own colour of "change"
    assert (change == 1).any() and (change == 0).any()  # the painted block changed, not everything
    layers = {layer["name"]: layer for layer in run["layers"]}
    assert set(layers) == {"before → after change", "before → after transitions"}
    raster = layers["before → after change"]
    assert raster["renderer"] == "paletted"
    assert raster["classes"] == [[0, "#000000", "no change"], [1, white, "change"]]
    assert "<paletteEntry" in (out / "change.qml").read_text() and 'alpha="0"' in (out / "change.qml").read_text()
    polygons = layers["before → after transitions"]
    theirs = pyogrio.read_dataframe(direct / "before_change.gpkg")
    assert polygons["renderer"] == "categorizedSymbol" and "from_class" in polygons["field"]
    with rasterio.open(direct / "before_after_labels.tif") as src:
        names = json.loads(src.tags()["CLASS_NAMES"])
        colours = {n: "#{:02x}{:02x}{:02x}".format(*src.colormap(1)[i][:3]) for i, n in enumerate(names)}
    pairs = sorted(set(zip(theirs["from_index"], theirs["from_class"], theirs["to_index"], theirs["to_class"])))
    assert polygons["classes"] == [[f"{a} → {b}", colours[b], f"{a} → {b}"] for _i, a, _j, b in pairs]
    assert polygons["features"] == len(theirs) > 0


def test_a_change_map_without_a_colour_table_gets_the_fixed_style(session):
    (legend,) = session["report"]["change_legend"]
    assert legend == [[0, "no change", "#000000", 0], [1, "change", "#ff2828", 255]]


def test_change_with_a_missing_model_is_frugalvls_error_line(session):
    run = session["report"]["runs"][6]
    errors = [t for t in _lines(run, "error") if t.startswith("frugalvl: error:")]
    assert not run["ok"] and len(errors) == 1 and "nope" in errors[0], _lines(run)
    assert run["message"] == errors[0] and run["exception"] == "QgsProcessingException"
    assert "Traceback" not in "\n".join(_lines(run)) and not run["layers"]


def _qgis_process() -> str:
    found = shutil.which("qgis_process")
    if found and Path(found + ".bin").exists():
        # Debian's /usr/bin/qgis_process wrapper passes --noversioncheck, which 3.22's qgis_process rejects
        return found + ".bin"
    if not found:
        pytest.fail("qgis_process is not installed (it comes with the qgis package)")
    return found


def test_qgis_process_run_headless(work):
    profile = work["root"] / "profile-qgis-process"
    _install(work, profile)
    env = _environment(work, profile)
    exe = _qgis_process()
    enable = subprocess.run([exe, "plugins", "enable", "frugalvl_qgis"], capture_output=True, text=True, env=env)
    assert enable.returncode == 0, enable.stdout + enable.stderr
    out = work["root"] / "qp"
    args = [f"--{k}={v}" for k, v in _params(work, out, SCORES="").items() if v != ""]
    done = subprocess.run(
        [exe, "--json", "run", "frugalvl:segment", *args], capture_output=True, text=True, env=env, timeout=1200
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(done.stdout[done.stdout.index("{") :])
    assert result["results"]["OUTPUT"] == str(out / "labels.tif")
    assert result["results"]["VECTORS"] == str(out / "polygons.gpkg")
    assert any("--progress json" in line for line in result["log"]["info"])
    import rasterio

    with rasterio.open(out / "labels.tif") as src:
        assert json.loads(src.tags()["CLASS_NAMES"]) == CLASSES.split(";")
        assert src.colormap(1)[0][:3] != (0, 0, 0)
    assert (out / "labels.qml").exists() and "paletted" in (out / "labels.qml").read_text()
