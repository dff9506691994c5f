package readahead

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/ringbuf"
)

// tracepoint is one event the collector attaches to.
type tracepoint struct {
	group, name, prog string
	// required: without it the collector refuses to start.
	required bool
}

var tracepoints = []tracepoint{
	{"readahead", "page_cache_sync_ra", "ra_sync", false},
	{"readahead", "page_cache_async_ra", "ra_async", false},
	{"readahead", "page_cache_ra_order", "ra_order", false},
	{"filemap", "mm_filemap_add_to_page_cache", "ra_add", true},
	{"filemap", "mm_filemap_delete_from_page_cache", "ra_delete", true},
	{"filemap", "mm_filemap_get_pages", "ra_get_pages", false},
	{"filemap", "mm_filemap_fault", "ra_fault", false},
	{"block", "block_rq_issue", "ra_rq_issue", true},
	{"block", "block_rq_complete", "ra_rq_complete", true},
}

// tracefs is where the kernel lists its trace events.
var tracefs = "/sys/kernel/tracing"

// CollectorConfig configures a Collector.
type CollectorConfig struct {
	// PinDir pins the maps there (adopting pins of an earlier run); ""
	// pins nothing.
	PinDir string
	// Window is the features' window; 0 means 250 ms.
	Window time.Duration
	// Without names optional tracepoints ("group:name") to do without as
	// if the kernel lacked them: an older kernel's behaviour on any kernel
	// (6.1 has no readahead: events, mm_filemap_get_pages or
	// mm_filemap_fault).
	Without []string
}

// Collector is the loaded and attached BPF collector.
type Collector struct {
	objs    readaheadObjects
	coll    *ebpf.Collection
	links   []link.Link
	reader  *ringbuf.Reader
	control *loader.ControlMap
	// Missing names the tracepoints this kernel lacks ("group:name"); the
	// collector works without them, with fewer features.
	Missing []string
}

// Attached names the programs attached, one per tracepoint ("group:name").
func (c *Collector) Attached() []string {
	var out []string
	for _, tp := range tracepoints {
		if !contains(c.Missing, tp.group+":"+tp.name) {
			out = append(out, tp.group+":"+tp.name)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// NewCollector loads the collector and attaches it to every tracepoint
// the kernel has. A missing optional tracepoint is listed in Missing; a
// missing required one (filemap add/delete, block issue/complete) is an
// error naming it.
func NewCollector(cfg CollectorConfig) (_ *Collector, err error) {
	if cfg.Window == 0 {
		cfg.Window = 250 * time.Millisecond
	}
	spec, err := loadReadahead()
	if err != nil {
		return nil, fmt.Errorf("loading readahead collector spec: %w", err)
	}
	if err := spec.Variables["window_ns"].Set(uint64(cfg.Window)); err != nil {
		return nil, fmt.Errorf("setting the window: %w", err)
	}
	c := &Collector{}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	for _, tp := range tracepoints {
		_, err := os.Stat(filepath.Join(tracefs, "events", tp.group, tp.name))
		if err == nil && !tp.required && contains(cfg.Without, tp.group+":"+tp.name) {
			err = os.ErrNotExist
		}
		if err != nil {
			if tp.required {
				return nil, fmt.Errorf("loading readahead collector: the kernel has no tracepoint %s:%s (is tracefs mounted? mount -t tracefs nodev %s)", tp.group, tp.name, tracefs)
			}
			c.Missing = append(c.Missing, tp.group+":"+tp.name)
			delete(spec.Programs, tp.prog) // its types may be missing too
		}
	}
	if cfg.PinDir != "" {
		c.coll, err = loader.LoadPinned(spec, cfg.PinDir)
		if err != nil {
			return nil, err
		}
	} else {
		c.coll, err = ebpf.NewCollection(spec)
		if err != nil {
			return nil, fmt.Errorf("loading readahead collector: %w", err)
		}
	}
	if err := c.coll.Assign(&c.objs.readaheadMaps); err != nil {
		return nil, fmt.Errorf("loading readahead collector: %w", err)
	}
	for _, tp := range tracepoints {
		prog := c.coll.Programs[tp.prog]
		if prog == nil {
			continue
		}
		l, err := link.Tracepoint(tp.group, tp.name, prog, nil)
		if err != nil {
			return nil, fmt.Errorf("attaching to tracepoint %s:%s: %w", tp.group, tp.name, err)
		}
		c.links = append(c.links, l)
	}
	c.control, err = loader.NewControlMap(c.objs.Control)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Control is the model's control block.
func (c *Collector) Control() *loader.ControlMap { return c.control }

// Stats is the per-CPU count of windows by arm.
func (c *Collector) Stats() *ebpf.Map { return c.objs.Stats }

// Lost is the per-CPU count of windows the ring had no room for.
func (c *Collector) Lost() *ebpf.Map { return c.objs.Lost }

// Events is the ring of windows, for a consumer other than Read (the
// daemon's loop): only one may read it.
func (c *Collector) Events() *ebpf.Map { return c.objs.Events }

// Programs returns the attached programs by name.
func (c *Collector) Programs() map[string]*ebpf.Program { return c.coll.Programs }

// Watch starts (or updates) watching the device dev (major << 20 |
// minor), recording arm and kb as the setting in force.
func (c *Collector) Watch(dev uint32, arm model.Arm, kb uint32) error {
	v := readaheadRaDevice{Arm: uint32(arm), RaKb: kb}
	if err := c.objs.Devices.Update(dev, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("watching device %d:%d: %w", dev>>20, dev&(1<<20-1), err)
	}
	a := readaheadRaAcc{StartNs: loader.MonotonicNs()}
	err := c.objs.Acc.Update(dev, &a, ebpf.UpdateNoExist)
	if err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		return fmt.Errorf("watching device %d:%d: %w", dev>>20, dev&(1<<20-1), err)
	}
	return nil
}

// Unwatch stops watching dev.
func (c *Collector) Unwatch(dev uint32) error {
	err := c.objs.Devices.Delete(dev)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unwatching device: %w", err)
	}
	_ = c.objs.Acc.Delete(dev)
	return nil
}

// Read calls fn for every window in the ring, waiting until deadline for
// the first.
func (c *Collector) Read(deadline time.Time, fn func(*Window)) error {
	if c.reader == nil {
		r, err := ringbuf.NewReader(c.objs.Events)
		if err != nil {
			return fmt.Errorf("opening the readahead ring: %w", err)
		}
		c.reader = r
	}
	c.reader.SetDeadline(deadline)
	var w Window
	_, err := c.reader.ReadBatch(func(rec []byte) error {
		if err := Decode(rec, &w); err != nil {
			return nil // counted by the caller's dataset, never fatal
		}
		fn(&w)
		return nil
	})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return err
}

// Close detaches the collector and closes its objects; pins stay.
func (c *Collector) Close() error {
	var errs []error
	for _, l := range c.links {
		errs = append(errs, l.Close())
	}
	if c.reader != nil {
		errs = append(errs, c.reader.Close())
	}
	if c.coll != nil {
		c.coll.Close()
	}
	return errors.Join(errs...)
}
