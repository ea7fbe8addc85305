# The two set-up commands of the README. Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
TEST_STAMP := $(VENV)/.installed-test-stamp
DATA   := data/wordnet-minilm-384-small.hdf5
DEMO   := out/demo.vs

.PHONY: demo test install clean clean-cache bench

# `make demo` needs vecstore alone; `make test` adds the test extra (pytest, matplotlib and dask, so
# the Dask-backed shard tests run too).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

install: $(STAMP)

demo: $(STAMP)
	@mkdir -p out
	$(VENV)/bin/vecstore build $(DATA) $(DEMO) --keys $(DATA):/train_lemmas --force
	$(VENV)/bin/vecstore compress $(DEMO) --codec pq48 --quiet
	$(VENV)/bin/vecstore compress $(DEMO) --codec pca128,int8 --quiet
	$(VENV)/bin/vecstore info $(DEMO)
	@echo "--- exact search on the raw tier; queries: the first 2 held-out WordNet entries"
	$(VENV)/bin/vecstore search $(DEMO) $(DATA):/test --limit 2 -k 5 --tier raw
	@echo "--- the default: scan the smallest calibrated tier, rescore its candidates from raw"
	$(VENV)/bin/vecstore search $(DEMO) $(DATA):/test --limit 2 -k 5
	@echo "--- the 48-byte pq48 tier alone, no rescoring"
	$(VENV)/bin/vecstore search $(DEMO) $(DATA):/test --limit 2 -k 5 --tier pq48

test: $(TEST_STAMP)
	$(PY) -m pytest -q

bench: $(TEST_STAMP)
	$(PY) benchmarks/bench_exact.py

# numba caches compiled kernels beside their source; an edit to kernels/topk.py is not seen by the
# caches of kernels that inline its helpers, so clear them after editing it.
clean-cache:
	find vecstore -name '*.nbi' -delete -o -name '*.nbc' -delete

clean: clean-cache
	rm -rf out .pytest_cache
