// Command ringbench measures package ringbuf against cilium/ebpf's ring
// buffer reader and libbpf's ring_buffer__consume, on the same ring filled
// by the same BPF producer, and prints one summary line per record size.
//
// It needs root (it loads BPF programs), tracefs, a C compiler and
// libbpf-dev (it builds the libbpf consumer at run time). `make
// bench-ringbuf` runs it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf/rlimit"

	"github.com/mlbpf/mlbpf/internal/ringbench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "ringbench:", err)
		}
		os.Exit(1)
	}
}

const usage = `usage: ringbench [flags]

Drains a ring buffer pre-filled by a BPF producer (tracepoint
syscalls:sys_enter_getppid, bpf_loop) with each consumer in turn, then runs
the producer at its top rate against each consumer, and measures the
producer's own cost per event. Needs root, tracefs, cc and libbpf-dev.

Example:

	sudo go run ./cmd/ringbench -sizes 64 -repeats 11

Flags:
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts := ringbench.DefaultOptions()
	fs := flag.NewFlagSet("ringbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	sizes := fs.String("sizes", "8,64,256", "record sizes in bytes, comma-separated")
	fs.IntVar(&opts.Repeats, "repeats", opts.Repeats, "drains of a full ring per consumer and size (the median is reported)")
	ring := fs.Uint("ring", uint(opts.RingBytes), "ring buffer size of the drains, in bytes (a power of two)")
	liveRing := fs.Uint("live-ring", uint(opts.LiveRingBytes), "ring buffer size of the live runs, in bytes (a power of two)")
	costRing := fs.Uint("cost-ring", uint(opts.CostRingBytes), "ring buffer size of the BPF cost measurement, in bytes (a power of two; default: the collectors')")
	fs.DurationVar(&opts.Live, "live", opts.Live, "duration of each live run (0: none)")
	liveBatch := fs.Uint("live-batch", uint(opts.LiveBatch), "records per getppid(2) call in live runs and in the batched BPF cost")
	fs.IntVar(&opts.CostEvents, "cost-events", opts.CostEvents, "producer invocations the BPF cost is measured over (0: none)")
	fs.StringVar(&opts.CC, "cc", opts.CC, "C compiler for the libbpf consumer")
	fs.IntVar(&opts.ConsumerCPU, "consumer-cpu", opts.ConsumerCPU, "CPU the consumers run on (-1: any)")
	fs.IntVar(&opts.ProducerCPU, "producer-cpu", opts.ProducerCPU, "CPU the producer runs on (-1: any)")
	output := fs.String("o", "text", "output: text or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see -help)", fs.Args())
	}
	if *output != "text" && *output != "json" {
		return fmt.Errorf("-o %q: want text or json", *output)
	}
	opts.Sizes = nil
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 8 {
			return fmt.Errorf("-sizes: %q is not a record size of at least 8 bytes", f)
		}
		opts.Sizes = append(opts.Sizes, n)
	}
	opts.RingBytes = uint32(*ring)
	opts.LiveRingBytes = uint32(*liveRing)
	opts.CostRingBytes = uint32(*costRing)
	opts.LiveBatch = uint32(*liveBatch)
	if opts.Repeats < 1 || opts.LiveBatch < 1 {
		return fmt.Errorf("-repeats and -live-batch must be at least 1")
	}

	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root to load BPF programs: run it with sudo")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("raising RLIMIT_MEMLOCK: %w", err)
	}

	log := stderr
	start := time.Now()
	results, err := ringbench.Run(ctx, opts, log)
	if err != nil {
		return err
	}
	pipe, err := ringbench.RunPipeline(ctx, opts, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "ringbench: done in %v\n", time.Since(start).Round(time.Second))

	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	for _, r := range results {
		ours, lib, cil := r.Drain[ringbench.Ours].Median, r.Drain[ringbench.Libbpf].Median, r.Drain[ringbench.Cilium].Median
		fmt.Fprintf(stdout, "ringbuf size=%d ours=%.0f libbpf=%.0f cilium=%.0f ours/libbpf=%.2f ours/cilium=%.2f allocs/record=%.4f\n",
			r.Size, ours, lib, cil, ours/lib, ours/cil, r.AllocsPerRec)
	}
	fmt.Fprintln(stdout, pipe)
	return nil
}
