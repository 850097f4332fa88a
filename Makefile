# Two commands: `make demo` (train -> val -> detect -> compare on the built-in data) and `make test`.
# Both install the package into .venv with the versions pinned in constraints.txt (see `make constraints`).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: demo test install constraints clean docs-compare

install: $(VENV)/.installed

# torch's x86_64 wheel brings its CUDA libraries: a fresh .venv takes about 7 GB. Refuse early, in one line,
# rather than fail half-way through pip with "No space left on device".
NEED_GB := 8

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	if [ ! -x $(PY) ] && [ "$$free" -lt $(NEED_GB) ]; then \
	  echo "error: make install needs about $(NEED_GB) GB free here for .venv (torch and its CUDA libraries); $$free GB free: free some space or clone to a larger disk" >&2; exit 2; fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,export,edge]"
	touch $@

demo: install
	$(PY) scripts/demo.py

# Two workers, each given whole files (tests within a file keep their order): most tests wait on a subprocess or
# on Python, so one process leaves the second core idle much of the time.
test: install
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 tests

# Regenerate docs/compare.json and docs/compare.png (stamped with commit and date; see docs/performance.md).
docs-compare: install
	$(PY) scripts/compare.py --cfg configs/yolov5n_c3_dattn.yaml configs/yolov5s_c3_dattn.yaml \
	    configs/yolov5l_c3_dattn.yaml --imgsz 640 --runs 5 --threads 2 --json docs/compare.json --plot docs/compare.png

# Re-resolve setup.cfg's ranges in a scratch venv and pin the result (then `make clean test`, commit both files).
constraints:
	rm -rf .constraints-venv
	$(PYTHON) -m venv .constraints-venv
	.constraints-venv/bin/python -m pip install -q --upgrade pip
	.constraints-venv/bin/python -m pip install -q ".[dev,export,edge]"
	{ sed -n '1,3p' constraints.txt; .constraints-venv/bin/python -m pip freeze --exclude-editable | grep -v '^yolov5-dattn'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .constraints-venv

clean:
	rm -rf $(VENV) runs demo
