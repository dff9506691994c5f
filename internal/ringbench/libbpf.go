package ringbench

import (
	"bufio"
	_ "embed"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
)

//go:embed libbpf/consumer.c
var libbpfConsumerSource []byte

// BuildLibbpfConsumer compiles libbpf/consumer.c with the C compiler cc,
// linked with -lbpf, into dir, and returns the program's path.
func BuildLibbpfConsumer(cc, dir string) (string, error) {
	src := filepath.Join(dir, "consumer.c")
	bin := filepath.Join(dir, "consumer")
	if err := os.WriteFile(src, libbpfConsumerSource, 0o644); err != nil {
		return "", fmt.Errorf("writing libbpf consumer source: %w", err)
	}
	out, err := exec.Command(cc, "-O2", "-Wall", "-o", bin, src, "-lbpf").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("compiling the libbpf consumer (%s ... -lbpf; needs libbpf-dev: apt-get install libbpf-dev): %w\n%s", cc, err, out)
	}
	return bin, nil
}

// libbpfConsumer is a running libbpf/consumer.c reading one ring buffer.
type libbpfConsumer struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startLibbpfConsumer(bin string, events *ebpf.Map, cpu int) (*libbpfConsumer, error) {
	// The child gets its own fd of the map, as fd 3.
	fd, err := events.Clone()
	if err != nil {
		return nil, fmt.Errorf("duplicating the ring buffer fd: %w", err)
	}
	defer fd.Close()
	f := os.NewFile(uintptr(fd.FD()), "events")
	cmd := exec.Command(bin, strconv.Itoa(cpu))
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the libbpf consumer: %w", err)
	}
	return &libbpfConsumer{cmd: cmd, in: in, out: bufio.NewScanner(outPipe)}, nil
}

func (c *libbpfConsumer) send(format string, args ...any) error {
	_, err := fmt.Fprintf(c.in, format+"\n", args...)
	return err
}

func (c *libbpfConsumer) line() (string, error) {
	if !c.out.Scan() {
		if err := c.out.Err(); err != nil {
			return "", err
		}
		return "", fmt.Errorf("libbpf consumer exited")
	}
	return c.out.Text(), nil
}

// result reads an "ok <records> <ns> <sum> <checksum>" answer.
func (c *libbpfConsumer) result() (tally, error) {
	l, err := c.line()
	if err != nil {
		return tally{}, err
	}
	var t tally
	var ns uint64
	if _, err := fmt.Sscanf(l, "ok %d %d %d %d", &t.records, &ns, &t.sum, &t.check); err != nil {
		return tally{}, fmt.Errorf("libbpf consumer answered %q", strings.TrimSpace(l))
	}
	t.elapsed = time.Duration(ns)
	return t, nil
}

// drain reads n records; whole also reads every byte of each into a
// checksum.
func (c *libbpfConsumer) drain(n uint64, whole bool) (tally, error) {
	cmd := "drain"
	if whole {
		cmd = "check"
	}
	if err := c.send("%s %d", cmd, n); err != nil {
		return tally{}, err
	}
	return c.result()
}

// live starts a live run of d; ready returns once the consumer is polling,
// and done reads its result.
func (c *libbpfConsumer) live(d time.Duration) error {
	if err := c.send("live %d", d.Milliseconds()); err != nil {
		return err
	}
	l, err := c.line()
	if err != nil {
		return err
	}
	if l != "ready" {
		return fmt.Errorf("libbpf consumer answered %q", l)
	}
	return nil
}

func (c *libbpfConsumer) close() error {
	_ = c.in.Close()
	return c.cmd.Wait()
}
