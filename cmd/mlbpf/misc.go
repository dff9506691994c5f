package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/daemon"
)

func cmdConfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	usage := func(w io.Writer) {
		fmt.Fprint(w, `Usage: mlbpf config default | check FILE

  default     print the embedded default configuration (YAML), the one
              'mlbpf run' runs without --config: a starting point for yours
  check FILE  check a configuration file (YAML or TOML) as 'mlbpf run'
              would, naming the file, line and field of the first problem

Examples:
  mlbpf config default > /etc/mlbpf/mlbpf.yaml
  mlbpf config check /etc/mlbpf/mlbpf.yaml
`)
	}
	if len(args) == 0 {
		usage(stderr)
		return errUsage
	}
	switch args[0] {
	case "default":
		if len(args) != 1 {
			usage(stderr)
			return errUsage
		}
		_, err := stdout.Write(config.DefaultYAML())
		return err
	case "check":
		if len(args) != 2 {
			usage(stderr)
			return errUsage
		}
		c, err := config.Load(args[1])
		if err != nil {
			return err
		}
		if err := daemon.Check(c); err != nil {
			return err
		}
		var names []string
		for _, m := range c.Enabled() {
			names = append(names, m.Name)
		}
		fmt.Fprintf(stdout, "%s: ok, runs %s\n", args[1], strings.Join(names, ", "))
		return nil
	case "-h", "--help", "-help", "help":
		usage(stdout)
		return nil
	}
	fmt.Fprintf(stderr, "mlbpf config: unknown subcommand %q\n\n", args[0])
	usage(stderr)
	return errUsage
}

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

func cmdVersion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", "version [-o json]", "Print mlbpf's version and the Go toolchain it was built with.", "  mlbpf version\n  mlbpf version -o json", stdout, stderr)
	out := addOutput(fs, "text")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := fs.want(0, "no arguments"); err != nil {
		return err
	}
	if err := out.check(); err != nil {
		return err
	}
	if out.json() {
		return writeJSON(stdout, map[string]string{"version": Version, "go": runtime.Version(), "platform": runtime.GOOS + "/" + runtime.GOARCH})
	}
	fmt.Fprintf(stdout, "mlbpf %s (%s, %s/%s)\n", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}

// cmdModels prints the pinned models' names, one a line, for shell
// completion.
func cmdModels(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("__models", "__models", "List the pinned models (for completion).", "", stdout, stderr)
	p := addPaths(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	if _, err := p.load(); err != nil {
		return err
	}
	names, _ := pinnedNames(p.pinRoot)
	for _, n := range names {
		fmt.Fprintln(stdout, n)
	}
	return nil
}

func cmdCompletion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("completion", "completion bash|zsh", `
Print a shell completion script: commands, subcommands, flags, modes, and
the pinned models' names.`, `
  source <(mlbpf completion bash)
  mlbpf completion bash > /etc/bash_completion.d/mlbpf
  mlbpf completion zsh > "${fpath[1]}/_mlbpf"`, stdout, stderr)
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := fs.want(1, "a shell: bash or zsh"); err != nil {
		return err
	}
	var cmds []string
	for _, c := range commands() {
		if !c.hidden {
			cmds = append(cmds, c.name)
		}
	}
	words := strings.Join(cmds, " ")
	switch fs.Arg(0) {
	case "bash":
		fmt.Fprintf(stdout, bashCompletion, words)
	case "zsh":
		fmt.Fprintf(stdout, zshCompletion, words)
	default:
		return fmt.Errorf("completion %q: want bash or zsh", fs.Arg(0))
	}
	return nil
}

const commonFlags = "--config --pin-root --state-dir --socket -o --help"

var bashCompletion = `# bash completion for mlbpf
_mlbpf() {
	local cur prev cmd sub
	cur="${COMP_WORDS[COMP_CWORD]}"
	prev="${COMP_WORDS[COMP_CWORD-1]}"
	cmd="${COMP_WORDS[1]}"
	sub="${COMP_WORDS[2]}"
	case "$prev" in
	--config|--pin-root|--state-dir|--socket|--output)
		COMPREPLY=($(compgen -f -- "$cur")); return ;;
	-o)
		if [ "$cmd" = dataset ] && [ "$sub" = export ]; then COMPREPLY=($(compgen -f -- "$cur")); else COMPREPLY=($(compgen -W "text json" -- "$cur")); fi
		return ;;
	--format)
		COMPREPLY=($(compgen -W "jsonl csv parquet" -- "$cur")); return ;;
	--log-format)
		COMPREPLY=($(compgen -W "text json" -- "$cur")); return ;;
	--log-level)
		COMPREPLY=($(compgen -W "debug info warn error" -- "$cur")); return ;;
	esac
	if [ "$COMP_CWORD" -eq 1 ]; then
		COMPREPLY=($(compgen -W "%s help" -- "$cur")); return
	fi
	if [[ "$cur" == -* ]]; then
		case "$cmd" in
		run) COMPREPLY=($(compgen -W "` + commonFlags + ` --metrics-addr --metrics-allow-remote --log-format --log-level --duration" -- "$cur")) ;;
		rollback) COMPREPLY=($(compgen -W "` + commonFlags + ` --dry-run" -- "$cur")) ;;
		dataset) COMPREPLY=($(compgen -W "` + commonFlags + ` --offset --max-records --raw --format" -- "$cur")) ;;
		report) COMPREPLY=($(compgen -W "` + commonFlags + ` -o --title --last" -- "$cur")) ;;
		top) COMPREPLY=($(compgen -W "` + commonFlags + ` --every --history -n --keys" -- "$cur")) ;;
		*) COMPREPLY=($(compgen -W "` + commonFlags + `" -- "$cur")) ;;
		esac
		return
	fi
	case "$cmd" in
	dataset)
		if [ "$COMP_CWORD" -eq 2 ]; then COMPREPLY=($(compgen -W "get discard export" -- "$cur")); return; fi
		COMPREPLY=($(compgen -W "$(mlbpf __models 2>/dev/null)" -- "$cur")) ;;
	config)
		if [ "$COMP_CWORD" -eq 2 ]; then COMPREPLY=($(compgen -W "default check" -- "$cur")); else COMPREPLY=($(compgen -f -- "$cur")); fi ;;
	completion)
		COMPREPLY=($(compgen -W "bash zsh" -- "$cur")) ;;
	mode)
		if [ "$COMP_CWORD" -eq 2 ]; then COMPREPLY=($(compgen -W "$(mlbpf __models 2>/dev/null)" -- "$cur"));
		else COMPREPLY=($(compgen -W "emergency learning collaboration recommendation" -- "$cur")); fi ;;
	status|top|start|stop|recommend|recommendations|report)
		COMPREPLY=($(compgen -W "$(mlbpf __models 2>/dev/null)" -- "$cur")) ;;
	esac
}
complete -F _mlbpf mlbpf
`

var zshCompletion = `#compdef mlbpf
# zsh completion for mlbpf
_mlbpf() {
	local -a commands models
	commands=(%s help)
	if (( CURRENT == 2 )); then
		compadd -a commands; return
	fi
	models=(${(f)"$(mlbpf __models 2>/dev/null)"})
	case $words[2] in
	dataset)
		if (( CURRENT == 3 )); then compadd get discard export; else compadd -a models; fi ;;
	config)
		if (( CURRENT == 3 )); then compadd default check; else _files; fi ;;
	completion) compadd bash zsh ;;
	mode)
		if (( CURRENT == 3 )); then compadd -a models; else compadd emergency learning collaboration recommendation; fi ;;
	status|top|start|stop|recommend|recommendations|report) compadd -a models ;;
	run) _arguments '--config[configuration file]:file:_files' '--metrics-addr[host:port]' '--metrics-allow-remote' '--log-format:format:(text json)' '--log-level:level:(debug info warn error)' '--duration[stop after]' ;;
	esac
}
compdef _mlbpf mlbpf
`
