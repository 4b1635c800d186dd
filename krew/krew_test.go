package krew

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSemverVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3":                         "v1.2.3",
		"v0.0.0-dev":                     "v0.0.0-dev",
		"v1.2.3-rc.1":                    "v1.2.3-rc.1",
		"v1.2.3+meta":                    "v1.2.3+meta",
		"1.2.3":                          "v1.2.3",
		"v1.2.3-4-gabc1234":              "v1.2.4-dev.4.gabc1234",
		"v1.2.3-4-gabc1234-dirty":        "v1.2.4-dev.4.gabc1234.dirty",
		"v1.2.3-rc.1-12-g0123abc":        "v1.2.3-rc.1.dev.12.g0123abc",
		"v1.2.3-rc.01-2-gabc":            "v1.2.3-rc.1.dev.2.gabc",
		"v1.2.3-dirty":                   "v1.2.4-dev.0.dirty",
		"v1.2.3-rc.1-dirty":              "v1.2.3-rc.1.dev.0.dirty",
		"v0.0.0-dev-dirty":               "v0.0.0-dev.dev.0.dirty",
		"v1.2":                           "v0.0.0-dev.v1.2",
		"abc1234":                        "v0.0.0-dev.abc1234",
		"v1.02.3":                        "v0.0.0-dev.v1.2.3",
		"":                               "v0.0.0-dev",
		"release/2026 01":                "v0.0.0-dev.release.2026.1",
		"v01.2.3-4-gabc":                 "v1.2.4-dev.4.gabc",
		"v1.2.99999999999999999999-1-ga": "v1.2.99999999999999999999-dev.1.ga",
	} {
		got := SemverVersion(in)
		assert.Equal(t, want, got, "SemverVersion(%q)", in)
		if want != "v1.2.99999999999999999999-dev.1.ga" {
			assert.True(t, IsStrictSemver(got), "SemverVersion(%q) = %q is not strict semver", in, got)
		}
	}
	for _, bad := range []string{"1.2.3", "v1.2", "v01.2.3", "v1.2.3-", "v1.2.3-01", "v1.2.3-a..b", "v1.2.3+"} {
		assert.False(t, IsStrictSemver(bad), bad)
	}
}

func TestPlatforms(t *testing.T) {
	p, err := ParsePlatform("windows/amd64")
	require.NoError(t, err)
	assert.Equal(t, "kubectl-fluxinstance_windows_amd64.zip", p.ArchiveName())
	assert.Equal(t, "kubectl-fluxinstance.exe", p.Binary())
	p, err = ParsePlatform("darwin/arm64")
	require.NoError(t, err)
	assert.Equal(t, "kubectl-fluxinstance_darwin_arm64.tar.gz", p.ArchiveName())
	assert.Equal(t, "kubectl-fluxinstance", p.Binary())
	for _, bad := range []string{"linux", "linux/", "/amd64", "linux/amd64/v2", ""} {
		_, err := ParsePlatform(bad)
		assert.Error(t, err, bad)
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600))
	}
}

// Archives depend only on contents, names, modes and the given time: not on the files' own
// timestamps, permissions or the order they are listed in.
func TestArchivesAreReproducible(t *testing.T) {
	for _, platform := range []string{"linux/amd64", "windows/amd64"} {
		t.Run(platform, func(t *testing.T) {
			p, err := ParsePlatform(platform)
			require.NoError(t, err)
			build := func(touch time.Time, reverse bool) []byte {
				src, out := t.TempDir(), t.TempDir()
				writeFiles(t, src, map[string]string{"bin": "binary", "LICENSE": "license", "README.md": "readme"})
				files := []File{
					{Name: p.Binary(), Source: filepath.Join(src, "bin"), Executable: true},
					{Name: "LICENSE", Source: filepath.Join(src, "LICENSE")},
					{Name: "README.md", Source: filepath.Join(src, "README.md")},
				}
				for _, f := range files {
					require.NoError(t, os.Chtimes(f.Source, touch, touch))
				}
				if reverse {
					files[0], files[2] = files[2], files[0]
				}
				require.NoError(t, WriteArchive(filepath.Join(out, p.ArchiveName()), p, files, time.Unix(1700000000, 0)))
				data, err := os.ReadFile(filepath.Join(out, p.ArchiveName()))
				require.NoError(t, err)
				return data
			}
			a := build(time.Unix(1, 0), false)
			b := build(time.Now(), true)
			assert.True(t, bytes.Equal(a, b), "two builds of the same inputs differ")
		})
	}
}

func TestWriteArchiveRejectsDuplicates(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a": "a"})
	f := File{Name: "a", Source: filepath.Join(dir, "a")}
	err := WriteArchive(filepath.Join(dir, "out.tar.gz"), Platform{OS: "linux", Arch: "amd64"}, []File{f, f}, time.Unix(0, 0))
	assert.ErrorContains(t, err, "listed twice")
	assert.NoFileExists(t, filepath.Join(dir, "out.tar.gz"))
}

func TestChecksumsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"b.zip": "b", "a.tar.gz": "a"})
	require.NoError(t, WriteChecksums(dir, []string{"b.zip", "a.tar.gz"}))
	data, err := os.ReadFile(filepath.Join(dir, "checksums.txt"))
	require.NoError(t, err)
	// sha256sum's own format, sorted by name.
	assert.Equal(t, "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb  a.tar.gz\n"+
		"3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d  b.zip\n", string(data))
	sums, err := ReadChecksums(filepath.Join(dir, "checksums.txt"))
	require.NoError(t, err)
	assert.Len(t, sums, 2)

	writeFiles(t, dir, map[string]string{"bad.txt": "nonsense\n"})
	_, err = ReadChecksums(filepath.Join(dir, "bad.txt"))
	assert.ErrorContains(t, err, "bad.txt:1")
}

func fakeChecksums() map[string]string {
	sums := map[string]string{}
	for i, p := range ReleasePlatforms() {
		sums[p.ArchiveName()] = strings.Repeat(string(rune('a'+i)), 64)
	}
	return sums
}

func readTemplate(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	require.NoError(t, err)
	return data
}

func TestRenderManifest(t *testing.T) {
	tmpl := readTemplate(t, "fluxinstance.yaml")
	out, err := RenderManifest(tmpl, ManifestInput{Version: "v1.2.3", URLBase: "https://example.com/dl/v1.2.3/", Checksums: fakeChecksums()})
	require.NoError(t, err)
	assert.NotContains(t, string(out), "{{")
	assert.True(t, strings.HasPrefix(string(out), "apiVersion: "), "the template's comment must not reach the manifest")
	m, err := ParseManifest(out)
	require.NoError(t, err)
	assert.Equal(t, "v1.2.3", m.Spec.Version)
	require.Len(t, m.Spec.Platforms, len(ReleasePlatforms()))
	for i, p := range ReleasePlatforms() {
		e := m.Spec.Platforms[i]
		assert.Equal(t, map[string]string{"os": p.OS, "arch": p.Arch}, e.Selector.MatchLabels)
		assert.Equal(t, "https://example.com/dl/v1.2.3/"+p.ArchiveName(), e.URI)
		assert.Equal(t, fakeChecksums()[p.ArchiveName()], e.SHA256)
		assert.Equal(t, p.Binary(), e.Bin)
	}

	t.Run("a built archive without a platform entry", func(t *testing.T) {
		sums := fakeChecksums()
		sums["kubectl-fluxinstance_linux_riscv64.tar.gz"] = strings.Repeat("f", 64)
		_, err := RenderManifest(tmpl, ManifestInput{Version: "v1.2.3", URLBase: "https://x", Checksums: sums})
		assert.ErrorContains(t, err, "no platform entry for kubectl-fluxinstance_linux_riscv64.tar.gz")
	})
	t.Run("a platform entry without an archive", func(t *testing.T) {
		sums := fakeChecksums()
		delete(sums, "kubectl-fluxinstance_darwin_arm64.tar.gz")
		_, err := RenderManifest(tmpl, ManifestInput{Version: "v1.2.3", URLBase: "https://x", Checksums: sums})
		assert.ErrorContains(t, err, "darwin/arm64 but kubectl-fluxinstance_darwin_arm64.tar.gz was not built")
	})
	t.Run("no URL base", func(t *testing.T) {
		_, err := RenderManifest(tmpl, ManifestInput{Version: "v1.2.3", Checksums: fakeChecksums()})
		assert.ErrorContains(t, err, "KREW_URL_BASE")
	})
}

func TestCheckManifestCatchesReviewProblems(t *testing.T) {
	good, err := RenderManifest(readTemplate(t, "fluxinstance.yaml"), ManifestInput{Version: "v1.2.3", URLBase: "https://x", Checksums: fakeChecksums()})
	require.NoError(t, err)
	require.NoError(t, CheckManifest(good))

	for name, c := range map[string]struct{ old, new, want string }{
		"long short description": {"shortDescription: Render, apply and migrate Flux via FluxInstance",
			"shortDescription: " + strings.Repeat("x", 51), "shortDescription has 51 characters"},
		"long description line": {"  description: |\n", "  description: |\n    " + strings.Repeat("y", 81) + "\n", "line 1 has 81 characters"},
		"loose version":         {"version: v1.2.3", "version: 1.2.3", `spec.version "1.2.3"`},
		"unquoted sha256":       {`sha256: "` + strings.Repeat("a", 64) + `"`, "sha256: " + strings.Repeat("a", 64), "must be quoted"},
		"overlapping selectors": {"os: linux\n        arch: arm64", "os: linux\n        arch: amd64", "both select linux/amd64"},
		"wrong name":            {"name: fluxinstance", "name: flux", `metadata.name is "flux"`},
	} {
		t.Run(name, func(t *testing.T) {
			require.Contains(t, string(good), c.old)
			bad := strings.Replace(string(good), c.old, c.new, 1)
			assert.ErrorContains(t, CheckManifest([]byte(bad)), c.want)
		})
	}
}

// .krew.yaml (krew-release-bot) must describe the same plugin as krew/fluxinstance.yaml: render
// both for one release and compare.
func TestReleaseBotTemplateMatches(t *testing.T) {
	const tag = "v1.2.3"
	sums := fakeChecksums()
	ours, err := RenderManifest(readTemplate(t, "fluxinstance.yaml"), ManifestInput{
		Version: tag, URLBase: "https://github.com/fluxinstance/kubectl-fluxinstance/releases/download/" + tag, Checksums: sums,
	})
	require.NoError(t, err)

	// The bot's addURIAndSha expands {{ .TagName }} in the URL, downloads it and writes uri and
	// sha256 at the platform's indentation.
	funcs := template.FuncMap{"addURIAndSha": func(url, tag string) string {
		url = strings.ReplaceAll(url, "{{ .TagName }}", tag)
		return "uri: " + url + "\n    sha256: \"" + sums[filepath.Base(url)] + "\""
	}}
	bot, err := template.New(".krew.yaml").Funcs(funcs).Parse(string(readTemplate(t, "../.krew.yaml")))
	require.NoError(t, err)
	var theirs bytes.Buffer
	require.NoError(t, bot.Execute(&theirs, map[string]string{"TagName": tag}))
	require.NoError(t, CheckManifest(theirs.Bytes()))

	a, err := ParseManifest(ours)
	require.NoError(t, err)
	b, err := ParseManifest(theirs.Bytes())
	require.NoError(t, err)
	assert.Equal(t, a, b)
}
