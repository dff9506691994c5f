package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mlbpf/mlbpf/vmtest/internal/kernel"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(errExit)):
		os.Exit(exitCode(err))
	default:
		fmt.Fprintln(os.Stderr, "vmtest:", err)
		os.Exit(1)
	}
}

// guestScript runs in the guest: mounts, modules, then the test binaries.
//
//go:embed guest.sh
var guestScript []byte

// defaultModules are loaded before the tests: what mlbpf's tests use
// (veth pairs, loop devices and the storage testbed's FUSE disk, tc clsact with cls_bpf, tbf and fq, bbr), and the netlink
// families netlink libraries open up front or socket diagnostics use.
// The guest's modprobe loads any other module the kernel asks for.
const defaultModules = "veth,loop,fuse,sch_ingress,cls_bpf,act_bpf,act_gact,act_mirred,sch_tbf,sch_fq,tcp_bbr,xfrm_user,nfnetlink,inet_diag,tcp_diag,udp_diag"

const usage = `usage: go run ./vmtest [flags] [-- test binary flags]

Builds the tests of the given packages on the host, boots a kernel with
virtme-ng (vng) on a snapshot of the host's file systems and runs them
there as root, with bpffs, tracefs and cgroup2 mounted. Prints their
output as it comes and exits with their status.

Examples:

	go run ./vmtest -kernel 6.1
	go run ./vmtest -kernel 6.12 -pkgs ./loader,./ringbuf -run TestPin
	go run ./vmtest -kernel ~/linux              # a kernel tree built with vng --build
	go run ./vmtest -kernel linux-image-6.1.0-57-amd64_6.1.192-3_amd64.deb
	go run ./vmtest -kernel 6.1 -- -test.count=2

Flags:
`

type options struct {
	kernel, kmods, pkgs, run, tags, accel, cache string
	timeout                                      time.Duration
	cpus, memory                                 int
	keep, verbose                                bool
	testArgs                                     []string
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("vmtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.kernel, "kernel", "6.1", "kernel to boot: 6.1 or 6.12 (Debian's, fetched into the cache), a Debian linux-image-… package, a .deb file or URL, or what vng --run takes (a bzImage, a kernel tree)")
	fs.StringVar(&o.kmods, "kmods", defaultModules, "comma-separated kernel modules to load in the guest before the tests; empty for none")
	fs.StringVar(&o.pkgs, "pkgs", "./...", "comma-separated package patterns whose tests to run")
	fs.StringVar(&o.run, "run", "", "run only the tests matching this regular expression (go test -run)")
	fs.StringVar(&o.tags, "tags", "", "comma-separated build tags for the test binaries")
	fs.DurationVar(&o.timeout, "timeout", 20*time.Minute, "limit for the machine (boot and tests, not the build): a machine still running then is killed and the run fails")
	fs.StringVar(&o.accel, "accel", "auto", "kvm, tcg (qemu's emulator, vng --disable-kvm), or auto (kvm when it boots the kernel here, else tcg)")
	fs.IntVar(&o.cpus, "cpus", 2, "virtual CPUs")
	fs.IntVar(&o.memory, "memory", 2048, "guest memory in MiB")
	fs.StringVar(&o.cache, "cache", "", "directory for downloaded kernels (default $MLBPF_VMTEST_CACHE, else the user cache directory's mlbpf-vmtest)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (test binaries, plan, guest script) and print where it is")
	fs.BoolVar(&o.verbose, "v", false, "show the kernel's console and vng's command line as they come")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, errExit{2} // the flag package has said what is wrong
	}
	o.testArgs = fs.Args()
	switch o.accel {
	case "auto", "kvm", "tcg":
	default:
		return nil, fmt.Errorf("-accel %q: want kvm, tcg or auto", o.accel)
	}
	if o.cache == "" {
		o.cache = defaultCacheDir()
	}
	return o, nil
}

func defaultCacheDir() string {
	if d := os.Getenv("MLBPF_VMTEST_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "mlbpf-vmtest")
	}
	return "/var/cache/mlbpf-vmtest"
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, "vmtest: "+format+"\n", args...) }
	started := time.Now()
	version, err := exec.CommandContext(ctx, "vng", "--version").Output()
	if err != nil {
		return fmt.Errorf("running vng --version: %w: install virtme-ng (make setup does, on Debian and Ubuntu)", err)
	}

	k, err := kernel.Resolve(ctx, o.kernel, o.cache, stderr)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "mlbpf-vmtest-")
	if err != nil {
		return fmt.Errorf("creating the work directory: %w", err)
	}
	if o.keep {
		logf("work directory: %s", work)
	} else {
		defer os.RemoveAll(work)
	}

	tags := splitList(o.tags)
	pkgs, err := listTestPackages(ctx, splitList(o.pkgs), tags)
	if err != nil {
		return err
	}
	if len(pkgs) == 0 {
		return fmt.Errorf("no packages with tests match -pkgs %s", o.pkgs)
	}
	if err := buildTests(ctx, pkgs, work, tags); err != nil {
		return err
	}
	testArgs := o.testArgs
	if o.run != "" {
		testArgs = append([]string{"-test.run", o.run}, testArgs...)
	}
	script, err := writeGuest(work, pkgs, testDeadline(o.timeout), o.kmods, testArgs)
	if err == nil {
		err = copyKconfig(k, work)
	}
	if err != nil {
		return err
	}
	built := time.Now()

	kvm := o.accel == "kvm"
	if o.accel == "auto" {
		var why string
		if kvm, why = kvmUsable(ctx, k.Image, 5*time.Second); !kvm {
			logf("KVM not usable (%s): using TCG, vng --disable-kvm", why)
		}
	}
	cmd := exec.Command("vng", vngArgs(k.Image, work, pkgs, o, kvm, script)...)
	accel := map[bool]string{true: "KVM", false: "TCG"}[kvm]
	logf("%s; %d test packages, kernel %s (%s), %s, built in %.1fs",
		strings.TrimSpace(string(version)), len(pkgs), k.Release, k.Source, accel, built.Sub(started).Seconds())
	if o.verbose {
		logf("%s", strings.Join(cmd.Args, " "))
	}

	con := &console{}
	var conOut io.Writer = con
	if o.verbose {
		conOut = io.MultiWriter(con, stderr)
	}
	bootStart := time.Now()
	status, reason := boot(ctx, cmd, stdout, conOut, o.timeout)
	logf("machine ran %.1fs", time.Since(bootStart).Seconds())
	if reason == "" && status == 0 && con.incident() != nil {
		reason, status = "the kernel reported a BUG or oops during the run", 1
	}
	if reason != "" {
		logf("FAIL: %s; from the kernel's console:", reason)
		lines := con.incident()
		if lines == nil {
			lines = con.tail()
		}
		for _, l := range lines {
			fmt.Fprintf(stderr, "\t%s\n", l)
		}
	}
	if status == 0 {
		fmt.Fprintf(stdout, "PASS (kernel %s under virtme-ng)\n", k.Release)
		return nil
	}
	fmt.Fprintf(stdout, "FAIL (kernel %s under virtme-ng)\n", k.Release)
	return errExit{status}
}

// copyKconfig puts the kernel's build configuration, when its package has
// one beside the image (Debian's boot/config-<release>), into work as
// "kconfig": the guest shares the host's /boot, which has the host
// kernel's, and BPF objects that read CONFIG_* values (__kconfig) need
// the guest kernel's.
func copyKconfig(k *kernel.Kernel, work string) error {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(k.Image), "config-"+k.Release))
	if errors.Is(err, os.ErrNotExist) {
		return nil // a bzImage or tree of one's own: its /proc/config.gz, if any
	}
	if err != nil {
		return fmt.Errorf("reading the kernel's configuration: %w", err)
	}
	return os.WriteFile(filepath.Join(work, "kconfig"), b, 0o644)
}

// writeGuest writes the guest script and its plan into work and returns
// the command vng runs in the guest.
func writeGuest(work string, pkgs []testPackage, deadline time.Duration, kmods string, testArgs []string) (string, error) {
	var plan strings.Builder
	for _, p := range pkgs {
		fmt.Fprintf(&plan, "%s\t%s\t%s\n", p.ImportPath, p.Dir, p.Binary)
	}
	script, planFile := filepath.Join(work, "guest.sh"), filepath.Join(work, "plan")
	if err := os.WriteFile(script, guestScript, 0o755); err != nil {
		return "", fmt.Errorf("writing the guest script: %w", err)
	}
	if err := os.WriteFile(planFile, []byte(plan.String()), 0o644); err != nil {
		return "", fmt.Errorf("writing the guest plan: %w", err)
	}
	words := append([]string{script, planFile, strconv.Itoa(int(deadline.Seconds())), kmods}, testArgs...)
	for i, w := range words {
		words[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	return strings.Join(words, " "), nil
}

// testDeadline is the guest uptime by which the tests must have finished:
// the timeout less a margin for the guest to report before the harness
// kills the machine.
func testDeadline(timeout time.Duration) time.Duration {
	margin := min(max(timeout/20, 10*time.Second), time.Minute)
	if margin >= timeout/2 {
		return timeout / 2
	}
	return timeout - margin
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
