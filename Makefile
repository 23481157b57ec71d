# Two entry points: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint docs bench clean

setup: $(STAMP)

# torch first, from the pinned CPU build, so no dependency can pull another torch or CUDA.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,hf]'
	@$(BIN)/python -c "import torch,sys; v=torch.__version__; sys.exit(0 if v.startswith('2.13.0') else 'wrong torch: '+v)"
	touch $(STAMP)

demo: setup
	$(BIN)/leakprobe demo --out runs/demo

# two workers (pytest-xdist) on the two cores CI has; tests that share an expensive session
# fixture are pinned to one worker (xdist_group), so it is built once
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

lint: setup
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/mypy

# the documentation site (mkdocs.yml) into site/; --strict turns every warning (a broken link,
# a missing reference, a docstring naming a parameter the code lacks) into an error
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict --quiet

bench: setup
	$(BIN)/python benchmarks/attack_throughput.py --json runs/bench/attack_throughput.json
	$(BIN)/python benchmarks/stealing.py --json runs/bench/stealing.json
	$(BIN)/python benchmarks/predictability.py --json runs/bench/predictability.json
	$(BIN)/python benchmarks/captioning.py --json runs/bench/captioning.json
	$(BIN)/python benchmarks/precision.py --json runs/bench/precision.json
	test -f runs/demo/target/encoder.safetensors || $(MAKE) demo
	$(BIN)/python benchmarks/permutations.py --model runs/demo/target/encoder.safetensors \
		--split runs/demo/target/split.json --json runs/bench/permutations.json

clean:
	rm -rf $(VENV) runs site .pytest_cache
