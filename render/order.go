package render

import (
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// kindOrder is the order in which the Flux Operator (through fluxcd/pkg/ssa)
// reconciles native kinds: these come first, in this order; webhook
// configurations come last; every other kind sits in between.
var kindOrderFirst = []string{
	"CustomResourceDefinition",
	"Namespace",
	"ClusterRole",
	"ClusterClass",
	"RuntimeClass",
	"PriorityClass",
	"StorageClass",
	"VolumeSnapshotClass",
	"IngressClass",
	"GatewayClass",
	"ClusterRoleBinding",
	"ResourceQuota",
	"ServiceAccount",
	"Role",
	"RoleBinding",
	"ConfigMap",
	"Secret",
	"Service",
	"LimitRange",
	"Deployment",
	"StatefulSet",
	"CronJob",
	"PodDisruptionBudget",
}

var kindOrderLast = []string{
	"MutatingWebhookConfiguration",
	"ValidatingWebhookConfiguration",
}

// KindRank returns the apply rank of a kind: lower ranks are applied first.
// Kinds not listed rank 0, between the first and the last lists.
func KindRank(kind string) int {
	if i := slices.Index(kindOrderFirst, kind); i >= 0 {
		return i - len(kindOrderFirst)
	}
	if i := slices.Index(kindOrderLast, kind); i >= 0 {
		return i + 1
	}
	return 0
}

// CompareObjects orders objects the operator's way: by kind rank, then group,
// kind, namespace and name. Use it with slices.SortStableFunc.
func CompareObjects(a, b *unstructured.Unstructured) int {
	ak, bk := a.GetKind(), b.GetKind()
	ag, bg := apiGroup(a.GetAPIVersion()), apiGroup(b.GetAPIVersion())
	if ag != bg || ak != bk {
		if ra, rb := KindRank(ak), KindRank(bk); ra != rb {
			return ra - rb
		}
		if ag != bg {
			return strings.Compare(ag, bg)
		}
		return strings.Compare(ak, bk)
	}
	if c := strings.Compare(a.GetNamespace(), b.GetNamespace()); c != 0 {
		return c
	}
	return strings.Compare(a.GetName(), b.GetName())
}

// SortObjects sorts objects in place the operator's way.
func SortObjects(objs []*unstructured.Unstructured) {
	slices.SortStableFunc(objs, CompareObjects)
}

func apiGroup(apiVersion string) string {
	if i := strings.IndexByte(apiVersion, '/'); i >= 0 {
		return apiVersion[:i]
	}
	return ""
}
