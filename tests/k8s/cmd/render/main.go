// SPDX-License-Identifier: Apache-2.0

// render prints the manifests of a Kustomize tree under deploy/k8s, as
// `kustomize build --load-restrictor LoadRestrictionsNone DIR` would:
//
//	cd tests/k8s && go run ./cmd/render ../../deploy/k8s/overlays/production | kubectl apply -f -
//
// It also decodes every object strictly into the Kubernetes API types
// (tests/k8s does the full checks) and fails on an error.
package main

import (
	"fmt"
	"os"

	k8s "execmesh/tests/k8s"
)

func main() {
	if len(os.Args) != 2 || os.Args[1] == "-h" || os.Args[1] == "--help" {
		fmt.Fprintln(os.Stderr, "usage: go run ./cmd/render KUSTOMIZATION_DIR   (e.g. ../../deploy/k8s/overlays/production)")
		os.Exit(2)
	}
	if _, err := k8s.Render(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
	y, err := k8s.Build(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
	os.Stdout.Write(y)
}
