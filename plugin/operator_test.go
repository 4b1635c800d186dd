package plugin

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/test/fixtures"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// TestModeSelection covers how apply picks direct or operator mode, and the refusals that keep the
// plugin and the Flux Operator from fighting, on a real API server with the operator's traces (its
// CRD, a Deployment, a FluxInstance carrying its finalizer) but without the operator itself: the
// operator's own behaviour is proven in test/e2e/operator.
func TestModeSelection(t *testing.T) {
	dist := testenv.DistributionDir(t)
	env := testenv.Start(t)
	c := env.Client(t)
	ctx := context.Background()
	file := writeFile(t, t.TempDir(), "flux.yaml", fixtures.Instance(t, "tests/sync-git-pull-secret-2.7.5"))
	plugin := func(args ...string) result {
		return runPlugin(t, "", append(args, "--kubeconfig", env.Kubeconfig, "--distribution", dist)...)
	}

	t.Run("operator mode and handoff need a running operator", func(t *testing.T) {
		r := plugin("apply", "-f", file, "--mode=operator")
		assert.Equal(t, 1, r.Code)
		assert.Contains(t, r.Stderr, "the Flux Operator does not run in this cluster (the FluxInstance CRD (fluxinstances.fluxcd.controlplane.io) is not installed)")
		r = plugin("handoff", "-n", "flux-system")
		assert.Equal(t, 1, r.Code)
		assert.Contains(t, r.Stderr, "no instance applied by kubectl-fluxinstance in namespace flux-system")
	})

	t.Run("bad flags are usage errors", func(t *testing.T) {
		r := plugin("apply", "-f", file, "--mode=pilot")
		assert.Equal(t, 2, r.Code)
		assert.Contains(t, r.Stderr, `--mode must be "auto", "direct" or "operator", got "pilot"`)
	})

	t.Run("auto applies directly without an operator", func(t *testing.T) {
		r := plugin("apply", "-f", file, "--wait=false")
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stdout, "deployment.apps/source-controller created")
	})

	// The operator's traces: its CRD and its Deployment (never Ready here: no kubelet).
	crd, err := testenv.DecodeYAML([]byte(testenv.FluxInstanceStandInCRD))
	require.NoError(t, err)
	require.NoError(t, c.Create(ctx, crd[0]))
	require.NoError(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "operator-system"}}))
	labels := map[string]string{"app.kubernetes.io/name": "flux-operator"}
	require.NoError(t, c.Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "flux-operator", Namespace: "operator-system", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "manager", Image: "ghcr.io/controlplaneio-fluxcd/flux-operator:v0.59.0"}}},
			},
		},
	}))

	t.Run("auto stays direct for an instance the plugin applied, and points to handoff", func(t *testing.T) {
		r := plugin("apply", "-f", file, "--wait=false")
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, "Note: the Flux Operator runs in this cluster (Deployment operator-system/flux-operator)")
		assert.Contains(t, r.Stderr, "kubectl fluxinstance handoff -n flux-system")
		assert.Contains(t, r.Stdout, "deployment.apps/source-controller unchanged")
	})

	t.Run("operator mode refuses an instance the plugin applied directly", func(t *testing.T) {
		r := plugin("apply", "-f", file, "--mode=operator")
		assert.Equal(t, 1, r.Code)
		assert.Contains(t, r.Stderr, "was applied directly by kubectl-fluxinstance: hand it to the operator with `kubectl fluxinstance handoff -n flux-system`")
	})

	t.Run("handoff --dry-run prints the plan and changes nothing", func(t *testing.T) {
		before := resourceVersions(t, c)
		r := plugin("handoff", "-n", "flux-system", "--dry-run")
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, "Flux Operator: running (Deployment operator-system/flux-operator)")
		assert.Regexp(t, `Hand-off plan for namespace flux-system: \d+ objects move to the operator; its first reconcile may create 0 and delete 0`, r.Stderr)
		assert.Contains(t, r.Stdout, "would be handed to the Flux Operator (dry run)")
		assert.Equal(t, before, resourceVersions(t, c))
	})

	// The operator has reconciled a FluxInstance: its finalizer is the trace.
	fi := fixtures.Object(t, "tests/minimal-2.7.x")
	fi.SetFinalizers([]string{"fluxcd.controlplane.io/finalizer"})
	require.Eventually(t, func() bool {
		fresh, err := client.New(env.Config, client.Options{})
		require.NoError(t, err)
		return fresh.Create(ctx, fi.DeepCopy()) == nil
	}, 20*time.Second, 200*time.Millisecond)

	t.Run("direct mode refuses to fight the operator unless forced", func(t *testing.T) {
		before := resourceVersions(t, c)
		r := plugin("apply", "-f", file, "--mode=direct", "--wait=false")
		assert.Equal(t, 1, r.Code)
		assert.Contains(t, r.Stderr, "FluxInstance flux-system/flux is reconciled by the Flux Operator (Deployment operator-system/flux-operator): applying its manifests directly would start a fight")
		assert.Contains(t, r.Stderr, "--mode=operator")
		assert.Equal(t, before, resourceVersions(t, c))

		r = plugin("apply", "-f", file, "--mode=direct", "--force", "--wait=false")
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, "applying its manifests directly anyway (--force)")
	})

	t.Run("auto applies the FluxInstance object for the operator", func(t *testing.T) {
		before := resourceVersions(t, c)
		r := plugin("apply", "-f", file, "--wait=false")
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Equal(t, "fluxinstance.fluxcd.controlplane.io/flux configured\n", r.Stdout)
		// Only the FluxInstance changed: no manifest was applied directly.
		assert.Equal(t, before, resourceVersions(t, c))
		live := &unstructured.Unstructured{}
		live.SetAPIVersion("fluxcd.controlplane.io/v1")
		live.SetKind("FluxInstance")
		require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: "flux"}, live))
		version, _, _ := unstructured.NestedString(live.Object, "spec", "distribution", "version")
		assert.Equal(t, "2.7.5", version, "the file's spec reached the FluxInstance")
		sync, _, _ := unstructured.NestedMap(live.Object, "spec", "sync")
		assert.Equal(t, "refs/heads/main", sync["ref"])

		r = plugin("apply", "-f", file, "--wait=false", "--dry-run=server")
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Equal(t, "fluxinstance.fluxcd.controlplane.io/flux unchanged (server dry run)\n", r.Stdout)
	})

	t.Run("status says who manages the instance", func(t *testing.T) {
		r := runPlugin(t, "", "status", "-n", "flux-system", "--kubeconfig", env.Kubeconfig)
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Regexp(t, `Managed By: +flux-operator\n`, r.Stdout)
		assert.Regexp(t, `Flux Operator: +running \(Deployment operator-system/flux-operator\)\n`, r.Stdout)
		assert.Regexp(t, `FluxInstance: +flux-system/flux, reconciled by the operator: Ready=Unknown`, r.Stdout)
	})
}

// A hand-off warns when the operator may resolve the recorded version to another minor release
// than the one installed, and only then.
func TestHandoffWarnsOfMinorDrift(t *testing.T) {
	for constraint, warns := range map[string]bool{"2.7.5": false, "2.7.x": false, "2.x": true, ">=2.6.0": true, "*": true} {
		w := minorDrift(constraint, "v2.7.5")
		assert.Equal(t, warns, w != "", constraint)
		if warns {
			assert.Contains(t, w, `spec.distribution.version "`+constraint+`" admits other minor releases than the installed v2.7.5`)
			assert.Contains(t, w, "spec.distribution.version 2.7.x first")
		}
	}
}
