package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/internal/sdnotify"
	"github.com/mlbpf/mlbpf/loader"
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", "run [--config FILE] [flags]", `
Run the daemon: load and pin every model the configuration enables (or
adopt the pins and learned state of an earlier run), renew their leases,
learn, let the mode controller promote or demote them on evidence, serve
agents on the socket, until SIGINT or SIGTERM; then stop every model, in
order, leaving the kernel on its defaults and the pins for the next run.

Once every model is attached the daemon drops its capabilities, on every
thread, bounding set included: from then on it works with the file
descriptors it holds (a build with cgo cannot, and says so in its log:
build mlbpf with CGO_ENABLED=0). If it dies, each model's applier stays
attached by its pin and the kernel returns to its default when the lease
runs out; the next 'mlbpf run' adopts the pins.

With no --config it runs the embedded default ('mlbpf config default'):
tcp/cc learning, capped at LEARNING by max_mode, so it changes nothing on
the host until a configuration lets it. Only one daemon runs per socket:
a second one refuses to start and names the first.

SIGHUP (systemctl reload) re-reads the configuration, as 'mlbpf reload'
does: see 'mlbpf reload --help'.`, `
  mlbpf run
  mlbpf run --config /etc/mlbpf/mlbpf.yaml
  mlbpf run --config demo.toml --metrics-addr 127.0.0.1:9464 --log-format json
  mlbpf run --config demo.yaml --duration 1m`, stdout, stderr)
	p := addPaths(fs)
	var (
		metricsAddr   = fs.String("metrics-addr", "", "serve Prometheus /metrics on this host:port (loopback unless --metrics-allow-remote)")
		metricsRemote = fs.Bool("metrics-allow-remote", false, "allow a --metrics-addr that is not a loopback address")
		logFormat     = fs.String("log-format", "", "log format: text or json (default: the configuration's, text)")
		logLevel      = fs.String("log-level", "", "log level: debug, info, warn, error (default: the configuration's, info)")
		duration      = fs.Duration("duration", 0, "stop after this long (0: until SIGINT/SIGTERM)")
		keepCaps      = fs.Bool("keep-capabilities", false, "keep every capability (by default the daemon drops them all once its models are attached)")
	)
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := fs.want(0, "no arguments"); err != nil {
		return err
	}
	// load loads the configuration, the flags over it: at start, and
	// again at every reload.
	load := func() (*config.Config, error) {
		cfg, err := p.load()
		if err != nil {
			return nil, err
		}
		if *metricsAddr != "" {
			cfg.Metrics.Addr = *metricsAddr
		}
		if *metricsRemote {
			cfg.Metrics.AllowRemote = true
		}
		if cfg.Metrics.Addr != "" {
			if err := config.CheckMetricsAddr(cfg.Metrics.Addr, cfg.Metrics.AllowRemote); err != nil {
				return nil, fmt.Errorf("--metrics-addr: %w", err)
			}
		}
		if *logFormat != "" {
			cfg.Log.Format = *logFormat
		}
		if *logLevel != "" {
			cfg.Log.Level = *logLevel
		}
		if _, err := parseLevel(cfg.Log.Level); err != nil {
			return nil, err
		}
		return cfg, nil
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	log, level, err := newLogger(stderr, cfg.Log)
	if err != nil {
		return err
	}
	d, err := daemon.New(daemon.Options{Config: cfg, Log: log, Version: Version, DropCapabilities: ownProcess && !*keepCaps,
		Reread: load,
		SetLogLevel: func(l string) error {
			lv, err := parseLevel(l)
			if err == nil {
				level.Set(lv)
			}
			return err
		},
	})
	if err != nil {
		return err
	}
	// ctx is final before the goroutine below reads it: assigning it
	// after would race with that read (a torn interface crashed the
	// runtime once in CI).
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, *duration, fmt.Errorf("--duration %v reached", *duration))
		defer cancel()
	}
	// SIGHUP reloads the configuration, as 'mlbpf reload' does.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ready := d.Ready()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-ready:
				// systemd's Type=notify: every model runs, the socket
				// listens.
				if _, err := sdnotify.Notify(fmt.Sprintf("%s\nMAINPID=%d\nSTATUS=running", sdnotify.Ready, os.Getpid())); err != nil {
					log.Warn("telling systemd the daemon is ready", "err", err)
				}
				ready = nil
			case <-hup:
				_, _ = sdnotify.Notify(fmt.Sprintf("%s\nMONOTONIC_USEC=%d", sdnotify.Reloading, loader.MonotonicNs()/1000))
				status := "STATUS=running, configuration reloaded"
				if _, err := d.Reload(ctx, "SIGHUP"); err != nil {
					log.Warn("SIGHUP: configuration not reloaded", "err", err)
					status = "STATUS=running, reload refused (see the log)"
				}
				_, _ = sdnotify.Notify(sdnotify.Ready + "\n" + status)
			}
		}
	}()
	defer func() { _, _ = sdnotify.Notify(sdnotify.Stopping) }()
	return d.Run(ctx)
}

// ownProcess is set by main: the process is mlbpf's own, so the daemon
// may drop its capabilities, which belong to the process's threads. A test
// running the daemon in-process leaves it false.
var ownProcess bool

// newLogger returns the daemon's logger, and its level to change on a
// reload.
func newLogger(w io.Writer, c config.Log) (*slog.Logger, *slog.LevelVar, error) {
	lv, err := parseLevel(c.Level)
	if err != nil {
		return nil, nil, err
	}
	level := new(slog.LevelVar)
	level.Set(lv)
	o := &slog.HandlerOptions{Level: level}
	switch c.Format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, o)), level, nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, o)), level, nil
	}
	return nil, nil, fmt.Errorf("--log-format %q: want text or json", c.Format)
}

func parseLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
}
