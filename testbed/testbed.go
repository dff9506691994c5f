package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/loader"
)

// Addresses of the two ends.
var (
	ClientAddr  = netip.MustParseAddr("198.18.0.1")
	ServerAddr  = netip.MustParseAddr("198.18.0.2")
	ClientAddr6 = netip.MustParseAddr("fd00:6d6c:6270::1")
	ServerAddr6 = netip.MustParseAddr("fd00:6d6c:6270::2")
	// Prefix and Prefix6 hold both ends.
	Prefix  = netip.MustParsePrefix("198.18.0.0/24")
	Prefix6 = netip.MustParsePrefix("fd00:6d6c:6270::/64")
)

const linkName = "veth0"

// Config describes a testbed.
type Config struct {
	// Name prefixes the namespaces' names (default "mlbpf-tb"); the
	// process id and a counter are appended.
	Name string
	// LossPercent is the share of TCP packets from client to server that
	// are dropped, 0 to 100.
	LossPercent float64
	// RateMbit limits the client's egress with tbf (0: no limit).
	RateMbit uint64
	// CongestionControl is both namespaces' default (default "cubic").
	CongestionControl string
	// Cgroup creates a child cgroup v2 and moves the process into it
	// until Close (see the package documentation).
	Cgroup bool
	// CgroupRoot is where that child is created (default: the root of
	// the cgroup v2 mount, loader.Cgroup2Root).
	CgroupRoot string
}

// Testbed is a client and a server namespace joined by a veth pair.
type Testbed struct {
	Client, Server *Namespace

	cfg    Config
	lossy  lossyObjects
	loaded bool
	cg     *cgroup
	// outside is the sibling cgroup Outside moves the process to, made
	// on first use; outMu serialises Outside.
	outMu   sync.Mutex
	outside string
	// release undoes the change to the host's allowed algorithms.
	release func() error

	mu      sync.Mutex
	cmds    []*exec.Cmd
	closed  bool
	closeMu sync.Mutex
	stop    func() bool
}

var seq atomic.Uint32

// New builds a testbed. It is torn down by Close, or as soon as ctx is
// cancelled.
func New(ctx context.Context, cfg Config) (tb *Testbed, err error) {
	if cfg.Name == "" {
		cfg.Name = "mlbpf-tb"
	}
	if cfg.CongestionControl == "" {
		cfg.CongestionControl = "cubic"
	}
	if cfg.LossPercent < 0 || cfg.LossPercent > 100 {
		return nil, fmt.Errorf("building testbed: loss %.2f%% out of range [0, 100]", cfg.LossPercent)
	}
	if err := loader.CheckPrivileges(); err != nil {
		return nil, fmt.Errorf("building testbed: %w", err)
	}
	t := &Testbed{cfg: cfg}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("building testbed: %w", err), t.Close())
		}
	}()

	if cfg.Cgroup && cfg.CgroupRoot == "" {
		if cfg.CgroupRoot, err = loader.Cgroup2Root(); err != nil {
			return t, err
		}
	}
	sweep(cfg.Name, cfg.CgroupRoot)
	base := fmt.Sprintf("%s-%d-%d", cfg.Name, os.Getpid(), seq.Add(1))
	if t.Client, err = newNamespace(base + "-client"); err != nil {
		return t, err
	}
	if t.Server, err = newNamespace(base + "-server"); err != nil {
		return t, err
	}
	if err := t.wire(); err != nil {
		return t, err
	}
	if t.release, err = allowCC(cfg.CongestionControl); err != nil {
		return t, err
	}
	for _, ns := range []*Namespace{t.Client, t.Server} {
		for _, kv := range [][2]string{
			{"net.ipv4.tcp_congestion_control", cfg.CongestionControl},
			{"net.ipv4.tcp_no_metrics_save", "1"},
		} {
			if err := ns.Sysctl(kv[0], kv[1]); err != nil {
				return t, err
			}
		}
	}
	if err := t.attachLossy(); err != nil {
		return t, err
	}
	if err := t.SetLoss(cfg.LossPercent); err != nil {
		return t, err
	}
	if cfg.RateMbit > 0 {
		if err := t.limitRate(cfg.RateMbit); err != nil {
			return t, err
		}
	}
	if cfg.Cgroup {
		if t.cg, err = enterCgroup(cfg.CgroupRoot, base); err != nil {
			return t, err
		}
	}
	t.stop = context.AfterFunc(ctx, func() { _ = t.Close() })
	return t, nil
}

// wire creates the veth pair with one end in each namespace, and
// addresses and brings up both.
func (t *Testbed) wire() error {
	host, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("opening netlink: %w", err)
	}
	defer host.Close()
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{
			Name:      linkName,
			Namespace: netlink.NsFd(int(t.Client.handle)),
			TxQLen:    1000,
		},
		PeerName:      linkName,
		PeerNamespace: netlink.NsFd(int(t.Server.handle)),
		PeerTxQLen:    1000,
	}
	if err := host.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth pair: %w", err)
	}
	for _, end := range []struct {
		ns       *Namespace
		v4, v6   netip.Addr
		pfx, pf6 netip.Prefix
	}{
		{t.Client, ClientAddr, ClientAddr6, Prefix, Prefix6},
		{t.Server, ServerAddr, ServerAddr6, Prefix, Prefix6},
	} {
		if err := configureEnd(end.ns, end.v4, end.pfx.Bits(), end.v6, end.pf6.Bits()); err != nil {
			return err
		}
	}
	return nil
}

func configureEnd(ns *Namespace, v4 netip.Addr, bits4 int, v6 netip.Addr, bits6 int) error {
	h, err := netlink.NewHandleAt(ns.handle)
	if err != nil {
		return fmt.Errorf("opening netlink in netns %s: %w", ns.name, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("finding lo in netns %s: %w", ns.name, err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bringing lo up in netns %s: %w", ns.name, err)
	}
	l, err := h.LinkByName(linkName)
	if err != nil {
		return fmt.Errorf("finding %s in netns %s: %w", linkName, ns.name, err)
	}
	addrs := []*netlink.Addr{
		{IPNet: &net.IPNet{IP: v4.AsSlice(), Mask: net.CIDRMask(bits4, 32)}},
		// No duplicate address detection: the address is usable at once.
		{IPNet: &net.IPNet{IP: v6.AsSlice(), Mask: net.CIDRMask(bits6, 128)}, Flags: unix.IFA_F_NODAD},
	}
	for _, a := range addrs {
		if err := h.AddrAdd(l, a); err != nil {
			return fmt.Errorf("adding %s in netns %s: %w", a.IPNet, ns.name, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("bringing %s up in netns %s: %w", linkName, ns.name, err)
	}
	return nil
}

// attachLossy loads the drop program and attaches it to the ingress of
// the server's end, so that packets from the client are lost on the
// "wire": the sender sees real loss (duplicate ACKs, SACK holes,
// timeouts). Dropping at the sender's own egress would not do: a local
// drop is reported to TCP as local congestion (CWR), the segment is never
// counted as lost and is simply sent again.
func (t *Testbed) attachLossy() error {
	if err := loadLossyObjects(&t.lossy, nil); err != nil {
		return fmt.Errorf("loading the loss program: %w", err)
	}
	t.loaded = true
	h, err := netlink.NewHandleAt(t.Server.handle)
	if err != nil {
		return fmt.Errorf("opening netlink in netns %s: %w", t.Server.name, err)
	}
	defer h.Close()
	l, err := h.LinkByName(linkName)
	if err != nil {
		return fmt.Errorf("finding %s in netns %s: %w", linkName, t.Server.name, err)
	}
	clsact := &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: l.Attrs().Index,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_CLSACT,
	}}
	if err := h.QdiscAdd(clsact); err != nil {
		return fmt.Errorf("adding clsact qdisc: %w (is sch_clsact available?)", err)
	}
	filter := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: l.Attrs().Index,
			Parent:    netlink.HANDLE_MIN_INGRESS,
			Handle:    netlink.MakeHandle(0, 1),
			Protocol:  unix.ETH_P_ALL,
			Priority:  1,
		},
		Fd:           t.lossy.Lossy.FD(),
		Name:         "mlbpf-lossy",
		DirectAction: true,
	}
	if err := h.FilterAdd(filter); err != nil {
		return fmt.Errorf("adding the loss filter: %w (is cls_bpf available?)", err)
	}
	return nil
}

// limitRate puts a tbf qdisc at the root of the client's veth.
func (t *Testbed) limitRate(mbit uint64) error {
	h, err := netlink.NewHandleAt(t.Client.handle)
	if err != nil {
		return fmt.Errorf("opening netlink in netns %s: %w", t.Client.name, err)
	}
	defer h.Close()
	l, err := h.LinkByName(linkName)
	if err != nil {
		return fmt.Errorf("finding %s in netns %s: %w", linkName, t.Client.name, err)
	}
	rate := mbit * 1000 * 1000 / 8        // bytes/s
	burst := max(uint32(rate/250), 1<<16) // 4 ms, at least one GSO packet
	limit := uint32(rate/50) + burst      // 20 ms of queue
	tbf := &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: l.Attrs().Index,
			Handle:    netlink.MakeHandle(1, 0),
			Parent:    netlink.HANDLE_ROOT,
		},
		Rate:   rate,
		Limit:  limit,
		Buffer: netlink.Xmittime(rate, burst),
	}
	if err := h.QdiscAdd(tbf); err != nil {
		return fmt.Errorf("adding tbf qdisc (%d Mbit/s): %w (is sch_tbf available?)", mbit, err)
	}
	return nil
}

// SetLoss sets the share of TCP packets from client to server dropped, in
// percent.
func (t *Testbed) SetLoss(percent float64) error {
	if percent < 0 || percent > 100 {
		return fmt.Errorf("setting loss: %.2f%% out of range [0, 100]", percent)
	}
	s := lossyLossySettings{DropPpm: uint32(percent*1e4 + 0.5)}
	if err := t.lossy.Settings.Update(uint32(0), &s, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("setting loss: %w", err)
	}
	t.cfg.LossPercent = percent
	return nil
}

// Loss returns the configured loss in percent.
func (t *Testbed) Loss() float64 { return t.cfg.LossPercent }

// LossCounters returns how many TCP packets the loss program let pass and
// dropped.
func (t *Testbed) LossCounters() (passed, dropped uint64, err error) {
	read := func(k lossyLossyCounter) (uint64, error) {
		var per []uint64
		if err := t.lossy.Counters.Lookup(uint32(k), &per); err != nil {
			return 0, fmt.Errorf("reading loss counters: %w", err)
		}
		var n uint64
		for _, v := range per {
			n += v
		}
		return n, nil
	}
	if passed, err = read(lossyLossyCounterLOSSY_PASSED); err != nil {
		return 0, 0, err
	}
	dropped, err = read(lossyLossyCounterLOSSY_DROPPED)
	return passed, dropped, err
}

// Cgroup is the testbed's cgroup v2 directory, or "" without
// Config.Cgroup.
func (t *Testbed) Cgroup() string {
	if t.cg == nil {
		return ""
	}
	return t.cg.path
}

// Outside runs fn with the process moved out of the testbed's cgroup into
// a sibling cgroup (created on first use, removed by Close), which no
// program attached to the testbed's cgroup sees: what fn creates is not
// seen either, for its whole life — a connection dialled, a listener and
// the connections it accepts, a command started (a server started in fn
// keeps running outside). The process goes back into the testbed's cgroup
// when fn returns. One fn runs at a time, and nothing else of the process
// should create sockets meanwhile: it would be outside too. It needs
// Config.Cgroup.
func (t *Testbed) Outside(fn func() error) error {
	if t.cg == nil {
		return errors.New("running outside the testbed's cgroup: the testbed has none (set Config.Cgroup)")
	}
	t.outMu.Lock()
	defer t.outMu.Unlock()
	if t.outside == "" {
		dir := t.cg.path + "-outside"
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("creating cgroup %s: %w", dir, err)
		}
		t.outside = dir
	}
	if err := moveProcess(t.outside); err != nil {
		return err
	}
	err := fn()
	return errors.Join(err, moveProcess(t.cg.path))
}

// ServerURL returns host:port of the server for a port, IPv4 or IPv6.
func ServerURL(ipv6 bool, port int) string {
	a := ServerAddr
	if ipv6 {
		a = ServerAddr6
	}
	return netip.AddrPortFrom(a, uint16(port)).String()
}

// StartServer starts a long-running command in the server namespace; it is
// killed by Close.
func (t *Testbed) StartServer(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	return t.start(ctx, t.Server, name, args...)
}

func (t *Testbed) start(ctx context.Context, ns *Namespace, name string, args ...string) (*exec.Cmd, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, fmt.Errorf("starting %s: testbed closed", name)
	}
	if err := ns.Start(cmd); err != nil {
		return nil, fmt.Errorf("starting %s in netns %s: %w", name, ns.name, err)
	}
	t.cmds = append(t.cmds, cmd)
	return cmd, nil
}

// Close kills the commands started with StartServer, removes the
// namespaces (and with them the veth pair, qdiscs and filters), the loss
// program and the cgroup. It may be called more than once.
func (t *Testbed) Close() error {
	t.closeMu.Lock()
	defer t.closeMu.Unlock()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	cmds := t.cmds
	t.cmds = nil
	t.mu.Unlock()
	if t.stop != nil {
		t.stop()
	}

	var errs []error
	for _, c := range cmds {
		if c.Process != nil {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}
	if t.cg != nil {
		errs = append(errs, t.cg.close())
	}
	if t.outside != "" {
		errs = append(errs, removeCgroup(t.outside))
	}
	for _, ns := range []*Namespace{t.Client, t.Server} {
		if ns != nil {
			errs = append(errs, ns.close())
		}
	}
	if t.loaded {
		errs = append(errs, t.lossy.Close())
	}
	if t.release != nil {
		errs = append(errs, t.release())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing testbed: %w", err)
	}
	return nil
}

// WaitListening waits until something accepts TCP connections at address
// from the client namespace, or timeout passes.
func (t *Testbed) WaitListening(ctx context.Context, address string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		c, err := t.Client.Dial(dctx, "tcp", address)
		cancel()
		if err == nil {
			return c.Close()
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s to listen: %w", address, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
