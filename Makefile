# Two commands on a fresh machine: `make serve` and `make test`. Both create .venv/ if missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STORE ?= model_store
DATA ?= data/embedded
RUNS ?= runs/demo
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install test lint serve model-store reproduce bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --progress-bar off -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) lint
	$(VENV)/bin/pytest

# The default store: the demo MSL classifier and the demo L_sb segmenter, trained on the embedded
# dataset and exported. Each step is a file target, so a second run does nothing.
$(DATA)/dataset.json: | $(STAMP)
	$(PY) -m training make-dataset $(DATA) --n-train 800 --n-test 200 --image-size 224 --seed 0 --overwrite

$(RUNS)/classifier/best.pth: $(DATA)/dataset.json
	$(PY) -m training classify --data $(DATA) --preset resnet18-csra --method msl --image-size 128 \
		--epochs 4 --warmup-epochs 1 --decay-epochs 3 --out $(RUNS)/classifier

$(RUNS)/segmenter/final.pth: $(DATA)/dataset.json
	$(PY) -m training segment --data $(DATA) --preset deeplabv2-r18-os16 --loss sb --image-size 128 \
		--iters 400 --switch-iter 250 --eval-every 200 --out $(RUNS)/segmenter

$(STORE)/demo-classifier/1/manifest.json: $(RUNS)/classifier/best.pth
	$(PY) -m export $< --name demo-classifier --store $(STORE) --formats onnx,torchscript,mar,triton --force

$(STORE)/demo-segmenter/1/manifest.json: $(RUNS)/segmenter/final.pth
	$(PY) -m export $< --name demo-segmenter --store $(STORE) --formats onnx,torchscript,mar,triton --force

model-store: $(STORE)/demo-classifier/1/manifest.json $(STORE)/demo-segmenter/1/manifest.json

serve: model-store
	$(PY) -m server --store $(STORE) --host $(HOST) --port $(PORT)

reproduce: $(STAMP)
	$(PY) -m training reproduce

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
