// Command mlbpf runs and inspects machine-learning models that extend
// kernel subsystems through BPF (the ml-lib RFC on today's kernels).
//
// Run `mlbpf help` for the commands.
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
	"strings"
	"syscall"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/subsystems"
)

// The subsystems mlbpf runs, registered once (package subsystems).
func init() { daemon.Register(subsystems.All()...) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// A second signal kills at once.
		<-ctx.Done()
		stop()
	}()
	ownProcess = true
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
	hidden  bool
}

func commands() []command {
	return []command{
		{name: "run", summary: "run the daemon: load, pin, renew leases, learn, serve agents, until SIGINT/SIGTERM", run: cmdRun},
		{name: "status", summary: "show every pinned model: state, mode, lease, arm counts, efficiency, records, losses", run: cmdStatus},
		{name: "top", summary: "a live view of every model: modes, arms and their rates, efficiency charted, keys; set a mode there", run: cmdTop},
		{name: "mode", summary: "set a model's mode (emergency, learning, collaboration, recommendation)", run: cmdMode},
		{name: "start", summary: "start a model an operator stopped", run: cmdStart},
		{name: "stop", summary: "stop a model: the kernel goes back to its default at once", run: cmdStop},
		{name: "recommend", summary: "write an operator's recommendation, validated by the model's subsystem", run: cmdRecommend},
		{name: "recommendations", summary: "list a model's recommendation map: value, operator or learner, when, evidence", run: cmdRecommendations},
		{name: "reload", summary: "have the daemon re-read its configuration and apply it live, or refuse it whole", run: cmdReload},
		{name: "report", summary: "write a model's report, one HTML file: efficiency, arms, decisions, keys over its history", run: cmdReport},
		{name: "dataset", summary: "get, discard or export a model's dataset portion", run: cmdDataset},
		{name: "rollback", summary: "every model to EMERGENCY, the daemon stopped, every pin removed", run: cmdRollback},
		{name: "demo", summary: "show a model learning on a testbed of its own (tcp: lossy veth; tcp-rto: a lossy and a bloated path)", run: cmdDemo},
		{name: "config", summary: "print the embedded default configuration, or check a file", run: cmdConfig},
		{name: "completion", summary: "print a shell completion script (bash, zsh)", run: cmdCompletion},
		{name: "version", summary: "print the version", run: cmdVersion},
		{name: "__models", run: cmdModels, hidden: true},
		{name: "__man", run: cmdMan, hidden: true},
		{name: "watchdog", run: cmdWatchdog, hidden: true},
	}
}

const usage = `mlbpf extends kernel subsystems with machine-learning models through BPF.

Usage:
  mlbpf <command> [flags] [arguments]

Commands:
%s
Examples:
  mlbpf run                                   # the daemon, embedded default configuration
  mlbpf run --config /etc/mlbpf/mlbpf.yaml --metrics-addr 127.0.0.1:9464
  mlbpf status -o json
  mlbpf top
  mlbpf mode tcp/cc emergency
  mlbpf recommend tcp/cc 10.0.0.0/8 bbr
  mlbpf dataset get synthetic/demo
  mlbpf report tcp/cc -o tcp-cc.html
  mlbpf rollback --dry-run

Every command takes --pin-root, --state-dir, --socket and --config; run
'mlbpf <command> --help' for a command's flags and examples.
`

func printUsage(w io.Writer) {
	var list strings.Builder
	for _, c := range commands() {
		if !c.hidden {
			fmt.Fprintf(&list, "  %-15s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprintf(w, usage, list.String())
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		printUsage(stderr)
		return errUsage
	}
	switch args[0] {
	case "help", "-h", "--help", "-help":
		if len(args) > 1 {
			return run(ctx, []string{args[1], "--help"}, stdout, stderr)
		}
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

// flags is a command's flag set, with its help text.
type flags struct {
	*flag.FlagSet
	stdout, stderr io.Writer
	help           func(io.Writer)
}

// newFlags returns a command's flag set. Its help (-h, --help) shows the
// synopsis, what the command does, examples and the flags, on stdout;
// flag errors and usage mistakes go to stderr.
func newFlags(name, synopsis, about, examples string, stdout, stderr io.Writer) *flags {
	fs := flag.NewFlagSet("mlbpf "+name, flag.ContinueOnError)
	f := &flags{FlagSet: fs, stdout: stdout, stderr: stderr}
	f.help = func(w io.Writer) {
		fmt.Fprintf(w, "Usage: mlbpf %s\n\n%s\n", synopsis, strings.TrimSpace(about))
		if examples != "" {
			fmt.Fprintf(w, "\nExamples:\n%s\n", strings.TrimRight(examples, "\n"))
		}
		fmt.Fprintf(w, "\nFlags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	fs.SetOutput(stderr)
	fs.Usage = func() { f.help(stderr) }
	return f
}

// parse parses args, flags before or after the arguments; everything
// after "--" is an argument, however it looks. Help goes to stdout and
// returns flag.ErrHelp; a flag error has been printed with the usage, and
// returns errUsage.
func (f *flags) parse(args []string) error {
	var rest []string
	for i, a := range args {
		if a == "--" {
			args, rest = args[:i], args[i+1:]
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			f.help(f.stdout)
			return flag.ErrHelp
		}
	}
	var pos []string
	for {
		if err := f.Parse(args); err != nil {
			return errUsage
		}
		args = f.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	return f.Parse(append(append([]string{"--"}, pos...), rest...))
}

// want checks the number of positional arguments.
func (f *flags) want(n int, what string) error {
	if f.NArg() != n {
		fmt.Fprintf(f.stderr, "%s: want %s\n\n", f.Name(), what)
		f.help(f.stderr)
		return errUsage
	}
	return nil
}

// paths are the flags every command takes: where the pins, the state and
// the socket are, and the configuration they default from.
type paths struct {
	configFile string
	pinRoot    string
	stateDir   string
	socket     string
	fs         *flag.FlagSet
}

func addPaths(fs *flags) *paths {
	p := &paths{fs: fs.FlagSet}
	fs.StringVar(&p.configFile, "config", "", "configuration file, YAML or TOML (default: the embedded default, see 'mlbpf config default')")
	fs.StringVar(&p.pinRoot, "pin-root", loader.DefaultPinRoot, "root of the pinned maps")
	fs.StringVar(&p.stateDir, "state-dir", config.DefaultStateDir, "directory of the learned state and the daemon's evidence")
	fs.StringVar(&p.socket, "socket", config.DefaultSocket, "the daemon's agent socket (its lock file, mlbpf.lock, is beside it)")
	return p
}

// load returns the configuration with the paths given on the command line
// over those of the file.
func (p *paths) load() (*config.Config, error) {
	cfg := config.Default()
	if p.configFile != "" {
		var err error
		if cfg, err = config.Load(p.configFile); err != nil {
			return nil, err
		}
	}
	p.fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "pin-root":
			cfg.PinRoot = p.pinRoot
		case "state-dir":
			cfg.StateDir = p.stateDir
		case "socket":
			cfg.Socket = p.socket
		}
	})
	p.pinRoot, p.stateDir, p.socket = cfg.PinRoot, cfg.StateDir, cfg.Socket
	return cfg, nil
}

// daemonPID returns the pid of the daemon serving the socket, 0 if none.
func (p *paths) daemonPID() int {
	pid, running := daemon.Holder(daemon.LockPath(p.socket))
	if !running {
		return 0
	}
	if pid == 0 {
		pid = -1 // running, pid unknown
	}
	return pid
}

// output is the -o flag of read commands.
type output struct{ format string }

func addOutput(fs *flags, dflt string) *output {
	o := &output{}
	fs.StringVar(&o.format, "o", dflt, "output: text or json")
	return o
}

func (o *output) check() error {
	if o.format != "text" && o.format != "json" {
		return fmt.Errorf("-o %q: want text or json", o.format)
	}
	return nil
}

func (o *output) json() bool { return o.format == "json" }

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
