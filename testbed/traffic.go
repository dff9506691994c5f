package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Sink accepts TCP connections in the server namespace, reads each to its
// end and closes it: the far end of Send.
type Sink struct {
	l  net.Listener
	wg sync.WaitGroup
	// accepted, if set, is called on each connection accepted before it
	// is read.
	accepted func(net.Conn)
}

// NewSink listens on an ephemeral port of the server's address.
func (t *Testbed) NewSink(ipv6 bool) (*Sink, error) {
	network := "tcp4"
	if ipv6 {
		network = "tcp6"
	}
	l, err := t.Server.Listen(network, ServerURL(ipv6, 0))
	if err != nil {
		return nil, fmt.Errorf("starting sink: %w", err)
	}
	s := &Sink{l: l}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func (s *Sink) serve() {
	defer s.wg.Done()
	for {
		c, err := s.l.Accept()
		if err != nil {
			return
		}
		if s.accepted != nil {
			s.accepted(c)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_, _ = io.Copy(io.Discard, c)
			_ = c.Close()
		}()
	}
}

// Addr is the sink's address, host:port.
func (s *Sink) Addr() string { return s.l.Addr().String() }

// Close stops accepting and waits for the connections in progress.
func (s *Sink) Close() error {
	err := s.l.Close()
	s.wg.Wait()
	return err
}

// Transfer is the result of Send.
type Transfer struct {
	Bytes    int64
	Duration time.Duration
	// CC is the congestion control the client socket ran, read from the
	// socket itself (getsockopt TCP_CONGESTION) once connected.
	CC string
}

// Goodput returns bytes per second.
func (tr Transfer) Goodput() float64 {
	if tr.Duration <= 0 {
		return 0
	}
	return float64(tr.Bytes) / tr.Duration.Seconds()
}

// Load is how much one Send sends: Bytes, or for Duration, whichever
// ends first (zero means no limit of that kind; one must be set). A
// Duration load sends at least one 256 KiB chunk, however late the sender
// starts.
type Load struct {
	Bytes    int64
	Duration time.Duration
}

// Send connects from the client namespace to addr, sends the load, shuts
// its side down and waits until the peer has read everything and closed.
// A non-empty cc is set with setsockopt(TCP_CONGESTION) before connect,
// as an application choosing its own algorithm would.
func (t *Testbed) Send(ctx context.Context, addr string, load Load, cc string) (Transfer, error) {
	return sendFrom(ctx, t.Client, addr, load, cc)
}

// CCDialer returns a dialer that sets a non-empty cc with
// setsockopt(TCP_CONGESTION) before connect, as an application choosing
// its own algorithm would (Namespace.DialWith dials with it).
func CCDialer(cc string) *net.Dialer {
	d := &net.Dialer{}
	if cc != "" {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, cc)
			})
			return errors.Join(err, serr)
		}
	}
	return d
}

func sendFrom(ctx context.Context, ns *Namespace, addr string, load Load, cc string) (Transfer, error) {
	if load.Bytes <= 0 && load.Duration <= 0 {
		return Transfer{}, fmt.Errorf("sending to %s: empty load", addr)
	}
	var tr Transfer
	start := time.Now()
	c, err := ns.DialWith(ctx, CCDialer(cc), "tcp", addr)
	if err != nil {
		return tr, fmt.Errorf("sending to %s: %w", addr, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	tc := c.(*net.TCPConn)
	if tr.CC, err = SocketCC(tc); err != nil {
		return tr, err
	}
	if tr.Bytes, err = sendLoad(tc, load); err != nil {
		return tr, fmt.Errorf("sending to %s: %w", addr, err)
	}
	if err := tc.CloseWrite(); err != nil {
		return tr, fmt.Errorf("sending to %s: %w", addr, err)
	}
	if _, err := io.Copy(io.Discard, tc); err != nil {
		return tr, fmt.Errorf("sending to %s: waiting for the peer to close: %w", addr, err)
	}
	tr.Duration = time.Since(start)
	return tr, nil
}

// SocketCC returns the congestion control of a TCP socket.
func SocketCC(c syscall.Conn) (string, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return "", err
	}
	var cc string
	var gerr error
	err = rc.Control(func(fd uintptr) {
		cc, gerr = unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION)
	})
	if err = errors.Join(err, gerr); err != nil {
		return "", fmt.Errorf("reading TCP_CONGESTION: %w", err)
	}
	return cc, nil
}

var chunk = make([]byte, 256<<10)

func sendLoad(c net.Conn, load Load) (int64, error) {
	var sent int64
	var end time.Time
	if load.Duration > 0 {
		end = time.Now().Add(load.Duration)
	}
	for load.Bytes <= 0 || sent < load.Bytes {
		// The deadline is checked after the first write, so a sender
		// descheduled for longer than Duration (a slow VM) still sends
		// a chunk: a transfer of nothing measures nothing.
		if sent > 0 && !end.IsZero() && !time.Now().Before(end) {
			break
		}
		b := chunk
		if load.Bytes > 0 {
			b = b[:min(int64(len(b)), load.Bytes-sent)]
		}
		n, err := c.Write(b)
		sent += int64(n)
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
