"""How much the app's caches save when a vocabulary is changed and run again (docs/app.md).

Random-weight CLIP with ViT-B/16's dimensions (no download), the bundled Landsat sample, models
already loaded (the app loads them once). Times, on the same image:

1. first run, caches cold (vocabulary A);
2. second run with one class's synonym changed (vocabulary B): one new text query, image tokens cached;
3. for reference, vocabulary B through a plain library ``SegEarthOV`` (no app caches), as a new CLI
   process would after loading the model.

    .venv/bin/python bench/app_rerun.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "data" / "landsat_rgb_byte.tif"
VOCAB_A = "background;water,river,lake;cloud;vegetation,forest;bare soil"
VOCAB_B = "background;water,river,pond;cloud;vegetation,forest;bare soil"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ["FRUGALVL_TEXT_CACHE"] = "off"  # cold means cold: no text features from earlier runs on disk
    from frugalvl.app import AppConfig
    from frugalvl.app.engine import ModelHub, RunOptions
    from frugalvl.app.images import open_image
    from frugalvl.app.jobs import Run, execute
    from frugalvl.segment.methods import method
    from frugalvl.segment.segearth_ov import SegEarthOV
    from frugalvl.testing.clip import write_tiny_openai_clip
    from frugalvl.vocab import Vocabulary
    from frugalvl.windows import Window

    folder = Path(tempfile.mkdtemp(prefix="app-rerun-"))
    clip_file = write_tiny_openai_clip(folder / "vitb16-random.pt", embed_dim=512, width=768, text_width=512, layers=12)
    image = open_image("img", SAMPLE, SAMPLE.name, 10**9)
    window = Window(0, image.height, 0, image.width)
    rows = []
    config = AppConfig(models={"clip": str(clip_file)})
    clip = method("segearth-ov").load_models(config.models)["clip"]  # loaded once, as in the app
    for rep in range(args.repeats):
        hub = ModelHub(config)  # fresh caches
        hub._models[("clip", str(clip_file))] = clip
        clip.text_cache.clear()
        times = {}
        for name, vocab in (("first run (cold caches)", VOCAB_A), ("second run, one class changed", VOCAB_B)):
            run = Run(f"r{name}", image, RunOptions(vocabulary=vocab), window, folder / f"{rep}-{len(times)}")
            run.folder.mkdir(parents=True)
            start = time.perf_counter()
            execute(run, hub)
            times[name] = time.perf_counter() - start
        clip.text_cache.clear()
        start = time.perf_counter()
        plain = SegEarthOV(clip, Vocabulary.parse(VOCAB_B))
        plain.class_scores(image.image.rgb)
        times["plain library SegEarthOV, vocabulary B"] = time.perf_counter() - start
        rows.append(times)
    print(f"{'case':<42} " + " ".join(f"rep{i + 1:>6}" for i in range(len(rows))))
    for key in rows[0]:
        print(f"{key:<42} " + " ".join(f"{r[key]:>8.2f}s" for r in rows))
    best = {k: min(r[k] for r in rows) for k in rows[0]}
    print(
        f"speed-up of the second run over the first: {best['first run (cold caches)'] / best['second run, one class changed']:.1f}x"
    )
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
