# Two commands: `make demo` (train -> val -> detect -> compare on the built-in data) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: demo test install clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,export]"
	touch $@

demo: install
	$(PY) scripts/demo.py

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs demo
