package kernel

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Kernel is a bootable kernel. Its modules, if any, are where vng looks
// for them: in lib/modules/<release> under a parent directory of the
// image (an unpacked Debian package), or in the kernel tree it was built
// in.
type Kernel struct {
	// Image is what vng --run boots: Debian's vmlinuz, a bzImage, a
	// kernel tree.
	Image string
	// Release is the kernel release (uname -r), else the image's name.
	Release string
	// Source says where the kernel came from, for the log.
	Source string
}

// Aliases maps the short kernel names vmtest accepts to Debian packages.
// Each is a meta-package depending on the newest image of its series.
var Aliases = map[string]string{
	"6.1":  "linux-image-amd64",      // bookworm's kernel
	"6.12": "linux-image-6.12-amd64", // bookworm-security's 6.12
}

// Resolve finds the kernel spec names: an alias such as "6.1", a Debian
// package name (linux-image-…), a Debian package file or its http(s) URL
// (….deb, for hosts without Debian's apt), or the path of a kernel image
// or tree. Debian kernels are unpacked into cacheDir on first use.
func Resolve(ctx context.Context, spec, cacheDir string, log io.Writer) (*Kernel, error) {
	var k *Kernel
	pkg, isAlias := Aliases[spec]
	switch {
	case strings.HasSuffix(spec, ".deb"):
		var err error
		if k, err = fetchDebFile(ctx, spec, cacheDir, log); err != nil {
			return nil, err
		}
	case isAlias || strings.HasPrefix(spec, "linux-image-"):
		if !isAlias {
			pkg = spec
		}
		var err error
		if k, err = fetchDebian(ctx, pkg, cacheDir, log); err != nil {
			return nil, err
		}
	default:
		if _, err := os.Stat(spec); err != nil {
			return nil, fmt.Errorf("finding kernel %q: not an alias (%s), a Debian linux-image-… package or .deb, or a file: %w", spec, aliasList(), err)
		}
		abs, err := filepath.Abs(spec)
		if err != nil {
			return nil, err
		}
		k = &Kernel{Image: abs, Release: filepath.Base(abs), Source: abs}
	}
	return k, nil
}

func aliasList() string {
	var names []string
	for a := range Aliases {
		names = append(names, a)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// fetchDebian resolves pkg through its meta-package dependencies to a
// linux-image package and version, and unpacks it into cacheDir unless
// it is there already.
func fetchDebian(ctx context.Context, pkg, cacheDir string, log io.Writer) (*Kernel, error) {
	if _, err := exec.LookPath("apt-cache"); err != nil {
		return nil, fmt.Errorf("fetching Debian kernel %s needs apt-get and dpkg-deb (Debian, Ubuntu); elsewhere pass -kernel /path/to/bzImage [-modules /path/to/lib/modules/<release>]", pkg)
	}
	version := ""
	for range 4 {
		fields, err := aptShow(ctx, pkg)
		if err != nil {
			return nil, err
		}
		dep := imageDependency(fields["Depends"])
		if dep == "" {
			version = fields["Version"]
			break
		}
		pkg = dep
	}
	if version == "" {
		return nil, fmt.Errorf("resolving %s: no linux-image package with a version found", pkg)
	}
	dir := filepath.Join(cacheDir, pkg+"_"+strings.ReplaceAll(version, ":", "%3a"))
	stamp := filepath.Join(dir, ".complete")
	if _, err := os.Stat(stamp); err != nil {
		fmt.Fprintf(log, "vmtest: fetching %s %s into %s\n", pkg, version, cacheDir)
		if err := download(ctx, pkg, version, cacheDir, dir); err != nil {
			return nil, err
		}
	}
	return unpacked(dir, pkg+" "+version)
}

// aptShow returns the fields of the candidate version of pkg.
func aptShow(ctx context.Context, pkg string) (map[string]string, error) {
	out, err := command(ctx, "", "apt-cache", "show", "--no-all-versions", pkg)
	if err != nil {
		return nil, fmt.Errorf("looking up %s (apt-get update may help): %w", pkg, err)
	}
	return controlFields(out), nil
}

// controlFields parses the first stanza of Debian control data.
func controlFields(data []byte) map[string]string {
	fields := map[string]string{}
	var last string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			break
		}
		if (line[0] == ' ' || line[0] == '\t') && last != "" {
			fields[last] += "\n" + strings.TrimSpace(line)
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		last = k
		fields[k] = strings.TrimSpace(v)
	}
	return fields
}

// imageDependency returns the first linux-image package in a Depends
// field, e.g. "linux-image-6.1.0-56-amd64 (= 6.1.192-2)".
func imageDependency(depends string) string {
	for _, alt := range strings.FieldsFunc(depends, func(r rune) bool { return r == ',' || r == '|' }) {
		name := strings.Fields(alt)
		if len(name) > 0 && strings.HasPrefix(name[0], "linux-image-") {
			return name[0]
		}
	}
	return ""
}

func download(ctx context.Context, pkg, version, cacheDir, dir string) error {
	return unpackInto(ctx, cacheDir, dir, pkg+" "+version, func(tmp string) (string, error) {
		if _, err := command(ctx, tmp, "apt-get", "download", pkg+"="+version); err != nil {
			return "", fmt.Errorf("downloading %s: %w", pkg, err)
		}
		debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
		if len(debs) != 1 {
			return "", fmt.Errorf("downloading %s: found %d .deb files, want 1", pkg, len(debs))
		}
		return debs[0], nil
	})
}

// fetchDebFile unpacks a linux-image .deb given as a file or an http(s)
// URL, such as a pinned snapshot.debian.org address.
func fetchDebFile(ctx context.Context, spec, cacheDir string, log io.Writer) (*Kernel, error) {
	u, err := url.Parse(spec)
	remote := err == nil && (u.Scheme == "http" || u.Scheme == "https")
	name := filepath.Base(spec)
	if remote {
		name = path.Base(u.Path)
	}
	dir := filepath.Join(cacheDir, strings.TrimSuffix(name, ".deb"))
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err != nil {
		fmt.Fprintf(log, "vmtest: unpacking %s into %s\n", spec, cacheDir)
		err := unpackInto(ctx, cacheDir, dir, name, func(tmp string) (string, error) {
			if !remote {
				return spec, nil
			}
			return httpGet(ctx, spec, filepath.Join(tmp, name))
		})
		if err != nil {
			return nil, err
		}
	}
	return unpacked(dir, name)
}

func httpGet(ctx context.Context, rawURL, dst string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("downloading %s: %w", rawURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("downloading %s: %s", rawURL, resp.Status)
	}
	f, err := os.Create(dst)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return "", fmt.Errorf("downloading %s: %w", rawURL, err)
	}
	return dst, f.Close()
}

// unpackInto unpacks the .deb that get provides (working in a temporary
// directory in cacheDir) and moves its contents to dir, marked complete.
func unpackInto(ctx context.Context, cacheDir, dir, what string, get func(tmp string) (string, error)) error {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		return fmt.Errorf("unpacking %s needs dpkg-deb: install dpkg", what)
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return fmt.Errorf("creating kernel cache: %w", err)
	}
	tmp, err := os.MkdirTemp(cacheDir, ".download-")
	if err != nil {
		return fmt.Errorf("creating kernel cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	// apt-get download drops privileges to _apt where it can, which
	// then needs to write here.
	_ = os.Chmod(tmp, 0o755)
	deb, err := get(tmp)
	if err != nil {
		return err
	}
	root := filepath.Join(tmp, "root")
	if _, err := command(ctx, "", "dpkg-deb", "-x", deb, root); err != nil {
		return fmt.Errorf("unpacking %s: %w", deb, err)
	}
	// vng looks for lib/modules above the image: give it one where the
	// package has only usr/lib/modules (merged-/usr packages).
	if _, err := os.Stat(filepath.Join(root, "lib")); os.IsNotExist(err) {
		_ = os.Symlink("usr/lib", filepath.Join(root, "lib"))
	}
	if err := os.WriteFile(filepath.Join(root, ".complete"), []byte(what+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.Rename(root, dir); err != nil {
		// Another run may have unpacked it in the meantime.
		if _, serr := os.Stat(filepath.Join(dir, ".complete")); serr == nil {
			return nil
		}
		return fmt.Errorf("storing %s in the cache: %w", what, err)
	}
	return nil
}

// unpacked finds the kernel image of an unpacked package; vng finds its
// modules in lib/modules beside boot.
func unpacked(dir, source string) (*Kernel, error) {
	images, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if len(images) != 1 {
		return nil, fmt.Errorf("finding the kernel in %s: %d boot/vmlinuz-* files, want 1", dir, len(images))
	}
	return &Kernel{
		Image:   images[0],
		Release: strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-"),
		Source:  source,
	}, nil
}

// command runs name and returns its standard output, or an error holding
// its standard error.
func command(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return nil, fmt.Errorf("%s: %w: %s", name, err, msg)
	}
	return out, nil
}
