package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/vmtest/internal/initramfs"
	"github.com/mlbpf/mlbpf/vmtest/internal/kernel"
	"github.com/mlbpf/mlbpf/vmtest/internal/plan"
)

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-kernel", "6.12", "-run", "TestPin", "--", "-test.count=2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.kernel != "6.12" || o.run != "TestPin" || o.pkgs != "./..." || o.accel != "auto" || o.machine != "pc" || o.tcg != "single" {
		t.Errorf("options %+v", o)
	}
	if !slices.Equal(o.testArgs, []string{"-test.count=2"}) {
		t.Errorf("test args %q", o.testArgs)
	}
	if o, _ := parseFlags(nil, io.Discard); o.kernel != "6.1" || o.timeout != 20*time.Minute || o.memory != 1024 {
		t.Errorf("defaults %+v", o)
	}
	if _, err := parseFlags([]string{"-accel", "hvf"}, io.Discard); err == nil {
		t.Error("-accel hvf: no error")
	}
	if _, err := parseFlags([]string{"-tcg-threads", "many"}, io.Discard); err == nil {
		t.Error("-tcg-threads many: no error")
	}
	if _, err := parseFlags([]string{"-no-such-flag"}, io.Discard); exitCode(err) != 2 {
		t.Errorf("an unknown flag: %v, want exit status 2", err)
	}
	var usage bytes.Buffer
	if _, err := parseFlags([]string{"-h"}, &usage); !errors.Is(err, flag.ErrHelp) || !strings.Contains(usage.String(), "go run ./vmtest -kernel 6.1") {
		t.Errorf("-h: %v, usage without an example:\n%s", err, usage.String())
	}
}

func TestTestDeadline(t *testing.T) {
	for timeout, want := range map[time.Duration]time.Duration{
		20 * time.Minute: 19 * time.Minute,
		5 * time.Minute:  5*time.Minute - 15*time.Second,
		60 * time.Second: 50 * time.Second,
		10 * time.Second: 5 * time.Second,
	} {
		if got := testDeadline(timeout); got != want {
			t.Errorf("testDeadline(%v) = %v, want %v", timeout, got, want)
		}
	}
}

func TestQEMUArgs(t *testing.T) {
	m := &machine{QEMU: "qemu-system-x86_64", Machine: "pc", Accel: "tcg", TCG: "single", CPUs: 2, Memory: 1024, Kernel: "/k/vmlinuz", Initrd: "/w/initramfs.cpio", Append: kernelCmdline(false, "foo=bar")}
	args := strings.Join(m.qemuArgs(), " ")
	for _, want := range []string{
		"-nographic", "-no-reboot", "-nodefaults", "-accel tcg,thread=single -cpu max", "-smp 2", "-m 1024M",
		"-kernel /k/vmlinuz", "-initrd /w/initramfs.cpio", "-serial stdio",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("qemu args lack %q: %s", want, args)
		}
	}
	if !strings.Contains(m.Append, "console=ttyS0") || !strings.Contains(m.Append, "panic=-1") || !strings.Contains(m.Append, "quiet") || !strings.HasSuffix(m.Append, " foo=bar") {
		t.Errorf("kernel command line %q", m.Append)
	}
	if strings.Contains(kernelCmdline(true, ""), "quiet") {
		t.Error("verbose command line is quiet")
	}
	m.Accel, m.Initrd = "kvm", ""
	args = strings.Join(m.qemuArgs(), " ")
	if !strings.Contains(args, "-accel kvm -cpu host") || strings.Contains(args, "-initrd") {
		t.Errorf("kvm without initrd: %s", args)
	}
}

func TestVngArgs(t *testing.T) {
	args := strings.Join(vngArgs("/k/bzImage", "/w/root", 2, 1024, false, ""), " ")
	for _, want := range []string{"--run /k/bzImage", "--user root", "--rwdir /w/root", "--disable-kvm", "--exec /w/root/init -root /w/root"} {
		if !strings.Contains(args, want) {
			t.Errorf("vng args lack %q: %s", want, args)
		}
	}
}

func TestFindBusybox(t *testing.T) {
	if p, err := findBusybox(""); p != "" || err != nil {
		t.Errorf(`findBusybox("") = %q, %v`, p, err)
	}
	if _, err := findBusybox("vmtest_test.go"); err == nil {
		t.Error("a text file taken for busybox")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary is static only when built with CGO_ENABLED=0.
	t.Logf("test binary static: %v", isStatic(self))
	if p, err := findBusybox("auto"); err != nil || (p != "" && !isStatic(p)) {
		t.Errorf("findBusybox(auto) = %q, %v", p, err)
	}
}

func TestExitCode(t *testing.T) {
	if c := exitCode(fmt.Errorf("wrapped: %w", errExit{3})); c != 3 {
		t.Errorf("exitCode = %d, want 3", c)
	}
	if c := exitCode(errors.New("other")); c != 1 {
		t.Errorf("exitCode = %d, want 1", c)
	}
}

// fakeModule builds the host side of a package for the layout tests.
func fakeModule(t *testing.T) (mod string, pkg testPackage) {
	t.Helper()
	mod = t.TempDir()
	for path, data := range map[string]string{
		"testdata/top.json":         "{}",
		"pkg/a/testdata/x.txt":      "x",
		"pkg/a/testdata/sub/y.txt":  "y",
		"pkg/a/a_test.go":           "package a",
		"pkg/other/testdata/no.txt": "not packed",
		"bin/a.test":                "\x7fELF test binary",
	} {
		p := filepath.Join(mod, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return mod, testPackage{
		ImportPath: "example.com/m/pkg/a",
		Dir:        filepath.Join(mod, "pkg/a"),
		ModuleDir:  mod,
		Binary:     filepath.Join(mod, "bin/a.test"),
	}
}

func TestInitramfsContents(t *testing.T) {
	mod, pkg := fakeModule(t)
	initBin := filepath.Join(mod, "bin/init")
	if err := os.WriteFile(initBin, []byte("\x7fELF init"), 0o755); err != nil {
		t.Fatal(err)
	}
	l := &layout{
		Init:     initBin,
		Busybox:  initBin,
		Packages: []testPackage{pkg, {ImportPath: "example.com/elsewhere", Dir: t.TempDir(), Binary: pkg.Binary}},
		Modules:  []kernel.Module{{Name: "veth", Data: []byte("\x7fELF veth")}},
		TestArgs: []string{"-test.v", "-test.run", "TestX"},
		Token:    "feedfacefeedface",
		Deadline: 570,
	}
	tree, p, err := l.build()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tree.writeInitramfs(&buf); err != nil {
		t.Fatal(err)
	}

	type file struct {
		mode uint32
		data string
	}
	got := map[string]file{}
	links := map[string]string{}
	r := initramfs.NewReader(&buf)
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		if h.Type() == initramfs.TypeSymlink {
			links["/"+h.Name] = h.Linkname
		}
		if h.Type() == initramfs.TypeCharDev {
			data = fmt.Appendf(nil, "%d:%d", h.RdevMajor, h.RdevMinor)
		}
		got["/"+h.Name] = file{h.Mode, string(data)}
	}

	want := map[string]file{
		"/init":                         {initramfs.TypeRegular | 0o755, "\x7fELF init"},
		"/dev/console":                  {initramfs.TypeCharDev | 0o600, "5:1"},
		"/tmp":                          {initramfs.TypeDir | 0o1777, ""},
		"/proc":                         {initramfs.TypeDir | 0o755, ""},
		"/sys":                          {initramfs.TypeDir | 0o755, ""},
		"/vmtest/modules/veth.ko":       {initramfs.TypeRegular | 0o644, "\x7fELF veth"},
		"/src/pkg/a/a.test":             {initramfs.TypeRegular | 0o755, "\x7fELF test binary"},
		"/src/pkg/a/testdata/x.txt":     {initramfs.TypeRegular | 0o644, "x"},
		"/src/pkg/a/testdata/sub/y.txt": {initramfs.TypeRegular | 0o644, "y"},
		"/src/testdata/top.json":        {initramfs.TypeRegular | 0o644, "{}"},
		"/src/_/example.com/elsewhere/elsewhere.test": {initramfs.TypeRegular | 0o755, "\x7fELF test binary"},
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s is not in the initramfs", name)
			continue
		}
		if g != w {
			t.Errorf("%s: mode %o data %q, want mode %o data %q", name, g.mode, g.data, w.mode, w.data)
		}
	}
	if l := links["/sbin/modprobe"]; l != "/init" {
		t.Errorf("/sbin/modprobe links to %q, want /init", l)
	}
	if l := links["/bin/sh"]; l != "busybox" {
		t.Errorf("/bin/sh links to %q, want busybox", l)
	}
	for _, name := range []string{"/src/pkg/other/testdata/no.txt", "/src/pkg/a/a_test.go", "/bin/ip", "/bin/tc"} {
		if _, ok := got[name]; ok {
			t.Errorf("%s is in the initramfs", name)
		}
	}

	pf, ok := got[plan.Path]
	if !ok {
		t.Fatalf("%s is not in the initramfs", plan.Path)
	}
	var gp plan.Plan
	if err := json.Unmarshal([]byte(pf.data), &gp); err != nil {
		t.Fatal(err)
	}
	if gp.Token != l.Token || gp.Deadline != 570 || !slices.Equal(gp.Modules, []string{"/vmtest/modules/veth.ko"}) {
		t.Errorf("plan %+v", gp)
	}
	if len(gp.Tests) != 2 {
		t.Fatalf("plan has %d tests, want 2", len(gp.Tests))
	}
	if tt := gp.Tests[0]; tt.Package != pkg.ImportPath || tt.Dir != "/src/pkg/a" || tt.Binary != "/src/pkg/a/a.test" || !slices.Equal(tt.Args, l.TestArgs) {
		t.Errorf("plan test %+v", tt)
	}
	if !slices.Contains(gp.Env, "HOME=/root") {
		t.Errorf("plan env %q", gp.Env)
	}
	if p.Token != l.Token {
		t.Errorf("returned plan %+v", p)
	}
}

func TestWriteDir(t *testing.T) {
	_, pkg := fakeModule(t)
	l := &layout{Init: pkg.Binary, Packages: []testPackage{pkg}, Token: "t"}
	tree, _, err := l.build()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), "root")
	if err := tree.writeDir(root); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"init", "src/pkg/a/a.test", "src/pkg/a/testdata/sub/y.txt", "src/testdata/top.json", "vmtest/plan.json"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "dev/console")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dev/console written to the host: %v", err)
	}
}
