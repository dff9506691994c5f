package ringbuf

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// LostCounter reads a model's "lost" map, where the BPF collectors count
// the ring buffer reservations that failed because the ring was full
// (mlbpf_count_lost in bpf/include/mlbpf.h): a per-CPU array of one u64.
type LostCounter struct {
	m      *ebpf.Map
	perCPU []uint64
	last   uint64
}

// NewLostCounter wraps a "lost" map. Delta counts from now on.
func NewLostCounter(m *ebpf.Map) (*LostCounter, error) {
	if m == nil {
		return nil, fmt.Errorf("lost map: missing")
	}
	if m.Type() != ebpf.PerCPUArray || m.KeySize() != 4 || m.ValueSize() != 8 || m.MaxEntries() < 1 {
		return nil, fmt.Errorf("lost map: want a per-CPU array of u64, found %s of %d x %d bytes (a stale or foreign pin?)",
			m.Type(), m.MaxEntries(), m.ValueSize())
	}
	c := &LostCounter{m: m}
	total, err := c.Total()
	if err != nil {
		return nil, err
	}
	c.last = total
	return c, nil
}

// Total is the number of records lost since the map was created, summed
// over CPUs.
func (c *LostCounter) Total() (uint64, error) {
	if err := c.m.Lookup(uint32(0), &c.perCPU); err != nil {
		return 0, fmt.Errorf("reading lost records: %w", err)
	}
	var sum uint64
	for _, n := range c.perCPU {
		sum += n
	}
	return sum, nil
}

// Delta is the number of records lost since the previous call to Delta,
// or since NewLostCounter for the first one.
func (c *LostCounter) Delta() (uint64, error) {
	total, err := c.Total()
	if err != nil {
		return 0, err
	}
	d := total - c.last
	c.last = total
	return d, nil
}
