package e2e

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

func TestKubectlDiscoversThePlugin(t *testing.T) {
	env := testenv.Start(t)
	plugin := newPlugin(t)
	ctx := context.Background()

	out, err := plugin.kubectl(ctx, env, "plugin", "list", "--name-only")
	require.NoError(t, err, out)
	assert.Contains(t, out, "kubectl-fluxinstance")

	out, err = plugin.kubectl(ctx, env, "fluxinstance", "--help")
	require.NoError(t, err, out)
	assert.Contains(t, out, "kubectl fluxinstance [command]")

	out, err = plugin.kubectl(ctx, env, "fluxinstance", "version")
	require.NoError(t, err, out)
	assert.Equal(t, "Client Version: v9.9.9-e2e\nFlux Version: not installed\n", out)

	env.InstallFlux(t, testenv.FluxInstall{Version: "v2.8.8", CRDsOnly: true, ManagedBy: "Helm"})
	out, err = plugin.kubectl(ctx, env, "fluxinstance", "version")
	require.NoError(t, err, out)
	assert.Equal(t, "Client Version: v9.9.9-e2e\nFlux Version: v2.8.8\nManaged By: Helm\n", out)

	// kubectl passes the plugin's exit code through: 2 for a usage error.
	out, err = plugin.kubectl(ctx, env, "fluxinstance", "version", "--output=xml")
	require.Error(t, err)
	assert.Contains(t, out, "error: --output must be one of json, yaml")
	assert.Equal(t, 2, exitCode(err))
}

func exitCode(err error) int {
	type exitCoder interface{ ExitCode() int }
	if e, ok := err.(exitCoder); ok {
		return e.ExitCode()
	}
	return -1
}
