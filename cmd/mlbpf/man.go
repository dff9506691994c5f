package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
)

// cmdMan prints mlbpf(8), generated from the commands' own help: 'make
// deb' installs it.
func cmdMan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("__man", "__man", "Print the manual page, mlbpf(8), in roff, from the commands' help.", "  mlbpf __man | man -l -", stdout, stderr)
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := fs.want(0, "no arguments"); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, ".TH MLBPF 8 \"\" \"mlbpf %s\" \"System Administration\"\n", roffEscape(Version))
	b.WriteString(".SH NAME\nmlbpf \\- machine-learning models for kernel subsystems through BPF\n")
	b.WriteString(".SH SYNOPSIS\n.B mlbpf\n.I command\n[\\fIflags\\fR] [\\fIarguments\\fR]\n")
	var usage bytes.Buffer
	printUsage(&usage)
	b.WriteString(".SH DESCRIPTION\n")
	preformatted(&b, usage.String())
	b.WriteString(".SH COMMANDS\n")
	for _, c := range commands() {
		if c.hidden {
			continue
		}
		var help bytes.Buffer
		_ = c.run(ctx, []string{"--help"}, &help, io.Discard)
		fmt.Fprintf(&b, ".SS %s\n", roffEscape(c.name))
		preformatted(&b, help.String())
	}
	b.WriteString(`.SH FILES
.TP
.I /etc/mlbpf/mlbpf.yaml
The configuration ('mlbpf config default' prints the embedded one).
.TP
.I /sys/fs/bpf/mlbpf
The models' pins: their maps and links, adopted by the next daemon.
.TP
.I /var/lib/mlbpf
What the models learned, and the evidence 'mlbpf status' shows.
.TP
.I /run/mlbpf/agent.sock
The agent socket, and the daemon's lock beside it.
.SH SIGNALS
SIGINT and SIGTERM stop every model (the kernel on its defaults) and end the daemon;
SIGHUP reloads the configuration, as 'mlbpf reload' does.
.SH SEE ALSO
.BR systemctl (1),
.BR bpftool (8)
`)
	_, err := io.WriteString(stdout, b.String())
	return err
}

// preformatted writes text as it is laid out, in a no-fill block.
func preformatted(b *strings.Builder, text string) {
	b.WriteString(".nf\n")
	for line := range strings.SplitSeq(strings.TrimRight(text, "\n"), "\n") {
		line = roffEscape(line)
		if strings.HasPrefix(line, ".") || strings.HasPrefix(line, "'") {
			line = "\\&" + line
		}
		b.WriteString(line + "\n")
	}
	b.WriteString(".fi\n")
}

func roffEscape(s string) string { return strings.ReplaceAll(s, `\`, `\e`) }
