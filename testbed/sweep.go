package testbed

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netns"
)

// sweep removes what testbeds named name left behind when their process
// died without closing them (killed, for example): namespaces and cgroups
// whose process id no longer exists, and, when no testbed is alive, the
// change to the host's allowed congestion controls. It is best effort.
func sweep(name, cgroupRoot string) {
	alive := 0
	dead := func(entry string) bool {
		rest, ok := strings.CutPrefix(entry, name+"-")
		if !ok {
			return false
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 {
			return false
		}
		if _, err := os.Stat(filepath.Join("/proc", pidStr)); !os.IsNotExist(err) {
			alive++
			return false
		}
		return true
	}
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			if dead(e.Name()) {
				_ = netns.DeleteNamed(e.Name())
			}
		}
	}
	if alive == 0 {
		restoreAllowed()
	}
	if cgroupRoot == "" {
		return
	}
	if entries, err := os.ReadDir(cgroupRoot); err == nil {
		for _, e := range entries {
			if e.IsDir() && dead(e.Name()) {
				_ = os.Remove(filepath.Join(cgroupRoot, e.Name()))
			}
		}
	}
}

// TempPinRoot creates a pin root on bpffs for one run of a tool
// (/sys/fs/bpf/<prefix>-<pid>-<random>), after removing those of the same
// prefix whose process is gone. The caller removes it.
func TempPinRoot(prefix string) (string, error) {
	const bpffs = "/sys/fs/bpf"
	if entries, err := os.ReadDir(bpffs); err == nil {
		for _, e := range entries {
			rest, ok := strings.CutPrefix(e.Name(), prefix+"-")
			if !ok {
				continue
			}
			pidStr, _, _ := strings.Cut(rest, "-")
			if pid, err := strconv.Atoi(pidStr); err != nil || pid <= 0 {
				continue
			}
			if _, err := os.Stat(filepath.Join("/proc", pidStr)); os.IsNotExist(err) {
				_ = os.RemoveAll(filepath.Join(bpffs, e.Name()))
			}
		}
	}
	dir, err := os.MkdirTemp(bpffs, prefix+"-"+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return "", fmt.Errorf("creating a pin root: %w (is bpffs mounted? mount -t bpf bpf /sys/fs/bpf)", err)
	}
	return dir, nil
}
