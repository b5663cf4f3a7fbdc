# One command for the demo, one for the tests; both create or reuse .venv.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.frugalvl-installed

.PHONY: venv demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: the build served from this machine's disk (see README)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Segments a bundled, freely licensed Landsat scene (CC0) with the paper's default model.
# Needs the OpenAI ViT-B/16 weights and the SimFeatUp checkpoint: downloaded on first use, or
# given as local files with FRUGALVL_CLIP=/path/ViT-B-16.pt FRUGALVL_UPSAMPLER=/path/xclip_jbu_one.ckpt
FRUGALVL_CLIP      ?= ViT-B-16
FRUGALVL_UPSAMPLER ?= official

demo: $(STAMP)
	$(VENV)/bin/frugalvl segment examples/data/landsat_rgb_byte.tif -o demo_out \
	    --method segearth-ov --classes "background;water,river,lake;cloud;vegetation,forest;bare soil" \
	    --clip "$(FRUGALVL_CLIP)" --upsampler "$(FRUGALVL_UPSAMPLER)" --save-probs

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/segearth_ov.py

clean:
	rm -rf demo_out .pytest_cache
