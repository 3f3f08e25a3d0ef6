package kube

import (
	"context"
	"log/slog"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
)

// LeaseName is the Lease (in brindle's namespace) whose holder runs the
// cluster-wide controller.
const LeaseName = "brindle-controller"

// Election says how the controller's Lease is contended for.
type Election struct {
	Clients   *Clients
	Namespace string
	// Identity is this brindled's: its node name.
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod mean what they mean in
	// client-go's leaderelection: a holder that stops renewing is replaced
	// within about LeaseDuration; a holder that cannot renew for
	// RenewDeadline stops running the controller.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Log                                       *slog.Logger
	Metrics                                   *Metrics
}

// RunElected runs run while this brindled holds the Lease, and contends
// for it again whenever it loses it, until ctx ends. run's context ends
// when leadership is lost; the Lease is given up (released) only once run
// has returned, so two controllers never run at once.
//
// This is client-go's leaderelection algorithm on a coordination/v1
// Lease (an optimistic update guarded by resourceVersion; another
// holder's lease is judged expired by this process's clock since it last
// saw the record change, never by the record's timestamps), written here
// because client-go's package pulls in every API group (api.go).
func RunElected(ctx context.Context, e Election, run func(context.Context)) {
	if e.Namespace == "" {
		e.Namespace = DefaultNamespace
	}
	if e.LeaseDuration == 0 {
		e.LeaseDuration, e.RenewDeadline, e.RetryPeriod = 15*time.Second, 10*time.Second, 2*time.Second
	}
	l := &elector{Election: e}
	for ctx.Err() == nil {
		if !l.acquire(ctx) {
			return
		}
		l.lead(ctx, run)
		sleepCtx(ctx, e.RetryPeriod)
	}
}

type elector struct {
	Election
	observed   coordinationv1.LeaseSpec
	observedAt time.Time
	leader     string // the holder last logged
}

// acquire tries every RetryPeriod (jittered) until it holds the Lease;
// false when ctx ended first.
func (l *elector) acquire(ctx context.Context) bool {
	for {
		if l.try(ctx) {
			return true
		}
		if !sleepCtx(ctx, wait.Jitter(l.RetryPeriod, 1.2)) {
			return false
		}
	}
}

// lead runs run and renews the Lease every RetryPeriod until a renewal
// has failed for RenewDeadline or ctx ends; then stops run, waits for it,
// and (when ctx ended) releases the Lease.
func (l *elector) lead(ctx context.Context, run func(context.Context)) {
	l.Log.Info("holding the controller lease: running the cluster-wide controller", "lease", l.Namespace+"/"+LeaseName)
	if l.Metrics != nil {
		l.Metrics.Leader.Set(1)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); run(rctx) }()
	for l.renew(ctx) {
	}
	stop()
	<-done
	if l.Metrics != nil {
		l.Metrics.Leader.Set(0)
	}
	l.Log.Info("not holding the controller lease", "lease", l.Namespace+"/"+LeaseName)
	if ctx.Err() != nil {
		l.release()
	}
}

// renew waits RetryPeriod and renews, retrying until RenewDeadline; false
// when leadership is lost or ctx ended.
func (l *elector) renew(ctx context.Context) bool {
	if !sleepCtx(ctx, l.RetryPeriod) {
		return false
	}
	dctx, cancel := context.WithTimeout(ctx, l.RenewDeadline)
	defer cancel()
	for {
		if l.try(dctx) {
			return true
		}
		if !sleepCtx(dctx, l.RetryPeriod) {
			if ctx.Err() == nil {
				l.Log.Warn("could not renew the controller lease in time; stopping the cluster-wide controller",
					"lease", l.Namespace+"/"+LeaseName, "renewDeadline", l.RenewDeadline)
			}
			return false
		}
	}
}

// try is one attempt to acquire or renew: it reports whether this
// brindled holds the Lease now.
func (l *elector) try(ctx context.Context) bool {
	api := l.Clients.Typed
	now := metav1.NewMicroTime(time.Now())
	cur, err := api.Lease(ctx, l.Namespace, LeaseName)
	if apierrors.IsNotFound(err) {
		lease := &coordinationv1.Lease{ObjectMeta: metaFor(l.Namespace, LeaseName), Spec: l.spec(coordinationv1.LeaseSpec{}, now)}
		created, err := api.CreateLease(ctx, lease)
		if err != nil {
			l.Log.Debug("create the controller lease", "err", err)
			return false
		}
		l.observe(created.Spec)
		return true
	}
	if err != nil {
		l.Log.Debug("read the controller lease", "err", err)
		return false
	}
	l.observe(cur.Spec)
	holder := ptr.Deref(cur.Spec.HolderIdentity, "")
	if holder != "" && holder != l.Identity {
		d := time.Duration(ptr.Deref(cur.Spec.LeaseDurationSeconds, 0)) * time.Second
		if l.observedAt.Add(d).After(time.Now()) {
			return false // held, and renewed within its duration as far as we saw
		}
	}
	cur.Spec = l.spec(cur.Spec, now)
	updated, err := api.UpdateLease(ctx, cur)
	if err != nil {
		l.Log.Debug("update the controller lease", "err", err)
		return false
	}
	l.observe(updated.Spec)
	return true
}

// spec is old taken (or kept) by this brindled at now.
func (l *elector) spec(old coordinationv1.LeaseSpec, now metav1.MicroTime) coordinationv1.LeaseSpec {
	s := *old.DeepCopy()
	if ptr.Deref(s.HolderIdentity, "") != l.Identity {
		s.AcquireTime = &now
		if s.HolderIdentity != nil {
			s.LeaseTransitions = ptr.To(ptr.Deref(s.LeaseTransitions, 0) + 1)
		}
	}
	s.HolderIdentity = ptr.To(l.Identity)
	s.LeaseDurationSeconds = ptr.To(int32(l.LeaseDuration / time.Second))
	s.RenewTime = &now
	return s
}

// observe notes the record and, when it changed, when (by this clock).
func (l *elector) observe(s coordinationv1.LeaseSpec) {
	if !apiequality.Semantic.DeepEqual(s, l.observed) || l.observedAt.IsZero() {
		l.observed, l.observedAt = s, time.Now()
	}
	if h := ptr.Deref(s.HolderIdentity, ""); h != "" && h != l.leader {
		l.leader = h
		if h != l.Identity {
			l.Log.Info("the cluster-wide controller runs elsewhere", "leader", h)
		}
	}
}

// release gives the Lease up (holder cleared, 1 s duration) so that
// another brindled takes over at once instead of after LeaseDuration.
func (l *elector) release() {
	ctx, cancel := context.WithTimeout(context.Background(), l.RenewDeadline)
	defer cancel()
	cur, err := l.Clients.Typed.Lease(ctx, l.Namespace, LeaseName)
	if err != nil || ptr.Deref(cur.Spec.HolderIdentity, "") != l.Identity {
		return
	}
	now := metav1.NewMicroTime(time.Now())
	cur.Spec.HolderIdentity = nil
	cur.Spec.LeaseDurationSeconds = ptr.To(int32(1))
	cur.Spec.RenewTime = &now
	if _, err := l.Clients.Typed.UpdateLease(ctx, cur); err != nil {
		l.Log.Warn("release the controller lease", "err", err)
	}
}

// sleepCtx waits d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
