package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution/internal/archive"
	"github.com/fluxinstance/kubectl-fluxinstance/test/distribution/distdata"
)

func TestGenerateIsDeterministicAndIndexed(t *testing.T) {
	dir := distdata.Dir(t)
	a, n, err := generate(dir)
	require.NoError(t, err)
	b, _, err := generate(dir)
	require.NoError(t, err)
	assert.Equal(t, a, b, "same input, same bytes")

	idx, _, ok, err := archive.ReadIndex(a)
	require.NoError(t, err)
	require.True(t, ok)
	var versions []string
	for v := range idx.Versions {
		versions = append(versions, v)
	}
	sort.Strings(versions)
	assert.Equal(t, distdata.Versions(t, dir), versions)

	// Any tar tool reads it as one stream; only layout yaml files (and the index) are kept.
	zr, err := gzip.NewReader(bytes.NewReader(a))
	require.NoError(t, err)
	tr := tar.NewReader(zr)
	count := 0
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		if hdr.Name == archive.IndexName {
			continue
		}
		count++
		assert.Regexp(t, `^flux(-images)?/v\d+\.\d+\.\d+/[^/]+\.yaml$`, hdr.Name)
		assert.Equal(t, int64(946684800), hdr.ModTime.Unix(), hdr.Name)
	}
	assert.Equal(t, n, count)
}

func TestGenerateRejectsOtherDirectories(t *testing.T) {
	_, _, err := generate(t.TempDir())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not a distribution directory")
}
