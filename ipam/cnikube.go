package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/brindle-net/brindle/kube/podinfo"
)

// AttrPodUID records the pod's UID (K8S_POD_UID), by which brindled's
// garbage collection knows whether the pod still exists.
const AttrPodUID = "podUID"

// kubeAsk is what ADD asked of Kubernetes, to explain a refusal.
type kubeAsk struct {
	pod string // "pod ns/name"
	req podinfo.Request
}

// kubeRequest reads the pod's annotations and its Namespace's and puts
// what they ask for into req: addresses (ipAddrs), pools (ipv4pools,
// ipv6pools; the pod's win over the Namespace's, both over the ipam
// config). Without Kubernetes access (no socket, no kubeconfig) it changes
// nothing. The lookup is bounded by kubernetes.timeout_seconds.
func (p *Plugin) kubeRequest(c *call, namespace, name, uid string, req *AssignRequest) (*kubeAsk, error) {
	if namespace == "" || name == "" {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.n.Kubernetes.Timeout)
	defer cancel()
	start := time.Now()
	info, err := podinfo.Lookup(ctx, podinfo.Config{Socket: c.n.Kubernetes.Socket, Kubeconfig: c.n.Kubernetes.Kubeconfig}, namespace, name, uid)
	took := time.Since(start)
	if err == nil {
		p.Log.Debug("pod annotations read", "namespace", namespace, "pod", name, "from", info.Source, "took", took)
	}
	switch {
	case errors.Is(err, podinfo.ErrNoAccess):
		return nil, nil
	case errors.Is(err, podinfo.ErrNotFound):
		// A static pod before its mirror exists: nothing to read.
		p.Log.Warn("pod not in the Kubernetes API; its annotations are not read", "namespace", namespace, "pod", name, "took", took, "err", err)
		return nil, nil
	case err != nil:
		return nil, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("pod %s/%s: read its annotations: %v", namespace, name, err), "")
	}
	r, err := podinfo.Parse(info)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	ask := &kubeAsk{pod: info.Pod(), req: r}
	if len(r.IPs) > 0 {
		if len(req.IPs) > 0 && !sameAddrs(req.IPs, r.IPs) {
			return nil, fmt.Errorf("%s: %s asks for %v, but the runtime asks for %v (CNI_ARGS IP or the ips capability)", ask.pod, r.IPsFrom, r.IPs, req.IPs)
		}
		req.IPs = r.IPs
	}
	if r.IPv4PoolsFrom != "" {
		req.IPv4Pools = r.IPv4Pools
	}
	if r.IPv6PoolsFrom != "" {
		req.IPv6Pools = r.IPv6Pools
	}
	if uid == "" {
		uid = info.UID
	}
	if uid != "" {
		req.Attrs[AttrPodUID] = uid
	}
	if s := r.Sticky; s != nil {
		// The pod's addresses are kept under its name, not its sandbox.
		req.Handle = StickyHandleID(namespace, name, req.Attrs[AttrIfName])
		req.Sticky = true
		req.Attrs = StickyAttrs(req.Attrs, s.StatefulSet, s.UID, s.Ordinal)
	}
	return ask, nil
}

// detachSticky is the DEL of a sticky pod's attachment, whose addresses
// are held under the pod's name (StickyHandleID), not the sandbox's.
func (p *Plugin) detachSticky(c *call, args string, containerID, ifName string) {
	var ca cniArgs
	if args == "" || types.LoadArgs("IgnoreUnknown=1;"+args, &ca) != nil || ca.K8S_POD_NAME == "" {
		return
	}
	id := StickyHandleID(string(ca.K8S_POD_NAMESPACE), string(ca.K8S_POD_NAME), ifName)
	if ok, err := c.alloc.DetachSticky(c.ctx, id, containerID); err != nil {
		p.Log.Warn("ipam del: detach sticky addresses", "handle", id, "err", err)
	} else if ok {
		p.Log.Info("ipam del: sticky addresses kept for the pod's next incarnation", "handle", id, "container", containerID)
	}
}

// explain names the pod and the annotation behind a refused ADD: "pod
// default/web: annotation brindle.net/ipAddrs asks for [10.0.0.5]: ip
// 10.0.0.5: already in use by ...".
func (k *kubeAsk) explain(err error) error {
	if k == nil {
		return err
	}
	msg := err.Error()
	r := k.req
	switch {
	case r.IPsFrom != "" && strings.HasPrefix(msg, "ip "):
		return fmt.Errorf("%s: %s asks for %v: %w", k.pod, r.IPsFrom, r.IPs, err)
	case r.IPv4PoolsFrom != "" && (errors.Is(err, ErrNoPool) || errors.Is(err, ErrExhausted)) && !strings.Contains(msg, "IPv6"):
		return fmt.Errorf("%s: %s %v: %w", k.pod, r.IPv4PoolsFrom, r.IPv4Pools, err)
	case r.IPv6PoolsFrom != "" && (errors.Is(err, ErrNoPool) || errors.Is(err, ErrExhausted)):
		return fmt.Errorf("%s: %s %v: %w", k.pod, r.IPv6PoolsFrom, r.IPv6Pools, err)
	}
	return fmt.Errorf("%s: %w", k.pod, err)
}

func sameAddrs(a, b []netip.Addr) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, func(x, y netip.Addr) int { return x.Compare(y) })
	slices.SortFunc(b, func(x, y netip.Addr) int { return x.Compare(y) })
	return slices.Equal(a, b)
}
