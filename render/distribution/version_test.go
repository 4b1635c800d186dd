package distribution

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestResolve(t *testing.T) {
	versions := []string{"v2.2.3", "v2.6.4", "v2.7.0", "v2.7.5", "v2.8.0", "v2.9.4"}
	d := &Distribution{description: "test", versions: versions}
	for _, tc := range []struct{ constraint, want string }{
		{"2.7.5", "v2.7.5"},
		{"v2.7.5", "v2.7.5"},
		{" 2.7.0 ", "v2.7.0"},
		{"=2.7.5", "v2.7.5"},
		{"2.x", "v2.9.4"},
		{"2.7.x", "v2.7.5"},
		{"v2.6.x", "v2.6.4"},
		{">=2.6.0 <2.8.0", "v2.7.5"},
		{">=v2.6.0 <v2.8.0", "v2.7.5"},
		{"<2.7.0", "v2.6.4"},
		{"<2.7.0 || >=2.9.0", "v2.9.4"},
		{"*", "v2.9.4"},
	} {
		t.Run(tc.constraint, func(t *testing.T) {
			got, err := d.Resolve(tc.constraint)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestResolveErrors(t *testing.T) {
	d := &Distribution{description: "dir /data", versions: []string{"v2.6.4", "v2.7.5"}}

	_, err := d.Resolve("3.x")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"3.x"`)
	assert.Contains(t, err.Error(), "dir /data")
	assert.Contains(t, err.Error(), "available: v2.6.4, v2.7.5")

	_, err = d.Resolve("2.5.0")
	require.ErrorContains(t, err, "available: v2.6.4, v2.7.5")

	_, err = d.Resolve("banana")
	require.ErrorContains(t, err, `distribution.version "banana" is not a valid version or range`)

	_, err = d.Resolve("")
	require.ErrorContains(t, err, "distribution.version is empty")
}

func TestReleaseUnknownVersionListsAvailable(t *testing.T) {
	d := &Distribution{description: "dir /data", versions: []string{"v2.6.4", "v2.7.5"},
		load: func(string) (*Release, error) { t.Fatal("must not load"); return nil, nil }}
	_, err := d.Release("v2.8.0")
	require.ErrorContains(t, err, "dir /data has no Flux version v2.8.0; available: v2.6.4, v2.7.5")
}

func TestSortVersions(t *testing.T) {
	vs := []string{"v2.10.0", "v2.9.4", "v2.2.3", "v2.9.10"}
	sortVersions(vs)
	assert.Equal(t, []string{"v2.2.3", "v2.9.4", "v2.9.10", "v2.10.0"}, vs)
}

func TestPinsMinor(t *testing.T) {
	for constraint, want := range map[string]bool{
		"2.9.4": true, "v2.9.4": true, "2.9.x": true, ">=2.9.0 <2.10.0": true,
		"2.x": false, "*": false, ">=2.7.0": false, ">=2.8.0 <2.10.0": false, "<2.10.0": false,
		"not a version": false,
	} {
		assert.Equal(t, want, PinsMinor(constraint, "v2.9.4"), constraint)
	}
}
