# Two commands: `make demo` and `make test`. Each creates .venv from requirements.txt if needed.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements
DEMO := data/demo

.PHONY: demo test bench clean-demo

$(STAMP): requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (tf-reid needs Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# Synthetic pedestrians -> identity-sharded TFRecords -> inspection. Re-running reuses what exists.
demo: $(STAMP)
	@echo "== 1/3 generate the synthetic dataset ($(DEMO)/images)"
	@test -d $(DEMO)/images || $(PY) -m tools.generate_synthetic --output_dir $(DEMO)/images
	@echo "== 2/3 convert it to identity-sharded TFRecords ($(DEMO)/tfrecords)"
	@test -f $(DEMO)/tfrecords/manifest.json || $(PY) -m tools.build_tfrecords --dataset synthetic \
		--data_dir $(DEMO)/images --output_dir $(DEMO)/tfrecords --records_per_shard 500
	@echo "== 3/3 inspect the TFRecords"
	$(PY) -m tools.inspect_tfrecords $(DEMO)/tfrecords
	@echo "demo done: images in $(DEMO)/images, TFRecords + manifest.json in $(DEMO)/tfrecords"

bench: $(STAMP)
	$(PY) -m bench.build_tfrecords
	$(PY) -m bench.input_pipeline
	$(PY) -m bench.local_distance

clean-demo:
	rm -rf $(DEMO)
