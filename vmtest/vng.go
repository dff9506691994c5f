package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// vngArgs returns the arguments of vng running script in the guest on
// image. The guest sees the host's file systems read-only but for vng's
// overlays (/etc, /tmp, /var, …): work, holding the test binaries, is
// shared read-write, and the packages' modules get an overlay of their
// own so that tests may write beside their sources without touching the
// host's.
func vngArgs(image, work string, pkgs []testPackage, o *options, kvm bool, script string) []string {
	args := []string{
		"--run", image, "--user", "root",
		"--cpus", strconv.Itoa(o.cpus), "--memory", strconv.Itoa(o.memory) + "M",
		// Debian's kernels have virtiofs and 9p as modules, which vng
		// puts in its initramfs; microvm lacks the PCI bus they sit on.
		"--force-9p", "--disable-microvm",
		// The kernel's console on vng's standard error, warnings and
		// worse only: printing on the emulated serial port is slow.
		"--verbose", "--append", "loglevel=4",
		"--rwdir", work,
	}
	var mods []string
	for _, p := range pkgs {
		if p.ModuleDir != "" && !slices.Contains(mods, p.ModuleDir) {
			mods = append(mods, p.ModuleDir)
			args = append(args, "--overlay-rwdir", p.ModuleDir)
		}
	}
	args = append(args, "--exec", script)
	if !kvm {
		// One host thread for all virtual CPUs, as the other runner
		// did: with one each, 6.12 oopsed in 2 of 26 runs on an int3
		// left by its own text patching (qemu 7.2's multi-threaded
		// TCG). -cpu max for the instructions Debian's kernels use
		// when they find them. vng wants --qemu-opts last.
		args = append(args, "--disable-kvm", "--qemu-opts=-accel tcg,thread=single -cpu max")
	}
	return args
}

// kvmUsable reports whether qemu can boot kernelImage with KVM here, and
// if not, why. Having /dev/kvm is not enough: where KVM is nested it may
// open and then hang early in the kernel's boot, or qemu may abort on a
// CPU feature. So qemu starts the kernel with KVM and -cpu host, as vng
// would, and the kernel must print its banner on the serial console
// within the timeout.
func kvmUsable(ctx context.Context, kernelImage string, timeout time.Duration) (bool, string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false, err.Error()
	}
	f.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out := &console{}
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-nodefaults", "-nographic", "-no-reboot",
		"-accel", "kvm", "-cpu", "host", "-m", "256M", "-kernel", kernelImage,
		"-append", "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1",
		"-serial", "stdio", "-monitor", "none")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return false, err.Error()
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill(); <-done }()
	for !strings.Contains(strings.Join(out.tail(), "\n"), "Linux version") {
		select {
		case <-ctx.Done():
			return false, "no kernel banner within " + timeout.String()
		case err := <-done:
			done <- err
			return false, fmt.Sprintf("qemu: %v: %s", err, strings.Join(out.tail(), " "))
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true, ""
}

// boot runs vng, the guest's output going to stdout and the kernel's
// console to con, and kills it (its process group: vng and its qemu) at
// timeout or when ctx ends. It returns the exit status, the script's in
// the guest if it finished, and why the machine failed if it did.
func boot(ctx context.Context, cmd *exec.Cmd, stdout, con io.Writer, timeout time.Duration) (int, string) {
	// Through a pipe: qemu reopens its standard output by its path
	// (/proc/self/fd/1), and a file reopened so writes from offset 0.
	cmd.Stdout, cmd.Stderr = struct{ io.Writer }{stdout}, con
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := cmd.Start(); err != nil {
		return 1, fmt.Sprintf("starting vng: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err = <-done
	}
	var exit *exec.ExitError
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return 1, fmt.Sprintf("the machine was still running after -timeout %s: killed", timeout)
	case ctx.Err() != nil:
		return 1, "interrupted"
	case err == nil:
		return 0, ""
	case errors.As(err, &exit) && exit.ExitCode() == 255:
		// What vng returns when the guest did not report a status.
		return 1, "the machine stopped before the tests finished (vng exited with status 255)"
	case errors.As(err, &exit):
		return exit.ExitCode(), ""
	}
	return 1, fmt.Sprintf("running vng: %v", err)
}

// console keeps what the kernel's console says: its last lines, and
// those around the first panic, BUG or oops.
type console struct {
	mu      sync.Mutex
	partial []byte
	last    []string // up to tailLines
	trouble []string // from troubleBefore lines before the first incident
}

const (
	tailLines     = 40
	troubleBefore = 5
)

var troubleRE = regexp.MustCompile(`Kernel panic - not syncing|(^|\] )(BUG: |Oops: |general protection fault|kernel BUG at )`)

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.partial = append(c.partial, p...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := strings.TrimRight(string(c.partial[:i]), "\r")
		c.partial = c.partial[i+1:]
		c.last = append(c.last, line)
		if c.trouble == nil && troubleRE.MatchString(line) {
			c.trouble = slices.Clone(c.last[max(0, len(c.last)-1-troubleBefore):])
		} else if c.trouble != nil && len(c.trouble) < tailLines {
			c.trouble = append(c.trouble, line)
		}
		if len(c.last) > tailLines {
			c.last = slices.Delete(c.last, 0, len(c.last)-tailLines)
		}
	}
}

// tail returns the console's last lines, the one being written included.
func (c *console) tail() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.partial) > 0 {
		return append(slices.Clone(c.last), string(c.partial))
	}
	return slices.Clone(c.last)
}

// incident returns the lines around the first panic, BUG or oops, or nil.
func (c *console) incident() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.trouble)
}
