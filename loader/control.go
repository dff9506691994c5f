package loader

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/model"
)

// ControlMap is a model's pinned control block. It implements
// model.ControlStore, so every lifecycle and mode change of a model.Model
// lands in the kernel, where the appliers enforce it.
//
// The block is a seqcount latch (struct mlbpf_control in
// bpf/include/mlbpf.h): ControlMap writes it in the map's mmapped value,
// so that no decision in the kernel ever mixes two versions of it, and
// reads it the same way the appliers do.
type ControlMap struct {
	m   *ebpf.Map
	mem []byte // the mmapped value, nil for a read-only map
	ro  bool

	mu    sync.Mutex // serializes guarded stores
	lock  sync.Locker
	guard ControlGuard
}

// NewControlMap wraps a model's "control" map. It checks the map's shape so
// that a tampered or foreign pin is refused with a clear error, and maps
// its value into memory (read-only when m was opened read-only).
func NewControlMap(m *ebpf.Map) (*ControlMap, error) {
	if m == nil {
		return nil, fmt.Errorf("control map: missing")
	}
	if m.Type() != ebpf.Array || m.KeySize() != 4 || m.ValueSize() != uint32(controlSize) || m.MaxEntries() != 1 ||
		m.Flags()&unix.BPF_F_MMAPABLE == 0 {
		return nil, fmt.Errorf("control map: want an array of 1 x %d bytes, mmapable, found %s of %d x %d bytes, flags %#x (a stale or foreign pin? remove it with 'mlbpf rollback')",
			controlSize, m.Type(), m.MaxEntries(), m.ValueSize(), m.Flags())
	}
	c := &ControlMap{m: m}
	mem, err := unix.Mmap(m.FD(), 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		// A read-only descriptor cannot be mapped shared: lookups.
		c.ro = true
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mapping the control block into memory: %w", err)
	}
	c.mem = mem
	// The mapping outlives the map's descriptor; it goes with c.
	runtime.AddCleanup(c, func(b []byte) { _ = unix.Munmap(b) }, mem)
	return c, nil
}

// controlSize is sizeof(struct mlbpf_control).
const controlSize = int(unsafe.Sizeof(Control{}))

// Snapshot is struct mlbpf_snapshot, one version of a control block.
type Snapshot = abiMlbpfSnapshot

// block is the control block in the kernel's memory.
func (c *ControlMap) block() *Control { return (*Control)(unsafe.Pointer(&c.mem[0])) }

// first is the latch's first copy, the fields up to generation.
func (c *ControlMap) first() *Snapshot { return (*Snapshot)(unsafe.Pointer(&c.mem[0])) }

func loadCopy(p *Snapshot) Snapshot {
	return Snapshot{
		Mode:            atomic.LoadUint32(&p.Mode),
		State:           atomic.LoadUint32(&p.State),
		LeaseExpiresNs:  atomic.LoadUint64(&p.LeaseExpiresNs),
		CollabPermille:  atomic.LoadUint32(&p.CollabPermille),
		HoldoutPermille: atomic.LoadUint32(&p.HoldoutPermille),
		Generation:      atomic.LoadUint32(&p.Generation),
	}
}

func storeCopy(p *Snapshot, v Snapshot) {
	atomic.StoreUint32(&p.Mode, v.Mode)
	atomic.StoreUint32(&p.State, v.State)
	atomic.StoreUint64(&p.LeaseExpiresNs, v.LeaseExpiresNs)
	atomic.StoreUint32(&p.CollabPermille, v.CollabPermille)
	atomic.StoreUint32(&p.HoldoutPermille, v.HoldoutPermille)
	atomic.StoreUint32(&p.Generation, v.Generation)
}

// snapshot reads one version of the block as the appliers do
// (mlbpf_snapshot_take): the copy the sequence count names, kept if the
// count did not change meanwhile. Writers hold the pin directory's lock
// for microseconds; after many attempts something is wrong.
func (c *ControlMap) snapshot() (Snapshot, error) {
	if c.ro {
		return c.lookupSnapshot()
	}
	b := c.block()
	for try := 0; try < 1000; try++ {
		seq := atomic.LoadUint32(&b.Seq)
		src := c.first()
		if seq&1 != 0 {
			src = &b.Spare
		}
		v := loadCopy(src)
		if atomic.LoadUint32(&b.Seq) == seq {
			return v, nil
		}
		runtime.Gosched()
	}
	return Snapshot{}, fmt.Errorf("reading control block: it changed at each of 1000 attempts (a writer not holding the pin directory's lock? stop it)")
}

// lookupSnapshot is snapshot for a read-only map: a lookup copies the
// value without regard to the sequence count, so two lookups must agree.
func (c *ControlMap) lookupSnapshot() (Snapshot, error) {
	var prev Control
	for try := 0; try < 1000; try++ {
		var v Control
		if err := c.m.Lookup(uint32(0), &v); err != nil {
			return Snapshot{}, fmt.Errorf("reading control block: %w", err)
		}
		if try > 0 && v == prev {
			if v.Seq&1 != 0 {
				return v.Spare, nil
			}
			return Snapshot{Mode: v.Mode, State: v.State, LeaseExpiresNs: v.LeaseExpiresNs,
				CollabPermille: v.CollabPermille, HoldoutPermille: v.HoldoutPermille, Generation: v.Generation}, nil
		}
		prev = v
	}
	return Snapshot{}, fmt.Errorf("reading control block: it changed at each of 1000 lookups (a writer not holding the pin directory's lock? stop it)")
}

// Raw reads the control block as the kernel sees it: one version of it,
// in the fields up to Generation, with Seq and Spare zero. Written back as
// is, by a map update or bpftool, it is that version again.
func (c *ControlMap) Raw() (Control, error) {
	v, err := c.snapshot()
	if err != nil {
		return Control{}, err
	}
	return Control{
		Mode:            v.Mode,
		State:           v.State,
		LeaseExpiresNs:  v.LeaseExpiresNs,
		CollabPermille:  v.CollabPermille,
		HoldoutPermille: v.HoldoutPermille,
		Generation:      v.Generation,
	}, nil
}

// LoadControl implements model.ControlStore.
func (c *ControlMap) LoadControl() (model.Control, error) {
	v, err := c.snapshot()
	if err != nil {
		return model.Control{}, err
	}
	return model.Control{
		Mode:            model.Mode(v.Mode),
		State:           model.State(v.State),
		LeaseExpiresNs:  v.LeaseExpiresNs,
		CollabPermille:  v.CollabPermille,
		HoldoutPermille: v.HoldoutPermille,
		Generation:      v.Generation,
	}, nil
}

// StoreControl implements model.ControlStore. The block is written as one
// new version: no decision sees part of it. On a guarded ControlMap (SetGuard) the guard may hold
// the write back; StoreControl then writes nothing and returns nil.
func (c *ControlMap) StoreControl(mc model.Control) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.guard == nil {
		return c.write(mc)
	}
	if c.lock != nil {
		c.lock.Lock()
		defer c.lock.Unlock()
	}
	kernel, err := c.LoadControl()
	if err != nil {
		return err
	}
	if !c.guard.Admit(kernel, mc) {
		return nil
	}
	mc.Generation = generationAfter(kernel, mc)
	if err := c.write(mc); err != nil {
		return err
	}
	c.guard.Stored(mc)
	return nil
}

// generationAfter returns the generation next may be written with over
// kernel, the block another writer may have stored since next's writer
// last looked: generations in the kernel never go back, and one
// generation never names two blocks that differ in more than the lease.
// Under the pin directory's lock, as every writer is.
func generationAfter(kernel, next model.Control) uint32 {
	if int32(next.Generation-kernel.Generation) > 0 {
		return next.Generation
	}
	renewal := next
	renewal.LeaseExpiresNs, renewal.Generation = kernel.LeaseExpiresNs, kernel.Generation
	if renewal == kernel {
		return kernel.Generation // a lease renewal of the block in force
	}
	if kernel.Generation+1 == 0 {
		return 1
	}
	return kernel.Generation + 1
}

// write stores mc as the block's next version. One writer at a time: the
// caller holds the pin directory's lock (or c.mu, in tests). The order of
// the steps is what keeps every reader on a complete copy; a writer that
// dies between two steps leaves a complete copy named by the count, which
// the next write starts from.
func (c *ControlMap) write(mc model.Control) error {
	if c.ro {
		return fmt.Errorf("writing control block: the map was opened read-only")
	}
	v := Snapshot{
		Mode:            uint32(mc.Mode),
		State:           uint32(mc.State),
		LeaseExpiresNs:  mc.LeaseExpiresNs,
		CollabPermille:  mc.CollabPermille,
		HoldoutPermille: mc.HoldoutPermille,
		Generation:      mc.Generation,
	}
	b := c.block()
	seq := atomic.LoadUint32(&b.Seq)
	if seq&1 == 0 {
		// Readers copy the first copy: the spare is free.
		storeCopy(&b.Spare, v)
		seq++
		atomic.StoreUint32(&b.Seq, seq) // readers copy the spare, v
	}
	// Readers copy the spare (v, or the last complete version if a writer
	// died here): the first copy is free.
	storeCopy(c.first(), v)
	atomic.StoreUint32(&b.Seq, seq+1) // readers copy the first copy, v
	return nil
}

// ArmCounts sums a model's per-CPU "stats" map: how many invocations took
// each arm since the map was created.
func ArmCounts(stats *ebpf.Map) ([ArmCount]uint64, error) {
	var out [ArmCount]uint64
	var perCPU []uint64
	for arm := range uint32(ArmCount) {
		if err := stats.Lookup(arm, &perCPU); err != nil {
			return out, fmt.Errorf("reading arm counts: %w", err)
		}
		for _, n := range perCPU {
			out[arm] += n
		}
	}
	return out, nil
}

// LostRecords sums a model's per-CPU "lost" map: ring buffer reservations
// that failed since the map was created.
func LostRecords(lost *ebpf.Map) (uint64, error) {
	var perCPU []uint64
	if err := lost.Lookup(uint32(0), &perCPU); err != nil {
		return 0, fmt.Errorf("reading lost records: %w", err)
	}
	var sum uint64
	for _, n := range perCPU {
		sum += n
	}
	return sum, nil
}
