package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/brindle-net/brindle/kube/podinfo"
)

// Looker finds a pod; PodCache is one.
type Looker interface {
	Lookup(ctx context.Context, namespace, name, uid string) (*podinfo.Info, error)
}

// ServeSocket answers the CNI plugins on a unix socket at path (mode 0600,
// root only) until ctx ends: GET /v1/pod?namespace=&name=&uid= returns the
// pod's podinfo.Info, 404 when the API has no such pod, 503 when the
// apiserver cannot be asked. A stale socket file from an earlier run is
// replaced.
func ServeSocket(ctx context.Context, path string, pods Looker, log *slog.Logger) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("pod socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/pod", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ns, name := q.Get("namespace"), q.Get("name")
		if ns == "" || name == "" {
			http.Error(w, "namespace and name are required", http.StatusBadRequest)
			return
		}
		info, err := pods.Lookup(r.Context(), ns, name, q.Get("uid"))
		switch {
		case errors.Is(err, podinfo.ErrNotFound):
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		case err != nil:
			log.Warn("pod lookup for the CNI plugin failed", "namespace", ns, "pod", name, "err", err)
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(info)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err = srv.Serve(ln)
	_ = os.Remove(path)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
