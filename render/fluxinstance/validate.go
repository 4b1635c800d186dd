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
	"k8s.io/apimachinery/pkg/util/validation/field"
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
// instance. All violations are returned together, one per line, from a
// field.ErrorList: each names its field path (and the value at fault), the
// way the API server reports an invalid object. Callers that read the
// instance from a file prefix the file name.
func (in *FluxInstance) Validate() error {
	if in == nil {
		return errors.New("no FluxInstance")
	}
	spec, s := field.NewPath("spec"), &in.Spec
	errs := validateMetadata(field.NewPath("metadata"), in)
	errs = append(errs, validateDistribution(spec.Child("distribution"), s.Distribution)...)
	errs = append(errs, validateComponents(spec.Child("components"), s.Components)...)
	if s.Cluster != nil {
		errs = append(errs, validateCluster(spec.Child("cluster"), s.Cluster)...)
	}
	if s.Sharding != nil {
		errs = append(errs, validateSharding(spec.Child("sharding"), s.Sharding, s.Storage != nil)...)
	}
	if s.Storage != nil {
		errs = append(errs, validateStorage(spec.Child("storage"), s.Storage)...)
	}
	if s.Kustomize != nil {
		errs = append(errs, validatePatches(spec.Child("kustomize", "patches"), s.Kustomize.Patches)...)
	}
	if s.CommonMetadata != nil {
		errs = append(errs, validateCommonMetadata(spec.Child("commonMetadata"), s.CommonMetadata)...)
	}
	if s.Sync != nil {
		errs = append(errs, validateSync(spec.Child("sync"), s.Sync)...)
	}
	return joinLines(errs)
}

// joinLines returns the violations one per line (nil when there are none): ToAggregate would print
// them as "[a, b, c]" on one line, which is hard to read when a file has several mistakes. Each
// stays a *field.Error for errors.As.
func joinLines(errs field.ErrorList) error {
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return errors.Join(out...)
}

// validateEnum reports a set value that is not one of allowed; an empty
// value is left to the defaults or to a required check.
func validateEnum(path *field.Path, value string, allowed []string) field.ErrorList {
	if value == "" || slices.Contains(allowed, value) {
		return nil
	}
	return field.ErrorList{field.NotSupported(path, value, allowed)}
}

// validateName reports every reason apimachinery's check (such as
// validation.IsDNS1123Label) gives for rejecting a set value; what names the
// kind of name the value is ("namespace", "Secret name", ...).
func validateName(path *field.Path, value, what string, check func(string) []string) field.ErrorList {
	if value == "" {
		return nil
	}
	var errs field.ErrorList
	for _, msg := range check(value) {
		errs = append(errs, field.Invalid(path, value, "not a valid "+what+": "+msg))
	}
	return errs
}

func validateMetadata(path *field.Path, in *FluxInstance) field.ErrorList {
	var errs field.ErrorList
	if in.Name != RequiredName {
		errs = append(errs, field.Invalid(path.Child("name"), in.Name,
			fmt.Sprintf("must be %q, the operator only reconciles a FluxInstance named %q", RequiredName, RequiredName)))
	}
	return append(errs, validateName(path.Child("namespace"), in.Namespace, "namespace", validation.IsDNS1123Label)...)
}

func validateDistribution(path *field.Path, d Distribution) field.ErrorList {
	var errs field.ErrorList
	version := path.Child("version")
	if strings.TrimSpace(d.Version) == "" {
		errs = append(errs, field.Required(version, "set an exact version (2.7.5) or a range (2.x)"))
	} else if _, err := semver.ParseRange(normalizeRange(d.Version)); err != nil {
		errs = append(errs, field.Invalid(version, d.Version, "not a version or semver range: "+err.Error()))
	}
	if strings.TrimSpace(d.Registry) == "" {
		errs = append(errs, field.Required(path.Child("registry"), "set the container registry of the controller images, e.g. ghcr.io/fluxcd"))
	}
	errs = append(errs, validateEnum(path.Child("variant"), d.Variant, Variants)...)
	if d.Artifact != "" && !strings.HasPrefix(d.Artifact, "oci://") {
		errs = append(errs, field.Invalid(path.Child("artifact"), d.Artifact, "must be an oci:// URL"))
	}
	return errs
}

func validateComponents(path *field.Path, components []string) field.ErrorList {
	var errs field.ErrorList
	seen := map[string]bool{}
	for i, c := range components {
		switch {
		case !slices.Contains(AllComponents, c):
			errs = append(errs, field.NotSupported(path.Index(i), c, AllComponents))
		case seen[c]:
			errs = append(errs, field.Duplicate(path.Index(i), c))
		}
		seen[c] = true
	}
	return errs
}

func validateCluster(path *field.Path, c *Cluster) field.ErrorList {
	errs := validateEnum(path.Child("type"), c.Type, ClusterTypes)
	errs = append(errs, validateEnum(path.Child("size"), c.Size, ClusterSizes)...)
	if c.MultitenantWorkloadIdentity && !c.ObjectLevelWorkloadIdentity {
		errs = append(errs, field.Forbidden(path.Child("multitenantWorkloadIdentity"),
			"requires "+path.Child("objectLevelWorkloadIdentity").String()+" to be true"))
	}
	errs = append(errs, validateName(path.Child("domain"), c.Domain, "DNS domain", validation.IsDNS1123Subdomain)...)
	for _, sa := range []struct{ field, name string }{
		{"tenantDefaultServiceAccount", c.TenantDefaultServiceAccount},
		{"tenantDefaultDecryptionServiceAccount", c.TenantDefaultDecryptionServiceAccount},
		{"tenantDefaultKubeConfigServiceAccount", c.TenantDefaultKubeConfigServiceAccount},
	} {
		errs = append(errs, validateName(path.Child(sa.field), sa.name, "service account name", validation.IsDNS1123Subdomain)...)
	}
	return errs
}

// validateSharding checks spec.sharding; hasStorage tells whether spec.storage
// is set, which persistent sharding storage needs.
func validateSharding(path *field.Path, sh *Sharding, hasStorage bool) field.ErrorList {
	errs := validateName(path.Child("key"), sh.Key, "label key", validation.IsQualifiedName)
	shards := path.Child("shards")
	if len(sh.Shards) == 0 {
		errs = append(errs, field.Required(shards, "list at least one shard name"))
	}
	seen := map[string]bool{}
	for i, name := range sh.Shards {
		if seen[name] {
			errs = append(errs, field.Duplicate(shards.Index(i), name))
		}
		seen[name] = true
		// The shard becomes a label value and a suffix of Deployment names.
		for _, msg := range validation.IsDNS1123Label(name) {
			errs = append(errs, field.Invalid(shards.Index(i), name, "not a valid shard name: "+msg))
		}
	}
	storage := path.Child("storage")
	errs = append(errs, validateEnum(storage, sh.Storage, ShardingStorages)...)
	if sh.Storage == ShardingStoragePersistent && !hasStorage {
		errs = append(errs, field.Invalid(storage, sh.Storage, "persistent sharding storage requires spec.storage (class and size)"))
	}
	return errs
}

func validateStorage(path *field.Path, st *Storage) field.ErrorList {
	var errs field.ErrorList
	if st.Class == "" {
		errs = append(errs, field.Required(path.Child("class"), "set the storage class name"))
	}
	size := path.Child("size")
	if st.Size == "" {
		errs = append(errs, field.Required(size, "set the volume size, e.g. 10Gi"))
	} else if _, err := resource.ParseQuantity(st.Size); err != nil {
		errs = append(errs, field.Invalid(size, st.Size, "not a quantity such as 10Gi: "+err.Error()))
	}
	return errs
}

// validatePatches checks what can be checked of spec.kustomize.patches
// without the objects: a patch is set, and its target's expressions and
// selectors parse the way Build compiles them.
func validatePatches(path *field.Path, patches []Patch) field.ErrorList {
	var errs field.ErrorList
	for i, p := range patches {
		if strings.TrimSpace(p.Patch) == "" {
			errs = append(errs, field.Required(path.Index(i).Child("patch"), "the patch is empty"))
		}
		if p.Target != nil {
			errs = append(errs, validateTarget(path.Index(i).Child("target"), p.Target)...)
		}
	}
	return errs
}

func validateTarget(path *field.Path, t *Selector) field.ErrorList {
	var errs field.ErrorList
	for _, f := range []struct{ field, expr string }{
		{"group", t.Group}, {"version", t.Version}, {"kind", t.Kind}, {"name", t.Name}, {"namespace", t.Namespace},
	} {
		if f.expr == "" {
			continue
		}
		if _, err := regexp.Compile("^(?:" + f.expr + ")$"); err != nil {
			errs = append(errs, field.Invalid(path.Child(f.field), f.expr, "not a valid regular expression: "+err.Error()))
		}
	}
	for _, f := range []struct{ field, what, selector string }{
		{"labelSelector", "label selector", t.LabelSelector},
		{"annotationSelector", "annotation selector", t.AnnotationSelector},
	} {
		if f.selector == "" {
			continue
		}
		if _, err := labels.Parse(f.selector); err != nil {
			errs = append(errs, field.Invalid(path.Child(f.field), f.selector, "not a valid "+f.what+": "+err.Error()))
		}
	}
	return errs
}

// validateCommonMetadata checks label and annotation keys and label values,
// in key order so that the messages come in the same order every time.
func validateCommonMetadata(path *field.Path, cm *CommonMetadata) field.ErrorList {
	var errs field.ErrorList
	labelsPath := path.Child("labels")
	for _, k := range slices.Sorted(maps.Keys(cm.Labels)) {
		errs = append(errs, validateName(labelsPath, k, "label key", validation.IsQualifiedName)...)
		for _, msg := range validation.IsValidLabelValue(cm.Labels[k]) {
			errs = append(errs, field.Invalid(labelsPath.Key(k), cm.Labels[k], "not a valid label value: "+msg))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(cm.Annotations)) {
		errs = append(errs, validateName(path.Child("annotations"), k, "annotation key", validation.IsQualifiedName)...)
	}
	return errs
}

func validateSync(path *field.Path, sy *Sync) field.ErrorList {
	kind := path.Child("kind")
	errs := validateEnum(kind, sy.Kind, SyncKinds)
	if sy.Kind == "" {
		errs = append(errs, field.Required(kind, "one of "+strings.Join(SyncKinds, ", ")))
	}
	errs = append(errs, validateSyncURL(path.Child("url"), sy.Kind, sy.URL)...)
	if sy.Ref == "" {
		errs = append(errs, field.Required(path.Child("ref"), "a Git ref name (refs/heads/main), an OCI tag or a bucket name"))
	}
	if sy.Path == "" {
		errs = append(errs, field.Required(path.Child("path"), "the path of the manifests in the source, e.g. clusters/my-cluster"))
	}
	errs = append(errs, validateSyncProvider(path.Child("provider"), sy.Kind, sy.Provider)...)
	if sy.Interval != "" && !intervalPattern.MatchString(sy.Interval) {
		errs = append(errs, field.Invalid(path.Child("interval"), sy.Interval,
			fmt.Sprintf("not a duration such as 1m, 30s or 1h30m (pattern %s)", intervalPattern)))
	}
	errs = append(errs, validateName(path.Child("name"), sy.Name, "object name", validation.IsDNS1123Subdomain)...)
	return append(errs, validateName(path.Child("pullSecret"), sy.PullSecret, "Secret name", validation.IsDNS1123Subdomain)...)
}

// validateSyncURL checks the URL scheme the source kind accepts (a Bucket's
// endpoint has none).
func validateSyncURL(path *field.Path, kind, url string) field.ErrorList {
	switch {
	case url == "":
		return field.ErrorList{field.Required(path, "set the URL of the sync source")}
	case kind == "GitRepository" && !hasAnyPrefix(url, "http://", "https://", "ssh://"):
		return field.ErrorList{field.Invalid(path, url, "must start with http://, https:// or ssh:// for a GitRepository")}
	case kind == "OCIRepository" && !strings.HasPrefix(url, "oci://"):
		return field.ErrorList{field.Invalid(path, url, "must start with oci:// for an OCIRepository")}
	}
	return nil
}

// validateSyncProvider checks the provider and the source kinds it
// authenticates for.
func validateSyncProvider(path *field.Path, kind, provider string) field.ErrorList {
	errs := validateEnum(path, provider, SyncProviders)
	switch {
	case provider == "github" && kind != "GitRepository" && kind != "":
		errs = append(errs, field.Invalid(path, provider, "only supported with kind GitRepository, not "+kind))
	case provider == "gcp" && kind == "GitRepository":
		errs = append(errs, field.Invalid(path, provider, "only supported with kind OCIRepository or Bucket, not GitRepository"))
	}
	return errs
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
