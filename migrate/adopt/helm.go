package adopt

// Adopting a Flux installed by the Flux community Helm chart. The plan and the takeover are the
// other installers' (the chart's controllers are compared with the rendering, every difference
// becomes a patch); what is Helm's own is here: reading the release, the managing HelmRelease
// suspended before anything moves, the proof that no object is Helm's any more, and the release
// records set aside last (migrate/helmstorage), so that `helm uninstall` finds nothing to delete.

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/object"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/helmstorage"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/installation"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/fluxinstance/kubectl-fluxinstance/render"
)

// helmReleaseDeployed is the only release status the takeover starts from: a pending or failed
// release is in the middle of a change Helm may still finish or roll back.
const helmReleaseDeployed = "deployed"

// detectHelmRelease reads the release that installed Flux (named by ref's Helm annotations) and
// refuses what the takeover cannot do safely. A migration that started already works from its
// record: by then the objects may have lost their Helm annotations and the records be set aside.
func detectHelmRelease(ctx context.Context, c client.Client, in *Install, ref *appsv1.Deployment) error {
	if r := in.Record; r != nil && r.Helm != nil {
		in.Helm = r.Helm.release()
		return nil
	}
	rel, err := installation.DetectHelm(ctx, c, ref)
	if err != nil {
		return err
	}
	ns := in.Namespace
	switch {
	case rel == nil:
		return refuse("Deployment %s/%s is labelled %s=Helm but has no %s annotation: cannot tell which Helm release installed Flux", ns, ref.Name, render.LabelManagedBy, ownership.AnnotationHelmReleaseName)
	case rel.Unread != "":
		return refuse("the Helm release %s/%s that installed Flux in namespace %q cannot be read (%s): migrate reads its record to know what the release owns and sets the records aside last; run it as a user who may read them", rel.Namespace, rel.Name, ns, rel.Unread)
	case rel.Status != helmReleaseDeployed:
		return refuse("the Helm release %s/%s that installed Flux in namespace %q is %s, not deployed: finish or roll back that change with helm first (`helm history %s -n %s`, `helm rollback`)", rel.Namespace, rel.Name, ns, rel.Status, rel.Name, rel.Namespace)
	case rel.ManagedBy != nil && rel.ManagedBy.Unread != "":
		return refuse("the HelmRelease %s/%s that manages the Helm release of Flux cannot be read (%s): migrate must suspend it before the takeover", rel.ManagedBy.Namespace, rel.ManagedBy.Name, rel.ManagedBy.Unread)
	}
	objects, err := newManifestSet(rel, c.RESTMapper())
	if err != nil {
		return refuse("%v: migrate lists what the release installed from it", err)
	}
	in.Helm, in.helmObjects = rel, objects
	return nil
}

// storageOf is where the release's records are.
func storageOf(rel *installation.HelmRelease) helmstorage.Release {
	return helmstorage.Release{Name: rel.Name, StorageNamespace: rel.StorageNamespace()}
}

// manifestSet is the release's objects by group, kind, namespace and name; a namespaced object
// without a namespace in its template is in the release's namespace.
type manifestSet map[object.ObjMetadata]bool

func newManifestSet(rel *installation.HelmRelease, mapper meta.RESTMapper) (manifestSet, error) {
	objs, err := rel.ManifestObjects()
	if err != nil {
		return nil, err
	}
	set := manifestSet{}
	for _, o := range objs {
		gv, err := schema.ParseGroupVersion(o.APIVersion)
		if err != nil {
			return nil, fmt.Errorf("Helm release %s/%s: %s %s: %w", rel.Namespace, rel.Name, o.Kind, o.Name, err)
		}
		id := object.ObjMetadata{GroupKind: schema.GroupKind{Group: gv.Group, Kind: o.Kind}, Name: o.Name, Namespace: o.Namespace}
		if id.Namespace == "" {
			id.Namespace = rel.Namespace
			if m, err := mapper.RESTMapping(id.GroupKind, gv.Version); err == nil && m.Scope.Name() == meta.RESTScopeNameRoot {
				id.Namespace = ""
			}
		}
		set[id] = true
	}
	return set, nil
}

// noteHelmUnrendered notes the release's objects that the FluxInstance does not render: once the
// records are set aside no release lists them, and nothing deletes them.
func (p *Plan) noteHelmUnrendered(rendered object.ObjMetadataSet) {
	var kept []string
	for id := range p.Install.helmObjects {
		if !rendered.Contains(id) {
			kept = append(kept, kube.RefMeta(id))
		}
	}
	slices.Sort(kept)
	if len(kept) > 0 {
		p.Notes = append(p.Notes, fmt.Sprintf("kept as they are, not rendered by the FluxInstance (once the release records are set aside no Helm release lists them and nothing deletes them; delete them yourself once unused): %s", strings.Join(kept, ", ")))
	}
}

// helmSummary is what the plan says of the release: what moves, what the user removes.
func (p *Plan) helmSummary() []string {
	rel := p.Install.Helm
	st := storageOf(rel)
	out := []string{fmt.Sprintf("Takeover: %d Flux objects get %s: Ignore and %s: Disabled, lose Helm's %s|namespace annotations and %s=Helm label (and helm-controller's %s|namespace labels), and the `helm` field manager moves to %s; CRDs, RBAC and Services take the Flux Operator's rendering (no pod restarts).",
		len(p.FluxObjects), render.AnnotationKustomizeSSA, render.AnnotationKustomizePrune, ownership.AnnotationHelmReleaseName, render.LabelManagedBy, ownership.LabelHelmName, ownership.PluginFieldManager)}
	if m := rel.ManagedBy; m != nil && m.Found && !m.Suspended {
		out = append(out, fmt.Sprintf("First, HelmRelease %s/%s, whose helm-controller runs the release, is suspended (spec.suspend: true), so that it changes nothing meanwhile.", m.Namespace, m.Name))
	}
	out = append(out, fmt.Sprintf("Last, once every object is verified, the records of Helm release %s (in %s) are set aside as %s<record> copies: `helm uninstall`, `helm upgrade` and helm-controller then find no release and change nothing; --rollback restores them.",
		rel.Name, st.StorageNamespace, ownership.PluginName+"."))
	return append(out, "Then, on your side (printed again once verified): "+strings.TrimPrefix(helmNextStep(p), "Next step: "))
}

// helmNextStep is what a Helm user does once the takeover is verified.
func helmNextStep(p *Plan) string {
	rel := p.Install.Helm
	name := rel.Name
	if rel.Chart != "" { // a resumed migration knows the release from its record, without the chart
		name += " (chart " + rel.Chart + "-" + rel.ChartVersion + ")"
	}
	step := fmt.Sprintf("Next step: keep the FluxInstance (commit it where you keep your cluster's configuration) and manage Flux with `kubectl fluxinstance apply -f` from now on. "+
		"Remove the release %s from what installs it: the `helm upgrade --install %s` step of your pipeline, or Terraform's helm_release for it (`terraform state rm` it first, so that Terraform does not uninstall it). "+
		"Were it to run again, it would find no release and try a new install, which fails on the existing objects without changing them.", name, rel.Name)
	if m := rel.ManagedBy; m != nil && m.Found {
		step += fmt.Sprintf(" Delete HelmRelease %s/%s from Git while it is suspended: helm-controller finds no release to uninstall.", m.Namespace, m.Name)
	}
	return step
}

// suspendHelmRelease suspends the HelmRelease that runs the release, when one does and was not
// suspended before the migration, and records that it did (rollback resumes it): the record is
// written first, and a resumed migration suspends it again.
func suspendHelmRelease(ctx context.Context, c client.Client, rec *Record, rel *installation.HelmRelease) error {
	if m := rel.ManagedBy; rec.Helm.SuspendedHelmRelease == "" && m != nil && m.Found && !m.Suspended {
		rec.Helm.SuspendedHelmRelease = m.Namespace + "/" + m.Name
		if err := writeRecord(ctx, c, rec); err != nil {
			return err
		}
	}
	if hr := rec.Helm.SuspendedHelmRelease; hr != "" {
		ns, name, _ := strings.Cut(hr, "/")
		return setSuspend(ctx, c, ns, name, true)
	}
	return nil
}

func setSuspend(ctx context.Context, c client.Client, namespace, name string, suspend bool) error {
	hr := &unstructured.Unstructured{}
	hr.SetGroupVersionKind(installation.FluxHelmReleaseGVK)
	hr.SetNamespace(namespace)
	hr.SetName(name)
	var patch []byte
	if suspend {
		patch = []byte(`{"spec":{"suspend":true}}`)
	} else {
		patch = []byte(`{"spec":{"suspend":null}}`)
	}
	err := c.Patch(ctx, hr, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(ownership.PluginFieldManager))
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("HelmRelease %s/%s: setting spec.suspend to %t: %w", namespace, name, suspend, err)
	}
	return nil
}

// NotReleasedError lists Flux objects that still carry Helm's ownership after the takeover.
type NotReleasedError struct{ Objects []string }

func (e *NotReleasedError) Error() string {
	return fmt.Sprintf("verification failed: %d Flux object(s) still carry Helm's ownership (its annotations, label or helm-controller's labels): %s; the release records were NOT set aside: run migrate again",
		len(e.Objects), strings.Join(e.Objects, ", "))
}

// verifyReleased reads every Flux object of the plan back and fails unless none is Helm's (one
// that is missing is Verify's to report).
func verifyReleased(ctx context.Context, c client.Client, p *Plan) error {
	var held []string
	err := readFluxObjects(ctx, c, p, func(id object.ObjMetadata, live *metav1.PartialObjectMetadata) {
		if live != nil && ownership.HeldByHelm(live) {
			held = append(held, kube.RefMeta(id))
		}
	})
	if err != nil {
		return err
	}
	if len(held) > 0 {
		return &NotReleasedError{Objects: held}
	}
	return nil
}

// releaseHelm is the Helm takeover's last step: once no object is Helm's any more, the release's
// records are set aside (what it returns), so that Helm finds no release.
func releaseHelm(ctx context.Context, c client.Client, p *Plan, rec *RecordedHelm) ([]string, error) {
	if err := verifyReleased(ctx, c, p); err != nil {
		return nil, err
	}
	return helmstorage.SetAside(ctx, c, helmstorage.Release{Name: rec.Name, StorageNamespace: rec.StorageNamespace})
}

// releaseSetAside tells whether Helm no longer sees any record of the release.
func releaseSetAside(ctx context.Context, c client.Client, rel *installation.HelmRelease) (bool, error) {
	records, err := helmstorage.Records(ctx, c, storageOf(rel))
	return len(records) == 0, err
}

// helmRollbackOwners restores the release: its records first, then, for every object its
// manifest lists, Helm's annotations and label (and helm-controller's labels when a HelmRelease
// ran it), with the fields back to the `helm` manager (`helm-controller` when a HelmRelease ran
// it). Objects the release does not list get their fields back only.
func helmRollbackOwners(ctx context.Context, c client.Client, rec *Record) (func(object.ObjMetadata) rollbackOwner, []string, error) {
	st := helmstorage.Release{Name: rec.Helm.Name, StorageNamespace: rec.Helm.StorageNamespace}
	restored, err := helmstorage.Restore(ctx, c, st)
	if err != nil {
		return nil, restored, err
	}
	rel, err := helmstorage.Latest(ctx, c, st)
	if err != nil {
		return nil, restored, err
	}
	rel.Namespace = rec.Helm.Namespace
	set, err := newManifestSet(rel, c.RESTMapper())
	if err != nil {
		return nil, restored, err
	}
	labels := map[string]string{render.LabelManagedBy: ownership.ManagedByHelmValue}
	manager := ownership.HelmFieldManager
	if hr := rec.Helm.ManagedBy; hr != "" {
		ns, name, _ := strings.Cut(hr, "/")
		labels[ownership.LabelHelmName], labels[ownership.LabelHelmNamespace] = name, ns
		manager = ownership.HelmControllerFieldManager
	}
	annotations := map[string]string{ownership.AnnotationHelmReleaseName: rec.Helm.Name, ownership.AnnotationHelmReleaseNamespace: rec.Helm.Namespace}
	return func(id object.ObjMetadata) rollbackOwner {
		if !set[id] {
			return rollbackOwner{manager: manager}
		}
		return rollbackOwner{manager: manager, labels: labels, annotations: annotations}
	}, restored, nil
}
