package conf

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"sigs.k8s.io/yaml"
)

// KindIPReservation is the kind of an IPReservation document.
const KindIPReservation = "IPReservation"

// IPReservation lists addresses inside pools that IPAM never hands out
// automatically (Calico's IPReservation): addresses used elsewhere on the
// network. A pod that asks for a reserved address by annotation is refused
// too. Addresses already allocated when a reservation is made keep their
// holder.
type IPReservation struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   ObjectMeta        `json:"metadata"`
	Spec       IPReservationSpec `json:"spec"`
}

// IPReservationSpec holds the reserved ranges.
type IPReservationSpec struct {
	// ReservedCIDRs are addresses ("10.0.0.5") or CIDRs ("10.0.1.0/28");
	// Default writes each as a CIDR.
	ReservedCIDRs []string `json:"reservedCIDRs"`
}

// Default fills apiVersion and kind and writes every entry as a CIDR
// (a bare address becomes /32 or /128), so that the stored document shows
// exactly what is reserved.
func (r *IPReservation) Default() {
	if r.APIVersion == "" {
		r.APIVersion = APIVersion
	}
	if r.Kind == "" {
		r.Kind = KindIPReservation
	}
	for i, c := range r.Spec.ReservedCIDRs {
		if a, err := netip.ParseAddr(c); err == nil {
			r.Spec.ReservedCIDRs[i] = netip.PrefixFrom(a, a.BitLen()).String()
		}
	}
}

// Validate checks a reservation (after Default); errors name the field and value.
func (r *IPReservation) Validate() error {
	if r.APIVersion != APIVersion {
		return fmt.Errorf("apiVersion %q: want %q", r.APIVersion, APIVersion)
	}
	if r.Kind != KindIPReservation {
		return fmt.Errorf("kind %q: want %q", r.Kind, KindIPReservation)
	}
	if !nameRE.MatchString(r.Metadata.Name) {
		return fmt.Errorf("metadata.name %q: must be a DNS subdomain (lower case letters, digits, '-' and '.')", r.Metadata.Name)
	}
	if len(r.Spec.ReservedCIDRs) == 0 {
		return fmt.Errorf("spec.reservedCIDRs: empty; list addresses or CIDRs to reserve")
	}
	for _, c := range r.Spec.ReservedCIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return fmt.Errorf("spec.reservedCIDRs %q: want an address or a CIDR", c)
		}
		if p.Masked() != p {
			return fmt.Errorf("spec.reservedCIDRs %q: host bits set (did you mean %s?)", c, p.Masked())
		}
		if p.Addr().Is4In6() {
			return fmt.Errorf("spec.reservedCIDRs %q: IPv4-mapped IPv6 is not allowed; write the IPv4 form", c)
		}
	}
	return nil
}

// Prefixes returns the reserved ranges; valid only after Validate.
func (r *IPReservation) Prefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, c := range r.Spec.ReservedCIDRs {
		if p, err := netip.ParsePrefix(c); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// ParseIPReservations reads IPReservation documents (brindle's, or
// Calico's crd.projectcalico.org/v1 and projectcalico.org/v3 forms),
// separated by "---", with defaults applied and each validated.
func ParseIPReservations(data []byte) ([]IPReservation, error) {
	var out []IPReservation
	names := map[string]bool{}
	for i, doc := range splitYAMLDocs(string(data)) {
		head, err := docHead(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		var r IPReservation
		switch {
		case head.Kind == KindIPPool:
			return nil, fmt.Errorf("document %d: kind %q: apply pools with `brindlectl pool apply`", i+1, head.Kind)
		case head.Kind != KindIPReservation:
			return nil, fmt.Errorf("document %d: kind %q: want %q", i+1, head.Kind, KindIPReservation)
		case IsCalicoAPIVersion(head.APIVersion):
			name, spec, err := calicoDoc([]byte(doc), []string{"reservedCIDRs"})
			if err != nil {
				return nil, fmt.Errorf("document %d (%s IPReservation): %w", i+1, head.APIVersion, err)
			}
			r = IPReservation{APIVersion: APIVersion, Kind: KindIPReservation, Metadata: ObjectMeta{Name: name}}
			if raw, ok := spec["reservedCIDRs"]; ok {
				if err := json.Unmarshal(raw, &r.Spec.ReservedCIDRs); err != nil {
					return nil, fmt.Errorf("document %d: spec.reservedCIDRs: %w", i+1, err)
				}
			}
		default:
			if err := yaml.UnmarshalStrict([]byte(doc), &r); err != nil {
				return nil, fmt.Errorf("document %d: %w", i+1, err)
			}
		}
		r.Default()
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if names[r.Metadata.Name] {
			return nil, fmt.Errorf("document %d: metadata.name %q: two reservations with the same name", i+1, r.Metadata.Name)
		}
		names[r.Metadata.Name] = true
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no IPReservation documents found")
	}
	return out, nil
}

// UnmarshalReservation decodes a stored reservation, defaults applied.
func UnmarshalReservation(data []byte) (IPReservation, error) {
	var r IPReservation
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("decode ipreservation: %w", err)
	}
	r.Default()
	return r, nil
}
