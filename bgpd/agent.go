package bgpd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/ipam"
)

// AgentConfig wires an Agent.
type AgentConfig struct {
	// Controller is the template of every controller the agent runs; its
	// Speaker is the agent's to fill in.
	Controller ControllerConfig
	// Self is the node as this daemon registers it (its AS, when set,
	// decides the speaker's until the node record says otherwise).
	Self conf.Node
	// RouterID is the speaker's router ID (the node's IPv4 address).
	RouterID netip.Addr
	// Register claims the node's name and writes its record; the agent
	// retries it until it succeeds. It fails with ErrNameInUse when the
	// name belongs to another running brindled.
	Register func(ctx context.Context) error
	// StateFile keeps the last known cluster state; "" keeps none.
	StateFile string
	// EtcdWait is how long a starting agent waits for etcd before it
	// starts from the state on disk (etcd unreachable).
	EtcdWait time.Duration
	// Started, when set, is called once the agent has the cluster state
	// (from etcd, or from the state file during an outage): components
	// that read the cache too (the filter table's node list) go on then.
	Started func()
	// NewSpeaker builds a speaker; default NewSpeaker.
	NewSpeaker func(ctx context.Context, g GlobalSpec, log *slog.Logger) (*Speaker, error)
}

// Agent is brindled's BGP side as a whole: it registers the node, starts
// from the last known state when etcd is down, keeps that state on disk,
// and runs the speaker and its controller — building the speaker again, in
// place, when the cluster's AS number, listen port or graceful-restart
// settings change, so that they are always applied together.
type Agent struct {
	cfg AgentConfig
	log *slog.Logger

	mu         sync.Mutex
	ctrl       *Controller
	speaker    *Speaker
	registered bool
	regErr     error
	fromDisk   time.Time // the state on disk the agent started from
}

// NewAgent returns an agent; Run drives it.
func NewAgent(cfg AgentConfig) *Agent {
	if cfg.NewSpeaker == nil {
		cfg.NewSpeaker = NewSpeaker
	}
	if cfg.EtcdWait == 0 {
		cfg.EtcdWait = 10 * time.Second
	}
	if cfg.Controller.Records == nil {
		cfg.Controller.Records = NewRecords()
	}
	return &Agent{cfg: cfg, log: cfg.Controller.Log}
}

// Run registers the node and runs the speaker and controller until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	cache := a.cfg.Controller.Cache
	go cache.Run(ctx)
	if err := a.start(ctx); err != nil {
		return err
	}
	if a.cfg.Started != nil {
		a.cfg.Started()
	}
	if a.cfg.StateFile != "" {
		go a.keepState(ctx)
	}
	for ctx.Err() == nil {
		g, ok := a.global()
		if !ok {
			select { // not registered yet, and nothing on disk
			case <-ctx.Done():
			case <-cache.Changed():
			case <-time.After(time.Second):
			}
			continue
		}
		sp, err := a.cfg.NewSpeaker(ctx, g, a.log)
		if err != nil {
			a.log.Error("cannot start the BGP speaker; retrying", "err", err)
			sleepCtx(ctx, 2*time.Second)
			continue
		}
		cc := a.cfg.Controller
		cc.Speaker, cc.RouterID = sp, a.cfg.RouterID
		ctrl := NewController(cc)
		a.mu.Lock()
		a.ctrl, a.speaker = ctrl, sp
		a.mu.Unlock()
		a.log.Info("BGP speaker started", "asn", g.ASN, "routerID", g.RouterID, "listenPort", g.ListenPort, "gracefulRestart", g.GR)
		err = ctrl.Run(ctx)
		if !errors.Is(err, ErrSpeakerChanged) {
			return err
		}
		// The listen port must be free for the new speaker: stop this one
		// for real. The kernel keeps its routes meanwhile: deletions are
		// held until the new sessions are up.
		sp.Stop(true)
		if cc.HoldMax > 0 {
			cc.FIB.HoldDeletes()
		}
	}
	return nil
}

// start waits for etcd and the node's registration; if etcd does not
// answer within EtcdWait and a state from disk exists, it starts from
// that and registers in the background once etcd is back.
func (a *Agent) start(ctx context.Context) error {
	cache := a.cfg.Controller.Cache
	begin := time.Now()
	for attempt := 0; ctx.Err() == nil; attempt++ {
		err := a.cfg.Register(ctx)
		if err == nil {
			a.setRegistered(nil)
			return nil
		}
		a.setRegistered(err)
		if errors.Is(err, ErrNameInUse) {
			a.log.Error("not starting: node name in use", "err", err)
			sleepCtx(ctx, 10*time.Second)
			continue
		}
		if time.Since(begin) >= a.cfg.EtcdWait && a.cfg.StateFile != "" {
			data, at, lerr := LoadState(a.cfg.StateFile)
			switch {
			case lerr != nil:
				a.log.Warn("cannot read the last known state", "file", a.cfg.StateFile, "err", lerr)
			case data != nil && cache.Seed(data):
				a.mu.Lock()
				a.fromDisk = at
				a.mu.Unlock()
				a.log.Warn("etcd unreachable; starting from the last known state", "file", a.cfg.StateFile, "savedAt", at, "err", err)
				go a.registerLater(ctx)
				return nil
			}
		}
		if attempt%10 == 0 {
			a.log.Warn("waiting for etcd to register the node", "err", err)
		}
		sleepCtx(ctx, time.Second)
	}
	return nil
}

// registerLater retries the registration until it succeeds.
func (a *Agent) registerLater(ctx context.Context) {
	for ctx.Err() == nil {
		err := a.cfg.Register(ctx)
		a.setRegistered(err)
		if err == nil {
			a.log.Info("etcd is back: node registered")
			return
		}
		if errors.Is(err, ErrNameInUse) {
			a.log.Error("node name in use", "err", err)
		}
		sleepCtx(ctx, 2*time.Second)
	}
}

func (a *Agent) setRegistered(err error) {
	a.mu.Lock()
	a.registered, a.regErr = err == nil, err
	a.mu.Unlock()
}

// global is the speaker the cluster's settings in force ask for; false
// while the node's own record is not known.
func (a *Agent) global() (GlobalSpec, bool) {
	cache := a.cfg.Controller.Cache
	self := a.cfg.Self
	found := false
	if v, ok := cache.Snapshot(ipam.Prefix + "nodes/" + self.Name)[ipam.Prefix+"nodes/"+self.Name]; ok {
		if n, err := conf.UnmarshalNode(v); err == nil {
			self, found = n, true
		}
	}
	if !found {
		return GlobalSpec{}, false
	}
	cfg := conf.DefaultBGPConfiguration()
	if c, ok := BGPConfigInForce(cache, a.cfg.Controller.Records, a.log); ok {
		cfg = c
	}
	return WantedGlobal(&self, &cfg, a.cfg.RouterID), true
}

// keepState saves the cache to the state file within 2 s of a change
// (never the state it started from: only what etcd said).
func (a *Agent) keepState(ctx context.Context) {
	cache := a.cfg.Controller.Cache
	var saved time.Time
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok := cache.LastOK()
		if ok.IsZero() || !ok.After(saved) || cache.Seeded() {
			continue
		}
		if err := SaveState(a.cfg.StateFile, cache); err != nil {
			a.log.Warn("cannot save the last known state", "file", a.cfg.StateFile, "err", err)
			continue
		}
		saved = ok
	}
}

func (a *Agent) current() (*Controller, *Speaker) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ctrl, a.speaker
}

// Status is the current controller's status.
func (a *Agent) Status(ctx context.Context) Status {
	c, _ := a.current()
	if c == nil {
		return Status{NotReady: a.notReady(nil)}
	}
	st := c.Status(ctx)
	st.NotReady = a.notReady(st.NotReady)
	st.Ready = len(st.NotReady) == 0
	return st
}

// Ready is the current controller's readiness, plus the agent's own.
func (a *Agent) Ready(ctx context.Context) (bool, []string) {
	c, _ := a.current()
	if c == nil {
		why := a.notReady(nil)
		return false, why
	}
	_, why := c.Ready(ctx)
	why = a.notReady(why)
	return len(why) == 0, why
}

func (a *Agent) notReady(why []string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ctrl == nil {
		why = append(why, "bgp: speaker not started yet")
	}
	if !a.registered {
		msg := "node: not registered yet"
		if a.regErr != nil {
			msg = "node: not registered: " + a.regErr.Error()
		}
		why = append(why, msg)
	}
	if !a.fromDisk.IsZero() && a.cfg.Controller.Cache.Seeded() {
		why = append(why, fmt.Sprintf("etcd: unreachable; running from the state saved at %s", a.fromDisk.Format(time.RFC3339)))
	}
	return why
}

// Stop stops the speaker (hard: with NOTIFICATIONs, the node is leaving).
func (a *Agent) Stop(hard bool) {
	if _, sp := a.current(); sp != nil {
		sp.Stop(hard)
	}
}

// Learned lists the paths the current speaker learned (for the node API).
func (a *Agent) Learned(ctx context.Context) ([]string, error) {
	_, sp := a.current()
	if sp == nil {
		return nil, errors.New("BGP speaker not started yet")
	}
	return sp.Learned(ctx)
}
