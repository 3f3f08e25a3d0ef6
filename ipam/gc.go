package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// Attachment is one (container ID, interface) pair a runtime says is in use.
type Attachment struct {
	ContainerID string
	IfName      string
}

// HandleID is the handle of a pod attachment: container ID + "." + ifname,
// so the same container's second interface gets its own addresses.
func HandleID(containerID, ifName string) string { return containerID + "." + ifName }

// GC releases the node's pod allocations of network whose attachment is not
// in valid, then the node's blocks that stayed empty past the grace period.
// The runtime's list of valid attachments covers one network (CNI spec
// 1.1.0), so handles of other networks on the same node (a second
// brindle-ipam network, as with Multus) are never touched, nor are handles
// that record no network (written before handles recorded one: which
// network they belong to is unknown, so GC leaves them to `ipam check`),
// nor handles that are not pod attachments (tunnel addresses).
// It returns the handles released.
func (a *Allocator) GC(ctx context.Context, node, network string, valid []Attachment) ([]string, error) {
	keep := map[string]bool{}
	for _, v := range valid {
		keep[HandleID(v.ContainerID, v.IfName)] = true
	}
	res, err := a.Store.Read(ctx, Get{Key: handlesPrefix, Prefix: true})
	if err != nil {
		return nil, fmt.Errorf("gc: list handles: %w", err)
	}
	var released []string
	var errs []error
	for _, kv := range res[0] {
		var h Handle
		if err := decode(kv, &h); err != nil {
			errs = append(errs, err)
			continue
		}
		if h.Node != node || h.Attrs[AttrContainerID] == "" || keep[h.ID] {
			continue
		}
		if IsSticky(&h) {
			// A sticky pod's addresses outlive its sandbox: only detach.
			if !keep[HandleID(h.Attrs[AttrContainerID], h.Attrs[AttrIfName])] {
				if _, err := a.DetachSticky(ctx, h.ID, h.Attrs[AttrContainerID]); err != nil {
					errs = append(errs, fmt.Errorf("gc: %w", err))
				}
			}
			continue
		}
		if h.Attrs[AttrNetwork] != network {
			if h.Attrs[AttrNetwork] == "" {
				a.Log.Debug("gc: handle records no network; left alone", "handle", h.ID)
			}
			continue
		}
		if _, err := a.ReleaseHandle(ctx, h.ID); err != nil {
			errs = append(errs, fmt.Errorf("gc: release %s: %w", h.ID, err))
			continue
		}
		a.Log.Info("gc released addresses of a gone attachment", "node", node, "handle", h.ID,
			"namespace", h.Attrs[AttrNamespace], "pod", h.Attrs[AttrPod])
		released = append(released, h.ID)
	}
	if _, err := a.ReleaseEmptyBlocks(ctx, node); err != nil {
		errs = append(errs, fmt.Errorf("gc: release empty blocks: %w", err))
	}
	return released, errors.Join(errs...)
}

// HandleOf returns the handle record, or nil when it does not exist.
func (a *Allocator) HandleOf(ctx context.Context, id string) (*Handle, error) {
	res, err := a.Store.Read(ctx, Get{Key: handleKey(id)})
	if err != nil {
		return nil, err
	}
	if len(res[0]) == 0 {
		return nil, nil
	}
	var h Handle
	if err := decode(res[0][0], &h); err != nil {
		return nil, err
	}
	return &h, nil
}

// Status checks that the store answers and that at least one enabled pool of
// a wanted family exists, which is what a CNI STATUS must report.
func (a *Allocator) Status(ctx context.Context, v4, v6 bool) error {
	res, err := a.Store.Read(ctx, Get{Key: poolsPrefix, Prefix: true})
	if err != nil {
		return err
	}
	has4, has6 := false, false
	for _, kv := range res[0] {
		var p struct {
			Spec struct {
				CIDR     string `json:"cidr"`
				Disabled bool   `json:"disabled"`
			} `json:"spec"`
		}
		if decode(kv, &p) != nil || p.Spec.Disabled {
			continue
		}
		if pfx, err := netip.ParsePrefix(p.Spec.CIDR); err == nil {
			has4 = has4 || pfx.Addr().Is4()
			has6 = has6 || pfx.Addr().Is6()
		}
	}
	switch {
	case v4 && !has4:
		return fmt.Errorf("%w: no enabled IPv4 pool exists", ErrNoPool)
	case v6 && !has6:
		return fmt.Errorf("%w: no enabled IPv6 pool exists", ErrNoPool)
	}
	return nil
}
