package ipam

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func queuedAssign(t *testing.T, handle string) *pending {
	t.Helper()
	p, err := newAssign(AssignRequest{Handle: handle, Node: "n1", IPv4: true})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A waiter that has taken the lock itself withdraws its request: the next
// holder, in the moment between this one's unlock and its close, must not
// take the request into its own transaction (it would be made twice) or
// pass it the turn.
func TestNodeQueueWithdrawnRequestNotServed(t *testing.T) {
	l := &NodeLocal{Dir: t.TempDir(), Node: "n1"}
	if err := l.ensureDirs(); err != nil {
		t.Fatal(err)
	}
	w, err := l.enqueue(queuedAssign(t, "a.eth0"), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	if got, _ := l.scan(32, map[string]bool{}, ""); len(got) != 1 || got[0].id != w.id {
		t.Fatalf("queued request not scanned: %+v", got)
	}
	if next := l.nextWaiting(""); next != w.id {
		t.Fatalf("next waiting %q, want %q", next, w.id)
	}
	w.withdraw()
	if got, next := l.scan(32, map[string]bool{}, ""); len(got) != 0 || next != "" {
		t.Fatalf("withdrawn request still served: %+v, next %q", got, next)
	}
	if next := l.nextWaiting(""); next != "" {
		t.Fatalf("withdrawn request still passed the turn: %q", next)
	}
}

// A holder delivering into a mailbox while its waiter closes (a turn
// passed just as the waiter finished) leaves nothing behind: the mailbox
// is gone after close, whatever the interleaving.
func TestNodeQueueCloseWhileDelivering(t *testing.T) {
	l := &NodeLocal{Dir: t.TempDir(), Node: "n1"}
	if err := l.ensureDirs(); err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		w, err := l.enqueue(queuedAssign(t, "a.eth0"), time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Go(func() {
			<-start
			_ = l.deliver(w.id, "turn", nil) // fails once the mailbox is gone
		})
		close(start)
		w.close()
		wg.Wait()
		if _, err := os.Stat(w.box); !os.IsNotExist(err) {
			t.Fatalf("round %d: mailbox %s left after close: %v", i, w.box, err)
		}
	}
	if left := queueLeft(t, l.Dir); len(left) != 0 {
		t.Fatalf("queue files left: %v", left)
	}
}

// With no inotify instance to be had (fs.inotify.max_user_instances is
// shared with every process of the user: on a busy host all 128 were in
// use), concurrent ADDs still queue and are combined into few
// transactions: each waiter polls its mailbox instead of waiting for the
// lock on its own.
func TestNodeLocalWithoutInotify(t *testing.T) {
	inotifyInit = func(int) (int, error) { return -1, unix.EMFILE }
	t.Cleanup(func() { inotifyInit = unix.InotifyInit1 })
	base, _ := newAllocOn(t, "http")
	addPool(t, base, "default", "10.244.0.0/16", nil)
	tc := &tripCounter{Store: base.Store}
	dir := t.TempDir()
	const n = 40
	var mu sync.Mutex
	var all []HandleAddr
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			a := localAlloc(tc, dir, "n1")
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			has, err := a.Assign(ctx, AssignRequest{Handle: fmt.Sprintf("c%02d.eth0", i), Node: "n1", IPv4: true})
			if err != nil {
				t.Errorf("assign %d: %v", i, err)
				return
			}
			mu.Lock()
			all = append(all, has...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	checkAllocs(t, base, map[string][]HandleAddr{"n1": all})
	if len(all) != n {
		t.Fatalf("%d addresses for %d ADDs", len(all), n)
	}
	commits := tc.commits.Load()
	t.Logf("%d ADDs without inotify in %d commits", n, commits)
	if commits >= n {
		t.Fatalf("%d concurrent ADDs took %d commits: nothing was combined", n, commits)
	}
	if left := queueLeft(t, dir); len(left) != 0 {
		t.Fatalf("queue files left: %v", left)
	}
}
