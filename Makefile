# The backbone's two set-up commands are `make dev` (run it) and `make test`
# (test it). Both need only Go and a local MySQL/MariaDB.
SHELL := /bin/bash
GO ?= go
BIN := bin/backbone
MARIADB_ADDR ?= 127.0.0.1:3306

.PHONY: build test db dev walkthrough vet fmt lint bench fuzz clean

build:
	$(GO) build -o $(BIN) ./cmd/backbone

# db makes sure the local MariaDB/MySQL answers, starting MariaDB if not.
db:
	@./scripts/ensure-db.sh

test: db
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) test -race -count=1 -timeout 30m ./...

# dev builds and runs the whole backbone; ARGS passes flags, e.g.
#   make dev ARGS='--port 18080 --pubsub-port 18085'
#   make dev ARGS='--emulator gcloud'
# (the binary, not go run: go run turns every exit code into 1).
dev: db build
	$(abspath $(BIN)) dev $(ARGS)

# walkthrough runs the README's walkthrough (scripts/walkthrough.sh) from this
# shell against a running `make dev`, after its banner's export lines.
walkthrough: build
	./scripts/walkthrough.sh

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecodeRaw -fuzztime 60s ./shared/event/

# bench builds the binary and runs `backbone bench` (about 2-3 minutes): the
# raw database limit, the merge path and the full path side by side, the
# history-length curve and serve's start-up and memory, written to
# bench-results/ (bench.json, bench.svg, bench.md). Then the merge engine's
# Go benchmarks, which run even when the first step reported measurement
# errors (it exits 1 then, and so does make). BENCH_FLAGS passes flags, e.g.
# BENCH_FLAGS=--quick or BENCH_FLAGS=--profile (CPU profiles).
bench: db build
	@status=0; \
	./$(BIN) bench --out bench-results $(BENCH_FLAGS) || status=$$?; \
	$(GO) test -run '^$$' -bench . -benchmem ./shared/merge/... || status=$$?; \
	exit $$status

clean:
	rm -rf bin
