package faults

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/brindle-net/brindle/test/lab"
)

// sessionEvent is a BGP session of a node with one peer coming up or going
// down, as GoBGP logged it in brindled's log (the lab runs brindled with
// --log-level debug): the time is the daemon's own, so intervals between
// events do not depend on how often a loaded test polls.
type sessionEvent struct {
	At     time.Time
	Up     bool
	Reason string // why a session went down
}

// sessionLog follows the ups and downs of node n's session with peer in
// brindled's log, reading only what was appended since the last read (the
// log grows by a line per update GoBGP refuses over the limit).
type sessionLog struct {
	path string
	peer string
	off  int64
	evs  []sessionEvent
}

func newSessionLog(n *lab.Node, peer netip.Addr) *sessionLog {
	return &sessionLog{path: n.LogFile(), peer: peer.String()}
}

// events is every event so far, in order.
func (sl *sessionLog) events() ([]sessionEvent, error) {
	f, err := os.Open(sl.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(sl.off, io.SeekStart); err != nil {
		return nil, err
	}
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil { // EOF: a partial line is read again next time
			break
		}
		sl.off += int64(len(line))
		if !bytes.Contains(line, []byte(`"Peer `)) {
			continue
		}
		var e struct {
			Time   time.Time `json:"time"`
			Msg    string    `json:"msg"`
			Key    string    `json:"Key"`
			Reason string    `json:"Reason"`
		}
		if json.Unmarshal(line, &e) != nil || e.Key != sl.peer {
			continue
		}
		switch e.Msg {
		case "Peer Up":
			sl.evs = append(sl.evs, sessionEvent{At: e.Time, Up: true})
		case "Peer Down":
			sl.evs = append(sl.evs, sessionEvent{At: e.Time, Reason: e.Reason})
		}
	}
	return sl.evs, nil
}

// tries splits session events into the times sessions came up and the
// downs, checking they alternate (up, down, up, ...).
func tries(evs []sessionEvent) (ups []time.Time, downs []sessionEvent, err error) {
	for i, e := range evs {
		if e.Up != (i%2 == 0) {
			return nil, nil, fmt.Errorf("session events out of order at %d: %+v", i, evs)
		}
		if e.Up {
			ups = append(ups, e.At)
		} else {
			downs = append(downs, e)
		}
	}
	return ups, downs, nil
}

// birdLogCount counts the lines of a BIRD log file containing s (case
// insensitive).
func birdLogCount(t *testing.T, path, s string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(strings.ToLower(string(b)), "\n") {
		if strings.Contains(l, strings.ToLower(s)) {
			n++
		}
	}
	return n
}

// waitMeshRoutes waits until every node's kernel routes every pod of the
// other nodes (through the block route the other node announces) and its
// main table reads the same twice in a row a second apart, and returns
// those tables: WaitReady says the daemons are up, not that the blocks of
// pods just added have reached the other nodes' kernels, and a before/after
// comparison must start from the converged mesh.
func waitMeshRoutes(t *testing.T, l *lab.Lab, within time.Duration) map[string][]string {
	t.Helper()
	snapshot := func() map[string][]string {
		m := map[string][]string{}
		for _, n := range l.Nodes {
			m[n.Name] = kernelRoutes(t, n)
		}
		return m
	}
	var got map[string][]string
	err := eventually(within, func() error {
		a := snapshot()
		for _, n := range l.Nodes {
			for _, o := range l.Nodes {
				if o == n {
					continue
				}
				for _, p := range o.Pods() {
					if !routedVia(a[n.Name], p.Addr) {
						return fmt.Errorf("%s has no route via a node to %s's pod %s:\n%s", n.Name, o.Name, p.Addr, strings.Join(a[n.Name], "\n"))
					}
				}
			}
		}
		time.Sleep(time.Second)
		b := snapshot()
		for name := range a {
			if !slices.Equal(a[name], b[name]) {
				return fmt.Errorf("%s's routes still changing", name)
			}
		}
		got = b
		return nil
	})
	if err != nil {
		t.Fatalf("the mesh did not converge within %s: %v", within, err)
	}
	return got
}

// routedVia says whether one of routes (`ip route` lines) sends a to a
// gateway.
func routedVia(routes []string, a netip.Addr) bool {
	for _, r := range routes {
		f := strings.Fields(r)
		if len(f) < 3 || f[1] != "via" {
			continue
		}
		if p, err := netip.ParsePrefix(f[0]); err == nil && p.Contains(a) {
			return true
		}
		if h, err := netip.ParseAddr(f[0]); err == nil && h == a { // ip prints a /32 bare
			return true
		}
	}
	return false
}
