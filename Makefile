# redis-cache-optimizer: the two commands that matter are `make demo` and `make test`.
.PHONY: deps build demo run test test-valkey test-newer memcheck lint bench fmt clean

CARGO ?= cargo

deps:
	@scripts/ensure-deps.sh

build: deps
	$(CARGO) build --release -p redis-opt-module -p redis-opt-ctl

## Start a throwaway server with the module, run a workload, print what optctl reports.
demo: build
	@scripts/demo.sh

## Start a server with the module in the foreground (port 6379 or PORT=...), for redis-cli.
run: build
	@scripts/run.sh

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Package check (chromium: a test renders the HTML report; tmux: a test drives optctl top;
## openssl: a test makes TLS certificates),
## clippy, then every test of the workspace (unit and end-to-end).
test: lint
	@scripts/ensure-deps.sh chromium tmux openssl
	$(CARGO) test --workspace

## The end-to-end tests again, against Valkey 8 (installed from bookworm-backports if missing).
test-valkey: deps
	@scripts/ensure-valkey.sh
	REDIS_SERVER=valkey-server $(CARGO) test -p redis-opt-tests

## The end-to-end tests again, against the newest Redis and Valkey Debian builds (Redis 8.6
## from experimental, Valkey 9.1 from sid; fetched into target/newer-servers, nothing
## installed): their atomic slot migration and their string encodings differ from 7.0's.
## `make test-newer SUITE=trixie` runs them against Debian 13's Redis 8.0 and Valkey 8.1.
test-newer: deps
	@dir=$$(SUITE=$(SUITE) scripts/fetch-newer-servers.sh) && \
	REDIS_SERVER=$$dir/bin/redis-server REDIS_CLI=$$dir/bin/redis-cli \
		$(CARGO) test -p redis-opt-tests && \
	REDIS_SERVER=$$dir/bin/valkey-server REDIS_CLI=$$dir/bin/valkey-cli \
		$(CARGO) test -p redis-opt-tests

## The end-to-end tests against a server under valgrind's memcheck (built from Debian's
## source with the C library's malloc): fails if an invalid access or a leak has the module
## in its stack. SERVER=valkey (8.1), redis8 (8.6) or valkey9 (9.1) for the others. Slow (half
## an hour to an hour), so not part of `test`.
memcheck: deps
	@scripts/memcheck.sh $(or $(SERVER),redis)

## Criterion benches (see docs/benchmarks.md for the peer comparisons).
bench: deps
	$(CARGO) bench -p redis-opt-benches

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
