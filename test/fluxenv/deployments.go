package fluxenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// MarkDeploymentsAvailable writes a rolled-out, Available status on every Deployment of the cluster
// whose status does not say so yet. No kubelet runs pods here; kstatus (`flux bootstrap`'s health
// check, the plugin's wait) reads exactly these fields. Pod templates are not touched.
func MarkDeploymentsAvailable(ctx context.Context, c client.Client) error {
	var list appsv1.DeploymentList
	if err := c.List(ctx, &list); err != nil {
		return fmt.Errorf("listing Deployments: %w", err)
	}
	for i := range list.Items {
		d := &list.Items[i]
		if !testenv.SetAvailableStatus(d) {
			continue
		}
		// Update (not a patch) fails on a stale resourceVersion: the next round retries with the new
		// generation instead of marking an old one, so the error is not worth reporting.
		_ = c.Status().Update(ctx, d, client.FieldOwner(RequestFieldManager))
	}
	return nil
}

// KeepDeploymentsAvailable runs MarkDeploymentsAvailable every half second until the test ends, so
// that Deployments created or changed later (by bootstrap, apply or migrate) look rolled out too.
func KeepDeploymentsAvailable(t testing.TB, c client.Client) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_ = MarkDeploymentsAvailable(ctx, c)
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}
