// Command rabench runs the storage/readahead benchmark (make
// bench-readahead): every fixed readahead of the grid and mlbpf on the
// same workloads of the storage testbed, then the overhead. Needs root.
//
//	go run ./internal/rabench/cmd/rabench
//	go run ./internal/rabench/cmd/rabench -workloads seq,mmap -repeats 5 -v
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mlbpf/mlbpf/internal/rabench"
	"github.com/mlbpf/mlbpf/storage/testbed"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "rabench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rabench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: rabench [flags]\n\nExample:\n  sudo go run ./internal/rabench/cmd/rabench -workloads seq,phased -repeats 3\n\nFlags:")
		fs.PrintDefaults()
	}
	var cfg rabench.Config
	workloads := fs.String("workloads", "seq,random,mmap,phased", "workloads to run, comma-separated")
	fs.IntVar(&cfg.Repeats, "repeats", 3, "measurements per fixed setting")
	fs.IntVar(&cfg.LearnedRepeats, "learned-repeats", 0, "measurements of mlbpf once it has learned, each whole cycles of its time blocks (in RECOMMENDATION 20 s, one block on the default); 0: 4")
	fs.DurationVar(&cfg.Duration, "duration", 3*time.Second, "one measurement of seq, random or mmap")
	fs.DurationVar(&cfg.Phase, "phase", 4*time.Second, "the most one phase of phased lasts (a phase is a fixed amount of work)")
	fs.DurationVar(&cfg.Disk.Request, "disk-request", rabench.DefaultDisk.Request, "the testbed disk's cost of every read request")
	fs.DurationVar(&cfg.Disk.Seek, "disk-seek", rabench.DefaultDisk.Seek, "the testbed disk's extra cost of a read that does not follow the previous one")
	fs.Uint64Var(&cfg.Disk.BPS, "disk-bps", rabench.DefaultDisk.BPS, "the testbed disk's transfer rate, bytes per second")
	fs.DurationVar(&cfg.LearnMax, "learn", 90*time.Second, "most time mlbpf learns before it is measured")
	overhead := fs.Bool("overhead", true, "measure the collectors' and the daemon's cost too")
	verbose := fs.Bool("v", false, "log the model and every fixed setting's figure")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, s := range strings.Split(*workloads, ",") {
		w, err := testbed.ParseWorkload(strings.TrimSpace(s))
		if err != nil {
			return err
		}
		cfg.Workloads = append(cfg.Workloads, w)
	}
	cfg.SkipOverhead = !*overhead
	if *verbose {
		cfg.Logf = func(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) }
	}
	_, err := rabench.Run(ctx, stdout, cfg)
	return err
}
