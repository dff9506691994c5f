package readahead

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/pipeline"
)

// Entries implements pipeline.Keyed: one entry per device the model
// tunes, in the configuration's order, that has a recommendation: the
// operator's readahead ("1024"), or else the learner's per phase
// ("mmap=16,random=16,sequential=1024"). A device with neither is left
// out: it keeps its original setting.
func (o *objects) Entries() ([]pipeline.Entry, error) {
	return o.t.Entries(), nil
}

// WithdrawKey implements pipeline.Keyed: key is a device (sda or
// /dev/sda). An operator's recommendation is withdrawn first (the
// learner's choices apply again); with none, the learner forgets what it
// learned for the device, which goes back to its original setting at the
// next time block and is learned afresh.
func (o *objects) WithdrawKey(key string) (string, error) {
	return o.t.Withdraw(key)
}

var _ pipeline.Keyed = (*objects)(nil)

// Entries lists the devices' recommendations (see objects.Entries).
func (t *Tuner) Entries() []pipeline.Entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	known := t.learner.Known()
	var out []pipeline.Entry
	for _, d := range t.devices {
		if d.override != 0 {
			out = append(out, pipeline.Entry{Key: d.Name, Value: strconv.FormatUint(uint64(d.override), 10), By: pipeline.ByOperator})
			continue
		}
		if len(known[d.Dev]) == 0 {
			continue
		}
		var parts []string
		for p, kb := range known[d.Dev] {
			parts = append(parts, fmt.Sprintf("%v=%d", p, kb))
		}
		slices.Sort(parts)
		out = append(out, pipeline.Entry{Key: d.Name, Value: strings.Join(parts, ","), By: pipeline.ByLearner})
	}
	return out
}

// Withdraw withdraws the recommendation for the device named key (see
// objects.WithdrawKey) and returns its name.
func (t *Tuner) Withdraw(key string) (string, error) {
	name, err := deviceKey(key, t.cfg.Devices)
	if err != nil {
		return key, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, d := range t.devices {
		if d.Name != name {
			continue
		}
		if d.override != 0 {
			d.override = 0
		} else {
			t.learner.Forget(d.Dev)
		}
		d.blockEnd = time.Time{} // a new block, and choice, at once
	}
	return name, nil
}

// deviceKey validates a recommendation's key: one of devices, by name or
// /dev path.
func deviceKey(key string, devices []string) (string, error) {
	name := strings.TrimPrefix(key, "/dev/")
	if name == "" || filepath.Base(name) != name {
		return key, fmt.Errorf("invalid key %q: want a block device's name, e.g. sda", key)
	}
	for _, d := range devices {
		if strings.TrimPrefix(d, "/dev/") == name {
			return name, nil
		}
	}
	return key, fmt.Errorf("%q is not one of the model's devices %v", key, devices)
}

// pinnedKeys serves 'mlbpf recommendations' and 'recommend --withdraw'
// with no daemon running: the model keeps its recommendations in the
// daemon, and a stopped model has put every device back, so there is
// nothing to list or withdraw; keys are still validated.
func pinnedKeys(sec config.Section, _, _ string) (pipeline.PinnedKeys, error) {
	return noDaemonKeys{devices: sec.(*SectionConfig).Devices}, nil
}

type noDaemonKeys struct{ devices []string }

func (noDaemonKeys) Entries() ([]pipeline.Entry, error) { return nil, nil }

func (k noDaemonKeys) WithdrawKey(key string) (string, error) { return deviceKey(key, k.devices) }

func (noDaemonKeys) Close() error { return nil }
