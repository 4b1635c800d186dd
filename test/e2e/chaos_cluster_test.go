package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// bystander is an object the plugin must never change: users' objects beside Flux, some in the
// instance namespace, some with the instance's owner labels (which alone prove nothing), one
// named like a Flux controller in another namespace, and a non-Flux CRD.
type bystander struct {
	// created is the object as the API server returned it on creation.
	created *unstructured.Unstructured
	// content is the top-level field holding its data ("" for none).
	content string
}

func (b bystander) id() string {
	return objectID(b.created.GroupVersionKind().Group, b.created.GetKind(), b.created.GetNamespace(), b.created.GetName())
}

func (r *chaosRun) isBystander(id string) bool {
	return slices.ContainsFunc(r.bystanders, func(b bystander) bool { return b.id() == id })
}

func ownerLabels() map[string]any {
	return map[string]any{labelOwnerName: "flux", labelOwnerNS: chaosNamespace}
}

// createBystanders creates the instance namespace (so that users' objects can live there before
// the first apply) and the bystanders, and keeps them as created.
func (r *chaosRun) createBystanders(ctx context.Context) {
	r.t.Helper()
	obj := func(apiVersion, kind, namespace, name string, labelled bool, fields map[string]any) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind}}
		for k, v := range fields {
			u.Object[k] = v
		}
		u.SetNamespace(namespace)
		u.SetName(name)
		if labelled {
			u.Object["metadata"].(map[string]any)["labels"] = ownerLabels()
		}
		return u
	}
	deployment := func(namespace, name string, labelled bool) *unstructured.Unstructured {
		return obj("apps/v1", "Deployment", namespace, name, labelled, map[string]any{"spec": map[string]any{
			"selector": map[string]any{"matchLabels": map[string]any{"app": name}},
			"template": map[string]any{
				"metadata": map[string]any{"labels": map[string]any{"app": name}},
				"spec":     map[string]any{"containers": []any{map[string]any{"name": name, "image": "registry.example.com/" + name + ":1"}}},
			},
		}})
	}
	configMap := func(namespace, name string, labelled bool) *unstructured.Unstructured {
		return obj("v1", "ConfigMap", namespace, name, labelled, map[string]any{"data": map[string]any{"owner": "a user", "name": name}})
	}
	serviceAccount := func(namespace, name string, labelled bool) *unstructured.Unstructured {
		return obj("v1", "ServiceAccount", namespace, name, labelled, nil)
	}

	// The instance namespace is the plugin's from its first apply on, not a bystander.
	if err := r.c.Create(ctx, obj("v1", "Namespace", "", chaosNamespace, false, nil)); err != nil {
		r.fatalf("creating namespace %s: %v", chaosNamespace, err)
	}
	objects := []struct {
		u       *unstructured.Unstructured
		content string
	}{
		{obj("v1", "Namespace", "", "chaos-bystander-a", true, nil), ""},
		{obj("v1", "Namespace", "", "chaos-bystander-b", false, nil), ""},
		{obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "widgets.example.com", true, map[string]any{"spec": map[string]any{
			"group": "example.com",
			"names": map[string]any{"kind": "Widget", "listKind": "WidgetList", "plural": "widgets", "singular": "widget"},
			"scope": "Namespaced",
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true, "schema": map[string]any{
				"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true},
			}}},
		}}), "spec"},
		{obj("rbac.authorization.k8s.io/v1", "ClusterRole", "", "chaos-bystander-flux-view", true, map[string]any{"rules": []any{
			map[string]any{"apiGroups": []any{""}, "resources": []any{"configmaps"}, "verbs": []any{"get"}},
		}}), "rules"},
		{configMap("chaos-bystander-a", "settings", true), "data"},
		// Named like Flux's own Deployment, with the owner labels, in another namespace.
		{deployment("chaos-bystander-a", "source-controller", true), "spec"},
		{serviceAccount("chaos-bystander-a", "app", false), ""},
		{configMap("chaos-bystander-b", "plain", false), "data"},
		{serviceAccount("chaos-bystander-b", "robot", true), ""},
		{deployment("chaos-bystander-b", "web", false), "spec"},
		// Users' objects in the instance namespace, labelled like the plugin's: the record alone
		// says what the plugin applied.
		{configMap(chaosNamespace, "user-settings", true), "data"},
		{serviceAccount(chaosNamespace, "user-robot", true), ""},
		{deployment(chaosNamespace, "user-app", true), "spec"},
	}
	for _, o := range objects {
		if err := r.c.Create(ctx, o.u); err != nil {
			r.fatalf("creating bystander %s %s/%s: %v", o.u.GetKind(), o.u.GetNamespace(), o.u.GetName(), err)
		}
		r.bystanders = append(r.bystanders, bystander{created: o.u, content: o.content})
	}
}

// checkBystanders is (b): every bystander exists, not being deleted, with its UID, labels,
// annotations and data as created.
func (r *chaosRun) checkBystanders(ctx context.Context) {
	r.t.Helper()
	for _, b := range r.bystanders {
		want := b.created
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(want.GroupVersionKind())
		if err := r.c.Get(ctx, client.ObjectKeyFromObject(want), got); err != nil {
			r.errorf("(b) bystander %s: %v", b.id(), err)
			continue
		}
		var diffs []string
		if got.GetUID() != want.GetUID() {
			diffs = append(diffs, fmt.Sprintf("UID %s, was %s (re-created)", got.GetUID(), want.GetUID()))
		}
		if got.GetDeletionTimestamp() != nil {
			diffs = append(diffs, "being deleted")
		}
		if !equality.Semantic.DeepEqual(got.GetLabels(), want.GetLabels()) {
			diffs = append(diffs, fmt.Sprintf("labels %v, were %v", got.GetLabels(), want.GetLabels()))
		}
		if !equality.Semantic.DeepEqual(got.GetAnnotations(), want.GetAnnotations()) {
			diffs = append(diffs, fmt.Sprintf("annotations %v, were %v", got.GetAnnotations(), want.GetAnnotations()))
		}
		if b.content != "" && !equality.Semantic.DeepEqual(got.Object[b.content], want.Object[b.content]) {
			diffs = append(diffs, fmt.Sprintf("%s %v, was %v", b.content, got.Object[b.content], want.Object[b.content]))
		}
		if len(diffs) > 0 {
			r.errorf("(b) bystander %s changed: %s", b.id(), strings.Join(diffs, "; "))
		}
	}
}

// grantAllButConfigMaps binds user to a ClusterRole allowing everything but ConfigMaps (RBAC
// cannot deny, so the role lists every other resource of the core group and every other group,
// the Flux groups of the rendering included before their CRDs exist), checks the grant with
// SubjectAccessReviews, and returns the user's kubeconfig.
func (r *chaosRun) grantAllButConfigMaps(ctx context.Context, user string) string {
	r.t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(r.env.Config)
	if err != nil {
		r.fatalf("%v", err)
	}
	core, err := dc.ServerResourcesForGroupVersion("v1")
	if err != nil {
		r.fatalf("discovering the core resources: %v", err)
	}
	var coreResources []string
	for _, res := range core.APIResources {
		if res.Name != "configmaps" && !strings.HasPrefix(res.Name, "configmaps/") {
			coreResources = append(coreResources, res.Name)
		}
	}
	groups, err := dc.ServerGroups()
	if err != nil {
		r.fatalf("discovering the API groups: %v", err)
	}
	var groupNames []string
	for _, g := range groups.Groups {
		if g.Name != "" {
			groupNames = append(groupNames, g.Name)
		}
	}
	for _, gvk := range r.kinds {
		if gvk.Group != "" && !slices.Contains(groupNames, gvk.Group) {
			groupNames = append(groupNames, gvk.Group)
		}
	}
	for _, o := range r.render(ctx, append([]string{"source-controller"}, chaosComponents()...)) {
		if g, _, _ := unstructured.NestedString(o.Object, "spec", "group"); o.GetKind() == "CustomResourceDefinition" && !slices.Contains(groupNames, g) {
			groupNames = append(groupNames, g)
		}
	}
	slices.Sort(groupNames)
	name := "chaos-all-but-configmaps"
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: coreResources, Verbs: []string{"*"}},
			{APIGroups: groupNames, Resources: []string{"*"}, Verbs: []string{"*"}},
			{NonResourceURLs: []string{"*"}, Verbs: []string{"*"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	for _, o := range []client.Object{role, binding} {
		if err := r.c.Create(ctx, o); err != nil {
			r.fatalf("granting %s: %v", user, err)
		}
	}
	// The refusals the test expects from this user must come from ConfigMaps alone.
	for _, check := range []struct {
		attrs authorizationv1.ResourceAttributes
		want  bool
	}{
		{authorizationv1.ResourceAttributes{Namespace: chaosNamespace, Verb: "get", Resource: "configmaps"}, false},
		{authorizationv1.ResourceAttributes{Namespace: chaosNamespace, Verb: "patch", Group: "apps", Resource: "deployments"}, true},
		{authorizationv1.ResourceAttributes{Namespace: chaosNamespace, Verb: "patch", Resource: "serviceaccounts"}, true},
		{authorizationv1.ResourceAttributes{Verb: "patch", Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"}, true},
		{authorizationv1.ResourceAttributes{Verb: "escalate", Group: "rbac.authorization.k8s.io", Resource: "clusterroles"}, true},
		{authorizationv1.ResourceAttributes{Namespace: chaosNamespace, Verb: "list", Group: "source.toolkit.fluxcd.io", Resource: "gitrepositories"}, true},
	} {
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user, ResourceAttributes: &check.attrs}}
		if err := r.c.Create(ctx, review); err != nil {
			r.fatalf("SubjectAccessReview: %v", err)
		}
		if review.Status.Allowed != check.want {
			r.fatalf("the grant of %s is wrong: %+v allowed=%v, want %v", user, check.attrs, review.Status.Allowed, check.want)
		}
	}
	return r.env.UserKubeconfig(r.t, user)
}
