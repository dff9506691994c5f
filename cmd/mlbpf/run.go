package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/model"
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", "run [flags]", stderr)
	var (
		pinRoot  = fs.String("pin-root", "/sys/fs/bpf/mlbpf", "root of the pinned maps")
		name     = fs.String("model", "demo", "model name (pins under <pin-root>/synthetic/<model>)")
		interval = fs.Duration("interval", time.Second, "main loop period: lease renewal, learning, mode control")
		lease    = fs.Duration("lease", 0, "how long the kernel trusts the model without renewal (default 3×interval)")
		mode     = fs.String("mode", "learning", "initial mode: emergency, learning, collaboration, recommendation")
		maxMode  = fs.String("max-mode", "recommendation", "highest mode the controller may promote to")
		collab   = fs.Uint("collab-permille", 500, "COLLABORATION: share of decisions that apply the model (‰)")
		holdout  = fs.Uint("holdout-permille", 50, "RECOMMENDATION: share kept on the default (‰)")
		duration = fs.Duration("duration", 0, "stop after this long (0: until SIGINT/SIGTERM)")
		destroy  = fs.Bool("destroy", false, "remove the pins on exit instead of leaving them for the next run")
		output   = fs.String("o", "text", "output: text (progress lines) or json (one summary object)")
		quiet    = fs.Bool("q", false, "no progress lines")
	)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "mlbpf run: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	if *output != "text" && *output != "json" {
		return fmt.Errorf("-o %q: want text or json", *output)
	}
	initial, err := model.ParseMode(*mode)
	if err != nil {
		return fmt.Errorf("--mode: %w", err)
	}
	capMode, err := model.ParseMode(*maxMode)
	if err != nil {
		return fmt.Errorf("--max-mode: %w", err)
	}
	opts := model.Options{
		SleepTimeout:    *interval,
		Lease:           *lease,
		InitialMode:     initial,
		MaxMode:         capMode,
		CollabPermille:  uint32(min(*collab, 1<<31)),
		HoldoutPermille: uint32(min(*holdout, 1<<31)),
	}
	if err := opts.Validate(); err != nil {
		return err
	}

	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	progress := func(st daemon.Status) {
		if *quiet || *output == "json" {
			return
		}
		fmt.Fprintln(stdout, progressLine(st))
	}
	st, err := daemon.RunSynthetic(ctx, daemon.SyntheticConfig{
		PinRoot:  *pinRoot,
		Model:    *name,
		Options:  opts,
		Duration: *duration,
		Destroy:  *destroy,
	}, log, progress)
	if err != nil {
		return err
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	fmt.Fprintf(stdout, "summary: %s\n", progressLine(st))
	for _, c := range st.Changes {
		fmt.Fprintf(stdout, "  at %s: %s -> %s: %s\n", c.At.Round(time.Millisecond), c.From, c.To, c.Reason)
	}
	return nil
}

func progressLine(st daemon.Status) string {
	names := make([]string, 0, len(st.Arms))
	for k := range st.Arms {
		names = append(names, k)
	}
	sort.Strings(names)
	var arms []string
	for _, k := range names {
		if st.Arms[k] > 0 {
			arms = append(arms, fmt.Sprintf("%s=%d", k, st.Arms[k]))
		}
	}
	return fmt.Sprintf("%s/%s t=%s state=%s mode=%s records=%d lost=%d corrupted=%d keys=%d arms[%s]",
		st.Subsystem, st.Model, st.Uptime.Round(time.Second), st.State, st.Mode,
		st.Records, st.Lost, st.Corrupted, st.Keys, strings.Join(arms, " "))
}
