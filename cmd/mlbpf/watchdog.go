package main

import (
	"context"
	"fmt"
	"io"

	"github.com/mlbpf/mlbpf/storage/readahead"
)

// cmdWatchdog is the storage/readahead watchdog, started by the daemon in
// a process group of its own: it restores the devices' readahead once the
// model's lease runs out or the daemon is gone (a model the kernel cannot
// fall back for by itself).
func cmdWatchdog(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := readahead.ParseWatchdogArgs(args, stderr)
	if err != nil {
		return err
	}
	return readahead.RunWatchdog(ctx, cfg, func(f string, a ...any) { fmt.Fprintf(stderr, "mlbpf watchdog: "+f+"\n", a...) })
}
