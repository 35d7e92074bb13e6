# Every target creates .venv and installs what it needs first; nothing relies on the host.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
MODELS ?= models
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install models demo-models serve test lint bench report clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "convbridge needs Python 3.11: make PYTHON=/path/to/python3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[serve,train,test,dev]"
	touch $(STAMP)

# The gRPC messages, generated for the protobuf runtime just installed (never committed).
PROTOS := $(wildcard service/rpc/protos/*.proto)
GENERATED := $(patsubst service/rpc/protos/%.proto,service/rpc/%_pb2.py,$(PROTOS))
$(GENERATED) &: $(PROTOS) $(STAMP)
	$(PY) -m service.rpc.build

install: $(STAMP) $(GENERATED)

# Trains and exports all six variants on the offline digits (a new version of each).
models: install
	$(PY) -m training --variant all --dataset digits --out $(MODELS)

# Trains the demo models only when the repository holds none yet.
demo-models: install
	@if ls $(MODELS)/*/[0-9]*/saved_model.pb >/dev/null 2>&1; then \
		echo "models: found models in $(MODELS)/, not retraining (make models adds new versions)"; \
	else \
		$(MAKE) --no-print-directory models; \
	fi

# Serves at once. With no models yet, it trains the demo models in the background, cheapest
# first, and the service (polling the repository) serves each as soon as it is exported.
serve: install
	@mkdir -p $(MODELS); poll=$${CONVBRIDGE_POLL_INTERVAL_S:-0}; \
	if ! ls $(MODELS)/*/[0-9]*/saved_model.pb >/dev/null 2>&1; then \
		echo "serve: no models in $(MODELS)/ yet: training the demo models in the background," \
			"cheapest first (log: $(MODELS)/training.log); each is served once exported"; \
		$(PY) -m training --variant all --dataset digits --quiet --out $(MODELS) \
			> $(MODELS)/training.log 2>&1 & \
		poll=$${CONVBRIDGE_POLL_INTERVAL_S:-2}; \
	fi; \
	CONVBRIDGE_REPOSITORY=$(MODELS) CONVBRIDGE_POLL_INTERVAL_S=$$poll \
		exec $(PY) -m service --host $(HOST) --port $(PORT)

# The one test command (README, CI): lint, types, then the whole suite.
test: lint
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

report: install
	$(PY) -m training.report --models $(MODELS)

# Measures the in-process ceiling, a naive server and convbridge in one run (about 20 minutes);
# needs wrk (Debian's package), which it installs when it runs as root.
bench: install
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } \
		|| { echo "make bench needs wrk: apt-get install wrk"; exit 2; }
	$(PY) -m benchmarks --update-readme

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
