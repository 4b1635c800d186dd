package plugin

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/fluxinstance/kubectl-fluxinstance/test/fixtures"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func TestBuildOutputs(t *testing.T) {
	minimalInstance := fixtures.Instance(t, "tests/minimal-2.7.x")
	dist := testenv.DistributionDir(t)
	file := writeFile(t, t.TempDir(), "flux.yaml", minimalInstance)

	r := runPlugin(t, "", "build", "-f", file, "--distribution", dist, "-o", "name")
	require.Equal(t, 0, r.Code, r.Stderr)
	names := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	assert.Equal(t, "namespace/flux-system", names[indexOfPrefix(names, "namespace/")])
	assert.Less(t, indexOfPrefix(names, "customresourcedefinition."), indexOfPrefix(names, "namespace/"), "CRDs come first")
	assert.Less(t, indexOfPrefix(names, "serviceaccount/"), indexOfPrefix(names, "deployment.apps/"))
	assert.Contains(t, names, "deployment.apps/source-controller")
	assert.NotContains(t, names, "deployment.apps/image-reflector-controller", "not a default component")

	r = runPlugin(t, "", "build", "-f", file, "--distribution", dist)
	require.Equal(t, 0, r.Code, r.Stderr)
	objs, err := testenv.DecodeYAML([]byte(r.Stdout))
	require.NoError(t, err)
	assert.Len(t, objs, len(names), "YAML and name outputs list the same objects")
	for _, o := range objs {
		assert.Equal(t, "flux-operator", o.GetLabels()["app.kubernetes.io/managed-by"], o.GetName())
		assert.Regexp(t, `^v2\.7\.\d+$`, o.GetLabels()["app.kubernetes.io/version"], "2.7.x resolves to the highest 2.7 release")
	}

	r = runPlugin(t, "", "build", "-f", file, "--distribution", dist, "-o", "json")
	require.Equal(t, 0, r.Code, r.Stderr)
	var list struct {
		Kind  string           `json:"kind"`
		Items []map[string]any `json:"items"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &list))
	assert.Equal(t, "List", list.Kind)
	assert.Len(t, list.Items, len(names))

	// stdin, like kubectl's -f -.
	r = runPlugin(t, minimalInstance, "build", "-f", "-", "--distribution", dist, "-o", "name")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Equal(t, strings.Join(names, "\n")+"\n", r.Stdout)
}

func indexOfPrefix(list []string, prefix string) int {
	for i, s := range list {
		if strings.HasPrefix(s, prefix) {
			return i
		}
	}
	return -1
}

func TestBuildNamespace(t *testing.T) {
	minimalInstance := fixtures.Instance(t, "tests/minimal-2.7.x")
	dist := testenv.DistributionDir(t)
	dir := t.TempDir()
	// The variant without a namespace is built here, next to the assertions that depend on it.
	noNamespace := writeFile(t, dir, "flux.yaml", strings.Replace(minimalInstance, "  namespace: flux-system\n", "", 1))

	r := runPlugin(t, "", "build", "-f", noNamespace, "--distribution", dist, "-n", "gitops", "-o", "name")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, "namespace/gitops\n")

	withNamespace := writeFile(t, dir, "ns.yaml", minimalInstance)
	r = runPlugin(t, "", "build", "-f", withNamespace, "--distribution", dist, "-n", "gitops")
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, `the namespace of FluxInstance "flux" in `+withNamespace+` is "flux-system", which does not match the namespace "gitops"`)
	assert.Empty(t, r.Stdout)
}

func TestBuildBadInput(t *testing.T) {
	minimalInstance := fixtures.Instance(t, "tests/minimal-2.7.x")
	dist := testenv.DistributionDir(t)
	dir := t.TempDir()
	// Each bad input is a variant of the fixture built here, next to the case that expects its error.
	two := writeFile(t, dir, "two.yaml", minimalInstance+"---\n"+minimalInstance)
	configMap := writeFile(t, dir, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n")
	typo := writeFile(t, dir, "typo.yaml", strings.Replace(minimalInstance, "registry:", "regsitry:", 1))
	noMatch := writeFile(t, dir, "old.yaml", strings.Replace(minimalInstance, `"2.7.x"`, `"1.x"`, 1))
	badName := writeFile(t, dir, "name.yaml", strings.Replace(minimalInstance, "name: flux\n", "name: other\n", 1))
	recursive := filepath.Dir(writeFile(t, dir, "tree/a/flux.yaml", minimalInstance))

	for name, tc := range map[string]struct {
		args []string
		code int
		want []string
	}{
		"two instances":       {[]string{"-f", two}, 1, []string{"expected exactly one FluxInstance", `FluxInstance "flux" in ` + two + `, FluxInstance "flux" in ` + two}},
		"another kind":        {[]string{"-f", configMap}, 1, []string{`found ConfigMap "settings" in ` + cm(configMap)}},
		"unknown field":       {[]string{"-f", typo}, 1, []string{typo, "regsitry"}},
		"no matching version": {[]string{"-f", noMatch}, 1, []string{noMatch, "spec.distribution.version", "v2.7."}},
		"wrong name":          {[]string{"-f", badName}, 1, []string{badName, "metadata.name", "flux"}},
		"missing file":        {[]string{"-f", filepath.Join(dir, "absent.yaml")}, 1, []string{"absent.yaml"}},
		"no filename":         {nil, 2, []string{"required flag(s) \"filename\" not set"}},
		"bad output":          {[]string{"-f", two, "-o", "wide"}, 2, []string{"--output must be one of yaml, json, name"}},
		"bad distribution":    {[]string{"-f", recursive, "-R", "--distribution", filepath.Join(dir, "nowhere")}, 1, []string{"nowhere"}},
	} {
		t.Run(name, func(t *testing.T) {
			args := append([]string{"build"}, tc.args...)
			if !contains(tc.args, "--distribution") {
				args = append(args, "--distribution", dist)
			}
			r := runPlugin(t, "", args...)
			assert.Equal(t, tc.code, r.Code, r.Stderr)
			assert.Empty(t, r.Stdout, "nothing is printed when the input is bad")
			for _, w := range tc.want {
				assert.Contains(t, r.Stderr, w)
			}
		})
	}

	// -R finds the instance in a sub-directory.
	r := runPlugin(t, "", "build", "-f", filepath.Dir(recursive), "-R", "--distribution", dist, "-o", "name")
	assert.Equal(t, 0, r.Code, r.Stderr)
}

func cm(path string) string { return path }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Patches whose target selects nothing render as the Flux Operator renders them, as if they were
// absent, and each is named in a warning with what to check.
func TestBuildWarnsOfPatchesThatSelectNothing(t *testing.T) {
	dist := testenv.DistributionDir(t)
	const fixture = "patch-target-matches-nothing"
	r := runPlugin(t, "", "build", "-f", fixtures.Path(t, fixture), "--distribution", dist)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Equal(t, `Warning: spec.kustomize.patches[1]: the target {kind: "Deployment", name: "image-reflector-controller"} selects no object, so the patch changes nothing (the Flux Operator ignores it too); check the target against the objects `+"`kubectl fluxinstance build`"+` prints (a component that is not installed has none)
Warning: spec.kustomize.patches[2]: the target {kind: "Deployment", name: "kustomize-controller", namespace: "flux-system"} selects no object, so the patch changes nothing (the Flux Operator ignores it too); it would select objects without target.namespace, which the distribution's objects do not have yet when patches run: remove target.namespace
Warning: spec.kustomize.patches[3]: the target {kind: "Deployment", labelSelector: "app.kubernetes.io/component=no-such-controller"} selects no object, so the patch changes nothing (the Flux Operator ignores it too); check the target against the objects `+"`kubectl fluxinstance build`"+` prints (a component that is not installed has none)
`, r.Stderr)
	assert.Contains(t, r.Stdout, "--concurrent=7", "patches[0] selects source-controller and applies")

	// The same instance with patches[0] only: the same objects, and no warning.
	obj := fixtures.Object(t, fixture)
	patches, _, err := unstructured.NestedSlice(obj.Object, "spec", "kustomize", "patches")
	require.NoError(t, err)
	require.Len(t, patches, 4)
	require.NoError(t, unstructured.SetNestedSlice(obj.Object, patches[:1], "spec", "kustomize", "patches"))
	data, err := yaml.Marshal(obj.Object)
	require.NoError(t, err)
	only := runPlugin(t, "", "build", "-f", writeFile(t, t.TempDir(), "flux.yaml", string(data)), "--distribution", dist)
	require.Equal(t, 0, only.Code, only.Stderr)
	assert.Empty(t, only.Stderr)
	assert.Equal(t, only.Stdout, r.Stdout, "the patches that select nothing change nothing")
}
