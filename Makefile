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

# The burst benchmarks (about 9 minutes): JSON and a Markdown table in .local/bench/.
bench: setup
	.venv/bin/python -m tests.bench.bench_symbols
	.venv/bin/python -W ignore -m tests.bench.run
