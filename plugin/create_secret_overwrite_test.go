package plugin

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// `create secret` over a Secret someone else made: refused unless --overwrite, naming the keys
// that would change and never their values; a Secret of another type is refused either way; a
// Secret the plugin made is updated as before.
func TestCreateSecretOverAnExistingSecret(t *testing.T) {
	env := testenv.Start(t)
	c := env.Client(t)
	ctx := context.Background()
	env.CreateNamespace(t, "apps")
	kc := "--kubeconfig=" + env.Kubeconfig
	create := func(name string, typ corev1.SecretType, data map[string]string) {
		t.Helper()
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: name}, Type: typ, StringData: data}
		require.NoError(t, c.Create(ctx, s))
	}
	create("someone-elses", corev1.SecretTypeOpaque, map[string]string{"username": "git", "password": "old-value", "other": "kept"})
	create("tls-one", corev1.SecretTypeTLS, map[string]string{"tls.crt": "x", "tls.key": "y"})

	git := func(name string, extra ...string) result {
		return runPlugin(t, "new-value", append([]string{"create", "secret", "git", name, "-n", "apps", "--url=https://example.com/r.git", "--username=git", "--password-stdin", kc}, extra...)...)
	}
	r := git("someone-elses")
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, "Secret apps/someone-elses exists and was not created by this plugin: applying would change its keys password; pass --overwrite")
	assert.NotContains(t, r.Stderr, "new-value")
	assert.NotContains(t, r.Stderr, "old-value")
	assert.Equal(t, "old-value", string(getSecret(t, c, "apps", "someone-elses").Data["password"]), "refused: nothing changed")

	r = git("someone-elses", "--overwrite")
	require.Equal(t, 0, r.Code, r.Stderr)
	after := getSecret(t, c, "apps", "someone-elses")
	assert.Equal(t, "new-value", string(after.Data["password"]))
	assert.Equal(t, "kept", string(after.Data["other"]), "keys the command does not set stay")

	r = git("someone-elses")
	assert.Equal(t, 0, r.Code, "now the plugin manages it: a re-run needs no --overwrite\n%s", r.Stderr)

	r = git("tls-one", "--overwrite")
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, "Secret apps/tls-one exists with type kubernetes.io/tls, not Opaque")
}
