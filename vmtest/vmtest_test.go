package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-kernel", "6.12", "-run", "TestPin", "--", "-test.count=2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.kernel != "6.12" || o.run != "TestPin" || o.pkgs != "./..." || o.accel != "auto" {
		t.Errorf("options %+v", o)
	}
	if !slices.Equal(o.testArgs, []string{"-test.count=2"}) {
		t.Errorf("test args %q", o.testArgs)
	}
	if o, _ := parseFlags(nil, io.Discard); o.kernel != "6.1" || o.timeout != 20*time.Minute || o.memory != 2048 {
		t.Errorf("defaults %+v", o)
	}
	if _, err := parseFlags([]string{"-accel", "hvf"}, io.Discard); err == nil {
		t.Error("-accel hvf: no error")
	}
	if _, err := parseFlags([]string{"-no-such-flag"}, io.Discard); exitCode(err) != 2 {
		t.Errorf("an unknown flag: %v, want exit status 2", err)
	}
	var usage bytes.Buffer
	if _, err := parseFlags([]string{"-h"}, &usage); !errors.Is(err, flag.ErrHelp) || !strings.Contains(usage.String(), "go run ./vmtest -kernel 6.1") {
		t.Errorf("-h: %v, usage without an example:\n%s", err, usage.String())
	}
	if exitCode(fmt.Errorf("wrapped: %w", errExit{3})) != 3 || exitCode(errors.New("other")) != 1 {
		t.Error("exitCode does not unwrap errExit")
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

func TestVngArgs(t *testing.T) {
	o := &options{cpus: 2, memory: 2048}
	pkgs := []testPackage{{ModuleDir: "/src/m"}, {ModuleDir: "/src/m"}, {}}
	tcg := vngArgs("/k/vmlinuz", "/w", pkgs, o, false, "'/w/guest.sh'")
	want := "--run /k/vmlinuz --user root --cpus 2 --memory 2048M --force-9p --disable-microvm --verbose --append loglevel=4 --rwdir /w --overlay-rwdir /src/m --exec '/w/guest.sh' --disable-kvm --qemu-opts=-accel tcg,thread=single -cpu max"
	if got := strings.Join(tcg, " "); got != want {
		t.Errorf("TCG:\n got %s\nwant %s", got, want)
	}
	kvm := vngArgs("/k/vmlinuz", "/w", pkgs, o, true, "x")
	if slices.Contains(kvm, "--disable-kvm") || strings.Contains(strings.Join(kvm, " "), "qemu-opts") {
		t.Errorf("KVM: %q", kvm)
	}
}

func TestWriteGuest(t *testing.T) {
	work := t.TempDir()
	pkgs := []testPackage{{ImportPath: "example.com/a", Dir: "/src/a", Binary: work + "/000-a.test"}}
	cmd, err := writeGuest(work, pkgs, 95*time.Second, "veth", []string{"-test.run", "Test'X"})
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`'%[1]s/guest.sh' '%[1]s/plan' '95' 'veth' '-test.run' 'Test'\''X'`, work)
	if cmd != want {
		t.Errorf("command\n got %s\nwant %s", cmd, want)
	}
	plan, _ := os.ReadFile(filepath.Join(work, "plan"))
	if string(plan) != "example.com/a\t/src/a\t"+work+"/000-a.test\n" {
		t.Errorf("plan %q", plan)
	}
	if st, err := os.Stat(filepath.Join(work, "guest.sh")); err != nil || st.Mode()&0o111 == 0 {
		t.Errorf("guest.sh not executable: %v", err)
	}
}

func TestConsole(t *testing.T) {
	c := &console{}
	fmt.Fprint(c, "[    1.0] booting\r\n")
	for i := range 50 {
		fmt.Fprintf(c, "[    2.%d] line %d\n", i, i)
	}
	if tail := c.tail(); len(tail) != tailLines || tail[0] != "[    2.10] line 10" {
		t.Errorf("tail %q", tail)
	}
	if c.incident() != nil {
		t.Errorf("an incident in a quiet console: %q", c.incident())
	}
	fmt.Fprint(c, "[    3.0] BUG: kernel NULL pointer dereference, address: 0\n[    3.1] Oops: 0000 [#1] PREEMPT SMP\n")
	for i := range 50 {
		fmt.Fprintf(c, "[    4.%d] trace %d\n", i, i)
	}
	fmt.Fprint(c, "[    5.0] half a li")
	inc := c.incident()
	if len(inc) != tailLines || inc[0] != "[    2.45] line 45" || inc[troubleBefore] != "[    3.0] BUG: kernel NULL pointer dereference, address: 0" {
		t.Errorf("incident %q", inc)
	}
	if tail := c.tail(); tail[len(tail)-1] != "[    5.0] half a li" {
		t.Errorf("tail lacks the partial line: %q", tail)
	}
	c = &console{}
	fmt.Fprint(c, "[   21.4] Kernel panic - not syncing: sysrq triggered crash\n")
	if inc := c.incident(); len(inc) != 1 {
		t.Errorf("a panic: incident %q", inc)
	}
}
