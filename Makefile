# mlbpf. Targets that load BPF need root; `setup` installs what is missing.
GO      ?= go
KERNEL  ?= 6.1
PKGS    ?= ./...
VMTEST_FLAGS ?=
export PATH := $(PATH):/usr/local/go/bin

.PHONY: all setup generate check-generated build test bench bench-ringbuf bench-tcp bench-readahead vmtest fuzz lint run

all: build

## setup: install missing packages (clang-19, bpftool, ...) and mount bpffs, tracefs, cgroup2
setup:
	./scripts/setup.sh

## generate: rebuild the BPF objects and their Go bindings (bpf2go, clang-19)
generate:
	$(GO) generate ./...

## check-generated: fail if the committed generated files differ from a fresh `make generate`
check-generated: generate
	git diff --exit-code -- '*_bpfel.go' '*_bpfel.o' || \
		(echo "generated files are stale: run 'make generate' and commit them" >&2; exit 1)

build:
	$(GO) build ./...

## test: the whole suite; as root every BPF test runs
test: setup
	$(GO) test -count=1 -timeout 30m ./...

## run: the daemon on the embedded default configuration, until Ctrl-C
run: setup
	CGO_ENABLED=0 $(GO) run ./cmd/mlbpf run

## bench: every benchmark
bench: bench-ringbuf bench-tcp bench-readahead

## bench-ringbuf: our ring buffer consumer against libbpf's and cilium/ebpf's, same producer, same run
bench-ringbuf: setup
	$(GO) run ./cmd/ringbench

## bench-tcp: iperf3 over a veth testbed at 0/2/10 % loss: default, best fixed algorithm, mlbpf after learning
bench-tcp: setup
	$(GO) run ./internal/tcpbench/cmd/tcpbench

## bench-readahead: a throttled loop device: every fixed readahead of the grid, then mlbpf after learning, per workload; overhead
bench-readahead: setup
	$(GO) run ./internal/rabench/cmd/rabench

## vmtest: the privileged suite inside a VM on another kernel (KERNEL=6.1|6.12|path/to/bzImage)
vmtest: setup
	$(GO) run ./vmtest -kernel $(KERNEL) -pkgs $(PKGS) $(VMTEST_FLAGS)

## fuzz: every fuzz target for FUZZTIME each (default 10s)
fuzz:
	./scripts/fuzz.sh

lint:
	@test -z "$$(gofmt -l .)" || (gofmt -l . ; echo "gofmt: files above need formatting" >&2; exit 1)
	$(GO) vet ./...
