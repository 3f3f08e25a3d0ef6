package conf

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// Calico's API versions whose IPPool and IPReservation documents brindle
// reads as its own: what `kubectl get ippools.crd.projectcalico.org -o yaml`
// prints, and what calicoctl takes.
const (
	CalicoCRDAPIVersion = "crd.projectcalico.org/v1"
	CalicoAPIVersion    = "projectcalico.org/v3"
)

// IsCalicoAPIVersion reports whether v is one of Calico's API versions.
func IsCalicoAPIVersion(v string) bool { return v == CalicoCRDAPIVersion || v == CalicoAPIVersion }

// calicoPoolFields are the IPPool spec fields brindle gives Calico's
// meaning to. Any other spec field is refused by name: a field brindle
// ignored would make the pool behave differently from what its author
// wrote.
var calicoPoolFields = []string{"cidr", "blockSize", "ipipMode", "vxlanMode", "natOutgoing", "disabled",
	"disableBGPExport", "nodeSelector", "allowedUses", "assignmentMode"}

// calicoHints explain the Calico fields people paste most that brindle
// does not take.
var calicoHints = map[string]string{
	"ipip":              "the deprecated form of ipipMode; write ipipMode",
	"nat-outgoing":      "the deprecated form of natOutgoing; write natOutgoing",
	"awsSubnetID":       "brindle does not manage AWS subnets",
	"namespaceSelector": "brindle picks pools per namespace with the brindle.net/ipv4pools annotation on the Namespace",
}

// docHeader is the part of a document that says what it is.
type docHeader struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

func docHead(doc string) (docHeader, error) {
	var h docHeader
	if err := yaml.Unmarshal([]byte(doc), &h); err != nil {
		return h, err
	}
	return h, nil
}

// calicoDoc decodes a Calico document into its metadata name and spec
// fields, refusing top-level and spec fields outside allowed.
func calicoDoc(doc []byte, allowed []string) (string, map[string]json.RawMessage, error) {
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return "", nil, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(js, &top); err != nil {
		return "", nil, err
	}
	for k := range top {
		switch k {
		case "apiVersion", "kind", "metadata", "spec":
		default:
			return "", nil, fmt.Errorf("%s: not supported by brindle", k)
		}
	}
	// Metadata beyond the name (uid, resourceVersion, labels, annotations,
	// creationTimestamp, ...) is what kubectl prints with the object; it
	// does not change what the object means, so it is ignored.
	var meta struct {
		Name string `json:"name"`
	}
	if m, ok := top["metadata"]; ok {
		if err := json.Unmarshal(m, &meta); err != nil {
			return "", nil, fmt.Errorf("metadata: %w", err)
		}
	}
	spec := map[string]json.RawMessage{}
	if s, ok := top["spec"]; ok && string(s) != "null" {
		if err := json.Unmarshal(s, &spec); err != nil {
			return "", nil, fmt.Errorf("spec: %w", err)
		}
	}
	var keys []string
	for k := range spec {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if slices.Contains(allowed, k) {
			continue
		}
		why := "not supported by brindle"
		if h, ok := calicoHints[k]; ok {
			why += " (" + h + ")"
		}
		return "", nil, fmt.Errorf("spec.%s: %s; brindle understands %s", k, why, strings.Join(allowed, ", "))
	}
	return meta.Name, spec, nil
}

// calicoPool converts a Calico IPPool (crd.projectcalico.org/v1 or
// projectcalico.org/v3) into a brindle pool with Calico's meaning for every
// field. Defaults are Calico's, which are brindle's: blockSize 26 (122),
// ipipMode and vxlanMode Never, natOutgoing false, nodeSelector all(),
// allowedUses [Workload, Tunnel], assignmentMode Automatic. An empty mode
// ("", as Calico's CRD may store it) is Never too.
func calicoPool(doc []byte) (IPPool, error) {
	name, spec, err := calicoDoc(doc, calicoPoolFields)
	if err != nil {
		return IPPool{}, err
	}
	var s IPPoolSpec
	if len(spec) > 0 {
		b, _ := json.Marshal(spec)
		if err := json.Unmarshal(b, &s); err != nil {
			return IPPool{}, fmt.Errorf("spec: %w", err)
		}
	}
	return IPPool{APIVersion: APIVersion, Kind: KindIPPool, Metadata: ObjectMeta{Name: name}, Spec: s}, nil
}
