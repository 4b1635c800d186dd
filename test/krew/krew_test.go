// Package krew_test checks the Krew distribution end to end: `make dist krew` builds the archives
// and renders the plugin manifest, krew's own validator accepts it, the real krew installs it for
// every platform, and kubectl runs the installed plugin and its completion helper.
//
// The test compiles two of the five release platforms (DIST_BUILD_PLATFORMS), not all five: from a
// cold Go cache each cross build compiles the whole dependency graph again, several minutes apiece on
// two cores, which brought this package near go test's timeout. What each platform's archive proves:
//
//   - the host's (linux/amd64 in CI): the real release build (CGO_ENABLED=0, -trimpath, LDFLAGS)
//     packed by release.mk, installed by the real krew and run through kubectl, with its completion
//     helper; its executable format is checked.
//   - crossPlatform's (windows/amd64, or linux/amd64 on a Windows host): a real cross build, whose
//     executable format (PE) and architecture are checked. Windows is the one worth a cross build:
//     it is the only platform with its own archive format (.zip), binary name (.exe), executable
//     format and non-Unix build constraints, so it shows that GOOS reaches the build and that the
//     plugin and its dependencies compile for an OS other than the host's. Darwin and the arm64
//     variants add only another GOOS/GOARCH value to the same pure-Go (CGO_ENABLED=0) build; the
//     plugin has no OS- or architecture-specific files (checked: see checkSamePluginFiles).
//   - every other platform's: its archive is made by the same release.mk loop and krew/render code
//     from a stand-in file (a line of text naming the platform, see standIn) in place of the binary.
//     It proves the packaging (entries, modes, mtimes, gzip header), checksums.txt, the manifest
//     entry (selector, URI, sha256, bin) and that krew picks exactly that archive for KREW_OS and
//     KREW_ARCH (the stand-ins differ, so two swapped entries fail on the checksum); the test checks
//     that the packed file is the stand-in byte for byte. It does not prove that the plugin builds
//     for that platform: `make dist` (the release) compiles all five.
package krew_test

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"debug/macho"
	"debug/pe"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxinstance/kubectl-fluxinstance/krew"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

const (
	// testVersion is `git describe` output past a tag, so that the test covers the mapping to the
	// strict semver krew requires, and the stamping of the binary with the raw version.
	testVersion = "v1.2.3-4-gabcdef0-dirty"
	wantSemver  = "v1.2.4-dev.4.gabcdef0.dirty"
	// testEpoch stands in for the commit time (SOURCE_DATE_EPOCH).
	testEpoch = 1700000000
	// defaultURLBase is release.mk's KREW_URL_BASE for testVersion.
	defaultURLBase = "https://github.com/fluxinstance/kubectl-fluxinstance/releases/download/" + testVersion
)

// hostPlatform is the platform the test runs on: its archive is installed and run.
var hostPlatform = krew.Platform{OS: runtime.GOOS, Arch: runtime.GOARCH}

// crossPlatform is the one foreign platform the test compiles (see the package comment).
func crossPlatform() krew.Platform {
	if hostPlatform.Windows() {
		return krew.Platform{OS: "linux", Arch: "amd64"}
	}
	return krew.Platform{OS: "windows", Arch: "amd64"}
}

// compiled reports whether the test compiles p's binary rather than packing a stand-in.
func compiled(p krew.Platform) bool { return p == hostPlatform || p == crossPlatform() }

// standIn is what the archive of a platform that the test does not compile carries in place of the
// binary: distinct per platform, so that the archives (and their checksums) differ.
func standIn(p krew.Platform) string {
	return "stand-in for " + krew.BinaryBase + " on " + p.String() + ", packed by test/krew: not a build\n"
}

// fixture is one `make dist krew` run, shared by the tests of this package.
type fixture struct {
	root, dist, manifest string
	krewBin              string // directory holding krew and validate-krew-manifest
	kubectl              string
}

func setup(t *testing.T) *fixture {
	t.Helper()
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	kubectlDir := testenv.RequireBinDir(t)
	trackInputs(t, root)

	f := &fixture{root: root, kubectl: filepath.Join(kubectlDir, "kubectl")}
	f.krewBin = buildKrewTools(t, root)

	requireReleasePlatform(t, hostPlatform)
	var build []string
	standIns := t.TempDir()
	for _, p := range krew.ReleasePlatforms() {
		if compiled(p) {
			build = append(build, p.String())
			continue
		}
		path := filepath.Join(standIns, p.OS+"-"+p.Arch, p.Binary())
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(standIn(p)), 0o755))
	}
	require.Len(t, build, 2, "the host and one cross platform")

	f.dist = filepath.Join(t.TempDir(), "dist")
	start := time.Now()
	cmd := exec.Command("make", "--no-print-directory", "dist", "krew",
		"DIST="+f.dist, "VERSION="+testVersion, "SOURCE_DATE_EPOCH="+strconv.Itoa(testEpoch),
		"DIST_BUILD_PLATFORMS="+strings.Join(build, " "), "DIST_STANDIN_DIR="+standIns)
	cmd.Dir = root
	// The manifest must get release.mk's default URL pattern, whatever the caller's environment
	// says; and under `make test` the outer make's flags and command-line variables (MAKEFLAGS)
	// must not leak into this run.
	cmd.Env = withoutEnv(os.Environ(), "KREW_URL_BASE", "DIST", "DIST_PLATFORMS", "DIST_BUILD_PLATFORMS",
		"DIST_STANDIN_DIR", "DIST_FILES", "VERSION", "SOURCE_DATE_EPOCH",
		"MAKEFLAGS", "MFLAGS", "GNUMAKEFLAGS", "MAKEOVERRIDES", "MAKELEVEL")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "make dist krew:\n%s", out)
	t.Logf("make dist krew (compiling %s): %s", strings.Join(build, ", "), time.Since(start).Round(time.Millisecond))
	f.manifest = filepath.Join(f.dist, "krew", "fluxinstance.yaml")
	return f
}

func TestKrewDistribution(t *testing.T) {
	f := setup(t)

	t.Run("archives", func(t *testing.T) { checkArchives(t, f) })
	t.Run("manifest", func(t *testing.T) { checkManifest(t, f) })
	t.Run("validate-krew-manifest", func(t *testing.T) {
		// -skip-install: the validator would download the URIs of a release that does not exist
		// yet; the installs below cover the same ground from the local archives.
		out, err := exec.Command(filepath.Join(f.krewBin, "validate-krew-manifest"),
			"-manifest", f.manifest, "-skip-install").CombinedOutput()
		require.NoError(t, err, "%s", out)
		assert.Contains(t, string(out), "structural validation OK")
		assert.Contains(t, string(out), "no overlapping spec.platform[].selector")
	})
	t.Run("install and run", func(t *testing.T) { checkInstallAndRun(t, f) })
	t.Run("every platform selects its archive", func(t *testing.T) { checkPlatforms(t, f) })
	t.Run("uncompiled platforms build the host's plugin files", func(t *testing.T) { checkSamePluginFiles(t, f) })
}

// checkSamePluginFiles backs the choice of platforms to compile: for each release platform, the
// plugin's own packages (this module's, as linked into cmd/kubectl-fluxinstance) must select the
// same source files as for the host, so that the host build compiles the same plugin code. It does
// not cover the dependencies' platform-specific files; only `make dist` compiles those.
func checkSamePluginFiles(t *testing.T, f *fixture) {
	files := func(p krew.Platform) string {
		cmd := exec.Command("go", "list", "-deps",
			"-f", "{{if .Module}}{{if .Module.Main}}{{.ImportPath}}: {{.GoFiles}} {{.EmbedFiles}}{{end}}{{end}}",
			"./cmd/kubectl-fluxinstance")
		cmd.Dir = f.root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Arch)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr // "go: downloading ..." lines
		out, err := cmd.Output()
		require.NoError(t, err, "go list for %s:\n%s", p, stderr.String())
		return string(out)
	}
	host := files(hostPlatform)
	require.Contains(t, host, "github.com/fluxinstance/kubectl-fluxinstance/cmd/kubectl-fluxinstance:")
	for _, p := range krew.ReleasePlatforms() {
		if p != hostPlatform {
			assert.Equal(t, host, files(p), "%s selects other plugin files than the host: compile it in this test", p)
		}
	}
}

func checkArchives(t *testing.T, f *fixture) {
	sums, err := krew.ReadChecksums(filepath.Join(f.dist, "checksums.txt"))
	require.NoError(t, err)
	var want []string
	for _, p := range krew.ReleasePlatforms() {
		want = append(want, p.ArchiveName())
	}
	got := make([]string, 0, len(sums))
	for name := range sums {
		got = append(got, name)
	}
	assert.ElementsMatch(t, want, got, "checksums.txt must list exactly the release archives")

	for _, p := range krew.ReleasePlatforms() {
		t.Run(p.String(), func(t *testing.T) {
			path := filepath.Join(f.dist, p.ArchiveName())
			sum, err := krew.SHA256File(path)
			require.NoError(t, err)
			assert.Equal(t, sum, sums[p.ArchiveName()], "checksums.txt")

			entries := readArchive(t, path, p)
			var names []string
			for _, e := range entries {
				names = append(names, e.name)
				assert.Equal(t, int64(testEpoch), e.mtime.Unix(), "%s: mtime must be the commit time", e.name)
			}
			assert.Equal(t, []string{"LICENSE", "README.md", p.Binary(), krew.CompletionHelper}, sortedCopy(names))
			assert.True(t, sort.StringsAreSorted(names), "entries must be sorted: %v", names)
			for _, e := range entries {
				switch e.name {
				case p.Binary(), krew.CompletionHelper:
					assert.Equal(t, fs.FileMode(0o755), e.mode, e.name)
				default:
					assert.Equal(t, fs.FileMode(0o644), e.mode, e.name)
				}
			}
			license, err := os.ReadFile(filepath.Join(f.root, "LICENSE"))
			require.NoError(t, err)
			assert.Equal(t, string(license), entryData(entries, "LICENSE"))
			helper, err := os.ReadFile(filepath.Join(f.root, "krew", krew.CompletionHelper))
			require.NoError(t, err)
			assert.Equal(t, string(helper), entryData(entries, krew.CompletionHelper))
			checkBinary(t, []byte(entryData(entries, p.Binary())), p)
		})
	}
}

func checkManifest(t *testing.T, f *fixture) {
	data, err := os.ReadFile(f.manifest)
	require.NoError(t, err)
	require.NoError(t, krew.CheckManifest(data))
	m, err := krew.ParseManifest(data)
	require.NoError(t, err)
	assert.Equal(t, "fluxinstance", m.Metadata.Name)
	assert.Equal(t, wantSemver, m.Spec.Version)
	assert.NotContains(t, m.Spec.Description, "kubectl fluxinstance ", "no usage examples in the description")
	sums, err := krew.ReadChecksums(filepath.Join(f.dist, "checksums.txt"))
	require.NoError(t, err)
	require.Len(t, m.Spec.Platforms, len(krew.ReleasePlatforms()))
	for i, p := range krew.ReleasePlatforms() {
		e := m.Spec.Platforms[i]
		assert.Equal(t, map[string]string{"os": p.OS, "arch": p.Arch}, e.Selector.MatchLabels)
		assert.Equal(t, defaultURLBase+"/"+p.ArchiveName(), e.URI)
		assert.Equal(t, sums[p.ArchiveName()], e.SHA256)
		assert.Equal(t, p.Binary(), e.Bin)
	}
}

// checkInstallAndRun installs the archive for this machine with the real krew and runs the plugin
// and its completion helper through the harness's kubectl, as a user would.
func checkInstallAndRun(t *testing.T, f *fixture) {
	host := hostPlatform
	krewRoot := t.TempDir()
	out, err := f.krewInstall(t, krewRoot, host, host)
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), `Installed plugin: fluxinstance`)
	assert.Contains(t, string(out), "shell completion", "the caveats must reach the user")

	store := filepath.Join(krewRoot, "store", "fluxinstance", wantSemver)
	for _, name := range []string{"LICENSE", "README.md", krew.CompletionHelper, host.Binary()} {
		assert.FileExists(t, filepath.Join(store, name))
	}

	// Only krew's bin directory and the helper's directory on PATH: kubectl must find the plugin
	// there, not some other kubectl-fluxinstance of the developer's.
	helperDir := t.TempDir()
	helper, err := os.ReadFile(filepath.Join(store, krew.CompletionHelper))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(helperDir, krew.CompletionHelper), helper, 0o755))
	env := []string{
		"PATH=" + filepath.Join(krewRoot, "bin") + string(os.PathListSeparator) + helperDir +
			string(os.PathListSeparator) + "/usr/bin" + string(os.PathListSeparator) + "/bin",
		"HOME=" + t.TempDir(),
		"KUBECONFIG=" + filepath.Join(t.TempDir(), "none"),
	}

	cmd := exec.Command(f.kubectl, "fluxinstance", "version", "--client")
	cmd.Env = env
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), testVersion, "the binary must be stamped with VERSION")

	// kubectl >= 1.26 completes plugin arguments through kubectl_complete-<plugin> on PATH.
	cmd = exec.Command(f.kubectl, "__complete", "fluxinstance", "version", "--cl")
	cmd.Env = env
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	var suggestions []string
	for _, line := range strings.Split(string(out), "\n") {
		suggestions = append(suggestions, strings.SplitN(line, "\t", 2)[0])
	}
	assert.Contains(t, suggestions, "--client", "completion through the helper:\n%s", out)
}

// checkPlatforms installs every archive with KREW_OS/KREW_ARCH set to its platform: krew picks the
// platform entry by selector and verifies the archive against that entry's sha256, so a wrong
// selector, URI or checksum fails. The installed binary must be built for the platform, or be the
// platform's stand-in where the test does not compile it.
func checkPlatforms(t *testing.T, f *fixture) {
	for _, p := range krew.ReleasePlatforms() {
		t.Run(p.String(), func(t *testing.T) {
			krewRoot := t.TempDir()
			out, err := f.krewInstall(t, krewRoot, p, p)
			require.NoError(t, err, "%s", out)
			bin, err := os.ReadFile(filepath.Join(krewRoot, "store", "fluxinstance", wantSemver, p.Binary()))
			require.NoError(t, err)
			checkBinary(t, bin, p)
			// krew links (or, for Windows, copies) the binary into its bin directory.
			assert.FileExists(t, filepath.Join(krewRoot, "bin", p.Binary()))
		})
	}
	t.Run("a mismatched archive is refused", func(t *testing.T) {
		out, err := f.krewInstall(t, t.TempDir(), krew.Platform{OS: "darwin", Arch: "arm64"}, krew.Platform{OS: "linux", Arch: "amd64"})
		require.Error(t, err, "krew installed the linux/amd64 archive for darwin/arm64:\n%s", out)
		assert.Contains(t, string(out), "checksum does not match")
	})
}

// krewInstall runs `krew install --manifest --archive` in krewRoot as if on platform target, with
// the archive built for platform archive.
func (f *fixture) krewInstall(t *testing.T, krewRoot string, target, archive krew.Platform) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(f.krewBin, "krew"), "install",
		"--manifest="+f.manifest, "--archive="+filepath.Join(f.dist, archive.ArchiveName()))
	cmd.Env = []string{
		"KREW_ROOT=" + krewRoot,
		"KREW_OS=" + target.OS,
		"KREW_ARCH=" + target.Arch,
		"KREW_NO_UPGRADE_CHECK=1",
		"HOME=" + krewRoot,
		"PATH=" + os.Getenv("PATH"),
	}
	return cmd.CombinedOutput()
}

func requireReleasePlatform(t *testing.T, p krew.Platform) {
	t.Helper()
	for _, r := range krew.ReleasePlatforms() {
		if r == p {
			return
		}
	}
	t.Fatalf("this machine (%s) is not a release platform; the install test cannot run the plugin", p)
}

// checkBinary asserts that the binary packed for p is an executable built for p, or exactly p's
// stand-in when the test does not compile p.
func checkBinary(t *testing.T, data []byte, p krew.Platform) {
	t.Helper()
	if !compiled(p) {
		assert.Equal(t, standIn(p), string(data), "%s: the archive must carry the stand-in given to make dist", p)
		return
	}
	checkBinaryFormat(t, data, p)
}

// checkBinaryFormat asserts that an executable is built for p.
func checkBinaryFormat(t *testing.T, data []byte, p krew.Platform) {
	t.Helper()
	r := bytes.NewReader(data)
	switch p.OS {
	case "linux":
		f, err := elf.NewFile(r)
		require.NoError(t, err, "%s: not an ELF binary", p)
		want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[p.Arch]
		assert.Equal(t, want, f.Machine, p.String())
	case "darwin":
		f, err := macho.NewFile(r)
		require.NoError(t, err, "%s: not a Mach-O binary", p)
		want := map[string]macho.Cpu{"amd64": macho.CpuAmd64, "arm64": macho.CpuArm64}[p.Arch]
		assert.Equal(t, want, f.Cpu, p.String())
	case "windows":
		f, err := pe.NewFile(r)
		require.NoError(t, err, "%s: not a PE binary", p)
		assert.Equal(t, uint16(pe.IMAGE_FILE_MACHINE_AMD64), f.Machine, p.String())
	default:
		t.Fatalf("no binary format check for %s", p)
	}
}

type entry struct {
	name  string
	mode  fs.FileMode
	mtime time.Time
	data  []byte
}

func entryData(entries []entry, name string) string {
	for _, e := range entries {
		if e.name == name {
			return string(e.data)
		}
	}
	return ""
}

// readArchive reads every entry and checks the reproducibility properties that live in headers:
// owner 0:0 without names for tar, and a gzip header without name or timestamp (gzip -n).
func readArchive(t *testing.T, path string, p krew.Platform) []entry {
	t.Helper()
	var entries []entry
	if p.Windows() {
		zr, err := zip.OpenReader(path)
		require.NoError(t, err)
		defer zr.Close()
		for _, zf := range zr.File {
			rc, err := zf.Open()
			require.NoError(t, err)
			data, err := io.ReadAll(rc)
			require.NoError(t, err)
			rc.Close()
			entries = append(entries, entry{name: zf.Name, mode: zf.Mode().Perm(), mtime: zf.Modified, data: data})
		}
		return entries
	}
	fh, err := os.Open(path)
	require.NoError(t, err)
	defer fh.Close()
	gz, err := gzip.NewReader(fh)
	require.NoError(t, err)
	assert.Empty(t, gz.Name, "gzip header must not carry a file name")
	assert.True(t, gz.ModTime.IsZero() || gz.ModTime.Unix() == 0, "gzip header must not carry a time")
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		assert.Equal(t, byte(tar.TypeReg), hdr.Typeflag, hdr.Name)
		assert.Zero(t, hdr.Uid, hdr.Name)
		assert.Zero(t, hdr.Gid, hdr.Name)
		assert.Empty(t, hdr.Uname, hdr.Name)
		assert.Empty(t, hdr.Gname, hdr.Name)
		data, err := io.ReadAll(tr)
		require.NoError(t, err)
		entries = append(entries, entry{name: hdr.Name, mode: fs.FileMode(hdr.Mode).Perm(), mtime: hdr.ModTime, data: data})
	}
	return entries
}

// buildKrewTools runs test/binaries/krew/build.sh, which caches the binaries outside the tree.
func buildKrewTools(t *testing.T, root string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(root, "test", "binaries", "krew", "build.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := "building krew's tools (test/binaries/krew/build.sh) failed: " + err.Error() + "\n" + stderr.String()
		if testenv.InCI() {
			t.Fatal(msg)
		}
		t.Skip(msg + "\n(the Go module proxy may be unreachable; CI fails here)")
	}
	dir := strings.TrimSpace(string(out))
	for _, b := range []string{"krew", "validate-krew-manifest"} {
		require.FileExists(t, filepath.Join(dir, b))
	}
	return dir
}

// trackInputs opens every file the make run reads, so that `go test`'s result cache (which hashes
// the files a test opens, not those its child processes read) is invalidated when any of them
// changes: a cached pass then really means nothing relevant changed.
func trackInputs(t *testing.T, root string) {
	t.Helper()
	skip := map[string]bool{".git": true, "bin": true, "dist": true, "tmp": true}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if skip[rel] || rel == filepath.Join("test", "binaries", "kubernetes") {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fh, err := os.Open(path)
		if err != nil {
			return err
		}
		return fh.Close()
	})
	require.NoError(t, err)
	for _, name := range []string{"CI", "GOFLAGS", "MAKEFILES", "GOPROXY", "TESTENV_CACHE"} {
		_ = os.Getenv(name)
	}
}

func withoutEnv(env []string, names ...string) []string {
	out := env[:0:0]
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, n := range names {
			if name == n {
				drop = true
			}
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return out
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}
