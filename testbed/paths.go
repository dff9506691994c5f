package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/loader"
)

// Path names a route of a Paths testbed from its client to its server.
type Path string

// The two paths of a Paths testbed.
const (
	// PathLossy is a direct veth pair with random loss both ways and a
	// round trip of microseconds.
	PathLossy Path = "lossy"
	// PathBloat crosses a router whose deep tbf queue toward the server is
	// kept full by a background bulk flow: no random loss, a round trip of
	// tens to hundreds of milliseconds that varies.
	PathBloat Path = "bloat"
)

// PathAddrs are a path's addresses.
type PathAddrs struct {
	Client, Server   netip.Addr
	Client6, Server6 netip.Addr
	// Prefix and Prefix6 hold the server's address (the destination a
	// per-prefix model learns for).
	Prefix, Prefix6 netip.Prefix
}

// Addresses of the two paths. The bloat path's client and server are on
// two subnets joined by the router (.254 and ::fe on both).
var (
	LossyAddrs = PathAddrs{
		Client: netip.MustParseAddr("198.18.1.1"), Server: netip.MustParseAddr("198.18.1.2"),
		Client6: netip.MustParseAddr("fd00:6d6c:6271::1"), Server6: netip.MustParseAddr("fd00:6d6c:6271::2"),
		Prefix: netip.MustParsePrefix("198.18.1.0/24"), Prefix6: netip.MustParsePrefix("fd00:6d6c:6271::/64"),
	}
	BloatAddrs = PathAddrs{
		Client: netip.MustParseAddr("198.18.2.1"), Server: netip.MustParseAddr("198.18.3.2"),
		Client6: netip.MustParseAddr("fd00:6d6c:6272::1"), Server6: netip.MustParseAddr("fd00:6d6c:6273::2"),
		Prefix: netip.MustParsePrefix("198.18.3.0/24"), Prefix6: netip.MustParsePrefix("fd00:6d6c:6273::/64"),
	}
	bloatClientNet  = netip.MustParsePrefix("198.18.2.0/24")
	bloatClientNet6 = netip.MustParsePrefix("fd00:6d6c:6272::/64")
	routerClient    = netip.MustParseAddr("198.18.2.254")
	routerServer    = netip.MustParseAddr("198.18.3.254")
	routerClient6   = netip.MustParseAddr("fd00:6d6c:6272::fe")
	routerServer6   = netip.MustParseAddr("fd00:6d6c:6273::fe")
)

// Addrs returns the path's addresses.
func (p Path) Addrs() PathAddrs {
	if p == PathBloat {
		return BloatAddrs
	}
	return LossyAddrs
}

// MaxDestinations is the most destinations a path can have
// (PathsConfig.Destinations).
const MaxDestinations = 8

// Dest returns the addresses of the path's i-th destination (0 to
// PathsConfig.Destinations-1): Dest(0) is Addrs(); each other is a
// server address of its own /24 and /64 behind the same link (on the
// bloat path, the same router and queue), so that a per-prefix model
// can treat them differently while the path treats them alike. The
// bloat path's client address is the same for all.
func (p Path) Dest(i int) PathAddrs {
	a := p.Addrs()
	if i <= 0 || i >= MaxDestinations {
		return a
	}
	v4 := func(third, host byte) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, third, host}) }
	v6 := func(base netip.Addr, host byte) netip.Addr {
		b := base.As16()
		b[7], b[15] = byte(i), host
		return netip.AddrFrom16(b)
	}
	third := byte(16 + i) // lossy: 198.18.17-23.0/24
	if p == PathBloat {
		third = byte(32 + i) // bloat: 198.18.33-39.0/24
	} else {
		a.Client, a.Client6 = v4(third, 1), v6(LossyAddrs.Client6, 1)
	}
	a.Server, a.Server6 = v4(third, 2), v6(a.Server6, 2)
	a.Prefix, a.Prefix6 = netip.PrefixFrom(v4(third, 0), 24), netip.PrefixFrom(v6(a.Server6, 0), 64)
	return a
}

// routerDest is the router's address in the bloat path's i-th
// destination's subnets.
func routerDest(i int) (netip.Addr, netip.Addr) {
	d := PathBloat.Dest(i)
	b4, b6 := d.Server.As4(), d.Server6.As16()
	b4[3], b6[15] = 254, 0xfe
	return netip.AddrFrom4(b4), netip.AddrFrom16(b6)
}

// ServerURL returns host:port of the path's server for a port.
func (p Path) ServerURL(ipv6 bool, port int) string {
	a := p.Addrs()
	if ipv6 {
		return netip.AddrPortFrom(a.Server6, uint16(port)).String()
	}
	return netip.AddrPortFrom(a.Server, uint16(port)).String()
}

// Interface names of the Paths testbed.
const (
	lossyLink      = "lossy0" // client <-> server
	bloatLink      = "bloat0" // client <-> router
	bloatLinkInner = "bloat1" // router <-> server
)

// PathsConfig describes a Paths testbed.
type PathsConfig struct {
	// Name prefixes the namespaces' names (default "mlbpf-paths").
	Name string
	// LossPercent is the lossy path's random loss in each direction
	// (default 5; negative means none).
	LossPercent float64
	// BloatRateMbit is the router's tbf rate toward the server (default
	// 20), BloatBurstBytes its burst (default 4000: 32 kbit) and
	// BloatLimitBytes its queue (default 1000000: 400 ms at 20 Mbit/s).
	BloatRateMbit   uint64
	BloatBurstBytes uint32
	BloatLimitBytes uint32
	// NoBackground leaves the bloat path's queue empty: no background
	// bulk flow.
	NoBackground bool
	// BackgroundWindowBytes caps the background flow's window (the
	// server advertises at most that much: TCP_WINDOW_CLAMP on its
	// listener), so that it keeps a standing queue of about that many
	// bytes instead of filling the queue to BloatLimitBytes and dropping
	// there (0: no cap, the cubic flow's saw-tooth up to the limit).
	// With a cap well below the limit the path drops nothing: its round
	// trip is the standing queue plus what the other flows add to it.
	BackgroundWindowBytes uint32
	// BackgroundWindowPeriod, with BackgroundWindowBytes, moves the cap
	// along a saw-tooth: from a third of BackgroundWindowBytes up to it,
	// linearly over each period, then back (as a loss-based flow's window
	// does, without the loss), so that the round trip varies with it.
	BackgroundWindowPeriod time.Duration
	// BackgroundWindowJump turns the saw-tooth around: the cap jumps up
	// at the start of each period and falls linearly over it, so that the
	// round trip jumps by hundreds of milliseconds within one of its own
	// (the background flow sends the window it was just given at once).
	BackgroundWindowJump bool
	// NoTimestamps turns TCP timestamps off in the client's namespace
	// (net.ipv4.tcp_timestamps=0), as with a peer that does not use them
	// (Windows' default): without them Linux cannot tell a spurious SYN
	// timeout from a real one (tcp_try_undo_spurious_syn), and a
	// connection whose SYN was sent more than twice starts with a
	// congestion window of one segment.
	NoTimestamps bool
	// Destinations is how many server addresses each path has (default
	// 1, at most MaxDestinations): see Path.Dest.
	Destinations int
	// Cgroup and CgroupRoot are as in Config. The background flow's
	// socket is created before the process enters the cgroup, so that a
	// sock_ops program attached there never sees it.
	Cgroup     bool
	CgroupRoot string
}

// Paths is one client and one server joined by two paths, lossy and
// bloat (see the package documentation):
//
//	client lossy0 <----- veth, tc-BPF loss both ways -----> lossy0 server
//	client bloat0 <-> bloat0 router bloat1 <-> bloat1 server
//	                         egress: tbf 20mbit, 1 MB queue, kept full
type Paths struct {
	Client, Router, Server *Namespace

	cfg    PathsConfig
	lossy  lossyObjects
	loaded bool
	cg     *cgroup

	bgCancel context.CancelFunc
	bgDone   sync.WaitGroup
	bgSink   *Sink
	bgConn   atomic.Pointer[net.TCPConn]
	bgErr    atomic.Pointer[error]

	closeMu sync.Mutex
	closed  bool
	stop    func() bool
}

// NewPaths builds a Paths testbed, torn down by Close or when ctx is
// cancelled.
func NewPaths(ctx context.Context, cfg PathsConfig) (p *Paths, err error) {
	if cfg.Name == "" {
		cfg.Name = "mlbpf-paths"
	}
	if cfg.LossPercent == 0 {
		cfg.LossPercent = 5
	}
	cfg.LossPercent = max(cfg.LossPercent, 0)
	if cfg.LossPercent > 100 {
		return nil, fmt.Errorf("building paths testbed: loss %.2f%% out of range [0, 100]", cfg.LossPercent)
	}
	if cfg.BloatRateMbit == 0 {
		cfg.BloatRateMbit = 20
	}
	if cfg.BloatBurstBytes == 0 {
		cfg.BloatBurstBytes = 4000
	}
	if cfg.BloatLimitBytes == 0 {
		cfg.BloatLimitBytes = 1000000
	}
	if cfg.Destinations == 0 {
		cfg.Destinations = 1
	}
	if cfg.Destinations < 0 || cfg.Destinations > MaxDestinations {
		return nil, fmt.Errorf("building paths testbed: %d destinations, want 1 to %d", cfg.Destinations, MaxDestinations)
	}
	if err := loader.CheckPrivileges(); err != nil {
		return nil, fmt.Errorf("building paths testbed: %w", err)
	}
	p = &Paths{cfg: cfg}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("building paths testbed: %w", err), p.Close())
		}
	}()
	if cfg.Cgroup && cfg.CgroupRoot == "" {
		if cfg.CgroupRoot, err = loader.Cgroup2Root(); err != nil {
			return p, err
		}
	}
	sweep(cfg.Name, cfg.CgroupRoot)
	base := fmt.Sprintf("%s-%d-%d", cfg.Name, os.Getpid(), seq.Add(1))
	for _, n := range []struct {
		ns   **Namespace
		name string
	}{{&p.Client, "client"}, {&p.Router, "router"}, {&p.Server, "server"}} {
		if *n.ns, err = newNamespace(base + "-" + n.name); err != nil {
			return p, err
		}
	}
	if err := p.wire(); err != nil {
		return p, err
	}
	if err := p.attachLoss(); err != nil {
		return p, err
	}
	if err := p.SetLoss(cfg.LossPercent); err != nil {
		return p, err
	}
	if err := addTbf(p.Router, bloatLinkInner, cfg.BloatRateMbit*1000*1000/8, cfg.BloatBurstBytes, cfg.BloatLimitBytes); err != nil {
		return p, err
	}
	if !cfg.NoBackground {
		if err := p.startBackground(); err != nil {
			return p, err
		}
	}
	if cfg.Cgroup {
		if p.cg, err = enterCgroup(cfg.CgroupRoot, base); err != nil {
			return p, err
		}
	}
	p.stop = context.AfterFunc(ctx, func() { _ = p.Close() })
	return p, nil
}

type linkEnd struct {
	ns   *Namespace
	link string
	addr []netip.Prefix
}

func (p *Paths) wire() error {
	pfx := func(a netip.Addr, bits int) netip.Prefix { return netip.PrefixFrom(a, bits) }
	lossyClient, lossyServer := &linkEnd{p.Client, lossyLink, nil}, &linkEnd{p.Server, lossyLink, nil}
	bloatClient := &linkEnd{p.Client, bloatLink, []netip.Prefix{pfx(BloatAddrs.Client, 24), pfx(BloatAddrs.Client6, 64)}}
	bloatRouter := &linkEnd{p.Router, bloatLink, []netip.Prefix{pfx(routerClient, 24), pfx(routerClient6, 64)}}
	innerRouter, innerServer := &linkEnd{p.Router, bloatLinkInner, nil}, &linkEnd{p.Server, bloatLinkInner, nil}
	type route struct {
		ns   *Namespace
		dst  netip.Prefix
		gw   netip.Addr
		link string
	}
	routes := []route{
		{p.Server, bloatClientNet, routerServer, bloatLinkInner},
		{p.Server, bloatClientNet6, routerServer6, bloatLinkInner},
	}
	for i := range p.cfg.Destinations {
		la, ba := PathLossy.Dest(i), PathBloat.Dest(i)
		lossyClient.addr = append(lossyClient.addr, pfx(la.Client, 24), pfx(la.Client6, 64))
		lossyServer.addr = append(lossyServer.addr, pfx(la.Server, 24), pfx(la.Server6, 64))
		r4, r6 := routerServer, routerServer6
		if i > 0 {
			r4, r6 = routerDest(i)
		}
		innerRouter.addr = append(innerRouter.addr, pfx(r4, 24), pfx(r6, 64))
		innerServer.addr = append(innerServer.addr, pfx(ba.Server, 24), pfx(ba.Server6, 64))
		routes = append(routes,
			route{p.Client, ba.Prefix, routerClient, bloatLink},
			route{p.Client, ba.Prefix6, routerClient6, bloatLink})
	}
	for _, pr := range [][2]*linkEnd{{lossyClient, lossyServer}, {bloatClient, bloatRouter}, {innerRouter, innerServer}} {
		if err := addVethPair(*pr[0], *pr[1]); err != nil {
			return err
		}
	}
	for _, r := range routes {
		if err := addRoute(r.ns, r.link, r.dst, r.gw); err != nil {
			return err
		}
	}
	for _, kv := range [][2]string{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv6.conf.all.forwarding", "1"},
	} {
		if err := p.Router.Sysctl(kv[0], kv[1]); err != nil {
			return err
		}
	}
	for _, ns := range []*Namespace{p.Client, p.Server} {
		if err := ns.Sysctl("net.ipv4.tcp_no_metrics_save", "1"); err != nil {
			return err
		}
	}
	// Every flow the client closes leaves it a TIME_WAIT for 60 s, which
	// a connection to the same destination cannot reuse without
	// timestamps: at hundreds of flows a second to one destination (a
	// benchmark's timer-bound flows, 64 in flight) the default 28232
	// ephemeral ports run out.
	if err := p.Client.Sysctl("net.ipv4.ip_local_port_range", "1024 65535"); err != nil {
		return err
	}
	if p.cfg.NoTimestamps {
		return p.Client.Sysctl("net.ipv4.tcp_timestamps", "0")
	}
	return nil
}

// addVethPair creates a veth pair between two namespaces, addresses both
// ends and brings them up (with lo).
func addVethPair(a, b linkEnd) error {
	host, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("opening netlink: %w", err)
	}
	defer host.Close()
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{
			Name: a.link, Namespace: netlink.NsFd(int(a.ns.handle)), TxQLen: 1000,
		},
		PeerName: b.link, PeerNamespace: netlink.NsFd(int(b.ns.handle)), PeerTxQLen: 1000,
	}
	if err := host.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth pair %s/%s: %w", a.ns.name, a.link, err)
	}
	for _, end := range []linkEnd{a, b} {
		if err := upWithAddrs(end); err != nil {
			return err
		}
	}
	return nil
}

func upWithAddrs(end linkEnd) error {
	h, err := netlink.NewHandleAt(end.ns.handle)
	if err != nil {
		return fmt.Errorf("opening netlink in netns %s: %w", end.ns.name, err)
	}
	defer h.Close()
	for _, name := range []string{"lo", end.link} {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("finding %s in netns %s: %w", name, end.ns.name, err)
		}
		if name != "lo" {
			for _, a := range end.addr {
				nl := &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())}}
				if a.Addr().Is6() {
					nl.Flags = unix.IFA_F_NODAD
				}
				if err := h.AddrAdd(l, nl); err != nil {
					return fmt.Errorf("adding %s in netns %s: %w", a, end.ns.name, err)
				}
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("bringing %s up in netns %s: %w", name, end.ns.name, err)
		}
	}
	return nil
}

// linkIn opens netlink in a namespace and finds a link there; the caller
// closes the handle.
func linkIn(ns *Namespace, link string) (*netlink.Handle, netlink.Link, error) {
	h, err := netlink.NewHandleAt(ns.handle)
	if err != nil {
		return nil, nil, fmt.Errorf("opening netlink in netns %s: %w", ns.name, err)
	}
	l, err := h.LinkByName(link)
	if err != nil {
		h.Close()
		return nil, nil, fmt.Errorf("finding %s in netns %s: %w", link, ns.name, err)
	}
	return h, l, nil
}

func addRoute(ns *Namespace, link string, dst netip.Prefix, gw netip.Addr) error {
	h, l, err := linkIn(ns, link)
	if err != nil {
		return err
	}
	defer h.Close()
	r := &netlink.Route{
		LinkIndex: l.Attrs().Index,
		Dst:       &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())},
		Gw:        gw.AsSlice(),
	}
	if err := h.RouteAdd(r); err != nil {
		return fmt.Errorf("adding route to %s via %s in netns %s: %w", dst, gw, ns.name, err)
	}
	return nil
}

// attachLoss attaches the drop program to the ingress of both ends of the
// lossy link, so that each direction loses packets on the "wire" (see
// Testbed.attachLossy for why ingress).
func (p *Paths) attachLoss() error {
	if err := loadLossyObjects(&p.lossy, nil); err != nil {
		return fmt.Errorf("loading the loss program: %w", err)
	}
	p.loaded = true
	for _, ns := range []*Namespace{p.Client, p.Server} {
		if err := attachIngress(ns, lossyLink, p.lossy.Lossy); err != nil {
			return err
		}
	}
	return nil
}

func attachIngress(ns *Namespace, link string, prog *ebpf.Program) error {
	h, l, err := linkIn(ns, link)
	if err != nil {
		return err
	}
	defer h.Close()
	clsact := &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT,
	}}
	if err := h.QdiscAdd(clsact); err != nil {
		return fmt.Errorf("adding clsact qdisc in netns %s: %w (is sch_clsact available?)", ns.name, err)
	}
	filter := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_MIN_INGRESS,
			Handle: netlink.MakeHandle(0, 1), Protocol: unix.ETH_P_ALL, Priority: 1,
		},
		Fd: prog.FD(), Name: "mlbpf-lossy", DirectAction: true,
	}
	if err := h.FilterAdd(filter); err != nil {
		return fmt.Errorf("adding the loss filter in netns %s: %w (is cls_bpf available?)", ns.name, err)
	}
	return nil
}

// addTbf puts a tbf qdisc at the root of a link: rate in bytes/s, burst
// and limit in bytes.
func addTbf(ns *Namespace, link string, rate uint64, burst, limit uint32) error {
	h, l, err := linkIn(ns, link)
	if err != nil {
		return err
	}
	defer h.Close()
	tbf := &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT,
		},
		Rate: rate, Limit: limit, Buffer: netlink.Xmittime(rate, burst),
	}
	if err := h.QdiscAdd(tbf); err != nil {
		return fmt.Errorf("adding tbf qdisc in netns %s: %w (is sch_tbf available?)", ns.name, err)
	}
	return nil
}

// startBackground starts the bulk cubic flow that keeps the bloat path's
// queue full, from the client to a sink on the server, restarted if it
// ends, until Close.
func (p *Paths) startBackground() error {
	ctx, cancel := context.WithCancel(context.Background())
	p.bgCancel = cancel
	var accepted func(net.Conn)
	if p.cfg.BackgroundWindowBytes > 0 {
		// On the connection: Linux refuses TCP_WINDOW_CLAMP on a
		// listener (ENOPROTOOPT).
		accepted = func(c net.Conn) {
			if err := p.clampBackground(ctx, c); err != nil {
				err = fmt.Errorf("capping the background flow's window: %w", err)
				p.bgErr.Store(&err)
			}
		}
	}
	sink, err := p.newSink(PathBloat, 0, false, accepted)
	if err != nil {
		cancel()
		return err
	}
	p.bgSink = sink
	// The first connection is made here, before the process enters the
	// cgroup; later ones (after an error) would be inside it.
	c, err := p.Client.Dial(ctx, "tcp4", sink.Addr())
	if err != nil {
		cancel()
		return fmt.Errorf("starting the background flow: %w", err)
	}
	if err := setCC(c.(*net.TCPConn), "cubic"); err != nil {
		c.Close()
		cancel()
		return err
	}
	p.bgConn.Store(c.(*net.TCPConn))
	p.bgDone.Add(1)
	go func() {
		defer p.bgDone.Done()
		context.AfterFunc(ctx, func() { _ = c.Close() })
		for ctx.Err() == nil {
			_, err := c.Write(chunk)
			if err != nil && ctx.Err() == nil {
				c.Close()
				time.Sleep(100 * time.Millisecond)
				if c, err = p.Client.Dial(ctx, "tcp4", sink.Addr()); err != nil {
					return
				}
				p.bgConn.Store(c.(*net.TCPConn))
			}
		}
	}()
	return nil
}

// clampBackground caps the window the server's end c of the background
// flow advertises (PathsConfig.BackgroundWindowBytes) and, with
// BackgroundWindowPeriod, moves the cap along its saw-tooth every 100 ms
// until ctx is done or the connection closes.
func (p *Paths) clampBackground(ctx context.Context, c net.Conn) error {
	hi := int(p.cfg.BackgroundWindowBytes)
	period := p.cfg.BackgroundWindowPeriod
	if err := setConnInt(c, unix.IPPROTO_TCP, unix.TCP_WINDOW_CLAMP, hi); err != nil || period <= 0 {
		return err
	}
	lo, start := hi/3, time.Now()
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			phase := float64(time.Since(start)%period) / float64(period)
			if p.cfg.BackgroundWindowJump {
				phase = 1 - phase
			}
			if setConnInt(c, unix.IPPROTO_TCP, unix.TCP_WINDOW_CLAMP, lo+int(phase*float64(hi-lo))) != nil {
				return // closed
			}
		}
	}()
	return nil
}

// setConnInt sets an integer socket option on a TCP connection.
func setConnInt(c net.Conn, level, opt, v int) error {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return fmt.Errorf("setting socket option %d: %T is not a TCP connection", opt, c)
	}
	return onFD(tc, fmt.Sprintf("setting socket option %d to %d", opt, v), func(fd int) error {
		return unix.SetsockoptInt(fd, level, opt, v)
	})
}

// onFD runs f on c's file descriptor, its error prefixed with what.
func onFD(c *net.TCPConn, what string, f func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	if ferr != nil {
		return fmt.Errorf("%s: %w", what, ferr)
	}
	return nil
}

func setCC(c *net.TCPConn, cc string) error {
	return onFD(c, "setting TCP_CONGESTION "+cc, func(fd int) error {
		return unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, cc)
	})
}

// BackgroundRTT is the smoothed round trip time the background flow's
// socket measures: how deep the bloat path's queue is now.
func (p *Paths) BackgroundRTT() (time.Duration, error) {
	if err := p.bgErr.Load(); err != nil {
		return 0, *err
	}
	c := p.bgConn.Load()
	if c == nil {
		return 0, errors.New("reading the background flow's RTT: no background flow")
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("reading the background flow's RTT: %w", err)
	}
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) { info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		return 0, fmt.Errorf("reading the background flow's RTT: %w", err)
	}
	if gerr != nil {
		return 0, fmt.Errorf("reading the background flow's RTT: %w", gerr)
	}
	return time.Duration(info.Rtt) * time.Microsecond, nil
}

// BloatDrops is how many packets the bloat path's queue (the router's
// tbf) has dropped so far.
func (p *Paths) BloatDrops() (uint64, error) {
	h, l, err := linkIn(p.Router, bloatLinkInner)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	qs, err := h.QdiscList(l)
	if err != nil {
		return 0, fmt.Errorf("listing the bloat path's qdiscs: %w", err)
	}
	var n uint64
	for _, q := range qs {
		if st := q.Attrs().Statistics; st != nil && st.Queue != nil {
			n += uint64(st.Queue.Drops)
		}
	}
	return n, nil
}

// WaitBloated waits until the background flow's RTT reaches rtt (its
// queue has filled), or timeout passes.
func (p *Paths) WaitBloated(ctx context.Context, rtt, timeout time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(timeout)
	for {
		got, err := p.BackgroundRTT()
		if err != nil || got >= rtt {
			return got, err
		}
		if time.Now().After(deadline) {
			return got, fmt.Errorf("waiting for the bloat path's queue: RTT %v after %v, want %v", got, timeout, rtt)
		}
		select {
		case <-ctx.Done():
			return got, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// NewSink starts a sink (see Testbed.NewSink) on the server's address of
// a path.
func (p *Paths) NewSink(path Path, ipv6 bool) (*Sink, error) {
	return p.NewSinkAt(path, 0, ipv6)
}

// NewSinkAt starts a sink on the server's address of a path's dest-th
// destination (Path.Dest; below PathsConfig.Destinations).
func (p *Paths) NewSinkAt(path Path, dest int, ipv6 bool) (*Sink, error) {
	return p.newSink(path, dest, ipv6, nil)
}

func (p *Paths) newSink(path Path, dest int, ipv6 bool, accepted func(net.Conn)) (*Sink, error) {
	if dest < 0 || dest >= p.cfg.Destinations {
		return nil, fmt.Errorf("starting sink on the %s path: destination %d of %d (see PathsConfig.Destinations)", path, dest, p.cfg.Destinations)
	}
	network, a := "tcp4", path.Dest(dest).Server
	if ipv6 {
		network, a = "tcp6", path.Dest(dest).Server6
	}
	l, err := p.Server.Listen(network, netip.AddrPortFrom(a, 0).String())
	if err != nil {
		return nil, fmt.Errorf("starting sink on the %s path: %w", path, err)
	}
	s := &Sink{l: l, accepted: accepted}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Send sends load from the client to addr (a sink's) as Testbed.Send does.
func (p *Paths) Send(ctx context.Context, addr string, load Load) (Transfer, error) {
	return sendFrom(ctx, p.Client, addr, load, "")
}

// SetLoss sets the lossy path's loss in each direction, in percent.
func (p *Paths) SetLoss(percent float64) error {
	if percent < 0 || percent > 100 {
		return fmt.Errorf("setting loss: %.2f%% out of range [0, 100]", percent)
	}
	s := lossyLossySettings{DropPpm: uint32(percent*1e4 + 0.5)}
	if err := p.lossy.Settings.Update(uint32(0), &s, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("setting loss: %w", err)
	}
	p.cfg.LossPercent = percent
	return nil
}

// Cgroup is the testbed's cgroup v2 directory, or "" without
// PathsConfig.Cgroup.
func (p *Paths) Cgroup() string {
	if p.cg == nil {
		return ""
	}
	return p.cg.path
}

// Close stops the background flow and removes the namespaces, the loss
// program and the cgroup. It may be called more than once.
func (p *Paths) Close() error {
	p.closeMu.Lock()
	defer p.closeMu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if p.stop != nil {
		p.stop()
	}
	var errs []error
	if p.bgCancel != nil {
		p.bgCancel()
		p.bgDone.Wait()
	}
	if p.bgSink != nil {
		_ = p.bgSink.Close()
	}
	if p.cg != nil {
		errs = append(errs, p.cg.close())
	}
	for _, ns := range []*Namespace{p.Client, p.Router, p.Server} {
		if ns != nil {
			errs = append(errs, ns.close())
		}
	}
	if p.loaded {
		errs = append(errs, p.lossy.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing paths testbed: %w", err)
	}
	return nil
}
