# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= data/synthetic
RUN ?= runs/demo
export DETECT_SHARED_DATA ?= $(abspath ../shared/datasets)

.PHONY: install demo test data clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

$(DATA)/annotations/val.json: $(STAMP) $(wildcard detect/data/synthetic/*.py) detect/data/segmentation.py
	$(PY) tools/make_synthetic.py --out $(DATA) --train 400 --val 100 --size 320 --seed 0

data: $(DATA)/annotations/val.json

demo: data
	$(PY) tools/demo.py --data $(DATA) --out $(RUN)

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(RUN) $(DATA)
