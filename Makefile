# Shortcuts for the scripts in scripts/ (which work without make).
.PHONY: setup demo test lint bench
setup:
	scripts/bootstrap.sh dev
demo:
	scripts/demo.sh
test:
	scripts/test.sh
lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
bench:
	.venv/bin/python bench/ingest_bench.py
