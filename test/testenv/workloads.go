package testenv

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// MarkAvailable sets a Deployment's status the way the deployment controller would once its pods
// are available: no kubelet or controller manager runs pods in the test environment.
func MarkAvailable(ctx context.Context, c client.Client, namespace, name string) error {
	d := &appsv1.Deployment{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, d); err != nil {
		return fmt.Errorf("reading Deployment %s/%s: %w", namespace, name, err)
	}
	replicas := int32(1)
	if d.Spec.Replicas != nil {
		replicas = *d.Spec.Replicas
	}
	now := metav1.NewTime(time.Now())
	d.Status = appsv1.DeploymentStatus{
		ObservedGeneration: d.Generation,
		Replicas:           replicas, UpdatedReplicas: replicas, ReadyReplicas: replicas, AvailableReplicas: replicas,
		Conditions: []appsv1.DeploymentCondition{
			{Type: appsv1.DeploymentAvailable, Status: "True", Reason: "MinimumReplicasAvailable", LastUpdateTime: now, LastTransitionTime: now},
			{Type: appsv1.DeploymentProgressing, Status: "True", Reason: "NewReplicaSetAvailable", LastUpdateTime: now, LastTransitionTime: now},
		},
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
