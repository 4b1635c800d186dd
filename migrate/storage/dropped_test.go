package storage_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/storage"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// droppedTestCRD returns the CRD of kind from Flux version's distribution data.
func droppedTestCRD(t *testing.T, version, kind string) *unstructured.Unstructured {
	t.Helper()
	objs, err := testenv.ReadManifests(filepath.Join(testenv.DistributionDir(t), "flux", version))
	require.NoError(t, err)
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			if k, _, _ := unstructured.NestedString(o.Object, "spec", "names", "kind"); k == kind {
				return o
			}
		}
	}
	t.Fatalf("no %s CRD in Flux %s", kind, version)
	return nil
}

// droppedTestObject decodes one object from YAML.
func droppedTestObject(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	obj := &unstructured.Unstructured{}
	require.NoError(t, yaml.Unmarshal([]byte(doc), &obj.Object))
	return obj
}

const kustomizationV1beta2 = `
apiVersion: kustomize.toolkit.fluxcd.io/v1beta2
kind: Kustomization
metadata:
  name: apps
  namespace: team-a
  labels: {team: a}
  annotations: {note: kept}
spec:
  interval: 10m
  path: ./apps
  prune: true
  sourceRef: {kind: GitRepository, name: fleet}
  validation: client
  patchesStrategicMerge:
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: podinfo}
    spec: {replicas: 2}
  patchesJson6902:
  - target: {kind: Deployment, name: podinfo}
    patch:
    - {op: replace, path: /spec/replicas, value: 3}
  patches:
  - patch: |
      - op: add
        path: /metadata/labels/x
        value: y
    target: {kind: Deployment}
status:
  lastAppliedRevision: main@sha1:0123
  inventory:
    entries:
    - {id: team-a_podinfo_apps_Deployment, v: v1}
`

func TestDroppedFields(t *testing.T) {
	kustomizations := droppedTestCRD(t, "v2.9.4", "Kustomization")
	helmReleases := droppedTestCRD(t, "v2.9.4", "HelmRelease")

	t.Run("Kustomization v1beta2 to v1 drops the old patch fields and validation", func(t *testing.T) {
		obj := droppedTestObject(t, kustomizationV1beta2)
		before := obj.DeepCopy()
		paths, err := storage.DroppedFields(obj, kustomizations, "v1")
		require.NoError(t, err)
		// spec.patches, spec.sourceRef... exist at v1 and the status fields too: only the three
		// fields v1 lost, each once, not field by field below it.
		assert.Equal(t, []string{"spec.patchesJson6902", "spec.patchesStrategicMerge", "spec.validation"}, paths)
		assert.Equal(t, before, obj, "the caller's object is not pruned")
	})

	t.Run("a HelmRelease v2beta1 loses valuesFile, the old post-renderer patches and status.lastAppliedRevision at v2", func(t *testing.T) {
		obj := droppedTestObject(t, `
apiVersion: helm.toolkit.fluxcd.io/v2beta1
kind: HelmRelease
metadata: {name: podinfo, namespace: team-a}
spec:
  interval: 5m
  chart:
    spec:
      chart: podinfo
      version: 6.x
      valuesFile: values-prod.yaml
      valuesFiles: [values.yaml]
      sourceRef: {kind: HelmRepository, name: podinfo}
  values:
    replicaCount: 2
    anything: {goes: [1, 2]}
  valuesFrom:
  - {kind: ConfigMap, name: extra, foo: bar}
  postRenderers:
  - kustomize:
      patches:
      - patch: '[{"op": "add", "path": "/x", "value": 1}]'
        target: {kind: Deployment}
      patchesStrategicMerge:
      - {apiVersion: apps/v1, kind: Deployment, metadata: {name: podinfo}}
      patchesJson6902:
      - target: {kind: Deployment, name: podinfo}
        patch: [{op: remove, path: /spec/replicas}]
status:
  lastAppliedRevision: 6.5.0
  lastAttemptedRevision: 6.5.0
  observedGeneration: 3
`)
		paths, err := storage.DroppedFields(obj, helmReleases, "v2")
		require.NoError(t, err)
		// spec.values keeps anything (x-kubernetes-preserve-unknown-fields); valuesFrom[0].foo is
		// unknown in both versions and is reported with its index.
		assert.Equal(t, []string{
			"spec.chart.spec.valuesFile",
			"spec.postRenderers[0].kustomize.patchesJson6902",
			"spec.postRenderers[0].kustomize.patchesStrategicMerge",
			"spec.valuesFrom[0].foo",
			"status.lastAppliedRevision",
		}, paths)
	})

	t.Run("the same HelmRelease at v2beta1 of the 2.6.4 CRD drops only the field unknown everywhere", func(t *testing.T) {
		// The control for the case above: the paths come from the target version's schema, not
		// from anything that is merely unusual in the object.
		obj := droppedTestObject(t, `
apiVersion: helm.toolkit.fluxcd.io/v2beta1
kind: HelmRelease
metadata: {name: podinfo, namespace: team-a}
spec:
  chart: {spec: {chart: podinfo, valuesFile: values-prod.yaml, sourceRef: {kind: HelmRepository, name: podinfo}}}
  valuesFrom: [{kind: ConfigMap, name: extra, foo: bar}]
  postRenderers: [{kustomize: {patchesStrategicMerge: [{kind: Deployment}]}}]
status: {lastAppliedRevision: 6.5.0}
`)
		paths, err := storage.DroppedFields(obj, droppedTestCRD(t, "v2.6.4", "HelmRelease"), "v2beta1")
		require.NoError(t, err)
		assert.Equal(t, []string{"spec.valuesFrom[0].foo"}, paths)
	})

	t.Run("an object with nothing the target lacks drops nothing", func(t *testing.T) {
		obj := droppedTestObject(t, `
apiVersion: kustomize.toolkit.fluxcd.io/v1beta2
kind: Kustomization
metadata:
  name: apps
  namespace: team-a
  managedFields: [{manager: kubectl, operation: Apply, apiVersion: kustomize.toolkit.fluxcd.io/v1beta2}]
  unknownMetadataField: metadata is never reported
spec:
  interval: 10m
  path: ./apps
  prune: true
  sourceRef: {kind: GitRepository, name: fleet}
  postBuild: {substitute: {cluster: prod}}
status:
  inventory: {entries: [{id: team-a_podinfo_apps_Deployment, v: v1}]}
`)
		paths, err := storage.DroppedFields(obj, kustomizations, "v1")
		require.NoError(t, err)
		assert.NotNil(t, paths)
		assert.Empty(t, paths)
	})

	t.Run("status fields the target lacks are reported with their prefix", func(t *testing.T) {
		obj := droppedTestObject(t, `
apiVersion: kustomize.toolkit.fluxcd.io/v1beta2
kind: Kustomization
metadata: {name: apps, namespace: team-a}
spec: {interval: 10m, prune: true, sourceRef: {kind: GitRepository, name: fleet}}
status:
  lastAppliedRevision: main@sha1:0123
  snapshot: {checksum: abc, entries: []}
  conditions:
  - {type: Ready, status: "True", reason: Succeeded, message: ok, lastTransitionTime: "2025-01-01T00:00:00Z", legacy: x}
`)
		paths, err := storage.DroppedFields(obj, kustomizations, "v1")
		require.NoError(t, err)
		assert.Equal(t, []string{"status.conditions[0].legacy", "status.snapshot"}, paths)
	})

	t.Run("the result does not depend on map order", func(t *testing.T) {
		var first []string
		for i := 0; i < 20; i++ {
			paths, err := storage.DroppedFields(droppedTestObject(t, kustomizationV1beta2), kustomizations, "v1")
			require.NoError(t, err)
			if i == 0 {
				first = paths
				continue
			}
			require.Equal(t, first, paths)
		}
	})

	t.Run("a legacy CRD with spec.preserveUnknownFields drops nothing", func(t *testing.T) {
		legacy := kustomizations.DeepCopy()
		require.NoError(t, unstructured.SetNestedField(legacy.Object, true, "spec", "preserveUnknownFields"))
		paths, err := storage.DroppedFields(droppedTestObject(t, kustomizationV1beta2), legacy, "v1")
		require.NoError(t, err)
		assert.Empty(t, paths)
	})

	t.Run("refusals", func(t *testing.T) {
		obj := droppedTestObject(t, kustomizationV1beta2)
		_, err := storage.DroppedFields(obj, kustomizations, "v1beta2")
		assert.EqualError(t, err, `CustomResourceDefinition/kustomizations.kustomize.toolkit.fluxcd.io has no version "v1beta2" (it has v1)`)

		_, err = storage.DroppedFields(obj, helmReleases, "v2")
		assert.EqualError(t, err, "CustomResourceDefinition/helmreleases.helm.toolkit.fluxcd.io serves HelmRelease.helm.toolkit.fluxcd.io, not Kustomization.kustomize.toolkit.fluxcd.io")

		noSchema := kustomizations.DeepCopy()
		versions, _, _ := unstructured.NestedSlice(noSchema.Object, "spec", "versions")
		delete(versions[0].(map[string]any), "schema")
		require.NoError(t, unstructured.SetNestedSlice(noSchema.Object, versions, "spec", "versions"))
		_, err = storage.DroppedFields(obj, noSchema, "v1")
		assert.EqualError(t, err, "CustomResourceDefinition/kustomizations.kustomize.toolkit.fluxcd.io: version v1 has no schema")

		_, err = storage.DroppedFields(nil, kustomizations, "v1")
		assert.Error(t, err)
	})
}

func TestFormatDropped(t *testing.T) {
	assert.Equal(t,
		"Kustomization team-a/apps: spec.patchesStrategicMerge, spec.patchesJson6902 would be dropped at kustomize.toolkit.fluxcd.io/v1",
		storage.FormatDropped("Kustomization team-a/apps", []string{"spec.patchesStrategicMerge", "spec.patchesJson6902"}, "kustomize.toolkit.fluxcd.io/v1"))
	assert.Equal(t, "", storage.FormatDropped("Kustomization team-a/apps", nil, "kustomize.toolkit.fluxcd.io/v1"), "nothing dropped, nothing to say")
}
