// Package podinfo is what the CNI plugins learn about a pod from
// Kubernetes: its annotations, its Namespace's, and its owner. It uses the
// standard library only (the plugins start anew for every pod and must stay
// small): it asks the node's brindled over a unix socket, which answers
// from its informer cache, and falls back to one HTTPS GET to the apiserver
// through the kubeconfig install-cni writes. Without either, nothing is
// read and the plugins work as without Kubernetes.
package podinfo

import "strings"

// Annotation names brindle reads. The Calico names are accepted too, so a
// Calico user's manifests move over unchanged.
const (
	IPAddrs   = "brindle.net/ipAddrs"
	IPv4Pools = "brindle.net/ipv4pools"
	IPv6Pools = "brindle.net/ipv6pools"
	// Sticky, on a StatefulSet's pod template, keeps each pod's address
	// across recreation, on any node.
	Sticky = "brindle.net/sticky"

	CalicoIPAddrs       = "cni.projectcalico.org/ipAddrs"
	CalicoIPv4Pools     = "cni.projectcalico.org/ipv4pools"
	CalicoIPv6Pools     = "cni.projectcalico.org/ipv6pools"
	CalicoIPAddrsNoIPAM = "cni.projectcalico.org/ipAddrsNoIpam"
)

// Info is a pod as the plugins need it.
type Info struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
	// Annotations are the pod's brindle.net/ and cni.projectcalico.org/
	// annotations (no others are kept).
	Annotations map[string]string `json:"annotations,omitempty"`
	// Owner is the pod's controller, if it has one.
	Owner *Owner `json:"owner,omitempty"`
	// NamespaceAnnotations are the Namespace's brindle.net/ and
	// cni.projectcalico.org/ annotations: pool defaults for its pods.
	NamespaceAnnotations map[string]string `json:"namespaceAnnotations,omitempty"`
	// Source says where the answer came from ("brindled", "apiserver").
	Source string `json:"source,omitempty"`
}

// Owner is a pod's controlling owner reference.
type Owner struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	UID  string `json:"uid"`
}

// Relevant keeps the annotations brindle reads (brindle.net/ and
// cni.projectcalico.org/); nil when there are none.
func Relevant(all map[string]string) map[string]string {
	var out map[string]string
	for k, v := range all {
		if strings.HasPrefix(k, "brindle.net/") || strings.HasPrefix(k, "cni.projectcalico.org/") {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}
