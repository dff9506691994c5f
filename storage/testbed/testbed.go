package testbed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Config describes one testbed. The zero value is valid.
type Config struct {
	// SizeMiB is the device's size; 0 means 192.
	SizeMiB int
	// FileMiB is the size of each workload file; 0 means 48.
	FileMiB int
	// Throttle caps the device's reads from the start (see Throttle).
	Throttle Throttle
	// Disk, if not zero, puts the device's backing file on a FUSE file
	// system whose server charges every read as Disk says, instead of on
	// tmpfs.
	Disk Disk
}

// Testbed is one loop device with a filesystem and a throttle.
type Testbed struct {
	// Device is the loop device's path, Name its name under /sys/block.
	Device, Name string
	// Major and Minor are the device's numbers.
	Major, Minor uint32
	// Mount is where its filesystem is mounted.
	Mount string

	dir       string // the private tmpfs
	dirMount  bool
	fsMounted bool
	loopFD    *os.File // held until Close so the device exists
	cg        *cgroup
	disk      *diskServer
	diskMount string

	segment atomic.Int64 // the seq workload's next segment

	closeOnce sync.Once
	closeErr  error
	stop      func() bool
}

// DefaultReadAheadKB is the kernel's readahead for a new disk
// (VM_READAHEAD_PAGES), which New gives the testbed's device.
const DefaultReadAheadKB = 128

// prefix names every directory, loop backing file and cgroup a testbed
// creates, followed by the creating process's id.
const prefix = "mlbpf-storage-"

// Dev returns the device number as the kernel's tracepoints encode it
// (major << 20 | minor).
func (tb *Testbed) Dev() uint32 { return tb.Major<<20 | tb.Minor }

// New builds a testbed. It needs root, the loop driver and mkfs.ext4.
// Closing ctx closes the testbed.
func New(ctx context.Context, cfg Config) (_ *Testbed, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("building the storage testbed: needs root (loop devices, mounts, cgroups); run it with sudo")
	}
	if cfg.SizeMiB == 0 {
		cfg.SizeMiB = 192
	}
	if cfg.FileMiB == 0 {
		cfg.FileMiB = 48
	}
	if 2*cfg.FileMiB+32 > cfg.SizeMiB {
		return nil, fmt.Errorf("building the storage testbed: two files of %d MiB do not fit a %d MiB device; give a larger SizeMiB", cfg.FileMiB, cfg.SizeMiB)
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return nil, fmt.Errorf("building the storage testbed: mkfs.ext4 not found: install e2fsprogs: %w", err)
	}
	CleanStale()

	tb := &Testbed{}
	defer func() {
		if err != nil {
			_ = tb.Close()
		}
	}()
	tb.dir, err = os.MkdirTemp("", fmt.Sprintf("%s%d-", prefix, os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("building the storage testbed: %w", err)
	}
	size := fmt.Sprintf("size=%dm,mode=0700", cfg.SizeMiB+16)
	if err := unix.Mount("tmpfs", tb.dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, size); err != nil {
		return nil, fmt.Errorf("mounting a tmpfs at %s: %w", tb.dir, err)
	}
	tb.dirMount = true
	img := filepath.Join(tb.dir, "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		return nil, fmt.Errorf("creating the disk image: %w", err)
	}
	if err := os.Truncate(img, int64(cfg.SizeMiB)<<20); err != nil {
		return nil, fmt.Errorf("sizing the disk image: %w", err)
	}
	if !cfg.Disk.IsZero() {
		tb.diskMount = filepath.Join(tb.dir, "disk")
		if tb.disk, err = startDiskServer(tb.diskMount, img, cfg.Disk); err != nil {
			return nil, err
		}
		img = tb.disk.path
	}
	if err := tb.attachLoop(img); err != nil {
		return nil, err
	}
	if tb.disk != nil {
		// One device request, one disk request: the disk server takes
		// requests of up to 1 MiB.
		p := filepath.Join("/sys/block", tb.Name, "queue", "max_sectors_kb")
		if err := os.WriteFile(p, []byte("1024"), 0); err != nil {
			return nil, fmt.Errorf("capping %s's requests at 1 MiB: %w", tb.Device, err)
		}
	}
	// A loop device keeps the setting of its previous user: give it the
	// kernel's default for a new disk.
	if err := os.WriteFile(tb.ReadAheadPath(), []byte(strconv.Itoa(DefaultReadAheadKB)), 0); err != nil {
		return nil, fmt.Errorf("resetting %s's readahead: %w", tb.Device, err)
	}
	if out, err := exec.CommandContext(ctx, mkfs, "-q", "-F", "-E", "nodiscard", tb.Device).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("making a filesystem on %s: %w: %s", tb.Device, err, strings.TrimSpace(string(out)))
	}
	tb.Mount = filepath.Join(tb.dir, "mnt")
	if err := os.Mkdir(tb.Mount, 0o700); err != nil {
		return nil, fmt.Errorf("building the storage testbed: %w", err)
	}
	if err := unix.Mount(tb.Device, tb.Mount, "ext4", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOATIME, ""); err != nil {
		return nil, fmt.Errorf("mounting %s at %s: %w", tb.Device, tb.Mount, err)
	}
	tb.fsMounted = true
	for _, name := range []string{seqFile, randFile} {
		if err := fill(filepath.Join(tb.Mount, name), cfg.FileMiB); err != nil {
			return nil, err
		}
	}
	if err := tb.DropCache(); err != nil {
		return nil, err
	}
	if tb.disk != nil {
		if err := tb.disk.arm(); err != nil {
			return nil, err
		}
	}
	tb.cg, err = newCgroup(fmt.Sprintf("%s%d", prefix, os.Getpid()))
	if err != nil {
		return nil, err
	}
	if err := tb.Throttle(cfg.Throttle); err != nil {
		return nil, err
	}
	tb.stop = context.AfterFunc(ctx, func() { _ = tb.Close() })
	return tb, nil
}

// attachLoop attaches img to a free loop device that clears itself when
// its last user goes away.
func (tb *Testbed) attachLoop(img string) error {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening /dev/loop-control: %w (load the loop driver: modprobe loop)", err)
	}
	defer ctl.Close()
	backing, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening the disk image: %w", err)
	}
	defer backing.Close()
	for range 8 { // another process may take the free device first
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return fmt.Errorf("finding a free loop device: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("opening %s: %w", dev, err)
		}
		lc := unix.LoopConfig{Fd: uint32(backing.Fd())}
		lc.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		copy(lc.Info.File_name[:], img)
		if err := unix.IoctlLoopConfigure(int(f.Fd()), &lc); err != nil {
			f.Close()
			if errors.Is(err, unix.EBUSY) {
				continue
			}
			return fmt.Errorf("attaching %s to %s: %w", img, dev, err)
		}
		tb.Device, tb.Name, tb.loopFD = dev, fmt.Sprintf("loop%d", n), f
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			return fmt.Errorf("reading %s's device number: %w", dev, err)
		}
		tb.Major, tb.Minor = unix.Major(st.Rdev), unix.Minor(st.Rdev)
		return nil
	}
	return errors.New("attaching a loop device: every free device was taken meanwhile; retry")
}

// fill writes a file of mib MiB of non-zero data and syncs it.
func fill(path string, mib int) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("creating workload file: %w", err)
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	for range mib {
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return fmt.Errorf("writing workload file: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing workload file: %w", err)
	}
	return f.Close()
}

// DropCache empties this device's page cache: the pages of every file on
// its filesystem and the device's buffer cache. Other devices' caches are
// untouched.
func (tb *Testbed) DropCache() error {
	entries, err := os.ReadDir(tb.Mount)
	if err != nil {
		return fmt.Errorf("dropping the device's cache: %w", err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if err := dropFile(filepath.Join(tb.Mount, e.Name())); err != nil {
			return err
		}
	}
	if err := unix.IoctlSetInt(int(tb.loopFD.Fd()), unix.BLKFLSBUF, 0); err != nil {
		return fmt.Errorf("dropping %s's buffer cache (BLKFLSBUF): %w", tb.Device, err)
	}
	return nil
}

func dropFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("dropping the device's cache: %w", err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("dropping %s from the page cache: %w", path, err)
	}
	return nil
}

// ReadAheadPath is the device's read_ahead_kb in sysfs.
func (tb *Testbed) ReadAheadPath() string {
	return filepath.Join("/sys/block", tb.Name, "queue", "read_ahead_kb")
}

// Close removes the testbed: the throttle and cgroup (the process goes
// back to its own), the filesystem, the loop device, the tmpfs.
func (tb *Testbed) Close() error {
	tb.closeOnce.Do(func() {
		if tb.stop != nil {
			tb.stop()
		}
		var errs []error
		if tb.cg != nil {
			errs = append(errs, tb.cg.close())
		}
		if tb.fsMounted {
			if err := unix.Unmount(tb.Mount, 0); err != nil {
				errs = append(errs, fmt.Errorf("unmounting %s: %w", tb.Mount, err))
				_ = unix.Unmount(tb.Mount, unix.MNT_DETACH)
			}
		}
		if tb.loopFD != nil {
			// Autoclear detaches once the last user is gone; say so
			// explicitly too, for a device nobody else holds.
			_ = unix.IoctlSetInt(int(tb.loopFD.Fd()), unix.LOOP_CLR_FD, 0)
			errs = append(errs, tb.loopFD.Close())
		}
		if tb.disk != nil {
			errs = append(errs, tb.disk.stop(tb.diskMount))
		}
		if tb.dirMount {
			if err := unix.Unmount(tb.dir, 0); err != nil {
				errs = append(errs, fmt.Errorf("unmounting %s: %w", tb.dir, err))
				_ = unix.Unmount(tb.dir, unix.MNT_DETACH)
			}
		}
		if tb.dir != "" {
			errs = append(errs, os.RemoveAll(tb.dir))
		}
		tb.closeErr = errors.Join(errs...)
	})
	return tb.closeErr
}

// CleanStale removes what testbeds of processes that no longer exist left
// behind: their mounts, loop devices, directories and cgroups.
func CleanStale() {
	dead := func(name string) bool {
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok {
			return false
		}
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil || pid <= 0 {
			return false
		}
		return unix.Kill(pid, 0) == unix.ESRCH
	}
	// Mounts first, deepest first: the ext4 inside the tmpfs.
	var mounts []string
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 4 && strings.Contains(fields[4], "/"+prefix) {
				mounts = append(mounts, fields[4])
			}
		}
		f.Close()
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		for _, part := range strings.Split(mounts[i], "/") {
			if dead(part) {
				_ = unix.Unmount(mounts[i], unix.MNT_DETACH)
				break
			}
		}
	}
	tmp := os.TempDir()
	if entries, err := os.ReadDir(tmp); err == nil {
		for _, e := range entries {
			if e.IsDir() && dead(e.Name()) {
				_ = os.RemoveAll(filepath.Join(tmp, e.Name()))
			}
		}
	}
	// Loop devices whose backing file was one of ours (detached by
	// autoclear once unmounted, unless something else holds them).
	loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, bf := range loops {
		b, err := os.ReadFile(bf)
		if err != nil {
			continue
		}
		for _, part := range strings.Split(strings.TrimSpace(string(b)), "/") {
			if dead(part) {
				name := filepath.Base(filepath.Dir(filepath.Dir(bf)))
				if f, err := os.OpenFile("/dev/"+name, os.O_RDWR, 0); err == nil {
					_ = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
					f.Close()
				}
				break
			}
		}
	}
	for _, root := range cgroupRoots() {
		entries, err := os.ReadDir(root)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if e.IsDir() && dead(e.Name()) {
				_ = os.Remove(filepath.Join(root, e.Name()))
			}
		}
	}
}
