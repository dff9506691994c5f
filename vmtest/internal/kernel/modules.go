package kernel

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Module is a kernel module ready to load: uncompressed, whatever the
// module tree holds.
type Module struct {
	Name string
	Data []byte
}

// moduleSuffixes are the file names modules go by, compressed or not.
var moduleSuffixes = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

// ModuleName returns the name the kernel knows the module file by
// (dashes read as underscores), and whether file is a module at all.
func ModuleName(file string) (string, bool) {
	base := filepath.Base(file)
	for _, s := range moduleSuffixes {
		if strings.HasSuffix(base, s) {
			return strings.ReplaceAll(strings.TrimSuffix(base, s), "-", "_"), true
		}
	}
	return "", false
}

// ModuleTree is a kernel's module directory, lib/modules/<release>.
type ModuleTree struct {
	Dir     string
	files   map[string]string // name -> path
	builtin map[string]bool
	read    func(path string) ([]byte, error)
}

// OpenModuleTree indexes the modules under dir.
func OpenModuleTree(dir string) (*ModuleTree, error) {
	t := &ModuleTree{Dir: dir, files: map[string]string{}, builtin: map[string]bool{}, read: ReadModule}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if name, ok := ModuleName(path); ok {
			if _, dup := t.files[name]; !dup {
				t.files[name] = path
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("indexing modules in %s: %w", dir, err)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if name, ok := ModuleName(strings.TrimSpace(sc.Text())); ok {
				t.builtin[name] = true
			}
		}
	}
	return t, nil
}

// Resolve returns the modules names need, each after the modules it
// depends on (read from the modules' own modinfo, since a packaged tree
// has no modules.dep until depmod runs). Modules built into the kernel
// are left out. Names not found at all are returned in missing.
func (t *ModuleTree) Resolve(names []string) (mods []Module, missing []string, err error) {
	state := map[string]int{} // 1: visiting, 2: done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		name = strings.ReplaceAll(name, "-", "_")
		switch state[name] {
		case 1:
			return fmt.Errorf("resolving modules: dependency cycle %s -> %s", strings.Join(chain, " -> "), name)
		case 2:
			return nil
		}
		state[name] = 1
		defer func() { state[name] = 2 }()
		if t.builtin[name] {
			return nil
		}
		path, ok := t.files[name]
		if !ok {
			missing = append(missing, name)
			return nil
		}
		data, err := t.read(path)
		if err != nil {
			return err
		}
		deps, err := Depends(data)
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		for _, d := range deps {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		mods = append(mods, Module{Name: name, Data: data})
		return nil
	}
	for _, n := range names {
		if err := visit(n, nil); err != nil {
			return nil, nil, err
		}
	}
	return mods, missing, nil
}

// ReadModule reads a module file, decompressing .ko.gz itself and .ko.xz
// and .ko.zst with the xz and zstd commands.
func ReadModule(path string) ([]byte, error) {
	switch {
	case strings.HasSuffix(path, ".ko.gz"):
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("decompressing %s: %w", path, err)
		}
		return io.ReadAll(zr)
	case strings.HasSuffix(path, ".ko.xz"):
		return decompress(path, "xz", "xz-utils")
	case strings.HasSuffix(path, ".ko.zst"):
		return decompress(path, "zstd", "zstd")
	}
	return os.ReadFile(path)
}

func decompress(path, tool, pkg string) ([]byte, error) {
	if _, err := exec.LookPath(tool); err != nil {
		return nil, fmt.Errorf("decompressing %s needs %s: install %s", path, tool, pkg)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(tool, "-dc", path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("decompressing %s: %s: %w: %s", path, tool, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Depends returns the modules a module needs: the depends= entry of its
// .modinfo section.
func Depends(module []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(module))
	if err != nil {
		return nil, fmt.Errorf("parsing module: %w", err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("parsing module: no .modinfo section")
	}
	info, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("parsing module .modinfo: %w", err)
	}
	return ModinfoDepends(info), nil
}

// ModinfoDepends returns the modules listed in the depends= entry of a
// .modinfo section (NUL-separated key=value strings).
func ModinfoDepends(modinfo []byte) []string {
	for _, kv := range bytes.Split(modinfo, []byte{0}) {
		v, ok := bytes.CutPrefix(kv, []byte("depends="))
		if !ok {
			continue
		}
		var deps []string
		for _, d := range strings.Split(string(v), ",") {
			if d = strings.TrimSpace(d); d != "" {
				deps = append(deps, d)
			}
		}
		return deps
	}
	return nil
}
