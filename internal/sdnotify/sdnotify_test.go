package sdnotify

import (
	"net"
	"path/filepath"
	"testing"
)

func TestNotify(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := Notify(Ready); sent || err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v %v", sent, err)
	}
	for _, name := range []string{filepath.Join(t.TempDir(), "notify"), "@mlbpf-sdnotify-test"} {
		laddr := name
		if name[0] == '@' {
			laddr = "\x00" + name[1:]
		}
		ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: laddr, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("NOTIFY_SOCKET", name)
		if sent, err := Notify(Ready + "\nMAINPID=1"); !sent || err != nil {
			t.Fatalf("%s: %v %v", name, sent, err)
		}
		buf := make([]byte, 64)
		n, err := ln.Read(buf)
		if err != nil || string(buf[:n]) != "READY=1\nMAINPID=1" {
			t.Fatalf("%s: read %q %v", name, buf[:n], err)
		}
		ln.Close()
	}
	t.Setenv("NOTIFY_SOCKET", "relative")
	if _, err := Notify(Ready); err == nil {
		t.Fatal("a relative NOTIFY_SOCKET was taken")
	}
}
