// Command schemagen writes the part of kustomize's built-in Kubernetes OpenAPI
// schema (kyaml's v1.21.2 swagger) that strategic merge patches of rendered
// objects look up: the definitions of the built-in kinds the renderer emits and
// everything they reference, without descriptions. Parsing the whole built-in
// schema costs kyaml about 45 MB of allocations per process; this subset, used
// as kyaml's custom schema, gives the same merge keys and strategies for these
// kinds at a fraction of that.
//
//	go run ./render/internal/schemagen -o render/k8sschema.json
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	openapi_v2 "github.com/google/gnostic-models/openapiv2"
	"google.golang.org/protobuf/proto"
	"k8s.io/kube-openapi/pkg/validation/spec"
	"sigs.k8s.io/kustomize/kyaml/openapi/kubernetesapi"
)

// Kinds lists the built-in kinds the renderer emits (group/version/kind): those of
// the distribution's manifests, the Namespace and the source-controller PVC.
var Kinds = []string{
	"apiextensions.k8s.io/v1/CustomResourceDefinition",
	"apps/v1/Deployment",
	"networking.k8s.io/v1/NetworkPolicy",
	"rbac.authorization.k8s.io/v1/ClusterRole",
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding",
	"rbac.authorization.k8s.io/v1/Role",
	"rbac.authorization.k8s.io/v1/RoleBinding",
	"/v1/ResourceQuota",
	"/v1/Service",
	"/v1/ServiceAccount",
	"/v1/Namespace",
	"/v1/PersistentVolumeClaim",
	"/v1/ConfigMap",
	"/v1/Secret",
}

func main() {
	out := flag.String("o", "", "output file")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "usage: schemagen -o FILE")
		os.Exit(2)
	}
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "schemagen:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	version := kubernetesapi.DefaultOpenAPI
	asset := filepath.Join("kubernetesapi", strings.ReplaceAll(version, ".", "_"), "swagger.pb")
	doc := &openapi_v2.Document{}
	if err := proto.Unmarshal(kubernetesapi.OpenAPIMustAsset[version](asset), doc); err != nil {
		return err
	}
	var swagger spec.Swagger
	if _, err := swagger.FromGnostic(doc); err != nil {
		return err
	}
	// Round-trip through JSON to work on plain values.
	b, err := json.Marshal(swagger.Definitions)
	if err != nil {
		return err
	}
	var defs map[string]any
	if err := json.Unmarshal(b, &defs); err != nil {
		return err
	}
	keep := map[string]bool{}
	var visit func(name string)
	visit = func(name string) {
		if keep[name] {
			return
		}
		d, ok := defs[name]
		if !ok {
			return
		}
		keep[name] = true
		for _, ref := range refs(d) {
			visit(strings.TrimPrefix(ref, "#/definitions/"))
		}
	}
	found := map[string]bool{}
	for name, d := range defs {
		for _, gvk := range gvks(d) {
			if slices.Contains(Kinds, gvk) {
				found[gvk] = true
				visit(name)
			}
		}
	}
	for _, k := range Kinds {
		if !found[k] {
			return fmt.Errorf("kind %s is not in kyaml's built-in schema %s", k, version)
		}
	}
	subset := map[string]any{}
	for name := range keep {
		subset[name] = strip(defs[name])
	}
	data, err := json.Marshal(map[string]any{
		"swagger":     "2.0",
		"info":        map[string]any{"title": "Kubernetes (subset for kubectl-fluxinstance)", "version": version},
		"paths":       map[string]any{},
		"definitions": subset,
	})
	if err != nil {
		return err
	}
	return os.WriteFile(out, append(data, '\n'), 0o644)
}

func gvks(d any) []string {
	m, _ := d.(map[string]any)
	list, _ := m["x-kubernetes-group-version-kind"].([]any)
	var out []string
	for _, x := range list {
		g, _ := x.(map[string]any)
		out = append(out, fmt.Sprintf("%v/%v/%v", g["group"], g["version"], g["kind"]))
	}
	return out
}

func refs(v any) []string {
	var out []string
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if s, ok := x.(string); ok && k == "$ref" {
				out = append(out, s)
				continue
			}
			out = append(out, refs(x)...)
		}
	case []any:
		for _, x := range t {
			out = append(out, refs(x)...)
		}
	}
	return out
}

// strip drops descriptions, which no merge looks at.
func strip(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			if k == "description" {
				if _, isString := x.(string); isString {
					continue
				}
			}
			out[k] = strip(x)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = strip(x)
		}
		return out
	}
	return v
}
