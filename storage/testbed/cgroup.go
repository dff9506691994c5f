package testbed

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Throttle caps a device's reads. Zero fields are no cap.
type Throttle struct {
	ReadIOPS uint64 // requests per second
	ReadBPS  uint64 // bytes per second
}

func (t Throttle) String() string {
	var parts []string
	if t.ReadIOPS > 0 {
		parts = append(parts, fmt.Sprintf("%d IOPS", t.ReadIOPS))
	}
	if t.ReadBPS > 0 {
		parts = append(parts, fmt.Sprintf("%.1f MB/s", float64(t.ReadBPS)/1e6))
	}
	if len(parts) == 0 {
		return "unthrottled"
	}
	return strings.Join(parts, ", ")
}

// Throttle sets the device's read caps for the testbed's cgroup, which
// the calling process is in from New until Close.
func (tb *Testbed) Throttle(t Throttle) error {
	return tb.cg.throttle(tb.Major, tb.Minor, t)
}

// IOController names the io controller the testbed throttles with:
// "io.max" (cgroup v2) or "blkio.throttle" (cgroup v1).
func (tb *Testbed) IOController() string {
	if tb.cg.v2 {
		return "io.max"
	}
	return "blkio.throttle"
}

// cgroup is the testbed's child cgroup of the io controller's hierarchy,
// which the process lives in for the testbed's life.
type cgroup struct {
	v2   bool
	path string
	home string
}

// ioHierarchy returns the root of the hierarchy with the io controller:
// the cgroup v2 mount if its root offers "io", else the v1 blkio mount.
func ioHierarchy() (root string, v2 bool, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false, fmt.Errorf("reading mounts: %w", err)
	}
	defer f.Close()
	var v1 string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 0 || len(fields) < sep+4 || len(fields) < 5 {
			continue
		}
		switch fields[sep+1] {
		case "cgroup2":
			b, err := os.ReadFile(filepath.Join(fields[4], "cgroup.controllers"))
			if err == nil && slices.Contains(strings.Fields(string(b)), "io") {
				return fields[4], true, nil
			}
		case "cgroup":
			if slices.Contains(strings.Split(fields[sep+3], ","), "blkio") {
				v1 = fields[4]
			}
		}
	}
	if v1 != "" {
		return v1, false, nil
	}
	return "", false, errors.New("finding the io controller: neither a cgroup v2 hierarchy offering \"io\" nor a v1 blkio hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup, or mount the v1 blkio controller)")
}

// cgroupRoots lists the hierarchies a testbed may have made cgroups in.
func cgroupRoots() []string {
	root, _, err := ioHierarchy()
	if err != nil {
		return nil
	}
	return []string{root}
}

func newCgroup(name string) (*cgroup, error) {
	root, v2, err := ioHierarchy()
	if err != nil {
		return nil, err
	}
	home, err := ownCgroup(root, v2)
	if err != nil {
		return nil, err
	}
	if v2 {
		ctl := filepath.Join(root, "cgroup.subtree_control")
		if err := os.WriteFile(ctl, []byte("+io"), 0o644); err != nil {
			return nil, fmt.Errorf("enabling the io controller in %s: %w", ctl, err)
		}
	}
	c := &cgroup{v2: v2, path: filepath.Join(root, name), home: home}
	if err := os.Mkdir(c.path, 0o755); err != nil {
		return nil, fmt.Errorf("creating cgroup %s: %w", c.path, err)
	}
	if err := movePID(c.path, os.Getpid()); err != nil {
		_ = os.Remove(c.path)
		return nil, err
	}
	return c, nil
}

// ownCgroup returns the directory of the process's cgroup in the
// hierarchy mounted at root.
func ownCgroup(root string, v2 bool) (string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("reading own cgroup: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if (v2 && parts[0] == "0" && parts[1] == "") || (!v2 && slices.Contains(strings.Split(parts[1], ","), "blkio")) {
			return filepath.Join(root, parts[2]), nil
		}
	}
	return "", errors.New("reading own cgroup: the io controller's hierarchy is not in /proc/self/cgroup")
}

func movePID(dir string, pid int) error {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("moving process %d into cgroup %s: %w", pid, dir, err)
	}
	return nil
}

func (c *cgroup) throttle(major, minor uint32, t Throttle) error {
	dev := fmt.Sprintf("%d:%d", major, minor)
	write := func(file, value string) error {
		if err := os.WriteFile(filepath.Join(c.path, file), []byte(value), 0o644); err != nil {
			return fmt.Errorf("throttling %s (%s %q): %w", dev, file, value, err)
		}
		return nil
	}
	if c.v2 {
		lim := func(v uint64) string {
			if v == 0 {
				return "max"
			}
			return strconv.FormatUint(v, 10)
		}
		return write("io.max", fmt.Sprintf("%s riops=%s rbps=%s", dev, lim(t.ReadIOPS), lim(t.ReadBPS)))
	}
	return errors.Join(
		write("blkio.throttle.read_iops_device", fmt.Sprintf("%s %d", dev, t.ReadIOPS)),
		write("blkio.throttle.read_bps_device", fmt.Sprintf("%s %d", dev, t.ReadBPS)))
}

// close moves the process back home and removes the cgroup. Threads that
// are still moving keep it busy for a moment: retry briefly.
func (c *cgroup) close() error {
	err := movePID(c.home, os.Getpid())
	var rmErr error
	for range 50 {
		rmErr = os.Remove(c.path)
		if rmErr == nil || errors.Is(rmErr, os.ErrNotExist) {
			rmErr = nil
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if rmErr != nil {
		rmErr = fmt.Errorf("removing cgroup %s: %w", c.path, rmErr)
	}
	return errors.Join(err, rmErr)
}
