package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

// collector exports the daemon's models to Prometheus, read at every
// scrape: arm counts and losses from the pins, the rest from the
// supervisors.
type collector struct {
	d *Daemon

	records, corrupted, lost, decisions, renewals, held *prometheus.Desc
	dropped, partial                                    *prometheus.Desc
	mode, state, lease, generation, agents              *prometheus.Desc
	effect, relative, lower, upper, pImprove, samples   *prometheus.Desc
}

func newCollector(d *Daemon) *collector {
	m := []string{"model"}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("mlbpf_"+name, help, append(m, labels...), nil)
	}
	return &collector{
		d:          d,
		records:    desc("records_total", "Ring buffer records the daemon read."),
		corrupted:  desc("records_corrupted_total", "Records that did not decode."),
		lost:       desc("records_lost_total", "Records the kernel could not reserve in the ring buffer (full)."),
		dropped:    desc("records_dropped_total", "Records the daemon read past a dataset portion's memory cap and dropped."),
		partial:    desc("dataset_portions_partial_total", "Dataset portions that missed records (EXTRACTED_PARTIALLY)."),
		decisions:  desc("decisions_total", "Applier decisions by arm (fallback, no_rec, shadow, control, model, rejected, skipped).", "arm"),
		renewals:   desc("lease_renewals_total", "Lease renewals written by the daemon."),
		held:       desc("held_writes_total", "Daemon writes held back while it adopted an operator's change to the control block."),
		mode:       desc("mode", "1 for the model's current mode.", "mode"),
		state:      desc("state", "1 for the model's current lifecycle state.", "state"),
		lease:      desc("lease_remaining_seconds", "Seconds until the kernel falls back to its default unless the lease is renewed (negative: expired)."),
		generation: desc("control_generation", "Generation of the control block."),
		agents:     desc("agents", "Agents subscribed on the socket."),
		effect:     desc("efficiency_effect", "Estimated reward gain of the model over the default in the current mode."),
		relative:   desc("efficiency_relative", "Estimated gain relative to the default's mean reward."),
		lower:      desc("efficiency_lower", "Lower confidence bound of the gain."),
		upper:      desc("efficiency_upper", "Upper confidence bound of the gain."),
		pImprove:   desc("efficiency_p_improve", "p-value against no gain beyond the minimum effect (small: significant)."),
		samples:    desc("efficiency_samples", "Outcomes behind the efficiency estimate, by side (model, baseline).", "side"),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.records, c.corrupted, c.lost, c.dropped, c.partial, c.decisions, c.renewals, c.held, c.mode, c.state,
		c.lease, c.generation, c.agents, c.effect, c.relative, c.lower, c.upper, c.pImprove, c.samples} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	now := loader.MonotonicNs()
	for _, s := range c.d.supervisors() {
		ev, st := s.snapshot()
		name := s.name
		counter(c.records, float64(st.Records), name)
		counter(c.corrupted, float64(st.Corrupted), name)
		counter(c.dropped, float64(st.Dropped), name)
		counter(c.partial, float64(st.Partial), name)
		renewals, held := s.g.counters()
		counter(c.renewals, float64(renewals), name)
		counter(c.held, float64(held), name)
		agents, _ := s.hub.agents()
		gauge(c.agents, float64(agents), name)
		mode, state := s.m.Mode(), s.m.State()
		for i := model.ModeEmergency; i <= model.ModeRecommendation; i++ {
			gauge(c.mode, b2f(i == mode), name, i.String())
		}
		for i := model.StateCreated; i < model.StateCount; i++ {
			gauge(c.state, b2f(i == state), name, i.String())
		}
		if pm, err := loader.ReadPinned(c.d.config().PinRoot, s.cm.SubsystemName(), s.cm.ModelName()); err == nil {
			counter(c.lost, float64(pm.Lost), name)
			for arm, n := range pm.Arms {
				counter(c.decisions, float64(n), name, model.Arm(arm).String())
			}
			gauge(c.generation, float64(pm.Control.Generation), name)
			if pm.Control.LeaseExpiresNs != 0 {
				gauge(c.lease, (float64(pm.Control.LeaseExpiresNs)-float64(now))/1e9, name)
			}
		}
		if e := ev.Efficiency; e != nil {
			gauge(c.effect, e.Effect, name)
			gauge(c.relative, e.Relative, name)
			gauge(c.lower, e.Lower, name)
			gauge(c.upper, e.Upper, name)
			gauge(c.pImprove, e.PImprove, name)
			gauge(c.samples, float64(e.N), name, "model")
			gauge(c.samples, float64(e.BaselineN), name, "baseline")
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// MetricsHandler returns the /metrics handler of the daemon: its models,
// and the Go runtime and process of the daemon.
func (d *Daemon) MetricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(d), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: nil})
}

// serveMetrics serves /metrics on the configured address until ctx is
// done; the address was checked (loopback unless allowed).
func (d *Daemon) serveMetricsOf(ctx context.Context, m config.Metrics) (func(), error) {
	if m.Addr == "" {
		return func() {}, nil
	}
	if err := config.CheckMetricsAddr(m.Addr, m.AllowRemote); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	ln, err := net.Listen("tcp", m.Addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listening on %s: %w", m.Addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", d.MetricsHandler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("metrics server failed", "err", err)
		}
	}()
	d.log.Info("serving metrics", "addr", "http://"+ln.Addr().String()+"/metrics")
	d.mu.Lock()
	d.metricsAddr = ln.Addr().String()
	d.mu.Unlock()
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}, nil
}

// MetricsAddr returns the address /metrics is served on, once Ready
// ("" without metrics).
func (d *Daemon) MetricsAddr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.metricsAddr
}
