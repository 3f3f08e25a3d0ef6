// Package k8s holds brindle's Kubernetes manifests (the YAML files in this
// directory and in etcd/) and the test that decodes them strictly with the
// Kubernetes API types. There is no Go API here; `kubectl apply -f
// conf/k8s/` installs brindle, and docs/operations.md says how.
package k8s
