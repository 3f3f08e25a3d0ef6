// Package sysctl reads and writes kernel parameters under /proc/sys, in the
// network namespace of the calling thread.
package sysctl

import (
	"fmt"
	"os"
	"strings"
)

// path turns a dotted name ("net.ipv4.conf.eth0.rp_filter") into its file;
// interface names may hold dots, so callers pass slash-separated names when
// an interface is part of them (see Iface).
func path(name string) string {
	if strings.Contains(name, "/") {
		return "/proc/sys/" + name
	}
	return "/proc/sys/" + strings.ReplaceAll(name, ".", "/")
}

// Iface is the slash-separated name of a per-interface setting, e.g.
// Iface("ipv4", "bri0123", "proxy_arp").
func Iface(family, ifname, key string) string {
	return "net/" + family + "/conf/" + ifname + "/" + key
}

// Neigh is the slash-separated name of a per-interface neighbour setting.
func Neigh(family, ifname, key string) string {
	return "net/" + family + "/neigh/" + ifname + "/" + key
}

// Set writes value to the named parameter.
func Set(name, value string) error {
	if err := os.WriteFile(path(name), []byte(value), 0o644); err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", name, value, err)
	}
	return nil
}

// Get reads the named parameter, without the trailing newline.
func Get(name string) (string, error) {
	b, err := os.ReadFile(path(name))
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}
