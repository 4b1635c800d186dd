// Package krew builds the release artifacts that Krew installs from: reproducible archives of the
// plugin, their checksums, and the Krew plugin manifest rendered from krew/fluxinstance.yaml.
//
// Everything here is deterministic for given inputs (file contents, version, timestamp), so two
// builds of the same commit produce byte-identical archives and manifests. It is driven by
// krew/render, which krew/release.mk runs.
package krew

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// PluginName is the name users type after `kubectl krew install`; krew requires the manifest file
// to carry it too (fluxinstance.yaml).
const PluginName = "fluxinstance"

// BinaryBase is the executable kubectl looks up for `kubectl fluxinstance`.
const BinaryBase = "kubectl-fluxinstance"

// CompletionHelper is the file kubectl (>= 1.26) runs to complete the plugin's arguments.
const CompletionHelper = "kubectl_complete-fluxinstance"

// Platform is one GOOS/GOARCH pair a release is built for.
type Platform struct {
	OS   string
	Arch string
}

// ParsePlatform reads "os/arch".
func ParsePlatform(s string) (Platform, error) {
	osName, arch, ok := strings.Cut(s, "/")
	if !ok || osName == "" || arch == "" || strings.Contains(arch, "/") {
		return Platform{}, fmt.Errorf("platform %q: expected OS/ARCH, e.g. linux/amd64", s)
	}
	return Platform{OS: osName, Arch: arch}, nil
}

func (p Platform) String() string { return p.OS + "/" + p.Arch }

// Windows reports whether the platform wants a .zip and an .exe, as Windows users expect.
func (p Platform) Windows() bool { return p.OS == "windows" }

// Binary is the executable's file name inside the archive.
func (p Platform) Binary() string {
	if p.Windows() {
		return BinaryBase + ".exe"
	}
	return BinaryBase
}

// ArchiveName is the release asset's file name. It carries no version so that the URL of the
// latest release (…/releases/latest/download/NAME) stays stable across releases.
func (p Platform) ArchiveName() string {
	ext := ".tar.gz"
	if p.Windows() {
		ext = ".zip"
	}
	return fmt.Sprintf("%s_%s_%s%s", BinaryBase, p.OS, p.Arch, ext)
}

// ReleasePlatforms are the platforms `make dist` builds, in the order the manifest lists them.
func ReleasePlatforms() []Platform {
	return []Platform{
		{OS: "linux", Arch: "amd64"},
		{OS: "linux", Arch: "arm64"},
		{OS: "darwin", Arch: "amd64"},
		{OS: "darwin", Arch: "arm64"},
		{OS: "windows", Arch: "amd64"},
	}
}

var (
	// strictSemver is semver 2.0.0 with krew's mandatory "v" prefix: no leading zeros in numeric
	// parts, dot-separated pre-release and build identifiers.
	strictSemver = regexp.MustCompile(`^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)` +
		`(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?` +
		`(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)
	// gitDescribe is `git describe --tags --dirty` output past a tag: TAG-N-gSHA[-dirty], where
	// TAG may carry a pre-release without hyphens (v1.2.3-rc.1).
	gitDescribe = regexp.MustCompile(`^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.]+))?-(\d+)-g([0-9a-f]+)(-dirty)?$`)
	// dirtyTag is `git describe --dirty` output on a tag with local changes.
	dirtyTag = regexp.MustCompile(`^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.]+))?-dirty$`)
)

// IsStrictSemver reports whether v is a version krew accepts: "v" followed by semver 2.0.0.
func IsStrictSemver(v string) bool { return strictSemver.MatchString(v) }

// SemverVersion maps the Makefile's VERSION (a release tag, `git describe --tags --dirty` output
// or the v0.0.0-dev fallback) to the strict "v"-semver krew requires, ordering builds sensibly:
//
//	v1.2.3                  -> v1.2.3
//	v1.2.3-4-gabc1234       -> v1.2.4-dev.4.gabc1234        (after v1.2.3, before v1.2.4)
//	v1.2.3-rc.1-4-gabc1234  -> v1.2.3-rc.1.dev.4.gabc1234   (after the rc, before v1.2.3)
//	v1.2.3-dirty            -> v1.2.4-dev.0.dirty
//	anything else           -> v0.0.0-dev.<sanitized input>
func SemverVersion(version string) string {
	// git describe output is valid semver already ("4-gabc1234" is one pre-release identifier), but
	// it would sort before the tag it descends from: map it first.
	if m := gitDescribe.FindStringSubmatch(version); m != nil {
		return devVersion(m[1], m[2], m[3], m[4], "dev."+trimZeros(m[5])+".g"+m[6], m[7] != "")
	}
	if m := dirtyTag.FindStringSubmatch(version); m != nil {
		return devVersion(m[1], m[2], m[3], m[4], "dev.0", true)
	}
	if IsStrictSemver(version) {
		return version
	}
	if v := "v" + version; IsStrictSemver(v) {
		return v
	}
	return "v0.0.0-dev" + sanitizeIdentifiers(version)
}

// devVersion builds a pre-release that sorts after the tag it descends from: on a pre-release tag
// it extends the pre-release; on a release it bumps the patch level.
func devVersion(major, minor, patch, pre, dev string, dirty bool) string {
	ma, mi, pa := trimZeros(major), trimZeros(minor), trimZeros(patch)
	var v string
	if pre != "" {
		v = fmt.Sprintf("v%s.%s.%s-%s.%s", ma, mi, pa, sanitizePre(pre), dev)
	} else {
		n, err := strconv.ParseUint(pa, 10, 64)
		if err != nil { // more digits than uint64: keep the number, let the pre-release order it
			v = fmt.Sprintf("v%s.%s.%s-%s", ma, mi, pa, dev)
		} else {
			v = fmt.Sprintf("v%s.%s.%d-%s", ma, mi, n+1, dev)
		}
	}
	if dirty {
		v += ".dirty"
	}
	return v
}

func trimZeros(s string) string {
	s = strings.TrimLeft(s, "0")
	if s == "" {
		return "0"
	}
	return s
}

// sanitizePre makes dot-separated identifiers valid pre-release identifiers.
func sanitizePre(s string) string {
	parts := strings.Split(s, ".")
	out := parts[:0]
	for _, p := range parts {
		if p == "" {
			continue
		}
		if strings.Trim(p, "0123456789") == "" { // numeric: no leading zeros allowed
			p = trimZeros(p)
		}
		out = append(out, p)
	}
	return strings.Join(out, ".")
}

// sanitizeIdentifiers turns arbitrary text into ".id.id…" pre-release identifiers, or "".
func sanitizeIdentifiers(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '-':
			b.WriteRune(r)
		default:
			b.WriteRune('.')
		}
	}
	if p := sanitizePre(b.String()); p != "" {
		return "." + p
	}
	return ""
}
