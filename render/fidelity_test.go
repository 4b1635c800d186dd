package render

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
)

var update = flag.Bool("update", false, "regenerate the golden files under test/golden")

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..")
}

// objectSummary is what a golden file records per object: enough to review
// every rendering decision without copying the distribution data, plus a
// digest of the whole object so any other change is caught too.
type objectSummary struct {
	ID          string            `json:"id"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Containers  []containerInfo   `json:"containers,omitempty"`
	Pod         map[string]any    `json:"pod,omitempty"`
	Spec        any               `json:"spec,omitempty"`
	SHA256      string            `json:"sha256"`
}

type containerInfo struct {
	Name      string `json:"name"`
	Image     string `json:"image"`
	Args      any    `json:"args,omitempty"`
	Resources any    `json:"resources,omitempty"`
}

// ObjectID is group/kind/namespace/name.
func objectID(o *unstructured.Unstructured) string {
	g, _ := splitAPIVersion(o.GetAPIVersion())
	return g + "/" + o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
}

func summarize(t *testing.T, objs []*unstructured.Unstructured) []objectSummary {
	t.Helper()
	out := make([]objectSummary, 0, len(objs))
	for _, o := range objs {
		data, err := json.Marshal(o.Object)
		require.NoError(t, err)
		sum := sha256.Sum256(data)
		s := objectSummary{
			ID:          objectID(o),
			Labels:      o.GetLabels(),
			Annotations: o.GetAnnotations(),
			SHA256:      hex.EncodeToString(sum[:]),
		}
		switch o.GetKind() {
		case "Deployment":
			pod, _, _ := unstructured.NestedMap(o.Object, "spec", "template", "spec")
			containers, _ := pod["containers"].([]any)
			for _, c := range containers {
				m := c.(map[string]any)
				s.Containers = append(s.Containers, containerInfo{
					Name: m["name"].(string), Image: m["image"].(string), Args: m["args"], Resources: m["resources"],
				})
			}
			s.Pod = map[string]any{}
			for _, f := range []string{"nodeSelector", "tolerations", "serviceAccountName", "imagePullSecrets", "volumes", "securityContext"} {
				if v, ok := pod[f]; ok {
					s.Pod[f] = v
				}
			}
			if tl, ok, _ := unstructured.NestedMap(o.Object, "spec", "template", "metadata"); ok {
				s.Pod["templateMetadata"] = tl
			}
			if r, ok := o.Object["spec"].(map[string]any)["replicas"]; ok {
				s.Pod["replicas"] = r
			}
		case "GitRepository", "OCIRepository", "Bucket", "Kustomization", "PersistentVolumeClaim", "Service":
			s.Spec = o.Object["spec"]
		}
		out = append(out, s)
	}
	return out
}

// exactVersion reads spec.distribution.version of a fixture; fixtures pin
// exact versions so that new distribution data does not change the goldens.
func exactVersion(t *testing.T, inst *fluxinstance.FluxInstance) string {
	v := inst.Spec.Distribution.Version
	require.NotContains(t, v, "x", "fixtures must pin an exact version")
	return "v" + strings.TrimPrefix(v, "v")
}

func TestFidelityCorpus(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot(), "test", "fixtures", "instances", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	lines := map[string]bool{}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			require.NoError(t, err)
			inst, err := fluxinstance.Decode(data, file)
			require.NoError(t, err)
			inst.Default()
			require.NoError(t, inst.Validate())
			version := exactVersion(t, inst)
			require.NoError(t, inst.ValidateForVersion(version))
			lines[version[:4]] = true
			objs, err := Build(inst, loadRelease(t, version), nil)
			require.NoError(t, err)
			got, err := yaml.Marshal(summarize(t, objs))
			require.NoError(t, err)
			golden := filepath.Join(repoRoot(), "test", "golden", name+".yaml")
			if *update {
				require.NoError(t, os.WriteFile(golden, got, 0o644))
				return
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "missing golden file; run go test ./render/... -update")
			assert.Equal(t, string(want), string(got), "rendering changed; review and run go test ./render/... -update")
		})
	}
	// Every version line of the data is covered.
	for _, v := range releaseVersions(t) {
		assert.True(t, lines[v[:4]], "no fixture covers Flux %s", v[:4])
	}
}
