package ownership

import (
	"fmt"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/object"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/render"
)

// fluxCRDSuffix ends the name of every Flux CRD a distribution renders (*.toolkit.fluxcd.io,
// source.extensions.fluxcd.io).
const fluxCRDSuffix = ".fluxcd.io"

// renderedClusterKinds are the cluster-scoped kinds a rendering produces besides CRDs (the
// Namespace is never deleted at all).
var renderedClusterKinds = map[string]bool{"rbac.authorization.k8s.io/ClusterRole": true, "rbac.authorization.k8s.io/ClusterRoleBinding": true}

// Deletable tells whether prune or delete may remove an object that the instance's record lists,
// and when not, why (for the warning that names it). A record is data anyone with ConfigMap rights
// can edit, so being listed proves nothing by itself. The object must also:
//   - be of a kind and namespace a rendering can produce: in the instance namespace, or one of the
//     cluster-scoped kinds of the distribution (a Flux CRD, a ClusterRole or ClusterRoleBinding);
//   - carry the instance's owner labels;
//   - hold fields applied by one of appliedBy (the record's field manager, and the operator's when
//     the record is a FluxInstance's status.inventory) according to its managedFields.
//
// Anything else listed is kept: nothing is deleted whose provenance is in doubt.
func Deletable(id object.ObjMetadata, live metav1.Object, name, namespace string, appliedBy ...string) (bool, string) {
	switch {
	case id.Namespace != "" && id.Namespace != namespace:
		return false, fmt.Sprintf("it is in namespace %s, not the instance's (%s)", id.Namespace, namespace)
	case kube.IsCRD(id) && !strings.HasSuffix(id.Name, fluxCRDSuffix):
		return false, "it is not a Flux CustomResourceDefinition (*" + fluxCRDSuffix + ")"
	case id.Namespace == "" && !kube.IsCRD(id) && !renderedClusterKinds[id.GroupKind.Group+"/"+id.GroupKind.Kind]:
		return false, "a rendering never has a cluster-scoped " + id.GroupKind.Kind
	case !OwnedBy(live, name, namespace):
		return false, fmt.Sprintf("it no longer carries the labels %s=%s, %s=%s", render.LabelOwnerName, name, render.LabelOwnerNamespace, namespace)
	}
	for _, e := range live.GetManagedFields() {
		for _, m := range appliedBy {
			if e.Manager == m && e.Operation == metav1.ManagedFieldsOperationApply && e.Subresource == "" {
				return true, ""
			}
		}
	}
	return false, "no field of it was applied by " + strings.Join(appliedBy, " or ")
}
