# mlbpf. Targets that load BPF need root; `setup` installs what is missing.
GO      ?= go
KERNEL  ?= 6.1
PKGS    ?= ./...
VMTEST_FLAGS ?=
TCPBENCH_FLAGS ?=
export PATH := $(PATH):/usr/local/go/bin

.PHONY: all setup setup-run generate check-generated build deb image test bench bench-ringbuf bench-tcp bench-tcp-rto bench-readahead bench-fleet vmtest fuzz lint run

all: build

## setup: install what building, testing and benchmarking need (clang-19, bpftool, iperf3, qemu, virtme-ng, ...); mount bpffs, tracefs, cgroup2
setup:
	./scripts/setup.sh test

## setup-run: only what running the daemon needs: mount bpffs, tracefs, cgroup2 where absent
setup-run:
	./scripts/setup.sh run

## generate: rebuild the BPF objects and their Go bindings (bpf2go, clang-19)
generate:
	$(GO) generate ./...

## check-generated: fail if the committed generated files differ from a fresh `make generate`
check-generated: generate
	git diff --exit-code -- '*_bpfel.go' '*_bpfel.o' || \
		(echo "generated files are stale: run 'make generate' and commit them" >&2; exit 1)

build:
	$(GO) build ./...

## deb: the Debian package, dist/mlbpf_<version>_<arch>.deb: static binary, /etc/mlbpf/mlbpf.yaml, hardened systemd unit, completion, mlbpf(8)
deb:
	./scripts/deb.sh dist

## image: the container image localhost/mlbpf:<version> and :latest (podman; FROM scratch: the static binary and its default configuration); deploy/kubernetes/ runs it
image:
	./scripts/image.sh

## test: the whole suite; as root every BPF test runs
test: setup
	$(GO) test -count=1 -timeout 30m ./...

## run: the daemon on the embedded default configuration, until Ctrl-C
run: setup-run
	CGO_ENABLED=0 $(GO) run ./cmd/mlbpf run

## bench: every benchmark
bench: bench-ringbuf bench-tcp bench-tcp-rto bench-readahead

## bench-ringbuf: our ring buffer consumer against libbpf's and cilium/ebpf's, same producer, same run
bench-ringbuf: setup
	$(GO) run ./cmd/ringbench

## bench-tcp: iperf3 over a veth testbed at 0/2/10 % loss, through the daemon: each algorithm with mlbpf detached and attached, mlbpf after learning, 95 % intervals (~13 min; TCPBENCH_FLAGS=-h lists the knobs, TCPBENCH_FLAGS='-report tcpbench.html' writes the daemon's report)
bench-tcp: setup
	$(GO) run ./internal/tcpbench/cmd/tcpbench $(TCPBENCH_FLAGS)

## bench-tcp-rto: 64 KB flows over a lossy and a bloated path: default timers, best fixed setting, mlbpf after learning (p99 flow completion time; ~9 min)
bench-tcp-rto: setup
	$(GO) run ./internal/rtobench/cmd/rtobench

## bench-fleet: N tcp/cc daemons (own pins, state, socket, cgroup, lossy testbed) share through a real nats-server; connections a joining host needs against a lone one (FLEETBENCH_FLAGS=-h lists the knobs)
bench-fleet: setup
	$(GO) run ./internal/fleetbench/cmd/fleetbench $(FLEETBENCH_FLAGS)

## bench-readahead: a throttled loop device: every fixed readahead of the grid, then mlbpf after learning, per workload; overhead
bench-readahead: setup
	$(GO) run ./internal/rabench/cmd/rabench

## vmtest: the privileged suite in a virtme-ng (vng) VM on another kernel (KERNEL=6.1|6.12|path/to/bzImage|….deb)
##   as root it runs setup first; a user in the kvm group needs no root: vng runs the tests as the guest's root
vmtest: $(if $(filter 0,$(shell id -u)),setup)
	$(GO) run ./vmtest -kernel $(KERNEL) -pkgs $(PKGS) $(VMTEST_FLAGS)

## fuzz: every fuzz target for FUZZTIME each (default 10s)
fuzz:
	./scripts/fuzz.sh

lint:
	@test -z "$$(gofmt -l .)" || (gofmt -l . ; echo "gofmt: files above need formatting" >&2; exit 1)
	$(GO) vet ./...
