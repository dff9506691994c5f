package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// States sent by the daemon.
const (
	Ready     = "READY=1"
	Reloading = "RELOADING=1"
	Stopping  = "STOPPING=1"
)

// Notify sends state ("READY=1", or several assignments separated by
// newlines) to the service manager. Without $NOTIFY_SOCKET (not run by
// systemd as Type=notify) it does nothing and returns false.
func Notify(state string) (bool, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return false, nil
	}
	if !strings.HasPrefix(addr, "/") && !strings.HasPrefix(addr, "@") {
		return false, fmt.Errorf("notifying systemd: NOTIFY_SOCKET %q is neither a path nor an abstract socket", addr)
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:] // abstract namespace
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("notifying systemd: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("notifying systemd: %w", err)
	}
	return true, nil
}
