// Command ringbench measures package ringbuf against cilium/ebpf's ring
// buffer reader and libbpf's ring_buffer__consume, on the same ring filled
// by the same BPF producer, and prints summary lines per record size, one
// per way of reading (ringbench.Reads):
//
//	ringbuf size=64 read=checksum ...   every consumer reads every byte of each record (the goals)
//	ringbuf size=64 read=readinto ...   our ReadInto against cilium's, a copy each
//	ringbuf size=64 read=zerocopy ...   our NextBatch, in place, against libbpf's callback and cilium's ReadInto
//
// then one line for the period loop (package pipeline) on tcp/cc-sized
// records, against our raw and checksum drains of identical rings:
//
//	pipeline size=128 records/s=... vs_drain=... [...] vs_checksum=... [...] allocs/record=... goals=...
//
// Each ratio is the median over the repeats of the ratio within a repeat,
// followed by a distribution-free interval of at least 95 % confidence for
// it, from order statistics, named by its exact level (_ci97=low-high
// with 31 repeats).
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

Prints, per record size, one line per way of reading: read=checksum (every
consumer reads every byte of each record; the goals, >= 1.0x libbpf,
>= 1.5x cilium, 0 allocations per record, are judged on it), read=readinto
(our ReadInto against cilium's ReadInto, a copy each) and read=zerocopy (our
NextBatch against libbpf's callback and cilium's ReadInto, 8 bytes read per
record). Ratios are medians over the repeats, each with an interval of at
least 95 % confidence named by its level (ours/libbpf_ci97=low-high with 31
repeats). Then a pipeline line: the period loop on 128-byte records against
our raw drain (goal >= 0.5x, 0 allocations per record) and our checksum
drain.

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
		for _, l := range r.Lines {
			fmt.Fprintln(stdout, summary(r.Size, l))
		}
	}
	fmt.Fprintln(stdout, pipe)
	return nil
}

// summary formats one line: "ringbuf size=64 read=checksum ours=…
// libbpf=… cilium=… ours/libbpf=1.02 ours/libbpf_ci95=0.99-1.05 …
// allocs/record=0.0000 goals=met".
func summary(size int, l ringbench.Line) string {
	ratio := func(name string, r ringbench.Ratio) string {
		return fmt.Sprintf("%s=%.2f %s_ci%.0f=%.2f-%.2f", name, r.Median, name, 100*r.Confidence, r.Lower, r.Upper)
	}
	s := fmt.Sprintf("ringbuf size=%d read=%s ours=%.0f libbpf=%.0f cilium=%.0f %s %s allocs/record=%.4f",
		size, l.Read, l.OursRate, l.LibbpfRate, l.CiliumRate,
		ratio("ours/libbpf", l.VsLibbpf), ratio("ours/cilium", l.VsCilium), l.AllocsPerRecord)
	if l.Goals != "" {
		s += " goals=" + l.Goals
	}
	return s
}
