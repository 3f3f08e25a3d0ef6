package conf

import (
	"crypto/sha1"
	"encoding/hex"
)

// VethPrefix starts the name of every host veth brindle creates.
const VethPrefix = "bri"

// HostVethName is a pod's host-side veth, as DESIGN.md fixes it: "bri" and
// the first 12 hex digits of sha1("<namespace>.<pod>"), or of the container
// ID when the runtime gave no Kubernetes identity. It is stable across
// sandbox restarts of one pod, so operators find it from the pod name; the
// plugin names the veth with it and brindle-ipam records it in the pod's
// endpoint.
func HostVethName(podNamespace, podName, containerID string) string {
	key := containerID
	if podNamespace != "" && podName != "" {
		key = podNamespace + "." + podName
	}
	sum := sha1.Sum([]byte(key))
	return VethPrefix + hex.EncodeToString(sum[:])[:12]
}

// HostVethNameIf is HostVethName for the attachment's interface: eth0 (or
// none given) keeps HostVethName's name, so operators still find a pod's
// veth from its name; any other interface of the pod (net1, a second
// network as with Multus) hashes "<namespace>.<pod>.<ifname>" (or
// "<containerID>.<ifname>"), so two attachments of one pod never share a
// host veth and one's ADD or DEL cannot remove the other's.
func HostVethNameIf(podNamespace, podName, containerID, ifName string) string {
	if ifName == "" || ifName == "eth0" {
		return HostVethName(podNamespace, podName, containerID)
	}
	key := containerID
	if podNamespace != "" && podName != "" {
		key = podNamespace + "." + podName
	}
	sum := sha1.Sum([]byte(key + "." + ifName))
	return VethPrefix + hex.EncodeToString(sum[:])[:12]
}
