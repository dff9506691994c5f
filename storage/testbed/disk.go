package testbed

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Disk is the cost model of a disk whose cost is additive, as a real
// disk's is: every read request costs Request (command overhead,
// rotational latency), plus Seek when it does not start where the
// previous read ended, plus its bytes at BPS. Requests are served one
// after another.
//
// The io controller's throttle (Throttle) charges a request the larger
// of its two costs instead, not their sum, and under that cost one
// readahead setting is near the best for sequential reads and random
// faults at once; under an additive cost they disagree.
type Disk struct {
	Request time.Duration
	Seek    time.Duration
	BPS     uint64
}

// IsZero reports whether d models no disk (the loop device's backing
// file is then on tmpfs and costs nothing).
func (d Disk) IsZero() bool { return d == Disk{} }

func (d Disk) String() string {
	if d.IsZero() {
		return "memory"
	}
	return fmt.Sprintf("request %v + seek %v + bytes at %.1f MB/s", d.Request, d.Seek, float64(d.BPS)/1e6)
}

// cost is what a read of n bytes costs, seek telling whether it starts
// away from where the previous one ended.
func (d Disk) cost(n int, seek bool) time.Duration {
	c := d.Request
	if seek {
		c += d.Seek
	}
	if d.BPS > 0 {
		c += time.Duration(float64(n) / float64(d.BPS) * float64(time.Second))
	}
	return c
}

// diskEnv carries a disk server's arguments to the process New starts
// for it (the running executable again, see init).
const diskEnv = "MLBPF_TESTBED_DISK_SERVER"

// diskArgs are a disk server's arguments.
type diskArgs struct {
	Mount   string // where the FUSE file system is mounted
	Backing string // the image on tmpfs it serves as "disk.img"
	Disk    Disk
}

// diskImage is the name of the image in the FUSE file system.
const diskImage = "disk.img"

func init() {
	if v := os.Getenv(diskEnv); v != "" {
		if err := serveDisk(v); err != nil {
			fmt.Fprintln(os.Stderr, "mlbpf testbed disk server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// diskServer is the process that serves the device's backing file
// through FUSE. It runs apart from the testbed's process: a process that
// both faults pages of the device and serves its reads would deadlock
// when the Go runtime stops the world while one of its threads waits in
// a page fault for the server.
type diskServer struct {
	cmd  *exec.Cmd
	path string // the image in the FUSE mount
	done chan error
	said chan string // the server's lines on stdout: "ready", then "armed"
}

// EnsureFUSE makes /dev/fuse exist, loading the fuse module if the
// kernel has it as one (the disk needs it; a VM's guest may not have
// loaded it).
func EnsureFUSE() error {
	if _, err := os.Stat("/dev/fuse"); err == nil {
		return nil
	}
	out, err := exec.Command("modprobe", "fuse").CombinedOutput()
	if _, serr := os.Stat("/dev/fuse"); serr != nil {
		return fmt.Errorf("the testbed's disk needs FUSE: /dev/fuse is missing and modprobe fuse failed (%v: %s); use a kernel with CONFIG_FUSE_FS", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// startDiskServer mounts a FUSE file system at mount serving backing
// with the cost of d (armed by arm, so that setting up the filesystem
// is quick).
func startDiskServer(mount, backing string, d Disk) (*diskServer, error) {
	if err := EnsureFUSE(); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("starting the disk server: finding the running executable: %w", err)
	}
	if err := os.Mkdir(mount, 0o700); err != nil {
		return nil, fmt.Errorf("starting the disk server: %w", err)
	}
	args, _ := json.Marshal(diskArgs{Mount: mount, Backing: backing, Disk: d})
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), diskEnv+"="+string(args))
	cmd.Stderr = os.Stderr
	// Not Pdeathsig: it fires when the forking thread ends, which a Go
	// program's threads may; the server watches its parent instead.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("starting the disk server: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the disk server: %w", err)
	}
	s := &diskServer{cmd: cmd, path: filepath.Join(mount, diskImage), done: make(chan error, 1), said: make(chan string, 2)}
	go func() {
		r := bufio.NewReader(out)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				close(s.said)
				return
			}
			s.said <- strings.TrimSpace(line)
		}
	}()
	go func() { s.done <- cmd.Wait() }()
	select {
	case line := <-s.said:
		if line != "ready" {
			s.stop(mount)
			return nil, fmt.Errorf("starting the disk server: it said %q (is /dev/fuse there? modprobe fuse)", line)
		}
	case err := <-s.done:
		return nil, fmt.Errorf("starting the disk server: it exited: %v (is /dev/fuse there? modprobe fuse)", err)
	case <-time.After(10 * time.Second):
		s.stop(mount)
		return nil, errors.New("starting the disk server: not ready after 10 s")
	}
	return s, nil
}

// arm makes the server charge reads their cost from now on: it returns
// once the server says it does, so that no read after arm is free (a
// signal alone is handled whenever the server's goroutine runs, which on
// a slow machine came after the first reads).
func (s *diskServer) arm() error {
	if err := s.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		return fmt.Errorf("arming the disk server: %w", err)
	}
	select {
	case line, ok := <-s.said:
		if !ok || line != "armed" {
			return fmt.Errorf("arming the disk server: it said %q, want \"armed\"", line)
		}
	case <-time.After(10 * time.Second):
		return errors.New("arming the disk server: no answer after 10 s")
	}
	return nil
}

// stop ends the server (it unmounts its file system) and waits for it.
func (s *diskServer) stop(mount string) error {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	// A server killed before it unmounted leaves a dead mount.
	if err := unix.Unmount(mount, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		_ = unix.Unmount(mount, unix.MNT_DETACH)
	}
	return nil
}

// serveDisk is the disk server process's body.
func serveDisk(arg string) error {
	var a diskArgs
	if err := json.Unmarshal([]byte(arg), &a); err != nil {
		return fmt.Errorf("reading arguments: %w", err)
	}
	f, err := os.OpenFile(a.Backing, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	node := &diskNode{f: f, size: st.Size(), disk: a.Disk}
	root := &fs.Inode{}
	server, err := fs.Mount(a.Mount, root, &fs.Options{
		MountOptions: fuse.MountOptions{
			DirectMount: true, AllowOther: true, FsName: "mlbpf-testbed-disk", Name: "mlbpf",
			// Requests up to 1 MiB, the loop device's are capped to match
			// (New), so that one device request is one disk request.
			MaxWrite: 1 << 20,
			// Reads are copied from the image, not spliced.
			DisableSplice: true,
		},
		OnAdd: func(ctx context.Context) {
			root.AddChild(diskImage, root.NewPersistentInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2}), true)
		},
	})
	if err != nil {
		return fmt.Errorf("mounting at %s: %w", a.Mount, err)
	}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for s := range sig {
			if s == syscall.SIGUSR1 {
				node.mu.Lock()
				node.armed = true
				node.mu.Unlock()
				fmt.Println("armed")
				continue
			}
			_ = server.Unmount()
			return
		}
	}()
	// The testbed's process gone (a killed test), the server unmounts
	// and ends; the testbed's leftovers are CleanStale's.
	parent := os.Getppid()
	go func() {
		for range time.Tick(500 * time.Millisecond) {
			if os.Getppid() != parent {
				_ = server.Unmount()
				os.Exit(0)
			}
		}
	}()
	fmt.Println("ready")
	server.Wait()
	return nil
}

// diskNode is the disk image: reads are charged their cost, one after
// another, as a disk's head serves them; writes (setting the testbed up)
// are free.
type diskNode struct {
	fs.Inode
	f    *os.File
	size int64
	disk Disk

	mu    sync.Mutex
	armed bool
	busy  time.Time // when the disk has finished what it was given
	next  int64     // where the previous read ended
}

var (
	_ fs.NodeOpener    = (*diskNode)(nil)
	_ fs.NodeReader    = (*diskNode)(nil)
	_ fs.NodeWriter    = (*diskNode)(nil)
	_ fs.NodeGetattrer = (*diskNode)(nil)
	_ fs.NodeFsyncer   = (*diskNode)(nil)
	_ fs.NodeFlusher   = (*diskNode)(nil)
)

func (n *diskNode) Open(context.Context, uint32) (fs.FileHandle, uint32, syscall.Errno) {
	// Direct I/O: no page cache on this side, every read of the loop
	// device reaches the server.
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (n *diskNode) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o600
	out.Size = uint64(n.size)
	out.Blocks = (uint64(n.size) + 511) / 512
	return 0
}

func (n *diskNode) Read(_ context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	end := min(off+int64(len(dest)), n.size)
	if end <= off {
		return fuse.ReadResultData(nil), 0
	}
	n.mu.Lock()
	var done time.Time
	if n.armed {
		start := time.Now()
		if n.busy.After(start) {
			start = n.busy
		}
		n.busy = start.Add(n.disk.cost(int(end-off), off != n.next))
		done = n.busy
	}
	n.next = end
	n.mu.Unlock()
	m, err := n.f.ReadAt(dest[:end-off], off)
	if err != nil && m < int(end-off) {
		return nil, fs.ToErrno(err)
	}
	time.Sleep(time.Until(done))
	return fuse.ReadResultData(dest[:m]), 0
}

func (n *diskNode) Write(_ context.Context, _ fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if off+int64(len(data)) > n.size {
		return 0, syscall.ENOSPC
	}
	m, err := n.f.WriteAt(data, off)
	if err != nil {
		return uint32(m), fs.ToErrno(err)
	}
	return uint32(m), 0
}

func (n *diskNode) Fsync(context.Context, fs.FileHandle, uint32) syscall.Errno { return 0 }

func (n *diskNode) Flush(context.Context, fs.FileHandle) syscall.Errno { return 0 }
