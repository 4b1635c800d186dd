# kubectl fluxinstance: build, test and demo. `make help` lists the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

GO ?= go
BIN := bin
# The Flux distribution data (never committed): the shared copy beside the checkout by default.
FLUX_DISTRIBUTION_DIR ?= $(if $(wildcard ../shared/flux-distribution/flux),$(abspath ../shared/flux-distribution),)
export FLUX_DISTRIBUTION_DIR

VERSION ?= $(shell git describe --tags --match 'v*' --dirty 2>/dev/null || echo v0.0.0-dev)
GIT_COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# Commit time, not wall time, so that a rebuild of the same commit is byte-identical.
BUILD_DATE ?= $(shell git log -1 --format=%cI 2>/dev/null || echo 1970-01-01T00:00:00Z)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.gitCommit=$(GIT_COMMIT) -X main.buildDate=$(BUILD_DATE)

# The test binaries (kube-apiserver, etcd, kubectl) are cached by test/binaries/build.sh.
TESTENV := $(BIN)/testenv
GO_TEST_FLAGS ?= -count=1 -timeout=40m
TEST_LOG := tmp/test.log

EMBED_DIR := render/distribution/embedded/data
EMBED_FILE := $(EMBED_DIR)/distribution.tar.gz

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-10s %s\n", $$1, $$2}'

.PHONY: build
build: embed ## Build bin/kubectl-fluxinstance
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/kubectl-fluxinstance ./cmd/kubectl-fluxinstance

# The default distribution compiled into the binary, generated from FLUX_DISTRIBUTION_DIR (gitignored).
# Without the data the binary still builds; `build` then asks for --distribution.
.PHONY: embed
embed:
ifneq ($(FLUX_DISTRIBUTION_DIR),)
	$(GO) run ./render/distribution/embedded/gen -dir "$(FLUX_DISTRIBUTION_DIR)" -o $(EMBED_FILE)
else
	@echo "FLUX_DISTRIBUTION_DIR is not set and ../shared/flux-distribution is absent: building without an embedded distribution" >&2
endif

.PHONY: testenv
testenv: ## Build (or reuse) kube-apiserver, etcd and kubectl for the tests
	test/binaries/build.sh >/dev/null

.PHONY: flux-testenv
flux-testenv: ## Build (or reuse) source-controller, kustomize-controller, the bootstrap generator and the flux CLI
	test/binaries/flux-controllers/build.sh >/dev/null

.PHONY: flux-operator
flux-operator: ## Build (or reuse) the Flux Operator v0.59.0 (AGPL: built and run only) for the operator tests
	test/binaries/flux-operator/build.sh >/dev/null

.PHONY: flux-operator-cli
flux-operator-cli: ## Build (or reuse) the Flux Operator CLI v0.59.0, the parity test's reference renderer
	test/binaries/flux-operator-cli/build.sh >/dev/null

.PHONY: krew-tools
krew-tools: ## Build (or reuse) krew and validate-krew-manifest for the Krew packaging test
	test/binaries/krew/build.sh >/dev/null

.PHONY: helm-tools
helm-tools: ## Build (or reuse) the Helm CLI v3.22.0 for the tests that install the Flux Helm chart
	test/binaries/helm/build.sh >/dev/null

# Every real program the tests run, each built once (cached by stamp under ~/.cache, see the scripts) and
# found there by the tests, which otherwise build a missing one inside go test's timeout. Independent builds
# run concurrently: on 2 cores one build's module downloads and single-threaded links overlap another's
# compiling. The Flux Operator CLI comes right after the operator, whose compiled packages it reuses.
HARNESS_JOBS ?= 4
.PHONY: harness
harness: ## Build (or reuse) all of the above, several at once
	$(MAKE) --no-print-directory -j$(HARNESS_JOBS) testenv flux-testenv flux-operators krew-tools helm-tools

.PHONY: flux-operators
flux-operators: flux-operator
	$(MAKE) --no-print-directory flux-operator-cli

.PHONY: fmt-check
fmt-check:
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change: $$out" >&2; exit 1; fi

.PHONY: vet
vet: embed
	$(GO) vet ./...

# go test -v goes to $(TEST_LOG); the console gets every package result, failures and skips, and a
# closing count. test/run-tests.sh exits non-zero on failure (and, with CI=true, on any skip).
.PHONY: test
# The fuzz targets' seed corpora run as part of the tests; fuzzing itself (make fuzz) is not in here:
# it compiles the renderer's dependencies again with coverage instrumentation, about 4 of a cold run's
# minutes for 15 s of fuzzing.
test: harness embed fmt-check vet ## Vet, gofmt check, unit and real-cluster tests
	KUBEBUILDER_ASSETS=$$(readlink -f $(TESTENV)) test/run-tests.sh $(TEST_LOG) $(GO_TEST_FLAGS) ./...

FUZZ_TIME ?= 15s
# Go minimizes each new interesting input for up to 60 s by default, which left a 15 s run fuzzing for
# only its first few seconds; 2 s keeps the budget for new inputs.
.PHONY: fuzz
fuzz: embed ## Fuzz decode -> validate -> render briefly (FUZZ_TIME)
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeValidateBuild$$' -fuzztime $(FUZZ_TIME) -fuzzminimizetime 2s ./render/

.PHONY: demo
demo: testenv build ## Start a local API server and run the plugin through the real kubectl
	$(GO) run ./test/demo -plugin-dir $(BIN)

.PHONY: bench
bench: testenv flux-testenv build ## Benchmarks with ratios against the peers named in the issues (BENCH_STORAGE_OBJECTS=1000 for a quick storage migration one)
	KUBEBUILDER_ASSETS=$$(readlink -f $(TESTENV)) $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 1h ./test/bench/...

.PHONY: clean
clean:
	rm -rf $(BIN) dist tmp $(EMBED_FILE)

-include krew/release.mk
