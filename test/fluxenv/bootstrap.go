package fluxenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxcd/pkg/ssa/normalize"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// Field managers. The request manager must not start with "kubectl": kustomize-controller takes
// over and drops fields owned by kubectl* Update managers on the objects it applies, which
// includes the self-managed sync objects, so such a reconcile request is never acknowledged.
const (
	// BootstrapFieldManager is the manager `flux bootstrap` applies with.
	BootstrapFieldManager = "flux"
	// RequestFieldManager writes reconcile requests.
	RequestFieldManager = "fluxenv"
	// ReconcileRequestAnnotation asks a Flux controller to reconcile now.
	ReconcileRequestAnnotation = "reconcile.fluxcd.io/requestedAt"
)

// Options are the `flux bootstrap` options of a fleet repository. The zero value is a default
// bootstrap of FluxVersion in flux-system, on branch main, at clusters/test.
type Options struct {
	// Version is a version of the distribution data (default FluxVersion). The controllers that
	// run are always ControllersVersion: start them only for FluxVersion (older CRDs lack the
	// APIs they serve); older versions are for generating and applying files.
	Version string
	// Namespace defaults to flux-system.
	Namespace string
	// Components default to source-, kustomize-, helm- and notification-controller.
	Components []string
	// ComponentsExtra adds image-reflector-controller, image-automation-controller, source-watcher.
	ComponentsExtra []string
	// Registry defaults to ghcr.io/fluxcd.
	Registry string
	// ImagePullSecret is set on the controllers' pod templates (the secret itself is not created).
	ImagePullSecret string
	// NoNetworkPolicy is --network-policy=false.
	NoNetworkPolicy bool
	// TolerationKeys are --toleration-keys.
	TolerationKeys []string
	// LogLevel defaults to info.
	LogLevel string
	// ClusterDomain defaults to cluster.local.
	ClusterDomain string
	// Branch defaults to main unless Tag is set.
	Branch string
	// Tag makes the GitRepository follow a tag (fluxgen only: `flux bootstrap` pushes to a branch).
	Tag string
	// Path is the cluster's directory in the repository (default clusters/test).
	Path string
	// Interval is the GitRepository interval (default 1m).
	Interval time.Duration
	// SecretName is the Git credentials secret, in Namespace (default flux-system whatever the
	// namespace, like `flux bootstrap --secret-name`).
	SecretName string
}

// WithDefaults returns the options with every default filled in.
func (o Options) WithDefaults() Options {
	if o.Version == "" {
		o.Version = FluxVersion
	}
	if o.Namespace == "" {
		o.Namespace = "flux-system"
	}
	if len(o.Components) == 0 {
		o.Components = []string{"source-controller", "kustomize-controller", "helm-controller", "notification-controller"}
	}
	if o.Registry == "" {
		o.Registry = "ghcr.io/fluxcd"
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = "cluster.local"
	}
	if o.Branch == "" && o.Tag == "" {
		o.Branch = "main"
	}
	if o.Path == "" {
		o.Path = "clusters/test"
	}
	if o.Interval == 0 {
		o.Interval = time.Minute
	}
	if o.SecretName == "" {
		o.SecretName = "flux-system"
	}
	return o
}

// Dir is the repository-relative directory of the bootstrap files, <Path>/<Namespace>.
func (o Options) Dir() string {
	o = o.WithDefaults()
	return path.Join(o.Path, o.Namespace)
}

// WriteBootstrapFiles writes gotk-components.yaml, gotk-sync.yaml and kustomization.yaml into
// <Path>/<Namespace> of the repository's work tree, as `flux bootstrap` would commit them, with
// fluxgen and the distribution data. It commits nothing; it returns the repository-relative dir.
func WriteBootstrapFiles(t testing.TB, repo *Repo, o Options) string {
	t.Helper()
	o = o.WithDefaults()
	dist := filepath.Join(testenv.DistributionDir(t), "flux", o.Version)
	if _, err := os.Stat(dist); err != nil {
		t.Fatalf("Flux %s is not in the distribution data: %v", o.Version, err)
	}
	args := []string{
		"-dist", dist, "-version", o.Version, "-out", filepath.Join(repo.Dir, filepath.FromSlash(o.Dir())),
		"-namespace", o.Namespace, "-components", strings.Join(o.Components, ","),
		"-components-extra", strings.Join(o.ComponentsExtra, ","),
		"-registry", o.Registry, "-image-pull-secret", o.ImagePullSecret,
		fmt.Sprintf("-network-policy=%t", !o.NoNetworkPolicy),
		"-toleration-keys", strings.Join(o.TolerationKeys, ","),
		"-log-level", o.LogLevel, "-cluster-domain", o.ClusterDomain,
		"-url", repo.URL, "-branch", o.Branch, "-tag", o.Tag, "-path", o.Path,
		"-interval", o.Interval.String(), "-secret-ref", o.SecretName,
	}
	out, err := exec.Command(filepath.Join(BinDir(t, false), FluxGen), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("generating the bootstrap files of Flux %s: %v\n%s", o.Version, err, out)
	}
	return o.Dir()
}

// Flux is a fleet repository bootstrapped into a test cluster, with the real controllers syncing it.
type Flux struct {
	Env *testenv.Env
	// Client is an admin client.
	Client      client.Client
	Repo        *Repo
	Controllers *Controllers
	// Options are the bootstrap options, defaults filled in.
	Options Options
}

// Bootstrap does what `flux bootstrap git` does, with fluxgen for the files: it writes the
// bootstrap files, commits and pushes them (and the tag when Options.Tag is set), then installs
// them with Install. Files the test wrote into the work tree before (user apps) are in the same
// commit.
func Bootstrap(t testing.TB, env *testenv.Env, repo *Repo, o Options) *Flux {
	t.Helper()
	WriteBootstrapFiles(t, repo, o)
	o = o.WithDefaults()
	repo.CommitAndPush(t, "Add Flux "+o.Version+" sync manifests")
	if o.Tag != "" {
		repo.Tag(t, o.Tag)
	}
	return Install(t, env, repo, o)
}

// Install is ApplyBootstrap followed by Start: what `flux bootstrap` leaves behind, synced by the
// real controllers.
func Install(t testing.TB, env *testenv.Env, repo *Repo, o Options) *Flux {
	t.Helper()
	f := ApplyBootstrap(t, env, repo, o)
	f.Start(t)
	return f
}

// ApplyBootstrap applies the bootstrap files committed at the repository's HEAD the way
// `flux bootstrap` does: the kustomize build of <Path>/<Namespace> (so patches in its
// kustomization.yaml count), CRDs and namespaces first, with the flux field manager; then it
// creates the Options.SecretName secret with the Git server's credentials. No controller runs yet
// (Flux.Controllers is nil): call Start, or use it alone for versions the controllers cannot serve.
func ApplyBootstrap(t testing.TB, env *testenv.Env, repo *Repo, o Options) *Flux {
	t.Helper()
	o = o.WithDefaults()
	f := &Flux{Env: env, Client: NewClient(t, env), Repo: repo, Options: o}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := f.apply(ctx, filepath.Join(repo.Dir, filepath.FromSlash(o.Dir()))); err != nil {
		t.Fatal(err)
	}
	if err := f.applySecret(ctx); err != nil {
		t.Fatal(err)
	}
	return f
}

// Start keeps the Deployments Available, starts the controllers in Options.Namespace and waits
// until the Kustomization is Ready at the repository's HEAD.
func (f *Flux) Start(t testing.TB) {
	t.Helper()
	if f.Controllers != nil {
		t.Fatal("the Flux controllers are already running")
	}
	KeepDeploymentsAvailable(t, f.Client)
	f.Controllers = StartControllers(t, f.Env, ControllerOptions{Namespace: f.Options.Namespace})
	f.WaitReady(t, f.Repo.Head(t))
}

func (f *Flux) apply(ctx context.Context, dir string) error {
	objs, err := KustomizeBuild(dir)
	if err != nil {
		return err
	}
	if err := applyAsFluxCLI(ctx, f.Client, objs); err != nil {
		return fmt.Errorf("applying the bootstrap files of %s: %w", dir, err)
	}
	return nil
}

// applyAsFluxCLI applies objects the way the Flux CLI does: server-side, staged (CRDs and
// Namespaces first), with the `flux` field manager.
func applyAsFluxCLI(ctx context.Context, c client.Client, objs []*unstructured.Unstructured) error {
	if err := normalize.UnstructuredList(objs); err != nil {
		return err
	}
	rm := ssa.NewResourceManager(c, polling.NewStatusPoller(c, c.RESTMapper(), polling.Options{}),
		ssa.Owner{Field: BootstrapFieldManager, Group: "fluxcd.io"})
	_, err := rm.ApplyAllStaged(ctx, objs, ssa.DefaultApplyOptions())
	return err
}

// InstallGenerated does what `flux install` of Options.Version does, for versions other than the
// CLI's: gotk-components.yaml from fluxgen (the CLI's own generator, install.Generate, on the
// distribution data) applied like the CLI applies it (applyAsFluxCLI). No sync objects, no
// controller; the Deployments are kept Available. It returns an admin client.
func InstallGenerated(t testing.TB, env *testenv.Env, o Options) client.Client {
	t.Helper()
	o = o.WithDefaults()
	dist := filepath.Join(testenv.DistributionDir(t), "flux", o.Version)
	out := t.TempDir()
	args := []string{
		"-dist", dist, "-version", o.Version, "-out", out,
		"-namespace", o.Namespace, "-components", strings.Join(o.Components, ","),
		"-components-extra", strings.Join(o.ComponentsExtra, ","),
		"-registry", o.Registry, "-image-pull-secret", o.ImagePullSecret,
		fmt.Sprintf("-network-policy=%t", !o.NoNetworkPolicy),
		"-toleration-keys", strings.Join(o.TolerationKeys, ","),
		"-log-level", o.LogLevel, "-cluster-domain", o.ClusterDomain,
		"-url", "https://git.example.invalid/fleet", "-branch", "main", "-path", "unused",
	}
	if msg, err := exec.Command(filepath.Join(BinDir(t, false), FluxGen), args...).CombinedOutput(); err != nil {
		t.Fatalf("generating the install manifests of Flux %s: %v\n%s", o.Version, err, msg)
	}
	data, err := os.ReadFile(filepath.Join(out, "gotk-components.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := testenv.DecodeYAML(data)
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(t, env)
	KeepDeploymentsAvailable(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := applyAsFluxCLI(ctx, c, objs); err != nil {
		t.Fatalf("applying the install manifests of Flux %s: %v", o.Version, err)
	}
	return c
}

// applySecret stores the Git credentials the way `flux bootstrap git --token-auth` does.
func (f *Flux) applySecret(ctx context.Context) error {
	secret := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: f.Options.SecretName, Namespace: f.Options.Namespace},
		StringData: map[string]string{"username": f.Repo.server.Username, "password": f.Repo.server.Password},
	}
	if err := f.Client.Create(ctx, secret, client.FieldOwner(BootstrapFieldManager)); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	return nil
}

// KustomizeBuild builds a kustomization directory (what `flux bootstrap` applies).
func KustomizeBuild(dir string) ([]*unstructured.Unstructured, error) {
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	data, err := resources.AsYaml()
	if err != nil {
		return nil, err
	}
	return testenv.DecodeYAML(data)
}

// NewClient returns an admin client. The Flux objects are read as unstructured: the typed Flux
// APIs are not among the module's dependencies.
func NewClient(t testing.TB, env *testenv.Env) client.Client {
	t.Helper()
	return env.Client(t)
}

// GitRepositoryKind is the kind of the sync source.
func GitRepositoryKind() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: "source.toolkit.fluxcd.io", Version: "v1", Kind: "GitRepository"}
}

// KustomizationKind is the kind of the sync Kustomization.
func KustomizationKind() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Kind: "Kustomization"}
}

// Key is the namespace/name of the sync objects (both named after the namespace).
func (f *Flux) Key() types.NamespacedName {
	return types.NamespacedName{Namespace: f.Options.Namespace, Name: f.Options.Namespace}
}

// Kustomization returns the sync Kustomization.
func (f *Flux) Kustomization(t testing.TB) *unstructured.Unstructured {
	t.Helper()
	return f.get(t, KustomizationKind())
}

// GitRepository returns the sync GitRepository.
func (f *Flux) GitRepository(t testing.TB) *unstructured.Unstructured {
	t.Helper()
	return f.get(t, GitRepositoryKind())
}

func (f *Flux) get(t testing.TB, gvk schema.GroupVersionKind) *unstructured.Unstructured {
	t.Helper()
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(gvk)
	if err := f.Client.Get(context.Background(), f.Key(), obj); err != nil {
		t.Fatalf("getting %s %s: %v", gvk.Kind, f.Key(), err)
	}
	return obj
}

// Status reads a string field under .status of a Flux object ("" when absent), e.g.
// Status(ks, "lastAppliedRevision") or Status(gr, "artifact", "revision").
func Status(obj *unstructured.Unstructured, fields ...string) string {
	v, _, _ := unstructured.NestedString(obj.Object, append([]string{"status"}, fields...)...)
	return v
}

// Ready returns the Ready condition of a Flux object: whether it is True and a summary for messages.
func Ready(obj *unstructured.Unstructured) (bool, string) {
	conditions, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conditions {
		m, _ := c.(map[string]any)
		if m["type"] == "Ready" {
			return m["status"] == "True", fmt.Sprintf("%v %v: %v", m["status"], m["reason"], m["message"])
		}
	}
	return false, "no Ready condition"
}

// Inventory returns the ids of the Kustomization's status.inventory entries
// (<namespace>_<name>_<group>_<kind>).
func Inventory(ks *unstructured.Unstructured) []string {
	entries, _, _ := unstructured.NestedSlice(ks.Object, "status", "inventory", "entries")
	ids := make([]string, 0, len(entries))
	for _, e := range entries {
		if m, ok := e.(map[string]any); ok {
			if id, ok := m["id"].(string); ok {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// observed reports whether the controller has seen the object's current generation.
func observed(obj *unstructured.Unstructured) bool {
	g, _, _ := unstructured.NestedInt64(obj.Object, "status", "observedGeneration")
	return g == obj.GetGeneration()
}

// atCommit reports whether a revision (branch@sha1:X, tag@sha1:X) is the commit; any commit
// matches an empty one.
func atCommit(revision, commit string) bool {
	return commit == "" || strings.HasSuffix(revision, "sha1:"+commit)
}

// WaitReady waits until the sync Kustomization is Ready, observed at its generation, and (when
// commit is not empty) applied at that commit. It fails the test with the Ready message and the
// controllers' logs otherwise.
func (f *Flux) WaitReady(t testing.TB, commit string) *unstructured.Unstructured {
	t.Helper()
	return f.WaitKustomizationReady(t, f.Key(), commit)
}

// WaitKustomizationReady is WaitReady for any Kustomization, e.g. a user's that the sync
// Kustomization applies from the fleet repository.
func (f *Flux) WaitKustomizationReady(t testing.TB, key types.NamespacedName, commit string) *unstructured.Unstructured {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ks, err := f.waitKustomization(ctx, key, func(ks *unstructured.Unstructured) bool {
		return atCommit(Status(ks, "lastAppliedRevision"), commit)
	})
	if err != nil {
		t.Fatalf("Kustomization %s not Ready at commit %q: %v\n%s", key, commit, err, f.Controllers.Logs(20))
	}
	return ks
}

// Reconcile requests a reconcile of the GitRepository and then of the Kustomization, like
// `flux reconcile kustomization <ns> --with-source`, with a field manager kustomize-controller
// leaves alone, and waits until both handled the request and the Kustomization is Ready (at
// commit when not empty). It returns the Kustomization.
func (f *Flux) Reconcile(t testing.TB, commit string) *unstructured.Unstructured {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	requested := time.Now().Format(time.RFC3339Nano)
	gr := &unstructured.Unstructured{}
	gr.SetGroupVersionKind(GitRepositoryKind())
	if err := f.request(ctx, gr, requested); err != nil {
		t.Fatal(err)
	}
	err := f.Controllers.waitRunning(ctx, 200*time.Millisecond, func() (bool, error) {
		if err := f.Client.Get(ctx, f.Key(), gr); err != nil {
			return false, err
		}
		return Status(gr, "lastHandledReconcileAt") == requested, nil
	})
	if err != nil {
		t.Fatalf("GitRepository %s did not handle the reconcile request: %v\n%s", f.Key(), err, f.Controllers.Logs(20))
	}
	if revision := Status(gr, "artifact", "revision"); !atCommit(revision, commit) {
		_, ready := Ready(gr)
		t.Fatalf("GitRepository %s fetched %q, want commit %s; Ready: %s", f.Key(), revision, commit, ready)
	}
	ks := &unstructured.Unstructured{}
	ks.SetGroupVersionKind(KustomizationKind())
	if err := f.request(ctx, ks, requested); err != nil {
		t.Fatal(err)
	}
	ks, err = f.waitKustomization(ctx, f.Key(), func(ks *unstructured.Unstructured) bool {
		return Status(ks, "lastHandledReconcileAt") == requested && atCommit(Status(ks, "lastAppliedRevision"), commit)
	})
	if err != nil {
		t.Fatalf("Kustomization %s not Ready after the reconcile request (commit %q): %v\n%s", f.Key(), commit, err, f.Controllers.Logs(20))
	}
	return ks
}

// RequestReconcile writes the reconcile request annotation on one object (its GVK, namespace and
// name set) as RequestFieldManager.
func RequestReconcile(ctx context.Context, c client.Client, obj client.Object, requested string) error {
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, ReconcileRequestAnnotation, requested)
	if err := c.Patch(ctx, obj, client.RawPatch(types.MergePatchType, []byte(patch)), client.FieldOwner(RequestFieldManager)); err != nil {
		return fmt.Errorf("requesting a reconcile of %s %s/%s: %w", obj.GetObjectKind().GroupVersionKind().Kind, obj.GetNamespace(), obj.GetName(), err)
	}
	return nil
}

func (f *Flux) request(ctx context.Context, obj client.Object, requested string) error {
	obj.SetNamespace(f.Key().Namespace)
	obj.SetName(f.Key().Name)
	return RequestReconcile(ctx, f.Client, obj, requested)
}

func (f *Flux) waitKustomization(ctx context.Context, key types.NamespacedName, done func(*unstructured.Unstructured) bool) (*unstructured.Unstructured, error) {
	ks := &unstructured.Unstructured{}
	ks.SetGroupVersionKind(KustomizationKind())
	err := f.Controllers.waitRunning(ctx, 200*time.Millisecond, func() (bool, error) {
		if err := f.Client.Get(ctx, key, ks); err != nil {
			if apierrors.IsNotFound(err) {
				return false, nil
			}
			return false, err
		}
		ready, _ := Ready(ks)
		return ready && observed(ks) && done(ks), nil
	})
	if err != nil {
		_, ready := Ready(ks)
		return nil, fmt.Errorf("%w (last applied %q, Ready: %s)", err, Status(ks, "lastAppliedRevision"), ready)
	}
	return ks, nil
}

// Push commits every change of the work tree and pushes it; when the sync follows a tag, the tag
// moves to the new commit. It returns the commit.
func (f *Flux) Push(t testing.TB, message string) string {
	t.Helper()
	commit := f.Repo.CommitAndPush(t, message)
	if f.Options.Tag != "" {
		f.Repo.Tag(t, f.Options.Tag)
	}
	return commit
}
