package ipam

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// NodeLocal makes concurrent ADDs and DELs on one node cheap. Without it,
// every ADD of a node competes for the same block key, and the ADDs win
// one per etcd commit: the others retry, each retry another commit.
// With it, the calls of one node queue on a node-local lock, and whoever
// holds the lock makes ONE transaction for itself and every request
// waiting at that moment (up to MaxBatch), then writes each waiting
// process its result. It also keeps what that transaction read and wrote
// (the state file), so the next one usually needs no read at all: an ADD
// is then one guarded etcd commit, shared with its neighbours.
//
// Nothing about correctness moves out of etcd: the transaction is the same
// revision-guarded commit an ADD makes on its own, so the lock only spares
// conflicts. Every piece is safe to lose at any moment: the lock is
// flock(2), which the kernel drops when its holder dies; a request whose
// process is gone is noticed (its file is no longer locked) and removed; a
// result that never arrives leaves the waiter to take the lock and make the
// transaction itself, and a request that was committed before its holder
// died is then found by its handle (a repeated ADD returns what the handle
// holds). It needs only the node's own directory: brindled need not run.
// See docs/ipam.md.
type NodeLocal struct {
	// Dir holds the lock, the state and the queue; one per node and etcd.
	Dir string
	// Node is the node whose calls are combined.
	Node string
	// MaxBatch caps the requests of one transaction (default 32; etcd
	// allows 128 operations per transaction by default, and an ADD
	// writes two keys and guards one).
	MaxBatch int
	// StateTTL is how old a state may be and still be used (default 5 min).
	StateTTL time.Duration
}

// ErrNodeBusy means a call's deadline passed while it waited behind other
// calls on the node (whose transaction was still running, usually because
// etcd is slow or unreachable). Like an unreachable etcd, it is worth
// trying again later.
var ErrNodeBusy = errors.New("deadline passed while waiting behind other ipam calls on this node")

// NodeLocalDir is the queue directory for node and the etcd endpoints,
// under dir (the directory of the node name file, which brindled owns):
// processes that reach different etcd clusters never share a queue.
func NodeLocalDir(dir, node string, endpoints []string) string {
	h := fnv.New32a()
	eps := slices.Clone(endpoints)
	slices.Sort(eps)
	h.Write([]byte(strings.Join(eps, ",")))
	return filepath.Join(dir, fmt.Sprintf("ipam-%s-%08x", node, h.Sum32()))
}

func (l *NodeLocal) maxBatch() int {
	if l.MaxBatch > 0 {
		return l.MaxBatch
	}
	return 32
}

func (l *NodeLocal) stateTTL() time.Duration {
	if l.StateTTL > 0 {
		return l.StateTTL
	}
	return 5 * time.Minute
}

// run makes p through the queue and returns its outcome. When the queue's
// directory cannot be used, p is made on its own transaction.
func (l *NodeLocal) run(ctx context.Context, a *Allocator, p *pending) ([]HandleAddr, error) {
	alone := func() ([]HandleAddr, error) {
		if p.req.Assign == nil {
			return a.releaseHandle(ctx, p.req.Release)
		}
		if err := a.runBatch(ctx, p.req.Assign.Node, []*pending{p}, newReadCache(a.Store)); err != nil {
			return nil, err
		}
		return p.out, p.err
	}
	if p.req.Assign != nil && p.req.Assign.Node != l.Node {
		return alone()
	}
	if err := l.ensureDirs(); err != nil {
		a.Log.Warn("node-local ipam queue unusable; making the call on its own", "dir", l.Dir, "err", err)
		return alone()
	}
	lk, err := openNodeLock(filepath.Join(l.Dir, "lock"))
	if err != nil {
		a.Log.Warn("node-local ipam lock unusable; making the call on its own", "dir", l.Dir, "err", err)
		return alone()
	}
	defer lk.close()
	if lk.try() {
		return l.holdAndPass(ctx, a, lk, p, "")
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Hour)
	}
	w, err := l.enqueue(p, deadline)
	if err != nil {
		a.Log.Warn("cannot queue on the node-local ipam lock; waiting for it", "dir", l.Dir, "err", err)
		w = nil
	} else {
		defer w.close()
	}
	// Wait for a result, or for the lock: the last holder passes the turn
	// to the oldest request it left waiting; polling covers a holder that
	// was killed before it could.
	interval := queuePoll
	if w != nil && w.watch == nil {
		interval = queueFastPoll // no inotify: nothing tells it of its result
	}
	poll := time.NewTicker(interval)
	defer poll.Stop()
	var lastErr error
	var events <-chan struct{}
	id := ""
	if w != nil {
		events, id = w.events, w.id
	}
	for {
		if w != nil {
			if r, ok := w.result(); ok {
				if !r.Retry || ctx.Err() != nil {
					return r.Addrs, r.err()
				}
				// The holder's transaction failed as a whole: this
				// process tries again itself when its turn comes.
				lastErr = r.err()
				w.clearResult()
			}
		}
		if lk.try() {
			if w != nil {
				// Every answer to this request was written before the lock
				// was released, so it is here now if there is one.
				r, ok := w.result()
				w.withdraw()
				if ok && !r.Retry {
					l.release(lk, id)
					return r.Addrs, r.err()
				}
			}
			return l.holdAndPass(ctx, a, lk, p, id)
		}
		select {
		case <-events:
		case <-poll.C:
		case <-ctx.Done():
			if lastErr != nil {
				return nil, lastErr
			}
			return nil, fmt.Errorf("%s on node %s: %w", p.what(), l.Node, ErrNodeBusy)
		}
	}
}

// Gathering a burst: a holder whose state was saved less than gatherAfter
// ago, when transactions of at least gatherMin calls were recent
// (nodeState.Recent), and who finds fewer queued, waits up to gatherFor
// for them.
const (
	gatherMin   = 2
	gatherAfter = 5 * time.Millisecond
	gatherFor   = time.Millisecond
)

// queuePoll is how often a waiter tries the lock without being told to:
// only a holder killed before it could pass the turn makes that needed.
const queuePoll = 25 * time.Millisecond

// queueFastPoll is how often a waiter without an inotify watch on its
// mailbox looks for its result (and tries the lock).
const queueFastPoll = 2 * time.Millisecond

// holdAndPass makes the transaction with the lock held, releases it and
// passes the turn on.
func (l *NodeLocal) holdAndPass(ctx context.Context, a *Allocator, lk *nodeLock, p *pending, ownID string) ([]HandleAddr, error) {
	out, err := l.hold(ctx, a, p, ownID)
	l.release(lk, ownID)
	return out, err
}

// release unlocks and tells the oldest waiting request that its turn has come.
func (l *NodeLocal) release(lk *nodeLock, ownID string) {
	lk.unlock()
	if next := l.nextWaiting(ownID); next != "" {
		l.passTurn(next)
	}
}

func (p *pending) what() string {
	if p.req.Assign != nil {
		return "assign " + p.req.Assign.Handle
	}
	return "release " + p.req.Release
}

func (l *NodeLocal) ensureDirs() error {
	for _, d := range []string{queueDir, waitDir} {
		if err := os.MkdirAll(filepath.Join(l.Dir, d), 0o700); err != nil {
			return err
		}
	}
	return nil
}

// hold runs with the lock held: one transaction for own and the requests
// waiting now, then their results.
func (l *NodeLocal) hold(ctx context.Context, a *Allocator, own *pending, ownID string) ([]HandleAddr, error) {
	rc := newReadCache(a.Store)
	st := l.loadState(rc)
	taken := map[string]bool{own.req.handle(): true}
	others, _ := l.scan(l.maxBatch()-1, taken, ownID)
	if st != nil && st.Recent >= gatherMin && len(others)+1 < st.Recent && time.Since(st.Saved) < gatherAfter {
		// A burst is under way (transactions just now made several calls
		// each) and fewer are queued yet: the processes they answered are
		// about to come back. Waiting a moment for them makes one commit
		// instead of two; a lone call never waits.
		for deadline := time.Now().Add(gatherFor); len(others)+1 < st.Recent && time.Now().Before(deadline); {
			time.Sleep(gatherFor / 8)
			more, _ := l.scan(l.maxBatch()-1-len(others), taken, ownID)
			others = append(others, more...)
		}
	}
	batch := []*pending{own}
	for _, q := range others {
		batch = append(batch, q.p)
	}
	if st != nil {
		// The state holds no handles. Assume each new one absent: the
		// commit's guard (create only) checks it, and if the handle does
		// exist the failed commit returns it, and the ADD gets what it holds.
		for _, p := range batch {
			if p.req.Assign != nil {
				rc.gets[Get{Key: handleKey(p.req.Assign.Handle)}] = nil
			}
		}
	}
	err := a.runBatch(ctx, l.Node, batch, rc)
	if err == nil {
		l.saveState(rc, len(batch), st)
	} else {
		l.dropState()
	}
	for i, q := range others {
		if werr := l.answer(q.id, resultOf(batch[i+1], err)); werr != nil {
			a.Log.Warn("cannot write a node-local ipam result; its process will make the call itself", "dir", l.Dir, "err", werr)
		}
	}
	if err != nil {
		return nil, err
	}
	return own.out, own.err
}

// EmptyBlocksDue reports whether, as far as the node-local state knows,
// one of the node's blocks has been empty for grace or longer, so that a
// DEL need not read the claims to find out. Without a state it says yes.
func (l *NodeLocal) EmptyBlocksDue(now time.Time, grace time.Duration) bool {
	rc := newReadCache(nil)
	if l.loadState(rc) == nil {
		return true
	}
	kvs, ok := rc.gets[Get{Key: nodeAffinityPrefix(l.Node), Prefix: true}]
	if !ok {
		return true
	}
	for _, kv := range kvs {
		var af Affinity
		if decode(kv, &af) != nil {
			return true
		}
		if af.State == AffinityPendingDeletion && now.Sub(af.Since) >= grace {
			return true
		}
	}
	return false
}
