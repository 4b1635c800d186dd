package apply

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/fluxcd/pkg/ssa/utils"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"golang.org/x/sync/errgroup"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// fastPath carries, by object index, what an apply learns about the fingerprints.
type fastPath struct {
	// desired is each object's desired hash.
	desired []string
	// unchanged is true where the stored fingerprints prove the object unchanged.
	unchanged []bool
	// stored are the previous record's fingerprints by entry id.
	stored map[string]inventory.Fingerprint
	// recorded is filled in by the apply: the fingerprint to store, zero where unknown.
	recorded []inventory.Fingerprint
}

// fingerprints returns what the apply recorded, by entry id.
func (fp *fastPath) fingerprints(objs []*unstructured.Unstructured) map[string]inventory.Fingerprint {
	out := map[string]inventory.Fingerprint{}
	for i, r := range fp.recorded {
		if r.Desired != "" && r.Live != "" {
			out[kube.ID(objs[i]).String()] = r
		}
	}
	return out
}

func shortHash(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// desiredHashes hashes every object as it is applied (after the CA bundle removal), together
// with everything else that decides the outcome of applying it: the field manager, the mutating
// admission configuration of the cluster (admission) and, for a custom resource whose CRD is
// rendered too, that CRD's hash (a new schema may prune or default the object differently).
func desiredHashes(objs []*unstructured.Unstructured, fieldManager, admission string) ([]string, error) {
	out := make([]string, len(objs))
	crds := map[schema.GroupKind]string{}
	hash := func(o *unstructured.Unstructured, extra string) (string, error) {
		raw, err := json.Marshal(o.Object) // maps marshal with sorted keys: deterministic
		if err != nil {
			return "", fmt.Errorf("%s: %w", kube.Ref(o), err)
		}
		return shortHash([]byte("v1"), []byte(fieldManager), []byte(admission), []byte(extra), raw), nil
	}
	for i, o := range objs {
		if !kube.IsCRD(kube.ID(o)) {
			continue
		}
		h, err := hash(o, "")
		if err != nil {
			return nil, err
		}
		out[i] = h
		crds[kube.CRDNames(o)] = h
	}
	for i, o := range objs {
		if out[i] != "" {
			continue
		}
		h, err := hash(o, crds[o.GroupVersionKind().GroupKind()])
		if err != nil {
			return nil, err
		}
		out[i] = h
	}
	return out, nil
}

// specOnly are the top-level fields of objects whose metadata.generation covers all their
// content: the API server bumps generation on every change outside metadata and status for the
// kinds that have one (Deployments, CRDs, custom resources...). A kind with other top-level
// fields (a ConfigMap's data, a ServiceAccount's secrets) is fingerprinted by resourceVersion.
var specOnly = map[string]bool{"apiVersion": true, "kind": true, "metadata": true, "spec": true, "status": true}

// liveFingerprint identifies an in-cluster object's state as far as an apply can see it. For an
// object with a generation that covers its spec: uid, generation, and the rest of metadata
// (labels, annotations, ownership of the main resource without timestamps). Status updates (a
// CRD becoming Established, a Deployment's rollout) change neither, so they do not defeat the
// fast path. For any other object: its uid and resourceVersion, which every write changes. The
// uid makes a deleted and re-created object never match.
func liveFingerprint(live *unstructured.Unstructured) string {
	useGeneration := live.GetGeneration() > 0
	for k := range live.Object {
		if !specOnly[k] {
			useGeneration = false
		}
	}
	if !useGeneration {
		return shortHash([]byte("rv"), []byte(live.GetUID()), []byte(live.GetResourceVersion()))
	}
	md, _ := live.Object["metadata"].(map[string]any)
	c := make(map[string]any, len(md))
	for k, v := range md {
		if k != "resourceVersion" && k != "managedFields" {
			c[k] = v
		}
	}
	// Ownership of the main resource (fieldsV1 included: a changed set of owned fields is a
	// change), not of subresources (status), and never timestamps.
	var managers []metav1.ManagedFieldsEntry
	for _, e := range live.GetManagedFields() {
		if e.Subresource != "" {
			continue
		}
		e.Time = nil
		managers = append(managers, e)
	}
	c["managedFields"] = managers
	raw, err := json.Marshal(c)
	if err != nil {
		return "" // never matches
	}
	return shortHash([]byte("gen"), raw)
}

// planFastPath decides which objects the previous record proves unchanged: the same desired
// hash was applied, the in-cluster copy is exactly as that apply left it, nothing is to be taken
// over from a previous owner, and the user may patch the object (a user who cannot apply gets the
// API server's error from the normal path, as with kubectl). Anything it cannot prove goes the
// normal way (a dry run).
//
// admission is admissionFingerprint's result.
func (m *Manager) planFastPath(ctx context.Context, objs []*unstructured.Unstructured, f *fetched, prev *inventory.Inventory, admission string, opts Options) (*fastPath, error) {
	fp := &fastPath{unchanged: make([]bool, len(objs)), recorded: make([]inventory.Fingerprint, len(objs))}
	for _, o := range objs {
		utils.RemoveCABundleFromCRD(o) // as it is applied
	}
	var err error
	if fp.desired, err = desiredHashes(objs, opts.FieldManager, admission); err != nil {
		return nil, err
	}
	if prev == nil || prev.State != inventory.StateApplied || len(prev.Fingerprints) == 0 || opts.ForceConflicts {
		return fp, nil
	}
	fp.stored = prev.Fingerprints
	var candidates []int
	for i, o := range objs {
		live := f.lives[i]
		if live == nil {
			continue
		}
		s, ok := fp.stored[kube.ID(o).String()]
		if !ok || s.Desired != fp.desired[i] || s.Live != liveFingerprint(live) || ownership.NeedsCleanup(live, opts.FieldManager) {
			continue
		}
		candidates = append(candidates, i)
	}
	if len(candidates) == 0 {
		return fp, nil
	}
	allowed, err := m.canPatch(ctx, objs, candidates, opts.Concurrency)
	if err != nil {
		return fp, nil //nolint:nilerr // not proven: the normal path asks the API server
	}
	for _, i := range candidates {
		fp.unchanged[i] = allowed[i]
	}
	return fp, nil
}

// canPatch asks the API server whether the user may patch the given objects: one
// SelfSubjectAccessReview for every resource everywhere (true for cluster admins), else one per
// resource and namespace.
func (m *Manager) canPatch(ctx context.Context, objs []*unstructured.Unstructured, indexes []int, concurrency int) (map[int]bool, error) {
	review := func(ctx context.Context, attrs authorizationv1.ResourceAttributes) (bool, error) {
		attrs.Verb = "patch"
		r := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attrs}}
		if err := m.Client.Create(ctx, r); err != nil {
			return false, err
		}
		return r.Status.Allowed && !r.Status.Denied, nil
	}
	out := map[int]bool{}
	all, err := review(ctx, authorizationv1.ResourceAttributes{Group: "*", Resource: "*"})
	if err != nil {
		return nil, err
	}
	if all {
		for _, i := range indexes {
			out[i] = true
		}
		return out, nil
	}
	type key struct{ group, resource, namespace string }
	byKey := map[key][]int{}
	for _, i := range indexes {
		gvk := objs[i].GroupVersionKind()
		mapping, err := m.Client.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			continue // not proven
		}
		k := key{gvk.Group, mapping.Resource.Resource, objs[i].GetNamespace()}
		byKey[k] = append(byKey[k], i)
	}
	keys := make([]key, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(a, b int) bool { return fmt.Sprint(keys[a]) < fmt.Sprint(keys[b]) })
	results := make([]bool, len(keys))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	for n, k := range keys {
		g.Go(func() error {
			ok, err := review(gctx, authorizationv1.ResourceAttributes{Group: k.group, Resource: k.resource, Namespace: k.namespace})
			results[n] = ok
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for n, k := range keys {
		for _, i := range byKey[k] {
			out[i] = results[n]
		}
	}
	return out, nil
}

// mutatingAdmissionKinds can change an object on its way in: a new or changed one could make an
// apply of the same object to the same in-cluster copy change it.
var mutatingAdmissionKinds = []schema.GroupKind{
	{Group: "admissionregistration.k8s.io", Kind: "MutatingWebhookConfiguration"},
	{Group: "admissionregistration.k8s.io", Kind: "MutatingAdmissionPolicy"},
	{Group: "admissionregistration.k8s.io", Kind: "MutatingAdmissionPolicyBinding"},
}

// admissionFingerprint identifies the cluster's mutating admission configuration (uid and
// resourceVersion of every object of mutatingAdmissionKinds, metadata only). A kind the server
// does not serve counts as empty; any other error (not allowed to list them) is returned.
func (m *Manager) admissionFingerprint(ctx context.Context) (string, error) {
	parts := make([][]byte, len(mutatingAdmissionKinds))
	g, gctx := errgroup.WithContext(ctx)
	for n, gk := range mutatingAdmissionKinds {
		g.Go(func() error {
			mapping, err := m.Client.RESTMapper().RESTMapping(gk)
			if err != nil {
				if kube.IsNoMatch(err) {
					return nil
				}
				return err
			}
			var ids []string
			list := &metav1.PartialObjectMetadataList{}
			list.SetGroupVersionKind(mapping.GroupVersionKind.GroupVersion().WithKind(gk.Kind + "List"))
			err = kube.ListPages(gctx, m.Client, list, func() error {
				for _, item := range list.Items {
					ids = append(ids, item.Name+"/"+string(item.UID)+"/"+item.ResourceVersion)
				}
				return nil
			})
			switch {
			case kube.IsNoMatch(err):
				return nil
			case err != nil:
				return err
			}
			sort.Strings(ids)
			parts[n], _ = json.Marshal(ids)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return "", err
	}
	return shortHash(parts...), nil
}
