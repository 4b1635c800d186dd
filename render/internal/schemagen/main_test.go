package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The committed subset must be what the generator writes from the kyaml
// version in go.mod; after a kyaml upgrade run go generate ./render.
func TestSubsetIsUpToDate(t *testing.T) {
	out := filepath.Join(t.TempDir(), "k8sschema.json")
	require.NoError(t, run(out))
	want, err := os.ReadFile(out)
	require.NoError(t, err)
	got, err := os.ReadFile(filepath.Join("..", "..", "k8sschema.json"))
	require.NoError(t, err)
	require.Equal(t, string(want), string(got), "render/k8sschema.json is stale: run go generate ./render")
}
