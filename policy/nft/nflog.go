package nft

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Drop is one sampled dropped packet, from the table's `log group` rules.
type Drop struct {
	Time time.Time `json:"time"`
	// Kind is spoof, ingress, egress or tunnel.
	Kind     string     `json:"kind"`
	Src      netip.Addr `json:"src"`
	Dst      netip.Addr `json:"dst"`
	Proto    uint8      `json:"proto"`
	Port     uint16     `json:"port,omitempty"`
	InIface  int        `json:"inIfindex,omitempty"`
	OutIface int        `json:"outIfindex,omitempty"`
}

func (d Drop) String() string {
	return fmt.Sprintf("%s %s %s -> %s %s/%d", d.Time.Format(time.TimeOnly), d.Kind, d.Src, d.Dst, ProtoName(d.Proto), d.Port)
}

// nflog constants (linux/netfilter/nfnetlink_log.h).
const (
	nfulnlMsgPacket = 0
	nfulnlMsgConfig = 1
	nfulaCfgCmd     = 1
	nfulaCfgMode    = 2
	nfulaCfgTimeout = 4
	nfulaCfgQthresh = 5
	nfulnlCmdBind   = 1
	nfulnlCopyPkt   = 2
	nfulaIfIndev    = 4
	nfulaIfOutdev   = 5
	nfulaPayload    = 9
	nfulaPrefix     = 10
)

// ReadDrops receives the packets the table logs to nflog group and calls
// fn for each, until ctx ends. Rate limits are in the rules (LogRate), so
// the reader never sees more than a few packets a second.
func ReadDrops(ctx context.Context, netns int, group uint16, fn func(Drop)) error {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netns})
	if err != nil {
		return fmt.Errorf("nflog: %w", err)
	}
	go func() { <-ctx.Done(); c.Close() }()
	hdr := []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, byte(group >> 8), byte(group)}
	cfg := func(attrs []netlink.Attribute) error {
		b, err := netlink.MarshalAttributes(attrs)
		if err != nil {
			return err
		}
		_, err = c.Execute(netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8 | nfulnlMsgConfig), Flags: netlink.Request | netlink.Acknowledge},
			Data:   append(append([]byte{}, hdr...), b...),
		})
		return err
	}
	if err := cfg([]netlink.Attribute{{Type: nfulaCfgCmd, Data: []byte{nfulnlCmdBind}}}); err != nil {
		c.Close()
		return fmt.Errorf("nflog: bind group %d: %w", group, err)
	}
	mode := binary.BigEndian.AppendUint32(nil, 128)
	if err := cfg([]netlink.Attribute{{Type: nfulaCfgMode, Data: append(mode, nfulnlCopyPkt, 0)}}); err != nil {
		c.Close()
		return fmt.Errorf("nflog: copy mode: %w", err)
	}
	// Deliver each sample at once (the kernel batches them for up to a
	// second by default).
	if err := cfg([]netlink.Attribute{
		{Type: nfulaCfgTimeout, Data: binary.BigEndian.AppendUint32(nil, 1)},
		{Type: nfulaCfgQthresh, Data: binary.BigEndian.AppendUint32(nil, 1)},
	}); err != nil {
		c.Close()
		return fmt.Errorf("nflog: flush settings: %w", err)
	}
	for {
		msgs, err := c.Receive()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if strings.Contains(err.Error(), "no buffer space") {
				continue // some samples lost; keep reading
			}
			return fmt.Errorf("nflog: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8|nfulnlMsgPacket) || len(m.Data) < 4 {
				continue
			}
			if d, ok := parseDrop(m.Data[4:]); ok {
				fn(d)
			}
		}
	}
}

func parseDrop(b []byte) (Drop, bool) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return Drop{}, false
	}
	ad.ByteOrder = binary.BigEndian
	d := Drop{Time: time.Now()}
	var payload []byte
	for ad.Next() {
		switch ad.Type() {
		case nfulaPrefix:
			p := strings.TrimRight(ad.String(), "\x00")
			for kind, pre := range map[string]string{"spoof": LogSpoof, "ingress": LogIngress, "egress": LogEgress, "tunnel": LogTunnel} {
				if p == pre {
					d.Kind = kind
				}
			}
		case nfulaIfIndev:
			d.InIface = int(ad.Uint32())
		case nfulaIfOutdev:
			d.OutIface = int(ad.Uint32())
		case nfulaPayload:
			payload = ad.Bytes()
		}
	}
	if d.Kind == "" || !parsePacket(payload, &d) {
		return Drop{}, false
	}
	return d, true
}

// parsePacket reads addresses, protocol and destination port from an IP
// packet.
func parsePacket(p []byte, d *Drop) bool {
	if len(p) < 1 {
		return false
	}
	var l4 []byte
	switch p[0] >> 4 {
	case 4:
		ihl := int(p[0]&0xf) * 4
		if len(p) < 20 || ihl < 20 || len(p) < ihl {
			return false
		}
		d.Src, _ = netip.AddrFromSlice(p[12:16])
		d.Dst, _ = netip.AddrFromSlice(p[16:20])
		d.Proto, l4 = p[9], p[ihl:]
	case 6:
		if len(p) < 40 {
			return false
		}
		d.Src, _ = netip.AddrFromSlice(p[8:24])
		d.Dst, _ = netip.AddrFromSlice(p[24:40])
		d.Proto, l4 = p[6], p[40:]
	default:
		return false
	}
	if (d.Proto == ProtoTCP || d.Proto == ProtoUDP || d.Proto == ProtoSCTP) && len(l4) >= 4 {
		d.Port = binary.BigEndian.Uint16(l4[2:4])
	}
	return true
}
