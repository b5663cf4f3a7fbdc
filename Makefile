# One command for the demo, one for the tests; both create or reuse .venv.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.frugalvl-installed

.PHONY: venv demo test lint typecheck unit bench clean qgis-plugin

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, at the version pinned in constraints.txt, so that the editable install below keeps it
	$(PY) -m pip install -q -c constraints.txt torch torchvision
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Segments a bundled, freely licensed Landsat scene (CC0) with the paper's default model.
# Needs the OpenAI ViT-B/16 weights and the SimFeatUp checkpoint: downloaded on first use, or
# given as local files with FRUGALVL_CLIP=/path/ViT-B-16.pt FRUGALVL_UPSAMPLER=/path/xclip_jbu_one.ckpt
FRUGALVL_CLIP      ?= ViT-B-16
FRUGALVL_UPSAMPLER ?= official

demo: $(STAMP)
	@$(PY) -m frugalvl.commands.demo_check --clip "$(FRUGALVL_CLIP)" --upsampler "$(FRUGALVL_UPSAMPLER)"
	$(VENV)/bin/frugalvl segment examples/data/landsat_rgb_byte.tif -o demo_out \
	    --method segearth-ov --classes "background;water,river,lake;cloud;vegetation,forest;bare soil" \
	    --clip "$(FRUGALVL_CLIP)" --upsampler "$(FRUGALVL_UPSAMPLER)" --save-probs --vectors gpkg

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples qgis
	$(VENV)/bin/ruff format --check src tests bench examples qgis

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(PY) bench/segearth_ov.py

# The QGIS plugin as an installable zip (Plugins > Manage and Install Plugins > Install from ZIP): docs/qgis.md
qgis-plugin:
	$(PYTHON) qgis/build_plugin.py dist

clean:
	rm -rf demo_out .pytest_cache .mypy_cache .ruff_cache
