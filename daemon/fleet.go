package daemon

import (
	"context"

	"github.com/mlbpf/mlbpf/fleet/natsbus"
)

// startFleet shares the learners of the models that can share
// (pipeline.FleetLearner) with the fleet configured in "fleet:", if any,
// until the returned function is called. NATS down does not stop the
// daemon: the bus works alone until it is back.
func (d *Daemon) startFleet(ctx context.Context) (func(), error) {
	f := d.cfg.Fleet
	if !f.Enabled() {
		return func() {}, nil
	}
	bus, err := natsbus.New(natsbus.Config{
		URLs: f.URLs, User: f.User, Password: f.Password, NKeySeed: f.NKeySeed, Creds: f.Creds,
		CA: f.TLS.CA, Cert: f.TLS.Cert, Key: f.TLS.Key, Bucket: f.Bucket, Replicas: f.Replicas,
		Host: f.HostName(), Interval: f.Interval, HalfLife: f.HalfLife, MaxAge: f.MaxAge, Log: d.log,
	})
	if err != nil {
		return nil, err
	}
	var shared []string
	for _, s := range d.supervisors() {
		if l := s.r.Fleet(); l != nil {
			bus.Add(s.name, l)
			shared = append(shared, s.name)
		}
	}
	d.mu.Lock()
	d.fleet = bus
	d.mu.Unlock()
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := bus.Run(ctx); err != nil {
			d.log.Error("fleet: not sharing", "err", err)
		}
	}()
	d.log.Info("fleet: sharing the learners", "models", shared, "urls", f.URLs, "host", f.HostName())
	return func() { cancel(); <-done }, nil
}

// Fleet returns the fleet's bus, nil when no fleet is configured or the
// daemon is not running.
func (d *Daemon) Fleet() *natsbus.Bus {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fleet
}
