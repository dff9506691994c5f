package loader

import (
	"fmt"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/mlbpf/mlbpf/model"
)

// ControlMap is a model's pinned control block. It implements
// model.ControlStore, so every lifecycle and mode change of a model.Model
// lands in the kernel, where the appliers enforce it.
type ControlMap struct {
	m *ebpf.Map

	mu    sync.Mutex // serializes guarded stores
	lock  sync.Locker
	guard ControlGuard
}

// NewControlMap wraps a model's "control" map. It checks the map's shape so
// that a tampered or foreign pin is refused with a clear error.
func NewControlMap(m *ebpf.Map) (*ControlMap, error) {
	if m == nil {
		return nil, fmt.Errorf("control map: missing")
	}
	if m.Type() != ebpf.Array || m.KeySize() != 4 || m.ValueSize() != uint32(controlSize) || m.MaxEntries() != 1 {
		return nil, fmt.Errorf("control map: want an array of 1 x %d bytes, found %s of %d x %d bytes (a stale or foreign pin? remove it with 'mlbpf rollback')",
			controlSize, m.Type(), m.MaxEntries(), m.ValueSize())
	}
	return &ControlMap{m: m}, nil
}

// controlSize is sizeof(struct mlbpf_control).
const controlSize = 32

// Raw reads the control block as the kernel sees it.
func (c *ControlMap) Raw() (Control, error) {
	var v Control
	if err := c.m.Lookup(uint32(0), &v); err != nil {
		return v, fmt.Errorf("reading control block: %w", err)
	}
	return v, nil
}

// LoadControl implements model.ControlStore.
func (c *ControlMap) LoadControl() (model.Control, error) {
	v, err := c.Raw()
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

// StoreControl implements model.ControlStore. The whole block is written
// in one map update. On a guarded ControlMap (SetGuard) the guard may hold
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

func (c *ControlMap) write(mc model.Control) error {
	v := Control{
		Mode:            uint32(mc.Mode),
		State:           uint32(mc.State),
		LeaseExpiresNs:  mc.LeaseExpiresNs,
		CollabPermille:  mc.CollabPermille,
		HoldoutPermille: mc.HoldoutPermille,
		Generation:      mc.Generation,
	}
	if err := c.m.Update(uint32(0), &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("writing control block: %w", err)
	}
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
