// Command tcpbench runs the tcp/cc benchmark on a testbed (make bench-tcp)
// through the daemon a user runs:
//
//	sudo go run ./internal/tcpbench/cmd/tcpbench
//	sudo go run ./internal/tcpbench/cmd/tcpbench -losses 10 -budget 1m -v
//	sudo go run ./internal/tcpbench/cmd/tcpbench -report tcpbench.html
//
// It prints two lines per loss rate (goodput detached, attached and with
// mlbpf choosing, with 95 % intervals; what being attached costs) and
// one line for the program's cost. Run it under the heavy lock on a
// shared machine (flock /tmp/mlbpf-heavy.lock …).
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

	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/internal/tcpbench"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/subsystems"
)

func init() { daemon.Register(subsystems.All()...) }

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
	algs := fs.String("algs", "cubic,bbr,reno", "fixed algorithms measured, comma-separated (cubic, the default, among them)")
	minRounds := fs.Int("min-rounds", 0, "rounds at least, per loss rate (default 10)")
	maxRounds := fs.Int("max-rounds", 0, "rounds at most, per loss rate (default 40)")
	budget := fs.Duration("budget", 0, "measuring time per loss rate after which rounds stop (default 3m15s)")
	target := fs.Float64("target", 0, "vs_best's interval half width at which rounds stop (default 0.05)")
	dur := fs.Duration("run", 0, "duration of one iperf3 run, whole seconds (default 1s)")
	seed := fs.Uint64("seed", 0, "seed of the arms' order (default 1)")
	verbose := fs.Bool("v", false, "log progress (and the daemon's log) to stderr")
	reportFile := fs.String("report", "", "write the report of the daemon's history at each loss rate to this HTML file (as 'mlbpf report')")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := loader.CheckPrivileges(); err != nil {
		return err
	}
	cfg := tcpbench.Config{RunDuration: *dur, MinRounds: *minRounds, MaxRounds: *maxRounds, Budget: *budget,
		Target: *target, Seed: *seed, Report: *reportFile}
	for f := range strings.SplitSeq(*losses, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v < 0 || v > 100 {
			return fmt.Errorf("-losses: %q is not a percentage", f)
		}
		cfg.Losses = append(cfg.Losses, v)
	}
	for a := range strings.SplitSeq(*algs, ",") {
		cfg.Algorithms = append(cfg.Algorithms, strings.TrimSpace(a))
	}
	if *verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	}
	start := time.Now()
	_, _, err := tcpbench.Run(ctx, stdout, cfg)
	fmt.Fprintf(stderr, "tcpbench: %v\n", time.Since(start).Round(time.Second))
	return err
}
