package nodeapi

import (
	"flag"

	"github.com/brindle-net/brindle/capture"
)

// Flags registers brindled's node API flags on fs and returns the Config
// they fill; the caller adds Node, Etcd, Log and Learned.
func Flags(fs *flag.FlagSet) *Config {
	c := &Config{Limits: capture.DefaultLimits}
	fs.StringVar(&c.Socket, "nodeapi-socket", DefaultSocket, `the node API's unix socket (root only; "" for none): brindlectl capture and pod`)
	fs.StringVar(&c.Listen, "nodeapi-listen", "", "also serve the node API with mutual TLS on this address (off by default; needs the three --nodeapi-tls flags)")
	fs.StringVar(&c.TLSCert, "nodeapi-tls-cert", "", "the TLS listener's certificate (PEM), naming the node's address")
	fs.StringVar(&c.TLSKey, "nodeapi-tls-key", "", "the TLS listener's key (PEM)")
	fs.StringVar(&c.ClientCA, "nodeapi-client-ca", "", "CA (PEM) whose client certificates the TLS listener accepts")
	fs.DurationVar(&c.Limits.MaxDuration, "capture-max-duration", capture.DefaultLimits.MaxDuration, "longest capture, and the default duration")
	fs.Int64Var(&c.Limits.MaxBytes, "capture-max-bytes", capture.DefaultLimits.MaxBytes, "largest capture stream in bytes, and the default size")
	fs.IntVar(&c.Limits.MaxConcurrent, "capture-max-concurrent", capture.DefaultLimits.MaxConcurrent, "captures running at once on this node")
	return c
}
