# Two commands on a fresh machine with Python 3.11+ and pip: `make demo` and `make test`.
# Each part has its own environment under .venvs/, synced from uv.lock (Airflow and Prefect
# cannot share one). uv is bootstrapped into .venvs/bootstrap when it is not on PATH.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
BOOT := .venvs/bootstrap
UV := $(shell command -v uv 2>/dev/null || echo $(BOOT)/bin/uv)
export UV_PYTHON_DOWNLOADS := never
PYTEST_ARGS ?=

# $(call sync,ENV,EXTRAS[,GROUPS]): create/refresh .venvs/ENV from the lock with the given extras
# and dependency groups (the groups are test-only: never in the published metadata).
sync = UV_PROJECT_ENVIRONMENT=.venvs/$(1) $(UV) sync --frozen --quiet $(foreach e,$(2),--extra $(e)) \
	$(foreach g,$(3),--group $(g))
# $(call pytest,ENV,TESTDIR): run one part's tests.
pytest = .venvs/$(1)/bin/python -m pytest $(2) $(PYTEST_ARGS)

# $(call apt,CMD,PACKAGES): install Debian packages when CMD is missing (root with apt only).
apt = command -v $(1) >/dev/null 2>&1 || { \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing $(2) (apt-get)"; \
		apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
	else echo "$(1) is missing: install $(2) (tests that need it skip)"; fi; }

.PHONY: help uv browser wrk env-core env-server env-celery env-airflow env-prefect env-dagster \
	env-dbt test test-core test-server test-reliability test-security test-celery test-airflow \
	test-prefect test-dagster test-dbt test-e2e \
	lint demo bench dist clean

help:
	@echo "make demo    the reference server, monitored jobs (script, CLI, Celery) against it"
	@echo "make test    lint + every part's tests, each in its own environment"
	@echo "make test-core|test-server|test-celery|test-airflow|test-prefect|test-dagster|test-dbt|test-e2e"
	@echo "make test-reliability|test-security   the server under kill -9, locks, hostile input"
	@echo "make bench   run the benchmarks under benchmarks/ (prints figures)"
	@echo "make dist    build the wheel and the sdist into dist/ (pip install \"./dist/<wheel>[airflow]\")"

uv:
	@command -v $(UV) >/dev/null 2>&1 || { echo "bootstrapping uv into $(BOOT)"; \
		$(PYTHON) -m venv $(BOOT) && $(BOOT)/bin/pip install --quiet uv==$(UV_VERSION); }

env-core: uv
	@$(call sync,core,dev)
env-server: uv
	@$(call sync,server,dev server)
env-celery: uv
	@$(call sync,celery,dev server celery)
env-airflow: uv
	@$(call sync,airflow,dev server airflow,airflow-lineage)
env-prefect: uv
	@$(call sync,prefect,dev server prefect)
env-dagster: uv
	@$(call sync,dagster,dev server dagster)
# dbt with dbt-ol on DuckDB (a group of its own: dbt locks below what the orchestrators do).
env-dbt: uv
	@$(call sync,dbt,dev server,dbt)

browser:
	@$(call apt,chromium,chromium chromium-driver)
wrk:
	@$(call apt,wrk,wrk)

lint: env-server
	.venvs/server/bin/ruff check .
	.venvs/server/bin/ruff format --check .
	.venvs/server/bin/mypy

# The core's tests reach the reference server as another program, from its own environment.
test-core: env-core env-server
	@$(call pytest,core,tests/core)
test-server: env-server
	@$(call pytest,server,tests/server)
# Loopback only (real server processes, PostgreSQL and Redis on this machine), each test bounded.
test-reliability: env-server
	@$(call pytest,server,tests/reliability)
test-security: env-server
	@$(call pytest,server,tests/security)
test-e2e: env-server browser
	@$(call pytest,server,tests/e2e)
test-celery: env-celery
	@$(call pytest,celery,tests/celery)
test-airflow: env-airflow
	@$(call pytest,airflow,tests/airflow)
test-prefect: env-prefect
	@$(call pytest,prefect,tests/prefect)
test-dagster: env-dagster
	@$(call pytest,dagster,tests/dagster)
test-dbt: env-dbt
	@$(call pytest,dbt,tests/dbt)

test: lint test-core test-server test-reliability test-security test-celery test-airflow test-prefect test-dagster \
	test-dbt test-e2e

demo: env-celery env-prefect env-dagster env-airflow
	.venvs/celery/bin/python -m demo $(DEMO_ARGS)

bench: env-celery env-core env-server env-airflow env-prefect env-dagster wrk
	.venvs/core/bin/python benchmarks/core.py
	.venvs/server/bin/python benchmarks/ingest.py
	.venvs/server/bin/python benchmarks/lineage_instructions.py
	.venvs/server/bin/python benchmarks/detector.py
	.venvs/server/bin/python benchmarks/dashboard.py
	.venvs/celery/bin/python benchmarks/celery_instructions.py
	.venvs/celery/bin/python benchmarks/celery_overhead.py
	.venvs/airflow/bin/python benchmarks/airflow_overhead.py
	.venvs/prefect/bin/python benchmarks/prefect_overhead.py
	.venvs/dagster/bin/python benchmarks/dagster_overhead.py
	.venvs/airflow/bin/python benchmarks/airflow_overhead.py --rtt 100
	.venvs/dagster/bin/python benchmarks/dagster_overhead.py --rtt 100
	.venvs/server/bin/python benchmarks/agent.py

# The wheel and the sdist, built in isolation (hatchling, as pyproject.toml says) into dist/.
dist: uv
	rm -rf dist
	$(UV) build --out-dir dist

clean:
	rm -rf .venvs dist .mypy_cache .ruff_cache .pytest_cache .hypothesis
