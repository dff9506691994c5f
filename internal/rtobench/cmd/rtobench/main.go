// Command rtobench runs the tcp/rto benchmark on the two-path testbed
// (make bench-tcp-rto):
//
//	sudo go run ./internal/rtobench/cmd/rtobench
//	sudo go run ./internal/rtobench/cmd/rtobench -timestamps
//	sudo go run ./internal/rtobench/cmd/rtobench -survey -settings 'default;syn=20ms,rto_min=8ms;iw=40' -flows 100
//
// It prints one line per setting and path, one line per path and one line
// for the program's cost; with -survey, one line per setting and path.
// The client runs without TCP timestamps unless -timestamps: see
// testbed.PathsConfig.NoTimestamps.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/mlbpf/mlbpf/internal/rtobench"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/tcp/rto"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "rtobench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rtobench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	survey := fs.Bool("survey", false, "measure each setting fixed on both paths (the knob survey) and stop")
	settings := fs.String("settings", "", "settings measured, ';'-separated (default the grid), e.g. 'default;syn=20ms,rto_min=8ms'")
	flows := fs.Int("flows", 0, "bloat-path flows per round of each fixed arm (default 80; mlbpf and the default beside it get three times as many)")
	repeats := fs.Int("repeats", 0, "rounds (default 2)")
	ts := fs.Bool("timestamps", false, "keep TCP timestamps on the client: Linux then undoes spurious SYN timeouts (tcp_try_undo_spurious_syn) and the bloat path no longer punishes a short SYN timeout")
	verbose := fs.Bool("v", false, "log progress to stderr")
	dump := fs.String("dump", "", "write every measured flow to this CSV file")
	lossyFlows := fs.Int("lossy-flows", 0, "lossy-path flows per round of each arm (default 36000)")
	jump := fs.Bool("bg-jump", false, "bloat path: the background flow's window cap jumps up at the start of each period and falls over it, so the round trip jumps (default: it climbs and falls back)")
	lossyWorkers := fs.Int("lossy-workers", 0, "lossy-path flows in flight (default 64)")
	window := fs.Int("bg-window", 0, "bloat path: the background flow's window in bytes (default 600000, on a 10 s saw-tooth from a third of it; -1: uncapped, it fills the 1 MB queue and drops there)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := loader.CheckPrivileges(); err != nil {
		return err
	}
	cfg := rtobench.Config{Flows: *flows, LossyFlows: *lossyFlows, Repeats: *repeats, NoTimestamps: !*ts, BackgroundWindow: *window, BackgroundJump: *jump, LossyWorkers: *lossyWorkers}
	if *dump != "" {
		f, err := os.Create(*dump)
		if err != nil {
			return fmt.Errorf("-dump: %w", err)
		}
		defer f.Close()
		cfg.Dump = f
	}
	if *settings != "" {
		for s := range strings.SplitSeq(*settings, ";") {
			v, err := rto.ParseSetting(s)
			if err != nil {
				return fmt.Errorf("-settings: %w", err)
			}
			cfg.Settings = append(cfg.Settings, v)
		}
	}
	if *verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	}
	start := time.Now()
	var err error
	if *survey {
		err = rtobench.Survey(ctx, stdout, cfg)
	} else {
		err = rtobench.Run(ctx, stdout, cfg)
	}
	fmt.Fprintf(stderr, "rtobench: %v\n", time.Since(start).Round(time.Second))
	return err
}
