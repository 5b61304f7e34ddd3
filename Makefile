# make demo / make test each set up .venv on first use, then run.
# The install step is skipped while pyproject.toml and constraints.txt are
# unchanged (a stamp file), so a second run starts at once.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# constraints.txt pins torch to the CPU build on this machine's disk; without
# it pip would resolve a CUDA build of several GB.
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test test-all lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25.1"  # for --group
	# explain: captum, fairlearn; federated: Flower (simulation engine, DP accounting) and Opacus;
	# edge: ONNX, onnxscript, ONNX Runtime, FastAPI and uvicorn; quantum: PennyLane;
	# ui: python-multipart for uploads; tune: Optuna (preset: best); audio: espeakng-loader (eSpeak NG and its
	# voices, for spoken-digits); vision: Hugging Face transformers (SAM 2 tracking; without it
	# tests/vision skips, so CI would not run them). The dev group has pytest, ruff and Playwright (which
	# drives the system Chromium in tests/ui; .ci/run installs that with apt when it is missing).
	$(PIP) -e ".[explain,federated,edge,quantum,ui,tune,audio,vision]" --group dev
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/glassbox demo

# One worker per core (pytest-xdist), whole files to a worker so module fixtures are built once;
# conftest.py gives each worker one torch thread. JOBS=0 runs in this process.
JOBS ?= auto
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
