package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// testPackage is a package with tests, as go list describes it.
type testPackage struct {
	ImportPath string
	Dir        string
	ModuleDir  string // root of the package's module, empty outside one
	Binary     string // the test binary, once built
}

// guestEnv is the environment for building the test binaries: static
// linux/amd64, whatever the host is.
func guestEnv() []string {
	return append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
}

// listTestPackages returns the packages matching patterns that have test
// files.
func listTestPackages(ctx context.Context, patterns, tags []string) ([]testPackage, error) {
	args := []string{"list", "-e", "-json=ImportPath,Dir,Module,TestGoFiles,XTestGoFiles,Error"}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	args = append(args, patterns...)
	out, err := goCommand(ctx, os.Environ(), args...)
	if err != nil {
		return nil, fmt.Errorf("listing packages %s: %w", strings.Join(patterns, " "), err)
	}
	var pkgs []testPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath   string
			Dir          string
			Module       *struct{ Dir string }
			TestGoFiles  []string
			XTestGoFiles []string
			Error        *struct{ Err string }
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("listing packages: decoding go list: %w", err)
		}
		if p.Error != nil {
			return nil, fmt.Errorf("listing packages: %s: %s", p.ImportPath, p.Error.Err)
		}
		if len(p.TestGoFiles)+len(p.XTestGoFiles) == 0 {
			continue
		}
		tp := testPackage{ImportPath: p.ImportPath, Dir: p.Dir}
		if p.Module != nil {
			tp.ModuleDir = p.Module.Dir
		}
		pkgs = append(pkgs, tp)
	}
	return pkgs, nil
}

// buildTests builds the test binary of every package into dir, a few at
// a time.
func buildTests(ctx context.Context, pkgs []testPackage, dir string, tags []string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, min(runtime.NumCPU(), 4))
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error // the first failure; the builds it cancels fail too
	)
	for i := range pkgs {
		p := &pkgs[i]
		p.Binary = filepath.Join(dir, fmt.Sprintf("%03d-%s.test", i, filepath.Base(p.ImportPath)))
		args := []string{"test", "-c", "-o", p.Binary}
		if len(tags) > 0 {
			args = append(args, "-tags", strings.Join(tags, ","))
		}
		args = append(args, p.ImportPath)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if ctx.Err() != nil {
				return
			}
			if _, err := goCommand(ctx, guestEnv(), args...); err != nil {
				mu.Lock()
				if first == nil && ctx.Err() == nil {
					first = fmt.Errorf("building tests of %s: %w", p.ImportPath, err)
					cancel()
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

func goCommand(ctx context.Context, env []string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %w\n%s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
