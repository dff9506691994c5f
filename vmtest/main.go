package main

import (
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mlbpf/mlbpf/vmtest/internal/console"
	"github.com/mlbpf/mlbpf/vmtest/internal/kernel"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.As(err, new(errExit)):
		os.Exit(exitCode(err))
	default:
		fmt.Fprintln(os.Stderr, "vmtest:", err)
		os.Exit(exitCode(err))
	}
}

// defaultModules are loaded in every guest whose kernel has them: what
// mlbpf's tests use (veth pairs, tc clsact with cls_bpf, tbf and fq,
// bbr), and the netlink families that netlink libraries open up front
// (xfrm, netfilter) or that socket diagnostics use (inet_diag). There is
// no modprobe in the guest to load them on demand.
const defaultModules = "veth,sch_ingress,cls_bpf,act_bpf,act_gact,act_mirred,sch_tbf,sch_fq,tcp_bbr,xfrm_user,nfnetlink,inet_diag,tcp_diag,udp_diag"

const usage = `usage: go run ./vmtest [flags] [-- test binary flags]

Builds the tests of the given packages, boots a kernel with them in qemu
and runs them there as root, with bpffs, tracefs, debugfs and cgroup2
mounted. Prints their output as it comes and exits with their status.

Examples:

	go run ./vmtest -kernel 6.1
	go run ./vmtest -kernel 6.12 -pkgs ./loader,./ringbuf -run TestPin
	go run ./vmtest -kernel ~/linux/arch/x86/boot/bzImage -modules ~/linux-mods/lib/modules/6.19.0
	go run ./vmtest -kernel 6.1 -- -test.count=2

Flags:
`

type options struct {
	kernel   string
	modules  string
	kmods    string
	pkgs     string
	busybox  string
	run      string
	tags     string
	timeout  time.Duration
	accel    string
	machine  string
	tcg      string
	vng      bool
	cpus     int
	memory   int
	qemu     string
	cache    string
	append   string
	gzip     bool
	keep     bool
	verbose  bool
	testArgs []string
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("vmtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.kernel, "kernel", "6.1", "kernel to boot: 6.1 or 6.12 (Debian's, fetched into the cache), a Debian linux-image-… package, or the path of a bzImage")
	fs.StringVar(&o.modules, "modules", "", "kernel modules directory (lib/modules/<release>) for a -kernel given as a path")
	fs.StringVar(&o.kmods, "kmods", defaultModules, "comma-separated kernel modules to load in the guest, with their dependencies; empty for none")
	fs.StringVar(&o.pkgs, "pkgs", "./...", "comma-separated package patterns whose tests to run")
	fs.StringVar(&o.busybox, "busybox", "auto", "static busybox to give the guest a shell and basic commands (sh, sleep, cat, …); auto: busybox from PATH if static; empty for none")
	fs.StringVar(&o.run, "run", "", "run only the tests matching this regular expression (go test -run)")
	fs.StringVar(&o.tags, "tags", "", "comma-separated build tags for the test binaries")
	fs.DurationVar(&o.timeout, "timeout", 20*time.Minute, "limit for the machine (boot and tests, not the build): a machine still running then is killed and the run fails")
	fs.StringVar(&o.accel, "accel", "auto", "qemu accelerator: kvm, tcg, or auto (kvm when it works here, else tcg)")
	fs.StringVar(&o.tcg, "tcg-threads", "single", "TCG threading: single (virtual CPUs take turns on one host thread) or multi (one host thread each: faster, but 6.12 sometimes oopses patching its own code)")
	fs.StringVar(&o.machine, "machine", "pc", "qemu machine type: pc or q35 (microvm boots faster but can hang calibrating the TSC under TCG)")
	fs.BoolVar(&o.vng, "vng", false, "boot with virtme-ng (vng) on the host's file systems instead of plain qemu with an initramfs")
	fs.IntVar(&o.cpus, "cpus", 2, "virtual CPUs")
	fs.IntVar(&o.memory, "memory", 1024, "guest memory in MiB")
	fs.StringVar(&o.qemu, "qemu", "qemu-system-x86_64", "qemu binary")
	fs.StringVar(&o.cache, "cache", "", "directory for downloaded kernels (default $MLBPF_VMTEST_CACHE, else the user cache directory's mlbpf-vmtest)")
	fs.StringVar(&o.append, "append", "", "more kernel command line arguments")
	fs.BoolVar(&o.gzip, "gzip", false, "compress the initramfs (smaller, but slower to unpack under TCG)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (test binaries, initramfs) and print where it is")
	fs.BoolVar(&o.verbose, "v", false, "show the kernel's boot messages, qemu's command line and its standard error")
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
	switch o.tcg {
	case "single", "multi":
	default:
		return nil, fmt.Errorf("-tcg-threads %q: want single or multi", o.tcg)
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

	k, err := kernel.Resolve(ctx, o.kernel, o.cache, o.modules, stderr)
	if err != nil {
		return err
	}

	work, err := os.MkdirTemp("", "mlbpf-vmtest-")
	if err != nil {
		return err
	}
	if o.keep {
		logf("work directory: %s", work)
	} else {
		defer os.RemoveAll(work)
	}

	pkgs, err := listTestPackages(ctx, splitList(o.pkgs), splitList(o.tags))
	if err != nil {
		return err
	}
	if len(pkgs) == 0 {
		return fmt.Errorf("no packages with tests match -pkgs %s", o.pkgs)
	}
	if err := buildTests(ctx, pkgs, work, splitList(o.tags)); err != nil {
		return err
	}
	initBin, err := buildInit(ctx, work)
	if err != nil {
		return err
	}
	mods, err := resolveModules(k, splitList(o.kmods), logf)
	if err != nil {
		return err
	}
	bb, err := findBusybox(o.busybox)
	if err != nil {
		return err
	}
	if bb == "" && o.busybox == "auto" {
		logf("no static busybox found (apt install busybox-static): the guest has no shell")
	}

	token, err := newToken()
	if err != nil {
		return err
	}
	testArgs := []string{"-test.v", "-test.paniconexit0"}
	if o.run != "" {
		testArgs = append(testArgs, "-test.run", o.run)
	}
	testArgs = append(testArgs, o.testArgs...)
	l := &layout{
		Init:     initBin,
		Busybox:  bb,
		Packages: pkgs,
		Modules:  mods,
		TestArgs: testArgs,
		Token:    token,
		Deadline: testDeadline(o.timeout).Seconds(),
	}
	tree, _, err := l.build()
	if err != nil {
		return err
	}
	built := time.Now()

	accel := o.accel
	if accel == "auto" {
		accel = "tcg"
		if ok, why := kvmUsable(ctx, o.qemu, k.Image, 5*time.Second); ok {
			accel = "kvm"
		} else if o.verbose {
			logf("KVM not usable (%s), using TCG", why)
		}
	}

	var cmd *exec.Cmd
	cmdline := kernelCmdline(o.verbose, o.append)
	if o.vng {
		root := filepath.Join(work, "root")
		if err := tree.writeDir(root); err != nil {
			return err
		}
		cmd = exec.CommandContext(ctx, "vng", vngArgs(k.Image, root, o.cpus, o.memory, accel == "kvm", o.append)...)
	} else {
		initrd := filepath.Join(work, "initramfs.cpio")
		if o.gzip {
			initrd += ".gz"
		}
		if err := writeInitramfs(tree, initrd, o.gzip); err != nil {
			return err
		}
		m := &machine{QEMU: o.qemu, Machine: o.machine, Accel: accel, TCG: o.tcg, CPUs: o.cpus, Memory: o.memory, Kernel: k.Image, Initrd: initrd, Append: cmdline}
		cmd = exec.CommandContext(ctx, o.qemu, m.qemuArgs()...)
	}
	cmd.Stdin = nil
	cmd.Cancel = func() error { return nil } // boot kills the process group
	logf("%d test packages, kernel %s (%s), %s, built in %.1fs", len(pkgs), k.Source, kernelRelease(k), accel, built.Sub(started).Seconds())
	if o.verbose {
		logf("%s", strings.Join(cmd.Args, " "))
	}

	con := console.New(token, stdout)
	var qemuStderr io.Writer
	if o.verbose {
		qemuStderr = stderr
	}
	bootStart := time.Now()
	stop, qerr := boot(ctx, cmd, con, o.timeout, qemuStderr)
	v := con.Verdict(stop)
	elapsed := time.Since(bootStart)

	if at, up, ok := con.Started(); ok {
		logf("init started %.1fs after qemu (guest uptime %.1fs); tests ran %.1fs; machine ran %.1fs in all",
			at.Sub(bootStart).Seconds(), up, sumSeconds(con), elapsed.Seconds())
	} else {
		logf("machine ran %.1fs", elapsed.Seconds())
	}
	if v.Reason != "" {
		fmt.Fprintf(stderr, "vmtest: FAIL: %s\n", v.Reason)
		if len(v.Tail) == 0 {
			fmt.Fprintf(stderr, "vmtest: the console stayed silent (-v shows the kernel's boot messages)\n")
		} else {
			fmt.Fprintf(stderr, "vmtest: from the console:\n")
		}
		for _, l := range v.Tail {
			fmt.Fprintf(stderr, "\t%s\n", l)
		}
		if q := strings.TrimSpace(qerr); q != "" && !o.verbose {
			fmt.Fprintf(stderr, "vmtest: %s said:\n%s\n", filepath.Base(cmd.Path), q)
		}
	}
	if v.Passed() {
		fmt.Fprintf(stdout, "PASS (kernel %s)\n", kernelRelease(k))
		return nil
	}
	fmt.Fprintf(stdout, "FAIL (kernel %s)\n", kernelRelease(k))
	return errExit{v.Status}
}

// sumSeconds adds up how long the test binaries ran.
func sumSeconds(con *console.Console) float64 {
	var s float64
	for _, r := range con.Results() {
		s += r.Seconds
	}
	return s
}

func kernelRelease(k *kernel.Kernel) string {
	if k.Release != "" {
		return k.Release
	}
	return filepath.Base(k.Image)
}

// testDeadline is the guest uptime by which the tests must have finished:
// the timeout less a margin for the init to report before the harness
// kills the machine.
func testDeadline(timeout time.Duration) time.Duration {
	margin := min(max(timeout/20, 10*time.Second), time.Minute)
	if margin >= timeout/2 {
		return timeout / 2
	}
	return timeout - margin
}

func resolveModules(k *kernel.Kernel, names []string, logf func(string, ...any)) ([]kernel.Module, error) {
	if len(names) == 0 {
		return nil, nil
	}
	if k.ModulesDir == "" {
		logf("no modules directory for %s (pass -modules): loading no modules", k.Image)
		return nil, nil
	}
	tree, err := kernel.OpenModuleTree(k.ModulesDir)
	if err != nil {
		return nil, err
	}
	mods, missing, err := tree.Resolve(names)
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		logf("modules not found in %s, not loading them: %s", k.ModulesDir, strings.Join(missing, ", "))
	}
	return mods, nil
}

func writeInitramfs(t *guestTree, path string, compress bool) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	var w io.Writer = f
	var zw *gzip.Writer
	if compress {
		zw, _ = gzip.NewWriterLevel(f, gzip.BestSpeed)
		w = zw
	}
	err = t.writeInitramfs(w)
	if zw != nil {
		if cerr := zw.Close(); err == nil {
			err = cerr
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func newToken() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
