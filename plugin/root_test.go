package plugin

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRootHelpSaysKubectlFluxinstance(t *testing.T) {
	r := runPlugin(t, "", "--help")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, "kubectl fluxinstance [command]")
	assert.NotContains(t, r.Stdout, "kubectl-fluxinstance")
	// kubectl's connection flags, under kubectl's names.
	for _, flag := range []string{"--kubeconfig", "--context", "--cluster", "--user", "--namespace", "--as", "--as-group", "--request-timeout", "--certificate-authority", "--insecure-skip-tls-verify"} {
		assert.Contains(t, r.Stdout, flag)
	}

	r = runPlugin(t, "", "version", "--help")
	require.Equal(t, 0, r.Code)
	assert.Contains(t, r.Stdout, "kubectl fluxinstance version [flags]")
}

func TestUsageErrorsExitTwoWithoutUsageText(t *testing.T) {
	for name, args := range map[string][]string{
		"unknown flag":       {"version", "--bogus"},
		"unknown command":    {"bogus"},
		"extra argument":     {"version", "extra"},
		"bad output format":  {"version", "--client", "-o", "xml"},
		"flag without value": {"version", "-o"},
	} {
		t.Run(name, func(t *testing.T) {
			r := runPlugin(t, "", args...)
			assert.Equal(t, 2, r.Code)
			assert.Regexp(t, `^error: `, r.Stderr)
			assert.NotContains(t, r.Stderr, "Flags:", "usage errors must not dump the help text")
			assert.Empty(t, r.Stdout)
		})
	}
}
