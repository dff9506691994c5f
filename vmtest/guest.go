package main

import (
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/mlbpf/mlbpf/vmtest/internal/initramfs"
	"github.com/mlbpf/mlbpf/vmtest/internal/kernel"
	"github.com/mlbpf/mlbpf/vmtest/internal/plan"
)

// guestFile is one entry of the guest's root file system.
type guestFile struct {
	Path   string      // absolute, in the guest
	Mode   fs.FileMode // type bits (fs.ModeDir, fs.ModeSymlink, fs.ModeCharDevice) and permissions
	Src    string      // host file holding a regular file's contents
	Data   []byte      // a regular file's contents when Src is empty
	Link   string      // a symlink's target
	Major  uint32      // a device node's number
	Minor  uint32
	Binary bool // an executable the init runs
}

// guestTree is the guest's root file system, built on the host.
type guestTree struct {
	files []guestFile
	seen  map[string]bool
}

func (t *guestTree) add(f guestFile) {
	if t.seen == nil {
		t.seen = map[string]bool{}
	}
	if t.seen[f.Path] {
		return
	}
	t.seen[f.Path] = true
	t.files = append(t.files, f)
}

// addHostDir copies the host directory src to dst in the guest.
func (t *guestTree) addHostDir(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		gp := path.Join(dst, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			t.add(guestFile{Path: gp, Mode: fs.ModeDir | info.Mode().Perm()})
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			t.add(guestFile{Path: gp, Mode: fs.ModeSymlink | 0o777, Link: target})
		case d.Type().IsRegular():
			t.add(guestFile{Path: gp, Mode: info.Mode().Perm(), Src: p})
		}
		return nil
	})
}

// busyboxApplets are the busybox commands a guest gets: a shell and
// what shell scripts and tests commonly run. Network tools (ip, tc, ping)
// are left out, so that a test looking for iproute2 skips rather than
// trips over busybox's smaller versions.
var busyboxApplets = []string{
	"sh", "ash", "awk", "basename", "cat", "chmod", "cp", "cut", "date", "dd",
	"dirname", "dmesg", "echo", "env", "expr", "false", "find", "grep", "head",
	"id", "kill", "ln", "ls", "mkdir", "mktemp", "mount", "mv", "nproc",
	"printf", "ps", "pwd", "readlink", "rm", "rmdir", "sed", "seq", "sleep",
	"sort", "stat", "sync", "sysctl", "tail", "tee", "test", "[", "timeout",
	"touch", "tr", "true", "umount", "uname", "uniq", "uptime", "wc", "xargs", "yes",
}

// findBusybox returns the busybox to pack: path itself, or for "auto"
// the one in PATH if it is statically linked (busybox-static), or "".
func findBusybox(path string) (string, error) {
	switch path {
	case "":
		return "", nil
	case "auto":
		p, err := exec.LookPath("busybox")
		if err != nil || !isStatic(p) {
			return "", nil
		}
		return p, nil
	}
	if !isStatic(path) {
		return "", fmt.Errorf("-busybox %s: not a statically linked x86-64 executable (Debian: apt install busybox-static)", path)
	}
	return path, nil
}

// isStatic reports whether path is an x86-64 executable without a
// dynamic loader.
func isStatic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return false
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// layout describes what goes into a guest.
type layout struct {
	Init     string // the guest init binary
	Busybox  string // static busybox, or empty
	Packages []testPackage
	Modules  []kernel.Module
	TestArgs []string // for every test binary
	Token    string
	Deadline float64 // plan.Plan.Deadline
}

// guestDir returns where a package's directory goes in the guest: its
// path in its module under /src, so that a test reading ../testdata
// finds it as it would on the host.
func guestDir(p testPackage) string {
	if p.ModuleDir != "" {
		if rel, err := filepath.Rel(p.ModuleDir, p.Dir); err == nil && !strings.HasPrefix(rel, "..") {
			return path.Join("/src", filepath.ToSlash(rel))
		}
	}
	return path.Join("/src/_", p.ImportPath)
}

// build returns the guest's files and the plan the init follows.
func (l *layout) build() (*guestTree, *plan.Plan, error) {
	t := &guestTree{}
	p := &plan.Plan{
		Token:    l.Token,
		Deadline: l.Deadline,
		Env:      []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TMPDIR=/tmp", "VMTEST_GUEST=1"},
	}
	for _, d := range []string{"/dev", "/proc", "/sys", "/run", "/root", "/vmtest"} {
		t.add(guestFile{Path: d, Mode: fs.ModeDir | 0o755})
	}
	t.add(guestFile{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777})
	t.add(guestFile{Path: "/dev/console", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Major: 5, Minor: 1})
	t.add(guestFile{Path: "/init", Mode: 0o755, Src: l.Init, Binary: true})
	// The kernel runs /sbin/modprobe for a module it lacks; the init
	// then reports the request (see guestinit).
	t.add(guestFile{Path: "/sbin/modprobe", Mode: fs.ModeSymlink | 0o777, Link: "/init"})
	if l.Busybox != "" {
		t.add(guestFile{Path: "/bin/busybox", Mode: 0o755, Src: l.Busybox, Binary: true})
		for _, a := range busyboxApplets {
			t.add(guestFile{Path: "/bin/" + a, Mode: fs.ModeSymlink | 0o777, Link: "busybox"})
		}
	}

	for _, m := range l.Modules {
		gp := "/vmtest/modules/" + m.Name + ".ko"
		t.add(guestFile{Path: gp, Mode: 0o644, Data: m.Data})
		p.Modules = append(p.Modules, gp)
	}

	for _, pkg := range l.Packages {
		dir := guestDir(pkg)
		// The package's testdata, and that of its parents up to the
		// module root (tests read ../testdata too).
		host, guest := pkg.Dir, dir
		for {
			td := filepath.Join(host, "testdata")
			if st, err := os.Stat(td); err == nil && st.IsDir() {
				if err := t.addHostDir(td, path.Join(guest, "testdata")); err != nil {
					return nil, nil, fmt.Errorf("packing %s: %w", td, err)
				}
			}
			if pkg.ModuleDir == "" || filepath.Clean(host) == filepath.Clean(pkg.ModuleDir) || !strings.HasPrefix(guest, "/src/") {
				break
			}
			host, guest = filepath.Dir(host), path.Dir(guest)
		}
		bin := path.Join(dir, path.Base(pkg.ImportPath)+".test")
		t.add(guestFile{Path: bin, Mode: 0o755, Src: pkg.Binary, Binary: true})
		p.Tests = append(p.Tests, plan.Test{
			Package: pkg.ImportPath,
			Dir:     dir,
			Binary:  bin,
			Args:    l.TestArgs,
		})
	}

	data, err := p.Marshal()
	if err != nil {
		return nil, nil, err
	}
	t.add(guestFile{Path: plan.Path, Mode: 0o644, Data: data})
	return t, p, nil
}

// writeInitramfs writes the tree as a newc archive.
func (t *guestTree) writeInitramfs(w io.Writer) error {
	cw := initramfs.NewWriter(w)
	for _, f := range t.files {
		var err error
		switch {
		case f.Mode.IsDir():
			err = cw.Dir(f.Path, f.Mode)
		case f.Mode&fs.ModeSymlink != 0:
			err = cw.Symlink(f.Path, f.Link)
		case f.Mode&fs.ModeCharDevice != 0:
			err = cw.CharDev(f.Path, f.Mode, f.Major, f.Minor)
		case f.Src != "":
			err = addHostFile(cw, f)
		default:
			err = cw.Bytes(f.Path, f.Mode, f.Data)
		}
		if err != nil {
			return fmt.Errorf("writing initramfs: %w", err)
		}
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("writing initramfs: %w", err)
	}
	return nil
}

func addHostFile(cw *initramfs.Writer, f guestFile) error {
	in, err := os.Open(f.Src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	return cw.File(f.Path, f.Mode, st.Size(), in)
}

// writeDir writes the tree under root on the host, for a guest that sees
// the host's file systems (virtme-ng). Device nodes are left out: such a
// guest has its own /dev.
func (t *guestTree) writeDir(root string) error {
	for _, f := range t.files {
		dst := filepath.Join(root, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		var err error
		switch {
		case f.Mode.IsDir():
			err = os.MkdirAll(dst, f.Mode.Perm())
		case f.Mode&fs.ModeSymlink != 0:
			err = os.Symlink(f.Link, dst)
		case f.Mode&fs.ModeCharDevice != 0:
			continue
		case f.Src != "":
			err = copyFile(f.Src, dst, f.Mode.Perm())
		default:
			err = os.WriteFile(dst, f.Data, f.Mode.Perm())
		}
		if err != nil {
			return fmt.Errorf("writing the guest tree: %w", err)
		}
	}
	return nil
}

func copyFile(src, dst string, perm fs.FileMode) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
