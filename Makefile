# Shortcuts for the commands in the README.
.PHONY: test run bench setup stress

setup:
	bash deploy/local/setup.sh

test:
	bash deploy/local/test.sh

stress:
	bash deploy/local/stress.sh

run:
	bash deploy/local/run.sh

bench: setup
	.venv/bin/python -m tests.bench.bench_symbols
	.venv/bin/python -m tests.bench.bench_webhook
	.venv/bin/python -m tests.bench.bench_pipeline
