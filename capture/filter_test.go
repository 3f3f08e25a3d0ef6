package capture

import (
	"errors"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/net/bpf"
)

var (
	macA = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
)

// frame builds an Ethernet frame with the given layers after it.
func frame(t testing.TB, ethType layers.EthernetType, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	all := append([]gopacket.SerializableLayer{&layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: ethType}}, ls...)
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, all...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func v4(t testing.TB, src, dst string, proto layers.IPProtocol, l4 ...gopacket.SerializableLayer) []byte {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	for _, l := range l4 {
		switch l := l.(type) {
		case *layers.TCP:
			l.SetNetworkLayerForChecksum(ip)
		case *layers.UDP:
			l.SetNetworkLayerForChecksum(ip)
		}
	}
	return frame(t, layers.EthernetTypeIPv4, append([]gopacket.SerializableLayer{ip}, l4...)...)
}

func v6(t testing.TB, src, dst string, proto layers.IPProtocol, l4 ...gopacket.SerializableLayer) []byte {
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	for _, l := range l4 {
		switch l := l.(type) {
		case *layers.TCP:
			l.SetNetworkLayerForChecksum(ip)
		case *layers.UDP:
			l.SetNetworkLayerForChecksum(ip)
		case *layers.ICMPv6:
			l.SetNetworkLayerForChecksum(ip)
		}
	}
	return frame(t, layers.EthernetTypeIPv6, append([]gopacket.SerializableLayer{ip}, l4...)...)
}

// testFrames is a mix of what a pod's veth carries.
func testFrames(t testing.TB) map[string][]byte {
	tcp := func(s, d int) *layers.TCP {
		return &layers.TCP{SrcPort: layers.TCPPort(s), DstPort: layers.TCPPort(d), SYN: true, Window: 1000}
	}
	udp := func(s, d int) *layers.UDP { return &layers.UDP{SrcPort: layers.UDPPort(s), DstPort: layers.UDPPort(d)} }
	pay := gopacket.Payload(make([]byte, 100))
	fr := map[string][]byte{
		"tcp 10.244.0.5:40000 > 10.244.1.9:80":    v4(t, "10.244.0.5", "10.244.1.9", layers.IPProtocolTCP, tcp(40000, 80)),
		"tcp 10.244.1.9:80 > 10.244.0.5:40000":    v4(t, "10.244.1.9", "10.244.0.5", layers.IPProtocolTCP, tcp(80, 40000)),
		"udp 10.244.0.5:5353 > 10.96.0.10:53":     v4(t, "10.244.0.5", "10.96.0.10", layers.IPProtocolUDP, udp(5353, 53), pay),
		"udp 10.244.0.5:1000 > 10.96.0.10:2050":   v4(t, "10.244.0.5", "10.96.0.10", layers.IPProtocolUDP, udp(1000, 2050)),
		"icmp 10.244.0.5 > 10.244.2.3":            v4(t, "10.244.0.5", "10.244.2.3", layers.IPProtocolICMPv4, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0)}, pay),
		"tcp 192.0.2.1:22 > 198.51.100.7:50000":   v4(t, "192.0.2.1", "198.51.100.7", layers.IPProtocolTCP, tcp(22, 50000)),
		"tcp6 fd00::5:40000 > fd00:1::9:443":      v6(t, "fd00::5", "fd00:1::9", layers.IPProtocolTCP, tcp(40000, 443)),
		"udp6 fd00:1::9:53 > fd00::5:33333":       v6(t, "fd00:1::9", "fd00::5", layers.IPProtocolUDP, udp(53, 33333)),
		"icmp6 fd00::5 > fd00:1::9":               v6(t, "fd00::5", "fd00:1::9", layers.IPProtocolICMPv6, &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)}),
		"arp who-has 169.254.1.1 tell 10.244.0.5": frame(t, layers.EthernetTypeARP, &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4, Operation: 1, SourceHwAddress: macA, SourceProtAddress: net.ParseIP("10.244.0.5").To4(), DstHwAddress: make([]byte, 6), DstProtAddress: net.ParseIP("169.254.1.1").To4()}),
	}
	// A second fragment of a UDP datagram to port 53: no ports in it.
	frag := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.ParseIP("10.244.0.5"), DstIP: net.ParseIP("10.96.0.10"), FragOffset: 185}
	fr["udp fragment 10.244.0.5 > 10.96.0.10 (bytes look like port 53)"] = frame(t, layers.EthernetTypeIPv4, frag, gopacket.Payload([]byte{0x13, 0x89, 0, 53, 0, 8, 0, 0}))
	// An IPv4 header with options: the ports move by 4 bytes.
	opt := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: net.ParseIP("10.244.0.5"), DstIP: net.ParseIP("10.244.1.9"),
		Options: []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}}
	optTCP := tcp(40001, 8080)
	optTCP.SetNetworkLayerForChecksum(opt)
	fr["tcp with ip options 10.244.0.5:40001 > 10.244.1.9:8080"] = frame(t, layers.EthernetTypeIPv4, opt, optTCP)
	return fr
}

// referenceProgram asks libpcap (through tcpdump -ddd) for its program.
func referenceProgram(t *testing.T, expr string) []bpf.Instruction {
	t.Helper()
	out, err := exec.Command("tcpdump", "-y", "EN10MB", "-ddd", expr).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("tcpdump -ddd %q: %s", expr, ee.Stderr)
		}
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var raw []bpf.RawInstruction
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		op, _ := strconv.ParseUint(f[0], 10, 16)
		jt, _ := strconv.ParseUint(f[1], 10, 8)
		jf, _ := strconv.ParseUint(f[2], 10, 8)
		k, _ := strconv.ParseUint(f[3], 10, 32)
		raw = append(raw, bpf.RawInstruction{Op: uint16(op), Jt: uint8(jt), Jf: uint8(jf), K: uint32(k)})
	}
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatalf("tcpdump -ddd %q: cannot disassemble %v", expr, prog)
	}
	return prog
}

// filterCases are expressions of the supported subset; each must select the
// same frames as libpcap's compilation of it.
var filterCases = []string{
	"ip", "ip6", "arp", "tcp", "udp", "icmp", "icmp6", "sctp",
	"host 10.244.0.5", "src host 10.244.0.5", "dst host 10.244.0.5", "host 169.254.1.1",
	"ip host 10.244.1.9", "arp host 10.244.0.5", "ip6 host fd00::5", "host fd00:1::9",
	"src or dst host 10.244.1.9", "src and dst host 10.244.0.5",
	"net 10.244.0.0/16", "src net 10.244.1.0/24", "dst net 10.96.0.0/12", "net fd00::/32", "net fd00:1::/64", "net 0.0.0.0/0",
	"port 53", "src port 80", "dst port 80", "tcp port 80", "udp port 53", "ip6 and port 443", "ip and port 443", "udp dst port 33333",
	"portrange 2000-3000", "tcp portrange 8000-8100", "dst portrange 1-1024",
	"less 80", "greater 100",
	"tcp and port 80", "not arp", "!icmp", "tcp or udp", "not (tcp or udp)", "icmp || arp && host 10.244.0.5",
	"host 10.244.0.5 and not port 53", "(tcp port 80 or udp port 53) and src net 10.244.0.0/24",
	"not host 192.0.2.1 and not port 22 and not arp",
}

func TestFilterMatchesLibpcap(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("tcpdump (libpcap) not installed: scripts/install-deps.sh installs it; it is the reference")
	}
	frames := testFrames(t)
	for _, expr := range filterCases {
		t.Run(expr, func(t *testing.T) {
			f, err := Compile(expr)
			if err != nil {
				t.Fatal(err)
			}
			ref, err := bpf.NewVM(referenceProgram(t, expr))
			if err != nil {
				t.Fatal(err)
			}
			matched := 0
			for name, fr := range frames {
				want, err := ref.Run(fr)
				if err != nil {
					t.Fatal(err)
				}
				if got := f.Match(fr); got != (want > 0) {
					t.Errorf("%s: brindle %v, libpcap %v\n%s", name, got, want > 0, f)
				}
				if want > 0 {
					matched++
				}
			}
			t.Logf("%d of %d frames match, %d instructions", matched, len(frames), len(f.Prog))
		})
	}
}

func TestFilterErrors(t *testing.T) {
	for expr, want := range map[string]string{
		"tcp prot 80":            `at "prot"`,
		"host":                   "at the end",
		"host 10.0.0.300":        `at "10.0.0.300"`,
		"host example.com":       `at "example.com"`,
		"port http":              `"http" is not a port number`,
		"portrange 90-80":        "low port above high port",
		"(tcp":                   "want )",
		"tcp and":                "want a primitive",
		"tcp udp":                `at "udp"`,
		"ether host 1:2:3:4:5:6": "not in brindle's filter subset",
		"tcp[13] & 2 != 0":       `at "tcp[13]"`,
		"ip6 host 10.0.0.1":      "family does not match",
		"tcp host 10.0.0.1":      "transport protocol qualifies ports",
		"arp port 80":            "does not qualify a port",
		"ip6 port 80":            "does not qualify a port",
	} {
		_, err := Compile(expr)
		var fe *FilterError
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), `filter "`+expr+`"`) {
			t.Errorf("Compile(%q) = %v; want a FilterError naming the expression and %q", expr, err, want)
		}
	}
}

func TestExpression(t *testing.T) {
	got, err := Expression("host 10.0.0.1", []string{"80,443", "8000-8080"}, "tcp")
	want := "(host 10.0.0.1) and tcp and (port 80 or port 443 or portrange 8000-8080)"
	if err != nil || got != want {
		t.Fatalf("got %q %v, want %q", got, err, want)
	}
	if _, err := Compile(got); err != nil {
		t.Fatal(err)
	}
	if _, err := Expression("", []string{"http"}, ""); err == nil || !strings.Contains(err.Error(), `--ports "http"`) {
		t.Errorf("bad port: %v", err)
	}
	if _, err := Expression("", nil, "gre"); err == nil || !strings.Contains(err.Error(), `--protocol "gre"`) {
		t.Errorf("bad protocol: %v", err)
	}
}

// FuzzCompile: any input either compiles to a program the kernel's rules
// accept or fails with a FilterError; it never panics.
func FuzzCompile(f *testing.F) {
	for _, c := range filterCases {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		flt, err := Compile(expr)
		if err != nil {
			var fe *FilterError
			if !errors.As(err, &fe) {
				t.Fatalf("Compile(%q): %T %v", expr, err, err)
			}
			return
		}
		if len(flt.Raw()) == 0 || len(flt.Raw()) > maxProgram {
			t.Fatalf("Compile(%q): %d instructions", expr, len(flt.Raw()))
		}
		flt.Match(make([]byte, 60))
	})
}
