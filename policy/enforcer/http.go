package enforcer

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/brindle-net/brindle/policy/nft"
)

// PodDrop is a sampled drop with the pod it concerns.
type PodDrop struct {
	nft.Drop
	// Pod is the local pod that dropped it (the destination for ingress,
	// the source for egress and spoofing), namespace/name.
	Pod string `json:"pod,omitempty"`
}

// dropLog keeps the last sampled drops.
type dropLog struct {
	mu   sync.Mutex
	ring []PodDrop
	next int
	full bool
}

func newDropLog(n int) *dropLog { return &dropLog{ring: make([]PodDrop, n)} }

func (l *dropLog) add(d PodDrop) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ring[l.next] = d
	l.next = (l.next + 1) % len(l.ring)
	l.full = l.full || l.next == 0
}

// list returns the drops, oldest first, of pod (all when "").
func (l *dropLog) list(pod string) []PodDrop {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []PodDrop
	n := l.next
	if l.full {
		n = len(l.ring)
	}
	for i := range n {
		d := l.ring[(l.next-n+i+len(l.ring))%len(l.ring)]
		if pod == "" || d.Pod == pod {
			out = append(out, d)
		}
	}
	return out
}

func (e *Enforcer) readDrops(ctx context.Context) {
	for ctx.Err() == nil {
		err := nft.ReadDrops(ctx, e.cfg.Writer.NetNS, e.cfg.LogGroup, func(d nft.Drop) {
			owners, _ := e.ownerSnapshot()
			pd := PodDrop{Drop: d}
			switch d.Kind {
			case "ingress":
				pd.Pod = owners[d.Dst]
			case "egress", "spoof":
				pd.Pod = owners[d.Src]
			}
			e.drops.add(pd)
			e.cfg.Log.Debug("dropped", "kind", d.Kind, "src", d.Src, "dst", d.Dst, "proto", d.Proto, "port", d.Port, "pod", pd.Pod)
		})
		if err != nil && ctx.Err() == nil {
			e.cfg.Log.Warn("reading sampled drops (nflog)", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
			}
		}
	}
}

// Drops returns the recent sampled drops of pod (namespace/name; all when
// ""), oldest first.
func (e *Enforcer) Drops(pod string) []PodDrop { return e.drops.list(pod) }

// Handler serves /policy (the last sync) and /policy/drops[?pod=ns/name].
func (e *Enforcer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/policy", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, e.Status())
	})
	mux.HandleFunc("/policy/drops", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, e.Drops(r.URL.Query().Get("pod")))
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
