# Every target bootstraps what it needs: a pinned uv in .tools/, the locked .venv,
# and the Debian packages the tests and benchmarks run against.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
NATIVE := setup.py $(wildcard native/*.c native/*.h)
STAMP := $(VENV)/.synced-$(shell cat uv.lock pyproject.toml $(NATIVE) | sha1sum | cut -c1-12)

.PHONY: venv sysdeps jars test lint demo demo-hadoop bench ui clean

$(STAMP): pyproject.toml uv.lock scripts/bootstrap.sh $(NATIVE)
	@scripts/bootstrap.sh
	@rm -f $(VENV)/.synced-*
	@touch $@

venv: $(STAMP)

sysdeps:
	@scripts/sysdeps.sh

# JVM parts the tests run for real (MiniDFSCluster, DistCp, the Kafka broker): fetched from
# Maven Central once, cached under .tools/java (scripts/maven.py).
jars: venv
	@$(PY) -m scripts.maven fetch hadoop > /dev/null
	@$(PY) -m scripts.maven fetch kafka > /dev/null

lint: venv
	$(VENV)/bin/ruff check .

# The suite starts hundreds of Python processes (CLI runs, dagster webserver/daemon/run and step
# processes, dg, Spark workers). With PYTHONDONTWRITEBYTECODE set (this machine sets it) each one
# compiled dagster & co. from source again (`import dagster`: 4.9 s CPU, 2.3 s with bytecode), so
# the tests may cache bytecode in the (git-ignored) __pycache__ dirs: an empty value is unset.
test: venv sysdeps jars lint
	PYTHONDONTWRITEBYTECODE= $(VENV)/bin/pytest -q -p no:cacheprovider --durations=25

demo: venv
	$(PY) -m scripts.demo

# the seed's flow on real parts: two real HDFS, the GCS emulator, Dataproc jobs running DistCp
# and our engine on Spark (scripts/demo_hadoop.py)
demo-hadoop: venv sysdeps jars
	$(PY) -m scripts.demo_hadoop

bench: venv sysdeps
	$(PY) -m bench

ui: venv
	$(PY) -m scripts.ui

clean:
	rm -rf .demo .demo-hadoop .bench
