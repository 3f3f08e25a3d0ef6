package podinfo

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/brindle-net/brindle/internal/http1"
)

// Config says where pod information comes from.
type Config struct {
	// Socket is brindled's unix socket, asked first when it exists.
	Socket string
	// Kubeconfig is the file install-cni writes (brindled keeps its token
	// fresh), used when brindled does not answer.
	Kubeconfig string
}

// ErrNoAccess means neither source is configured or present: the plugin
// runs without Kubernetes (the lab, plain containerd).
var ErrNoAccess = errors.New("no Kubernetes access configured")

// ErrNotFound means the API has no such pod (a static pod without its
// mirror yet, or a pod deleted meanwhile).
var ErrNotFound = errors.New("pod not found in the Kubernetes API")

// Lookup returns the pod (uid is the runtime's K8S_POD_UID; brindled reads
// past its cache when the cached pod has another). It asks brindled first;
// when brindled does not answer (not running, no socket), the apiserver
// through the kubeconfig. ctx bounds the whole lookup.
func Lookup(ctx context.Context, c Config, namespace, name, uid string) (*Info, error) {
	var sockErr error
	if c.Socket != "" {
		if _, err := os.Stat(c.Socket); err == nil {
			info, err := askBrindled(ctx, c.Socket, namespace, name, uid)
			if err == nil || errors.Is(err, ErrNotFound) || c.Kubeconfig == "" {
				return info, err
			}
			sockErr = err
		}
	}
	if c.Kubeconfig == "" {
		return nil, ErrNoAccess
	}
	info, err := askAPIServer(ctx, c.Kubeconfig, namespace, name)
	if err != nil && sockErr != nil {
		return nil, fmt.Errorf("%w (and brindled: %v)", err, sockErr)
	}
	return info, err
}

// askBrindled sends one HTTP/1.1 request over a fresh unix connection,
// written and read by hand: in a process that lives for one ADD, net/http's
// Transport (pools, goroutines per connection) costs more than the call.
func askBrindled(ctx context.Context, socket, namespace, name, uid string) (*Info, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("ask brindled at %s: %w", socket, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	q := url.Values{"namespace": {namespace}, "name": {name}, "uid": {uid}}
	if _, err := fmt.Fprintf(conn, "GET /v1/pod?%s HTTP/1.1\r\nHost: brindled\r\nConnection: close\r\n\r\n", q.Encode()); err != nil {
		return nil, fmt.Errorf("ask brindled at %s: %w", socket, err)
	}
	res, err := http1.ReadResponse(bufio.NewReader(conn), 1<<20)
	if err != nil {
		return nil, fmt.Errorf("ask brindled at %s: %w", socket, err)
	}
	switch res.StatusCode {
	case statusOK:
		var info Info
		if err := json.Unmarshal(res.Body, &info); err != nil {
			return nil, fmt.Errorf("ask brindled: decode: %w", err)
		}
		return &info, nil
	case statusNotFound:
		return nil, fmt.Errorf("%w: %s/%s (brindled)", ErrNotFound, namespace, name)
	}
	return nil, fmt.Errorf("ask brindled: %s: %s", res.Status, res.Body)
}

// The statuses the plugin tells apart.
const (
	statusOK       = 200
	statusNotFound = 404
)

// objectMeta is the part of a pod or namespace read from the apiserver.
type objectMeta struct {
	Metadata struct {
		Name            string            `json:"name"`
		Namespace       string            `json:"namespace"`
		UID             string            `json:"uid"`
		Annotations     map[string]string `json:"annotations"`
		OwnerReferences []struct {
			Kind       string `json:"kind"`
			Name       string `json:"name"`
			UID        string `json:"uid"`
			Controller *bool  `json:"controller"`
		} `json:"ownerReferences"`
	} `json:"metadata"`
}

// askAPIServer GETs the pod and its namespace, metadata only, over one
// connection: no discovery, no client library, and no net/http (see
// internal/http1): the requests are written by hand.
func askAPIServer(ctx context.Context, path, namespace, name string) (*Info, error) {
	t, err := loadKubeconfig(path)
	if err != nil {
		return nil, err
	}
	api, err := dialAPIServer(ctx, t)
	if err != nil {
		return nil, err
	}
	defer api.close()
	get := func(p string) (*objectMeta, error) {
		res, err := api.get(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("kubernetes apiserver %s: %w", t.server, err)
		}
		switch res.StatusCode {
		case statusOK:
		case statusNotFound:
			return nil, ErrNotFound
		default:
			return nil, fmt.Errorf("kubernetes apiserver %s: GET %s: %s: %.300s", t.server, p, res.Status, res.Body)
		}
		var m objectMeta
		if err := json.Unmarshal(res.Body, &m); err != nil {
			return nil, fmt.Errorf("kubernetes apiserver: GET %s: decode: %w", p, err)
		}
		return &m, nil
	}
	pod, err := get("/api/v1/namespaces/" + url.PathEscape(namespace) + "/pods/" + url.PathEscape(name))
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: %s/%s", ErrNotFound, namespace, name)
	}
	if err != nil {
		return nil, err
	}
	info := &Info{Namespace: namespace, Name: name, UID: pod.Metadata.UID,
		Annotations: Relevant(pod.Metadata.Annotations), Source: "apiserver"}
	for _, o := range pod.Metadata.OwnerReferences {
		if o.Controller != nil && *o.Controller {
			info.Owner = &Owner{Kind: o.Kind, Name: o.Name, UID: o.UID}
		}
	}
	ns, err := get("/api/v1/namespaces/" + url.PathEscape(namespace))
	switch {
	case err == nil:
		info.NamespaceAnnotations = Relevant(ns.Metadata.Annotations)
	case !errors.Is(err, ErrNotFound):
		return nil, err
	}
	return info, nil
}
