package conf

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// Defaults of the network config that the brindle plugin reads.
const (
	DefaultLogFile  = "/var/log/brindle/cni.log"
	DefaultLogLevel = "info"
	// DefaultMTUFile is where brindled writes the pods' MTU.
	DefaultMTUFile = "/var/lib/brindle/mtu"

	// MinMTU is the smallest MTU an IPv4 link may have (RFC 791).
	MinMTU = 68
	// MaxMTU is the largest MTU a veth accepts.
	MaxMTU = 65535
)

// NetConf is the network config of the `brindle` CNI plugin: the standard
// CNI fields plus brindle's own. The `ipam` section is passed whole to the
// delegated IPAM plugin, which reads its own fields from it.
type NetConf struct {
	types.NetConf

	// MTU of the pod interface and its host veth; 0 means the MTU brindled
	// wrote to MTUFile (the host's less the encapsulation overhead), else
	// the MTU of the host's default-route interface.
	MTU int `json:"mtu,omitempty"`
	// MTUFile is where brindled records the pods' MTU.
	MTUFile string `json:"mtuFile,omitempty"`
	// LogFile receives the plugin's structured log; stdout carries the
	// result and is never logged to.
	LogFile string `json:"logFile,omitempty"`
	// LogLevel is one of debug, info, warn, error.
	LogLevel string `json:"logLevel,omitempty"`
}

// ConfigError is a network config that is not valid: Field names the JSON
// path of the offending setting.
type ConfigError struct {
	Field string
	Value any
	Why   string
}

func (e *ConfigError) Error() string {
	if e.Value == nil {
		return fmt.Sprintf("%s: %s", e.Field, e.Why)
	}
	return fmt.Sprintf("%s: %v %s", e.Field, e.Value, e.Why)
}

// ParseNetConf decodes a brindle network config, applies the defaults and
// validates it. Every error names the field and the value at fault.
func ParseNetConf(data []byte) (*NetConf, error) {
	var c NetConf
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("network config: malformed JSON: %w", err)
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// ApplyDefaults fills in every setting the config left out.
func (c *NetConf) ApplyDefaults() {
	if c.LogFile == "" {
		c.LogFile = DefaultLogFile
	}
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	if c.MTUFile == "" {
		c.MTUFile = DefaultMTUFile
	}
}

// Validate checks the settings the plugin relies on before it changes
// anything, so that bad input leaves nothing behind.
func (c *NetConf) Validate() error {
	if c.IPAM.Type == "" {
		return &ConfigError{Field: "ipam.type", Why: `is missing: name an IPAM plugin, such as "brindle-ipam" or "host-local"`}
	}
	if strings.ContainsAny(c.IPAM.Type, `/\`) || c.IPAM.Type == "." || c.IPAM.Type == ".." {
		return &ConfigError{Field: "ipam.type", Value: fmt.Sprintf("%q", c.IPAM.Type), Why: "is not a plugin name (no path separators allowed)"}
	}
	if c.MTU != 0 && (c.MTU < MinMTU || c.MTU > MaxMTU) {
		return &ConfigError{Field: "mtu", Value: c.MTU, Why: fmt.Sprintf("is out of range (%d-%d, or 0 for the host's default-route interface MTU)", MinMTU, MaxMTU)}
	}
	if _, err := c.SlogLevel(); err != nil {
		return err
	}
	return nil
}

// SlogLevel returns LogLevel as a slog level.
func (c *NetConf) SlogLevel() (slog.Level, error) {
	switch strings.ToLower(c.LogLevel) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, &ConfigError{Field: "logLevel", Value: fmt.Sprintf("%q", c.LogLevel), Why: "is not one of debug, info, warn, error"}
}
