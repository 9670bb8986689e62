# The front door. Every target bootstraps .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := .tether/tools
TOOLS_STAMP := $(TOOLS)/.installed
SUPABASE_CLI_VERSION := 2.117.0
# Debian packages some tests need: Postgres 15 (Supabase's version) with
# plpgsql_check for `supabase db lint`, and Chromium for the dashboard.
DEBIAN_PACKAGES := postgresql-15 postgresql-15-plpgsql-check chromium

.PHONY: dev test lint bench bench-quick sql-contract tools clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "tether needs Python 3.11 or newer (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Tools outside PyPI, best effort: a test that needs one that could not be
# installed skips and says why.
$(TOOLS_STAMP): Makefile
	@mkdir -p $(TOOLS)
	@if command -v npm >/dev/null 2>&1; then \
		echo "installing the Supabase CLI $(SUPABASE_CLI_VERSION) into $(TOOLS)"; \
		npm install --prefix $(TOOLS) --no-audit --no-fund --silent -E supabase@$(SUPABASE_CLI_VERSION) \
			|| echo "could not install the Supabase CLI: its tests will skip"; \
	else echo "npm not found: the Supabase CLI tests will skip"; fi
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian packages: $$missing"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
			|| echo "could not install $$missing: the tests that need them will skip"; \
	else echo "not installed (needs root and apt-get): $$missing; the tests that need them will skip"; fi
	@touch $(TOOLS_STAMP)

tools: $(TOOLS_STAMP)

# `make dev ARGS="--port 4000 --sweep-interval 10s"` passes flags to `tether dev`; not
# echoed, since they may hold a --database-url with its password.
dev: $(STAMP)
	@$(BIN)/tether dev $(ARGS)

# pytest exits 5 when it collected nothing: a suite that ran no test has failed.
test: $(STAMP) $(TOOLS_STAMP)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests were collected: failing"; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/cfn-lint infra/template.yaml

# Every benchmark on a fresh embedded Postgres (under 10 minutes); `make bench ARGS=NAME`
# runs one. bench-quick is the reduced version (under 2 minutes).
bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick $(ARGS)


# After adding a tether_*_vN+1 (or dropping a _vN a release later): record the contract.
sql-contract: $(STAMP)
	$(BIN)/python -m tests.sql_contract

# Refused while a `tether dev` runs here; every embedded Postgres under .tether is
# stopped before its data goes (tether/local/clean.py).
clean:
	@if test -x $(BIN)/python; then $(BIN)/python -m tether.local.clean; [ $$? -ne 3 ] || exit 1; fi
	rm -rf $(VENV) .tether .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info
