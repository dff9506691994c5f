package testbed

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cgroup is a child cgroup v2 the process lives in for the testbed's life.
type cgroup struct {
	path string // the child
	home string // where the process was, to go back to
}

// enterCgroup creates root/name and moves the whole process into it.
func enterCgroup(root, name string) (*cgroup, error) {
	home, err := ownCgroup(root)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(root, name)
	if err := os.Mkdir(path, 0o755); err != nil {
		return nil, fmt.Errorf("creating cgroup %s: %w", path, err)
	}
	if err := moveProcess(path); err != nil {
		_ = os.Remove(path)
		return nil, err
	}
	return &cgroup{path: path, home: home}, nil
}

// ownCgroup returns the directory of the process's cgroup v2 under root.
func ownCgroup(root string) (string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("reading own cgroup: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// The v2 hierarchy is the line "0::/path".
		if rest, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return filepath.Join(root, rest), nil
		}
	}
	return "", fmt.Errorf("reading own cgroup: no cgroup v2 entry in /proc/self/cgroup")
}

func moveProcess(dir string) error {
	pid := strconv.Itoa(os.Getpid())
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(pid), 0o644); err != nil {
		return fmt.Errorf("moving process %s into cgroup %s: %w", pid, dir, err)
	}
	return nil
}

// close moves the process back home and removes the child. Children that
// are still exiting keep the cgroup busy for a moment: retry briefly.
func (c *cgroup) close() error {
	err := moveProcess(c.home)
	return errors.Join(err, removeCgroup(c.path))
}

// removeCgroup removes an empty cgroup, retrying for a second while its
// last processes exit.
func removeCgroup(path string) error {
	var err error
	for range 50 {
		err = os.Remove(path)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("removing cgroup %s: %w", path, err)
}
