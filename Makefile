# nixmox — see README.md. `make test` is what CI runs.
GO        ?= go
FUZZTIME  ?= 30s
BENCHTIME ?= 3x

# Commands the tests need, and the Debian packages that provide them.
# terraform is not a Debian package: it must already be on PATH (it is on the
# project's machines); the tests that need it say so when it is missing.
TEST_DEPS := nix-instantiate=nix-bin caddy=caddy unbound=unbound unbound-checkconf=unbound \
	dig=dnsutils shellcheck=shellcheck timeout=coreutils \
	/usr/lib/postgresql/15/bin/initdb=postgresql-15

.PHONY: all build test deps vet unit demo bench fuzz docs check-docs clean

all: build

build:
	$(GO) build ./...

## test: install what the tests need, then vet and run every test.
test: deps vet unit

deps:
	@scripts/install-deps $(TEST_DEPS)

vet:
	$(GO) vet ./...

unit:
	$(GO) test -count=1 ./...

## demo: validate, plan and generate the example homelab (into generated/).
demo: deps
	$(GO) run ./cmd/nixmox-cli validate -f examples/homelab.nix
	$(GO) run ./cmd/nixmox-cli plan -f examples/homelab.nix
	$(GO) run ./cmd/nixmox-cli generate -f examples/homelab.nix -o generated/homelab

## bench: the benchmarks, with memory figures.
bench: deps
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=$(BENCHTIME) ./...

## fuzz: fuzz the loader and validator for FUZZTIME each.
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzLoadJSON$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=3s ./pkg/plan
	$(GO) test -run='^$$' -fuzz='^FuzzLoadYAML$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=3s ./pkg/plan

## docs: regenerate docs/manifest.md and docs/cli/ from the code.
docs:
	$(GO) run ./cmd/gen-docs -out docs

clean:
	$(GO) clean -testcache
