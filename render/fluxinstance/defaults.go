package fluxinstance

import "strings"

// Default fills in what the operator's CRD defaults and controller assume, so
// that rendering never has to guess. It is idempotent and never fails; call
// Validate afterwards. A nil receiver is a no-op.
//
// Note on cluster.networkPolicy: the CRD defaults it to true, and the operator
// also treats a cluster block without the field as true (the reference CLI does
// not, which is one of its documented differences).
func (in *FluxInstance) Default() {
	if in == nil {
		return
	}
	if in.Namespace == "" {
		in.Namespace = DefaultNamespace
	}
	s := &in.Spec
	if len(s.Components) == 0 {
		s.Components = append([]string(nil), DefaultComponents...)
	}
	if s.Distribution.Variant == "" {
		s.Distribution.Variant = VariantForRegistry(s.Distribution.Registry)
	}
	if s.Cluster == nil {
		s.Cluster = &Cluster{}
	}
	c := s.Cluster
	if c.Type == "" {
		c.Type = ClusterTypeKubernetes
	}
	if c.NetworkPolicy == nil {
		t := true
		c.NetworkPolicy = &t
	}
	if c.Domain == "" {
		c.Domain = DefaultDomain
	}
	if c.TenantDefaultServiceAccount == "" {
		c.TenantDefaultServiceAccount = DefaultTenantSA
	}
	if c.TenantDefaultDecryptionServiceAccount == "" {
		c.TenantDefaultDecryptionServiceAccount = DefaultTenantSA
	}
	if c.TenantDefaultKubeConfigServiceAccount == "" {
		c.TenantDefaultKubeConfigServiceAccount = DefaultTenantSA
	}
	if s.Sharding != nil && s.Sharding.Key == "" {
		s.Sharding.Key = DefaultShardingKey
	}
	if s.Sync != nil {
		if s.Sync.Interval == "" {
			s.Sync.Interval = DefaultSyncInterval
		}
		if s.Sync.Name == "" {
			s.Sync.Name = in.Namespace
		}
	}
	if s.Wait == nil {
		t := true
		s.Wait = &t
	}
	if s.MigrateResources == nil {
		t := true
		s.MigrateResources = &t
	}
}

// VariantForRegistry derives the image variant from a registry the way the
// operator does: the upstream registries map to upstream-alpine, the
// ControlPlane enterprise registries to their variant, and anything else (a
// mirror) to "" (images then fall back to tags unless the user states the variant).
func VariantForRegistry(registry string) string {
	switch strings.TrimSuffix(strings.TrimSpace(registry), "/") {
	case "ghcr.io/fluxcd", "fluxcd":
		return VariantUpstreamAlpine
	case "ghcr.io/controlplaneio-fluxcd/alpine":
		return VariantEnterpriseAlpine
	case "ghcr.io/controlplaneio-fluxcd/distroless":
		return VariantEnterpriseDistroless
	case "ghcr.io/controlplaneio-fluxcd/distroless-fips":
		return VariantEnterpriseFIPS
	}
	return ""
}
