package kernel

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mlbpf/mlbpf/internal/testutil"
)

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
	k, err := Resolve(t.Context(), img, t.TempDir(), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if k.Image != img || k.Release != "bzImage" {
		t.Errorf("Resolve = %+v", k)
	}
	if _, err := Resolve(t.Context(), filepath.Join(dir, "nothing"), t.TempDir(), os.Stderr); err == nil || !strings.Contains(err.Error(), "6.1, 6.12") {
		t.Errorf("Resolve of a missing file: %v, want an error naming the aliases", err)
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
	writeFile(t, filepath.Join(root, "usr/lib/modules/9.9.9-test/kernel/drivers/net/veth.ko"), []byte("module"))
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
				k, err := Resolve(t.Context(), spec, cache, &log)
				if err != nil {
					t.Fatal(err)
				}
				if k.Release != "9.9.9-test" || filepath.Base(k.Image) != "vmlinuz-9.9.9-test" {
					t.Errorf("Resolve = %+v", k)
				}
				// Where vng looks for the modules of a packaged kernel.
				veth := filepath.Join(filepath.Dir(k.Image), "../lib/modules/9.9.9-test/kernel/drivers/net/veth.ko")
				if _, err := os.Stat(veth); err != nil {
					t.Errorf("modules not beside the kernel: %v", err)
				}
			}
		})
	}
	if _, err := Resolve(t.Context(), srv.URL+"/missing.deb", t.TempDir(), io.Discard); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a missing URL: %v, want a 404 error", err)
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
