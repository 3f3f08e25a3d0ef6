// Package conf holds brindle's typed configuration: the CNI network config,
// IP pools, BGP settings and node records, with their defaults and their
// validation in one place. It has no dependency on etcd, netlink or BGP so
// that the CNI plugins that import it stay small and quick to start.
package conf
