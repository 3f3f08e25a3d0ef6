package enforcer

import (
	"net/netip"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/policy"
)

// podCache is what Kube.Cluster made of each pod: converted once per
// object the informer's store holds, so that a sync reads only the pods
// that changed.
type podCache struct {
	entries map[string]*podEntry
	order   []string // the entries' keys, sorted
}

type podEntry struct {
	src *corev1.Pod
	pod *policy.Pod // nil: the pod has ended
	// veths are its host veths' names (attachmentIfnames), for a pod of
	// this node.
	veths []string
	// local is pod with the addresses its host routes give (made again
	// only when they change), localAddrs those addresses.
	local      *policy.Pod
	localAddrs []netip.Addr
}

// update brings the cache up to date with the dirty keys of store (every
// key, the first time) and returns the pods and the locals matched to
// them.
func (pc *podCache) update(store cache.Store, dirty map[string]bool, node string, locals []policy.Local) ([]*policy.Pod, []policy.Local) {
	reorder := false
	if pc.entries == nil {
		// The first time, the whole store: the informer may have synced
		// before its handler was told of every pod.
		pc.entries = map[string]*podEntry{}
		dirty = map[string]bool{}
		for _, key := range store.ListKeys() {
			dirty[key] = true
		}
	}
	for key := range dirty {
		o, exists, err := store.GetByKey(key)
		if err != nil || !exists {
			if _, had := pc.entries[key]; had {
				delete(pc.entries, key)
				reorder = true
			}
			continue
		}
		p := o.(*corev1.Pod)
		old, had := pc.entries[key]
		if had && old.src == p {
			continue
		}
		e := &podEntry{src: p}
		e.pod, _ = PodOf(p)
		if e.pod != nil && p.Spec.NodeName == node && !p.Spec.HostNetwork {
			for _, ifname := range attachmentIfnames {
				e.veths = append(e.veths, conf.HostVethNameIf(p.Namespace, p.Name, "", ifname))
			}
		}
		pc.entries[key] = e
		reorder = reorder || !had
	}
	if reorder {
		pc.order = pc.order[:0]
		for key := range pc.entries {
			pc.order = append(pc.order, key)
		}
		sort.Strings(pc.order)
	}
	byVeth := make(map[string]int, len(locals))
	for i, l := range locals {
		byVeth[l.Veth] = i
	}
	out := slices.Clone(locals)
	pods := make([]*policy.Pod, 0, len(pc.order))
	for _, key := range pc.order {
		e := pc.entries[key]
		if e.pod == nil {
			continue
		}
		pods = append(pods, e.localPod(locals, byVeth, out))
	}
	return pods, out
}

// localPod is the pod as policy sees it on this node: for a local pod,
// with the addresses of its host routes (eth0's instead of status.podIPs,
// further interfaces' added), naming the locals it owns in out.
func (e *podEntry) localPod(locals []policy.Local, byVeth map[string]int, out []policy.Local) *policy.Pod {
	if len(e.veths) == 0 {
		return e.pod
	}
	var addrs []netip.Addr
	matched, eth0 := false, false
	for j, ifname := range attachmentIfnames {
		i, ok := byVeth[e.veths[j]]
		if !ok {
			continue
		}
		out[i].Namespace, out[i].Name = e.pod.Namespace, e.pod.Name
		matched = true
		if ifname == "eth0" {
			eth0 = true
		}
		addrs = append(addrs, locals[i].Addrs...)
	}
	if !matched {
		return e.pod
	}
	if !eth0 {
		addrs = append(slices.Clone(e.pod.Addrs), addrs...)
	}
	if e.local == nil || !slices.Equal(e.localAddrs, addrs) {
		lp := *e.pod
		lp.Addrs = addrs
		e.local, e.localAddrs = &lp, addrs
	}
	return e.local
}
