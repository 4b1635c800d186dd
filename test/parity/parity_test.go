package parity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/fluxinstance/kubectl-fluxinstance/test/distribution/distdata"
	"github.com/fluxinstance/kubectl-fluxinstance/test/fixtures"
)

// referenceCLI returns the reference CLI. It is cached by build.sh; when it is not, CI builds it
// (and fails when that fails: CI must never silently skip parity), while a developer's run skips
// rather than start a build of about 9 minutes (cold) unasked.
func referenceCLI(t *testing.T) string {
	t.Helper()
	if p, ok := FindReferenceCLI(t); ok {
		return p
	}
	if os.Getenv("CI") != "true" {
		t.Skip("the Flux Operator CLI (reference renderer) is not built: " + ReferenceCLIHint)
	}
	p, err := BuildReferenceCLI(t)
	require.NoError(t, err, "CI=true: the parity test needs the reference CLI")
	return p
}

// TestParityWithReferenceCLI renders every FluxInstance of the fidelity corpus with the plugin
// and with the Flux Operator CLI, from the same OCI artifact on a loopback registry, and compares
// the objects: the same set (group/kind/namespace/name) in the same order, with the same content,
// modulo the documented differences between that CLI and the operator (see normalise).
func TestParityWithReferenceCLI(t *testing.T) {
	cli := referenceCLI(t)
	dir := distdata.Dir(t)
	files := fixtures.Glob(t, "*.yaml")

	plugin := PluginBinary(t)
	oci := ServeDistribution(t)
	images := loadImageLists(t, dir)
	// Both caches start empty: the plugin pulls once and reuses its cache afterwards.
	env := Env(t, t.TempDir())

	var compared atomic.Int32
	// The subtests run in parallel (two processes each): the group returns when all have ended.
	t.Run("instances", func(t *testing.T) {
		for _, file := range files {
			name := strings.TrimSuffix(filepath.Base(file), ".yaml")
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				inst := readInstance(t, file)
				theirs := Run(ctx, env, cli, ReferenceArgs(file, oci)...)
				ours := Run(ctx, env, plugin, PluginArgs(file, oci)...)

				if theirs.Err != nil {
					// Both reject the instance: that is parity too.
					if ours.Err != nil {
						t.Logf("both reject it; reference: %s; plugin: %s", firstLine(theirs.Stderr), firstLine(ours.Stderr))
						return
					}
					t.Fatalf("the reference CLI rejects %s but the plugin renders it: %v", file, theirs.Err)
				}
				require.NoError(t, ours.Err, "the reference CLI renders %s but the plugin does not", file)

				oursObjs, theirObjs := decodeObjects(t, ours.Stdout), decodeObjects(t, theirs.Stdout)
				oursObjs = normalise(t, inst, images, oursObjs, theirObjs)
				diffs := compareObjects(oursObjs, theirObjs)
				assert.Equal(t, 0, len(diffs), "%s renders differently from the reference CLI (ours vs theirs):\n%s", file, strings.Join(diffs, "\n"))
				compared.Add(1)
			})
		}
	})
	// Guards against a run that compared nothing (every rendering rejected) and so proved nothing.
	assert.GreaterOrEqual(t, int(compared.Load()), len(files)/2, "too few instances compared with the reference CLI")
}

// instance is the part of a FluxInstance the normalisations look at, read independently of the
// plugin's own types.
type instance struct {
	Spec struct {
		Cluster  map[string]any `json:"cluster"`
		Sharding *struct {
			Shards  []string `json:"shards"`
			Storage string   `json:"storage"`
		} `json:"sharding"`
	} `json:"spec"`
}

func readInstance(t *testing.T, file string) instance {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	var inst instance
	require.NoError(t, yaml.Unmarshal(b, &inst), file)
	return inst
}

func (i instance) sharded() bool { return i.Spec.Sharding != nil && len(i.Spec.Sharding.Shards) > 0 }

// object is one rendered object and its identity.
type object struct {
	key string // group/kind/namespace/name
	obj map[string]any
}

func decodeObjects(t *testing.T, out []byte) []object {
	t.Helper()
	dec := k8syaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	var objs []object
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if len(m) == 0 {
			continue
		}
		objs = append(objs, object{key: keyOf(m), obj: m})
	}
	return objs
}

func keyOf(m map[string]any) string {
	apiVersion, _ := m["apiVersion"].(string)
	group := ""
	if i := strings.LastIndex(apiVersion, "/"); i >= 0 {
		group = apiVersion[:i]
	}
	kind, _ := m["kind"].(string)
	md, _ := m["metadata"].(map[string]any)
	ns, _ := md["namespace"].(string)
	name, _ := md["name"].(string)
	return group + "/" + kind + "/" + ns + "/" + name
}

// imageRef is an image list entry (flux-images/<version>/<variant>.yaml): the operator
// rewrites a controller's image to name:newTag@digest.
type imageRef struct{ repo, tag, digest string }

// loadImageLists reads every image list of the distribution: the entries the plugin may have
// pinned, keyed by the image's last path element and digest.
func loadImageLists(t *testing.T, dir string) map[string]imageRef {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "flux-images", "*", "*.yaml"))
	require.NoError(t, err)
	refs := map[string]imageRef{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var list struct {
			Images []struct {
				Name   string `json:"name"`
				NewTag string `json:"newTag"`
				Digest string `json:"digest"`
			} `json:"images"`
		}
		require.NoError(t, yaml.Unmarshal(b, &list), f)
		for _, img := range list.Images {
			refs[path.Base(img.Name)+"@"+img.Digest] = imageRef{repo: img.Name, tag: img.NewTag, digest: img.Digest}
		}
	}
	return refs
}

var digestRE = regexp.MustCompile(`^(.+/)?([^/:@]+)(:[^@]+)?@(sha256:[0-9a-f]{64})$`)

// normalise applies to our objects the differences between the reference CLI and the operator
// that are documented as intentional (we follow the operator). Each is narrow: it only removes
// what the known difference explains, so that anything else still shows as a difference.
func normalise(t *testing.T, inst instance, images map[string]imageRef, ours, theirs []object) []object {
	t.Helper()
	theirKeys := map[string]map[string]any{}
	theirNetpols := 0
	for _, o := range theirs {
		theirKeys[o.key] = o.obj
		if o.obj["kind"] == "NetworkPolicy" {
			theirNetpols++
		}
	}

	// 1. A `cluster:` block without networkPolicy: the operator's CRD defaults it to true, the
	// CLI takes the missing field as false and renders no NetworkPolicy at all.
	_, hasNetpol := inst.Spec.Cluster["networkPolicy"]
	dropNetpols := inst.Spec.Cluster != nil && !hasNetpol && theirNetpols == 0

	// 2. sharding.storage: persistent: the operator gives every source-controller shard a PVC
	// named after the shard's deployment, mounted instead of the emptyDir "data"; the CLI ignores
	// sharding.storage.
	shardPVCs := map[string]bool{}
	if inst.sharded() && inst.Spec.Sharding.Storage == "persistent" {
		for _, s := range inst.Spec.Sharding.Shards {
			shardPVCs["source-controller-"+s] = true
		}
	}

	var out []object
	for _, o := range ours {
		kind, _ := o.obj["kind"].(string)
		if dropNetpols && kind == "NetworkPolicy" {
			t.Logf("documented difference: NetworkPolicy %s not rendered by the CLI (cluster block without networkPolicy)", nameOf(o.obj))
			continue
		}
		if kind == "PersistentVolumeClaim" && shardPVCs[nameOf(o.obj)] {
			if _, theirsToo := theirKeys[o.key]; !theirsToo {
				t.Logf("documented difference: shard PVC %s not rendered by the CLI (sharding.storage ignored)", nameOf(o.obj))
				continue
			}
		}
		if kind == "Deployment" {
			podSpec := nested(o.obj, "spec", "template", "spec")
			if podSpec != nil && shardPVCs[nameOf(o.obj)] {
				unmountShardPVC(t, podSpec, nameOf(o.obj))
			}
			if podSpec != nil {
				unpinImages(t, podSpec, nested(theirKeys[o.key], "spec", "template", "spec"), images)
			}
		}
		out = append(out, o)
	}
	return out
}

// unmountShardPVC undoes the operator's persistent shard storage in a shard's pod spec: the
// volume backed by the shard's PVC (which took the place of the first volume) goes back to the
// emptyDir "data" the CLI keeps, and the mounts of it go back to "data".
func unmountShardPVC(t *testing.T, podSpec map[string]any, claim string) {
	volumes, _ := podSpec["volumes"].([]any)
	removed := ""
	for i, v := range volumes {
		vm, _ := v.(map[string]any)
		if c, _ := nested(vm, "persistentVolumeClaim")["claimName"].(string); c == claim {
			removed, _ = vm["name"].(string)
			volumes[i] = map[string]any{"name": "data", "emptyDir": map[string]any{}}
			break
		}
	}
	if removed == "" {
		return
	}
	for _, c := range containers(podSpec) {
		mounts, _ := c["volumeMounts"].([]any)
		for _, m := range mounts {
			if mm, _ := m.(map[string]any); mm["name"] == removed {
				mm["name"] = "data"
			}
		}
	}
	t.Logf("documented difference: shard deployment %s mounts its PVC, the CLI an emptyDir (sharding.storage ignored)", claim)
}

// unpinImages undoes the operator's image pinning: the CLI pins no digests, and it takes the tag
// from the manifests where the operator takes name:newTag@digest from the distribution's image
// list. A digest is removed (and the tag set to the CLI's) only when our image is exactly an
// entry of an image list.
func unpinImages(t *testing.T, ours, theirs map[string]any, images map[string]imageRef) {
	theirImages := map[string]string{}
	for _, c := range containers(theirs) {
		name, _ := c["name"].(string)
		theirImages[name], _ = c["image"].(string)
	}
	for _, c := range containers(ours) {
		image, _ := c["image"].(string)
		m := digestRE.FindStringSubmatch(image)
		if m == nil {
			continue
		}
		prefix, base, tag, digest := m[1], m[2], strings.TrimPrefix(m[3], ":"), m[4]
		ref, listed := images[base+"@"+digest]
		if !listed || ref.tag != tag {
			continue // a digest that no image list explains: leave it to show as a difference
		}
		unpinned := prefix + base + ":" + tag
		name, _ := c["name"].(string)
		if their := theirImages[name]; their != unpinned && strings.HasPrefix(their, prefix+base+":") && !strings.Contains(their, "@") {
			t.Logf("documented difference: image list tag %s for %s where the manifests (and the CLI) say %s", tag, base, their)
			unpinned = their
		}
		c["image"] = unpinned
	}
}

func containers(podSpec map[string]any) []map[string]any {
	var out []map[string]any
	for _, field := range []string{"initContainers", "containers"} {
		list, _ := podSpec[field].([]any)
		for _, c := range list {
			if cm, ok := c.(map[string]any); ok {
				out = append(out, cm)
			}
		}
	}
	return out
}

// compareObjects lists every difference: objects only one side renders, a different order, and
// each differing field as "object field: ours=… theirs=…".
func compareObjects(ours, theirs []object) []string {
	var diffs []string
	oursByKey, theirsByKey := map[string]object{}, map[string]object{}
	for _, o := range ours {
		oursByKey[o.key] = o
	}
	for _, o := range theirs {
		theirsByKey[o.key] = o
	}
	var common []string
	for _, o := range ours {
		if _, ok := theirsByKey[o.key]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: only ours renders it", o.key))
		} else {
			common = append(common, o.key)
		}
	}
	var theirOrder []string
	for _, o := range theirs {
		if _, ok := oursByKey[o.key]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: only the reference renders it", o.key))
		} else {
			theirOrder = append(theirOrder, o.key)
		}
	}
	for i := range common {
		if common[i] != theirOrder[i] {
			diffs = append(diffs, fmt.Sprintf("order: object %d is %s in ours, %s in the reference", i, common[i], theirOrder[i]))
			break
		}
	}
	for _, k := range common {
		DiffValues(k+" ", oursByKey[k].obj, theirsByKey[k].obj, &diffs)
	}
	return diffs
}

func nested(m map[string]any, fields ...string) map[string]any {
	for _, f := range fields {
		next, _ := m[f].(map[string]any)
		if next == nil {
			return nil
		}
		m = next
	}
	return m
}

func nameOf(m map[string]any) string {
	s, _ := nested(m, "metadata")["name"].(string)
	return s
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
