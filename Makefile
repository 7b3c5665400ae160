# Every target that needs Python builds .venv first; nothing needs to be installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint run demo bench image constraints clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check pager_actors adapters tests bench examples
	$(BIN)/mypy pager_actors adapters

run: install
	$(BIN)/pager-actors run --config examples/pager.toml

bench: install
	$(BIN)/python bench/bench_engine.py
	$(BIN)/python bench/bench_durability.py
	$(BIN)/python bench/bench_http.py
	$(BIN)/python bench/bench_slowloris.py
	$(BIN)/python bench/bench_delivery.py
	$(BIN)/python bench/bench_cluster.py

# The image installs exactly the versions pinned in docker/constraints.txt.
image:
	docker build -t pager-actors .

# Re-pin the image's dependencies after changing them in pyproject.toml.
constraints:
	rm -rf .venv-pins && $(PYTHON) -m venv .venv-pins
	.venv-pins/bin/python -m pip install --quiet .
	{ echo "# The image's runtime dependencies, pinned: regenerate with 'make constraints'."; \
	  .venv-pins/bin/python -m pip freeze --exclude pager-actors; } > docker/constraints.txt
	rm -rf .venv-pins

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

demo: install
	$(BIN)/pager-actors demo
