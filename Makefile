# Signet: the two front-door commands.
#   make demo   the end-to-end demo (real signetd, SoftHSM2, OIDC issuers, cosign)
#   make test   installs what the tests need, then runs every test
SHELL := /bin/bash
export GOTOOLCHAIN := local
export GOFLAGS := -mod=mod
GOBIN_DIR := $(shell go env GOPATH)/bin
export PATH := $(PATH):$(GOBIN_DIR)

.PHONY: demo test setup build bench vet

setup:
	./scripts/setup.sh

demo: setup
	go run ./cmd/signet-testbench

test: setup
	go vet ./...
	go test -count=1 -timeout 40m ./...

build:
	mkdir -p bin
	go build -o bin/ ./cmd/...

vet:
	go vet ./...

# Hashing benchmarks against sha256sum and openssl on the same data
# (the 1 GiB case runs only here, never in `make test`).
bench:
	go test -run '^$$' -bench 'Hash' -benchtime 3x -timeout 30m ./core/
