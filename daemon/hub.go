package daemon

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
)

// retainPortions is how many published portions a model keeps for agents
// to fetch; older ones are evicted (OBSOLETE) whether discarded or not,
// so a stalled agent costs bounded memory.
const retainPortions = 4

// hub is one model's publication point: the portions it published and
// keeps for fetching, and the subscribers it notifies.
type hub struct {
	name   string
	format pipeline.RecordFormat

	mu       sync.Mutex
	retained []*portion
	subs     map[uint64]func(agent.Event)
	// lastAgent is when a subscriber was last connected.
	lastAgent time.Time
	// free receives the datasets nobody needs any more, for the loop to
	// reuse (ringbuf.DatasetBuilder.Discard is not safe for concurrent
	// use, so the loop does it).
	free chan *model.Dataset
	// spool, if not nil, keeps the retained portions on disk across
	// restarts.
	spool        *spool
	spoolFailing atomic.Bool
	log          *slog.Logger
}

type portion struct {
	ds      *model.Dataset
	meta    agent.Portion // without records
	pending map[uint64]bool
}

func newHub(name string, format pipeline.RecordFormat) *hub {
	return &hub{name: name, format: format, subs: map[uint64]func(agent.Event){},
		lastAgent: time.Now(), free: make(chan *model.Dataset, retainPortions+1), log: slog.New(slog.DiscardHandler)}
}

// restore makes the hub keep its portions in dir, and retain again those a
// previous daemon left there. It returns the stream index after the last
// one, where the model's next portion starts (0 when there is none). An
// unreadable spool is reported and the hub starts without it.
func (h *hub) restore(dir string, log *slog.Logger) uint64 {
	sp := &spool{dir: dir}
	ps, err := sp.load(h.format, retainPortions, log, h.name)
	if err != nil {
		// The model runs all the same: losing old portions is better than
		// not running. Saving will say whether the spool works.
		log.Warn("the spooled dataset portions are unreadable: starting without them", "model", h.name, "err", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.spool, h.log, h.retained = sp, log, ps
	if len(ps) == 0 {
		return 0
	}
	last := ps[len(ps)-1]
	log.Info("dataset portions kept from before the restart", "model", h.name, "portions", len(ps),
		"first_offset", ps[0].meta.Offset, "next_offset", last.ds.NextOffset())
	return last.ds.NextOffset()
}

// meta describes ds as published under n.
func meta(name string, ds *model.Dataset, n model.Notification, kind uint16) agent.Portion {
	return agent.Portion{
		Model: name, Offset: ds.PortionOffset, Size: ds.PortionSize,
		Type: ds.Type.String(), State: ds.State.String(),
		RecordKind: kind, RecordSize: ds.RecordSize,
		Lost: ds.Lost, Corrupted: ds.Corrupted,
		Mode: n.Mode.String(), Generation: n.Generation,
	}
}

// publish keeps ds for fetching, evicting the oldest portion beyond
// retainPortions, and notifies the subscribers. The hub owns ds from now
// on and hands it back on free.
func (h *hub) publish(ds *model.Dataset, n model.Notification) agent.Portion {
	m := meta(h.name, ds, n, h.format.Kind)
	if h.spool != nil && (ds.Len() > 0 || ds.Lost > 0 || ds.Corrupted > 0) {
		// Said once while it keeps failing (a full or read-only disk),
		// and once when it works again.
		err := h.spool.save(m, ds)
		switch {
		case err != nil && !h.spoolFailing.Load():
			h.log.Warn("spooling dataset portions failed: they will not outlive the daemon until it works again", "model", h.name, "offset", m.Offset, "err", err)
		case err == nil && h.spoolFailing.Load():
			h.log.Info("spooling dataset portions works again", "model", h.name, "offset", m.Offset)
		}
		h.spoolFailing.Store(err != nil)
	}
	h.mu.Lock()
	p := &portion{ds: ds, meta: m, pending: map[uint64]bool{}}
	for id := range h.subs {
		p.pending[id] = true
	}
	h.retained = append(h.retained, p)
	for len(h.retained) > retainPortions {
		h.releaseLocked(0, true)
	}
	sinks := h.sinksLocked()
	h.mu.Unlock()
	ev := agent.Event{Type: agent.EventDataset, Model: h.name, Portion: &m}
	for _, s := range sinks {
		s(ev)
	}
	return m
}

func (h *hub) sinksLocked() []func(agent.Event) {
	out := make([]func(agent.Event), 0, len(h.subs))
	for _, s := range h.subs {
		out = append(out, s)
	}
	return out
}

// Publish implements pipeline.Publisher: it publishes ds through m, for
// its notification, then keeps it for fetching (publish).
func (h *hub) Publish(m *model.Model, ds *model.Dataset) {
	n, err := m.PublishData(ds)
	if err != nil {
		h.log.Warn("publishing dataset", "model", h.name, "err", err)
	}
	h.publish(ds, n)
}

// Free implements pipeline.Publisher.
func (h *hub) Free() *model.Dataset {
	select {
	case ds := <-h.free:
		return ds
	default:
		return nil
	}
}

// releaseLocked drops retained portion i and hands its dataset back; with
// forget (evicted or discarded, not a shutdown) the spool forgets it too.
func (h *hub) releaseLocked(i int, forget bool) {
	p := h.retained[i]
	h.retained = append(h.retained[:i], h.retained[i+1:]...)
	if forget && h.spool != nil {
		if err := h.spool.remove(p.meta.Offset); err != nil {
			h.log.Warn("removing a spooled dataset portion", "model", h.name, "offset", p.meta.Offset, "err", err)
		}
	}
	select {
	case h.free <- p.ds:
	default: // the loop has enough spares: let the GC have it
	}
}

// notify sends ev to every subscriber.
func (h *hub) notify(ev agent.Event) {
	h.mu.Lock()
	sinks := h.sinksLocked()
	h.mu.Unlock()
	for _, s := range sinks {
		s(ev)
	}
}

func (h *hub) subscribe(client uint64, sink func(agent.Event)) func() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[client] = sink
	h.lastAgent = time.Now()
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.subs, client)
		h.lastAgent = time.Now()
		for i := len(h.retained) - 1; i >= 0; i-- {
			p := h.retained[i]
			delete(p.pending, client)
		}
	}
}

// offsets returns the offsets of the retained portions, oldest first.
func (h *hub) offsets() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]uint64, len(h.retained))
	for i, p := range h.retained {
		out[i] = p.meta.Offset
	}
	return out
}

// agents returns the number of subscribers, and since when there has been
// none (zero time while there are some).
func (h *hub) agents() (int, time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) > 0 {
		return len(h.subs), time.Time{}
	}
	return 0, h.lastAgent
}

func (h *hub) find(offset *uint64) (int, error) {
	if len(h.retained) == 0 {
		return -1, fmt.Errorf("%s: no dataset portion published yet", h.name)
	}
	if offset == nil {
		return len(h.retained) - 1, nil
	}
	for i, p := range h.retained {
		if p.meta.Offset == *offset {
			return i, nil
		}
	}
	first, last := h.retained[0].meta.Offset, h.retained[len(h.retained)-1].meta.Offset
	if *offset < first {
		return -1, fmt.Errorf("%s: portion %d is OBSOLETE: evicted (the daemon keeps the last %d, offsets %d to %d)",
			h.name, *offset, retainPortions, first, last)
	}
	return -1, fmt.Errorf("%s: no portion at offset %d (the daemon holds offsets %d to %d)", h.name, *offset, first, last)
}

// fetch returns a retained portion, with its records decoded and/or raw.
func (h *hub) fetch(offset *uint64, records, raw bool) (*agent.Portion, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i, err := h.find(offset)
	if err != nil {
		return nil, err
	}
	p := h.retained[i]
	out := p.meta
	if raw {
		out.Data = append([]byte(nil), p.ds.Data...)
	}
	if records {
		out.Records = make([]json.RawMessage, 0, p.ds.Len())
		for _, rec := range p.ds.All() {
			v, err := h.format.JSON(rec)
			if err != nil {
				out.Records = append(out.Records, json.RawMessage(fmt.Sprintf(`{"error":%q}`, err.Error())))
				continue
			}
			b, err := json.Marshal(v)
			if err != nil {
				return nil, fmt.Errorf("%s: encoding a record: %w", h.name, err)
			}
			out.Records = append(out.Records, b)
		}
	}
	return &out, nil
}

// discard marks a portion consumed by client; it is released once every
// subscriber it was published to has discarded it. A client that is not
// a subscriber (the CLI) releases it outright, and with no offset every
// retained portion.
func (h *hub) discard(offset *uint64, client uint64) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, subscribed := h.subs[client]
	if offset == nil {
		if subscribed {
			for _, p := range h.retained {
				delete(p.pending, client)
			}
			return h.sweepLocked(), nil
		}
		n := len(h.retained)
		for len(h.retained) > 0 {
			h.releaseLocked(0, true)
		}
		return n, nil
	}
	i, err := h.find(offset)
	if err != nil {
		return 0, err
	}
	if !subscribed {
		h.releaseLocked(i, true)
		return 1, nil
	}
	delete(h.retained[i].pending, client)
	return h.sweepLocked(), nil
}

// sweepLocked releases the portions every subscriber has discarded,
// except the newest (kept for 'mlbpf dataset get').
func (h *hub) sweepLocked() int {
	n := 0
	for i := 0; i < len(h.retained)-1; {
		if len(h.retained[i].pending) == 0 {
			h.releaseLocked(i, true)
			n++
			continue
		}
		i++
	}
	return n
}

// close releases everything; the spool keeps the portions for the next
// daemon.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(h.retained) > 0 {
		h.releaseLocked(0, false)
	}
	h.subs = map[uint64]func(agent.Event){}
}
