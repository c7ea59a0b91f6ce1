# nixmox — see README.md. `make test` is what CI runs.
GO        ?= go
FUZZTIME  ?= 30s
BENCHTIME ?= 3x

# Commands the tests need, and the Debian packages that provide them;
# scripts/install-deps installs the missing ones and then checks what they
# must be able to do (Nix builds as root, initdb makes a cluster, the daemons
# and Chromium run), fixing what it can (nix-setup-systemd for Nix's build
# users). terraform is not a Debian package: it must already be on PATH (it
# is on the project's machines); without it install-deps warns, and fails
# under CI=true.
TEST_DEPS := nix-instantiate=nix-bin caddy=caddy unbound=unbound unbound-checkconf=unbound \
	dig=dnsutils shellcheck=shellcheck timeout=coreutils \
	/usr/lib/postgresql/15/bin/initdb=postgresql-15 psql=postgresql-client-15 \
	nginx=nginx-light prometheus=prometheus promtool=prometheus \
	ip=iproute2 curl=curl setpriv=util-linux setsid=util-linux chromium=chromium systemd-analyze=systemd \
	xz=xz-utils

# Code generation tools, pinned; installed into $(GOBIN) by `make deps`.
BUF_VERSION                := v1.50.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GOBIN ?= $(shell $(GO) env GOPATH)/bin
export PATH := $(GOBIN):$(PATH)

.PHONY: all build bin test deps tools vet unit demo demo-down bench fuzz docs proto proto-breaking clean vendor-hash

all: build

build:
	$(GO) build ./...

## test: install what the tests need, then vet, check the API, and run every test.
test: deps vet proto-breaking unit

deps: tools
	@scripts/install-deps $(TEST_DEPS)

## tools: buf and the protoc plugins at their pinned versions (buf takes a
## few minutes to build the first time).
tools:
	@command -v buf >/dev/null || GOFLAGS= $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	@command -v protoc-gen-go >/dev/null || GOFLAGS= $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@command -v protoc-gen-go-grpc >/dev/null || GOFLAGS= $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

vet:
	$(GO) vet ./...

unit:
	$(GO) test -count=1 ./...

## bin: the three programs, into bin/: static (no cgo, Go's own DNS
## resolver), so they run on any Linux and start a few milliseconds sooner.
bin:
	CGO_ENABLED=0 $(GO) build -o bin/ ./cmd/nixmox-server ./cmd/nixmox-agent ./cmd/nixmox-cli

## demo: run nixmox-server with the local provider and roll out
## examples/local/homelab.nix on this machine (as root); again to apply changes.
demo: deps bin
	@scripts/demo up

## demo-down: stop the demo's server and remove everything it made.
demo-down: bin
	@scripts/demo down

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

## vendor-hash: print package.nix's vendorHash for this go.sum (go mod
## vendor, hashed as Nix hashes buildGoModule's vendor directory).
vendor-hash:
	@d=$$(mktemp -d) && $(GO) mod vendor -o $$d/vendor && nix --extra-experimental-features nix-command hash path --type sha256 --sri $$d/vendor; rm -rf $$d

## proto: lint proto/ and regenerate pkg/api (committed).
proto: tools
	buf lint
	buf generate

## proto-breaking: buf breaking against the newest release tag (v*), if any.
proto-breaking: tools
	@last=$$(git describe --tags --abbrev=0 --match 'v*' 2>/dev/null); \
	if [ -n "$$last" ]; then buf breaking --against ".git#tag=$$last"; \
	else echo "proto-breaking: no release tag yet; nothing to compare against"; fi

clean:
	$(GO) clean -testcache
