# nixmox — see README.md. `make test` is what CI runs.
GO        ?= go
FUZZTIME  ?= 30s
BENCHTIME ?= 3x

# Commands the tests need, and the Debian packages that provide them.
TEST_DEPS := nix-instantiate=nix-bin

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

## demo: validate and plan the example homelab.
demo: deps
	$(GO) run ./cmd/nixmox-cli validate -f examples/homelab.nix
	$(GO) run ./cmd/nixmox-cli plan -f examples/homelab.nix

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
