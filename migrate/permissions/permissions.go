// Package permissions checks, with SelfSubjectAccessReviews and before changing anything, that
// the user may do everything a command's plan needs, and lists every missing permission at once.
//
// A command that meets its first forbidden request halfway leaves the cluster half changed (a
// `delete` once removed Flux's RBAC, then failed on the Deployments it left running without it).
// So `apply` and `delete` derive what their plan needs (ForApply, ForDelete), Check asks the API
// server about all of it, and a refusal (MissingError) names every missing permission before the
// first write. `migrate --check-permissions` lists RequiredPermissions the same way.
package permissions

import (
	"context"
	"fmt"
	"strings"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"golang.org/x/sync/errgroup"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Permission is one access a command needs. Namespace "" means cluster-wide: a cluster-scoped
// resource, or every namespace for a namespaced one (which is how detection lists them).
type Permission struct {
	Verbs    []string
	Group    string
	Resource string
	// Subresource is e.g. "status"; "" for the object itself.
	Subresource string
	Namespace   string
	// Name narrows the permission to one object, "" for any: a Role may grant named objects
	// only. Requests that name no object (list, and create by POST) must not carry one.
	Name string
	// Why says which step needs it, for the report.
	Why string
}

// RequiredPermissions lists what `migrate` needs for an installation in namespace ns: detection
// lists a few kinds cluster-wide, the plan dry-runs, and the takeover patches every Flux object.
// Secrets are never read.
func RequiredPermissions(ns string) []Permission {
	patch := []string{"get", "list", "patch", "create"}
	p := func(verbs []string, group, resource, ns, why string) Permission {
		return Permission{Verbs: verbs, Group: group, Resource: resource, Namespace: ns, Why: why}
	}
	return []Permission{
		p([]string{"list"}, "apps", "deployments", "", "detection (one list of Flux controllers, all namespaces)"),
		p([]string{"list", "get"}, "", "configmaps", "", "detection of earlier migrations and of this plugin's inventory"),
		p([]string{"get", "list", "patch"}, "apiextensions.k8s.io", "customresourcedefinitions", "", "version detection and takeover of the Flux CRDs"),
		p([]string{"get", "list", "patch"}, "kustomize.toolkit.fluxcd.io", "kustomizations", ns, "the bootstrap Kustomization: detection and takeover"),
		p([]string{"get", "patch"}, "source.toolkit.fluxcd.io", "gitrepositories", ns, "the sync source: detection and takeover"),
		p([]string{"list"}, "networking.k8s.io", "networkpolicies", ns, "network policy detection"),
		p(patch, "networking.k8s.io", "networkpolicies", ns, "takeover of the network policies"),
		p(patch, "apps", "deployments", ns, "takeover of the controllers (pod templates unchanged)"),
		p(patch, "", "serviceaccounts", ns, "takeover of the controllers' service accounts"),
		p(patch, "", "services", ns, "takeover of the controllers' services"),
		p(patch, "", "resourcequotas", ns, "takeover of the critical-pods quota"),
		p(patch, "", "configmaps", ns, "the migration record and the inventory"),
		p(patch, "", "namespaces", "", "takeover of the namespace"),
		p(patch, "rbac.authorization.k8s.io", "clusterroles", "", "takeover of Flux's cluster roles"),
		p(patch, "rbac.authorization.k8s.io", "clusterrolebindings", "", "takeover of Flux's cluster role bindings"),
		// Server-side apply of RBAC objects needs the permissions they grant (escalation check).
		p([]string{"escalate", "bind"}, "rbac.authorization.k8s.io", "clusterroles", "", "updating roles that grant more than the user holds"),
	}
}

// HelmPermissions are what migrate needs besides RequiredPermissions for a Flux installed by Helm:
// reading the release records and setting them aside in storageNS, and suspending a HelmRelease
// that runs the release (in hrNS, "" when none does).
func HelmPermissions(storageNS, hrNS string) []Permission {
	out := []Permission{
		{Verbs: []string{"get", "list", "create", "delete"}, Resource: "secrets", Namespace: storageNS, Why: "the Helm release records: read, then set aside (Helm's default storage)"},
		{Verbs: []string{"get", "list", "create", "delete"}, Resource: "configmaps", Namespace: storageNS, Why: "the Helm release records: read, then set aside (HELM_DRIVER=configmap)"},
	}
	if hrNS != "" {
		out = append(out, Permission{Verbs: []string{"get", "patch"}, Group: "helm.toolkit.fluxcd.io", Resource: "helmreleases", Namespace: hrNS, Why: "suspending the HelmRelease that runs the release"})
	}
	return out
}

// MissingPermission is a Permission the user lacks, per verb. Its Why joins the reasons of every
// permission that asked for the same verb on the same object(s).
type MissingPermission struct {
	Permission
	Verb string
}

// String is one line of the report: verb, resource, scope and why, e.g. "create
// customresourcedefinitions.apiextensions.k8s.io cluster-wide (applying 14 CustomResourceDefinitions)".
func (m MissingPermission) String() string {
	return fmt.Sprintf("%s (%s)", m.what(), m.Why)
}

// what is the line without its reason: verb, resource and scope.
func (m MissingPermission) what() string {
	resource := m.Resource
	if m.Group != "" {
		resource += "." + m.Group
	}
	if m.Subresource != "" {
		resource += "/" + m.Subresource
	}
	if m.Name != "" {
		resource += " named " + m.Name
	}
	scope := "cluster-wide"
	if m.Namespace != "" {
		scope = "in namespace " + m.Namespace
	}
	return fmt.Sprintf("%s %s %s", m.Verb, resource, scope)
}

// review is one SelfSubjectAccessReview to send: a verb on a resource (or one object of it).
type review struct {
	attrs authorizationv1.ResourceAttributes
	// missing is what the report says if the review is refused; its Why gathers every reason.
	missing MissingPermission
}

// merge expands the permissions into one review per verb and object(s), merging duplicates (the
// rendering and the prune may both need to read Deployments in one namespace) and keeping the
// order in which they first appear, so that the report follows the plan.
func merge(perms []Permission) []*review {
	type key struct{ verb, group, resource, subresource, namespace, name string }
	var out []*review
	seen := map[key]*review{}
	for _, p := range perms {
		for _, verb := range p.Verbs {
			k := key{verb, p.Group, p.Resource, p.Subresource, p.Namespace, p.Name}
			if r := seen[k]; r != nil {
				if p.Why != "" && !strings.Contains("; "+r.missing.Why+"; ", "; "+p.Why+"; ") {
					r.missing.Why += "; " + p.Why
				}
				continue
			}
			r := &review{
				attrs: authorizationv1.ResourceAttributes{Verb: verb, Group: p.Group, Resource: p.Resource,
					Subresource: p.Subresource, Namespace: p.Namespace, Name: p.Name},
				missing: MissingPermission{Permission: p, Verb: verb},
			}
			r.missing.Verbs = []string{verb}
			seen[k] = r
			out = append(out, r)
		}
	}
	return out
}

// UncheckedError says that the check itself could not be made: the API server refused the
// SelfSubjectAccessReviews or does not serve them. It says nothing about the permissions: a
// caller may go on (the API server still authorizes every request), after telling the user.
type UncheckedError struct {
	Err error
}

func (e *UncheckedError) Error() string {
	return fmt.Sprintf("the API server did not answer a SelfSubjectAccessReview: %v", e.Err)
}

func (e *UncheckedError) Unwrap() error { return e.Err }

// Check asks the API server which of the permissions the current user lacks, with one
// SelfSubjectAccessReview per verb and resource (duplicates merged), sent concurrently. It first
// asks for every verb on every resource: a cluster admin is then done with a single review. nil
// means nothing is missing. An *UncheckedError means the reviews themselves were refused.
func Check(ctx context.Context, c client.Client, perms []Permission) ([]MissingPermission, error) {
	reviews := merge(perms)
	if len(reviews) == 0 {
		return nil, nil
	}
	all, err := allowed(ctx, c, authorizationv1.ResourceAttributes{Verb: "*", Group: "*", Resource: "*"})
	if err != nil {
		return nil, reviewError(err, "do everything")
	}
	if all {
		return nil, nil
	}
	refused := make([]bool, len(reviews))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(kube.DefaultConcurrency)
	for i, r := range reviews {
		g.Go(func() error {
			ok, err := allowed(gctx, c, r.attrs)
			if err != nil {
				return reviewError(err, r.missing.what())
			}
			refused[i] = !ok // each goroutine its own index
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var missing []MissingPermission
	for i, r := range reviews {
		if refused[i] {
			missing = append(missing, r.missing)
		}
	}
	return missing, nil
}

func allowed(ctx context.Context, c client.Client, attrs authorizationv1.ResourceAttributes) (bool, error) {
	r := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attrs}}
	if err := c.Create(ctx, r); err != nil {
		return false, err
	}
	return r.Status.Allowed && !r.Status.Denied, nil
}

// reviewError tells a refused or unserved review (the check cannot be made: *UncheckedError) from
// a failure to reach the API server, which the command would meet next anyway.
func reviewError(err error, what string) error {
	if apierrors.IsForbidden(err) || apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err) || kube.IsNoMatch(err) {
		return &UncheckedError{Err: err}
	}
	return fmt.Errorf("asking the API server whether you may %s: %w", what, err)
}

// MaxListed is how many missing permissions a MissingError lists before "and N more": enough for
// a user without one resource's rights, short enough for a terminal.
const MaxListed = 20

// MissingError is a command's refusal to start: the user lacks permissions its plan needs. It is
// returned only by checks made before the command's first change, hence "nothing was changed".
type MissingError struct {
	// Command is "apply", "delete"...
	Command string
	Missing []MissingPermission
}

func (e *MissingError) Error() string {
	noun := "permissions"
	if len(e.Missing) == 1 {
		noun = "permission"
	}
	return fmt.Sprintf("you lack %d %s this %s needs (nothing was changed):\n%s", len(e.Missing), noun, e.Command, FormatMissing(e.Missing, MaxListed))
}

// FormatMissing renders missing permissions one per line, indented; with max > 0, at most max
// lines and then "and N more".
func FormatMissing(missing []MissingPermission, max int) string {
	lines := make([]string, 0, len(missing))
	for i, m := range missing {
		if max > 0 && i == max {
			lines = append(lines, fmt.Sprintf("  and %d more", len(missing)-max))
			break
		}
		lines = append(lines, "  "+m.String())
	}
	return strings.Join(lines, "\n")
}
