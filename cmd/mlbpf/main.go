// Command mlbpf runs and inspects machine-learning models that extend
// kernel subsystems through BPF (the ml-lib RFC on today's kernels).
//
// Run `mlbpf help` for the commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if errors.Is(err, errUsage) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mlbpf:", err)
		os.Exit(1)
	}
}

// errUsage is returned after a usage message has been printed.
var errUsage = errors.New("usage")

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"run", "run the daemon: load, pin, renew leases, learn, until SIGINT/SIGTERM", cmdRun},
		{"status", "show every pinned model: state, mode, lease, arm counts", cmdStatus},
		{"version", "print the version", cmdVersion},
	}
}

const usage = `mlbpf extends kernel subsystems with machine-learning models through BPF.

Usage:
  mlbpf <command> [flags] [arguments]

Commands:
%s
Examples:
  mlbpf run                       # the daemon, embedded default configuration
  mlbpf run --duration 30s -o json
  mlbpf status -o json

Run 'mlbpf <command> --help' for a command's flags.
`

func printUsage(w io.Writer) {
	var list string
	for _, c := range commands() {
		list += fmt.Sprintf("  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, usage, list)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		printUsage(stderr)
		return errUsage
	}
	switch args[0] {
	case "help", "-h", "--help", "-help":
		printUsage(stdout)
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "mlbpf: unknown command %q\n\n", args[0])
	printUsage(stderr)
	return errUsage
}

// newFlags returns a flag set whose errors and help go to stderr.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("mlbpf "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: mlbpf %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args, turning a flag error into errUsage (the flag
// package has printed it already).
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return errUsage
}

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

func cmdVersion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", "version", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "mlbpf %s\n", Version)
	return nil
}
