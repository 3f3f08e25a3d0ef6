package conf

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Kinds of the BGP documents.
const (
	KindBGPConfiguration = "BGPConfiguration"
	KindBGPPeer          = "BGPPeer"
)

// BGP defaults.
const (
	DefaultASNumber    uint32 = 64512
	DefaultBGPPort            = 179
	DefaultRestartTime        = 120 * time.Second
)

// BGPConfiguration is the cluster's BGP settings, stored at bgp/config. A
// cluster without one runs with every default: an iBGP full mesh in AS 64512
// with graceful restart.
type BGPConfiguration struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       BGPSpec    `json:"spec"`
}

// BGPSpec holds the cluster's BGP settings; after Default every field holds
// the value in force.
type BGPSpec struct {
	// ASNumber of every node that does not set its own.
	ASNumber uint32 `json:"asNumber"`
	// NodeToNodeMesh peers every node with every other. Off, nodes peer with
	// the route reflectors (nodes with a routeReflectorClusterID) and with
	// the BGPPeers that select them.
	NodeToNodeMesh *bool `json:"nodeToNodeMesh"`
	// ListenPort is the port every node's speaker listens on and dials.
	ListenPort int `json:"listenPort"`
	// GracefulRestart keeps a restarting node's routes on its peers (and in
	// its own kernel) for RestartTimeSeconds.
	GracefulRestart *bool `json:"gracefulRestart"`
	// RestartTimeSeconds is the graceful-restart time announced to peers.
	RestartTimeSeconds int `json:"restartTimeSeconds"`
}

// DefaultBGPConfiguration is the configuration in force when none is stored.
func DefaultBGPConfiguration() BGPConfiguration {
	var c BGPConfiguration
	c.Default()
	return c
}

// Default fills every unset field; the only place BGP defaults live.
func (c *BGPConfiguration) Default() {
	if c.APIVersion == "" {
		c.APIVersion = APIVersion
	}
	if c.Kind == "" {
		c.Kind = KindBGPConfiguration
	}
	if c.Metadata.Name == "" {
		c.Metadata.Name = "default"
	}
	s := &c.Spec
	if s.ASNumber == 0 {
		s.ASNumber = DefaultASNumber
	}
	if s.NodeToNodeMesh == nil {
		s.NodeToNodeMesh = ptr(true)
	}
	if s.ListenPort == 0 {
		s.ListenPort = DefaultBGPPort
	}
	if s.GracefulRestart == nil {
		s.GracefulRestart = ptr(true)
	}
	if s.RestartTimeSeconds == 0 {
		s.RestartTimeSeconds = int(DefaultRestartTime / time.Second)
	}
}

// Validate checks the configuration after Default; errors name the field.
func (c *BGPConfiguration) Validate() error {
	if err := checkHeader(c.APIVersion, c.Kind, KindBGPConfiguration); err != nil {
		return err
	}
	if c.Metadata.Name != "default" {
		return fmt.Errorf("metadata.name %q: the BGP configuration is a singleton named \"default\"", c.Metadata.Name)
	}
	if c.Spec.ListenPort < 1 || c.Spec.ListenPort > 65535 {
		return fmt.Errorf("spec.listenPort %d: out of range 1-65535", c.Spec.ListenPort)
	}
	if c.Spec.RestartTimeSeconds < 1 || c.Spec.RestartTimeSeconds > 4095 {
		return fmt.Errorf("spec.restartTimeSeconds %d: out of range 1-4095 (a 12-bit field in BGP)", c.Spec.RestartTimeSeconds)
	}
	return nil
}

// Mesh reports whether the node-to-node mesh is on.
func (c *BGPConfiguration) Mesh() bool { return c.Spec.NodeToNodeMesh == nil || *c.Spec.NodeToNodeMesh }

// GR reports whether graceful restart is on.
func (c *BGPConfiguration) GR() bool { return c.Spec.GracefulRestart == nil || *c.Spec.GracefulRestart }

// BGPPeer is a BGP speaker outside the mesh that nodes peer with: a top of
// rack router, a route reflector, another cluster.
type BGPPeer struct {
	APIVersion string      `json:"apiVersion"`
	Kind       string      `json:"kind"`
	Metadata   ObjectMeta  `json:"metadata"`
	Spec       BGPPeerSpec `json:"spec"`
}

// BGPPeerSpec holds a peer's settings; after Default every field holds the
// value in force.
type BGPPeerSpec struct {
	PeerIP   string `json:"peerIP"`
	ASNumber uint32 `json:"asNumber"`
	// Port the peer listens on.
	Port int `json:"port"`
	// Node, when set, makes only that node peer; else NodeSelector picks the
	// nodes (all() by default: a global peer).
	Node         string `json:"node,omitempty"`
	NodeSelector string `json:"nodeSelector"`
	// Password for TCP MD5 (RFC 2385). Stored in etcd as given: restrict
	// access to bgp/peers/ accordingly.
	Password string `json:"password,omitempty"`
	// MultihopTTL > 1 allows a peer more than one hop away (eBGP multihop).
	MultihopTTL int `json:"multihopTTL"`
	// Passive waits for the peer to connect.
	Passive bool `json:"passive"`
	// MaxPrefixes bounds, per address family, the prefixes the peer may
	// send (counted before the import policy: what brindled has to hold).
	// One more closes the session with a Cease (maximum number of prefixes
	// reached); it is tried again after MaxPrefixesRestartSeconds. 0 is no
	// limit. Default DefaultMaxPrefixes.
	MaxPrefixes *uint32 `json:"maxPrefixes,omitempty"`
	// MaxPrefixesRestartSeconds is how long a session closed for too many
	// prefixes stays down before it is tried again. Default 60.
	MaxPrefixesRestartSeconds int `json:"maxPrefixesRestartSeconds"`
}

// DefaultMaxPrefixes is a BGPPeer's prefix limit per family when unset:
// far above what a cluster's pools make (a peer's useful routes are the
// blocks and borrowed addresses of the pools), far below a full Internet
// table.
const DefaultMaxPrefixes = 10000

// Default fills every unset field; the only place peer defaults live.
func (p *BGPPeer) Default() {
	if p.APIVersion == "" {
		p.APIVersion = APIVersion
	}
	if p.Kind == "" {
		p.Kind = KindBGPPeer
	}
	if p.Spec.Port == 0 {
		p.Spec.Port = DefaultBGPPort
	}
	if strings.TrimSpace(p.Spec.NodeSelector) == "" {
		p.Spec.NodeSelector = SelectAll
	}
	if p.Spec.MultihopTTL == 0 {
		p.Spec.MultihopTTL = 1
	}
	if p.Spec.MaxPrefixes == nil {
		p.Spec.MaxPrefixes = ptr(uint32(DefaultMaxPrefixes))
	}
	if p.Spec.MaxPrefixesRestartSeconds == 0 {
		p.Spec.MaxPrefixesRestartSeconds = 60
	}
}

// Validate checks a peer after Default; errors name the field and value.
func (p *BGPPeer) Validate() error {
	if err := checkHeader(p.APIVersion, p.Kind, KindBGPPeer); err != nil {
		return err
	}
	if !nameRE.MatchString(p.Metadata.Name) {
		return fmt.Errorf("metadata.name %q: must be lower-case letters, digits, '-' and '.'", p.Metadata.Name)
	}
	a, err := netip.ParseAddr(p.Spec.PeerIP)
	if err != nil {
		return fmt.Errorf("spec.peerIP %q: not an IP address", p.Spec.PeerIP)
	}
	if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
		return fmt.Errorf("spec.peerIP %s: not a unicast address of another host", a)
	}
	if p.Spec.ASNumber == 0 {
		return fmt.Errorf("spec.asNumber: missing")
	}
	if p.Spec.Port < 1 || p.Spec.Port > 65535 {
		return fmt.Errorf("spec.port %d: out of range 1-65535", p.Spec.Port)
	}
	if p.Spec.MultihopTTL < 1 || p.Spec.MultihopTTL > 255 {
		return fmt.Errorf("spec.multihopTTL %d: out of range 1-255", p.Spec.MultihopTTL)
	}
	if p.Spec.MaxPrefixesRestartSeconds < 1 || p.Spec.MaxPrefixesRestartSeconds > 65535 {
		return fmt.Errorf("spec.maxPrefixesRestartSeconds %d: out of range 1-65535", p.Spec.MaxPrefixesRestartSeconds)
	}
	if len(p.Spec.Password) > 80 {
		return fmt.Errorf("spec.password: %d characters; TCP MD5 keys are at most 80", len(p.Spec.Password))
	}
	if _, err := ParseSelector(p.Spec.NodeSelector); err != nil {
		return fmt.Errorf("spec.nodeSelector %q: %w", p.Spec.NodeSelector, err)
	}
	return nil
}

// Selects reports whether node peers with p.
func (p *BGPPeer) Selects(node *Node) bool {
	if p.Spec.Node != "" {
		return p.Spec.Node == node.Name
	}
	sel, err := ParseSelector(p.Spec.NodeSelector)
	return err == nil && sel.Matches(node.Labels)
}

// ParseBGPDocs reads YAML (or JSON) documents of kind BGPConfiguration and
// BGPPeer, applying defaults and validating each.
func ParseBGPDocs(data []byte) ([]BGPConfiguration, []BGPPeer, error) {
	var cfgs []BGPConfiguration
	var peers []BGPPeer
	for i, doc := range splitYAMLDocs(string(data)) {
		var head struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			return nil, nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		switch head.Kind {
		case KindBGPConfiguration:
			var c BGPConfiguration
			if err := yaml.UnmarshalStrict([]byte(doc), &c); err != nil {
				return nil, nil, fmt.Errorf("document %d: %w", i+1, err)
			}
			c.Default()
			if err := c.Validate(); err != nil {
				return nil, nil, fmt.Errorf("document %d (BGPConfiguration): %w", i+1, err)
			}
			cfgs = append(cfgs, c)
		case KindBGPPeer:
			var p BGPPeer
			if err := yaml.UnmarshalStrict([]byte(doc), &p); err != nil {
				return nil, nil, fmt.Errorf("document %d: %w", i+1, err)
			}
			p.Default()
			if err := p.Validate(); err != nil {
				return nil, nil, fmt.Errorf("document %d (BGPPeer %s): %w", i+1, p.Metadata.Name, err)
			}
			peers = append(peers, p)
		default:
			return nil, nil, fmt.Errorf("document %d: kind %q: want %s or %s", i+1, head.Kind, KindBGPConfiguration, KindBGPPeer)
		}
	}
	return cfgs, peers, nil
}

// UnmarshalBGPConfiguration decodes a stored configuration with defaults.
func UnmarshalBGPConfiguration(data []byte) (BGPConfiguration, error) {
	var c BGPConfiguration
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("decode BGP configuration: %w", err)
	}
	c.Default()
	return c, nil
}

// UnmarshalBGPPeer decodes a stored peer with defaults.
func UnmarshalBGPPeer(data []byte) (BGPPeer, error) {
	var p BGPPeer
	if err := json.Unmarshal(data, &p); err != nil {
		return p, fmt.Errorf("decode BGP peer: %w", err)
	}
	p.Default()
	return p, nil
}

func checkHeader(apiVersion, kind, want string) error {
	if apiVersion != APIVersion {
		return fmt.Errorf("apiVersion %q: want %q", apiVersion, APIVersion)
	}
	if kind != want {
		return fmt.Errorf("kind %q: want %q", kind, want)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
