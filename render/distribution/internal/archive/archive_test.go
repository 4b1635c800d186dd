package archive

import (
	"bytes"
	"compress/gzip"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCleanName(t *testing.T) {
	for in, want := range map[string]string{
		"./":                     "",
		"./flux/v2.7.5/a.yaml":   "flux/v2.7.5/a.yaml",
		"flux//v2.7.5/./a.yaml":  "flux/v2.7.5/a.yaml",
		"flux-images/v2.7.5/x/":  "flux-images/v2.7.5/x",
		"dir/..hidden/file.yaml": "dir/..hidden/file.yaml",
	} {
		got, err := CleanName(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for in, want := range map[string]string{
		"":                 "empty",
		"/etc/passwd":      "absolute",
		"../x":             "escapes",
		"a/../../x":        "escapes",
		"a/..":             "escapes",
		`flux\..\x`:        "backslash",
		"C:/Windows/x.yml": "drive-letter",
	} {
		_, err := CleanName(in)
		require.ErrorContains(t, err, want, in)
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	files := []File{
		{Name: "flux/v2.7.5/b.yaml", Data: []byte("b")},
		{Name: "flux/v2.7.5/a.yaml", Data: []byte("a")},
		{Name: "flux/v2.6.0/a.yaml", Data: []byte("old")},
		{Name: "flux-images/v2.7.5/upstream-alpine.yaml", Data: []byte("images")},
	}
	var buf bytes.Buffer
	require.NoError(t, Write(&buf, files, gzip.BestCompression))
	data := buf.Bytes()

	idx, base, ok, err := ReadIndex(data)
	require.NoError(t, err)
	require.True(t, ok)
	require.Len(t, idx.Versions, 2)

	read := func(m Member) map[string]string {
		r, err := MemberReader(data, base, m)
		require.NoError(t, err)
		out := map[string]string{}
		require.NoError(t, Walk(r, DefaultLimits(), func(name string, size int64, body io.Reader) error {
			b, err := ReadAll(body, size)
			out[name] = string(b)
			return err
		}))
		return out
	}
	assert.Equal(t, map[string]string{"flux/v2.7.5/a.yaml": "a", "flux/v2.7.5/b.yaml": "b"}, read(idx.Versions["v2.7.5"]))
	assert.Equal(t, map[string]string{"flux/v2.6.0/a.yaml": "old"}, read(idx.Versions["v2.6.0"]))
	assert.Equal(t, map[string]string{"flux-images/v2.7.5/upstream-alpine.yaml": "images"}, read(idx.Images))

	// The whole file is one valid tar stream for any other reader.
	zr, err := gzip.NewReader(bytes.NewReader(data))
	require.NoError(t, err)
	var names []string
	require.NoError(t, Walk(zr, DefaultLimits(), func(name string, _ int64, _ io.Reader) error {
		names = append(names, name)
		return nil
	}))
	assert.Equal(t, []string{IndexName, "flux-images/v2.7.5/upstream-alpine.yaml", "flux/v2.6.0/a.yaml",
		"flux/v2.7.5/a.yaml", "flux/v2.7.5/b.yaml"}, names)
}

func TestWriteWithoutImagesAndRejectsOtherNames(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, Write(&buf, []File{{Name: "flux/v2.7.5/a.yaml", Data: []byte("a")}}, gzip.BestSpeed))
	idx, _, ok, err := ReadIndex(buf.Bytes())
	require.NoError(t, err)
	require.True(t, ok)
	assert.Zero(t, idx.Images.Size)

	require.ErrorContains(t, Write(io.Discard, []File{{Name: "README.md"}}, gzip.BestSpeed), `"README.md"`)
	require.ErrorContains(t, Write(io.Discard, []File{{Name: "other/v1.0.0/a.yaml"}}, gzip.BestSpeed), "not under flux/")
}

func TestReadIndexOfPlainArchive(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err := zw.Write(make([]byte, 1024)) // an empty tar stream
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	_, _, ok, err := ReadIndex(buf.Bytes())
	require.NoError(t, err)
	assert.False(t, ok)
}
