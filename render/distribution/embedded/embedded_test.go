package embedded

import (
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestArchiveAbsentTellsWhatToDo(t *testing.T) {
	// The committed state of data/: only the README.
	_, err := archiveFrom(fstest.MapFS{"data/README.md": {Data: []byte("generated")}})
	require.ErrorIs(t, err, ErrMissing)
	assert.Contains(t, err.Error(), "--distribution")
	assert.Contains(t, err.Error(), "oci://")
	assert.Contains(t, err.Error(), "FLUX_DISTRIBUTION_DIR")
}

func TestArchiveMatchesGeneratedFile(t *testing.T) {
	onDisk, statErr := os.ReadFile(filepath.Join("data", FileName))
	got, err := Archive()
	if os.IsNotExist(statErr) {
		require.ErrorIs(t, err, ErrMissing, "no generated file: the binary must report the missing distribution")
		return
	}
	require.NoError(t, statErr)
	require.NoError(t, err)
	assert.Equal(t, onDisk, got, "the embedded bytes are the generated file (rebuild after go generate)")
	assert.Equal(t, []byte{0x1f, 0x8b}, got[:2], "gzip")
}
