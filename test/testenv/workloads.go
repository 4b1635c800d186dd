package testenv

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// SetAvailableStatus writes, in memory, the status the deployment controller would report once
// d's pods are available: no kubelet or controller manager runs pods in the test environment. It
// reports false when d already says so. Pod templates are not touched.
func SetAvailableStatus(d *appsv1.Deployment) bool {
	replicas := int32(1)
	if d.Spec.Replicas != nil {
		replicas = *d.Spec.Replicas
	}
	s := d.Status
	if s.ObservedGeneration == d.Generation && s.Replicas == replicas && s.UpdatedReplicas == replicas &&
		s.ReadyReplicas == replicas && s.AvailableReplicas == replicas && len(s.Conditions) == 2 {
		return false
	}
	now := metav1.NewTime(time.Now())
	const msg = "testenv: no kubelet runs, status written by the test"
	d.Status = appsv1.DeploymentStatus{
		ObservedGeneration: d.Generation,
		Replicas:           replicas, UpdatedReplicas: replicas, ReadyReplicas: replicas, AvailableReplicas: replicas,
		Conditions: []appsv1.DeploymentCondition{
			{Type: appsv1.DeploymentAvailable, Status: "True", Reason: "MinimumReplicasAvailable", Message: msg, LastUpdateTime: now, LastTransitionTime: now},
			{Type: appsv1.DeploymentProgressing, Status: "True", Reason: "NewReplicaSetAvailable", Message: msg, LastUpdateTime: now, LastTransitionTime: now},
		},
	}
	return true
}

// MarkAvailable makes one Deployment report Available (see SetAvailableStatus).
func MarkAvailable(ctx context.Context, c client.Client, namespace, name string) error {
	d := &appsv1.Deployment{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, d); err != nil {
		return fmt.Errorf("reading Deployment %s/%s: %w", namespace, name, err)
	}
	if !SetAvailableStatus(d) {
		return nil
	}
	if err := c.Status().Update(ctx, d); err != nil {
		return fmt.Errorf("setting the status of Deployment %s/%s: %w", namespace, name, err)
	}
	return nil
}

// MarkAllAvailable marks every Deployment of the namespace available.
func MarkAllAvailable(ctx context.Context, c client.Client, namespace string) error {
	var list appsv1.DeploymentList
	if err := c.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		return err
	}
	for _, d := range list.Items {
		if err := MarkAvailable(ctx, c, namespace, d.Name); err != nil {
			return err
		}
	}
	return nil
}
