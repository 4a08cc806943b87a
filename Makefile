# The two quick-start commands: `make demo` and `make test`. Each sets itself up (idempotent).
.PHONY: setup demo test test-fast lint bench

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	.venv/bin/ruff check .
	.venv/bin/python -m pytest

test-fast: setup
	.venv/bin/python -m pytest -m "not llm and not slow"

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

bench: setup
	.venv/bin/mark bench store --memories 100000 --users 100
