# Release archives and the Krew plugin manifest (issue 6). Included by the top-level Makefile,
# which defines VERSION, LDFLAGS, BIN and the embed target.
#
#   make dist   cross-builds the plugin for every platform of DIST_PLATFORMS into
#               $(DIST)/kubectl-fluxinstance_OS_ARCH.tar.gz (.zip for Windows), each holding the binary,
#               LICENSE, README.md and the completion helper, plus $(DIST)/checksums.txt (sha256sum format).
#   make krew   renders krew/fluxinstance.yaml into $(DIST)/krew/fluxinstance.yaml with the URIs
#               of the release assets and the sha256 of the archives just built.
#
# The archives are reproducible: -trimpath and no VCS stamping in the binary, and archives written by
# krew/render with sorted entries, owner 0:0, every mtime set to the commit time, and a gzip header
# without name or time. (The binary is only as reproducible as LDFLAGS: its build date must come
# from the commit, not the clock.)

DIST ?= dist
DIST_PLATFORMS ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64
# For the packaging test (test/krew) only: the platforms whose binary is compiled. Each other platform
# of DIST_PLATFORMS gets DIST_STANDIN_DIR/OS-ARCH/kubectl-fluxinstance[.exe] packed in place of its
# binary by the same packaging code, so that its archive, checksum and manifest entry still exist
# without a cross build (several minutes each from a cold Go cache). Without a stand-in, make dist
# fails. A release leaves both unset: every platform is compiled.
DIST_BUILD_PLATFORMS ?= $(DIST_PLATFORMS)
DIST_STANDIN_DIR ?=
# Where the release's assets are downloaded from; override for a fork or a mirror.
KREW_URL_BASE ?= https://github.com/fluxinstance/kubectl-fluxinstance/releases/download/$(VERSION)
# The commit time, or 0 (1970; zip clamps it to 1980) in a repository without commits.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
DIST_FILES ?= LICENSE README.md
KREW_RENDER := $(BIN)/krew-render

.PHONY: dist krew

$(KREW_RENDER): $(wildcard krew/*.go krew/render/*.go) go.mod
	@mkdir -p $(dir $@)
	go build -o $@ ./krew/render

dist: embed $(KREW_RENDER) ## Cross-build the release archives and checksums.txt into dist/
	@for f in $(DIST_FILES) krew/kubectl_complete-fluxinstance krew/fluxinstance.yaml; do \
	  [ -f "$$f" ] || { echo "make dist: $$f is missing" >&2; exit 1; }; done
	@for p in $(DIST_BUILD_PLATFORMS); do case " $(DIST_PLATFORMS) " in *" $$p "*) ;; \
	  *) echo "make dist: DIST_BUILD_PLATFORMS names $$p, which is not in DIST_PLATFORMS" >&2; exit 1 ;; esac; done
	rm -rf $(DIST)
	mkdir -p $(DIST)/bin
	@set -e; for p in $(DIST_PLATFORMS); do \
	  os=$${p%/*}; arch=$${p#*/}; exe=kubectl-fluxinstance; \
	  [ "$$os" = windows ] && exe=$$exe.exe; \
	  case " $(DIST_BUILD_PLATFORMS) " in \
	  *" $$p "*) \
	    echo "building $$p"; \
	    bin=$(DIST)/bin/$$os-$$arch/$$exe; \
	    CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch go build -trimpath -buildvcs=false -ldflags "$(LDFLAGS)" \
	      -o $$bin ./cmd/kubectl-fluxinstance ;; \
	  *) \
	    bin="$(DIST_STANDIN_DIR)/$$os-$$arch/$$exe"; \
	    if [ -z "$(DIST_STANDIN_DIR)" ] || [ ! -f "$$bin" ]; then \
	      echo "make dist: $$p is not in DIST_BUILD_PLATFORMS and there is no stand-in $$bin" >&2; exit 1; fi; \
	    echo "packing the stand-in $$bin for $$p: NOT a build (DIST_BUILD_PLATFORMS)" ;; \
	  esac; \
	  $(KREW_RENDER) archive -platform $$p -mtime "$(SOURCE_DATE_EPOCH)" -out $(DIST) \
	    -binary $$bin -helper krew/kubectl_complete-fluxinstance $(DIST_FILES); \
	done
	rm -rf $(DIST)/bin
	$(KREW_RENDER) checksums -dir $(DIST)
	@cat $(DIST)/checksums.txt

krew: dist ## Also render the Krew plugin manifest dist/krew/fluxinstance.yaml
	$(KREW_RENDER) manifest -template krew/fluxinstance.yaml -checksums $(DIST)/checksums.txt \
	  -version "$(VERSION)" -url-base "$(KREW_URL_BASE)" -o $(DIST)/krew/fluxinstance.yaml
