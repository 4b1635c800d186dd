package installation

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// The records themselves come from the real Helm in test/e2e/helm; this is the naming of the values.
func TestValuePaths(t *testing.T) {
	values := map[string]any{
		"logLevel":         "debug",
		"imagePullSecrets": []any{map[string]any{"name": "regcred"}},
		"policies":         map[string]any{"create": false},
		"sourceController": map[string]any{"resources": map[string]any{"limits": map[string]any{"cpu": "2"}}, "labels": map[string]any{}},
	}
	assert.Equal(t, []string{"imagePullSecrets", "logLevel", "policies.create", "sourceController.labels",
		"sourceController.resources.limits.cpu"}, valuePaths("", values, nil))
	assert.Empty(t, valuePaths("", nil, nil))
}
