package kube

import (
	"context"
	"log/slog"
	"time"

	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
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
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's; a
	// leader that dies is replaced within about LeaseDuration.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Log                                       *slog.Logger
	Metrics                                   *Metrics
}

// RunElected runs run while this brindled holds the Lease, and contends
// for it again whenever it loses it, until ctx ends. run's context ends
// when leadership is lost.
func RunElected(ctx context.Context, e Election, run func(context.Context)) {
	if e.Namespace == "" {
		e.Namespace = DefaultNamespace
	}
	if e.LeaseDuration == 0 {
		e.LeaseDuration, e.RenewDeadline, e.RetryPeriod = 15*time.Second, 10*time.Second, 2*time.Second
	}
	lock := &resourcelock.LeaseLock{
		Client:     e.Clients.Typed.CoordinationV1(),
		LeaseMeta:  metaFor(e.Namespace, LeaseName),
		LockConfig: resourcelock.ResourceLockConfig{Identity: e.Identity},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: lock, ReleaseOnCancel: true, Name: LeaseName,
			LeaseDuration: e.LeaseDuration, RenewDeadline: e.RenewDeadline, RetryPeriod: e.RetryPeriod,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					e.Log.Info("holding the controller lease: running the cluster-wide controller", "lease", e.Namespace+"/"+LeaseName)
					if e.Metrics != nil {
						e.Metrics.Leader.Set(1)
					}
					run(ctx)
				},
				OnStoppedLeading: func() {
					if e.Metrics != nil {
						e.Metrics.Leader.Set(0)
					}
					e.Log.Info("not holding the controller lease", "lease", e.Namespace+"/"+LeaseName)
				},
				OnNewLeader: func(id string) {
					if id != e.Identity {
						e.Log.Info("the cluster-wide controller runs elsewhere", "leader", id)
					}
				},
			},
		})
		if err != nil {
			e.Log.Error("leader election", "err", err)
			return
		}
		le.Run(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(e.RetryPeriod):
		}
	}
}
