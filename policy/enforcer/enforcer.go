// Package enforcer keeps one node's table inet brindle equal to what it
// should enforce: the node's pod attachments (from the kernel), the
// cluster's nodes (for the underlay guard) and, when brindled runs in
// Kubernetes, the NetworkPolicies compiled against Pods and Namespaces.
//
// It is level-triggered: informer events, kernel link and route changes
// and the node list only mark the state dirty; one sync computes the whole
// desired table and writes what differs in one transaction. Events that
// arrive during a sync cost one more sync, not one each. A sync costs what
// changed, not the cluster: only changed pods are read again from the
// informer's store, policy.Compiler compiles again only the policies a
// change touches, nft.Renderer renders again only their chains and sets
// and the endpoint sets whose inputs changed, and the writer's diff skips
// what it reused without looking inside. The table stays
// in the kernel when brindled stops; a restarted brindled writes nothing
// until its caches have synced, then replaces the table atomically. A
// change behind its back (`nft flush ruleset`) is seen by polling the
// nftables generation and mended within a poll period.
package enforcer

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/brindle-net/brindle/policy"
	"github.com/brindle-net/brindle/policy/nft"
)

// Config wires an Enforcer.
type Config struct {
	Log    *slog.Logger
	Writer *nft.Writer
	// Netlink reads the node's links, routes and conntrack; NetNS is the
	// namespace it works in (0: the daemon's own), for the watches.
	Netlink *netlink.Handle
	NetNS   netns.NsHandle
	// Nodes returns the cluster nodes' underlay addresses, and false
	// until they are known (the table is not written before).
	Nodes func() ([]netip.Addr, bool)
	// Kube, when set, is the Kubernetes source: policy is enforced and a
	// pod's attachment is admitted only once its Pod is known. Without it
	// every attachment is admitted and no policy applies.
	Kube *Kube
	// LogGroup is the nflog group for sampled drops (0: none).
	LogGroup uint16
	// VXLANPort and VXLANVNI identify brindle's VXLAN (default 4789, 4096).
	VXLANPort uint16
	VXLANVNI  uint32
	// Poll is how often the nftables generation is polled when commits
	// cannot be watched (default 200ms); Check how often the table is
	// compared in full (default 30s).
	Poll, Check time.Duration
	// FlushConntrack deletes the conntrack entries of connections policy
	// no longer allows (default on in brindled).
	FlushConntrack bool
	// Registry, when set, receives the metrics.
	Registry prometheus.Registerer
}

// Enforcer runs the sync loop.
type Enforcer struct {
	cfg     Config
	trigger chan struct{}
	metrics *metrics
	drops   *dropLog

	syncs atomic.Int64
	// fwdDirty: other tables may have changed (a forward chain with policy
	// drop to mend); set at start, on foreign changes and periodically.
	fwdDirty atomic.Bool
	// kernelDirty: links or routes changed since the last look (the
	// attachments are listed again only then, or periodically).
	kernelDirty atomic.Bool
	locals      []policy.Local
	// flushes hands the conntrack check to its own goroutine (latest wins).
	flushes chan flushJob
	// syncMu serialises syncs; compiler and renderer keep what the last
	// one made, so that a change costs what it touches.
	syncMu   sync.Mutex
	compiler policy.Compiler
	renderer nft.Renderer

	mu    sync.Mutex
	model *policy.Model
	prog  *nft.Program
	slots [2]int
	last  Status
	gen   uint32
}

// Status is the last sync's outcome, for /policy and /readyz.
type Status struct {
	Synced    bool      `json:"synced"`
	At        time.Time `json:"at"`
	Took      string    `json:"took"`
	Change    string    `json:"change,omitempty"`
	Error     string    `json:"error,omitempty"`
	Waiting   string    `json:"waiting,omitempty"`
	Endpoints int       `json:"endpoints"`
	Policies  int       `json:"policies"`
	Flushed   uint      `json:"conntrackFlushed,omitempty"`
	Foreign   []string  `json:"forwardAcceptIn,omitempty"`
	Loose     string    `json:"rpFilterLoose,omitempty"`
}

// New builds an enforcer; Run drives it.
func New(cfg Config) *Enforcer {
	if cfg.Poll == 0 {
		cfg.Poll = 200 * time.Millisecond
	}
	if cfg.Check == 0 {
		cfg.Check = 30 * time.Second
	}
	e := &Enforcer{cfg: cfg, trigger: make(chan struct{}, 1), drops: newDropLog(256), flushes: make(chan flushJob, 1)}
	e.fwdDirty.Store(true)
	e.kernelDirty.Store(true)
	e.metrics = newMetrics(e)
	if cfg.Registry != nil {
		e.metrics.register(cfg.Registry)
	}
	return e
}

// Trigger asks for a sync (coalesced).
func (e *Enforcer) Trigger() {
	select {
	case e.trigger <- struct{}{}:
	default:
	}
}

// Run syncs on every trigger until ctx ends. The table is left in place.
func (e *Enforcer) Run(ctx context.Context) error {
	defer e.cfg.Writer.Close()
	watchKernel(ctx, e.cfg.NetNS, e.cfg.Log, func() { e.kernelDirty.Store(true); e.Trigger() })
	go e.flushLoop(ctx)
	if e.cfg.Kube != nil {
		e.cfg.Kube.Start(ctx)
	}
	if e.cfg.LogGroup != 0 {
		go e.readDrops(ctx)
	}
	// Changes behind brindled's back are noticed through the kernel's
	// notification of each nftables commit; the generation is polled
	// only when that watch cannot be had (an idle node then wakes for
	// nothing, which at 100 nodes on a few cores was most of their idle
	// CPU).
	poll := time.NewTicker(e.cfg.Poll)
	defer poll.Stop()
	pollC := poll.C
	gens, err := e.cfg.Writer.WatchGeneration(ctx)
	if err != nil {
		e.cfg.Log.Warn("cannot watch nftables commits; polling the generation", "every", e.cfg.Poll, "err", err)
	} else {
		poll.Stop()
		pollC = nil
	}
	check := time.NewTicker(e.cfg.Check)
	defer check.Stop()
	var kubeChanged <-chan struct{}
	if e.cfg.Kube != nil {
		kubeChanged = e.cfg.Kube.Changed()
	}
	e.Trigger()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-e.trigger:
		case <-kubeChanged:
		case _, ok := <-gens:
			if !ok {
				gens = nil
				if ctx.Err() != nil {
					return nil
				}
				e.cfg.Log.Warn("nftables commit watch ended; polling the generation", "every", e.cfg.Poll)
				poll.Reset(e.cfg.Poll)
				pollC = poll.C
			}
			if !e.changedBehind() {
				continue
			}
		case <-pollC:
			if !e.changedBehind() {
				continue
			}
		case <-check.C:
			e.fwdDirty.Store(true)
			e.kernelDirty.Store(true)
			e.verify(true)
		}
		e.Sync()
	}
}

// changedBehind reports whether someone else changed nftables since the
// last look and, if the table no longer matches, invalidates it. Another
// table's change may also be a forward chain with policy drop to mend.
func (e *Enforcer) changedBehind() bool {
	g, err := e.cfg.Writer.Generation()
	e.mu.Lock()
	same := err == nil && g == e.gen
	e.gen = g
	e.mu.Unlock()
	if same {
		return false
	}
	e.fwdDirty.Store(true)
	e.verify(false)
	return true
}

func (e *Enforcer) verify(thorough bool) {
	if err := e.cfg.Writer.Check(thorough); err != nil {
		e.cfg.Log.Warn("table inet brindle changed behind brindled's back; rewriting it", "why", err)
		e.metrics.restored.Inc()
		e.beforeFull()
		e.cfg.Writer.Invalidate()
		e.Trigger()
	}
}

// beforeFull folds the kernel's counters into the metrics before the table
// (and with it the counters) is replaced.
func (e *Enforcer) beforeFull() {
	if c, err := e.cfg.Writer.ReadCounters(); err == nil {
		owners, _ := e.ownerSnapshot()
		e.metrics.fold(c, owners)
	}
}

// Sync computes and writes the table once.
func (e *Enforcer) Sync() {
	e.syncMu.Lock()
	defer e.syncMu.Unlock()
	e.syncs.Add(1)
	start := time.Now()
	st, err := e.sync()
	st.At, st.Took = start, time.Since(start).Round(time.Microsecond).String()
	switch {
	case err != nil:
		st.Error = err.Error()
		e.metrics.syncs.WithLabelValues("error").Inc()
		e.cfg.Log.Warn("policy sync failed", "err", err)
	case st.Waiting != "":
		e.metrics.syncs.WithLabelValues("skipped").Inc()
	default:
		e.metrics.syncs.WithLabelValues("ok").Inc()
		e.metrics.duration.Observe(time.Since(start).Seconds())
		e.cfg.Log.Debug("policy sync", "took", st.Took, "change", st.Change, "endpoints", st.Endpoints, "policies", st.Policies, "conntrackFlushed", st.Flushed)
	}
	e.mu.Lock()
	if st.Waiting != "" || err != nil {
		st.Synced = e.last.Synced
	}
	e.last = st
	e.mu.Unlock()
}

func (e *Enforcer) sync() (Status, error) {
	var st Status
	nodes, ok := e.cfg.Nodes()
	if !ok {
		st.Waiting = "the node list (etcd)"
		return st, nil
	}
	if e.cfg.Kube != nil && !e.cfg.Kube.Synced() {
		st.Waiting = "the Kubernetes informers"
		return st, nil
	}
	locals := e.locals
	if e.kernelDirty.Swap(false) || locals == nil {
		var err error
		if locals, err = discover(e.cfg.Netlink); err != nil {
			e.kernelDirty.Store(true)
			return st, fmt.Errorf("list pod attachments: %w", err)
		}
		e.locals = locals
	}
	cluster := &policy.Cluster{}
	if e.cfg.Kube != nil {
		cluster, locals = e.cfg.Kube.Cluster(locals)
	}
	m := e.compiler.Compile(cluster)
	e.mu.Lock()
	minSlots := e.slots
	e.mu.Unlock()
	prog := e.compiler.Program(m, locals, e.cfg.Kube == nil)
	prog.Nodes, prog.VXLANPort, prog.VXLANVNI, prog.LogGroup, prog.MinSlots = nodes, e.cfg.VXLANPort, e.cfg.VXLANVNI, e.cfg.LogGroup, minSlots
	rs := e.renderer.Render(prog)
	ch, err := e.cfg.Writer.Apply(rs)
	if err != nil {
		return st, err
	}
	e.mu.Lock()
	e.model, e.prog, e.slots = m, prog, prog.Slots()
	if g, err := e.cfg.Writer.Generation(); err == nil {
		e.gen = g
	}
	e.mu.Unlock()
	st.Synced, st.Change, st.Endpoints, st.Policies = true, ch.String(), len(prog.Endpoints), len(prog.Policies)
	e.metrics.endpoints.Set(float64(len(prog.Endpoints)))
	e.metrics.policies.Set(float64(len(prog.Policies)))
	var foreign []nft.ForeignChain
	var ferr error
	if ch.Full || e.fwdDirty.Swap(false) {
		if foreign, ferr = e.cfg.Writer.EnsureForwardAccept(); ferr != nil {
			e.fwdDirty.Store(true)
		}
	}
	for _, f := range foreign {
		st.Foreign = append(st.Foreign, f.String())
		e.cfg.Log.Info("forward chain with policy drop: brindle's accept rules put at its top", "chain", f.String())
	}
	if e.cfg.FlushConntrack && ch.Tightening && e.cfg.Kube != nil {
		local := map[netip.Addr]bool{}
		for _, ep := range prog.Endpoints {
			for _, a := range ep.Addrs {
				local[a] = true
			}
		}
		// The rules are in force already; established connections they
		// no longer allow are cut just after, off the sync's path (a
		// conntrack dump walks the kernel's whole table).
		select {
		case <-e.flushes:
		default:
		}
		e.flushes <- flushJob{m, local}
	}
	return st, ferr
}

// SyncCount is the number of syncs so far.
func (e *Enforcer) SyncCount() int { return int(e.syncs.Load()) }

// Status is the last sync's outcome (and whether the host's rp_filter
// alone would be loose).
func (e *Enforcer) Status() Status {
	loose := e.looseHost()
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.last
	st.Loose = loose
	return st
}

// Model is the last compiled model (nil before the first sync).
func (e *Enforcer) Model() *policy.Model {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.model
}

// Ready lists why the table may not be enforcing what it should; empty
// when it is. A host whose rp_filter is loose is reported only when the
// table's anti-spoofing is not in force either.
func (e *Enforcer) Ready() []string {
	st := e.Status()
	var why []string
	switch {
	case !st.Synced && st.Waiting != "":
		why = append(why, "policy: table inet brindle not written yet: waiting for "+st.Waiting)
	case !st.Synced:
		why = append(why, "policy: table inet brindle not written yet: "+st.Error)
	case st.Error != "":
		why = append(why, "policy: last sync failed: "+st.Error)
	}
	if len(why) > 0 && st.Loose != "" {
		why = append(why, "antispoof: loose host ("+st.Loose+") and brindle's anti-spoofing is not in force")
	}
	return why
}

// owners maps each local pod address to its pod, and each direction/pod
// to the policies isolating it, from the last program.
func (e *Enforcer) owners() (map[netip.Addr]string, map[string][]string) {
	return e.ownerSnapshot()
}

func (e *Enforcer) ownerSnapshot() (map[netip.Addr]string, map[string][]string) {
	e.mu.Lock()
	prog, m := e.prog, e.model
	e.mu.Unlock()
	owners, isolating := map[netip.Addr]string{}, map[string][]string{}
	if prog == nil {
		return owners, isolating
	}
	for _, ep := range prog.Endpoints {
		for _, a := range ep.Addrs {
			owners[a] = ep.Name
		}
		if m == nil {
			continue
		}
		in, out := m.PoliciesFor(ep.Name)
		for _, p := range in {
			isolating["ingress/"+ep.Name] = append(isolating["ingress/"+ep.Name], p.Name)
		}
		for _, p := range out {
			isolating["egress/"+ep.Name] = append(isolating["egress/"+ep.Name], p.Name)
		}
	}
	return owners, isolating
}

// flushJob is one conntrack check: the model in force and the node's pod
// addresses.
type flushJob struct {
	m     *policy.Model
	local map[netip.Addr]bool
}

// flushLoop deletes the conntrack entries the latest model denies, at most
// every 200ms.
func (e *Enforcer) flushLoop(ctx context.Context) {
	for {
		var job flushJob
		select {
		case <-ctx.Done():
			return
		case job = <-e.flushes:
		}
		var n uint
		var err error
		if conntrackEntries(e.cfg.NetNS) != 0 {
			n, err = flushDenied(e.cfg.Netlink, job.m, job.local, hostAddrs(e.cfg.Netlink))
		}
		e.metrics.flushed.Add(float64(n))
		e.mu.Lock()
		e.last.Flushed += n
		e.mu.Unlock()
		if n > 0 {
			e.cfg.Log.Info("conntrack entries of connections policy no longer allows deleted", "entries", n)
		}
		if err != nil {
			e.cfg.Log.Warn("conntrack flush", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}
