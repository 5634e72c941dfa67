# enforcer: build, generate, test, lab demo, benchmarks.
GO      ?= go
BIN     := bin/enforcer
PKGS    := ./...

.PHONY: build generate check-generate test fuzz lab bench pgo vet staticcheck clean

build:
	$(GO) build -o $(BIN) ./cmd/enforcer

# Rebuild the BPF objects with Debian's clang-14 (apt-get install clang-14 llvm-14 libbpf-dev).
# The generated .o and .go files are committed, so `go build` needs no clang.
generate:
	cd internal/redirect && $(GO) generate ./...

check-generate: generate
	git diff --exit-code -- internal/redirect/ || (echo "generated BPF files differ from the committed ones: run make generate and commit" && exit 1)

# Tests need root: real BPF programs in real cgroups, network namespaces, PostgreSQL.
test:
	scripts/test.sh

# Every fuzz target for FUZZTIME each (default 30s).
fuzz:
	scripts/fuzz.sh

lab: build
	scripts/lab.sh

bench: build
	scripts/bench.sh

# Regenerate the committed profile (cmd/enforcer/default.pgo) that go build optimises the daemon
# with; root, about a minute.
pgo:
	scripts/pgo.sh

vet:
	gofmt -l $$(git ls-files '*.go') | (! grep .)
	$(GO) vet $(PKGS)

staticcheck:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)

clean:
	rm -rf bin
