package plugin

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/installation"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

func TestVersionClientOnly(t *testing.T) {
	// No kubeconfig at all: --client must not need one.
	t.Setenv("KUBECONFIG", t.TempDir()+"/missing")
	r := runPlugin(t, "", "version", "--client")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Equal(t, "Client Version: v1.2.3-test\n", r.Stdout)

	r = runPlugin(t, "", "version", "--client", "-o", "json")
	require.Equal(t, 0, r.Code, r.Stderr)
	var report VersionReport
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &report))
	assert.Equal(t, "v1.2.3-test", report.ClientVersion.Version)
	assert.Equal(t, "abc123", report.ClientVersion.GitCommit)
	assert.NotEmpty(t, report.ClientVersion.GoVersion)
	assert.Nil(t, report.Flux)
}

func TestVersionUnreachableCluster(t *testing.T) {
	// A port nothing listens on: the client version is still printed, the failure is one line.
	r := runPlugin(t, "", "version", "--server", "https://127.0.0.1:1", "--insecure-skip-tls-verify")
	assert.Equal(t, 1, r.Code)
	assert.Equal(t, "Client Version: v1.2.3-test\n", r.Stdout)
	assert.Equal(t, "error: unable to reach the cluster at https://127.0.0.1:1: connection refused\n", r.Stderr)

	r = runPlugin(t, "", "version", "--client", "--server", "https://127.0.0.1:1")
	assert.Equal(t, 0, r.Code, "--client never contacts the cluster")
}

func TestVersionAgainstRealCluster(t *testing.T) {
	env := testenv.Start(t)

	t.Run("not installed", func(t *testing.T) {
		r := runPlugin(t, "", "version", "--kubeconfig", env.Kubeconfig)
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Equal(t, "Client Version: v1.2.3-test\nFlux Version: not installed\n", r.Stdout)
	})

	t.Run("expired credentials", func(t *testing.T) {
		r := runPlugin(t, "", "version", "--kubeconfig", env.ExpiredKubeconfig(t))
		assert.Equal(t, 1, r.Code)
		assert.Equal(t, "error: the cluster at "+env.Host+" rejected the credentials (expired or invalid): refresh them in your kubeconfig\n", r.Stderr)
	})

	t.Run("user without access to CRDs", func(t *testing.T) {
		r := runPlugin(t, "", "version", "--kubeconfig", env.UserKubeconfig(t, "alice"))
		assert.Equal(t, 1, r.Code)
		assert.Contains(t, r.Stderr, `User "alice" cannot get resource "customresourcedefinitions"`)
	})

	t.Run("flux install", func(t *testing.T) {
		env.InstallFlux(t, testenv.FluxInstall{Version: "v2.6.4", CRDsOnly: true})
		r := runPlugin(t, "", "version", "--kubeconfig", env.Kubeconfig)
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Equal(t, "Client Version: v1.2.3-test\nFlux Version: v2.6.4\nManaged By: flux install\nNamespace: flux-system\n", r.Stdout)
	})

	t.Run("bootstrapped", func(t *testing.T) {
		// kustomize-controller re-applies the CRDs with its owner labels after the first reconcile.
		env.InstallFlux(t, testenv.FluxInstall{Version: "v2.7.5", CRDsOnly: true, Bootstrapped: true, Namespace: "flux-system"})
		r := runPlugin(t, "", "version", "--kubeconfig", env.Kubeconfig, "-o", "yaml")
		require.Equal(t, 0, r.Code, r.Stderr)
		var report VersionReport
		require.NoError(t, yaml.Unmarshal([]byte(r.Stdout), &report))
		require.NotNil(t, report.Flux)
		assert.Equal(t, installation.Installation{Installed: true, Version: "v2.7.5", ManagedBy: "flux bootstrap", Namespace: "flux-system"}, *report.Flux)
	})
}
