package kernel

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/mlbpf/mlbpf/internal/testutil"
)

// fakeModule returns a minimal ELF object with a .modinfo section.
func fakeModule(t *testing.T, modinfo ...string) []byte {
	t.Helper()
	info := []byte(strings.Join(modinfo, "\x00") + "\x00")
	shstrtab := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	infoOff := uint64(ehsize)
	strOff := infoOff + uint64(len(info))
	shOff := (strOff + uint64(len(shstrtab)) + 7) &^ 7

	var buf bytes.Buffer
	var ident [elf.EI_NIDENT]byte
	copy(ident[:], elf.ELFMAG)
	ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	hdr := elf.Header64{
		Ident: ident, Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_X86_64),
		Version: uint32(elf.EV_CURRENT), Shoff: shOff, Ehsize: ehsize,
		Shentsize: shentsize, Shnum: 3, Shstrndx: 2,
	}
	sections := []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC), Off: infoOff, Size: uint64(len(info)), Addralign: 1},
		{Name: 10, Type: uint32(elf.SHT_STRTAB), Off: strOff, Size: uint64(len(shstrtab)), Addralign: 1},
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(binary.Write(&buf, binary.LittleEndian, hdr))
	buf.Write(info)
	buf.Write(shstrtab)
	buf.Write(make([]byte, shOff-uint64(buf.Len())))
	must(binary.Write(&buf, binary.LittleEndian, sections))
	return buf.Bytes()
}

func TestDepends(t *testing.T) {
	mod := fakeModule(t, "license=GPL", "depends=nf_conntrack,nf_defrag_ipv6", "name=x", "vermagic=6.1.0 SMP mod_unload")
	deps, err := Depends(mod)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"nf_conntrack", "nf_defrag_ipv6"}; !reflect.DeepEqual(deps, want) {
		t.Errorf("Depends = %q, want %q", deps, want)
	}
	if deps, err := Depends(fakeModule(t, "depends=", "name=veth")); err != nil || len(deps) != 0 {
		t.Errorf("empty depends: %q, %v", deps, err)
	}
	if _, err := Depends([]byte("not an ELF file")); err == nil {
		t.Error("parsing garbage: no error")
	}
}

func TestModuleName(t *testing.T) {
	for file, want := range map[string]string{
		"kernel/drivers/net/veth.ko":        "veth",
		"kernel/net/sched/sch_tbf.ko.xz":    "sch_tbf",
		"kernel/net/ipv4/tcp-bbr.ko.zst":    "tcp_bbr",
		"kernel/net/sched/cls_bpf.ko.gz":    "cls_bpf",
		"modules.dep":                       "",
		"kernel/drivers/net/veth.ko.bak":    "",
		"kernel/drivers/net/veth.ko.xz.sig": "",
	} {
		got, ok := ModuleName(file)
		if got != want || ok != (want != "") {
			t.Errorf("ModuleName(%q) = %q, %v; want %q", file, got, ok, want)
		}
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func gzipped(t *testing.T, data []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestResolveOrder(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "kernel/net/a.ko"), fakeModule(t, "depends=b,c_dash"))
	writeFile(t, filepath.Join(dir, "kernel/net/sub/b.ko.gz"), gzipped(t, fakeModule(t, "depends=c-dash,builtin_dep")))
	writeFile(t, filepath.Join(dir, "kernel/lib/c-dash.ko"), fakeModule(t, "depends="))
	writeFile(t, filepath.Join(dir, "kernel/lib/unrelated.ko"), fakeModule(t, "depends="))
	writeFile(t, filepath.Join(dir, "modules.builtin"), []byte("kernel/net/builtin_dep.ko\nkernel/net/sched/sch_ingress.ko\n"))
	want := []string{"c_dash", "b", "a"}
	if _, err := exec.LookPath("xz"); err == nil {
		var xz bytes.Buffer
		cmd := exec.Command("xz", "-c")
		cmd.Stdin = bytes.NewReader(fakeModule(t, "depends=a"))
		cmd.Stdout = &xz
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "kernel/e.ko.xz"), xz.Bytes())
		want = append(want, "e")
	} else {
		t.Log("xz not installed: not testing .ko.xz")
	}

	tree, err := OpenModuleTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	mods, missing, err := tree.Resolve([]string{"a", "sch_ingress", "e", "nope"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range mods {
		names = append(names, m.Name)
		if !bytes.HasPrefix(m.Data, []byte(elf.ELFMAG)) {
			t.Errorf("module %s is not an uncompressed ELF object", m.Name)
		}
	}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("load order %q, want %q", names, want)
	}
	wantMissing := []string{"nope"}
	if len(want) == 3 {
		wantMissing = []string{"e", "nope"}
	}
	if !reflect.DeepEqual(missing, wantMissing) {
		t.Errorf("missing %q, want %q", missing, wantMissing)
	}
}

func TestResolveCycle(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "x.ko"), fakeModule(t, "depends=y"))
	writeFile(t, filepath.Join(dir, "y.ko"), fakeModule(t, "depends=x"))
	tree, err := OpenModuleTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tree.Resolve([]string{"x"}); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("Resolve of a cycle: %v, want a cycle error", err)
	}
}

func TestControlFields(t *testing.T) {
	data := []byte("Package: linux-image-amd64\nVersion: 6.1.192-2\nDepends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)\nDescription: Linux for\n 64-bit PCs\n\nPackage: second\nVersion: 1\n")
	f := controlFields(data)
	if f["Package"] != "linux-image-amd64" || f["Version"] != "6.1.192-2" {
		t.Errorf("fields %q", f)
	}
	if f["Description"] != "Linux for\n64-bit PCs" {
		t.Errorf("continuation line: %q", f["Description"])
	}
	if got := imageDependency(f["Depends"]); got != "linux-image-6.1.0-56-amd64" {
		t.Errorf("imageDependency = %q", got)
	}
	for deps, want := range map[string]string{
		"kmod, initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool": "",
		"": "",
		"foo | linux-image-6.12.117+deb12-amd64 (= 6.12.117-1~deb12u1)": "linux-image-6.12.117+deb12-amd64",
	} {
		if got := imageDependency(deps); got != want {
			t.Errorf("imageDependency(%q) = %q, want %q", deps, got, want)
		}
	}
}

func TestResolvePath(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "bzImage")
	writeFile(t, img, []byte("kernel"))
	mods := filepath.Join(dir, "lib/modules/6.19.0-test")
	if err := os.MkdirAll(mods, 0o755); err != nil {
		t.Fatal(err)
	}
	k, err := Resolve(t.Context(), img, t.TempDir(), mods, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if k.Image != img || k.ModulesDir != mods || k.Release != "6.19.0-test" {
		t.Errorf("Resolve = %+v", k)
	}
	if _, err := Resolve(t.Context(), filepath.Join(dir, "nothing"), t.TempDir(), "", os.Stderr); err == nil || !strings.Contains(err.Error(), "6.1, 6.12") {
		t.Errorf("Resolve of a missing file: %v, want an error naming the aliases", err)
	}
}

// TestCachedDebianKernel checks module resolution against a real Debian
// kernel if one has been fetched already.
func TestCachedDebianKernel(t *testing.T) {
	cache := os.Getenv("MLBPF_VMTEST_CACHE")
	if cache == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			t.Skip(err)
		}
		cache = filepath.Join(d, "mlbpf-vmtest")
	}
	stamps, _ := filepath.Glob(filepath.Join(cache, "linux-image-*", ".complete"))
	if len(stamps) == 0 {
		t.Skipf("no Debian kernel in %s: run go run ./vmtest -kernel 6.1 once to fetch one", cache)
	}
	for _, stamp := range stamps {
		k, err := unpacked(filepath.Dir(stamp), "test")
		if err != nil {
			t.Fatal(err)
		}
		t.Run(k.Release, func(t *testing.T) {
			tree, err := OpenModuleTree(k.ModulesDir)
			if err != nil {
				t.Fatal(err)
			}
			mods, missing, err := tree.Resolve([]string{"veth", "sch_ingress", "cls_bpf", "act_bpf", "sch_tbf", "tcp_bbr"})
			if err != nil {
				t.Fatal(err)
			}
			if len(missing) > 0 {
				t.Errorf("missing %q", missing)
			}
			if len(mods) < 6 {
				t.Errorf("%d modules, want at least 6", len(mods))
			}
			for _, m := range mods {
				if !bytes.HasPrefix(m.Data, []byte(elf.ELFMAG)) {
					t.Errorf("%s is not an ELF object", m.Name)
				}
			}
		})
	}
}

// buildDeb builds a small linux-image package with dpkg-deb.
func buildDeb(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		testutil.Missing(t, "dpkg-deb not installed (apt-get install dpkg; make setup installs it)")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "pkg")
	writeFile(t, filepath.Join(root, "DEBIAN/control"), []byte("Package: linux-image-9.9.9-test\nVersion: 9.9.9-1\nArchitecture: amd64\nMaintainer: mlbpf <mlbpf@example.com>\nDescription: test kernel\n"))
	writeFile(t, filepath.Join(root, "boot/vmlinuz-9.9.9-test"), []byte("bzImage"))
	writeFile(t, filepath.Join(root, "lib/modules/9.9.9-test/kernel/drivers/net/veth.ko"), fakeModule(t, "depends="))
	deb := filepath.Join(dir, "linux-image-9.9.9-test_9.9.9-1_amd64.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "-Zgzip", "--build", root, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --build: %v\n%s", err, out)
	}
	return deb
}

func TestResolveDebFile(t *testing.T) {
	deb := buildDeb(t)
	srv := httptest.NewServer(http.FileServer(http.Dir(filepath.Dir(deb))))
	defer srv.Close()
	for name, spec := range map[string]string{
		"file": deb,
		"url":  srv.URL + "/" + filepath.Base(deb),
	} {
		t.Run(name, func(t *testing.T) {
			cache := t.TempDir()
			for range 2 { // the second time from the cache
				var log bytes.Buffer
				k, err := Resolve(t.Context(), spec, cache, "", &log)
				if err != nil {
					t.Fatal(err)
				}
				if k.Release != "9.9.9-test" || filepath.Base(k.Image) != "vmlinuz-9.9.9-test" || filepath.Base(k.ModulesDir) != "9.9.9-test" {
					t.Errorf("Resolve = %+v", k)
				}
				tree, err := OpenModuleTree(k.ModulesDir)
				if err != nil {
					t.Fatal(err)
				}
				if mods, _, err := tree.Resolve([]string{"veth"}); err != nil || len(mods) != 1 {
					t.Errorf("veth: %v, %v", mods, err)
				}
			}
		})
	}
	if _, err := Resolve(t.Context(), srv.URL+"/missing.deb", t.TempDir(), "", io.Discard); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a missing URL: %v, want a 404 error", err)
	}
}
