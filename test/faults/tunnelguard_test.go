package faults

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/test/lab"
)

// VXLAN packets from a host that is not a cluster node are dropped: a
// host on the underlay sends node-1 VXLAN frames (brindle's VNI, UDP 4789)
// carrying UDP for a pod there, and the pod receives none of them, while
// the very same frames sent from node-2 (a node) are delivered. The drops
// are counted (foreign_tunnel). IPIP gets the same guard; this kernel has
// no IPIP module, so only VXLAN is exercised here.
func TestForeignVXLANDropped(t *testing.T) {
	foreign, fromNode, dropped := tunnelRun(t, true)
	if foreign != 0 {
		t.Errorf("%d of 5 VXLAN frames from a host that is not a node reached the pod", foreign)
	}
	if fromNode != 5 {
		t.Errorf("%d of 5 VXLAN frames from node-2 reached the pod; the frames are not valid, the scenario cannot tell", fromNode)
	}
	if dropped < 5 {
		t.Errorf("foreign_tunnel counted %v drops, want 5", dropped)
	}
	control, _, _ := tunnelRun(t, false)
	if control == 0 {
		t.Errorf("control without the filter table: no frame from the outsider reached the pod; the scenario cannot tell")
	}
	figures(t, "VXLAN (VNI 4096) to a pod: %d/5 delivered from a non-node, %d/5 from a node, %v counted as foreign_tunnel; without the table %d/5 from the non-node", foreign, fromNode, dropped, control)
}

// tunnelRun sends 5 VXLAN frames for a pod of node-1 from an outside host,
// then 5 from node-2, and returns how many of each reached the pod and how
// many drops brindled counted.
func tunnelRun(t *testing.T, filter bool) (foreign, fromNode int, dropped float64) {
	pool := lab.DefaultPool()
	pool.Spec.VXLANMode = conf.EncapAlways
	var args []string
	if !filter {
		args = []string{"--filter=false"}
	}
	l := filterLab(t, lab.Config{Nodes: 2, Pools: []conf.IPPool{pool}, DaemonArgs: args})
	ctx := t.Context()
	if err := l.WaitReady(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	n1, n2 := l.Nodes[0], l.Nodes[1]
	a, err := n1.AddPod(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := n2.AddPod(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	out, err := l.AddOutside()
	if err != nil {
		t.Fatal(err)
	}
	var mac, srcMAC net.HardwareAddr
	// The frames claim to come from node-2's VTEP, as a forger would.
	err = n2.NS.Do(func(ns.NetNS) error {
		return eventually(10*time.Second, func() error {
			v, err := netlink.LinkByName("vxlan.brindle")
			if err == nil {
				srcMAC = v.Attrs().HardwareAddr
			}
			return err
		})
	})
	if err != nil {
		t.Fatalf("node-2 vxlan.brindle: %v", err)
	}
	err = n1.NS.Do(func(ns.NetNS) error {
		err := eventually(10*time.Second, func() error {
			v, err := netlink.LinkByName("vxlan.brindle")
			if err == nil {
				mac = v.Attrs().HardwareAddr
			}
			return err
		})
		return err
	})
	if err != nil {
		t.Fatalf("node-1 vxlan.brindle: %v", err)
	}
	// a listens; count what reaches it.
	got := make(chan string, 64)
	err = a.NS.Do(func(ns.NetNS) error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: a.Addr.AsSlice(), Port: 7777})
		if err != nil {
			return err
		}
		t.Cleanup(func() { c.Close() })
		go func() {
			buf := make([]byte, 2048)
			for {
				n, _, err := c.ReadFromUDP(buf)
				if err != nil {
					return
				}
				got <- string(buf[:n])
			}
		}()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	frame := func(tag string) []byte { return vxlanFrame(4096, mac, srcMAC, b.Addr, a.Addr, 7777, []byte(tag)) }
	send := func(from ns.NetNS, tag string) error {
		return from.Do(func(ns.NetNS) error {
			c, err := net.ListenUDP("udp4", nil)
			if err != nil {
				return err
			}
			defer c.Close()
			for range 5 {
				if _, err := c.WriteToUDP(frame(tag), &net.UDPAddr{IP: n1.Addr.Addr().AsSlice(), Port: 4789}); err != nil {
					return err
				}
				time.Sleep(5 * time.Millisecond)
			}
			return nil
		})
	}
	// The first frame waits for the node to resolve the pod's MAC: give
	// them two seconds.
	count := func(tag string) int {
		n := 0
		deadline := time.After(2 * time.Second)
		for {
			select {
			case s := <-got:
				if s == tag {
					n++
				}
			case <-deadline:
				return n
			}
		}
	}
	var before float64
	if filter {
		before = filterMetric(t, n1, `brindle_filter_drops_total{reason="foreign_tunnel"}`)
	}
	if err := send(out.NS, "outsider"); err != nil {
		t.Fatal(err)
	}
	foreign = count("outsider")
	if err := send(n2.NS, "node"); err != nil {
		t.Fatal(err)
	}
	fromNode = count("node")
	if filter {
		dropped = filterMetric(t, n1, `brindle_filter_drops_total{reason="foreign_tunnel"}`) - before
	}
	return foreign, fromNode, dropped
}

// vxlanFrame is a VXLAN datagram's payload: the VXLAN header, an Ethernet
// frame to dstMAC and in it a UDP packet src -> dst:port.
func vxlanFrame(vni uint32, dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr, port uint16, payload []byte) []byte {
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], port)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	copy(ip[12:], src.AsSlice())
	copy(ip[16:], dst.AsSlice())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	eth := append(append(append([]byte{}, dstMAC...), srcMAC...), 0x08, 0x00)
	hdr := []byte{0x08, 0, 0, 0, byte(vni >> 16), byte(vni >> 8), byte(vni), 0}
	return append(append(append(hdr, eth...), ip...), udp...)
}
