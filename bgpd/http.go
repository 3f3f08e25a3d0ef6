package bgpd

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// StatusSource is what the health handler reports on: a Controller, or the
// Agent that runs one.
type StatusSource interface {
	Status(ctx context.Context) Status
	Ready(ctx context.Context) (bool, []string)
}

// Handler serves /livez, /readyz, /metrics and /status.
//
// /livez answers 200 while the process runs its loop; /readyz answers 200
// only when etcd answers, every expected BGP session is Established and the
// last route sync succeeded, else 503 with the reasons; /status is the JSON
// that `brindlectl node status` prints.
func Handler(c StatusSource, cli *clientv3.Client, m *Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		_, why := c.Ready(ctx)
		if _, err := cli.Get(ctx, "/brindle/v1/health", clientv3.WithCountOnly()); err != nil {
			why = append(why, "etcd: "+err.Error())
		}
		if len(why) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			for _, s := range why {
				w.Write([]byte(s + "\n"))
			}
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(c.Status(ctx))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	return mux
}
