// SPDX-License-Identifier: Apache-2.0

// Package k8s renders the Kustomize trees under deploy/k8s with the kustomize
// Go API (krusty, no kubectl or kustomize binary) and decodes every object
// strictly into the official Kubernetes API types.
package k8s

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Object is one rendered object: its YAML and its typed form (a pointer to
// one of the k8s.io/api structs in kinds).
type Object struct {
	APIVersion, Kind, Name, Namespace string
	YAML                              []byte
	Typed                             any
}

// The kinds the manifests may use, each with its one apiVersion. Anything
// else is refused: a typo in apiVersion or kind fails the render.
var kinds = map[string]struct {
	apiVersion string
	make       func() any
}{
	"Namespace":               {"v1", func() any { return &corev1.Namespace{} }},
	"ConfigMap":               {"v1", func() any { return &corev1.ConfigMap{} }},
	"Service":                 {"v1", func() any { return &corev1.Service{} }},
	"StatefulSet":             {"apps/v1", func() any { return &appsv1.StatefulSet{} }},
	"Deployment":              {"apps/v1", func() any { return &appsv1.Deployment{} }},
	"PodDisruptionBudget":     {"policy/v1", func() any { return &policyv1.PodDisruptionBudget{} }},
	"NetworkPolicy":           {"networking.k8s.io/v1", func() any { return &networkingv1.NetworkPolicy{} }},
	"HorizontalPodAutoscaler": {"autoscaling/v2", func() any { return &autoscalingv2.HorizontalPodAutoscaler{} }},
}

// Build runs kustomize on dir. The ConfigMaps are generated from deploy/*.cfg,
// outside the kustomization roots, so files outside the root are allowed
// (kustomize build --load-restrictor LoadRestrictionsNone).
func Build(dir string) ([]byte, error) {
	opts := krusty.MakeDefaultOptions()
	opts.LoadRestrictions = types.LoadRestrictionsNone
	m, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	return m.AsYaml()
}

// Render builds dir and decodes every object strictly: an unknown or
// misplaced field, a duplicate key or a wrong type is an error.
func Render(dir string) ([]Object, error) {
	opts := krusty.MakeDefaultOptions()
	opts.LoadRestrictions = types.LoadRestrictionsNone
	m, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	var out []Object
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, err
		}
		o := Object{APIVersion: r.GetApiVersion(), Kind: r.GetKind(), Name: r.GetName(), Namespace: r.GetNamespace(), YAML: y}
		k, ok := kinds[o.Kind]
		if !ok {
			return nil, fmt.Errorf("%s %s: kind not expected here (known: Namespace, ConfigMap, Service, StatefulSet, Deployment, PodDisruptionBudget, NetworkPolicy, HorizontalPodAutoscaler)", o.Kind, o.Name)
		}
		if o.APIVersion != k.apiVersion {
			return nil, fmt.Errorf("%s %s: apiVersion %q, want %q", o.Kind, o.Name, o.APIVersion, k.apiVersion)
		}
		o.Typed = k.make()
		// sigs.k8s.io/yaml: YAML to JSON, then encoding/json with
		// DisallowUnknownFields (and duplicate keys refused).
		if err := yaml.UnmarshalStrict(y, o.Typed); err != nil {
			return nil, fmt.Errorf("%s %s: strict decode: %w", o.Kind, o.Name, err)
		}
		out = append(out, o)
	}
	return out, nil
}
