package nodeapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/brindle-net/brindle/capture"
	"github.com/brindle-net/brindle/ipam"
)

// ResultTrailer is the HTTP trailer that carries a capture's Result.
const ResultTrailer = "Brindle-Capture-Result"

// apiError is the JSON body of every non-200 answer.
type apiError struct {
	Error string `json:"error"`
	// Node is set when the pod lives on another node (status 421).
	Node string `json:"node,omitempty"`
}

type server struct {
	cfg Config
	sem chan struct{}
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/capture", s.capture)
	mux.HandleFunc("GET /v1/pod", s.pod)
	mux.HandleFunc("GET /v1/routes", s.routeInfo)
	return mux
}

func writeError(w http.ResponseWriter, code int, e apiError) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(e)
}

// peer names the client for the log: its certificate or the unix socket.
func peer(r *http.Request) string {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return "tls:" + r.TLS.PeerCertificates[0].Subject.CommonName
	}
	return "unix"
}

// Endpoints lists the endpoint records of one node ("" for all nodes).
func Endpoints(ctx context.Context, cli *clientv3.Client, node string) ([]ipam.Endpoint, error) {
	key := ipam.Prefix + "endpoints/"
	if node != "" {
		key += node + "/"
	}
	res, err := cli.Get(ctx, key, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read endpoints: %w", err)
	}
	var out []ipam.Endpoint
	for _, kv := range res.Kvs {
		var e ipam.Endpoint
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return nil, fmt.Errorf("%s: %w", kv.Key, err)
		}
		if e.Node == "" { // the key says which node
			e.Node = strings.SplitN(strings.TrimPrefix(string(kv.Key), ipam.Prefix+"endpoints/"), "/", 2)[0]
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Namespace+"/"+a.Pod != b.Namespace+"/"+b.Pod {
			return a.Namespace+"/"+a.Pod < b.Namespace+"/"+b.Pod
		}
		return a.IfName < b.IfName
	})
	return out, nil
}

// PodEndpoints selects a pod's endpoints from a list.
func PodEndpoints(eps []ipam.Endpoint, namespace, pod string) []ipam.Endpoint {
	var out []ipam.Endpoint
	for _, e := range eps {
		if e.Namespace == namespace && e.Pod == pod {
			out = append(out, e)
		}
	}
	return out
}

func captureReq(namespace, pod string) capture.Request {
	return capture.Request{Namespace: namespace, Pod: pod, AllInterfaces: true}
}

// targets finds what a request captures on this node. A pod on another
// node gives status 421 and that node's name.
func (s *server) targets(ctx context.Context, req capture.Request) ([]capture.Target, int, apiError) {
	eps, err := Endpoints(ctx, s.cfg.Etcd, s.cfg.Node)
	if err != nil {
		return nil, http.StatusServiceUnavailable, apiError{Error: err.Error()}
	}
	if !req.AllPods {
		mine := PodEndpoints(eps, req.Namespace, req.Pod)
		if len(mine) == 0 {
			all, err := Endpoints(ctx, s.cfg.Etcd, "")
			if err != nil {
				return nil, http.StatusServiceUnavailable, apiError{Error: err.Error()}
			}
			if there := PodEndpoints(all, req.Namespace, req.Pod); len(there) > 0 {
				return nil, http.StatusMisdirectedRequest, apiError{
					Error: fmt.Sprintf("pod %s/%s is on node %s, not %s", req.Namespace, req.Pod, there[0].Node, s.cfg.Node),
					Node:  there[0].Node}
			}
			return nil, http.StatusNotFound, apiError{Error: fmt.Sprintf("pod %s/%s: no brindle endpoint on any node", req.Namespace, req.Pod)}
		}
		eps = mine
		if !req.AllInterfaces {
			one := eps[0]
			for _, e := range eps {
				if e.IfName == "eth0" {
					one = e
				}
			}
			eps = []ipam.Endpoint{one}
		}
	}
	var out []capture.Target
	for _, e := range eps {
		if e.HostVeth == "" {
			continue
		}
		out = append(out, capture.Target{HostVeth: e.HostVeth, Namespace: e.Namespace, Pod: e.Pod, IfName: e.IfName})
	}
	if len(out) == 0 {
		return nil, http.StatusNotFound, apiError{Error: fmt.Sprintf("node %s: no pod interfaces to capture on", s.cfg.Node)}
	}
	return out, 0, apiError{}
}

func (s *server) capture(w http.ResponseWriter, r *http.Request) {
	var req capture.Request
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, apiError{Error: "capture request: " + err.Error()})
		return
	}
	if err := s.cfg.Limits.Check(&req); err != nil {
		writeError(w, http.StatusBadRequest, apiError{Error: err.Error()})
		return
	}
	filter, err := capture.Compile(req.Filter)
	if err != nil {
		writeError(w, http.StatusBadRequest, apiError{Error: err.Error()})
		return
	}
	lctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	targets, code, aerr := s.targets(lctx, req)
	cancel()
	if code != 0 {
		writeError(w, code, aerr)
		return
	}
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	default:
		writeError(w, http.StatusTooManyRequests, apiError{Error: fmt.Sprintf("node %s: %d captures already running (brindled --capture-max-concurrent)", s.cfg.Node, cap(s.sem))})
		return
	}
	ctype := "application/vnd.tcpdump.pcap"
	if len(targets) > 1 {
		ctype = "application/x-pcapng"
	}
	var names []string
	for _, t := range targets {
		names = append(names, t.Name()+"="+t.HostVeth)
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Brindle-Capture-Interfaces", strings.Join(names, ","))
	w.Header().Set("Trailer", ResultTrailer)
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	log := s.cfg.Log.With("peer", peer(r), "interfaces", names, "filter", req.Filter)
	log.Info("capture started", "duration", req.Duration(), "maxBytes", req.MaxBytes, "snaplen", req.Snaplen)
	sess := &capture.Session{Targets: targets, Filter: filter, Req: req, Open: s.cfg.Open, Log: log}
	res := sess.Run(r.Context(), w, func() { rc.Flush() })
	b, _ := json.Marshal(res)
	w.Header().Set(ResultTrailer, string(b))
	log.Info("capture ended", "reason", res.Reason, "packets", res.Packets, "bytes", res.Bytes, "dropped", res.Dropped, "err", res.Error)
}

// APIError is a refusal from a node's API.
type APIError struct {
	Status int
	Msg    string
	Node   string // the pod's node, when it is not this one
}

func (e *APIError) Error() string { return e.Msg }

// IsElsewhere reports whether err says the pod is on another node, and which.
func IsElsewhere(err error) (string, bool) {
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusMisdirectedRequest {
		return ae.Node, true
	}
	return "", false
}
