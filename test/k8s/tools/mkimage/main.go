// Command mkimage assembles a container image from layer tarballs without a
// container engine and writes it as an image archive that `ctr images
// import`, `docker load` and `kind load image-archive` read. The test
// cluster's images (brindle's own, pause, agnhost, CoreDNS, etcd and the e2e
// test images) are all made with it.
//
//	mkimage -o out.tar -tag registry.k8s.io/pause:3.10.1 -layer pause.tar \
//	    -entrypoint '["/pause"]'
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	var tags, layers, env, labels list
	out := fs.String("o", "", "output image archive (required)")
	entrypoint := fs.String("entrypoint", "", `entrypoint as a JSON list, e.g. ["/pause"]`)
	cmd := fs.String("cmd", "", "command (arguments to the entrypoint) as a JSON list")
	workdir := fs.String("workdir", "", "working directory")
	user := fs.String("user", "", "user to run as")
	fs.Var(&tags, "tag", "image name with tag (repeatable; at least one)")
	fs.Var(&layers, "layer", "layer tarball, bottom first (repeatable)")
	fs.Var(&env, "env", "KEY=VALUE in the image's environment (repeatable)")
	fs.Var(&labels, "label", "KEY=VALUE label (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || len(tags) == 0 || len(layers) == 0 {
		return errors.New("-o, -tag and -layer are required")
	}
	img := empty.Image
	for _, path := range layers {
		l, err := tarball.LayerFromFile(path)
		if err != nil {
			return fmt.Errorf("layer %s: %w", path, err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return fmt.Errorf("layer %s: %w", path, err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	// A fixed date: the same inputs make the same image ID.
	cf.Created = v1.Time{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cf.Config.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	cf.Config.WorkingDir, cf.Config.User = *workdir, *user
	for name, s := range map[string]string{"-entrypoint": *entrypoint, "-cmd": *cmd} {
		if s == "" {
			continue
		}
		var v []string
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			return fmt.Errorf("%s %q: not a JSON list of strings: %w", name, s, err)
		}
		if name == "-entrypoint" {
			cf.Config.Entrypoint = v
		} else {
			cf.Config.Cmd = v
		}
	}
	if len(labels) > 0 {
		cf.Config.Labels = map[string]string{}
		for _, kv := range labels {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return fmt.Errorf("-label %q: want KEY=VALUE", kv)
			}
			cf.Config.Labels[k] = v
		}
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	refs := map[name.Reference]v1.Image{}
	for _, t := range tags {
		ref, err := name.NewTag(t, name.StrictValidation)
		if err != nil {
			return fmt.Errorf("-tag %q: %w", t, err)
		}
		refs[ref] = img
	}
	tmp := *out + ".tmp"
	if err := tarball.MultiRefWriteToFile(tmp, refs); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", *out, err)
	}
	return os.Rename(tmp, *out)
}
