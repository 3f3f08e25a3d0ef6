package ipam

import (
	"os"
	"sync"
	"testing"
	"time"
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
