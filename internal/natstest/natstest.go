package natstest

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/internal/testutil"
)

// Server is a nats-server process.
type Server struct {
	// URL is where clients connect ("nats://127.0.0.1:port").
	URL  string
	Port int
	// Dir holds the JetStream store and the server's log.
	Dir  string
	Args []string
	cmd  *exec.Cmd
	log  *testutil.SyncBuffer
}

// Binary returns nats-server's path, or an error saying how to install it.
func Binary() (string, error) {
	p, err := exec.LookPath("nats-server")
	if err != nil {
		return "", errors.New("nats-server is not installed: apt-get install nats-server (scripts/setup.sh test)")
	}
	return p, nil
}

// Start starts a nats-server with JetStream for tb, stopped when tb ends;
// tb is skipped (failed on CI) when nats-server is not installed. extra
// are more arguments (authentication, TLS).
func Start(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	if _, err := Binary(); err != nil {
		testutil.Missing(tb, err.Error())
	}
	s, err := New(tb.TempDir(), extra...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Stop() })
	return s
}

// New starts a nats-server with JetStream storing in dir, on a free
// loopback port.
func New(dir string, extra ...string) (*Server, error) {
	if _, err := Binary(); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("finding a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &Server{Port: port, URL: "nats://127.0.0.1:" + strconv.Itoa(port), Dir: dir,
		Args: append([]string{"-js", "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-sd", filepath.Join(dir, "store")}, extra...)}
	return s, s.Restart()
}

// Restart starts the server again (after Stop) on the same port and store.
func (s *Server) Restart() error {
	bin, err := Binary()
	if err != nil {
		return err
	}
	s.log = new(testutil.SyncBuffer)
	s.cmd = exec.Command(bin, s.Args...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("starting nats-server: %w", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(s.Port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.Stop()
	return fmt.Errorf("nats-server did not listen on port %d within 15s: %s", s.Port, s.log)
}

// Stop stops the server (SIGTERM, then SIGKILL) and waits for it.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}

// Log returns what the server printed.
func (s *Server) Log() string {
	if s.log == nil {
		return ""
	}
	return s.log.String()
}
