// Package permissions checks, with SelfSubjectAccessReviews and before changing anything, that
// the user may do everything a command's plan needs, and lists every missing permission at once.
package permissions

import (
	"context"
	"fmt"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Permission is one access migrate needs; Namespace "" means cluster-wide (every namespace for
// namespaced resources, which is how detection lists them).
type Permission struct {
	Verbs     []string
	Group     string
	Resource  string
	Namespace string
	// Why says which step needs it, for the report.
	Why string
}

// RequiredPermissions lists what `migrate` needs for an installation in namespace ns: detection
// lists a few kinds cluster-wide, the plan dry-runs, and the takeover patches every Flux object.
// Secrets are never read.
func RequiredPermissions(ns string) []Permission {
	patch := []string{"get", "list", "patch", "create"}
	return []Permission{
		{[]string{"list"}, "apps", "deployments", "", "detection (one list of Flux controllers, all namespaces)"},
		{[]string{"list", "get"}, "", "configmaps", "", "detection of earlier migrations and of this plugin's inventory"},
		{[]string{"get", "list", "patch"}, "apiextensions.k8s.io", "customresourcedefinitions", "", "version detection and takeover of the Flux CRDs"},
		{[]string{"get", "list", "patch"}, "kustomize.toolkit.fluxcd.io", "kustomizations", ns, "the bootstrap Kustomization: detection and takeover"},
		{[]string{"get", "patch"}, "source.toolkit.fluxcd.io", "gitrepositories", ns, "the sync source: detection and takeover"},
		{[]string{"list"}, "networking.k8s.io", "networkpolicies", ns, "network policy detection"},
		{patch, "networking.k8s.io", "networkpolicies", ns, "takeover of the network policies"},
		{patch, "apps", "deployments", ns, "takeover of the controllers (pod templates unchanged)"},
		{patch, "", "serviceaccounts", ns, "takeover of the controllers' service accounts"},
		{patch, "", "services", ns, "takeover of the controllers' services"},
		{patch, "", "resourcequotas", ns, "takeover of the critical-pods quota"},
		{patch, "", "configmaps", ns, "the migration record and the inventory"},
		{patch, "", "namespaces", "", "takeover of the namespace"},
		{patch, "rbac.authorization.k8s.io", "clusterroles", "", "takeover of Flux's cluster roles"},
		{patch, "rbac.authorization.k8s.io", "clusterrolebindings", "", "takeover of Flux's cluster role bindings"},
		// Server-side apply of RBAC objects needs the permissions they grant (escalation check).
		{[]string{"escalate", "bind"}, "rbac.authorization.k8s.io", "clusterroles", "", "updating roles that grant more than the user holds"},
	}
}

// MissingPermission is a Permission the user lacks, per verb.
type MissingPermission struct {
	Permission
	Verb string
}

func (m MissingPermission) String() string {
	scope := "cluster-wide"
	if m.Namespace != "" {
		scope = "in namespace " + m.Namespace
	}
	resource := m.Resource
	if m.Group != "" {
		resource += "." + m.Group
	}
	return fmt.Sprintf("%s %s %s (%s)", m.Verb, resource, scope, m.Why)
}

// CheckPermissions asks the API server, with one SelfSubjectAccessReview per verb and resource,
// which of the required permissions the current user lacks.
func CheckPermissions(ctx context.Context, c client.Client, ns string) ([]MissingPermission, error) {
	var missing []MissingPermission
	for _, p := range RequiredPermissions(ns) {
		for _, verb := range p.Verbs {
			review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
				ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: p.Namespace, Verb: verb, Group: p.Group, Resource: p.Resource},
			}}
			if err := c.Create(ctx, review); err != nil {
				return nil, fmt.Errorf("asking the API server whether you may %s %s: %w", verb, p.Resource, err)
			}
			if !review.Status.Allowed {
				missing = append(missing, MissingPermission{Permission: p, Verb: verb})
			}
		}
	}
	return missing, nil
}

// FormatMissing renders the report of CheckPermissions.
func FormatMissing(missing []MissingPermission) string {
	lines := make([]string, 0, len(missing))
	for _, m := range missing {
		lines = append(lines, "  "+m.String())
	}
	return strings.Join(lines, "\n")
}
