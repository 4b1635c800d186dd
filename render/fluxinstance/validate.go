package fluxinstance

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/blang/semver/v4"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Enumerations accepted by the API.
var (
	ClusterTypes     = []string{"kubernetes", "openshift", "aws", "azure", "gcp"}
	ClusterSizes     = []string{"small", "medium", "large"}
	Variants         = []string{VariantUpstreamAlpine, VariantEnterpriseAlpine, VariantEnterpriseDistroless, VariantEnterpriseFIPS}
	ShardingStorages = []string{ShardingStorageEphemeral, ShardingStoragePersistent}
	SyncKinds        = []string{"GitRepository", "OCIRepository", "Bucket"}
	SyncProviders    = []string{"generic", "aws", "azure", "gcp", "github"}
)

// intervalPattern is the CRD's pattern for spec.sync.interval.
var intervalPattern = regexp.MustCompile(`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`)

// Validate checks the version-independent rules of the API on a defaulted
// instance. All violations are returned joined, each naming its field path.
func (in *FluxInstance) Validate() error {
	if in == nil {
		return errors.New("no FluxInstance")
	}
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	enum := func(path, value string, allowed []string) {
		if value != "" && !slices.Contains(allowed, value) {
			add(path, "unsupported value %q, must be one of: %s", value, strings.Join(allowed, ", "))
		}
	}

	if in.Name != RequiredName {
		add("metadata.name", "must be %q, the operator only reconciles a FluxInstance named %q (found %q)", RequiredName, RequiredName, in.Name)
	}
	if in.Namespace != "" {
		for _, msg := range validation.IsDNS1123Label(in.Namespace) {
			add("metadata.namespace", "%q is not a valid namespace: %s", in.Namespace, msg)
		}
	}

	s := &in.Spec
	d := s.Distribution
	if strings.TrimSpace(d.Version) == "" {
		add("spec.distribution.version", "required: set an exact version (2.7.5) or a range (2.x)")
	} else if _, err := semver.ParseRange(normalizeRange(d.Version)); err != nil {
		add("spec.distribution.version", "%q is not a version or semver range: %v", d.Version, err)
	}
	if strings.TrimSpace(d.Registry) == "" {
		add("spec.distribution.registry", "required: set the container registry of the controller images, e.g. ghcr.io/fluxcd")
	}
	enum("spec.distribution.variant", d.Variant, Variants)
	if d.Artifact != "" && !strings.HasPrefix(d.Artifact, "oci://") {
		add("spec.distribution.artifact", "%q must be an oci:// URL", d.Artifact)
	}

	seen := map[string]bool{}
	for i, c := range s.Components {
		path := fmt.Sprintf("spec.components[%d]", i)
		if !slices.Contains(AllComponents, c) {
			add(path, "unknown component %q, must be one of: %s", c, strings.Join(AllComponents, ", "))
			continue
		}
		if seen[c] {
			add(path, "component %q is listed more than once", c)
		}
		seen[c] = true
	}

	if c := s.Cluster; c != nil {
		enum("spec.cluster.type", c.Type, ClusterTypes)
		enum("spec.cluster.size", c.Size, ClusterSizes)
		if c.MultitenantWorkloadIdentity && !c.ObjectLevelWorkloadIdentity {
			add("spec.cluster.multitenantWorkloadIdentity", "requires spec.cluster.objectLevelWorkloadIdentity to be true")
		}
		if c.Domain != "" {
			for _, msg := range validation.IsDNS1123Subdomain(c.Domain) {
				add("spec.cluster.domain", "%q is not a valid DNS domain: %s", c.Domain, msg)
			}
		}
		for _, f := range [][2]string{
			{"spec.cluster.tenantDefaultServiceAccount", c.TenantDefaultServiceAccount},
			{"spec.cluster.tenantDefaultDecryptionServiceAccount", c.TenantDefaultDecryptionServiceAccount},
			{"spec.cluster.tenantDefaultKubeConfigServiceAccount", c.TenantDefaultKubeConfigServiceAccount},
		} {
			path, sa := f[0], f[1]
			if sa == "" {
				continue
			}
			for _, msg := range validation.IsDNS1123Subdomain(sa) {
				add(path, "%q is not a valid service account name: %s", sa, msg)
			}
		}
	}

	if sh := s.Sharding; sh != nil {
		if sh.Key != "" {
			for _, msg := range validation.IsQualifiedName(sh.Key) {
				add("spec.sharding.key", "%q is not a valid label key: %s", sh.Key, msg)
			}
		}
		if len(sh.Shards) == 0 {
			add("spec.sharding.shards", "required: list at least one shard name")
		}
		shardSeen := map[string]bool{}
		for i, name := range sh.Shards {
			path := fmt.Sprintf("spec.sharding.shards[%d]", i)
			if shardSeen[name] {
				add(path, "shard %q is listed more than once", name)
			}
			shardSeen[name] = true
			// The shard becomes a label value and a suffix of Deployment names.
			for _, msg := range validation.IsDNS1123Label(name) {
				add(path, "%q is not a valid shard name: %s", name, msg)
			}
		}
		enum("spec.sharding.storage", sh.Storage, ShardingStorages)
		if sh.Storage == ShardingStoragePersistent && s.Storage == nil {
			add("spec.sharding.storage", "persistent sharding storage requires spec.storage (class and size)")
		}
	}

	if st := s.Storage; st != nil {
		if st.Class == "" {
			add("spec.storage.class", "required: set the storage class name")
		}
		if st.Size == "" {
			add("spec.storage.size", "required: set the volume size, e.g. 10Gi")
		} else if _, err := resource.ParseQuantity(st.Size); err != nil {
			add("spec.storage.size", "%q is not a quantity such as 10Gi: %v", st.Size, err)
		}
	}

	if k := s.Kustomize; k != nil {
		for i, p := range k.Patches {
			path := fmt.Sprintf("spec.kustomize.patches[%d]", i)
			if strings.TrimSpace(p.Patch) == "" {
				add(path+".patch", "required: the patch is empty")
			}
			if t := p.Target; t != nil {
				for _, f := range [][2]string{{"group", t.Group}, {"version", t.Version}, {"kind", t.Kind}, {"name", t.Name}, {"namespace", t.Namespace}} {
					field, re := f[0], f[1]
					if re == "" {
						continue
					}
					if _, err := regexp.Compile("^(?:" + re + ")$"); err != nil {
						add(path+".target."+field, "%q is not a valid regular expression: %v", re, err)
					}
				}
				if t.LabelSelector != "" {
					if _, err := labels.Parse(t.LabelSelector); err != nil {
						add(path+".target.labelSelector", "%q is not a valid label selector: %v", t.LabelSelector, err)
					}
				}
				if t.AnnotationSelector != "" {
					if _, err := labels.Parse(t.AnnotationSelector); err != nil {
						add(path+".target.annotationSelector", "%q is not a valid annotation selector: %v", t.AnnotationSelector, err)
					}
				}
			}
		}
	}

	if cm := s.CommonMetadata; cm != nil {
		for _, k := range slices.Sorted(maps.Keys(cm.Labels)) {
			v := cm.Labels[k]
			for _, msg := range validation.IsQualifiedName(k) {
				add("spec.commonMetadata.labels", "key %q is not a valid label key: %s", k, msg)
			}
			for _, msg := range validation.IsValidLabelValue(v) {
				add("spec.commonMetadata.labels["+k+"]", "%q is not a valid label value: %s", v, msg)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(cm.Annotations)) {
			for _, msg := range validation.IsQualifiedName(k) {
				add("spec.commonMetadata.annotations", "key %q is not a valid annotation key: %s", k, msg)
			}
		}
	}

	if sy := s.Sync; sy != nil {
		enum("spec.sync.kind", sy.Kind, SyncKinds)
		if sy.Kind == "" {
			add("spec.sync.kind", "required: one of %s", strings.Join(SyncKinds, ", "))
		}
		if sy.URL == "" {
			add("spec.sync.url", "required: set the URL of the sync source")
		} else {
			switch sy.Kind {
			case "GitRepository":
				if !hasAnyPrefix(sy.URL, "http://", "https://", "ssh://") {
					add("spec.sync.url", "%q must start with http://, https:// or ssh:// for a GitRepository", sy.URL)
				}
			case "OCIRepository":
				if !strings.HasPrefix(sy.URL, "oci://") {
					add("spec.sync.url", "%q must start with oci:// for an OCIRepository", sy.URL)
				}
			}
		}
		if sy.Ref == "" {
			add("spec.sync.ref", "required: a Git ref name (refs/heads/main), an OCI tag or a bucket name")
		}
		if sy.Path == "" {
			add("spec.sync.path", "required: the path of the manifests in the source, e.g. clusters/my-cluster")
		}
		enum("spec.sync.provider", sy.Provider, SyncProviders)
		switch {
		case sy.Provider == "github" && sy.Kind != "GitRepository" && sy.Kind != "":
			add("spec.sync.provider", "provider github is only supported with kind GitRepository, not %s", sy.Kind)
		case sy.Provider == "gcp" && sy.Kind == "GitRepository":
			add("spec.sync.provider", "provider gcp is only supported with kind OCIRepository or Bucket, not GitRepository")
		}
		if sy.Interval != "" && !intervalPattern.MatchString(sy.Interval) {
			add("spec.sync.interval", "%q is not a duration such as 1m, 30s or 1h30m (pattern %s)", sy.Interval, intervalPattern)
		}
		if sy.Name != "" {
			for _, msg := range validation.IsDNS1123Subdomain(sy.Name) {
				add("spec.sync.name", "%q is not a valid object name: %s", sy.Name, msg)
			}
		}
		if sy.PullSecret != "" {
			for _, msg := range validation.IsDNS1123Subdomain(sy.PullSecret) {
				add("spec.sync.pullSecret", "%q is not a valid Secret name: %s", sy.PullSecret, msg)
			}
		}
	}
	return errors.Join(errs...)
}

// ValidateForVersion checks the rules that depend on the resolved Flux version
// (with or without its "v" prefix, e.g. "v2.7.5").
func (in *FluxInstance) ValidateForVersion(version string) error {
	if in == nil {
		return errors.New("no FluxInstance")
	}
	v, err := ParseVersion(version)
	if err != nil {
		return fmt.Errorf("spec.distribution.version: resolved version %q: %w", version, err)
	}
	var errs []error
	need := func(path, what string, min semver.Version) {
		if v.LT(min) {
			errs = append(errs, fmt.Errorf("%s: %s requires Flux v%s or later, the resolved version is v%s", path, what, min, v))
		}
	}
	if i := slices.Index(in.Spec.Components, SourceWatcher); i >= 0 {
		need(fmt.Sprintf("spec.components[%d]", i), "component source-watcher", semver.MustParse("2.7.0"))
	}
	if c := in.Spec.Cluster; c != nil {
		if c.ObjectLevelWorkloadIdentity {
			need("spec.cluster.objectLevelWorkloadIdentity", "object-level workload identity", semver.MustParse("2.6.0"))
		}
		if c.MultitenantWorkloadIdentity {
			need("spec.cluster.multitenantWorkloadIdentity", "multi-tenant workload identity", semver.MustParse("2.7.0"))
		}
	}
	if sy := in.Spec.Sync; sy != nil && sy.Kind == "GitRepository" && sy.Provider == "aws" {
		need("spec.sync.provider", "provider aws for a GitRepository", semver.MustParse("2.9.0"))
	}
	return errors.Join(errs...)
}

// ParseVersion parses a Flux version with or without the "v" prefix.
func ParseVersion(version string) (semver.Version, error) {
	return semver.ParseTolerant(strings.TrimPrefix(strings.TrimSpace(version), "v"))
}

// normalizeRange rewrites the shorthand forms the API accepts ("2.x", "v2.7.x")
// into something blang/semver parses; it is only used to reject garbage early,
// the resolution itself belongs to the distribution package.
func normalizeRange(r string) string {
	fields := strings.Fields(r)
	for i, f := range fields {
		op := ""
		for _, p := range []string{">=", "<=", "!=", ">", "<", "="} {
			if strings.HasPrefix(f, p) {
				op, f = p, f[len(p):]
				break
			}
		}
		f = strings.TrimPrefix(f, "v")
		parts := strings.Split(f, ".")
		for len(parts) < 3 {
			parts = append(parts, "x")
		}
		fields[i] = op + strings.Join(parts, ".")
	}
	return strings.Join(fields, " ")
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
