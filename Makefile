# The two set-up commands for a fresh machine: `make demo` and `make test`.
# Both create .venv with python3 -m venv + pip when it is missing (pip, not uv or poetry:
# only pip sees the torch 2.14.1 / torchvision 0.29.1 wheels on this machine's disk).

VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo

.PHONY: demo test lint bench-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

demo: $(STAMP)  # a fresh run each time: the previous demo's folder is replaced
	rm -rf $(DEMO_OUT)
	$(PY) tools/train.py --task detect --out $(DEMO_OUT) train.max_minutes=4

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench-deps: $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test,bench]' --config-settings editable_mode=compat

clean:
	rm -rf $(VENV) runs
