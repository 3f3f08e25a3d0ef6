package k8s

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/brindle-net/brindle/conf"
)

const namespace = "brindle-system"

// object is one decoded manifest document.
type object struct {
	where string // file#document
	obj   any
}

// newObject returns an empty typed object for a document's apiVersion and
// kind; a kind not listed here is a test failure, not a silent pass.
func newObject(apiVersion, kind string) (any, bool) {
	switch apiVersion + "/" + kind {
	case "v1/Namespace":
		return &corev1.Namespace{}, true
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1/Secret":
		return &corev1.Secret{}, true
	case "v1/Service":
		return &corev1.Service{}, true
	case "apps/v1/DaemonSet":
		return &appsv1.DaemonSet{}, true
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, true
	case "batch/v1/Job":
		return &batchv1.Job{}, true
	case "rbac.authorization.k8s.io/v1/ClusterRole":
		return &rbacv1.ClusterRole{}, true
	case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
		return &rbacv1.ClusterRoleBinding{}, true
	case "rbac.authorization.k8s.io/v1/Role":
		return &rbacv1.Role{}, true
	case "rbac.authorization.k8s.io/v1/RoleBinding":
		return &rbacv1.RoleBinding{}, true
	}
	return nil, false
}

// decodeStrict decodes one YAML document into obj the way the API server's
// strict field validation does: duplicate keys, unknown fields and fields
// whose case differs from the API's (json.Unmarshal would take them) are
// all errors.
func decodeStrict(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := sigsjson.UnmarshalStrict(j, obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	if len(strict) > 0 {
		return fmt.Errorf("strict decoding: %v", strict)
	}
	return nil
}

func splitDocs(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range strings.Split("\n"+string(data), "\n---\n") {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func manifestFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pat := range []string{"*.yaml", "etcd/*.yaml", "uninstall/*.yaml"} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 5 {
		t.Fatalf("found only %v", files)
	}
	return files
}

func loadObjects(t *testing.T) []object {
	t.Helper()
	var objs []object
	for _, f := range manifestFiles(t) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitDocs(data) {
			where := fmt.Sprintf("%s#%d", f, i+1)
			var tm v1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			obj, ok := newObject(tm.APIVersion, tm.Kind)
			if !ok {
				t.Fatalf("%s: apiVersion %q kind %q: not a type this test knows; add it to newObject", where, tm.APIVersion, tm.Kind)
			}
			if err := decodeStrict(doc, obj); err != nil {
				t.Fatalf("%s (%s): %v", where, tm.Kind, err)
			}
			objs = append(objs, object{where, obj})
		}
	}
	return objs
}

// find returns the one object of type T with this name.
func find[T any](t *testing.T, objs []object, name string) T {
	t.Helper()
	var found []T
	for _, o := range objs {
		if v, ok := o.obj.(T); ok && any(v).(metaObject).GetName() == name {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want exactly one %T named %q, found %d", zero, name, len(found))
	}
	return found[0]
}

type metaObject interface{ GetName() string }

func clusterScoped(obj any) bool {
	switch obj.(type) {
	case *corev1.Namespace, *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding:
		return true
	}
	return false
}

func TestManifestsDecodeStrictly(t *testing.T) {
	objs := loadObjects(t)
	for _, o := range objs {
		m := o.obj.(interface {
			GetName() string
			GetNamespace() string
			GetLabels() map[string]string
		})
		if m.GetName() == "" {
			t.Errorf("%s: no metadata.name", o.where)
		}
		if !clusterScoped(o.obj) && m.GetNamespace() != namespace {
			t.Errorf("%s: namespace %q, want %q", o.where, m.GetNamespace(), namespace)
		}
		if m.GetLabels()["app.kubernetes.io/part-of"] != "brindle" {
			t.Errorf("%s: no app.kubernetes.io/part-of: brindle label", o.where)
		}
	}
}

// A typo'd field, or one in the wrong case, must fail: the decoder is
// only worth something if it is strict.
func TestStrictDecodingCatchesTypos(t *testing.T) {
	data, err := os.ReadFile("30-daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ from, to string }{
		{"hostNetwork: true", "hostNetwrok: true"},
		{"hostNetwork: true", "HostNetwork: true"},
		{"readinessProbe:", "readynessProbe:"},
		{"priorityClassName: system-node-critical", "priorityClassName: system-node-critical\n      priorityClassName: x"},
	} {
		bad := strings.Replace(string(data), tc.from, tc.to, 1)
		if bad == string(data) {
			t.Fatalf("%q not in 30-daemonset.yaml", tc.from)
		}
		if err := decodeStrict([]byte(bad), &appsv1.DaemonSet{}); err == nil {
			t.Errorf("%q -> %q decoded without an error", tc.from, tc.to)
		}
	}
}

func TestDaemonSet(t *testing.T) {
	objs := loadObjects(t)
	ds := find[*appsv1.DaemonSet](t, objs, "brindle-node")
	spec := ds.Spec.Template.Spec

	sel, err := v1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("selector %v does not match the template's labels %v (%v)", ds.Spec.Selector, ds.Spec.Template.Labels, err)
	}
	if !spec.HostNetwork {
		t.Error("hostNetwork is off: brindled must program the host's network namespace")
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", spec.PriorityClassName)
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Operator == corev1.TolerationOpExists && tl.Key == "" && tl.Effect == ""
	}) {
		t.Errorf("tolerations %v do not tolerate every taint (operator: Exists, no key, no effect)", spec.Tolerations)
	}
	find[*corev1.ServiceAccount](t, objs, spec.ServiceAccountName)
	checkPodRefs(t, objs, "DaemonSet brindle-node", spec)

	hostPaths := map[string]string{} // volume name -> host path
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	mountedHostPath := func(c corev1.Container, path string) bool {
		for _, m := range c.VolumeMounts {
			if m.MountPath == path && hostPaths[m.Name] == path && !m.ReadOnly {
				return true
			}
		}
		return false
	}

	if len(spec.InitContainers) != 1 || spec.InitContainers[0].Name != "install-cni" {
		t.Fatalf("init containers %v: want install-cni", spec.InitContainers)
	}
	ic := spec.InitContainers[0]
	if ic.Command[0] != "/usr/local/bin/brindlectl" || ic.Command[1] != "install-cni" {
		t.Errorf("install-cni command %v", ic.Command)
	}
	// The installer writes to the host's directories, mounted at the same
	// paths so that the paths in the config are the host's.
	for flag, dir := range map[string]string{"--net-dir": "/etc/cni/net.d", "--bin-dir": "/opt/cni/bin", "--nodename-file": "/var/lib/brindle/nodename"} {
		if got := flagValue(ic.Command, flag); got != dir {
			t.Errorf("install-cni %s=%q, want %q", flag, got, dir)
		}
		if d := strings.TrimSuffix(dir, "/nodename"); !mountedHostPath(ic, d) {
			t.Errorf("install-cni: host %s is not mounted read-write at the same path", d)
		}
	}
	if !strings.HasSuffix(flagValue(ic.Command, "--conf-name"), ".conflist") {
		t.Errorf("install-cni --conf-name %q", flagValue(ic.Command, "--conf-name"))
	}
	if bins := flagValue(ic.Command, "--binaries"); !strings.Contains(bins, "brindle,brindle-ipam") {
		t.Errorf("install-cni --binaries %q", bins)
	}

	var d *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == "brindled" {
			d = &spec.Containers[i]
		}
	}
	if d == nil {
		t.Fatal("no brindled container")
	}
	if d.Command[0] != "/usr/local/bin/brindled" {
		t.Errorf("brindled command %v", d.Command)
	}
	if d.SecurityContext == nil || d.SecurityContext.Privileged == nil || !*d.SecurityContext.Privileged {
		t.Error("brindled is not privileged (it writes /proc/sys)")
	}
	if !mountedHostPath(*d, "/var/lib/brindle") {
		t.Error("brindled: /var/lib/brindle (the node name file) is not the host's")
	}
	listen := flagValue(d.Command, "--health-listen")
	host, port, ok := strings.Cut(listen, ":")
	if !ok {
		t.Fatalf("brindled --health-listen %q", listen)
	}
	for path, p := range map[string]*corev1.Probe{"/livez": d.LivenessProbe, "/readyz": d.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("no httpGet probe for %s", path)
			continue
		}
		g := p.HTTPGet
		if g.Path != path || g.Host != host || g.Port.String() != port {
			t.Errorf("probe %s: http://%s:%s%s, want http://%s%s (brindled --health-listen)", path, g.Host, g.Port.String(), g.Path, listen, path)
		}
	}

	for _, c := range []corev1.Container{ic, *d} {
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
			t.Errorf("%s: no cpu or memory request", c.Name)
		}
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
			return e.Name == "NODENAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
		}) {
			t.Errorf("%s: NODENAME is not spec.nodeName (the plugins and brindled must agree)", c.Name)
		}
		if c.Image != ic.Image {
			t.Errorf("%s: image %s, init container %s", c.Name, c.Image, ic.Image)
		}
	}
}

// checkPodRefs checks that what a pod refers to exists: volumes of its
// mounts, ConfigMaps and keys of its env and volumes, Secrets (or that
// they are optional).
func checkPodRefs(t *testing.T, objs []object, who string, spec corev1.PodSpec) {
	t.Helper()
	cms := map[string]*corev1.ConfigMap{}
	for _, o := range objs {
		if cm, ok := o.obj.(*corev1.ConfigMap); ok {
			cms[cm.Name] = cm
		}
	}
	vols := map[string]bool{}
	for _, v := range spec.Volumes {
		vols[v.Name] = true
		if v.ConfigMap != nil && cms[v.ConfigMap.Name] == nil {
			t.Errorf("%s: volume %s: no ConfigMap %s", who, v.Name, v.ConfigMap.Name)
		}
		if v.Secret != nil && (v.Secret.Optional == nil || !*v.Secret.Optional) {
			t.Errorf("%s: volume %s: Secret %s must be optional (TLS is optional)", who, v.Name, v.Secret.SecretName)
		}
	}
	for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
		for _, m := range c.VolumeMounts {
			if !vols[m.Name] {
				t.Errorf("%s: %s mounts undeclared volume %s", who, c.Name, m.Name)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom == nil || e.ValueFrom.ConfigMapKeyRef == nil {
				continue
			}
			ref := e.ValueFrom.ConfigMapKeyRef
			cm := cms[ref.Name]
			if cm == nil {
				t.Errorf("%s: %s env %s: no ConfigMap %s", who, c.Name, e.Name, ref.Name)
			} else if _, ok := cm.Data[ref.Key]; !ok {
				t.Errorf("%s: %s env %s: ConfigMap %s has no key %s", who, c.Name, e.Name, ref.Name, ref.Key)
			}
		}
	}
}

func flagValue(args []string, name string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// The conflist template in the ConfigMap, rendered the way install-cni
// renders it, is a config the plugins accept.
func TestConflistTemplate(t *testing.T) {
	objs := loadObjects(t)
	cm := find[*corev1.ConfigMap](t, objs, "brindle-config")
	tmpl := cm.Data["cni_network_config"]
	for _, ph := range []string{"__ETCD_ENDPOINTS__", "__ETCD_CA_CERT_FILE__", "__ETCD_CERT_FILE__", "__ETCD_KEY_FILE__", "__NODENAME_FILE__", "__MTU__", "__LOG_FILE__", "__LOG_LEVEL__", "__KUBECONFIG_FILEPATH__"} {
		if !strings.Contains(tmpl, ph) {
			t.Errorf("cni_network_config lacks %s", ph)
		}
	}
	rendered := strings.NewReplacer(
		"__ETCD_ENDPOINTS__", cm.Data["etcd_endpoints"],
		"__ETCD_CA_CERT_FILE__", "", "__ETCD_CERT_FILE__", "", "__ETCD_KEY_FILE__", "",
		"__NODENAME_FILE__", conf.DefaultNodenameFile,
		"__MTU__", cm.Data["veth_mtu"],
		"__LOG_FILE__", conf.DefaultLogFile, "__LOG_LEVEL__", conf.DefaultLogLevel,
		"__KUBECONFIG_FILEPATH__", "/etc/cni/net.d/brindle-kubeconfig",
	).Replace(tmpl)
	var list struct {
		CNIVersion string            `json:"cniVersion"`
		Name       string            `json:"name"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(rendered)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&list); err != nil {
		t.Fatalf("rendered conflist: %v\n%s", err, rendered)
	}
	if list.CNIVersion == "" || list.Name == "" || len(list.Plugins) == 0 {
		t.Fatalf("conflist without cniVersion, name or plugins:\n%s", rendered)
	}
	var plugin map[string]any
	if err := json.Unmarshal(list.Plugins[0], &plugin); err != nil {
		t.Fatal(err)
	}
	plugin["name"], plugin["cniVersion"] = list.Name, list.CNIVersion
	one, _ := json.Marshal(plugin)
	nc, err := conf.ParseNetConf(one)
	if err != nil {
		t.Fatalf("conf.ParseNetConf: %v", err)
	}
	if nc.Type != "brindle" || nc.IPAM.Type != "brindle-ipam" {
		t.Errorf("plugins[0] type %q ipam %q", nc.Type, nc.IPAM.Type)
	}
	ic, err := conf.LoadIPAMNetConf(one, nil)
	if err != nil {
		t.Fatalf("conf.LoadIPAMNetConf: %v", err)
	}
	if ic.IPAM.NodenameFile != conf.DefaultNodenameFile {
		t.Errorf("nodename_file %q", ic.IPAM.NodenameFile)
	}
}

func TestIPPools(t *testing.T) {
	objs := loadObjects(t)
	cm := find[*corev1.ConfigMap](t, objs, "brindle-ippools")
	pools, err := conf.ParseIPPools([]byte(cm.Data["ippools.yaml"]))
	if err != nil {
		t.Fatalf("conf.ParseIPPools: %v", err)
	}
	if err := conf.ValidatePools(pools); err != nil {
		t.Fatal(err)
	}

	job := find[*batchv1.Job](t, objs, "brindle-ippools")
	spec := job.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Error("the pool job must use the host network: no pod gets an address before a pool exists")
	}
	checkPodRefs(t, objs, "Job brindle-ippools", spec)
	c := spec.Containers[0]
	file := flagValue(c.Command, "-f")
	if c.Command[0] != "/usr/local/bin/brindlectl" || !slices.Contains(c.Command, "pool") || !slices.Contains(c.Command, "apply") || file == "" {
		t.Fatalf("job command %v: want brindlectl pool apply -f FILE", c.Command)
	}
	// -f names the ConfigMap's key inside the ConfigMap's mount.
	ok := false
	for _, m := range c.VolumeMounts {
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil && v.ConfigMap.Name == cm.Name && file == filepath.Join(m.MountPath, "ippools.yaml") {
				ok = true
			}
		}
	}
	if !ok {
		t.Errorf("job reads %s, which is not ippools.yaml of the mounted ConfigMap %s", file, cm.Name)
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool { return tl.Operator == corev1.TolerationOpExists && tl.Key == "" }) {
		t.Error("the pool job must tolerate not-ready nodes")
	}
}

// The optional etcd is what brindle-config's etcd_endpoints points at.
func TestOptionalEtcd(t *testing.T) {
	objs := loadObjects(t)
	cm := find[*corev1.ConfigMap](t, objs, "brindle-config")
	svc := find[*corev1.Service](t, objs, "brindle-etcd")
	dep := find[*appsv1.Deployment](t, objs, "brindle-etcd")
	u, err := url.Parse(cm.Data["etcd_endpoints"])
	if err != nil {
		t.Fatal(err)
	}
	if u.Hostname() != svc.Spec.ClusterIP || u.Port() != fmt.Sprint(svc.Spec.Ports[0].Port) {
		t.Errorf("etcd_endpoints %s is not the Service %s:%d", u, svc.Spec.ClusterIP, svc.Spec.Ports[0].Port)
	}
	spec := dep.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Error("etcd must be on the host network: it serves before the pod network exists")
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(dep.Spec.Template.Labels)) {
		t.Error("the Service does not select the etcd pod")
	}
	if *dep.Spec.Replicas != 1 || dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Error("one member, recreated (never two on one data directory)")
	}
	if got := flagValue(spec.Containers[0].Command, "--listen-client-urls"); !strings.HasSuffix(got, fmt.Sprintf(":%d", svc.Spec.Ports[0].TargetPort.IntValue())) {
		t.Errorf("etcd listens on %s, the Service targets %s", got, svc.Spec.Ports[0].TargetPort.String())
	}
}

// Every program the manifests run, and every binary install-cni copies, is
// an executable in /usr/local/bin of the image scripts/image.sh builds (the
// one image of `make image`, the test cluster and kind), which is built
// here from the binaries `make test` made.
func TestImageHasWhatManifestsRun(t *testing.T) {
	bin := os.Getenv("BRINDLE_BIN_DIR")
	if bin == "" {
		t.Skip("BRINDLE_BIN_DIR is not set: `make test` builds the binaries the image is made of")
	}
	out := filepath.Join(t.TempDir(), "image.tar")
	cmd := exec.Command("../../scripts/image.sh", out)
	cmd.Env = append(os.Environ(), "BIN="+bin)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/image.sh: %v\n%s", err, b)
	}
	files := imageFiles(t, out)
	objs := loadObjects(t)
	ds := find[*appsv1.DaemonSet](t, objs, "brindle-node")
	job := find[*batchv1.Job](t, objs, "brindle-ippools")
	var cmds []string
	for _, c := range append(append(ds.Spec.Template.Spec.InitContainers, ds.Spec.Template.Spec.Containers...), job.Spec.Template.Spec.Containers...) {
		cmds = append(cmds, c.Command[0])
	}
	for _, b := range strings.Split(flagValue(ds.Spec.Template.Spec.InitContainers[0].Command, "--binaries"), ",") {
		cmds = append(cmds, "/usr/local/bin/"+b)
	}
	for _, c := range cmds {
		mode, ok := files[strings.TrimPrefix(c, "/")]
		if !ok || mode&0o111 == 0 {
			t.Errorf("the manifests run %s, which is not an executable in the image (mode %v, present %v)", c, mode, ok)
		}
	}
}

// imageFiles lists the files of an image archive's layers and their modes.
func imageFiles(t *testing.T, archive string) map[string]os.FileMode {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	blobs := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		blobs[h.Name] = b
	}
	var manifest []struct{ Layers []string }
	if err := json.Unmarshal(blobs["manifest.json"], &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("image archive manifest.json: %v (%d images)", err, len(manifest))
	}
	files := map[string]os.FileMode{}
	for _, l := range manifest[0].Layers {
		var r io.Reader = bytes.NewReader(blobs[l])
		if zr, err := gzip.NewReader(bytes.NewReader(blobs[l])); err == nil {
			r = zr
		}
		lr := tar.NewReader(r)
		for {
			h, err := lr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("layer %s: %v", l, err)
			}
			files[strings.TrimPrefix(path.Clean(h.Name), "./")] = h.FileInfo().Mode()
		}
	}
	return files
}
