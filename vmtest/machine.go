package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mlbpf/mlbpf/vmtest/internal/console"
)

// machine says how to start the virtual machine.
type machine struct {
	QEMU    string // qemu-system-x86_64
	Machine string // qemu machine type: microvm, pc, q35
	Accel   string // kvm or tcg
	TCG     string // TCG's threading: single (one host thread for all CPUs) or multi
	CPUs    int
	Memory  int // MiB
	Kernel  string
	Initrd  string
	Append  string // kernel command line
	Verbose bool
}

// kernelCmdline is the guest kernel's command line: the serial console,
// reboot at once on a panic (qemu -no-reboot then exits), and no
// chatter unless verbose.
func kernelCmdline(verbose bool, extra string) string {
	args := []string{"console=ttyS0,115200", "panic=-1", "rdinit=/init", "edd=off"}
	if !verbose {
		args = append(args, "quiet")
	}
	if extra != "" {
		args = append(args, extra)
	}
	return strings.Join(args, " ")
}

// qemuArgs returns the arguments of qemu-system-x86_64 for m.
func (m *machine) qemuArgs() []string {
	cpu, accel := "max", m.Accel
	if m.Accel == "kvm" {
		cpu = "host"
	} else if m.TCG != "" {
		accel += ",thread=" + m.TCG
	}
	args := []string{
		"-nodefaults", "-nographic", "-no-reboot",
		"-machine", m.Machine, "-accel", accel, "-cpu", cpu,
		"-smp", strconv.Itoa(m.CPUs), "-m", strconv.Itoa(m.Memory) + "M",
		"-kernel", m.Kernel, "-initrd", m.Initrd,
		"-append", m.Append,
		"-serial", "stdio", "-monitor", "none",
		// Keep SeaBIOS off the serial port: it would clear the
		// terminal the console is streamed to.
		"-fw_cfg", "name=etc/sercon-port,string=0",
	}
	if m.Initrd == "" {
		args = slices.Delete(args, slices.Index(args, "-initrd"), slices.Index(args, "-initrd")+2)
	}
	return args
}

// vngArgs returns the arguments of vng (virtme-ng) running the init from
// root on the host's file systems.
func vngArgs(kernelImage, root string, cpus, memory int, kvm bool, extra string) []string {
	args := []string{
		"--run", kernelImage,
		"--user", "root",
		"--cpus", strconv.Itoa(cpus),
		"--memory", strconv.Itoa(memory) + "M",
		"--rwdir", root,
	}
	if !kvm {
		args = append(args, "--disable-kvm")
	}
	if extra != "" {
		args = append(args, "--append", extra)
	}
	return append(args, "--exec", root+"/init -root "+root)
}

// kvmUsable reports whether qemu can boot kernelImage with KVM here, and
// if not, why. Having /dev/kvm is not enough: where KVM is nested it may
// open and then hang early in the kernel's boot, or qemu may abort on a
// CPU feature. So qemu starts the kernel with KVM, as boot would, and the
// kernel must print its banner on the early console within the timeout.
func kvmUsable(ctx context.Context, qemu, kernelImage string, timeout time.Duration) (bool, string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false, err.Error()
	}
	f.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m := &machine{
		QEMU: qemu, Machine: "pc", Accel: "kvm", CPUs: 1, Memory: 256, Kernel: kernelImage,
		Append: "console=ttyS0,115200 earlyprintk=serial,ttyS0,115200 panic=-1 edd=off",
	}
	cmd := exec.CommandContext(ctx, qemu, m.qemuArgs()...)
	var out lockedBuffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		return false, err.Error()
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if strings.Contains(out.String(), "Linux version") {
				return true, ""
			}
			return false, fmt.Sprintf("qemu: %v: %s", err, strings.TrimSpace(out.String()))
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			<-done
			return false, "no kernel banner within " + timeout.String()
		case <-tick.C:
			if strings.Contains(out.String(), "Linux version") {
				_ = cmd.Process.Kill()
				<-done
				return true, ""
			}
		}
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// endGrace is how long the machine may take to power off after the end
// marker before it is killed.
const endGrace = 15 * time.Second

// boot runs cmd (qemu or vng) with its output going to con, and kills it
// at timeout, when ctx ends, or endGrace after the end marker. stderr
// gets the command's standard error when verbose; otherwise it is kept
// and returned, for a failure report.
func boot(ctx context.Context, cmd *exec.Cmd, con *console.Console, timeout time.Duration, verboseErr io.Writer) (console.Stop, string) {
	var qerr lockedBuffer
	cmd.Stdout = con
	if verboseErr != nil {
		cmd.Stderr = io.MultiWriter(&qerr, verboseErr)
	} else {
		cmd.Stderr = &qerr
	}
	// Its own process group, so that vng's qemu goes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return console.Stop{Err: err}, ""
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	kill := func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }

	// What qemu says to its standard error, less the warning the
	// SeaBIOS setting above always causes.
	qemuErr := func() string {
		var keep []string
		for _, l := range strings.Split(qerr.String(), "\n") {
			if l != "" && !strings.Contains(l, "fw_cfg item names should be prefixed") {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	}

	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var grace <-chan time.Time
	ended := con.Ended()
	for {
		select {
		case err := <-done:
			return console.Stop{Err: err}, qemuErr()
		case <-ended:
			ended = nil
			grace = time.After(endGrace)
		case <-grace:
			kill()
			<-done
			return console.Stop{}, qemuErr()
		case <-deadline.C:
			kill()
			<-done
			return console.Stop{TimedOut: true, Timeout: timeout}, qemuErr()
		case <-ctx.Done():
			kill()
			<-done
			return console.Stop{Err: fmt.Errorf("interrupted: %w", ctx.Err())}, qemuErr()
		}
	}
}

// errExit carries an exit status out of run.
type errExit struct{ code int }

func (e errExit) Error() string { return "exit status " + strconv.Itoa(e.code) }

func exitCode(err error) int {
	var e errExit
	if errors.As(err, &e) {
		return e.code
	}
	return 1
}
