# The front door: `make run` and `make test` work on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_FLAGS ?= -q --disable-pip-version-check
export GAN_HOME ?= $(CURDIR)/.gan

.PHONY: install run test test-unit test-integration test-reliability up down status serve bench lint fmt gpu-check lock clean

$(BIN)/gan: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -c constraints.txt -e '.[dev]'
	@touch $(BIN)/gan

install: $(BIN)/gan ## create .venv and install (torch CPU 2.13.0 from disk here)

run: install ## bring the stack up and run one retraining on the bundled digits
	$(BIN)/gan stack up
	$(BIN)/gan retrain
	@$(BIN)/gan stack status

test: install ## unit tier, then integration tier (own stack, free ports); in this order, even with -j
	$(MAKE) --no-print-directory test-unit
	$(MAKE) --no-print-directory test-integration

test-unit: install ## fast tier: no services
	$(BIN)/pytest -q tests/unit

test-integration: install ## real services: the tests start their own stack (temp GAN_HOME, free ports)
	$(BIN)/pytest -q -m integration --durations=10 tests/integration tests/reliability

up: install
	$(BIN)/gan stack up

down: install
	$(BIN)/gan stack down

status: install
	$(BIN)/gan stack status

serve: install ## serve the retrain deployment (cron schedule) against the stack
	$(BIN)/gan serve

bench: install
	$(BIN)/gan bench

gpu-check: install ## on a GPU machine: default and r3gan models, fixed steps, images/s, memory, bf16
	$(BIN)/python -m gan.tools.gpu_check
	$(BIN)/python -m gan.tools.gpu_check --recipe r3gan --no-ray

lint: install
	$(BIN)/ruff check .

fmt: install
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

lock: ## refresh constraints.txt from the current .venv
	$(BIN)/pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu/torch==\1/' | sort -f > constraints.new && mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
