package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxcd/pkg/ssa/utils"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DefaultConcurrency is how many objects are read, dry-run or deleted in parallel. The API
// server handles far more; the limit keeps a laptop's kubectl-like burst polite.
const DefaultConcurrency = 10

// Manager applies, diffs, prunes, waits for and deletes the objects of one FluxInstance.
// It holds no mutable state beyond its configuration: every call reads the cluster afresh.
type Manager struct {
	client client.Client
	host   string
	// Name and Namespace identify the FluxInstance ("flux" and where Flux runs).
	Name      string
	Namespace string
}

// NewManager returns a Manager for the instance name/namespace on the given connection.
func NewManager(conn *Connection, name, namespace string) *Manager {
	return NewManagerForClient(conn.Client, conn.Config, name, namespace)
}

// NewManagerForClient is NewManager for callers holding a client and its REST config (cfg only
// names the host in error messages and may be nil).
func NewManagerForClient(c client.Client, cfg *rest.Config, name, namespace string) *Manager {
	host := ""
	if cfg != nil {
		host = cfg.Host
	}
	return &Manager{client: c, host: host, Name: name, Namespace: namespace}
}

// Client returns the manager's client.
func (m *Manager) Client() client.Client { return m.client }

func (m *Manager) resourceManager(fieldManager string, concurrency int) *ssa.ResourceManager {
	poller := polling.NewStatusPoller(m.client, m.client.RESTMapper(), polling.Options{})
	rm := ssa.NewResourceManager(m.client, poller, ssa.Owner{Field: fieldManager, Group: "fluxcd.controlplane.io"})
	rm.SetConcurrency(concurrency)
	return rm
}

// explain turns transport and credential failures into ExplainError's one-line message and
// leaves API errors (which already name the object) as they are.
func (m *Manager) explain(err error) error {
	if err == nil {
		return nil
	}
	var conflict *ConflictError
	if errors.As(err, &conflict) {
		return err
	}
	return ExplainError(err, m.host)
}

// objectError wraps a cluster error with the object it concerns. Forbidden errors keep the API
// server's message, which names the verb, the resource and the namespace.
func objectError(obj *unstructured.Unstructured, action string, err error) error {
	return fmt.Errorf("%s: %s: %w", Ref(obj), action, err)
}

// Ref formats an object as Kind/namespace/name (Kind/name when cluster-scoped), the way ssa's
// change sets name subjects.
func Ref(obj *unstructured.Unstructured) string { return utils.FmtUnstructured(obj) }

// RefMeta is Ref for an ObjMetadata.
func RefMeta(id object.ObjMetadata) string { return utils.FmtObjMetadata(id) }

// getLive reads the in-cluster copy of obj; found is false on NotFound and on a kind that the
// API server does not serve (yet).
func (m *Manager) getLive(ctx context.Context, obj *unstructured.Unstructured) (*unstructured.Unstructured, bool, error) {
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(obj.GroupVersionKind())
	err := m.client.Get(ctx, client.ObjectKeyFromObject(obj), live)
	switch {
	case err == nil:
		return live, true, nil
	case apierrors.IsNotFound(err), isNoMatch(err):
		return nil, false, nil
	default:
		return nil, false, objectError(obj, "reading", err)
	}
}

func isNoMatch(err error) bool {
	if err == nil {
		return false
	}
	// controller-runtime's lazy REST mapper wraps the no-match error in its own types.
	return meta.IsNoMatchError(err) || strings.Contains(err.Error(), "no matches for kind")
}

// idOf returns the inventory identity of an object.
func idOf(obj *unstructured.Unstructured) object.ObjMetadata {
	return object.UnstructuredToObjMetadata(obj)
}

// stubFor builds an empty object carrying only the identity, for deletes and waits.
func stubFor(id object.ObjMetadata, version string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(schema.GroupVersionKind{Group: id.GroupKind.Group, Version: version, Kind: id.GroupKind.Kind})
	u.SetName(id.Name)
	u.SetNamespace(id.Namespace)
	return u
}

func isCRD(id object.ObjMetadata) bool {
	return id.GroupKind.Kind == "CustomResourceDefinition" && id.GroupKind.Group == "apiextensions.k8s.io"
}

func isNamespace(id object.ObjMetadata) bool {
	return id.GroupKind.Kind == "Namespace" && id.GroupKind.Group == ""
}

// pruneDisabled tells whether an object opted out of pruning (values compare case-insensitively,
// like kustomize-controller's).
func pruneDisabled(obj metav1.Object) bool {
	return strings.EqualFold(obj.GetAnnotations()[AnnotationPrune], "disabled")
}
