// Package adopt adopts a Flux installation made by `flux bootstrap`, by `flux install` or by the
// Flux community Helm chart: it detects it, plans the FluxInstance that reproduces it (patches
// included), takes the objects over from kustomize-controller, the Flux CLI (or kubectl) or Helm
// without deleting or restarting anything, verifies that their previous owner can no longer
// delete them, and rolls back on request.
//
// The three installers share this package because everything but detection is the same: planning
// compares the running controllers with the rendering of the same Flux version (server defaults
// learnt by dry run, differences turned into patches), and the migration record, the takeover, the
// verification and resuming are one code path. Install.Installer tells the few places that differ:
// the kustomize-controller checks before the takeover (only a bootstrap has a pending prune), the
// optional sync objects, Helm's own steps (helm.go: the managing HelmRelease suspended first, the
// release records set aside last), the next step, and whom --rollback gives the objects back to
// (kustomize-controller, the `flux` field manager, or the Helm release).
package adopt

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/blang/semver/v4"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/installation"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/fluxinstance/kubectl-fluxinstance/render"
	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
)

// Minimum versions: kustomize-controller honours `kustomize.toolkit.fluxcd.io/ssa: Ignore` from
// v1.1.0, and the distribution data (and so the renderer) starts at Flux 2.2.
var (
	minFlux              = semver.MustParse("2.2.0")
	minKustomizeCtrl     = semver.MustParse("1.1.0")
	kustomizationGVK     = schema.GroupVersionKind{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Kind: "Kustomization"}
	sourceGroup          = "source.toolkit.fluxcd.io"
	syncSourceKinds      = []string{"GitRepository", "OCIRepository", "Bucket"}
	syncSourceVersions   = []string{"v1", "v1beta2"}
	crdListGVK           = schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinitionList"}
	errNoBootstrapPrefix = "no Flux installation made by `flux bootstrap`, `flux install` or Helm was found"
)

// Install is a Flux installation made by `flux bootstrap`, `flux install` or Helm, as read from
// the cluster.
type Install struct {
	// Installer is installation.ManagedByBootstrap, ManagedByFluxInstall or ManagedByHelm.
	Installer string
	// Namespace where the controllers run; also the name of the sync source and Kustomization.
	Namespace string
	// Version is the Flux version (vX.Y.Z) from the app.kubernetes.io/version labels.
	Version string
	// KustomizeControllerVersion is the tag of kustomize-controller's image.
	KustomizeControllerVersion string
	Components                 []string
	Registry                   string
	Variant                    string
	ImagePullSecret            string
	NetworkPolicy              bool
	Domain                     string
	// Sync is the FluxInstance's spec.sync; the fields it cannot hold become patches in the plan.
	// nil for a `flux install` without hand-written sync objects.
	Sync *fluxinstance.Sync
	// Source and Kustomization are the live sync objects (nil when Sync is).
	Source        *unstructured.Unstructured
	Kustomization *unstructured.Unstructured
	// Deployments are the live controller Deployments (all part-of=flux Deployments in Namespace).
	Deployments []appsv1.Deployment
	// Helm is the release that installed Flux, for installation.ManagedByHelm (from its latest
	// record; from the migration record once the takeover set the records aside).
	Helm *installation.HelmRelease
	// helmObjects are the objects of Helm's release manifest, parsed once at detection (not
	// known to a resumed migration, whose plan comes from its record).
	helmObjects manifestSet
	// Record is the migration record when a migration already started here (then the install
	// may have lost its kustomize-controller labels).
	Record *Record
	// Notes are facts detection inferred that the user should know.
	Notes []string
}

// RefusalError is a detected state in which migrate must not proceed; the message says why and
// what to do.
type RefusalError struct{ Reason string }

func (e *RefusalError) Error() string { return e.Reason }

func refuse(format string, args ...any) error {
	return &RefusalError{Reason: fmt.Sprintf(format, args...)}
}

// candidate is what the cluster-wide lists say about one namespace.
type candidate struct {
	ns          string
	deployments []appsv1.Deployment
	bootstrap   bool // kustomize-controller's owner labels on the Deployments
	fluxInstall bool // no owner labels, no managed-by: the Flux CLI's (or kubectl's) objects
	helm        bool // app.kubernetes.io/managed-by: Helm
	owner       string
	managedBy   string
	record      *Record
}

// Detect finds the `flux bootstrap` installation to migrate with a handful of cluster-wide list
// calls (one per kind, whatever the number of namespaces). namespace narrows the search (-n); ""
// searches everywhere and requires exactly one installation.
func Detect(ctx context.Context, c client.Client, namespace string) (*Install, error) {
	var deps appsv1.DeploymentList
	if err := c.List(ctx, &deps, client.MatchingLabels{render.LabelPartOf: "flux"}); err != nil {
		return nil, fmt.Errorf("listing Flux Deployments (label %s=flux) in all namespaces: %w", render.LabelPartOf, err)
	}
	records, err := listRecords(ctx, c)
	if err != nil {
		return nil, err
	}
	byNS := candidates(deps.Items, records)

	var names []string
	for ns := range byNS {
		names = append(names, ns)
	}
	sort.Strings(names)
	var found []*candidate
	var others []string
	for _, ns := range names {
		cand := byNS[ns]
		if namespace != "" && ns != namespace {
			if cand.adoptable() {
				others = append(others, ns)
			}
			continue
		}
		switch {
		case cand.adoptable():
			found = append(found, cand)
		case namespace != "" && len(cand.deployments) > 0:
			return nil, refuseNotBootstrap(cand)
		}
	}
	switch {
	case len(found) == 0 && namespace != "" && len(others) > 0:
		return nil, refuse("%s in namespace %q; found one in %s: pass -n %s", errNoBootstrapPrefix, namespace, strings.Join(others, ", "), others[0])
	case len(found) == 0 && namespace != "":
		return nil, refuse("%s in namespace %q (no Deployment labelled %s=flux there)", errNoBootstrapPrefix, namespace, render.LabelPartOf)
	case len(found) == 0 && len(names) == 1:
		return nil, refuseNotBootstrap(byNS[names[0]])
	case len(found) == 0:
		var seen []string
		for _, ns := range names {
			seen = append(seen, fmt.Sprintf("%s (%s)", ns, describeManager(byNS[ns])))
		}
		if len(seen) > 0 {
			return nil, refuse("%s: the Flux installations in this cluster were made otherwise: %s", errNoBootstrapPrefix, strings.Join(seen, ", "))
		}
		return nil, refuse("%s: no Deployment labelled %s=flux in any namespace", errNoBootstrapPrefix, render.LabelPartOf)
	case len(found) > 1:
		var list []string
		for _, f := range found {
			list = append(list, f.ns)
		}
		return nil, refuse("found %d Flux installations made by `flux bootstrap`, `flux install` or Helm, in namespaces %s: pass -n NAMESPACE to choose one", len(found), strings.Join(list, ", "))
	}
	return inspect(ctx, c, found[0])
}

// candidates groups the Flux Deployments and the migration records by namespace and classifies
// each namespace's installer from the Deployments' labels and field managers.
func candidates(deps []appsv1.Deployment, records []Record) map[string]*candidate {
	byNS := map[string]*candidate{}
	get := func(ns string) *candidate {
		if byNS[ns] == nil {
			byNS[ns] = &candidate{ns: ns}
		}
		return byNS[ns]
	}
	for _, d := range deps {
		cand := get(d.Namespace)
		cand.deployments = append(cand.deployments, d)
		l := d.Labels
		if l[ownership.LabelKustomizeName] != "" {
			cand.bootstrap = true
			cand.owner = l[ownership.LabelKustomizeNamespace] + "/" + l[ownership.LabelKustomizeName]
		}
		if m := l[render.LabelManagedBy]; m != "" {
			cand.managedBy = m
		}
	}
	for _, cand := range byNS {
		cand.fluxInstall = !cand.bootstrap && cand.managedBy == "" && installedByCLI(cand.deployments)
		cand.helm = !cand.bootstrap && cand.managedBy == ownership.ManagedByHelmValue
	}
	for i := range records {
		get(records[i].Namespace).record = &records[i]
	}
	return byNS
}

// adoptable: an installation migrate adopts, or one whose migration started.
func (c *candidate) adoptable() bool {
	return c.record != nil || c.bootstrap || c.fluxInstall || c.helm
}

func describeManager(c *candidate) string {
	switch {
	case c.managedBy == render.ManagedByValue:
		if ownedBy(c.deployments, ownership.PluginFieldManager) {
			return "managed by kubectl-fluxinstance"
		}
		return "managed by the Flux Operator"
	case c.managedBy == ownership.ManagedByHelmValue:
		return "installed with Helm"
	case c.managedBy != "":
		return "managed by " + c.managedBy
	}
	return "written by another tool"
}

func refuseNotBootstrap(c *candidate) error {
	switch {
	case c.managedBy == render.ManagedByValue && ownedBy(c.deployments, ownership.PluginFieldManager):
		return refuse("Flux in namespace %q is already managed by this plugin (applied with `kubectl fluxinstance apply`): there is nothing to migrate", c.ns)
	case c.managedBy == render.ManagedByValue:
		return refuse("Flux in namespace %q is already managed by the Flux Operator (app.kubernetes.io/managed-by=flux-operator): there is nothing to migrate", c.ns)
	}
	return refuse("%s in namespace %q: its Deployments labelled %s=flux are %s (neither kustomize-controller's %s label, as on bootstrapped objects, nor a Flux controller written by the flux or kubectl field managers, as by `flux install`)",
		errNoBootstrapPrefix, c.ns, render.LabelPartOf, describeManager(c), ownership.LabelKustomizeName)
}

// installedByCLI tells a `flux install` from other Deployments labelled part-of=flux: one of them
// is a Flux controller whose fields were written by a manager the takeover moves (the Flux CLI's
// `flux`, or kubectl's client- or server-side apply).
func installedByCLI(deps []appsv1.Deployment) bool {
	for _, d := range deps {
		if !slices.Contains(fluxinstance.AllComponents, d.Name) {
			continue
		}
		for _, f := range d.ManagedFields {
			if ownership.IsTakeover(f) {
				return true
			}
		}
	}
	return false
}

func ownedBy(deps []appsv1.Deployment, manager string) bool {
	for _, d := range deps {
		for _, f := range d.ManagedFields {
			if f.Manager == manager && f.Operation == metav1.ManagedFieldsOperationApply {
				return true
			}
		}
	}
	return false
}

// inspect reads everything about the one candidate and applies the refusal rules.
func inspect(ctx context.Context, c client.Client, cand *candidate) (*Install, error) {
	ns := cand.ns
	in := &Install{Namespace: ns, Record: cand.record, Installer: installation.ManagedByBootstrap}
	switch {
	case cand.record != nil:
		in.Installer = cand.record.installer()
	case cand.managedBy == render.ManagedByValue:
		return nil, refuseNotBootstrap(cand)
	case cand.fluxInstall:
		in.Installer = installation.ManagedByFluxInstall
	case cand.helm:
		in.Installer = installation.ManagedByHelm
	case cand.owner != ns+"/"+ns:
		return nil, refuse("the Flux Deployments in namespace %q are applied by the Kustomization %s, not by a Kustomization named after the namespace as `flux bootstrap` creates it: migrate only adopts bootstrap layouts", ns, cand.owner)
	}
	sort.Slice(cand.deployments, func(i, j int) bool { return cand.deployments[i].Name < cand.deployments[j].Name })
	in.Deployments = cand.deployments
	for _, d := range cand.deployments {
		if slices.Contains(fluxinstance.AllComponents, d.Name) {
			in.Components = append(in.Components, d.Name)
		}
	}
	sortComponents(in.Components)
	ref, err := referenceDeployment(in)
	if err != nil {
		return nil, err
	}
	if err := readVersions(in, ref); err != nil {
		return nil, err
	}
	if in.Installer == installation.ManagedByHelm {
		if err := detectHelmRelease(ctx, c, in, ref); err != nil {
			return nil, err
		}
	}
	if s := ref.Spec.Template.Spec.ImagePullSecrets; len(s) > 0 {
		in.ImagePullSecret = s[0].Name
	}
	in.Domain = clusterDomain(cand.deployments)

	var pols networkingv1.NetworkPolicyList
	if err := c.List(ctx, &pols, client.InNamespace(ns), client.MatchingLabels{render.LabelPartOf: "flux"}); err != nil {
		return nil, fmt.Errorf("listing NetworkPolicies in %s: %w", ns, err)
	}
	in.NetworkPolicy = len(pols.Items) > 0

	if err := detectSync(ctx, c, in); err != nil {
		return nil, err
	}
	if in.Record == nil && in.Installer == installation.ManagedByBootstrap {
		if err := checkNoPendingPrune(ctx, c, in); err != nil {
			return nil, err
		}
	}
	return in, nil
}

// referenceDeployment is the Deployment whose labels and image tell the version and registry:
// kustomize-controller, which `flux bootstrap` always installs; a `flux install` may leave it out
// (--components), and then its first component speaks for all.
func referenceDeployment(in *Install) (*appsv1.Deployment, error) {
	for i := range in.Deployments {
		if in.Deployments[i].Name == fluxinstance.KustomizeController {
			return &in.Deployments[i], nil
		}
	}
	if in.Installer == installation.ManagedByBootstrap {
		return nil, refuse("namespace %q has Flux Deployments but no kustomize-controller: a `flux bootstrap` installation always has one", in.Namespace)
	}
	for i := range in.Deployments {
		if len(in.Components) > 0 && in.Deployments[i].Name == in.Components[0] {
			return &in.Deployments[i], nil
		}
	}
	return nil, refuse("namespace %q has Deployments labelled %s=flux but none of the Flux controllers (%s)", in.Namespace, render.LabelPartOf, strings.Join(fluxinstance.AllComponents, ", "))
}

// readVersions reads the Flux version from ref's label and the registry and kustomize-controller
// version from its image, refusing versions the takeover cannot rely on.
func readVersions(in *Install, ref *appsv1.Deployment) error {
	ns := in.Namespace
	in.Version = ref.Labels[render.LabelVersion]
	v, err := fluxinstance.ParseVersion(in.Version)
	if err != nil {
		return refuse("Deployment %s/%s has no valid %s label (%q): cannot tell the Flux version", ns, ref.Name, render.LabelVersion, in.Version)
	}
	in.Version = "v" + v.String()
	if v.LT(minFlux) {
		return refuse("Flux %s in namespace %q is older than v2.2.0: upgrade it with `%s` first (the distribution data and kustomize-controller's ssa: Ignore support start there)", in.Version, ns, upgradeCommand(in.Installer))
	}
	mgr := managerContainer(ref.Spec.Template.Spec.Containers)
	if mgr == nil {
		return refuse("Deployment %s/%s has no container", ns, ref.Name)
	}
	registry, tag := registryAndTag(mgr.Image)
	in.Registry = registry
	in.Variant = fluxinstance.VariantForRegistry(registry)
	if ref.Name != fluxinstance.KustomizeController {
		return nil
	}
	in.KustomizeControllerVersion = tag
	kv, err := semver.ParseTolerant(strings.TrimPrefix(strings.SplitN(tag, "@", 2)[0], "v"))
	switch {
	case err != nil:
		return refuse("cannot read kustomize-controller's version from its image %q: migrate needs kustomize-controller v1.1.0 or later (for the ssa: Ignore annotation)", mgr.Image)
	case kv.LT(minKustomizeCtrl):
		return refuse("kustomize-controller %s in namespace %q is older than v1.1.0 and ignores the kustomize.toolkit.fluxcd.io/ssa: Ignore annotation the takeover relies on: upgrade Flux with `%s` first", tag, ns, upgradeCommand(in.Installer))
	}
	return nil
}

func sortComponents(cs []string) {
	sort.SliceStable(cs, func(i, j int) bool {
		return slices.Index(fluxinstance.AllComponents, cs[i]) < slices.Index(fluxinstance.AllComponents, cs[j])
	})
}

func managerContainer(cs []corev1.Container) *corev1.Container {
	for i := range cs {
		if cs[i].Name == "manager" {
			return &cs[i]
		}
	}
	if len(cs) > 0 {
		return &cs[0]
	}
	return nil
}

// registryAndTag returns the registry (everything before the last path segment) and the tag, with
// "@digest" appended when the image has one.
func registryAndTag(image string) (registry, tag string) {
	repo, tag, digest := render.SplitImage(image)
	if digest != "" {
		tag += "@" + digest
	}
	if i := strings.LastIndexByte(repo, '/'); i >= 0 {
		registry = repo[:i]
	}
	return registry, tag
}

// clusterDomain reads the domain from the controllers' --events-addr or --storage-adv-addr
// (`<svc>.<ns>.svc.<domain>.`); cluster.local when neither says.
func clusterDomain(deps []appsv1.Deployment) string {
	for _, d := range deps {
		for _, ctr := range d.Spec.Template.Spec.Containers {
			for _, a := range ctr.Args {
				for _, flag := range []string{"--events-addr=", "--storage-adv-addr="} {
					if !strings.HasPrefix(a, flag) {
						continue
					}
					val := strings.TrimPrefix(a, flag)
					i := strings.Index(val, ".svc.")
					if i < 0 {
						continue
					}
					domain := val[i+len(".svc."):]
					if j := strings.IndexAny(domain, ":/"); j >= 0 {
						domain = domain[:j]
					}
					domain = strings.TrimSuffix(domain, ".")
					if domain != "" {
						return domain
					}
				}
			}
		}
	}
	return fluxinstance.DefaultDomain
}

// detectSync finds the namespace-named Kustomization and its source and maps them to spec.sync.
// A `flux install` may have none, or ones applied by another Kustomization (kustomize-controller
// owns them, so they belong to that Kustomization's Git, not to the FluxInstance): then spec.sync
// is omitted and the objects are left as they are.
func detectSync(ctx context.Context, c client.Client, in *Install) error {
	ks, err := findKustomization(ctx, c, in.Namespace)
	if err != nil {
		return err
	}
	if in.syncOptional() {
		if reason := optionalSyncSkipped(ks, in.Namespace); reason != "" {
			in.Notes = append(in.Notes, reason)
			return nil
		}
	}
	if ks == nil {
		return refuse("namespace %q has no Kustomization named %q: `flux bootstrap` creates one named after the namespace; migrate only adopts that layout", in.Namespace, in.Namespace)
	}
	in.Kustomization = ks
	src, err := readSyncSource(ctx, c, in.Namespace, ks)
	if err != nil {
		var refusal *RefusalError
		if in.syncOptional() && errors.As(err, &refusal) {
			in.Kustomization = nil
			in.Notes = append(in.Notes, fmt.Sprintf("spec.sync is omitted and Kustomization %s/%s is left as it is: %s", in.Namespace, in.Namespace, refusal.Reason))
			return nil
		}
		return err
	}
	in.Source = src
	in.Sync = syncSpec(in)
	if in.syncOptional() && appliesFlux(ks, in.Namespace) {
		in.Notes = append(in.Notes, fmt.Sprintf("Kustomization %s/%s applies Flux's own manifests from %s (its status.inventory lists them) although they carry no owner labels: "+
			"after the takeover it skips them (ssa: Ignore) and prunes none of them; remove them from that path in Git", in.Namespace, in.Namespace, in.Sync.URL))
	}
	return nil
}

// syncOptional: only `flux bootstrap` always creates the namespace-named sync objects; after
// `flux install` or a Helm install they exist when someone wrote them.
func (in *Install) syncOptional() bool { return in.Installer != installation.ManagedByBootstrap }

// upgradeCommand is how the installer upgrades Flux, for refusals that ask for it.
func upgradeCommand(installer string) string {
	if installer == installation.ManagedByHelm {
		return "helm upgrade"
	}
	return installer
}

// appliesFlux tells whether a Kustomization's last applied revision contained the Flux
// controllers or CRDs (its status.inventory lists kustomize-controller's Deployment or the
// detection CRD).
func appliesFlux(ks *unstructured.Unstructured, ns string) bool {
	entries, _, _ := unstructured.NestedSlice(ks.Object, "status", "inventory", "entries")
	for _, e := range entries {
		m, _ := e.(map[string]any)
		if id, _ := m["id"].(string); slices.Contains(fluxInventoryIDs(ns), id) {
			return true
		}
	}
	return false
}

// fluxInventoryIDs are the inventory ids of the objects that show a Kustomization applies Flux
// itself: kustomize-controller's Deployment and the CRD detection reads.
func fluxInventoryIDs(ns string) []string {
	return []string{
		ns + "_" + fluxinstance.KustomizeController + "_apps_Deployment",
		"_" + installation.FluxDetectionCRD + "_apiextensions.k8s.io_CustomResourceDefinition",
	}
}

// optionalSyncSkipped says why a `flux install`'s namespace-named Kustomization does not become
// spec.sync ("" when it does).
func optionalSyncSkipped(ks *unstructured.Unstructured, ns string) string {
	switch {
	case ks == nil:
		return fmt.Sprintf("no Kustomization %s/%s: the FluxInstance has no spec.sync (add one to sync a repository)", ns, ns)
	case ks.GetLabels()[ownership.LabelKustomizeName] != "":
		l := ks.GetLabels()
		return fmt.Sprintf("Kustomization %s/%s is applied by Kustomization %s/%s, not written by hand: spec.sync is omitted and it stays with its Git source", ns, ns,
			l[ownership.LabelKustomizeNamespace], l[ownership.LabelKustomizeName])
	}
	return ""
}

// findKustomization returns the Kustomization named after the namespace, the one `flux
// bootstrap` creates (nil when there is none).
func findKustomization(ctx context.Context, c client.Client, ns string) (*unstructured.Unstructured, error) {
	var kss unstructured.UnstructuredList
	kss.SetGroupVersionKind(kustomizationGVK.GroupVersion().WithKind("KustomizationList"))
	if err := c.List(ctx, &kss, client.InNamespace(ns)); err != nil {
		return nil, fmt.Errorf("listing Kustomizations in %s: %w", ns, err)
	}
	for i := range kss.Items {
		if kss.Items[i].GetName() == ns {
			return &kss.Items[i], nil
		}
	}
	return nil, nil
}

// readSyncSource reads the Kustomization's source, refusing one a FluxInstance's spec.sync cannot
// name (another kind, or another name than the namespace's). It tries each served version of the
// source API, newest first.
func readSyncSource(ctx context.Context, c client.Client, ns string, ks *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	kind, _, _ := unstructured.NestedString(ks.Object, "spec", "sourceRef", "kind")
	name, _, _ := unstructured.NestedString(ks.Object, "spec", "sourceRef", "name")
	srcNS, _, _ := unstructured.NestedString(ks.Object, "spec", "sourceRef", "namespace")
	if !slices.Contains(syncSourceKinds, kind) {
		return nil, refuse("Kustomization %s/%s syncs from a %s, which a FluxInstance cannot express (spec.sync.kind is one of %s)", ns, ns, kind, strings.Join(syncSourceKinds, ", "))
	}
	if name != ns || (srcNS != "" && srcNS != ns) {
		return nil, refuse("Kustomization %s/%s syncs from %s %s/%s: the FluxInstance's sync source is named after the namespace (%s/%s); rename the source in Git with `flux bootstrap` first or migrate by hand",
			ns, ns, kind, orDefault(srcNS, ns), name, ns, ns)
	}
	for _, version := range syncSourceVersions {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(schema.GroupVersionKind{Group: sourceGroup, Version: version, Kind: kind})
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, u)
		if err == nil {
			return u, nil
		}
		if apierrors.IsNotFound(err) {
			return nil, refuse("Kustomization %s/%s syncs from %s %s/%s, which does not exist", ns, ns, kind, ns, name)
		}
		if !meta.IsNoMatchError(err) && !strings.Contains(err.Error(), "no matches for kind") {
			return nil, fmt.Errorf("reading %s %s/%s: %w", kind, ns, name, err)
		}
	}
	return nil, refuse("the API server does not serve %s: the Flux CRDs are incomplete", kind)
}

// syncSpec maps the Kustomization and its source to spec.sync, noting in in.Notes what it
// cannot express.
func syncSpec(in *Install) *fluxinstance.Sync {
	ks, src := in.Kustomization, in.Source
	kind, _, _ := unstructured.NestedString(ks.Object, "spec", "sourceRef", "kind")
	sy := &fluxinstance.Sync{Kind: kind, Name: in.Namespace}
	sy.Path, _, _ = unstructured.NestedString(ks.Object, "spec", "path")
	sy.Interval = compactDuration(nestedString(src, "spec", "interval"))
	sy.PullSecret = nestedString(src, "spec", "secretRef", "name")
	sy.Provider = nestedString(src, "spec", "provider")
	if sy.Provider == "generic" {
		sy.Provider = ""
	}
	switch kind {
	case "GitRepository":
		sy.URL = nestedString(src, "spec", "url")
		ref, _, _ := unstructured.NestedStringMap(src.Object, "spec", "ref")
		sy.Ref = gitRef(ref)
		if ref["name"] == "" && (ref["commit"] != "" || ref["semver"] != "") {
			in.Notes = append(in.Notes, fmt.Sprintf("GitRepository %s/%s uses a %s ref, which spec.sync.ref cannot express: it is kept with a patch", in.Namespace, in.Namespace, refKind(ref)))
		}
	case "OCIRepository":
		sy.URL = nestedString(src, "spec", "url")
		sy.Ref = nestedString(src, "spec", "ref", "tag")
		if sy.Ref == "" {
			sy.Ref = "latest"
		}
	case "Bucket":
		sy.URL = nestedString(src, "spec", "endpoint")
		sy.Ref = nestedString(src, "spec", "bucketName")
	}
	return sy
}

// gitRef is spec.sync.ref for a GitRepository's spec.ref. A commit or semver ref is not
// expressible there: the plan keeps it with a patch on the GitRepository, and the ref returned
// only has to be valid.
func gitRef(ref map[string]string) string {
	switch {
	case ref["name"] != "":
		return ref["name"]
	case ref["commit"] != "", ref["semver"] != "":
		switch {
		case ref["branch"] != "":
			return "refs/heads/" + ref["branch"]
		case ref["tag"] != "":
			return "refs/tags/" + ref["tag"]
		}
		return "refs/heads/main"
	case ref["tag"] != "":
		return "refs/tags/" + ref["tag"]
	case ref["branch"] != "":
		return "refs/heads/" + ref["branch"]
	}
	return "refs/heads/master" // source-controller's default branch
}

func refKind(ref map[string]string) string {
	if ref["commit"] != "" {
		return "commit"
	}
	return "semver"
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func nestedString(u *unstructured.Unstructured, fields ...string) string {
	s, _, _ := unstructured.NestedString(u.Object, fields...)
	return s
}

// compactDuration prints 1m0s as 1m and 1h0m0s as 1h, the way people write intervals.
func compactDuration(s string) string {
	d, err := time.ParseDuration(s)
	if err != nil || s == "" {
		return s
	}
	out := d.String()
	if strings.HasSuffix(out, "m0s") {
		out = strings.TrimSuffix(out, "0s")
	}
	if strings.HasSuffix(out, "h0m") {
		out = strings.TrimSuffix(out, "0m")
	}
	return out
}

// checkNoPendingPrune refuses when kustomize-controller may be about to garbage-collect the Flux
// objects, which is what happens once the bootstrap files are gone from Git. The rule, from what
// the cluster shows:
//
//  1. The Kustomization's status.inventory must list the kustomize-controller Deployment and the
//     GitRepository CRD (the bootstrap files were part of the last applied revision). If they are
//     missing while the objects still carry the owner labels, the files left Git (or were never
//     applied by it) and a reconcile is deleting or about to delete them.
//  2. The last applied revision must be the last attempted one and the source's current
//     artifact: a revision the controller has not applied yet (or failed to apply) may no longer
//     contain the bootstrap files, and its reconcile would prune while migrate runs.
func checkNoPendingPrune(ctx context.Context, c client.Client, in *Install) error {
	ns := in.Namespace
	ks := in.Kustomization
	entries, found, _ := unstructured.NestedSlice(ks.Object, "status", "inventory", "entries")
	if !found {
		return refuse("Kustomization %s/%s has no status.inventory: kustomize-controller has not applied it yet; wait until it is Ready (`flux get kustomization %s -n %s`) and run migrate again", ns, ns, ns, ns)
	}
	have := map[string]bool{}
	for _, e := range entries {
		if m, ok := e.(map[string]any); ok {
			id, _ := m["id"].(string)
			have[id] = true
		}
	}
	for _, id := range fluxInventoryIDs(ns) {
		if !have[id] {
			return refuse("the Git files of the bootstrap seem already removed and a prune is pending: Kustomization %s/%s no longer lists %s in its status.inventory while the object still carries its owner labels. "+
				"Restore <path>/%s/ (gotk-components.yaml, gotk-sync.yaml, kustomization.yaml) in Git, wait until the Kustomization is Ready, then run migrate again", ns, ns, id, ns)
		}
	}
	applied := nestedString(ks, "status", "lastAppliedRevision")
	attempted := nestedString(ks, "status", "lastAttemptedRevision")
	artifact := nestedString(in.Source, "status", "artifact", "revision")
	if attempted != "" && !sameRevision(attempted, applied) {
		return refuse("Kustomization %s/%s last attempted revision %s but applied %s: a reconciliation is failing or in progress and may prune the Flux objects if the bootstrap files left Git. "+
			"Make it Ready again (`flux reconcile kustomization %s -n %s --with-source`) and run migrate again", ns, ns, attempted, applied, ns, ns)
	}
	if artifact != "" && applied != "" && !sameRevision(artifact, applied) {
		return refuse("%s %s/%s has revision %s but Kustomization %s/%s applied %s: a reconciliation is pending and may prune the Flux objects if the bootstrap files left Git. "+
			"Run `flux reconcile kustomization %s -n %s --with-source`, wait until it is Ready, and run migrate again", in.Sync.Kind, ns, ns, artifact, ns, ns, applied, ns, ns)
	}
	return nil
}

// sameRevision compares two Flux revisions (`<ref>@<algorithm>:<digest>`) by their digest: the
// same commit under another ref name (`main@sha1:X` and `refs/heads/main@sha1:X`, as after the
// takeover switches the GitRepository to ref.name, or a rollback switches it back) applies the
// same files and so cannot prune anything.
func sameRevision(a, b string) bool {
	if a == b {
		return true
	}
	i, j := strings.LastIndex(a, "@"), strings.LastIndex(b, "@")
	return i >= 0 && j >= 0 && a[i+1:] == b[j+1:]
}

// listRecords lists the migration records in all namespaces (one call).
func listRecords(ctx context.Context, c client.Client) ([]Record, error) {
	var cms corev1.ConfigMapList
	if err := c.List(ctx, &cms, client.MatchingLabels{render.LabelManagedBy: ownership.PluginName, labelRecord: "true"}); err != nil {
		return nil, fmt.Errorf("listing migration records (ConfigMaps labelled %s=true): %w", labelRecord, err)
	}
	out := make([]Record, 0, len(cms.Items))
	for i := range cms.Items {
		r, err := recordFromConfigMap(&cms.Items[i])
		if err != nil {
			return nil, err
		}
		out = append(out, *r)
	}
	return out, nil
}

// CRDs lists the Flux CRDs (metadata only) for verification and takeover.
func listFluxCRDs(ctx context.Context, c client.Client) ([]metav1.PartialObjectMetadata, error) {
	var list metav1.PartialObjectMetadataList
	list.SetGroupVersionKind(crdListGVK)
	if err := c.List(ctx, &list, client.MatchingLabels{render.LabelPartOf: "flux"}); err != nil {
		return nil, fmt.Errorf("listing Flux CustomResourceDefinitions: %w", err)
	}
	return list.Items, nil
}
