package helmenv

import (
	"fmt"
	"os"
	"testing"

	"sigs.k8s.io/kustomize/kyaml/kio"
	kyaml "sigs.k8s.io/kustomize/kyaml/yaml"
	"sigs.k8s.io/yaml"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// PostRenderMain makes the test binary a Helm post-renderer when helm runs it for a Release with
// Labels: it then adds the labels to every object of the manifests on standard input, writes them to
// standard output and exits. Otherwise it returns at once. Call it first thing in TestMain, or
// use Main.
func PostRenderMain() {
	raw, ok := os.LookupEnv(postRenderEnv)
	if !ok {
		return
	}
	if err := postRender(raw); err != nil {
		fmt.Fprintf(os.Stderr, "helmenv post-renderer: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Main is the TestMain of a package that installs releases with Labels: the post-renderer first,
// then the cluster tests' testenv.Main.
func Main(m *testing.M) {
	PostRenderMain()
	testenv.Main(m)
}

func postRender(raw string) error {
	var labels map[string]string
	if err := yaml.Unmarshal([]byte(raw), &labels); err != nil {
		return fmt.Errorf("decoding %s: %w", postRenderEnv, err)
	}
	nodes, err := (&kio.ByteReader{Reader: os.Stdin, OmitReaderAnnotations: true}).Read()
	if err != nil {
		return fmt.Errorf("reading the manifests helm rendered: %w", err)
	}
	for _, n := range nodes {
		for k, v := range labels {
			if err := n.PipeE(kyaml.SetLabel(k, v)); err != nil {
				return fmt.Errorf("labelling %s %s: %w", n.GetKind(), n.GetName(), err)
			}
		}
	}
	return (&kio.ByteWriter{Writer: os.Stdout}).Write(nodes)
}
