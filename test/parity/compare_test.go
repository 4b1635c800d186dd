package parity

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func objectsOf(t *testing.T, doc string) []object {
	t.Helper()
	return decodeObjects(t, []byte(doc))
}

const deployDoc = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: source-controller
  namespace: flux-system
  labels: {app: sc}
spec:
  template:
    spec:
      containers:
      - name: manager
        image: %s
`

// The comparator must see every kind of difference, or the parity test could not fail.
func TestCompareObjectsFindsDifferences(t *testing.T) {
	ns := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: flux-system\n"
	sa := "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: sc\n  namespace: flux-system\n"
	base := objectsOf(t, ns+"---\n"+sa)

	assert.Empty(t, compareObjects(base, objectsOf(t, ns+"---\n"+sa)))
	assert.Equal(t, []string{"/ServiceAccount/flux-system/sc: only the reference renders it"},
		compareObjects(objectsOf(t, ns), base))
	assert.Equal(t, []string{"order: object 0 is /Namespace//flux-system in ours, /ServiceAccount/flux-system/sc in the reference"},
		compareObjects(base, objectsOf(t, sa+"---\n"+ns)))
	labelled := objectsOf(t, ns+"  labels: {a: b}\n---\n"+sa)
	assert.Equal(t, []string{"/Namespace//flux-system .metadata.labels: ours=<absent> theirs=a: b"},
		compareObjects(base, labelled))
	assert.Equal(t, []string{`/Namespace//flux-system .metadata.labels.a: ours=b theirs=c`},
		compareObjects(labelled, objectsOf(t, ns+"  labels: {a: c}\n---\n"+sa)))
}

// Only a digest that an image list explains is removed; any other stays a difference.
func TestNormaliseUnpinsListedDigestsOnly(t *testing.T) {
	digest := "sha256:" + "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12"
	images := map[string]imageRef{"source-controller@" + digest: {repo: "ghcr.io/fluxcd/source-controller", tag: "v1.2.4", digest: digest}}
	theirs := objectsOf(t, fmt.Sprintf(deployDoc, "ghcr.io/fluxcd/source-controller:v1.2.5"))

	listed := normalise(t, instance{}, images, objectsOf(t, fmt.Sprintf(deployDoc, "ghcr.io/fluxcd/source-controller:v1.2.4@"+digest)), theirs)
	assert.Empty(t, compareObjects(listed, theirs), "a listed digest and tag are the documented difference")

	other := "sha256:" + "cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34"
	unlisted := normalise(t, instance{}, images, objectsOf(t, fmt.Sprintf(deployDoc, "ghcr.io/fluxcd/source-controller:v1.2.5@"+other)), theirs)
	assert.Len(t, compareObjects(unlisted, theirs), 1, "a digest no image list holds is not explained")
}

// NetworkPolicies are dropped only for a cluster block without networkPolicy, and only when the
// reference renders none.
func TestNormaliseNetworkPolicies(t *testing.T) {
	netpol := objectsOf(t, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: allow-egress\n  namespace: flux-system\n")
	var withBlock, withField, without instance
	withBlock.Spec.Cluster = map[string]any{"type": "kubernetes"}
	withField.Spec.Cluster = map[string]any{"networkPolicy": true}

	assert.Empty(t, normalise(t, withBlock, nil, netpol, nil))
	require.Len(t, normalise(t, withField, nil, netpol, nil), 1)
	require.Len(t, normalise(t, without, nil, netpol, nil), 1)
	require.Len(t, normalise(t, withBlock, nil, netpol, netpol), 1, "the reference renders them: no documented difference")
}
