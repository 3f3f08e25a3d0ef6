package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/nodeapi"
)

func init() {
	register("", newPodCmd)
	register("pod", newPodListCmd)
}

// PodPolicy is a policy that selects a pod, for the pod view.
type PodPolicy struct {
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Kind      string `json:"kind"` // NetworkPolicy, ...
	Ingress   bool   `json:"ingress"`
	Egress    bool   `json:"egress"`
}

// policiesFor lists the policies that select a pod. The policy engine sets
// it from a file of its own in this directory:
//
//	func init() { policiesFor = func(ctx context.Context, e *env, namespace, pod string) ([]PodPolicy, error) { ... } }
//
// While it is nil the pod view says that policies are not known.
var policiesFor func(ctx context.Context, e *env, namespace, pod string) ([]PodPolicy, error)

// podView is everything `brindlectl pod` shows about one pod.
type podView struct {
	Namespace  string          `json:"namespace"`
	Pod        string          `json:"pod"`
	Node       string          `json:"node"`
	Interfaces []podInterface  `json:"interfaces"`
	Blocks     []blockPaths    `json:"blocks"`
	Policies   []PodPolicy     `json:"policies"`
	PolicyNote string          `json:"policyNote,omitempty"`
	OtherNodes []string        `json:"otherNodes,omitempty"`
	NodeError  string          `json:"nodeError,omitempty"`
	node       nodeapi.PodInfo // as the node reported it
}

// podInterface is one endpoint of the pod: its record, its IPAM view and
// what its node's kernel says.
type podInterface struct {
	ipam.Endpoint
	IPAM []ipam.IPInfo     `json:"ipam"`
	Host nodeapi.Interface `json:"host"`
}

// blockPaths is what every other node holds for a block of the pod.
type blockPaths struct {
	Block string              `json:"block"`
	Nodes []nodeapi.RouteInfo `json:"nodes"`
}

func newPodCmd(a *app) *cobra.Command {
	var o outputFlag
	var nf nodeFlags
	var recordsOnly bool
	c := &cobra.Command{
		Use:   "pod NAMESPACE/POD",
		Short: "one pod as the network sees it: node, addresses, veth, counters, routes, BGP paths, IPAM, policies",
		Long: `Everything about one pod that "my pod can't be reached" needs: its node, addresses and
host veth (etcd), the IPAM allocation and handle of each address, the host veth's state and
counters and the route to the pod on its node (that node's brindled), the path every other
node holds for the pod's block (their brindled: BGP and kernel), and the policies that select it.
Nodes are reached as for capture (--via; docs/cli.md).`,
		Args:              exactArgs(1, "one NAMESPACE/POD"),
		ValidArgsFunction: a.completePods,
		RunE: func(c *cobra.Command, args []string) error {
			if err := nf.check(c); err != nil {
				return err
			}
			ns, pod, err := splitPod(c, args[0])
			if err != nil {
				return err
			}
			if recordsOnly {
				v, err := a.podRecords(ns, pod)
				if err != nil {
					return err
				}
				return writeJSON(a.out, v)
			}
			v, err := a.podView(&nf, ns, pod)
			if err != nil {
				return err
			}
			return o.print(a.out, v, func(t *table) { printPod(t, v) })
		},
	}
	o.add(c, "table")
	nf.add(c)
	c.Flags().BoolVar(&recordsOnly, "records-only", false, "only what etcd holds, as JSON (what `kubectl brindle pod` runs in the cluster)")
	c.Flags().MarkHidden("records-only")
	return c
}

// podView gathers the view: etcd first, then the nodes, in parallel.
func (a *app) podView(nf *nodeFlags, namespace, pod string) (*podView, error) {
	v, err := a.podRecords(namespace, pod)
	if err != nil {
		return nil, err
	}
	a.podNodes(nf, v)
	return v, nil
}

// podRecords reads the etcd part of the view. As the kubectl plugin without
// etcd, it is read in the cluster (`pod --records-only` in a brindle-node
// pod) and the nodes are then asked from here.
func (a *app) podRecords(namespace, pod string) (*podView, error) {
	if a.etcdInCluster() {
		var out bytes.Buffer
		if err := a.runInClusterTo([]string{"pod", namespace + "/" + pod, "--records-only"}, &out); err != nil {
			return nil, err
		}
		v := &podView{}
		if err := json.Unmarshal(out.Bytes(), v); err != nil {
			return nil, fmt.Errorf("in-cluster pod records: %w", err)
		}
		return v, nil
	}
	v := &podView{Namespace: namespace, Pod: pod, Policies: []PodPolicy{}}
	err := a.withEnv(func(e *env) error {
		eps, err := nodeapi.Endpoints(e.ctx, e.cli, "")
		if err != nil {
			return err
		}
		mine := nodeapi.PodEndpoints(eps, namespace, pod)
		if len(mine) == 0 {
			return fmt.Errorf("pod %s/%s: no brindle endpoint on any node", namespace, pod)
		}
		v.Node = mine[0].Node
		blocks := map[string]bool{}
		for _, ep := range mine {
			pi := podInterface{Endpoint: ep}
			for _, s := range ep.Addresses {
				p, err := netip.ParsePrefix(s)
				if err != nil {
					continue
				}
				info, err := e.alloc.ShowIP(e.ctx, p.Addr())
				if err != nil {
					return err
				}
				pi.IPAM = append(pi.IPAM, info)
				if info.Block != "" {
					blocks[info.Block] = true
				}
			}
			v.Interfaces = append(v.Interfaces, pi)
		}
		for b := range blocks {
			v.Blocks = append(v.Blocks, blockPaths{Block: b})
		}
		sort.Slice(v.Blocks, func(i, j int) bool { return v.Blocks[i].Block < v.Blocks[j].Block })
		nodes, err := listNodes(e)
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if n.Name != v.Node {
				v.OtherNodes = append(v.OtherNodes, n.Name)
			}
		}
		if policiesFor == nil {
			v.PolicyNote = "not known: this brindlectl has no policy engine"
		} else if v.Policies, err = policiesFor(e.ctx, e, namespace, pod); err != nil {
			v.PolicyNote = "policies: " + err.Error()
		}
		return nil
	})
	return v, err
}

// podNodes asks the pod's node and every other node what they hold.
func (a *app) podNodes(nf *nodeFlags, v *podView) {
	others := v.OtherNodes
	namespace, pod := v.Namespace, v.Pod
	var wg sync.WaitGroup
	var mu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		cli, err := a.nodeClient(nf, v.Node)
		if err == nil {
			v.node, err = cli.Pod(a.ctx, namespace, pod)
		}
		if err != nil {
			v.NodeError = fmt.Sprintf("node %s: %v", v.Node, err)
		}
	}()
	for i := range v.Blocks {
		for _, n := range others {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ri := nodeapi.RouteInfo{Node: n, Prefix: v.Blocks[i].Block}
				cli, err := a.nodeClient(nf, n)
				if err == nil {
					ri, err = cli.Routes(a.ctx, v.Blocks[i].Block)
				}
				if err != nil {
					ri.Error = err.Error()
				}
				mu.Lock()
				v.Blocks[i].Nodes = append(v.Blocks[i].Nodes, ri)
				mu.Unlock()
			}()
		}
	}
	a.progress("asking %d nodes...", len(others)+1)
	wg.Wait()
	a.progressDone()
	for i := range v.Blocks {
		sort.Slice(v.Blocks[i].Nodes, func(x, y int) bool { return v.Blocks[i].Nodes[x].Node < v.Blocks[i].Nodes[y].Node })
	}
	for i := range v.Interfaces {
		for _, h := range v.node.Interfaces {
			if h.IfName == v.Interfaces[i].IfName {
				v.Interfaces[i].Host = h
			}
		}
	}
}

// nodeClient reaches a node: this node's socket when it is this node,
// else as --via says.
func (a *app) nodeClient(nf *nodeFlags, node string) (*nodeapi.Client, error) {
	if nf.via == "local" || nf.via == "auto" && nf.haveSocket() && nf.localNode() == node {
		return nf.local(), nil
	}
	return a.remote(a.ctx, nf, node)
}

func printPod(t *table, v *podView) {
	t.row("POD", v.Namespace+"/"+v.Pod)
	t.row("NODE", v.Node)
	if v.NodeError != "" {
		t.row("NODE ERROR", v.NodeError)
	}
	for _, ifc := range v.Interfaces {
		h := ifc.Host
		t.line("")
		t.row("INTERFACE", ifc.IfName+" (container "+short(ifc.ContainerID)+")")
		t.row("  ADDRESSES", strings.Join(ifc.Addresses, ", "))
		t.row("  HOST VETH", fmt.Sprintf("%s  %s  mtu %d  %s", ifc.HostVeth, upDown(h), h.MTU, dash(h.MAC)))
		s := h.Stats
		t.row("  COUNTERS", fmt.Sprintf("from pod %d pkts %s, to pod %d pkts %s, dropped %d/%d, errors %d/%d",
			s.RxPackets, bytesHuman(s.RxBytes), s.TxPackets, bytesHuman(s.TxBytes), s.RxDropped, s.TxDropped, s.RxErrors, s.TxErrors))
		t.row("  ROUTE ON NODE", dash(strings.Join(h.Routes, "; ")))
		if h.Error != "" {
			t.row("  NODE SAYS", h.Error)
		}
		for _, info := range ifc.IPAM {
			t.row("  IPAM "+info.IP, fmt.Sprintf("handle %s, block %s (affinity %s), pool %s, seq %d", dash(info.Handle), dash(info.Block), dash(info.Affinity), dash(info.Pool), info.Seq))
		}
	}
	for _, b := range v.Blocks {
		t.line("")
		t.header("BLOCK "+b.Block+" ON", "BGP PATH", "KERNEL ROUTE", "|", "ERROR")
		if len(b.Nodes) == 0 {
			t.row("(no other node)", "-", "-")
		}
		for _, n := range b.Nodes {
			bgp := dash(strings.Join(n.Learned, "; "))
			if n.Error != "" && len(n.Learned) == 0 && len(n.Kernel) == 0 {
				bgp = "? (" + n.Error + ")"
			}
			t.row(n.Node, bgp, dash(strings.Join(n.Kernel, "; ")), dash(n.Error))
		}
	}
	t.line("")
	if v.PolicyNote != "" {
		t.row("POLICIES", v.PolicyNote)
	} else if len(v.Policies) == 0 {
		t.row("POLICIES", "none select this pod: all traffic allowed")
	} else {
		for _, p := range v.Policies {
			dir := []string{}
			if p.Ingress {
				dir = append(dir, "ingress")
			}
			if p.Egress {
				dir = append(dir, "egress")
			}
			t.row("POLICY", fmt.Sprintf("%s %s/%s (%s)", p.Kind, p.Namespace, p.Name, strings.Join(dir, ", ")))
		}
	}
}

func upDown(h nodeapi.Interface) string {
	switch {
	case h.HostVeth == "":
		return "?"
	case h.Up:
		return "up"
	}
	return "DOWN"
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return dash(id)
}

func bytesHuman(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func newPodListCmd(a *app) *cobra.Command {
	var o outputFlag
	var node string
	c := &cobra.Command{
		Use:   "list [--node NODE]",
		Short: "every pod brindle has attached, with its node, addresses and host veth",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return a.withEnv(func(e *env) error {
				eps, err := nodeapi.Endpoints(e.ctx, e.cli, node)
				if err != nil {
					return err
				}
				if eps == nil {
					eps = []ipam.Endpoint{}
				}
				return o.print(a.out, eps, func(t *table) { printPodList(t, eps) })
			})
		},
	}
	c.Flags().StringVar(&node, "node", "", "only the pods of this node")
	c.RegisterFlagCompletionFunc("node", a.completeNodes)
	o.add(c, "table")
	return c
}

func printPodList(t *table, eps []ipam.Endpoint) {
	t.header("NAMESPACE", "POD", "NODE", "INTERFACE", "ADDRESSES", "HOST VETH", "|", "CONTAINER")
	for _, ep := range eps {
		t.row(dash(ep.Namespace), dash(ep.Pod), ep.Node, ep.IfName, strings.Join(ep.Addresses, ","), ep.HostVeth, ep.ContainerID)
	}
}
