package testbed

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
)

// allowedPath lists the algorithms a non-initial network namespace may
// take as its default (and unprivileged sockets may choose).
const allowedPath = "/proc/sys/net/ipv4/tcp_allowed_congestion_control"

// allowance adds algorithms to the host's allowed list for as long as some
// testbed of this process needs them, then restores the list.
var allowance struct {
	mu       sync.Mutex
	users    int
	original string // the list before the first addition
	written  string // the list as last written
}

// allowedSaved keeps the host's list as it was before a testbed changed
// it, so that the next testbed can restore it if the process that changed
// it died before restoring it.
const allowedSaved = "/run/mlbpf-testbed-allowed"

// allowCC makes sure cc is in the host's allowed list. A network namespace
// other than the host's may only default to an allowed algorithm.
func allowCC(cc string) (release func() error, err error) {
	allowance.mu.Lock()
	defer allowance.mu.Unlock()
	b, err := os.ReadFile(allowedPath)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", allowedPath, err)
	}
	cur := strings.Fields(string(b))
	if !slices.Contains(cur, cc) {
		if _, err := os.Stat(allowedSaved); os.IsNotExist(err) {
			_ = os.WriteFile(allowedSaved, []byte(strings.Join(cur, " ")), 0o644)
		}
		next := strings.Join(append(cur, cc), " ")
		if err := os.WriteFile(allowedPath, []byte(next), 0o644); err != nil {
			return nil, fmt.Errorf("allowing %s in network namespaces (%s): %w", cc, allowedPath, err)
		}
		if allowance.users == 0 {
			allowance.original = strings.Join(cur, " ")
		}
		allowance.written = next
	} else if allowance.users == 0 {
		allowance.original, allowance.written = "", ""
	}
	allowance.users++
	var once sync.Once
	return func() error {
		var err error
		once.Do(func() { err = releaseAllowance() })
		return err
	}, nil
}

func releaseAllowance() error {
	allowance.mu.Lock()
	defer allowance.mu.Unlock()
	allowance.users--
	if allowance.users > 0 || allowance.written == "" {
		return nil
	}
	defer func() { allowance.original, allowance.written = "", "" }()
	b, err := os.ReadFile(allowedPath)
	if err != nil {
		return fmt.Errorf("restoring %s: %w", allowedPath, err)
	}
	// Someone else changed it meanwhile: leave their value.
	if strings.Join(strings.Fields(string(b)), " ") != allowance.written {
		return nil
	}
	if err := os.WriteFile(allowedPath, []byte(allowance.original), 0o644); err != nil {
		return fmt.Errorf("restoring %s to %q: %w", allowedPath, allowance.original, err)
	}
	_ = os.Remove(allowedSaved)
	return nil
}

// restoreAllowed puts back the list saved by a testbed whose process died
// before restoring it. The caller has checked that no testbed is alive.
func restoreAllowed() {
	allowance.mu.Lock()
	defer allowance.mu.Unlock()
	if allowance.users > 0 {
		return
	}
	b, err := os.ReadFile(allowedSaved)
	if err != nil {
		return
	}
	if os.WriteFile(allowedPath, b, 0o644) == nil {
		_ = os.Remove(allowedSaved)
	}
}
