# Two commands for a fresh machine: `make demo` and `make test`.
# torch and torchvision go in first, pinned: it is the only pair that imports here.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.embedstore-installed

.PHONY: test test-fast slow-tests demo install clean bench mutation

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	sh scripts/install-chromium.sh
	$(PY) -m pytest -q -n 2

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n 2

# Re-measure which tests are slow (about 4 min): every test of the fast subset with at least 1 s of
# its own time goes to tests/slow_measured.txt, which conftest.py marks `slow`.
slow-tests: $(STAMP)
	$(PY) scripts/measure_slow_tests.py

demo: $(STAMP)
	$(VENV)/bin/embedstore demo --out demo-out

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

# Mutation testing of the statistics modules (hours on a 2-core machine; not part of `make test`):
# score per module in bench/RESULTS.md, the surviving mutants judged in bench/MUTATION.md.
mutation: $(STAMP)
	$(PY) -c 'import mutmut' 2>/dev/null || $(PY) -m pip install -q -e '.[test,mutation]'
	nice $(PY) scripts/mutation.py

clean:
	rm -rf $(VENV) build *.egg-info demo-out mutants
