package adopt

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/object"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/installation"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/fluxinstance/kubectl-fluxinstance/render"
	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution"
	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
)

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// dryRunSuffix names the server-side dry-run copies used to learn the API server's defaults.
const dryRunSuffix = "-fluxinstance-migrate"

// Plan is what a migration will do: the FluxInstance that reproduces the cluster, the objects
// it renders to, and what the user should know.
type Plan struct {
	Install *Install
	// Instance is the generated FluxInstance (not defaulted: what the user commits).
	Instance *fluxinstance.FluxInstance
	// Objects are the rendered objects, patches applied.
	Objects []*unstructured.Unstructured
	// Patches explains each generated patch, by object.
	Patches []PatchNote
	// Notes are the other differences and facts (no action needed).
	Notes []string
	// Unexpressed are differences the FluxInstance could not reproduce, with the reason; the
	// takeover would change them.
	Unexpressed []string
	// Protect are live Flux objects (in the bootstrap Kustomization's inventory) that the
	// FluxInstance does not render: the takeover only marks them so that nothing deletes them.
	Protect []object.ObjMetadata
	// FluxObjects is every object the verification checks: rendered plus Protect.
	FluxObjects []object.ObjMetadata
	// Versions maps FluxObjects to their API version.
	Versions map[object.ObjMetadata]string
}

// PatchNote is one generated patch in words.
type PatchNote struct {
	Object  string   `json:"object"`
	Changes []string `json:"changes"`
}

// NewInstance maps a detected installation to a FluxInstance without patches.
func NewInstance(in *Install) *fluxinstance.FluxInstance {
	inst := &fluxinstance.FluxInstance{}
	inst.APIVersion, inst.Kind = fluxinstance.APIVersion, fluxinstance.Kind
	inst.Name, inst.Namespace = fluxinstance.RequiredName, in.Namespace
	inst.Spec.Distribution = fluxinstance.Distribution{
		Version: in.Version, Registry: in.Registry, Variant: in.Variant, ImagePullSecret: in.ImagePullSecret,
	}
	inst.Spec.Components = slices.Clone(in.Components)
	np := in.NetworkPolicy
	inst.Spec.Cluster = &fluxinstance.Cluster{Type: fluxinstance.ClusterTypeKubernetes, NetworkPolicy: &np}
	if in.Domain != "" && in.Domain != fluxinstance.DefaultDomain {
		inst.Spec.Cluster.Domain = in.Domain
	}
	if in.Sync != nil {
		s := *in.Sync
		inst.Spec.Sync = &s
	}
	return inst
}

// copyInstance deep-copies through JSON (the types have no generated DeepCopy).
func copyInstance(in *fluxinstance.FluxInstance) *fluxinstance.FluxInstance {
	data, _ := json.Marshal(in)
	out := &fluxinstance.FluxInstance{}
	_ = json.Unmarshal(data, out)
	return out
}

// RenderInstance defaults, validates and renders a copy of inst.
func RenderInstance(inst *fluxinstance.FluxInstance, rel *distribution.Release) ([]*unstructured.Unstructured, error) {
	d := copyInstance(inst)
	d.Default()
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("the generated FluxInstance is invalid: %w", err)
	}
	if err := d.ValidateForVersion(rel.Version); err != nil {
		return nil, fmt.Errorf("the generated FluxInstance is invalid: %w", err)
	}
	// No warnings to pass on: the plan's patches are made from this very rendering's objects,
	// and each targets one of them by kind and name.
	objs, err := render.Build(d, rel, nil)
	if err != nil {
		return nil, fmt.Errorf("rendering the generated FluxInstance with Flux %s: %w", rel.Version, err)
	}
	return objs, nil
}

// patchable tells which rendered objects get patches: the controllers and the sync objects,
// whose spec users customise through kustomization.yaml and gotk-sync.yaml. Other objects (CRDs,
// RBAC, Services, policies) take the Flux Operator's rendering; none of them restarts a pod.
func patchable(u *unstructured.Unstructured, ns string) bool {
	if u.GetNamespace() != ns {
		return false
	}
	switch u.GetKind() {
	case "Deployment":
		return true
	case "Kustomization":
		return u.GroupVersionKind().Group == kustomizationGVK.Group && u.GetName() == ns
	case "GitRepository", "OCIRepository", "Bucket":
		return u.GroupVersionKind().Group == sourceGroup && u.GetName() == ns
	}
	return false
}

// BuildPlan generates the FluxInstance for an installation, renders it against rel, compares the
// rendering with the running objects (defaulted by server-side dry-run creates, which persist
// nothing) and turns every difference in the controllers and sync objects into a JSON6902 patch.
// It then renders again with the patches and checks the result against the cluster: what still
// differs is listed in Unexpressed. It reads no Secret.
func BuildPlan(ctx context.Context, c client.Client, in *Install, rel *distribution.Release) (*Plan, error) {
	if in.Record != nil && in.Record.Instance != nil {
		// A migration started here: its recorded instance is the plan (the objects may already
		// carry the new ownership, and re-deriving it could only differ by accident).
		return planFromRecord(ctx, c, in, rel)
	}
	inst := NewInstance(in)
	p := &Plan{Install: in, Notes: slices.Clone(in.Notes)}
	base, err := RenderInstance(inst, rel)
	if err != nil {
		return nil, err
	}
	lives, patches, err := p.derivePatches(ctx, c, base)
	if err != nil {
		return nil, err
	}
	if len(patches) > 0 {
		inst.Spec.Kustomize = &fluxinstance.Kustomize{Patches: patches}
	}
	p.Instance = inst
	if p.Objects, err = RenderInstance(inst, rel); err != nil {
		return nil, fmt.Errorf("the generated patches do not apply: %w", err)
	}
	if err := p.verifyPatched(ctx, c, lives); err != nil {
		return nil, err
	}
	if err := p.collectFluxObjects(ctx, c); err != nil {
		return nil, err
	}
	return p, nil
}

// derivePatches compares each patchable object of the unpatched rendering with its running
// copy and returns one JSON6902 patch per object that differs (described in p.Patches), with the
// running copies by key for verifyPatched. Objects not running yet get no patch.
func (p *Plan) derivePatches(ctx context.Context, c client.Client, base []*unstructured.Unstructured) (map[string]*unstructured.Unstructured, []fluxinstance.Patch, error) {
	lives := map[string]*unstructured.Unstructured{}
	var patches []fluxinstance.Patch
	for _, obj := range base {
		if !patchable(obj, p.Install.Namespace) {
			continue
		}
		live, _, err := kube.Get(ctx, c, obj)
		if err != nil {
			return nil, nil, err
		}
		if live == nil {
			continue
		}
		lives[key(obj)] = live
		ops, note, err := specDiff(ctx, c, obj, live)
		if err != nil {
			return nil, nil, err
		}
		if note != "" {
			p.Notes = append(p.Notes, note)
		}
		if len(ops) == 0 {
			continue
		}
		data, err := yaml.Marshal(ops)
		if err != nil {
			return nil, nil, err
		}
		gvk := obj.GroupVersionKind()
		patches = append(patches, fluxinstance.Patch{
			Patch:  string(data),
			Target: &fluxinstance.Selector{Group: gvk.Group, Kind: gvk.Kind, Name: obj.GetName()},
		})
		pn := PatchNote{Object: kube.Ref(obj)}
		for _, o := range ops {
			pn.Changes = append(pn.Changes, describeOp(o))
		}
		p.Patches = append(p.Patches, pn)
	}
	return lives, patches, nil
}

// verifyPatched is the proof that the patches express the installation: the patched rendering,
// defaulted by the API server, must equal the running objects. What still differs goes to
// Unexpressed (the takeover will change it); what does not run yet is noted.
func (p *Plan) verifyPatched(ctx context.Context, c client.Client, lives map[string]*unstructured.Unstructured) error {
	for _, obj := range p.Objects {
		live := lives[key(obj)]
		if live == nil {
			continue
		}
		ops, _, err := specDiff(ctx, c, obj, live)
		if err != nil {
			return err
		}
		for _, o := range ops {
			p.Unexpressed = append(p.Unexpressed, fmt.Sprintf("%s: %s: the patched rendering still differs (the takeover will change it)", kube.Ref(obj), describeOp(o)))
		}
	}
	for _, obj := range p.Objects {
		if patchable(obj, p.Install.Namespace) && lives[key(obj)] == nil {
			p.Notes = append(p.Notes, fmt.Sprintf("%s does not exist yet: the takeover creates it", kube.Ref(obj)))
		}
	}
	return nil
}

func planFromRecord(ctx context.Context, c client.Client, in *Install, rel *distribution.Release) (*Plan, error) {
	p := &Plan{Install: in, Instance: in.Record.Instance}
	var err error
	if p.Objects, err = RenderInstance(p.Instance, rel); err != nil {
		return nil, err
	}
	p.Notes = append(p.Notes, fmt.Sprintf("a migration of namespace %q was started at %s (%s): continuing with the FluxInstance it recorded", in.Namespace, in.Record.StartedAt, in.Record.State))
	if err := p.collectFluxObjects(ctx, c); err != nil {
		return nil, err
	}
	// The record also lists what it protected: keep them in the set even if the inventory moved.
	for _, id := range in.Record.Objects {
		p.addFluxObject(id.ID, id.Version)
	}
	return p, nil
}

func key(u *unstructured.Unstructured) string {
	return kube.Ref(u)
}

// specDiff returns the operations that turn the rendered object's spec, as the API server would
// store it, into the live one's. For the sync source, a branch or tag ref that the rendering
// expresses as the equivalent full ref name is not a difference (it selects the same commits);
// note says so.
func specDiff(ctx context.Context, c client.Client, rendered, live *unstructured.Unstructured) ([]Op, string, error) {
	defaulted, err := dryRunDefaults(ctx, c, rendered)
	if err != nil {
		return nil, "", err
	}
	want := live.DeepCopy()
	note := ""
	if rendered.GetKind() == "GitRepository" {
		rref, _, _ := unstructured.NestedStringMap(defaulted.Object, "spec", "ref")
		lref, _, _ := unstructured.NestedStringMap(want.Object, "spec", "ref")
		if lref["name"] == "" && lref["commit"] == "" && lref["semver"] == "" {
			equivalent := ""
			switch {
			case lref["tag"] != "":
				equivalent = "refs/tags/" + lref["tag"]
			case lref["branch"] != "":
				equivalent = "refs/heads/" + lref["branch"]
			}
			if equivalent != "" && rref["name"] == equivalent {
				_ = unstructured.SetNestedStringMap(want.Object, rref, "spec", "ref")
				note = fmt.Sprintf("%s: spec.ref %v becomes spec.ref.name %s (the same commits)", kube.Ref(live), lref, equivalent)
			}
		}
	}
	from, _, _ := unstructured.NestedFieldNoCopy(defaulted.Object, "spec")
	to, _, _ := unstructured.NestedFieldNoCopy(want.Object, "spec")
	stripTemplateTimestamp(from)
	stripTemplateTimestamp(to)
	return diffOps(from, to, "/spec"), note, nil
}

func stripTemplateTimestamp(spec any) {
	if m, ok := spec.(map[string]any); ok {
		if t, ok := m["template"].(map[string]any); ok {
			if md, ok := t["metadata"].(map[string]any); ok {
				delete(md, "creationTimestamp")
			}
		}
	}
}

// dryRunDefaults returns obj as the API server would store it, by a server-side dry-run create
// of a copy under another name (nothing is persisted, the live object is not touched).
func dryRunDefaults(ctx context.Context, c client.Client, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	cp := &unstructured.Unstructured{Object: map[string]any{}}
	for k, v := range obj.DeepCopy().Object {
		if k != "metadata" && k != "status" {
			cp.Object[k] = v
		}
	}
	name := obj.GetName()
	if len(name)+len(dryRunSuffix) > 63 {
		name = name[:63-len(dryRunSuffix)]
	}
	cp.SetName(name + dryRunSuffix)
	cp.SetNamespace(obj.GetNamespace())
	cp.SetLabels(obj.GetLabels())
	if err := c.Create(ctx, cp, client.DryRunAll); err != nil {
		return nil, fmt.Errorf("server-side dry-run create of a copy of %s (to learn the API server's defaults): %w", kube.Ref(obj), err)
	}
	return cp, nil
}

// collectFluxObjects lists what verification checks: every rendered object and every entry of
// the bootstrap Kustomization's inventory that is a Flux object (labelled part-of=flux and
// instance=<namespace>, or the sync objects). Only metadata is read.
func (p *Plan) collectFluxObjects(ctx context.Context, c client.Client) error {
	in := p.Install
	p.Versions = map[object.ObjMetadata]string{}
	rendered := object.UnstructuredSetToObjMetadataSet(p.Objects)
	for i, id := range rendered {
		p.addFluxObject(id.String(), p.Objects[i].GroupVersionKind().Version)
	}
	if in.Installer == installation.ManagedByFluxInstall && in.Record == nil {
		if err := p.noteUnrendered(ctx, c, rendered); err != nil {
			return err
		}
	}
	if in.Installer == installation.ManagedByHelm && in.Record == nil {
		p.noteHelmUnrendered(rendered)
	}
	if in.Kustomization == nil {
		return nil
	}
	entries, _, _ := unstructured.NestedSlice(in.Kustomization.Object, "status", "inventory", "entries")
	for _, e := range entries {
		m, _ := e.(map[string]any)
		idStr, _ := m["id"].(string)
		version, _ := m["v"].(string)
		id, err := object.ParseObjMetadata(idStr)
		if err != nil || rendered.Contains(id) {
			continue
		}
		if id.GroupKind.Kind == "Secret" && id.GroupKind.Group == "" {
			continue // never read Secrets; bootstrap's are not in Git anyway
		}
		meta := &metav1.PartialObjectMetadata{}
		meta.SetGroupVersionKind(schema.GroupVersionKind{Group: id.GroupKind.Group, Version: version, Kind: id.GroupKind.Kind})
		if err := c.Get(ctx, client.ObjectKey{Namespace: id.Namespace, Name: id.Name}, meta); err != nil {
			if client.IgnoreNotFound(err) == nil {
				continue
			}
			return fmt.Errorf("reading %s from Kustomization %s/%s's inventory: %w", kube.RefMeta(id), in.Namespace, in.Namespace, err)
		}
		l := meta.GetLabels()
		if l[render.LabelPartOf] == "flux" && l[render.LabelInstance] == in.Namespace {
			p.Protect = append(p.Protect, id)
			p.addFluxObject(idStr, version)
		}
	}
	sort.Slice(p.Protect, func(i, j int) bool { return p.Protect[i].String() < p.Protect[j].String() })
	return nil
}

// installKinds are the kinds of the objects `flux install` creates, besides the Deployments and
// NetworkPolicies detection reads.
var installKinds = []schema.GroupVersionKind{
	{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"},
	{Version: "v1", Kind: "Namespace"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRoleBinding"},
	{Version: "v1", Kind: "ResourceQuota"},
	{Version: "v1", Kind: "ServiceAccount"},
	{Version: "v1", Kind: "Service"},
}

// noteUnrendered notes the live objects of a `flux install` (labelled part-of=flux and
// instance=<namespace>) that the FluxInstance does not render: nothing deletes them (they carry
// no owner labels), but they stay with their installer and the FluxInstance will not manage them.
func (p *Plan) noteUnrendered(ctx context.Context, c client.Client, rendered object.ObjMetadataSet) error {
	var kept []string
	for _, gvk := range installKinds {
		var list metav1.PartialObjectMetadataList
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := c.List(ctx, &list, client.MatchingLabels{render.LabelPartOf: "flux", render.LabelInstance: p.Install.Namespace}); err != nil {
			return fmt.Errorf("listing %s labelled %s=flux: %w", gvk.Kind, render.LabelPartOf, err)
		}
		for _, m := range list.Items {
			id := object.ObjMetadata{Namespace: m.Namespace, Name: m.Name, GroupKind: gvk.GroupKind()}
			if !rendered.Contains(id) {
				kept = append(kept, kube.RefMeta(id))
			}
		}
	}
	if len(kept) > 0 {
		p.Notes = append(p.Notes, fmt.Sprintf("kept as they are, not rendered by the FluxInstance (nothing deletes them; delete them yourself once unused): %s", strings.Join(kept, ", ")))
	}
	return nil
}

func (p *Plan) addFluxObject(idStr, version string) {
	id, err := object.ParseObjMetadata(idStr)
	if err != nil {
		return
	}
	if p.Versions == nil {
		p.Versions = map[object.ObjMetadata]string{}
	}
	if _, ok := p.Versions[id]; ok {
		return
	}
	p.Versions[id] = version
	p.FluxObjects = append(p.FluxObjects, id)
}

// InstanceYAML is the generated FluxInstance as YAML (without status).
func InstanceYAML(inst *fluxinstance.FluxInstance) ([]byte, error) {
	data, err := json.Marshal(inst)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	delete(m, "status")
	if md, ok := m["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	return yaml.Marshal(m)
}

// summary is what detection found, in words: the first lines of the plan.
func (in *Install) summary() []string {
	var out []string
	head := fmt.Sprintf("Flux %s installed by `%s` in namespace %q", in.Version, in.Installer, in.Namespace)
	if in.KustomizeControllerVersion != "" {
		head += fmt.Sprintf(" (kustomize-controller %s)", in.KustomizeControllerVersion)
	}
	out = append(out, head)
	if rel := in.Helm; rel != nil && rel.Chart != "" {
		out = append(out, "  Helm release: "+rel.Summary())
		if len(rel.ValuesSet) > 0 {
			out = append(out, "  values set: "+strings.Join(rel.ValuesSet, ", ")+" (what they changed is read from the running objects below)")
		}
	}
	out = append(out, fmt.Sprintf("  components: %s", strings.Join(in.Components, ", ")))
	reg := in.Registry
	if in.Variant != "" {
		reg += " (variant " + in.Variant + ")"
	}
	out = append(out, "  registry: "+reg)
	if in.ImagePullSecret != "" {
		out = append(out, "  image pull secret: "+in.ImagePullSecret)
	}
	out = append(out, fmt.Sprintf("  network policies: %t, cluster domain: %s", in.NetworkPolicy, in.Domain))
	if s := in.Sync; s != nil {
		out = append(out, fmt.Sprintf("  sync: %s %s ref %s path %s interval %s", s.Kind, s.URL, s.Ref, s.Path, s.Interval))
	}
	return out
}

// Summary is the plan in words, one line each, for stderr.
func (p *Plan) Summary() []string {
	in := p.Install
	out := in.summary()
	if len(p.Patches) == 0 {
		out = append(out, "Patches: none (the rendering matches the running controllers)")
	} else {
		out = append(out, "Patches (spec.kustomize.patches) that keep the running configuration (remove those of images, args and version labels when you upgrade spec.distribution.version: they would keep the old release's controllers):")
		for _, pn := range p.Patches {
			out = append(out, "  "+pn.Object+":")
			for _, c := range pn.Changes {
				out = append(out, "    - "+c)
			}
		}
	}
	for _, n := range p.Notes {
		out = append(out, "Note: "+n)
	}
	if len(p.Protect) > 0 {
		out = append(out, "Kept but not rendered by the FluxInstance (protected from pruning, no longer managed):")
		for _, id := range p.Protect {
			out = append(out, "  "+kube.RefMeta(id))
		}
	}
	if len(p.Unexpressed) == 0 {
		out = append(out, "Not expressible: nothing (the patched rendering equals the running controllers and sync objects)")
	} else {
		out = append(out, "Not expressible (the takeover will change these):")
		for _, u := range p.Unexpressed {
			out = append(out, "  "+u)
		}
	}
	if in.Installer == installation.ManagedByHelm {
		return append(out, p.helmSummary()...)
	}
	if in.Installer == installation.ManagedByFluxInstall {
		out = append(out, fmt.Sprintf("Takeover: %d Flux objects get %s: Ignore and %s: Disabled, lose kubectl's %s annotation, and their flux/kubectl field managers move to %s; CRDs, RBAC and Services take the Flux Operator's rendering (no pod restarts).",
			len(p.FluxObjects), render.AnnotationKustomizeSSA, render.AnnotationKustomizePrune, ownership.AnnotationLastApplied, ownership.PluginFieldManager))
		return out
	}
	out = append(out, fmt.Sprintf("Takeover: %d Flux objects get %s: Ignore and %s: Disabled, lose the %s|namespace labels, and their kustomize-controller/flux field managers move to %s; CRDs, RBAC and Services take the Flux Operator's rendering (no pod restarts).",
		len(p.FluxObjects), render.AnnotationKustomizeSSA, render.AnnotationKustomizePrune, ownership.LabelKustomizeName, ownership.PluginFieldManager))
	return out
}
