# Two commands: `make demo` and `make test`. Each creates .venv from requirements.txt if needed.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements
DEMO := data/demo

.PHONY: demo test bench bench-cuhk03 bench-torch clean-demo

$(STAMP): requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (tf-reid needs Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

# Two workers: most of the suite's wall time is one core busy (interpreter and TensorFlow start-up
# in the tests' subprocesses, Python-side set-up), so the second core was idle. --dist loadfile
# keeps each module on one worker, so a module-scoped fixture is built once.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

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

# tf-reid's train step vs a minimal PyTorch reference (bench/train_vs_torch.py; not CI).
# PyTorch is a bench-only dependency: it lives in .venv-bench, never in .venv.
BENCH_VENV := .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.installed-requirements-bench

$(BENCH_STAMP): requirements-bench.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (the bench needs Python 3.11)"; exit 1; }
	test -x $(BENCH_PY) || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	touch $(BENCH_STAMP)

bench-torch: $(STAMP) $(BENCH_STAMP)
	$(PY) -m bench.train_vs_torch --torch_python=$(BENCH_PY)

clean-demo:
	rm -rf $(DEMO) runs/demo
