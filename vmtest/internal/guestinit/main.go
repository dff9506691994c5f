//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mlbpf/mlbpf/vmtest/internal/plan"
	"golang.org/x/sys/unix"
)

func main() {
	if filepath.Base(os.Args[0]) == "modprobe" {
		os.Exit(modprobe(os.Args[1:]))
	}
	pid1 := os.Getpid() == 1
	if pid1 {
		// The kernel hands init the command line words it does not
		// know; they are not ours to parse.
		os.Args = os.Args[:1]
	}
	fs := flag.NewFlagSet("guestinit", flag.ContinueOnError)
	planPath := fs.String("plan", plan.Path, "the plan to run")
	root := fs.String("root", "/", "directory the plan's paths are relative to")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}

	if pid1 {
		mountEarly()
		attachConsole()
	}
	mountBPF(pid1)

	p, err := plan.Read(filepath.Join(*root, *planPath))
	if err != nil {
		logf("%v", err)
		finish(pid1, "", 1)
	}
	fmt.Printf("\n%s\n", plan.StartLine(p.Token, uptime()))
	status := run(p, *root)
	finish(pid1, p.Token, status)
}

// modprobe stands in for /sbin/modprobe, which the kernel runs when it
// needs a module it does not have (a netlink family, a qdisc, a
// congestion control). The guest loads its modules at boot and has no
// others, so a request is only reported, on the console through the
// kernel log, for the run's output to say which module to add.
func modprobe(args []string) int {
	var names []string
	for _, a := range args {
		// Mounting bpffs asks for bpf_preload, which only adds the
		// maps.debug and progs.debug iterator files: not worth a line.
		if !strings.HasPrefix(a, "-") && a != "bpf_preload" {
			names = append(names, a)
		}
	}
	if len(names) == 0 {
		return 1
	}
	if kmsg, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		// <3> is KERN_ERR, which the console shows even with quiet.
		fmt.Fprintf(kmsg, "<3>vmtest-init: the kernel asked for module %s, which this guest does not have: add it to vmtest's -kmods\n", strings.Join(names, " "))
		kmsg.Close()
	}
	return 1
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stdout, "vmtest-init: "+format+"\n", args...)
}

type mount struct {
	source, target, fstype string
	magic                  int64
	flags                  uintptr
	data                   string
}

const nosuid = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

// mountEarly mounts what a PID 1 must mount before anything else.
func mountEarly() {
	mountAll([]mount{
		{"proc", "/proc", "proc", unix.PROC_SUPER_MAGIC, nosuid, ""},
		{"sysfs", "/sys", "sysfs", unix.SYSFS_MAGIC, nosuid, ""},
		{"devtmpfs", "/dev", "devtmpfs", 0, unix.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", unix.DEVPTS_SUPER_MAGIC, unix.MS_NOSUID | unix.MS_NOEXEC, "ptmxmode=0666"},
		{"tmpfs", "/dev/shm", "tmpfs", 0, unix.MS_NOSUID | unix.MS_NODEV, ""},
		{"tmpfs", "/tmp", "tmpfs", 0, unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", 0, unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	})
}

// mountBPF mounts the file systems BPF programs and their tests use,
// where nothing is mounted yet.
func mountBPF(pid1 bool) {
	m := []mount{
		{"bpf", "/sys/fs/bpf", "bpf", unix.BPF_FS_MAGIC, nosuid, "mode=0700"},
		{"tracefs", "/sys/kernel/tracing", "tracefs", unix.TRACEFS_MAGIC, nosuid, ""},
		{"debugfs", "/sys/kernel/debug", "debugfs", unix.DEBUGFS_MAGIC, nosuid, ""},
	}
	if pid1 {
		// Elsewhere a cgroup hierarchy is already in place; a guest of
		// ours gets the unified one.
		m = append(m, mount{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.CGROUP2_SUPER_MAGIC, nosuid, ""})
	}
	mountAll(m)
}

func mountAll(mounts []mount) {
	for _, m := range mounts {
		if m.magic != 0 {
			var st unix.Statfs_t
			if unix.Statfs(m.target, &st) == nil && st.Type == m.magic {
				continue
			}
		}
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			logf("mounting %s: %v", m.target, err)
			continue
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			logf("mounting %s on %s: %v", m.fstype, m.target, err)
		}
	}
}

// attachConsole makes /dev/console the standard input, output and error,
// in case the kernel found no console to give init.
func attachConsole() {
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	for i := 0; i < 3; i++ {
		_ = unix.Dup3(fd, i, 0)
	}
	if fd > 2 {
		_ = unix.Close(fd)
	}
}

func run(p *plan.Plan, root string) int {
	limits()
	if err := linkUp("lo"); err != nil {
		logf("bringing up lo: %v", err)
	}
	_ = unix.Sethostname([]byte("vmtest"))
	loadModules(p.Modules, root)

	env := p.Env
	if len(env) == 0 {
		env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TMPDIR=/tmp"}
	}
	status := 0
	for _, t := range p.Tests {
		s := runTest(t, root, env, p.Deadline)
		fmt.Printf("\n%s\n", plan.ResultLine(p.Token, t.Package, s.status, s.seconds))
		if status == 0 {
			status = s.status
		}
	}
	return status
}

// limits lifts the memlock limit, which kernels before 5.11 charge BPF
// maps to, and the open files limit to its maximum.
func limits() {
	inf := &unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, inf); err != nil {
		logf("raising RLIMIT_MEMLOCK: %v", err)
	}
	var nofile unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile) == nil {
		nofile.Cur = nofile.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &nofile)
	}
}

func linkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

func loadModules(paths []string, root string) {
	if len(paths) == 0 {
		return
	}
	var loaded []string
	for _, path := range paths {
		name := strings.TrimSuffix(filepath.Base(path), ".ko")
		if err := loadModule(filepath.Join(root, path)); err != nil {
			logf("loading module %s: %v", name, err)
			continue
		}
		loaded = append(loaded, name)
	}
	logf("kernel modules loaded: %s", strings.Join(loaded, " "))
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	if errors.Is(err, unix.ENOSYS) {
		data, rerr := io.ReadAll(f)
		if rerr != nil {
			return rerr
		}
		err = unix.InitModule(data, "")
	}
	return err
}

type outcome struct {
	status  int
	seconds float64
}

func runTest(t plan.Test, root string, env []string, deadline float64) outcome {
	args := []string{}
	if deadline > 0 {
		left := deadline - uptime()
		if left < 1 {
			logf("%s: not run, the time given to the tests is over", t.Package)
			return outcome{status: 1}
		}
		args = append(args, "-test.timeout="+strconv.FormatFloat(left, 'f', 0, 64)+"s")
	}
	args = append(args, t.Args...)
	cmd := exec.Command(filepath.Join(root, t.Binary), args...)
	cmd.Dir = filepath.Join(root, t.Dir)
	cmd.Env = env
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stdout
	start := time.Now()
	err := cmd.Run()
	o := outcome{seconds: time.Since(start).Seconds()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		o.status = exit.ExitCode()
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			logf("%s: killed by %v", t.Package, ws.Signal())
			o.status = 128 + int(ws.Signal())
		}
	default:
		logf("%s: %v", t.Package, err)
		o.status = 1
	}
	return o
}

func uptime() float64 {
	data, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(data) + " 0")[0], 64)
	return f
}

// finish prints the end marker and powers off, or exits when not PID 1.
func finish(pid1 bool, token string, status int) {
	if token != "" {
		fmt.Printf("\n%s\n", plan.EndLine(token, status))
	}
	// Let the serial port send the marker before the machine goes.
	_ = unix.IoctlSetInt(1, unix.TCSBRK, 1)
	unix.Sync()
	if !pid1 {
		os.Exit(status)
	}
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	logf("powering off: %v", err)
	// qemu runs with -no-reboot: a restart ends it too.
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	for {
		time.Sleep(time.Hour)
	}
}
