package ringbuf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// poller waits, in epoll, for the ring buffer's map fd to become readable
// (the kernel wakes it up when a record is committed at the consumer
// position, or with BPF_RB_FORCE_WAKEUP) or for a wake-up from Close,
// Flush or SetDeadline, delivered through an eventfd.
type poller struct {
	fdMu sync.RWMutex // guards the fds against close while interrupt writes
	epfd int
	wake int // eventfd; -1 once closed

	closed  atomic.Bool
	flushed atomic.Bool

	events [2]unix.EpollEvent
	one    [8]byte
}

// Values of EpollEvent.Fd telling which fd is ready.
const (
	pollRing = iota
	pollWake
)

func newPoller(ringFD int) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating epoll fd: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("creating eventfd: %w", err)
	}
	p := &poller{epfd: epfd, wake: wake}
	binary.NativeEndian.PutUint64(p.one[:], 1)
	for _, e := range []struct{ fd, id int }{{ringFD, pollRing}, {wake, pollWake}} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(e.id)}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, e.fd, &ev); err != nil {
			_ = p.close()
			return nil, fmt.Errorf("adding fd to epoll: %w", err)
		}
	}
	return p, nil
}

// interrupt wakes up a pending wait. Safe to call at any time before
// close.
func (p *poller) interrupt() error {
	p.fdMu.RLock()
	defer p.fdMu.RUnlock()
	if p.wake < 0 {
		return nil
	}
	_, err := unix.Write(p.wake, p.one[:])
	if err != nil && !errors.Is(err, unix.EAGAIN) { // counter saturated: already awake
		return fmt.Errorf("waking reader: %w", err)
	}
	return nil
}

// wait blocks until the ring fd is readable (nil), the reader is closed
// (os.ErrClosed), flushed (ErrFlushed) or the deadline, read again after
// every wake-up, passes (os.ErrDeadlineExceeded).
func (p *poller) wait(deadline func() time.Time) error {
	for {
		if p.closed.Load() {
			return os.ErrClosed
		}
		if p.flushed.Swap(false) {
			return ErrFlushed
		}
		timeout := -1
		if d := deadline(); !d.IsZero() {
			left := time.Until(d)
			if left <= 0 {
				timeout = 0
			} else {
				// Round up: waking up early would spin.
				timeout = int((left + time.Millisecond - 1) / time.Millisecond)
			}
		}
		n, err := unix.EpollWait(p.epfd, p.events[:], timeout)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("waiting in epoll: %w", err)
		}
		if n == 0 {
			if d := deadline(); !d.IsZero() && !time.Now().Before(d) {
				return os.ErrDeadlineExceeded
			}
			continue // timeout was rounded, or the deadline moved
		}
		ringReady := false
		for _, ev := range p.events[:n] {
			switch ev.Fd {
			case pollRing:
				ringReady = true
			case pollWake:
				var buf [8]byte
				_, _ = unix.Read(p.wake, buf[:]) // reset the counter
			}
		}
		if p.closed.Load() {
			return os.ErrClosed
		}
		if ringReady {
			return nil
		}
	}
}

func (p *poller) close() error {
	p.fdMu.Lock()
	defer p.fdMu.Unlock()
	if p.wake < 0 {
		return nil
	}
	err := errors.Join(unix.Close(p.epfd), unix.Close(p.wake))
	p.epfd, p.wake = -1, -1
	return err
}
