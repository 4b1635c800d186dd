package distribution

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/blang/semver/v4"
)

// versionPattern matches the version directories of the layout ("v2.7.5").
var versionPattern = regexp.MustCompile(`^v\d+\.\d+\.\d+$`)

// vBeforeDigit finds a "v" prefix on a version inside a constraint (start, or after a space or
// comparison operator) so that "v2.7.5" and ">=v2.6.0 <v2.8.0" mean the same as without it.
var vBeforeDigit = regexp.MustCompile(`(^|[\s<>=!]+)[vV](\d)`)

// parseVersion parses "vX.Y.Z" or "X.Y.Z".
func parseVersion(v string) (semver.Version, error) {
	return semver.Parse(strings.TrimPrefix(strings.TrimSpace(v), "v"))
}

// sortVersions sorts "vX.Y.Z" strings by semver, ascending. Unparseable strings never reach it.
func sortVersions(vs []string) {
	sort.Slice(vs, func(i, j int) bool {
		a, _ := parseVersion(vs[i])
		b, _ := parseVersion(vs[j])
		return a.LT(b)
	})
}

// resolve returns the highest of versions (sorted ascending) matching constraint: an exact
// version ("2.7.5", "v2.7.5"), a wildcard ("2.x", "2.7.x", "*") or a range (">=2.6.0 <2.8.0",
// "<2.7.0 || >=2.8.0"), the forms the FluxInstance's spec.distribution.version takes.
func resolve(constraint string, versions []string, source string) (string, error) {
	c := strings.TrimSpace(constraint)
	if c == "" {
		return "", fmt.Errorf("distribution.version is empty: set an exact version (2.7.5), a wildcard (2.x, 2.7.x) or a range (>=2.6.0 <2.8.0)")
	}
	match, err := matcher(constraint)
	if err != nil {
		return "", err
	}
	for i := len(versions) - 1; i >= 0; i-- {
		v, err := parseVersion(versions[i])
		if err == nil && match(v) {
			return versions[i], nil
		}
	}
	return "", &NoMatchingVersionError{Constraint: constraint, Source: source, Available: versions}
}

// matcher parses a FluxInstance's spec.distribution.version into the versions it admits.
func matcher(constraint string) (func(semver.Version) bool, error) {
	c := strings.TrimSpace(constraint)
	if c == "*" || c == "x" || c == "X" {
		return func(semver.Version) bool { return true }, nil
	}
	r, err := semver.ParseRange(vBeforeDigit.ReplaceAllString(c, "$1$2"))
	if err != nil {
		return nil, fmt.Errorf("distribution.version %q is not a valid version or range (use 2.7.5, 2.x, 2.7.x or >=2.6.0 <2.8.0): %w", constraint, err)
	}
	return r, nil
}

// PinsMinor tells whether constraint admits no release of another minor than version ("v2.9.4"),
// which it resolved to: whoever resolves it from whichever distribution gets the same API
// versions, which Flux adds and removes only in minor releases. "2.9.4", "2.9.x" and
// ">=2.9.0 <2.10.0" pin the minor; "2.x", "*" and ">=2.7.0" do not. The releases probed are
// the first and a last patch of each minor of the neighbouring majors, far beyond any release.
func PinsMinor(constraint, version string) bool {
	match, err := matcher(constraint)
	if err != nil {
		return false
	}
	v, err := parseVersion(version)
	if err != nil {
		return false
	}
	first := v.Major
	if first > 0 {
		first--
	}
	for major := first; major <= v.Major+1; major++ {
		for minor := uint64(0); minor <= v.Minor+100; minor++ {
			if major == v.Major && minor == v.Minor {
				continue
			}
			for _, patch := range []uint64{0, 999999} {
				if match(semver.Version{Major: major, Minor: minor, Patch: patch}) {
					return false
				}
			}
		}
	}
	return true
}

// NoMatchingVersionError says that a distribution has no Flux version matching the constraint.
// Callers that can let another party resolve it (the Flux Operator, from its own distribution)
// tell it from the other errors.
type NoMatchingVersionError struct {
	Constraint string
	Source     string
	Available  []string
}

func (e *NoMatchingVersionError) Error() string {
	return fmt.Sprintf("no Flux version in %s matches distribution.version %q; available: %s",
		e.Source, e.Constraint, strings.Join(e.Available, ", "))
}
