# Two commands: `make demo` and `make test`. Each creates .venv from requirements.txt if needed.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements
DEMO := data/demo

.PHONY: demo test bench bench-cuhk03 clean-demo

$(STAMP): requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (tf-reid needs Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# Synthetic pedestrians -> TFRecords -> train -> evaluate -> export -> embed + search -> PNGs.
# Every stage's command is printed; re-running reuses what exists (see tools/demo.py).
demo: $(STAMP)
	$(PY) -m tools.demo --python $(PY)

bench: $(STAMP)
	$(PY) -m bench.build_tfrecords
	$(PY) -m bench.input_pipeline
	$(PY) -m bench.local_distance

# The AlignedReID recipe on the real CUHK03 crops in ../shared (about an hour here; not CI).
bench-cuhk03: $(STAMP)
	$(PY) -m bench.cuhk03_subset

clean-demo:
	rm -rf $(DEMO) runs/demo
