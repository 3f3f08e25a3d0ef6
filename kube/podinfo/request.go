package podinfo

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Request is what a pod's annotations ask of IPAM. From says, for each
// part, which annotation it came from, so that an error names it.
type Request struct {
	IPs     []netip.Addr
	IPsFrom string
	// IPv4Pools and IPv6Pools are pool names or CIDRs.
	IPv4Pools, IPv6Pools         []string
	IPv4PoolsFrom, IPv6PoolsFrom string
	// Sticky is set for a pod of a StatefulSet whose template says
	// brindle.net/sticky: "true".
	Sticky *StickyID
}

// StickyID names the StatefulSet replica whose address is kept.
type StickyID struct {
	Namespace   string
	StatefulSet string
	// UID is the StatefulSet's: a new set of the same name starts afresh.
	UID     string
	Ordinal int
}

// Pod names a pod in errors: "pod default/web-0".
func (i *Info) Pod() string { return "pod " + i.Namespace + "/" + i.Name }

// Parse reads the request from a pod's annotations and its Namespace's.
// Pod annotations win over the Namespace's; a brindle.net/ name and its
// Calico twin must agree when both are set. Every error names the pod,
// the annotation and the value.
func Parse(i *Info) (Request, error) {
	var r Request
	if v, ok := i.Annotations[CalicoIPAddrsNoIPAM]; ok {
		return r, fmt.Errorf("%s: annotation %s %q: not supported by brindle (use %s, which goes through IPAM)", i.Pod(), CalicoIPAddrsNoIPAM, v, IPAddrs)
	}
	name, raw, err := pick(i, i.Annotations, "pod", IPAddrs, CalicoIPAddrs)
	if err != nil {
		return r, err
	}
	if name != "" {
		list, err := jsonList(raw)
		if err != nil {
			return r, fmt.Errorf("%s: annotation %s %q: %v", i.Pod(), name, raw, err)
		}
		v4, v6 := 0, 0
		for _, s := range list {
			a, err := parseAddr(s)
			if err != nil {
				return r, fmt.Errorf("%s: annotation %s %q: %q is not an IP address", i.Pod(), name, raw, s)
			}
			if a.Is4() {
				v4++
			} else {
				v6++
			}
			r.IPs = append(r.IPs, a)
		}
		if v4 > 1 || v6 > 1 {
			return r, fmt.Errorf("%s: annotation %s %q: at most one address per family", i.Pod(), name, raw)
		}
		if len(r.IPs) == 0 {
			return r, fmt.Errorf("%s: annotation %s %q: empty list", i.Pod(), name, raw)
		}
		r.IPsFrom = "annotation " + name
	}
	for _, fam := range []struct {
		names []string
		v6    bool
		out   *[]string
		from  *string
	}{
		{[]string{IPv4Pools, CalicoIPv4Pools}, false, &r.IPv4Pools, &r.IPv4PoolsFrom},
		{[]string{IPv6Pools, CalicoIPv6Pools}, true, &r.IPv6Pools, &r.IPv6PoolsFrom},
	} {
		where, ann := "pod", i.Annotations
		name, raw, err := pick(i, ann, where, fam.names...)
		if err != nil {
			return r, err
		}
		if name == "" {
			where, ann = "namespace", i.NamespaceAnnotations
			if name, raw, err = pick(i, ann, where, fam.names...); err != nil {
				return r, err
			}
		}
		if name == "" {
			continue
		}
		list, err := jsonList(raw)
		if err != nil || len(list) == 0 {
			why := "want a non-empty JSON list of pool names or CIDRs"
			if err != nil {
				why = err.Error()
			}
			return r, fmt.Errorf("%s: %s annotation %s %q: %s", i.Pod(), where, name, raw, why)
		}
		for _, p := range list {
			if pfx, err := netip.ParsePrefix(p); err == nil && pfx.Addr().Is6() != fam.v6 {
				return r, fmt.Errorf("%s: %s annotation %s %q: %s is not of the annotation's family", i.Pod(), where, name, raw, p)
			}
		}
		*fam.out = list
		*fam.from = where + " annotation " + name
		if where == "namespace" {
			*fam.from = "annotation " + name + " of namespace " + i.Namespace
		}
	}
	if v, ok := i.Annotations[Sticky]; ok {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return r, fmt.Errorf("%s: annotation %s %q: want \"true\" or \"false\"", i.Pod(), Sticky, v)
		}
		if on {
			s, err := stickyID(i)
			if err != nil {
				return r, err
			}
			r.Sticky = s
		}
	}
	return r, nil
}

// pick returns the first of names set in ann, refusing two that disagree.
func pick(i *Info, ann map[string]string, where string, names ...string) (string, string, error) {
	got, val := "", ""
	for _, n := range names {
		v, ok := ann[n]
		if !ok {
			continue
		}
		if got == "" {
			got, val = n, v
			continue
		}
		if !sameList(v, val) {
			return "", "", fmt.Errorf("%s: %s annotations %s %q and %s %q disagree", i.Pod(), where, got, val, n, v)
		}
	}
	return got, val, nil
}

func sameList(a, b string) bool {
	la, ea := jsonList(a)
	lb, eb := jsonList(b)
	if ea != nil || eb != nil {
		return a == b
	}
	return strings.Join(la, "\x00") == strings.Join(lb, "\x00")
}

func jsonList(raw string) ([]string, error) {
	var list []string
	if err := json.Unmarshal([]byte(raw), &list); err != nil {
		return nil, fmt.Errorf(`not a JSON list of strings, e.g. ["10.0.0.5"]`)
	}
	for i := range list {
		list[i] = strings.TrimSpace(list[i])
	}
	return list, nil
}

// parseAddr takes "10.0.0.5" and "10.0.0.5/32".
func parseAddr(s string) (netip.Addr, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Bits() != p.Addr().BitLen() {
			return netip.Addr{}, fmt.Errorf("%s is a range, not one address", s)
		}
		return p.Addr().Unmap(), nil
	}
	a, err := netip.ParseAddr(s)
	return a.Unmap(), err
}

// stickyID finds the StatefulSet and ordinal of a pod: its controller must
// be a StatefulSet and its name <set>-<ordinal>.
func stickyID(i *Info) (*StickyID, error) {
	if i.Owner == nil || i.Owner.Kind != "StatefulSet" {
		return nil, fmt.Errorf("%s: annotation %s: only pods of a StatefulSet can be sticky (this pod's controller is %s)", i.Pod(), Sticky, ownerName(i.Owner))
	}
	prefix := i.Owner.Name + "-"
	ord, err := strconv.Atoi(strings.TrimPrefix(i.Name, prefix))
	if !strings.HasPrefix(i.Name, prefix) || err != nil || ord < 0 {
		return nil, fmt.Errorf("%s: annotation %s: the name is not %s<ordinal>", i.Pod(), Sticky, prefix)
	}
	return &StickyID{Namespace: i.Namespace, StatefulSet: i.Owner.Name, UID: i.Owner.UID, Ordinal: ord}, nil
}

func ownerName(o *Owner) string {
	if o == nil {
		return "none"
	}
	return o.Kind + " " + o.Name
}
