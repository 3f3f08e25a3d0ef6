package nodeapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Interface is a pod interface as its node sees it: the host veth, its
// counters, and the kernel's routes to the pod's addresses.
type Interface struct {
	Namespace string    `json:"namespace"`
	Pod       string    `json:"pod"`
	IfName    string    `json:"ifname"`
	HostVeth  string    `json:"hostVeth"`
	Addresses []string  `json:"addresses"`
	Up        bool      `json:"up"`
	MTU       int       `json:"mtu"`
	MAC       string    `json:"mac"`
	Stats     LinkStats `json:"stats"`
	// Routes are the kernel's routes for the pod's addresses on its node.
	Routes []string `json:"routes"`
	Error  string   `json:"error,omitempty"`
}

// LinkStats are the host veth's counters; rx is what the pod sent.
type LinkStats struct {
	RxPackets uint64 `json:"rxPackets"`
	TxPackets uint64 `json:"txPackets"`
	RxBytes   uint64 `json:"rxBytes"`
	TxBytes   uint64 `json:"txBytes"`
	RxDropped uint64 `json:"rxDropped"`
	TxDropped uint64 `json:"txDropped"`
	RxErrors  uint64 `json:"rxErrors"`
	TxErrors  uint64 `json:"txErrors"`
}

// PodInfo is the answer of GET /v1/pod.
type PodInfo struct {
	Node       string      `json:"node"`
	Interfaces []Interface `json:"interfaces"`
}

// RouteInfo is the answer of GET /v1/routes?prefix=P: what this node holds
// for a prefix (another node's block).
type RouteInfo struct {
	Node   string `json:"node"`
	Prefix string `json:"prefix"`
	// Learned are the BGP paths for the prefix, "prefix via nexthop from peer".
	Learned []string `json:"learned"`
	// Kernel are the kernel's routes for the prefix.
	Kernel []string `json:"kernel"`
	Error  string   `json:"error,omitempty"`
}

// PodReader reads what the node's kernel holds for an interface and for
// prefixes.
type PodReader interface {
	Link(hostVeth string, iface *Interface) error
	Routes(dst netip.Prefix) ([]string, error)
}

// netlinkPod reads the kernel of the current network namespace.
type netlinkPod struct{}

func (netlinkPod) Link(name string, ifc *Interface) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("host veth %s: %w", name, err)
	}
	a := l.Attrs()
	ifc.Up = a.Flags&net.FlagUp != 0 && a.OperState != netlink.OperDown
	ifc.MTU = a.MTU
	ifc.MAC = a.HardwareAddr.String()
	if s := a.Statistics; s != nil {
		ifc.Stats = LinkStats{RxPackets: s.RxPackets, TxPackets: s.TxPackets, RxBytes: s.RxBytes, TxBytes: s.TxBytes,
			RxDropped: s.RxDropped, TxDropped: s.TxDropped, RxErrors: s.RxErrors, TxErrors: s.TxErrors}
	}
	return nil
}

func (netlinkPod) Routes(dst netip.Prefix) ([]string, error) {
	fam := netlink.FAMILY_V4
	if dst.Addr().Is6() {
		fam = netlink.FAMILY_V6
	}
	d := &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())}
	routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Dst: d, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range routes {
		s := dst.String()
		switch {
		case r.Type == unix.RTN_BLACKHOLE:
			s = "blackhole " + s
		case r.Gw != nil:
			s += " via " + r.Gw.String()
		}
		if r.LinkIndex > 0 {
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				s += " dev " + l.Attrs().Name
			}
		}
		if r.Flags&unix.RTNH_F_ONLINK != 0 {
			s += " onlink"
		}
		if r.Scope == netlink.SCOPE_LINK {
			s += " scope link"
		}
		s += fmt.Sprintf(" proto %d", r.Protocol)
		out = append(out, s)
	}
	sort.Strings(out)
	return out, nil
}

func (s *server) pod(w http.ResponseWriter, r *http.Request) {
	ns, name := r.URL.Query().Get("namespace"), r.URL.Query().Get("pod")
	if ns == "" || name == "" {
		writeError(w, http.StatusBadRequest, apiError{Error: "pod: want ?namespace=NS&pod=NAME"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	eps, err := Endpoints(ctx, s.cfg.Etcd, s.cfg.Node)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, apiError{Error: err.Error()})
		return
	}
	mine := PodEndpoints(eps, ns, name)
	if len(mine) == 0 {
		_, code, aerr := s.targets(ctx, captureReq(ns, name))
		writeError(w, code, aerr)
		return
	}
	info := PodInfo{Node: s.cfg.Node}
	for _, e := range mine {
		ifc := Interface{Namespace: e.Namespace, Pod: e.Pod, IfName: e.IfName, HostVeth: e.HostVeth, Addresses: e.Addresses}
		var errs []string
		if err := s.cfg.Pod.Link(e.HostVeth, &ifc); err != nil {
			errs = append(errs, err.Error())
		}
		for _, a := range e.Addresses {
			p, err := netip.ParsePrefix(a)
			if err != nil {
				continue
			}
			rs, err := s.cfg.Pod.Routes(netip.PrefixFrom(p.Addr(), p.Addr().BitLen()))
			if err != nil {
				errs = append(errs, err.Error())
			}
			ifc.Routes = append(ifc.Routes, rs...)
		}
		ifc.Error = strings.Join(errs, "; ")
		info.Interfaces = append(info.Interfaces, ifc)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(info)
}

func (s *server) routeInfo(w http.ResponseWriter, r *http.Request) {
	p, err := netip.ParsePrefix(r.URL.Query().Get("prefix"))
	if err != nil {
		writeError(w, http.StatusBadRequest, apiError{Error: fmt.Sprintf("routes: prefix %q: %v", r.URL.Query().Get("prefix"), err)})
		return
	}
	p = p.Masked()
	info := RouteInfo{Node: s.cfg.Node, Prefix: p.String(), Learned: []string{}}
	var errs []string
	if s.cfg.Learned != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		all, err := s.cfg.Learned(ctx)
		cancel()
		if err != nil {
			errs = append(errs, "bgp: "+err.Error())
		}
		for _, l := range all {
			if strings.HasPrefix(l, p.String()+" ") {
				info.Learned = append(info.Learned, l)
			}
		}
	}
	if info.Kernel, err = s.cfg.Pod.Routes(p); err != nil {
		errs = append(errs, "kernel: "+err.Error())
	}
	info.Error = strings.Join(errs, "; ")
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(info)
}
