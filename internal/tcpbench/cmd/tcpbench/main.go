// Command tcpbench runs the tcp/cc benchmark on a testbed (make bench-tcp):
//
//	sudo go run ./internal/tcpbench/cmd/tcpbench
//	sudo go run ./internal/tcpbench/cmd/tcpbench -losses 0,10 -runs 3 -v
//
// It prints one line per loss rate and one line for the program's cost.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/mlbpf/mlbpf/internal/tcpbench"
	"github.com/mlbpf/mlbpf/loader"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "tcpbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tcpbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	losses := fs.String("losses", "0,2,10", "loss rates in percent, comma-separated")
	runs := fs.Int("runs", 0, "iperf3 runs per arm and loss rate (default 11)")
	dur := fs.Duration("run", 0, "duration of one iperf3 run, whole seconds (default 1s)")
	verbose := fs.Bool("v", false, "log progress to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := loader.CheckPrivileges(); err != nil {
		return err
	}
	cfg := tcpbench.Config{Runs: *runs, RunDuration: *dur}
	for f := range strings.SplitSeq(*losses, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v < 0 || v > 100 {
			return fmt.Errorf("-losses: %q is not a percentage", f)
		}
		cfg.Losses = append(cfg.Losses, v)
	}
	if *verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	}
	start := time.Now()
	_, _, err := tcpbench.Run(ctx, stdout, cfg)
	fmt.Fprintf(stderr, "tcpbench: %v\n", time.Since(start).Round(time.Second))
	return err
}
