package helmstorage_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/helmstorage"
	"github.com/fluxinstance/kubectl-fluxinstance/test/helmenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestSetAsideAndRestore moves the records the real Helm CLI wrote (two revisions, Secrets and
// ConfigMaps) out of Helm's sight and back, byte for byte, and resumes or refuses the partial
// states an interruption or a concurrent change leaves.
func TestSetAsideAndRestore(t *testing.T) {
	h := helmenv.Require(t)
	env := testenv.Start(t)
	ctx := context.Background()
	c := env.Client(t)
	h.Install(t, env, helmenv.Release{Name: "flux2", Namespace: "flux-system"})
	h.Upgrade(t, env, helmenv.Release{Name: "flux2", Namespace: "flux-system", Values: map[string]any{"logLevel": "debug"}})
	r := helmstorage.Release{Name: "flux2", StorageNamespace: "flux-system"}
	before := secrets(t, c)
	require.Len(t, before, 2)

	moved, err := helmstorage.SetAside(ctx, c, r)
	require.NoError(t, err)
	assert.Equal(t, []string{"Secret/flux-system/sh.helm.release.v1.flux2.v1", "Secret/flux-system/sh.helm.release.v1.flux2.v2"}, moved)
	records, err := helmstorage.Records(ctx, c, r)
	require.NoError(t, err)
	assert.Empty(t, records)
	out, err := h.Run(ctx, env, nil, "list", "--namespace", "flux-system", "--short")
	require.NoError(t, err, "%s", out)
	assert.Empty(t, strings.TrimSpace(string(out)), "helm lists no release")
	again, err := helmstorage.SetAside(ctx, c, r)
	require.NoError(t, err)
	assert.Empty(t, again, "nothing left to set aside")

	// Interrupted between the copy and the delete of a restore: the record is back beside its
	// copy; setting aside again deletes the record and keeps the one copy.
	require.NoError(t, c.Create(ctx, before.secret("sh.helm.release.v1.flux2.v1")))
	moved, err = helmstorage.SetAside(ctx, c, r)
	require.NoError(t, err)
	assert.Equal(t, []string{"Secret/flux-system/sh.helm.release.v1.flux2.v1"}, moved)
	records, err = helmstorage.Records(ctx, c, r)
	require.NoError(t, err)
	assert.Empty(t, records)

	restored, err := helmstorage.Restore(ctx, c, r)
	require.NoError(t, err)
	assert.Len(t, restored, 2)
	assert.Equal(t, before, secrets(t, c), "restored byte for byte, labels included")
	out, err = h.Run(ctx, env, nil, "history", "flux2", "--namespace", "flux-system")
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "superseded")
	assert.Contains(t, string(out), "deployed")

	// A copy that differs from the record (Helm wrote a new record meanwhile): refused, the
	// record is kept.
	_, err = helmstorage.SetAside(ctx, c, r)
	require.NoError(t, err)
	_, err = helmstorage.Restore(ctx, c, r)
	require.NoError(t, err)
	_, err = helmstorage.SetAside(ctx, c, r)
	require.NoError(t, err)
	recreated := before.secret("sh.helm.release.v1.flux2.v2")
	recreated.Data = map[string][]byte{"release": []byte("other")}
	require.NoError(t, c.Create(ctx, recreated))
	_, err = helmstorage.SetAside(ctx, c, r)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Secret/flux-system/kubectl-fluxinstance.sh.helm.release.v1.flux2.v2 already exists with other content")
	require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(recreated), &corev1.Secret{}), "the differing record is not deleted")
}

// TestSetAsideConfigMaps: records kept by HELM_DRIVER=configmap move the same way.
func TestSetAsideConfigMaps(t *testing.T) {
	h := helmenv.Require(t)
	env := testenv.Start(t)
	ctx := context.Background()
	c := env.Client(t)
	h.Install(t, env, helmenv.Release{Name: "flux2", Namespace: "flux-system", Driver: "configmap"})
	r := helmstorage.Release{Name: "flux2", StorageNamespace: "flux-system"}
	moved, err := helmstorage.SetAside(ctx, c, r)
	require.NoError(t, err)
	assert.Equal(t, []string{"ConfigMap/flux-system/sh.helm.release.v1.flux2.v1"}, moved)
	rel, err := helmstorage.Latest(ctx, c, r)
	assert.Nil(t, rel)
	require.Error(t, err, "no record Helm sees")
	_, err = helmstorage.Restore(ctx, c, r)
	require.NoError(t, err)
	rel, err = helmstorage.Latest(ctx, c, r)
	require.NoError(t, err)
	assert.Equal(t, 1, rel.Revision)
	objs, err := rel.ManifestObjects()
	require.NoError(t, err)
	assert.Greater(t, len(objs), 20)
}

type record struct {
	labels map[string]string
	typ    corev1.SecretType
	data   map[string][]byte
}

type recordSet map[string]record

// secret is a new Secret with the record's name and content.
func (rs recordSet) secret(name string) *corev1.Secret {
	r := rs[name]
	s := &corev1.Secret{Type: r.typ, Data: r.data}
	s.Namespace, s.Name, s.Labels = "flux-system", name, r.labels
	return s
}

func secrets(t *testing.T, c client.Client) recordSet {
	t.Helper()
	var list corev1.SecretList
	require.NoError(t, c.List(context.Background(), &list, client.InNamespace("flux-system"), client.MatchingLabels{"owner": "helm"}))
	out := recordSet{}
	for _, s := range list.Items {
		out[s.Name] = record{labels: s.Labels, typ: s.Type, data: s.Data}
	}
	return out
}
